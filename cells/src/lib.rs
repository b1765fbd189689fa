//! The cell layer of weft: the deployment's certificate authority and the certificates it
//! issues to nodes and workers ([`certs`]), and the QUIC link with mutual TLS ([`link`]): who
//! the peer is comes from its certificate, the first exchange checks the protocol version, and
//! later messages travel as bounded frames. Over a link, a `ractor_cluster` session carries
//! messages to remote worker slots (`cluster`, `workers`, `worker`), and between cells the
//! links carry commands and events (`peers`); a cell's leases are kept by [`cell`].

pub mod cell;
pub mod certs;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod link;
#[cfg(feature = "cluster")]
pub mod logs;
#[cfg(feature = "cluster")]
pub mod peers;
#[cfg(feature = "cluster")]
pub mod worker;
#[cfg(feature = "cluster")]
pub mod workers;

pub use certs::{identity_of, CertError, Identity, Role};
pub use link::{
    Channel, Connector, Credentials, FrameError, Link, LinkError, LinkSettings, Listener,
    FRAME_BYTES_MAX, PROTOCOL_VERSION,
};

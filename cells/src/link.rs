//! The QUIC link between a node and the peers that connect to it (remote worker slots first).
//!
//! - Mutual TLS 1.3 over QUIC: both sides present a certificate signed by the deployment's CA
//!   ([`crate::certs`]); the server refuses a client without one. ALPN is `weft/1`; 0-RTT is
//!   off (no replayable early data).
//! - Who the peer is comes from the certificate it presented ([`crate::certs::identity_of`]),
//!   never from anything it says.
//! - The first exchange, on the first bidirectional stream, is a hello each way: the protocol
//!   version ([`PROTOCOL_VERSION`]) and the sender's role. A version mismatch is refused on both
//!   sides with an error naming both versions, and the connection is closed with
//!   [`CLOSE_VERSION_MISMATCH`]. A role that disagrees with the certificate is refused too.
//! - Later messages are frames: a big-endian `u32` length, then a format byte
//!   ([`FRAME_FORMAT`]), then the payload; the length counts the format byte and the payload
//!   and is at most [`FRAME_BYTES_MAX`]. A frame over the limit or malformed closes that
//!   connection (with [`CLOSE_BAD_FRAME`] and the reason), is counted
//!   (`weft_link_frames_refused_total`) and logged; other connections go on.

use crate::certs::{self, CertError, Identity, Role};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, RecvStream, SendStream, VarInt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The application protocol both sides must offer in the TLS handshake.
pub const ALPN: &[u8] = b"weft/1";
/// The version of the messages over the link, checked in the first exchange.
pub const PROTOCOL_VERSION: u16 = 1;
/// The format byte of every frame (the layout of the frame itself, not of its payload).
pub const FRAME_FORMAT: u8 = 1;
/// The largest frame length (format byte and payload): 1 MiB.
pub const FRAME_BYTES_MAX: u32 = 1 << 20;
/// Time for the whole handshake (QUIC, TLS and the hello exchange).
pub const HANDSHAKE_MS_MAX: u64 = 10_000;
/// How long a side that found a version mismatch waits for the peer to read its hello and
/// close, before it closes itself.
const MISMATCH_LINGER_MS: u64 = 2_000;

/// Application close codes.
pub const CLOSE_DONE: u32 = 0;
pub const CLOSE_VERSION_MISMATCH: u32 = 1;
pub const CLOSE_BAD_HELLO: u32 = 2;
pub const CLOSE_NO_IDENTITY: u32 = 3;
pub const CLOSE_BAD_FRAME: u32 = 4;

/// The hello payload: version (u16, big-endian), role (one byte).
const HELLO_BYTES: usize = 3;

/// Settings of a link endpoint.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// How often an idle connection sends a keep-alive.
    pub keep_alive: Duration,
    /// A connection that heard nothing for this long is closed.
    pub idle_timeout: Duration,
    /// The protocol version this side speaks in the hello ([`PROTOCOL_VERSION`]).
    pub protocol_version: u16,
}

impl Default for LinkSettings {
    fn default() -> Self {
        LinkSettings {
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            protocol_version: PROTOCOL_VERSION,
        }
    }
}

/// A malformed or oversized frame, or the IO error under it.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {length} bytes is over the limit of {max} bytes")]
    Oversized { length: u64, max: u32 },
    #[error("frame is empty (no format byte)")]
    Empty,
    #[error("frame format byte is {found}, expected {expected}")]
    Format { found: u8, expected: u8 },
    #[error("the stream ended inside a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The label of the refusal counter; `None` for an IO error (not the peer's frame).
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            FrameError::Oversized { .. } => Some("oversized"),
            FrameError::Empty => Some("empty"),
            FrameError::Format { .. } => Some("format"),
            FrameError::Truncated => Some("truncated"),
            FrameError::Io(_) => None,
        }
    }
}

/// Writes one frame holding `payload`.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    payload: &[u8],
) -> Result<(), FrameError> {
    let length = payload.len() as u64 + 1;
    if length > u64::from(FRAME_BYTES_MAX) {
        return Err(FrameError::Oversized {
            length,
            max: FRAME_BYTES_MAX,
        });
    }
    let mut frame = Vec::with_capacity(5 + payload.len());
    frame.extend_from_slice(&(length as u32).to_be_bytes());
    frame.push(FRAME_FORMAT);
    frame.extend_from_slice(payload);
    writer.write_all(&frame).await?;
    Ok(())
}

/// Reads one frame and returns its payload; `None` when the stream ends between frames. The
/// length is checked before anything is allocated.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; 4];
    let mut filled = 0;
    while filled < prefix.len() {
        match reader.read(&mut prefix[filled..]).await? {
            0 if filled == 0 => return Ok(None),
            0 => return Err(FrameError::Truncated),
            read => filled += read,
        }
    }
    let length = u32::from_be_bytes(prefix);
    if length == 0 {
        return Err(FrameError::Empty);
    }
    if length > FRAME_BYTES_MAX {
        return Err(FrameError::Oversized {
            length: u64::from(length),
            max: FRAME_BYTES_MAX,
        });
    }
    let format = reader.read_u8().await.map_err(truncated)?;
    if format != FRAME_FORMAT {
        return Err(FrameError::Format {
            found: format,
            expected: FRAME_FORMAT,
        });
    }
    let mut payload = vec![0u8; length as usize - 1];
    reader.read_exact(&mut payload).await.map_err(truncated)?;
    Ok(Some(payload))
}

fn truncated(error: std::io::Error) -> FrameError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        FrameError::Truncated
    } else {
        FrameError::Io(error)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} holds no PEM {kind}: {reason}")]
    Pem {
        what: String,
        kind: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("cannot open a QUIC endpoint on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot connect to {addr} as `{server_name}`: {reason}")]
    Connect {
        addr: SocketAddr,
        server_name: String,
        reason: String,
    },
    #[error("handshake with {peer} refused: {reason}")]
    Refused { peer: SocketAddr, reason: String },
    #[error(
        "handshake with {peer} refused: protocol version mismatch: this side speaks {ours}, \
         the peer speaks {theirs}"
    )]
    VersionMismatch {
        peer: SocketAddr,
        ours: u16,
        theirs: u16,
    },
    #[error("handshake with {peer} took more than {HANDSHAKE_MS_MAX} ms")]
    HandshakeTimeout { peer: SocketAddr },
    #[error("link to {peer}: bad frame, connection closed: {source}")]
    BadFrame { peer: Identity, source: FrameError },
    #[error("link to {peer}: {source}")]
    Stream { peer: Identity, source: FrameError },
    #[error("link to {peer} lost: {source}")]
    Lost {
        peer: Identity,
        source: ConnectionError,
    },
}

/// What a side presents and trusts: the deployment's CA, its own certificate and key, and the
/// identity its certificate names.
pub struct Credentials {
    ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    identity: Identity,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Credentials {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            identity: self.identity.clone(),
        }
    }
}

impl Credentials {
    /// The files `weft certs` wrote in `dir` for `identity`: `ca.pem`, and the identity's
    /// `.pem` and `.key`.
    pub fn load(dir: &Path, identity: &Identity) -> Result<Credentials, LinkError> {
        let read =
            |path: PathBuf| std::fs::read(&path).map_err(|source| LinkError::Read { path, source });
        let ca = read(certs::ca_cert_path(dir))?;
        let cert = read(certs::cert_path(dir, identity))?;
        let key = read(certs::key_path(dir, identity))?;
        let credentials = Credentials::from_pem(&ca, &cert, &key)?;
        if &credentials.identity != identity {
            return Err(LinkError::Config(format!(
                "{} names {}, not {identity}",
                certs::cert_path(dir, identity).display(),
                credentials.identity
            )));
        }
        Ok(credentials)
    }

    /// From PEM text: the CA certificate, this side's certificate (its identity read from it),
    /// and its private key.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Credentials, LinkError> {
        let pem = |what: &str, kind: &'static str, reason: String| LinkError::Pem {
            what: what.to_string(),
            kind,
            reason,
        };
        let ca = CertificateDer::from_pem_slice(ca)
            .map_err(|error| pem("the CA", "certificate", error.to_string()))?;
        let cert = CertificateDer::from_pem_slice(cert)
            .map_err(|error| pem("the certificate", "certificate", error.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|error| pem("the key", "private key", error.to_string()))?;
        let identity = certs::identity_of(&cert)?;
        Ok(Credentials {
            ca,
            cert,
            key,
            identity,
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, LinkError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(Arc::new(roots))
    }
}

/// ring, named here rather than taken from the process default (see `web/src/tls.rs`).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport(settings: &LinkSettings) -> Result<Arc<quinn::TransportConfig>, LinkError> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(settings.keep_alive));
    transport.max_idle_timeout(Some(settings.idle_timeout.try_into().map_err(|_| {
        LinkError::Config(format!(
            "idle timeout {:?} is too long",
            settings.idle_timeout
        ))
    })?));
    let mut cubic = quinn::congestion::CubicConfig::default();
    cubic.initial_window(INITIAL_WINDOW_BYTES);
    transport.congestion_controller_factory(Arc::new(cubic));
    Ok(Arc::new(transport))
}

/// The congestion window a link starts with.
const INITIAL_WINDOW_BYTES: u64 = 256 * 1024;

/// The host of `HOST:PORT` (brackets of an IPv6 address dropped): the name a node's
/// certificate must carry when it is dialed at that address.
pub fn host_of(address: &str) -> &str {
    address
        .rsplit_once(':')
        .map_or(address, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']')
}

/// The first socket address `HOST:PORT` resolves to, or why there is none.
pub async fn resolve(address: &str) -> Result<SocketAddr, String> {
    match tokio::net::lookup_host(address).await {
        Ok(mut addresses) => addresses
            .next()
            .ok_or_else(|| format!("`{address}` resolves to no address")),
        Err(error) => Err(format!("cannot resolve `{address}`: {error}")),
    }
}

/// The server side: TLS 1.3 only, a client certificate signed by the CA required, ALPN
/// `weft/1`, no 0-RTT.
pub fn server_config(
    credentials: &Credentials,
    settings: &LinkSettings,
) -> Result<quinn::ServerConfig, LinkError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        credentials.roots()?,
        provider(),
    )
    .build()
    .map_err(|error| LinkError::Config(error.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![credentials.cert.clone()], credentials.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto =
        QuicServerConfig::try_from(tls).map_err(|error| LinkError::Config(error.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport(settings)?);
    Ok(config)
}

/// The client side: TLS 1.3 only, the server's certificate checked against the CA and the name
/// dialled, this side's certificate presented, ALPN `weft/1`, no 0-RTT.
pub fn client_config(
    credentials: &Credentials,
    settings: &LinkSettings,
) -> Result<quinn::ClientConfig, LinkError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(credentials.roots()?)
        .with_client_auth_cert(vec![credentials.cert.clone()], credentials.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = false;
    let crypto =
        QuicClientConfig::try_from(tls).map_err(|error| LinkError::Config(error.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport(settings)?);
    Ok(config)
}

/// A QUIC endpoint that accepts links.
#[derive(Debug)]
pub struct Listener {
    endpoint: quinn::Endpoint,
    identity: Identity,
    settings: LinkSettings,
}

impl Listener {
    pub fn bind(
        addr: SocketAddr,
        credentials: &Credentials,
        settings: LinkSettings,
    ) -> Result<Listener, LinkError> {
        let config = server_config(credentials, &settings)?;
        let endpoint = quinn::Endpoint::server(config, addr)
            .map_err(|source| LinkError::Bind { addr, source })?;
        Ok(Listener {
            endpoint,
            identity: credentials.identity.clone(),
            settings,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The next connection attempt; `None` once the listener is closed. Complete it with
    /// [`Accepting::handshake`], typically in a task of its own, so that a slow peer holds up
    /// no other.
    pub async fn accept(&self) -> Option<Accepting> {
        let incoming = self.endpoint.accept().await?;
        Some(Accepting {
            incoming,
            identity: self.identity.clone(),
            settings: self.settings.clone(),
        })
    }

    /// Closes every connection and stops accepting.
    pub fn close(&self) {
        self.endpoint
            .close(VarInt::from_u32(CLOSE_DONE), b"listener closed");
    }
}

/// A connection attempt to a [`Listener`], not yet handshaken.
#[derive(Debug)]
pub struct Accepting {
    incoming: quinn::Incoming,
    identity: Identity,
    settings: LinkSettings,
}

impl Accepting {
    pub fn remote_address(&self) -> SocketAddr {
        self.incoming.remote_address()
    }

    /// The TLS handshake, then the hello exchange. A refusal is logged here, with its reason.
    pub async fn handshake(self) -> Result<Link, LinkError> {
        let peer = self.remote_address();
        let result = tokio::time::timeout(
            Duration::from_millis(HANDSHAKE_MS_MAX),
            server_handshake(self.incoming, &self.identity, &self.settings),
        )
        .await
        .unwrap_or(Err(LinkError::HandshakeTimeout { peer }));
        refused(result, "accepted", peer)
    }
}

async fn server_handshake(
    incoming: quinn::Incoming,
    own: &Identity,
    settings: &LinkSettings,
) -> Result<Link, LinkError> {
    let peer = incoming.remote_address();
    let connection = incoming.await.map_err(|error| tls_refused(peer, &error))?;
    let identity = peer_identity(&connection)?;
    let (mut send, mut recv) = connection
        .accept_bi()
        .await
        .map_err(|error| lost_in_hello(peer, error))?;
    let theirs = read_hello(&connection, &mut recv).await?;
    if theirs.0 == settings.protocol_version {
        // A role the certificate contradicts is refused before this side says anything.
        check_role(&connection, &identity, theirs.1)?;
    }
    // Our hello goes back whatever version theirs said, so that a peer of another version can
    // name both versions too.
    write_frame(&mut send, &hello(settings.protocol_version, own.role()))
        .await
        .map_err(|error| hello_io(&connection, peer, error))?;
    let _ = send.finish();
    if theirs.0 != settings.protocol_version {
        // Give the peer time to read our hello and close first; then close.
        let _ = tokio::time::timeout(
            Duration::from_millis(MISMATCH_LINGER_MS),
            connection.closed(),
        )
        .await;
        return Err(version_mismatch(
            &connection,
            settings.protocol_version,
            theirs.0,
        ));
    }
    Ok(Link {
        connection,
        peer: identity,
    })
}

/// A QUIC endpoint that opens links.
#[derive(Debug)]
pub struct Connector {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    identity: Identity,
    settings: LinkSettings,
}

impl Connector {
    /// An endpoint on `bind` (e.g. `0.0.0.0:0`) that connects with `credentials`.
    pub fn bind(
        bind: SocketAddr,
        credentials: &Credentials,
        settings: LinkSettings,
    ) -> Result<Connector, LinkError> {
        let config = client_config(credentials, &settings)?;
        Connector::with_config(bind, config, credentials.identity.clone(), settings)
    }

    /// An endpoint with a client configuration built elsewhere. The role this side announces
    /// in its hello is `identity`'s; the peer checks it against the certificate presented.
    pub fn with_config(
        bind: SocketAddr,
        config: quinn::ClientConfig,
        identity: Identity,
        settings: LinkSettings,
    ) -> Result<Connector, LinkError> {
        let endpoint = quinn::Endpoint::client(bind)
            .map_err(|source| LinkError::Bind { addr: bind, source })?;
        Ok(Connector {
            endpoint,
            config,
            identity,
            settings,
        })
    }

    /// Connects to the node at `addr`, whose certificate must name `server_name` (a DNS name
    /// or an IP address), then exchanges hellos. A refusal is logged here, with its reason.
    pub async fn connect(&self, addr: SocketAddr, server_name: &str) -> Result<Link, LinkError> {
        let result = tokio::time::timeout(
            Duration::from_millis(HANDSHAKE_MS_MAX),
            self.client_handshake(addr, server_name),
        )
        .await
        .unwrap_or(Err(LinkError::HandshakeTimeout { peer: addr }));
        refused(result, "connected", addr)
    }

    async fn client_handshake(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Link, LinkError> {
        let connect_error = |reason: String| LinkError::Connect {
            addr,
            server_name: server_name.to_string(),
            reason,
        };
        ServerName::try_from(server_name).map_err(|error| connect_error(error.to_string()))?;
        let connection = self
            .endpoint
            .connect_with(self.config.clone(), addr, server_name)
            .map_err(|error| connect_error(error.to_string()))?
            .await
            .map_err(|error| tls_refused(addr, &error))?;
        let identity = peer_identity(&connection)?;
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|error| lost_in_hello(addr, error))?;
        write_frame(
            &mut send,
            &hello(self.settings.protocol_version, self.identity.role()),
        )
        .await
        .map_err(|error| hello_io(&connection, addr, error))?;
        let _ = send.finish();
        let theirs = read_hello(&connection, &mut recv).await?;
        if theirs.0 != self.settings.protocol_version {
            return Err(version_mismatch(
                &connection,
                self.settings.protocol_version,
                theirs.0,
            ));
        }
        check_role(&connection, &identity, theirs.1)?;
        Ok(Link {
            connection,
            peer: identity,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }
}

/// Logs a refused handshake on this side.
fn refused(
    result: Result<Link, LinkError>,
    side: &str,
    peer: SocketAddr,
) -> Result<Link, LinkError> {
    match &result {
        Ok(link) => {
            tracing::debug!(%peer, identity = %link.peer, "link {side}");
        }
        Err(error) => {
            let reason = match error {
                LinkError::VersionMismatch { .. } => "version",
                LinkError::HandshakeTimeout { .. } => "timeout",
                _ => "refused",
            };
            metrics::counter!("weft_link_handshakes_refused_total", "reason" => reason)
                .increment(1);
            tracing::warn!(%peer, %error, "link handshake refused");
        }
    }
    result
}

fn hello(version: u16, role: Role) -> Vec<u8> {
    let mut payload = version.to_be_bytes().to_vec();
    payload.push(match role {
        Role::Worker => 0,
        Role::Node => 1,
    });
    payload
}

async fn read_hello(
    connection: &quinn::Connection,
    recv: &mut RecvStream,
) -> Result<(u16, Option<Role>), LinkError> {
    let peer = connection.remote_address();
    let payload = match read_frame(recv).await {
        Ok(Some(payload)) => payload,
        Ok(None) => {
            return Err(close(
                connection,
                CLOSE_BAD_HELLO,
                "no hello: the stream ended",
            ));
        }
        Err(error) => return Err(hello_io(connection, peer, error)),
    };
    // The version comes first, in every version: read it even if the rest differs.
    if payload.len() < 2 {
        return Err(close(connection, CLOSE_BAD_HELLO, "the hello is too short"));
    }
    let version = u16::from_be_bytes([payload[0], payload[1]]);
    let role = match payload.get(2) {
        Some(0) if payload.len() == HELLO_BYTES => Some(Role::Worker),
        Some(1) if payload.len() == HELLO_BYTES => Some(Role::Node),
        _ => None,
    };
    Ok((version, role))
}

fn check_role(
    connection: &quinn::Connection,
    identity: &Identity,
    role: Option<Role>,
) -> Result<(), LinkError> {
    match role {
        Some(role) if role == identity.role() => Ok(()),
        Some(role) => Err(close(
            connection,
            CLOSE_BAD_HELLO,
            &format!("the hello says {role} but the certificate names {identity}"),
        )),
        None => Err(close(connection, CLOSE_BAD_HELLO, "the hello is malformed")),
    }
}

fn version_mismatch(connection: &quinn::Connection, ours: u16, theirs: u16) -> LinkError {
    let reason =
        format!("protocol version mismatch: this side speaks {ours}, the peer speaks {theirs}");
    connection.close(VarInt::from_u32(CLOSE_VERSION_MISMATCH), reason.as_bytes());
    LinkError::VersionMismatch {
        peer: connection.remote_address(),
        ours,
        theirs,
    }
}

/// Closes the connection with `code` and `reason`, and says so.
fn close(connection: &quinn::Connection, code: u32, reason: &str) -> LinkError {
    connection.close(VarInt::from_u32(code), reason.as_bytes());
    LinkError::Refused {
        peer: connection.remote_address(),
        reason: reason.to_string(),
    }
}

/// A failed hello read or write: the peer's own refusal when it closed the connection, a
/// malformed hello otherwise.
fn hello_io(connection: &quinn::Connection, peer: SocketAddr, error: FrameError) -> LinkError {
    if let Some(closed) = connection.close_reason() {
        return lost_in_hello(peer, closed);
    }
    match error {
        FrameError::Io(error) => LinkError::Refused {
            peer,
            reason: format!("the hello exchange failed: {error}"),
        },
        error => close(
            connection,
            CLOSE_BAD_HELLO,
            &format!("the hello is malformed: {error}"),
        ),
    }
}

fn lost_in_hello(peer: SocketAddr, error: ConnectionError) -> LinkError {
    LinkError::Refused {
        peer,
        reason: describe(&error),
    }
}

fn peer_identity(connection: &quinn::Connection) -> Result<Identity, LinkError> {
    let cert = connection
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().cloned());
    let Some(cert) = cert else {
        return Err(close(
            connection,
            CLOSE_NO_IDENTITY,
            "the peer presented no certificate",
        ));
    };
    certs::identity_of(&cert).map_err(|error| {
        connection.close(
            VarInt::from_u32(CLOSE_NO_IDENTITY),
            error.to_string().as_bytes(),
        );
        LinkError::Refused {
            peer: connection.remote_address(),
            reason: format!("the peer's certificate: {error}"),
        }
    })
}

fn tls_refused(peer: SocketAddr, error: &ConnectionError) -> LinkError {
    LinkError::Refused {
        peer,
        reason: describe(error),
    }
}

/// A connection error in words: which side refused what, with a hint for the TLS alerts a
/// misconfigured deployment meets.
fn describe(error: &ConnectionError) -> String {
    let crypto_alert = |code: u64| (0x100..0x200).contains(&code).then(|| (code - 0x100) as u8);
    let hint = |alert: u8| match alert {
        40 | 42 | 46 | 48 | 51 => {
            " (is the certificate from another deployment's CA, or the name dialled not in it?)"
        }
        45 => " (a certificate has expired: issue it again with `weft certs issue`)",
        116 => " (the client presented no certificate)",
        120 => " (no common application protocol: this side offers weft/1)",
        _ => "",
    };
    match error {
        ConnectionError::TransportError(error) => {
            let code = u64::from(error.code);
            match crypto_alert(code) {
                Some(alert) => format!("TLS refused by this side: {}{}", error.reason, hint(alert)),
                None => format!("transport error: {error}"),
            }
        }
        ConnectionError::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            let reason = String::from_utf8_lossy(&close.reason);
            match crypto_alert(code) {
                Some(alert) => format!(
                    "TLS refused by the peer (alert {alert}{}{reason}){}",
                    if reason.is_empty() { "" } else { ": " },
                    hint(alert)
                ),
                None => format!("the peer closed the connection: {close}"),
            }
        }
        ConnectionError::ApplicationClosed(close) => format!(
            "the peer closed the link (code {}): {}",
            close.error_code,
            String::from_utf8_lossy(&close.reason)
        ),
        other => other.to_string(),
    }
}

/// A handshaken connection: who the peer is (from its certificate), and streams of frames.
#[derive(Debug, Clone)]
pub struct Link {
    connection: quinn::Connection,
    peer: Identity,
}

impl Link {
    /// The peer, as its certificate names it.
    pub fn peer(&self) -> &Identity {
        &self.peer
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.connection.remote_address()
    }

    /// The QUIC connection under the link.
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }

    /// Opens a channel (a bidirectional stream); the peer sees it with its first frame.
    pub async fn open(&self) -> Result<Channel, LinkError> {
        let (send, recv) = self
            .connection
            .open_bi()
            .await
            .map_err(|source| self.lost(source))?;
        Ok(self.channel(send, recv))
    }

    /// The next channel the peer opened.
    pub async fn accept(&self) -> Result<Channel, LinkError> {
        let (send, recv) = self
            .connection
            .accept_bi()
            .await
            .map_err(|source| self.lost(source))?;
        Ok(self.channel(send, recv))
    }

    /// Closes the link normally.
    pub fn close(&self, reason: &str) {
        self.connection
            .close(VarInt::from_u32(CLOSE_DONE), reason.as_bytes());
    }

    /// Waits for the link to close, and says why it did.
    pub async fn closed(&self) -> ConnectionError {
        self.connection.closed().await
    }

    fn lost(&self, source: ConnectionError) -> LinkError {
        LinkError::Lost {
            peer: self.peer.clone(),
            source,
        }
    }

    fn channel(&self, send: SendStream, recv: RecvStream) -> Channel {
        Channel {
            send,
            recv,
            connection: self.connection.clone(),
            peer: self.peer.clone(),
        }
    }
}

/// Frames both ways over one bidirectional stream of a link.
#[derive(Debug)]
pub struct Channel {
    send: SendStream,
    recv: RecvStream,
    connection: quinn::Connection,
    peer: Identity,
}

impl Channel {
    pub fn peer(&self) -> &Identity {
        &self.peer
    }

    pub async fn send(&mut self, payload: &[u8]) -> Result<(), LinkError> {
        write_frame(&mut self.send, payload)
            .await
            .map_err(|source| LinkError::Stream {
                peer: self.peer.clone(),
                source,
            })
    }

    /// The next frame's payload; `None` when the peer finished the stream. A malformed or
    /// oversized frame closes the whole connection ([`CLOSE_BAD_FRAME`], with the reason), is
    /// counted and logged, and is returned as [`LinkError::BadFrame`].
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, LinkError> {
        match read_frame(&mut self.recv).await {
            Ok(payload) => Ok(payload),
            Err(source) => match source.reason() {
                Some(reason) => {
                    metrics::counter!("weft_link_frames_refused_total", "reason" => reason)
                        .increment(1);
                    tracing::warn!(
                        peer = %self.peer,
                        address = %self.connection.remote_address(),
                        error = %source,
                        "bad frame: closing the link"
                    );
                    self.connection.close(
                        VarInt::from_u32(CLOSE_BAD_FRAME),
                        format!("bad frame: {source}").as_bytes(),
                    );
                    Err(LinkError::BadFrame {
                        peer: self.peer.clone(),
                        source,
                    })
                }
                None => Err(LinkError::Stream {
                    peer: self.peer.clone(),
                    source,
                }),
            },
        }
    }

    /// Ends this side of the stream (the peer's `recv` then returns `None`).
    pub fn finish(&mut self) {
        let _ = self.send.finish();
    }

    /// The QUIC streams under the channel, for a protocol that frames its own messages from
    /// here on (a `ractor_cluster` session, [`crate::cluster`]). Nothing of a frame is left
    /// unread: [`Channel::recv`] reads exactly one frame.
    pub fn into_streams(self) -> (SendStream, RecvStream) {
        (self.send, self.recv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn decode(bytes: &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        let mut reader = bytes;
        read_frame(&mut reader).await
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, b"hello").await.unwrap();
        write_frame(&mut buffer, b"").await.unwrap();
        assert_eq!(&buffer[..5], &[0, 0, 0, 6, FRAME_FORMAT]);
        let mut reader = buffer.as_slice();
        assert_eq!(
            read_frame(&mut reader).await.unwrap(),
            Some(b"hello".to_vec())
        );
        assert_eq!(read_frame(&mut reader).await.unwrap(), Some(Vec::new()));
        assert_eq!(read_frame(&mut reader).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_frame_at_the_limit_passes_and_one_over_it_is_refused_both_ways() {
        let largest = vec![7u8; FRAME_BYTES_MAX as usize - 1];
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &largest).await.unwrap();
        assert_eq!(decode(&buffer).await.unwrap(), Some(largest));

        let mut buffer = Vec::new();
        let error = write_frame(&mut buffer, &vec![0u8; FRAME_BYTES_MAX as usize])
            .await
            .unwrap_err();
        assert!(matches!(error, FrameError::Oversized { .. }), "{error}");
        assert!(buffer.is_empty(), "nothing written");

        // A length over the limit is refused from the prefix alone, before reading on.
        let error = decode(&(FRAME_BYTES_MAX + 1).to_be_bytes())
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "frame of {} bytes is over the limit of {FRAME_BYTES_MAX} bytes",
                FRAME_BYTES_MAX + 1
            )
        );
        assert_eq!(error.reason(), Some("oversized"));
    }

    #[tokio::test]
    async fn malformed_frames_are_refused() {
        let error = decode(&[0, 0, 0, 3, 9, 1, 2]).await.unwrap_err();
        assert!(
            matches!(
                error,
                FrameError::Format {
                    found: 9,
                    expected: FRAME_FORMAT
                }
            ),
            "{error}"
        );
        let error = decode(&[0, 0, 0, 0]).await.unwrap_err();
        assert!(matches!(error, FrameError::Empty), "{error}");
        for truncated in [&[0, 0][..], &[0, 0, 0, 5], &[0, 0, 0, 5, 1, 1, 2]] {
            let error = decode(truncated).await.unwrap_err();
            assert!(
                matches!(error, FrameError::Truncated),
                "{truncated:?}: {error}"
            );
            assert_eq!(error.reason(), Some("truncated"));
        }
    }
}

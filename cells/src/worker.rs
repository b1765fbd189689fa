//! A worker's side: it dials its node, joins the node's `ractor_cluster` session over the link
//! (its slots, `weft_actors`' remote slots, are then the node's remote actors), and dials again
//! when the link is lost, with a growing pause. Its slots hold the lease: a slot that hears no
//! poll for the lease stops its attempt, so a worker cut off from its node runs nothing the
//! node has given up on. A refusal that another try cannot mend (the node's certificate is
//! from another CA, or this worker's is; another protocol version) ends the worker with that
//! reason.

use crate::certs::Identity;
use crate::cluster::{ClusterError, ClusterNode};
use crate::link::{Connector, Credentials, Link, LinkError, LinkSettings};
use crate::logs::CurrentLink;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// The first and the longest pause between two dials.
const REDIAL_MS_FIRST: u64 = 100;
const REDIAL_MS_MAX: u64 = 5_000;

/// Where and how a worker reaches its node.
#[derive(Debug, Clone)]
pub struct WorkerLink {
    /// `HOST:PORT` of the node's `workers.listen`.
    pub connect: String,
    /// The name the node's certificate must carry (its host name or address by default).
    pub server_name: String,
    pub settings: LinkSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot resolve the node's address `{0}`")]
    Resolve(String),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("the node refused this worker: {0}")]
    Refused(String),
}

/// Whether another dial may mend `error`: a node not up yet, or a link lost mid-handshake, may;
/// a TLS refusal (a certificate from another CA, an expired one, none), another protocol
/// version or a local configuration error may not.
fn worth_redialing(error: &LinkError) -> bool {
    match error {
        LinkError::HandshakeTimeout { .. } | LinkError::Lost { .. } | LinkError::Stream { .. } => {
            true
        }
        LinkError::Refused { reason, .. } => !reason.contains("TLS"),
        _ => false,
    }
}

fn resolve(connect: &str) -> Result<SocketAddr, WorkerError> {
    use std::net::ToSocketAddrs;
    connect
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| WorkerError::Resolve(connect.to_string()))
}

/// Serves `slots` to the node `link` names until `stop` resolves (or a refusal ends it):
/// dial, join the session, wait for the link's end, dial again. The slots are in their
/// process groups already; each session shows them to the node. `current` holds the link while
/// there is one (attempts' logs go over it).
pub async fn serve(
    link: &WorkerLink,
    credentials: &Credentials,
    identity: &Identity,
    current: &CurrentLink,
    stop: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let set_current = |link: Option<Link>| {
        *current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = link;
    };
    let connector = Connector::bind(
        "0.0.0.0:0".parse().expect("an address"),
        credentials,
        link.settings.clone(),
    )?;
    tokio::pin!(stop);
    let mut pause = REDIAL_MS_FIRST;
    loop {
        let address = resolve(&link.connect)?;
        let attempt = async {
            let connected = connector.connect(address, &link.server_name).await?;
            let session = ClusterNode::join(&connected, identity).await;
            Ok::<(Link, Result<ClusterNode, ClusterError>), LinkError>((connected, session))
        };
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            () = &mut stop => return Ok(()),
        };
        match outcome {
            Ok((connected, Ok(session))) => {
                pause = REDIAL_MS_FIRST;
                tracing::info!(node = %connected.peer(), %address, "joined the node");
                set_current(Some(connected.clone()));
                let ended = tokio::select! {
                    reason = connected.closed() => Some(reason),
                    () = &mut stop => None,
                };
                set_current(None);
                match ended {
                    Some(reason) => {
                        tracing::warn!(%reason, "link to the node lost; dialing again");
                        session.stop().await;
                    }
                    None => {
                        connected.close("worker stopping");
                        session.stop().await;
                        return Ok(());
                    }
                }
            }
            Ok((connected, Err(error))) => {
                tracing::warn!(%error, "the node's session refused this worker");
                connected.close("session refused");
                if matches!(error, ClusterError::Refused { .. }) {
                    return Err(WorkerError::Refused(error.to_string()));
                }
            }
            Err(error) if worth_redialing(&error) => {
                tracing::warn!(%error, "cannot reach the node; dialing again");
            }
            Err(error) => return Err(WorkerError::Link(error)),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(pause)) => {}
            () = &mut stop => return Ok(()),
        }
        pause = (pause * 2).min(REDIAL_MS_MAX);
    }
}

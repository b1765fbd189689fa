//! A worker's side: it dials its node, joins the node's `ractor_cluster` session over the link
//! (its slots, `weft_actors`' remote slots, are then the node's remote actors), and dials again
//! when the link is lost, with a growing pause. Given several cells, it dials them all at once
//! and joins the nearest that answers (the smallest round-trip time QUIC measured over the
//! handshake), closing the other links; when that link is lost it measures again, so a worker
//! whose cell died moves to the next nearest. Its slots hold the lease: a slot that hears no
//! poll for the lease stops its attempt, so a worker cut off from its node runs nothing the
//! node has given up on. A refusal that another try cannot mend (the node's certificate is
//! from another CA, or this worker's is; another protocol version) ends the worker with that
//! reason.

use crate::certs::Identity;
use crate::cluster::{ClusterError, ClusterNode};
use crate::link::{host_of, resolve, Connector, Credentials, Link, LinkError, LinkSettings};
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
    /// `HOST:PORT` of the node's `workers.listen`, or of each cell's the worker may serve (it
    /// joins the nearest that answers).
    pub connect: Vec<String>,
    /// The name the node's certificate must carry; empty: the host of each address.
    pub server_name: String,
    pub settings: LinkSettings,
}

/// The least time the other cells get to answer after the first did.
const GRACE_MIN: Duration = Duration::from_millis(20);

/// Addresses a worker may be given.
pub const CONNECT_MAX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("no address to dial: give the node's (or each cell's) workers.listen")]
    NoAddress,
    #[error("{count} addresses to dial, more than the {CONNECT_MAX} a worker takes")]
    TooManyAddresses { count: usize },
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("the node refused this worker: {0}")]
    Refused(String),
}

impl WorkerLink {
    /// The name `address`'s certificate must carry.
    fn server_name_for<'a>(&'a self, address: &'a str) -> &'a str {
        if self.server_name.is_empty() {
            host_of(address)
        } else {
            &self.server_name
        }
    }
}

/// Why no link was made this round: another round may mend it, or not.
enum DialError {
    Again(String),
    Fatal(LinkError),
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

/// Dial every address of `link` at once and keep the link with the smallest round-trip time;
/// the others are closed. The first to answer is usually the nearest (a handshake takes two
/// round trips); the others get half as long again to answer and be compared, so a dead cell's
/// handshake timeout delays nobody. An address that does not resolve, or does not answer, is
/// passed over (another round tries it again); a refusal no round can mend ends the worker only
/// when no address answered.
async fn dial_nearest(
    connector: &Connector,
    link: &WorkerLink,
) -> Result<(Link, SocketAddr), DialError> {
    use futures::StreamExt as _;
    let started = tokio::time::Instant::now();
    let mut dials: futures::stream::FuturesUnordered<_> = link
        .connect
        .iter()
        .map(|connect| async move {
            let address = resolve(connect).await.map_err(DialError::Again)?;
            match connector
                .connect(address, link.server_name_for(connect))
                .await
            {
                Ok(connected) => Ok((connected, address)),
                Err(error) if worth_redialing(&error) => {
                    Err(DialError::Again(format!("{connect}: {error}")))
                }
                Err(error) => Err(DialError::Fatal(error)),
            }
        })
        .collect();
    let mut answered = Vec::new();
    let mut failures = Vec::new();
    let mut grace: Option<tokio::time::Instant> = None;
    loop {
        let next = match grace {
            Some(until) => match tokio::time::timeout_at(until, dials.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => dials.next().await,
        };
        let Some(outcome) = next else {
            break;
        };
        match outcome {
            Ok(found) => {
                if grace.is_none() {
                    let waited = started.elapsed();
                    grace = Some(tokio::time::Instant::now() + waited / 2 + GRACE_MIN);
                }
                answered.push(found);
            }
            Err(failure) => failures.push(failure),
        }
    }
    // Links still in their handshake when the grace ran out are dropped with the stream.
    drop(dials);
    answered.sort_by_key(|(connected, _)| connected.connection().rtt());
    if link.connect.len() > 1 && !answered.is_empty() {
        let measured: Vec<String> = answered
            .iter()
            .map(|(connected, address)| {
                format!(
                    "{} at {address}: {:.1} ms",
                    connected.peer().name(),
                    connected.connection().rtt().as_secs_f64() * 1e3
                )
            })
            .collect();
        tracing::info!(round_trips = %measured.join(", "), "cells by round-trip time");
    }
    let mut answered = answered.into_iter();
    if let Some(nearest) = answered.next() {
        for failure in &failures {
            if let DialError::Fatal(error) = failure {
                tracing::warn!(%error, "a cell refused this worker; serving a nearer one");
            }
        }
        for (farther, _) in answered {
            farther.close("another cell is nearer");
        }
        return Ok(nearest);
    }
    // No address answered: a refusal no round can mend wins over one that may pass.
    let mut again = Vec::new();
    for failure in failures {
        match failure {
            DialError::Fatal(error) => return Err(DialError::Fatal(error)),
            DialError::Again(reason) => again.push(reason),
        }
    }
    Err(DialError::Again(again.join("; ")))
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
    if link.connect.is_empty() {
        return Err(WorkerError::NoAddress);
    }
    if link.connect.len() > CONNECT_MAX {
        return Err(WorkerError::TooManyAddresses {
            count: link.connect.len(),
        });
    }
    tokio::pin!(stop);
    let mut pause = REDIAL_MS_FIRST;
    loop {
        let attempt = async {
            let (connected, address) = dial_nearest(&connector, link).await?;
            let session = ClusterNode::join(&connected, identity).await;
            Ok::<(Link, SocketAddr, Result<ClusterNode, ClusterError>), DialError>((
                connected, address, session,
            ))
        };
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            () = &mut stop => return Ok(()),
        };
        match outcome {
            Ok((connected, address, Ok(session))) => {
                pause = REDIAL_MS_FIRST;
                let rtt_ms = connected.connection().rtt().as_secs_f64() * 1e3;
                tracing::info!(node = %connected.peer(), %address, rtt_ms, "joined the node");
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
            Ok((connected, _, Err(error))) => {
                tracing::warn!(%error, "the node's session refused this worker");
                connected.close("session refused");
                if matches!(error, ClusterError::Refused { .. }) {
                    return Err(WorkerError::Refused(error.to_string()));
                }
            }
            Err(DialError::Again(reason)) => {
                tracing::warn!(%reason, "cannot reach the node; dialing again");
            }
            Err(DialError::Fatal(error)) => return Err(WorkerError::Link(error)),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(pause)) => {}
            () = &mut stop => return Ok(()),
        }
        pause = (pause * 2).min(REDIAL_MS_MAX);
    }
}

//! A node's side of remote workers: it listens for their links (`workers.listen`), runs a
//! `ractor_cluster` session over each ([`ClusterNode::accept`]), and, once a session is ready,
//! finds the worker's slots in the process group `weft_actors`' remote slots join, greets each
//! (`Hello`, which numbers the session) and hands the worker to the engine
//! ([`WorkerEvent::Joined`]). When the session ends (the link closed, or timed out: QUIC's idle
//! timeout is what finds a dead or cut-off worker) the engine hears [`WorkerEvent::Left`].
//!
//! Who the worker is comes from its link's certificate only: the name a slot says in its
//! `Hello` is logged when it differs, never used.

use crate::certs::{Identity, Role};
use crate::cluster::{ClusterError, ClusterNode, SessionEvent, SessionEventKind};
use crate::link::{Credentials, LinkError, LinkSettings, Listener};
use crate::logs::LogSink;
use ractor::rpc::CallResult;
use ractor::{ActorCell, ActorRef};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use weft_actors::{RemoteSlotMsg, RemoteWorker, SlotHello};

/// How long a ready session may take to show all its slots and answer their greetings.
const SLOTS_FOUND_MS_MAX: u64 = 10_000;
/// Slots one worker may have.
pub const WORKER_SLOTS_MAX: u32 = 1024;
/// Handshakes in progress at once, at most; more connection attempts meanwhile are refused.
pub const HANDSHAKES_MAX: usize = 64;
/// Room beyond an attempt's log limit for what the executor appends at the limit (its note that
/// the log was cut).
const LOG_FRAMING_BYTES: u64 = 4096;
/// Workers' events waiting for the engine, at most.
const EVENTS_QUEUED_MAX: usize = 1024;

/// What the engine learns of remote workers.
#[derive(Debug)]
pub enum WorkerEvent {
    Joined(RemoteWorker),
    Left { name: String, session: u64 },
}

/// Remote workers' links and sessions on a node.
#[derive(Debug)]
pub struct WorkerService {
    listener: Arc<Listener>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    cluster: Arc<ClusterNode>,
    /// Where links from other cells (node certificates) go, once a cell's peer links are up.
    cells: CellLinks,
}

/// Where the listener hands links that present a node's certificate: another cell's.
type CellLinks = Arc<std::sync::OnceLock<mpsc::Sender<crate::link::Link>>>;

/// The certificate a session came over, and where from, by its peer's identity URI (a worker
/// has one link at a time; a newer one replaces the entry).
type Links = Arc<Mutex<HashMap<String, SocketAddr>>>;

impl WorkerService {
    /// Listens on `listen` with the node's `credentials`; the workers' comings and goings are
    /// sent on the returned channel.
    pub async fn start(
        listen: SocketAddr,
        credentials: &Credentials,
        settings: LinkSettings,
        logs: Logs,
    ) -> Result<(WorkerService, mpsc::Receiver<WorkerEvent>), ServiceError> {
        let identity = credentials.identity().clone();
        if identity.role() != Role::Node {
            return Err(ServiceError::NotANode(identity));
        }
        let listener = Arc::new(Listener::bind(listen, credentials, settings)?);
        let mut cluster = ClusterNode::start_node(&identity).await?;
        let sessions = cluster.take_events();
        let cluster = Arc::new(cluster);
        let (events, received) = mpsc::channel(EVENTS_QUEUED_MAX);
        let links: Links = Arc::default();
        let cells: CellLinks = Arc::default();
        let accept = tokio::spawn(accept_links(
            listener.clone(),
            cluster.clone(),
            links.clone(),
            logs,
            cells.clone(),
        ));
        let follow = tokio::spawn(follow_sessions(sessions, links, events));
        let service = WorkerService {
            listener,
            tasks: vec![accept, follow],
            cluster,
            cells,
        };
        Ok((service, received))
    }

    /// [`WorkerService::start`] for `engine`: workers' comings and goings reach its dispatcher,
    /// their logs go where the engine keeps attempts' logs (for attempts it placed on them),
    /// up to its log size limit and a little room for the executor's last words.
    pub async fn start_for(
        engine: &weft_actors::Engine,
        listen: SocketAddr,
        credentials: &Credentials,
        settings: LinkSettings,
    ) -> Result<WorkerService, ServiceError> {
        let sink_engine = engine.clone();
        let logs = Logs {
            sink: Arc::new(move |worker, attempt| {
                let engine = sink_engine.clone();
                Box::pin(async move { engine.remote_log_path(&worker, &attempt).await })
            }),
            bytes_max: engine.log_bytes_max() + LOG_FRAMING_BYTES,
        };
        let (mut service, mut events) =
            WorkerService::start(listen, credentials, settings, logs).await?;
        let engine = engine.clone();
        service.tasks.push(tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let told = match event {
                    WorkerEvent::Joined(worker) => engine.remote_worker_joined(worker),
                    WorkerEvent::Left { name, session } => {
                        engine.remote_worker_left(&name, session)
                    }
                };
                if told.is_err() {
                    return;
                }
            }
        }));
        Ok(service)
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Hand links from other cells to `cells` (`crate::peers::Peers::acceptor`); until then
    /// they are closed.
    pub fn route_cells(&self, cells: mpsc::Sender<crate::link::Link>) {
        let _ = self.cells.set(cells);
    }

    /// Closes the listener and every worker's link.
    pub async fn stop(self) {
        self.listener.close();
        for task in &self.tasks {
            task.abort();
        }
        match Arc::try_unwrap(self.cluster) {
            Ok(cluster) => cluster.stop().await,
            Err(cluster) => cluster.server().stop(Some("stopped".to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("workers are accepted with a node's certificate, not {0}'s")]
    NotANode(Identity),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Where workers' logs go, and their size limit.
#[derive(Clone)]
pub struct Logs {
    pub sink: LogSink,
    pub bytes_max: u64,
}

impl std::fmt::Debug for Logs {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Logs")
            .field("bytes_max", &self.bytes_max)
            .finish_non_exhaustive()
    }
}

async fn accept_links(
    listener: Arc<Listener>,
    cluster: Arc<ClusterNode>,
    links: Links,
    logs: Logs,
    cells: CellLinks,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
    while let Some(accepting) = listener.accept().await {
        let address = accepting.remote_address();
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            // Dropped unanswered: the connection attempt is refused.
            tracing::warn!(%address, HANDSHAKES_MAX, "worker link refused: too many handshakes at once");
            metrics::counter!("weft_link_handshakes_refused_total", "reason" => "busy")
                .increment(1);
            continue;
        };
        let (cluster, links, logs) = (cluster.clone(), links.clone(), logs.clone());
        let cells = cells.clone();
        tokio::spawn(async move {
            // A refused handshake is logged by the link with its reason.
            let handshake = accepting.handshake().await;
            drop(permit);
            let Ok(link) = handshake else {
                return;
            };
            let peer = link.peer().clone();
            if peer.role() == Role::Node {
                match cells.get() {
                    Some(cells) => {
                        if cells.try_send(link.clone()).is_err() {
                            link.close("too many cell links at once");
                        }
                    }
                    None => {
                        tracing::warn!(%peer, %address, "a node's link refused: this node is not a cell");
                        link.close("this node takes no links from other nodes");
                    }
                }
                return;
            }
            links
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(peer.uri(), address);
            if let Err(error) = cluster.accept(&link).await {
                tracing::warn!(%peer, %address, %error, "worker session refused");
                link.close("session refused");
                return;
            }
            let stats = tokio::spawn(export_link_stats(link.clone()));
            // Every later stream the worker opens carries an attempt's log; the link's end
            // ends the session.
            let worker = peer.name().to_string();
            while let Ok(channel) = link.accept().await {
                let (sink, worker) = (logs.sink.clone(), worker.clone());
                tokio::spawn(crate::logs::receive(channel, worker, sink, logs.bytes_max));
            }
            let reason = link.closed().await;
            stats.abort();
            tracing::info!(%peer, %address, %reason, "worker link closed");
        });
    }
}

/// How often a worker link's figures are published.
const LINK_STATS_MS: u64 = 1_000;

/// Publishes a worker link's round-trip time and traffic as metrics labelled with the worker's
/// name (from its certificate), while the link lives.
async fn export_link_stats(link: crate::link::Link) {
    let worker = link.peer().name().to_string();
    loop {
        let stats = link.connection().stats();
        let label = worker.clone();
        metrics::gauge!("weft_worker_link_rtt_seconds", "worker" => label.clone())
            .set(stats.path.rtt.as_secs_f64());
        for (direction, udp) in [("sent", stats.udp_tx), ("received", stats.udp_rx)] {
            let labels = [
                ("worker", label.clone()),
                ("direction", direction.to_string()),
            ];
            metrics::gauge!("weft_worker_link_bytes", &labels).set(udp.bytes as f64);
            metrics::gauge!("weft_worker_link_datagrams", &labels).set(udp.datagrams as f64);
        }
        metrics::gauge!("weft_worker_link_lost_packets", "worker" => label)
            .set(stats.path.lost_packets as f64);
        tokio::time::sleep(Duration::from_millis(LINK_STATS_MS)).await;
    }
}

async fn follow_sessions(
    mut sessions: mpsc::UnboundedReceiver<SessionEvent>,
    links: Links,
    events: mpsc::Sender<WorkerEvent>,
) {
    // Sessions handed to the engine, by node id: their name and session number. A session's
    // number is the node id from a base drawn at random when the service starts: `ractor`
    // numbers sessions from 0 in each `NodeServer`, and a worker that outlived a restart of
    // its node must not take the new node's session for the one it served.
    let joined: Arc<Mutex<HashMap<u64, (String, u64)>>> = Arc::default();
    let base = session_base();
    while let Some(session) = sessions.recv().await {
        match session.kind {
            SessionEventKind::Ready => {
                let (links, events, joined) = (links.clone(), events.clone(), joined.clone());
                tokio::spawn(async move {
                    let address = links
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get(&session.peer)
                        .copied();
                    let number = base.wrapping_add(session.node_id).max(1);
                    match greet(&session, number, address).await {
                        Ok(worker) => {
                            let name = worker.name.clone();
                            joined
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .insert(session.node_id, (name, number));
                            let _ = events.send(WorkerEvent::Joined(worker)).await;
                        }
                        Err(reason) => {
                            tracing::warn!(peer = %session.peer, %reason, "worker not taken on");
                        }
                    }
                });
            }
            SessionEventKind::Closed => {
                let name = joined
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&session.node_id);
                if let Some((name, number)) = name {
                    let left = WorkerEvent::Left {
                        name,
                        session: number,
                    };
                    let _ = events.send(left).await;
                }
            }
            SessionEventKind::Opened | SessionEventKind::Authenticated => {}
        }
    }
}

/// The slots of a ready session, greeted, as the worker the engine places attempts on.
async fn greet(
    session: &SessionEvent,
    number: u64,
    address: Option<SocketAddr>,
) -> Result<RemoteWorker, String> {
    let identity = Identity::from_uri(&session.peer).map_err(|error| error.to_string())?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(SLOTS_FOUND_MS_MAX);
    let mut greeted: Vec<(SlotHello, ActorRef<RemoteSlotMsg>)> = Vec::new();
    loop {
        let members: Vec<ActorCell> =
            ractor::pg::get_members(&weft_actors::SLOTS_GROUP.to_string())
                .into_iter()
                .filter(|member| {
                    !member.get_id().is_local() && member.get_id().node() == session.node_id
                })
                .collect();
        for member in members {
            if greeted
                .iter()
                .any(|(_, slot)| slot.get_id() == member.get_id())
            {
                continue;
            }
            let slot: ActorRef<RemoteSlotMsg> = member.into();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let answer = slot
                .call(
                    |reply| RemoteSlotMsg::Hello {
                        session: number,
                        reply,
                    },
                    Some(left.max(Duration::from_millis(1))),
                )
                .await;
            match answer {
                Ok(CallResult::Success(hello)) => {
                    tracing::debug!(slot = %slot.get_id(), worker = %hello.worker, index = hello.index, "greeted a slot");
                    greeted.push((hello, slot))
                }
                _ => return Err("a slot did not answer its greeting".to_string()),
            }
        }
        if let Some((first, _)) = greeted.first() {
            let slots = first.slots.min(WORKER_SLOTS_MAX);
            if greeted.len() as u32 >= slots {
                break;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "its slots did not all show within {SLOTS_FOUND_MS_MAX} ms ({} found)",
                greeted.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    greeted.sort_by_key(|(hello, _)| hello.index);
    let first = greeted[0].0.clone();
    if greeted
        .iter()
        .enumerate()
        .any(|(index, (hello, _))| hello.index as usize != index)
    {
        return Err("its slots are not numbered 0 to n-1".to_string());
    }
    if first.worker != identity.name() {
        tracing::warn!(
            certificate = identity.name(),
            said = %first.worker,
            "a worker says another name than its certificate's; the certificate's is used"
        );
    }
    Ok(RemoteWorker {
        name: identity.name().to_string(),
        session: number,
        address: address
            .map(|address| address.to_string())
            .unwrap_or_default(),
        version: first.version,
        queues: first.queues,
        labels: first.labels,
        draining: first.draining,
        slots: greeted.into_iter().map(|(_, slot)| slot).collect(),
    })
}

/// A random base for session numbers.
fn session_base() -> u64 {
    let mut bytes = [0u8; 8];
    #[allow(deprecated)]
    let drawn = rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes);
    if drawn.is_err() {
        // The clock is a base unlikely to repeat across restarts.
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| since.as_nanos() as u64);
    }
    u64::from_le_bytes(bytes) >> 1
}

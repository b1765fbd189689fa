//! The links between cells: the same QUIC link with mutual TLS as workers use (a cell's
//! `workers.listen` accepts both; a node certificate marks a cell), one link per pair of cells.
//!
//! Over a link each side serves requests on streams the other opens, one stream per request:
//! - `Events`: a stream of this cell's engine events for the runs it owns (a `Status` frame
//!   every second between them), which the other side publishes to its own subscribers, so the
//!   UI and the live stream of any cell show every run of the deployment;
//! - `Command`: a command for a DAG this cell owns, executed here and answered on the stream
//!   (`weft_actors::Forwarder`), so a user may send any command to any cell.
//!
//! Which cells there are comes from the heartbeat rows (their `address`, as the cell's lease
//! keeper last read them: `Ownership::cell_addresses`) and from `cell.peers`; each side dials the cells it has no link with. When both dial at once, the link
//! the cell with the smaller name dialed is kept and the other closed, on both sides alike.
//!
//! A command is retried only when it was surely not executed (no link to the owner yet, or the
//! owner answered that it no longer owns the DAG); once sent, a lost answer is an error that
//! says so, because executing a trigger twice would make two runs.

use crate::certs::{Identity, Role};
use crate::link::{host_of, resolve, Channel, Connector, Link, LinkError};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use weft_actors::{
    Command, CommandFailure, CommandOutcome, Engine, EngineError, Event, Forwarder, PeerStatus,
};
use weft_core::lease::ShardId;

/// Cells one cell keeps links with.
pub const PEERS_MAX: usize = 64;
/// How often the cells to link with are looked up (heartbeat rows) and missing links dialed.
const DIAL_MS: u64 = 1_000;
/// The longest pause between two dials of a cell that does not answer.
const DIAL_BACKOFF_MS_MAX: u64 = 10_000;
/// How often a cell says how it is on its event streams (workers connected), and how often
/// the links' round-trip times are read.
const STATUS_MS: u64 = 1_000;
/// How long a forwarded command may wait for its answer once sent.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a command waits for a cell that owns its DAG and answers (an owner that died is
/// replaced within its lease and the skew margin: 4.5 s with the default settings).
const OWNER_WAIT: Duration = Duration::from_secs(15);
/// Pause between two looks for a DAG's owner.
const OWNER_RETRY_MS: u64 = 200;
/// Requests served at once per link; more wait for the others to end.
const REQUESTS_PER_LINK_MAX: usize = 256;
/// Frames of events read from a peer and not yet published here (beyond, dropped, counted).
const FOREIGN_EVENTS_MAX: usize = 4_096;
/// Events one frame carries at most (well under the wire's 1 MiB with ids at their limits).
const EVENTS_PER_FRAME_MAX: usize = 256;

/// What the side that opened a stream asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum PeerRequest {
    /// This cell's events, for as long as the stream stays open.
    Events,
    /// Execute a command for a DAG this cell owns.
    Command(Command),
}

/// One frame of an event stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum PeerFrame {
    /// One change, or the changes that came while the previous frame was being sent.
    Events(Vec<Event>),
    Status {
        workers: u32,
    },
}

type Answer = Result<CommandOutcome, CommandFailure>;

/// The links of one cell with the others. Cheap to clone.
#[derive(Clone)]
pub struct Peers {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    connector: Connector,
    own: Identity,
    /// `cell.peers`: addresses dialed whether or not a heartbeat row names them.
    seeds: Vec<String>,
    links: Mutex<HashMap<String, PeerLink>>,
    /// Addresses being dialed, and when each may be dialed again.
    dials: Mutex<HashMap<String, DialState>>,
    /// Remote workers each peer last said it has.
    workers: Mutex<HashMap<String, u32>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

#[derive(Clone)]
struct PeerLink {
    link: Link,
    /// Whether the cell with the smaller name dialed it (that one is kept when two exist).
    kept_on_race: bool,
    address: String,
}

#[derive(Default)]
struct DialState {
    in_flight: bool,
    next: Option<Instant>,
    backoff_ms: u64,
}

/// Why a forwarded command got no answer.
enum AskError {
    /// Surely not executed: it can be sent again.
    NotSent(String),
    /// Perhaps executed: the answer was lost.
    NoAnswer(String),
}

impl Peers {
    /// Links for the cell `engine` runs (its `Ownership` names it), dialing with `connector`
    /// the cells its lease keeper read in the heartbeat rows and the addresses in `seeds`. The
    /// engine's commands for other cells' DAGs go through these links from now on.
    pub fn start(engine: Engine, connector: Connector, own: Identity, seeds: Vec<String>) -> Peers {
        let peers = Peers {
            inner: Arc::new(Inner {
                engine: engine.clone(),
                connector,
                own,
                seeds,
                links: Mutex::default(),
                dials: Mutex::default(),
                workers: Mutex::default(),
                tasks: Mutex::default(),
            }),
        };
        engine.set_forwarder(Arc::new(peers.clone()));
        let dialer = tokio::spawn(dial_loop(Arc::downgrade(&peers.inner)));
        let status = tokio::spawn(status_loop(Arc::downgrade(&peers.inner)));
        lock(&peers.inner.tasks).extend([dialer, status]);
        peers
    }

    /// A sender the listener hands accepted node links to.
    pub fn acceptor(&self) -> mpsc::Sender<Link> {
        let (sender, mut received) = mpsc::channel::<Link>(PEERS_MAX);
        let inner = Arc::downgrade(&self.inner);
        let task = tokio::spawn(async move {
            while let Some(link) = received.recv().await {
                match inner.upgrade() {
                    Some(inner) => inner.register(link, false, None),
                    None => return,
                }
            }
        });
        lock(&self.inner.tasks).push(task);
        sender
    }

    /// The cells this one has a link with.
    pub fn view(&self) -> Vec<PeerStatus> {
        self.inner.view()
    }

    /// Close every link and stop.
    pub fn stop(&self) {
        for task in lock(&self.inner.tasks).drain(..) {
            task.abort();
        }
        for (_, peer) in lock(&self.inner.links).drain() {
            peer.link.close("cell stopping");
        }
    }
}

impl Forwarder for Peers {
    fn forward(
        &self,
        shard: ShardId,
        command: Command,
    ) -> BoxFuture<'static, Result<CommandOutcome, EngineError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.forward(shard, command).await })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    fn own_name(&self) -> &str {
        self.own.name()
    }

    /// Keep `link` (unless a link with the same cell is kept instead) and serve it.
    fn register(self: &Arc<Inner>, link: Link, dialed: bool, address: Option<String>) {
        let peer = link.peer().clone();
        if peer.role() != Role::Node || peer.name() == self.own_name() {
            link.close("not a peer cell");
            return;
        }
        let name = peer.name().to_string();
        let kept_on_race = if dialed {
            self.own_name() < name.as_str()
        } else {
            name.as_str() < self.own_name()
        };
        let address = address.unwrap_or_else(|| link.remote_address().to_string());
        {
            let mut links = lock(&self.links);
            if let Some(existing) = links.get(&name) {
                let alive = existing.link.connection().close_reason().is_none();
                if alive && (existing.kept_on_race || !kept_on_race) {
                    link.close("a link with this cell exists");
                    return;
                }
                existing
                    .link
                    .close("replaced by another link with this cell");
            }
            if !links.contains_key(&name) && links.len() >= PEERS_MAX {
                tracing::warn!(peer = %name, PEERS_MAX, "cell link refused: too many peers");
                link.close("too many peers");
                return;
            }
            links.insert(
                name.clone(),
                PeerLink {
                    link: link.clone(),
                    kept_on_race,
                    address,
                },
            );
        }
        tracing::info!(peer = %name, address = %link.remote_address(), dialed, "cell link up");
        metrics::counter!("weft_cell_links_total").increment(1);
        let serve = tokio::spawn(serve_link(Arc::downgrade(self), link.clone()));
        let follow = tokio::spawn(follow_events(Arc::downgrade(self), link.clone()));
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let reason = link.closed().await;
            serve.abort();
            follow.abort();
            tracing::info!(peer = %name, %reason, "cell link closed");
            if let Some(inner) = this.upgrade() {
                let mut links = lock(&inner.links);
                if links.get(&name).is_some_and(|kept| {
                    kept.link.connection().stable_id() == link.connection().stable_id()
                }) {
                    links.remove(&name);
                }
                lock(&inner.workers).remove(&name);
            }
        });
    }

    fn link_to(&self, cell: &str) -> Option<Link> {
        lock(&self.links).get(cell).map(|peer| peer.link.clone())
    }

    fn view(&self) -> Vec<PeerStatus> {
        let workers = lock(&self.workers).clone();
        let mut peers: Vec<PeerStatus> = lock(&self.links)
            .iter()
            .map(|(name, peer)| {
                let path = peer.link.connection().stats().path;
                PeerStatus {
                    name: name.clone(),
                    address: peer.address.clone(),
                    rtt_ms: path.rtt.as_secs_f64() * 1e3,
                    workers: workers.get(name).copied().unwrap_or(0),
                    lost_packets: path.lost_packets,
                    congestion_window: path.cwnd,
                }
            })
            .collect();
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        peers
    }

    async fn forward(
        self: Arc<Inner>,
        shard: ShardId,
        command: Command,
    ) -> Result<CommandOutcome, EngineError> {
        let Some(ownership) = self.engine.ownership().cloned() else {
            return self.engine.execute_here(command).await;
        };
        let deadline = Instant::now() + OWNER_WAIT;
        let mut why = String::from("no cell holds the shard");
        loop {
            match ownership.owner_of(shard) {
                Some((owner, _)) if owner == self.own_name() => {
                    // Taken here meanwhile.
                    match self.engine.execute_here(command.clone()).await {
                        Err(EngineError::NotOwner { .. }) => why = "the shard moved".into(),
                        result => return result,
                    }
                }
                Some((owner, _)) => match self.ask(&owner, &command).await {
                    Ok(Ok(outcome)) => {
                        metrics::counter!("weft_cell_commands_forwarded_total").increment(1);
                        tracing::info!(verb = command.verb(), dag_id = command.dag_id(), %owner, "command forwarded");
                        return Ok(outcome);
                    }
                    Ok(Err(CommandFailure::NotOwner { .. })) => {
                        why = format!("cell `{owner}` no longer owns the shard");
                    }
                    Ok(Err(failure)) => return Err(failure.into_error(&owner)),
                    Err(AskError::NotSent(reason)) => why = reason,
                    Err(AskError::NoAnswer(reason)) => {
                        metrics::counter!("weft_cell_commands_unanswered_total").increment(1);
                        return Err(EngineError::Unavailable(format!(
                            "the {} was sent to cell `{owner}`, which owns dag `{}`, and its answer was lost ({reason}): it may have been carried out; look before sending it again",
                            command.verb(),
                            command.dag_id()
                        )));
                    }
                },
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(EngineError::Unavailable(format!(
                    "dag `{}` is in shard {shard}, and no cell that owns it answered within {} s ({why})",
                    command.dag_id(),
                    OWNER_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(OWNER_RETRY_MS)).await;
        }
    }

    async fn ask(&self, owner: &str, command: &Command) -> Result<Answer, AskError> {
        let link = self
            .link_to(owner)
            .ok_or_else(|| AskError::NotSent(format!("no link with cell `{owner}` yet")))?;
        let request = weft_actors::wire::encode(&PeerRequest::Command(command.clone()))
            .map_err(|error| AskError::NotSent(error.to_string()))?;
        let mut channel = link
            .open()
            .await
            .map_err(|error| AskError::NotSent(error.to_string()))?;
        let exchange = async {
            channel.send(&request).await?;
            channel.finish();
            channel.recv().await
        };
        let frame = match tokio::time::timeout(ANSWER_TIMEOUT, exchange).await {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => return Err(AskError::NoAnswer("the stream ended".into())),
            Ok(Err(error)) => return Err(AskError::NoAnswer(error.to_string())),
            Err(_) => {
                return Err(AskError::NoAnswer(format!(
                    "no answer within {} s",
                    ANSWER_TIMEOUT.as_secs()
                )))
            }
        };
        weft_actors::wire::decode::<Answer>(&frame)
            .map_err(|error| AskError::NoAnswer(format!("the answer does not decode: {error}")))
    }
}

/// Serve the requests the peer opens streams for, until the link ends.
async fn serve_link(inner: std::sync::Weak<Inner>, link: Link) {
    let requests = Arc::new(tokio::sync::Semaphore::new(REQUESTS_PER_LINK_MAX));
    while let Ok(channel) = link.accept().await {
        let Ok(permit) = requests.clone().acquire_owned().await else {
            return;
        };
        let Some(engine) = inner.upgrade().map(|inner| inner.engine.clone()) else {
            return;
        };
        tokio::spawn(async move {
            serve_request(engine, channel).await;
            drop(permit);
        });
    }
}

async fn serve_request(engine: Engine, mut channel: Channel) {
    let Ok(Some(frame)) = channel.recv().await else {
        return;
    };
    let Some(request) = weft_actors::wire::decode_or_refuse::<PeerRequest>(&frame, "cell request")
    else {
        channel.finish();
        return;
    };
    match request {
        PeerRequest::Command(command) => {
            tracing::info!(
                peer = %channel.peer(),
                verb = command.verb(),
                dag_id = command.dag_id(),
                "command from another cell"
            );
            let answer: Answer = engine
                .execute_here(command)
                .await
                .map_err(CommandFailure::from);
            match weft_actors::wire::encode(&answer) {
                Ok(bytes) => {
                    let _ = channel.send(&bytes).await;
                }
                Err(error) => tracing::warn!(%error, "a command's answer does not encode"),
            }
            channel.finish();
        }
        PeerRequest::Events => stream_events(engine, channel).await,
    }
}

/// Whether `event` is about a DAG this engine owns (events from other cells are not sent on).
fn owned_here(engine: &Engine, event: &Event) -> bool {
    let Some(ownership) = engine.ownership() else {
        return true;
    };
    let dag_id: &str = match event {
        Event::RunChanged { run, .. } => &run.dag_id,
        Event::TaskChanged { key, .. } => &key.dag_id,
        Event::DagChanged { dag_id } => dag_id,
    };
    ownership.epoch_of_dag(dag_id).is_some()
}

/// This cell's events for the runs it owns, and its status every second, until the peer
/// closes the stream or the link ends. A peer that reads too slowly misses events (counted):
/// its UI re-reads the store, as for any subscriber that falls behind.
async fn stream_events(engine: Engine, mut channel: Channel) {
    let mut events = engine.subscribe();
    let mut status = tokio::time::interval(Duration::from_millis(STATUS_MS));
    loop {
        let frame = tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    // What else has come meanwhile goes in the same frame: a burst of changes
                    // costs a few packets, not one each.
                    let mut batch = Vec::new();
                    let mut next = Ok(event);
                    loop {
                        match next {
                            Ok(event) if owned_here(&engine, &event) => batch.push(event),
                            Ok(_) => {}
                            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                                metrics::counter!("weft_cell_events_missed_total").increment(missed);
                            }
                            Err(broadcast::error::TryRecvError::Closed) => return,
                            Err(broadcast::error::TryRecvError::Empty) => break,
                        }
                        if batch.len() >= EVENTS_PER_FRAME_MAX {
                            break;
                        }
                        next = events.try_recv();
                    }
                    if batch.is_empty() {
                        continue;
                    }
                    PeerFrame::Events(batch)
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    metrics::counter!("weft_cell_events_missed_total").increment(missed);
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = status.tick() => {
                let workers = match engine.workers().await {
                    Ok(view) => view.remote.len() as u32,
                    Err(_) => return,
                };
                PeerFrame::Status { workers }
            }
        };
        let Ok(bytes) = weft_actors::wire::encode(&frame) else {
            continue;
        };
        if channel.send(&bytes).await.is_err() {
            return;
        }
    }
}

/// Ask the peer for its events and publish them here, until the link ends.
async fn follow_events(inner: std::sync::Weak<Inner>, link: Link) {
    let peer = link.peer().name().to_string();
    let Ok(mut channel) = link.open().await else {
        return;
    };
    let Ok(request) = weft_actors::wire::encode(&PeerRequest::Events) else {
        return;
    };
    if channel.send(&request).await.is_err() {
        return;
    }
    // Reading and publishing are apart, so a burst is read at the link's pace.
    let (sender, mut received) = mpsc::channel::<PeerFrame>(FOREIGN_EVENTS_MAX);
    let publish = {
        let inner = inner.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            while let Some(frame) = received.recv().await {
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                match frame {
                    PeerFrame::Events(events) => {
                        for event in events {
                            inner.engine.publish_foreign(event);
                        }
                    }
                    PeerFrame::Status { workers } => {
                        lock(&inner.workers).insert(peer.clone(), workers);
                    }
                }
            }
        })
    };
    while let Ok(Some(frame)) = channel.recv().await {
        let Some(frame) = weft_actors::wire::decode_or_refuse::<PeerFrame>(&frame, "cell event")
        else {
            continue;
        };
        let count = match &frame {
            PeerFrame::Events(events) => events.len() as u64,
            PeerFrame::Status { .. } => 0,
        };
        metrics::counter!("weft_cell_events_received_total").increment(count);
        if sender.try_send(frame).is_err() {
            metrics::counter!("weft_cell_events_missed_total").increment(count);
        }
    }
    publish.abort();
}

/// Dial every known cell this one has no link with, each address at a growing pause while it
/// does not answer.
async fn dial_loop(inner: std::sync::Weak<Inner>) {
    let mut every = tokio::time::interval(Duration::from_millis(DIAL_MS));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(this) = inner.upgrade() else {
            return;
        };
        let mut targets: Vec<(Option<String>, String)> =
            this.seeds.iter().map(|seed| (None, seed.clone())).collect();
        if let Some(ownership) = this.engine.ownership() {
            targets.extend(
                ownership
                    .cell_addresses()
                    .into_iter()
                    .filter(|(name, address)| name != this.own_name() && !address.is_empty())
                    .map(|(name, address)| (Some(name), address)),
            );
        }
        let linked: Vec<(String, String, bool)> = lock(&this.links)
            .iter()
            .map(|(name, peer)| (name.clone(), peer.address.clone(), peer.kept_on_race))
            .collect();
        for (name, address) in targets {
            // A cell dials a peer it has no link with; the cell with the smaller name also
            // dials one whose link the other dialed, at the address the other advertises
            // (its link wins, so every link goes where the rows say, a relay included).
            let known = linked.iter().any(|(linked_name, linked_address, kept)| {
                let same = Some(linked_name) == name.as_ref();
                let ours = *kept || this.own_name() > linked_name.as_str();
                ours && (same || *linked_address == address)
            });
            if known {
                continue;
            }
            let now = Instant::now();
            {
                let mut dials = lock(&this.dials);
                let state = dials.entry(address.clone()).or_default();
                if state.in_flight || state.next.is_some_and(|next| next > now) {
                    continue;
                }
                state.in_flight = true;
            }
            tokio::spawn(dial(this.clone(), address));
        }
    }
}

async fn dial(inner: Arc<Inner>, address: String) {
    let result = connect(&inner.connector, &address).await;
    let ok = result.is_ok();
    match result {
        Ok(link) => inner.register(link, true, Some(address.clone())),
        Err(error) => tracing::debug!(%address, %error, "dialing a cell failed"),
    }
    let mut dials = lock(&inner.dials);
    let state = dials.entry(address).or_default();
    state.in_flight = false;
    if ok {
        state.backoff_ms = 0;
        state.next = None;
    } else {
        state.backoff_ms = (state.backoff_ms * 2).clamp(DIAL_MS, DIAL_BACKOFF_MS_MAX);
        state.next = Some(Instant::now() + Duration::from_millis(state.backoff_ms));
    }
}

/// Connect to `address` (`HOST:PORT`), whose certificate must name HOST.
async fn connect(connector: &Connector, address: &str) -> Result<Link, String> {
    let socket = resolve(address).await?;
    connector
        .connect(socket, host_of(address))
        .await
        .map_err(|error: LinkError| error.to_string())
}

/// Publish the links' round-trip times (to the engine's view and as metrics) every second.
async fn status_loop(inner: std::sync::Weak<Inner>) {
    let mut every = tokio::time::interval(Duration::from_millis(STATUS_MS));
    loop {
        every.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let view = inner.view();
        for peer in &view {
            metrics::gauge!("weft_cell_peer_rtt_seconds", "peer" => peer.name.clone())
                .set(peer.rtt_ms / 1e3);
        }
        if let Some(ownership) = inner.engine.ownership() {
            ownership.set_peers(view);
        }
    }
}

//! The live stream: engine events numbered in order, kept in a bounded replay buffer, and sent
//! to WebSocket clients (`GET /api/v1/stream?since=SEQ`). A client that reconnects passes the
//! last number it saw and receives every event it missed, in order, or `resync` when they are
//! no longer in the buffer (it then refetches from the API).

use crate::auth::{self, Principal};
use crate::error::Error;
use crate::AppState;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use weft_actors::{Engine, Event};
use weft_api_types::{RunState, StreamEvent, StreamMessage, TaskState};
use weft_core::ids::TaskInstanceKey;
use weft_core::state::TaskState as CoreState;

/// Events kept for replay unless configured otherwise.
pub const REPLAY_EVENTS_MAX_DEFAULT: usize = 100_000;
/// Bytes the replay buffer holds at most (its events' strings, estimated), whatever their
/// count: log lines can be `LOG_LINE_BYTES_MAX` each.
pub const REPLAY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Events one replay answer holds at most; a client further behind resyncs (refetches).
pub const REPLAY_ANSWER_EVENTS_MAX: usize = 10_000;
/// What an event costs in the buffer besides its strings (the message, its `Arc`, its slot).
const EVENT_OVERHEAD_BYTES: usize = 96;
/// Events buffered per connected client before it is told to resync.
pub const CLIENT_BUFFER_EVENTS_MAX: usize = 4_096;
/// Size limit of one log line sent on the stream; longer lines are cut.
pub const LOG_LINE_BYTES_MAX: usize = 8 * 1024;
/// How often a connected client's user is read again (exists, enabled, session not ended,
/// grants), for changes made elsewhere than through this node's API (the CLI, another node);
/// changes through this node's API are re-checked at once.
pub const AUTH_RECHECK_MS: u64 = 5_000;
/// WebSocket close code for a client whose authorization ended (RFC 6455: policy violation).
const CLOSE_POLICY: u16 = 1008;

/// Numbers engine events and fans them out. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    /// Guards numbering, the replay buffer and the broadcast together, so that a subscriber
    /// that replays under the lock and then listens sees every event exactly once.
    state: Mutex<Buffer>,
    live: broadcast::Sender<Arc<StreamMessage>>,
}

struct Buffer {
    last_seq: u64,
    replay: VecDeque<Arc<StreamMessage>>,
    replay_max: usize,
    /// The estimated size of `replay` (see `event_bytes`), at most `REPLAY_BYTES_MAX`.
    replay_bytes: usize,
}

/// The estimated size of an event in the replay buffer: its strings plus a fixed overhead.
fn event_bytes(event: &StreamEvent) -> usize {
    let strings = match event {
        StreamEvent::Run {
            dag_id, run_id, at, ..
        } => dag_id.len() + run_id.len() + at.len(),
        StreamEvent::Task {
            dag_id,
            run_id,
            task_id,
            at,
            ..
        } => dag_id.len() + run_id.len() + task_id.len() + at.len(),
        StreamEvent::Dag { dag_id } => dag_id.len(),
        StreamEvent::Log {
            dag_id,
            run_id,
            task_id,
            line,
            ..
        } => dag_id.len() + run_id.len() + task_id.len() + line.len(),
        StreamEvent::Resync => 0,
    };
    strings + EVENT_OVERHEAD_BYTES
}

impl Hub {
    /// Starts forwarding `engine`'s events.
    pub fn start(engine: &Engine, replay_max: usize) -> Hub {
        let (live, _) = broadcast::channel(CLIENT_BUFFER_EVENTS_MAX);
        let hub = Hub {
            inner: Arc::new(HubInner {
                state: Mutex::new(Buffer {
                    last_seq: 0,
                    replay: VecDeque::new(),
                    replay_max: replay_max.max(1),
                    replay_bytes: 0,
                }),
                live,
            }),
        };
        let mut events = engine.subscribe();
        let forward = hub.clone();
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut tails = LogTails::default();
            loop {
                match events.recv().await {
                    Ok(event) => {
                        if let Event::TaskChanged {
                            key,
                            state,
                            try_number,
                            ..
                        } = &event
                        {
                            tails.follow(&engine, &forward, key, *state, *try_number);
                        }
                        forward.publish(stream_event(event))
                    }
                    // The engine's buffer overflowed: clients must refetch.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        forward.publish(StreamEvent::Resync)
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        hub
    }

    /// Numbers `event` and sends it to every client.
    pub fn publish(&self, event: StreamEvent) {
        let mut buffer = self.lock();
        buffer.last_seq += 1;
        let message = Arc::new(StreamMessage {
            seq: buffer.last_seq,
            event,
        });
        let bytes = event_bytes(&message.event);
        while buffer.replay.len() >= buffer.replay_max
            || (!buffer.replay.is_empty() && buffer.replay_bytes + bytes > REPLAY_BYTES_MAX)
        {
            let Some(oldest) = buffer.replay.pop_front() else {
                break;
            };
            buffer.replay_bytes -= event_bytes(&oldest.event);
        }
        buffer.replay_bytes += bytes;
        buffer.replay.push_back(message.clone());
        // No receiver is not an error: nobody is watching.
        let _ = self.inner.live.send(message);
    }

    pub fn last_seq(&self) -> u64 {
        self.lock().last_seq
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What a client that saw everything up to `since` missed (or `None` when that is no
    /// longer known), and a receiver for what comes next.
    fn subscribe(
        &self,
        since: Option<u64>,
    ) -> (
        Option<Vec<Arc<StreamMessage>>>,
        broadcast::Receiver<Arc<StreamMessage>>,
    ) {
        let buffer = self.lock();
        let receiver = self.inner.live.subscribe();
        let Some(since) = since else {
            return (Some(Vec::new()), receiver);
        };
        let oldest = buffer
            .replay
            .front()
            .map(|message| message.seq)
            .unwrap_or(buffer.last_seq + 1);
        // `since` ahead of us means this process restarted and numbers began again; a client
        // too far behind refetches rather than receive one unbounded answer.
        let behind =
            usize::try_from(buffer.last_seq - since.min(buffer.last_seq)).unwrap_or(usize::MAX);
        if since > buffer.last_seq || since + 1 < oldest || behind > REPLAY_ANSWER_EVENTS_MAX {
            return (None, receiver);
        }
        let missed = buffer
            .replay
            .iter()
            .filter(|message| message.seq > since)
            .cloned()
            .collect();
        (Some(missed), receiver)
    }
}

/// Log files followed at once; tries that start beyond it send no log lines on the stream
/// (their logs are still read through the API).
pub const LOG_TAILS_MAX: usize = 256;
/// How often a followed log file is checked for new lines.
pub const LOG_POLL_MS: u64 = 100;
/// Bytes read from one log per check.
pub const LOG_READ_BYTES_MAX: usize = 256 * 1024;

/// The logs of running tries, followed line by line onto the stream.
#[derive(Default)]
struct LogTails {
    /// Per task instance: the try followed and the signal that it has ended.
    running: std::collections::HashMap<TaskInstanceKey, (u32, tokio::sync::oneshot::Sender<()>)>,
}

impl LogTails {
    fn follow(
        &mut self,
        engine: &Engine,
        hub: &Hub,
        key: &TaskInstanceKey,
        state: CoreState,
        try_number: u32,
    ) {
        // A try that ended (or a new try) stops the follower of the previous one, which reads
        // what is left first.
        if let Some((followed, _)) = self.running.get(key) {
            if state != CoreState::Running || *followed != try_number {
                if let Some((_, stop)) = self.running.remove(key) {
                    let _ = stop.send(());
                }
            }
        }
        if state != CoreState::Running || self.running.contains_key(key) {
            return;
        }
        if self.running.len() >= LOG_TAILS_MAX {
            metrics::counter!("weft_web_log_tails_refused_total").increment(1);
            return;
        }
        let (stop, stopped) = tokio::sync::oneshot::channel();
        self.running.insert(key.clone(), (try_number, stop));
        let path = engine.log_path(key, try_number);
        tokio::spawn(tail_log(
            hub.clone(),
            key.clone(),
            try_number,
            path,
            stopped,
        ));
    }
}

/// Publishes each complete line appended to `path` until `stopped`, then the rest.
async fn tail_log(
    hub: Hub,
    key: TaskInstanceKey,
    try_number: u32,
    path: std::path::PathBuf,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut offset = 0u64;
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let last = tokio::select! {
            _ = &mut stopped => true,
            _ = tokio::time::sleep(std::time::Duration::from_millis(LOG_POLL_MS)) => false,
        };
        // Read until the file has nothing more (a final read may need several).
        loop {
            let mut chunk = Vec::new();
            if let Ok(mut file) = tokio::fs::File::open(&path).await {
                if file.seek(std::io::SeekFrom::Start(offset)).await.is_ok() {
                    let _ = (&mut file)
                        .take(LOG_READ_BYTES_MAX as u64)
                        .read_to_end(&mut chunk)
                        .await;
                }
            }
            if chunk.is_empty() {
                break;
            }
            offset += chunk.len() as u64;
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                publish_line(&hub, &key, try_number, &line[..line.len() - 1]);
            }
            // A line longer than the limit is sent in pieces.
            while pending.len() >= LOG_LINE_BYTES_MAX {
                let piece: Vec<u8> = pending.drain(..LOG_LINE_BYTES_MAX).collect();
                publish_line(&hub, &key, try_number, &piece);
            }
            if !last {
                break;
            }
        }
        if last {
            if !pending.is_empty() {
                publish_line(&hub, &key, try_number, &pending);
            }
            return;
        }
    }
}

fn publish_line(hub: &Hub, key: &TaskInstanceKey, try_number: u32, line: &[u8]) {
    hub.publish(StreamEvent::Log {
        dag_id: key.dag_id.to_string(),
        run_id: key.run_id.to_string(),
        task_id: key.task_id.to_string(),
        try_number,
        line: String::from_utf8_lossy(line).into_owned(),
    });
}

fn stream_event(event: Event) -> StreamEvent {
    match event {
        Event::RunChanged { run, state, at } => StreamEvent::Run {
            dag_id: run.dag_id.to_string(),
            run_id: run.run_id.to_string(),
            state: run_state(state),
            at: crate::views::time(at),
        },
        Event::TaskChanged {
            key,
            state,
            try_number,
            at,
        } => StreamEvent::Task {
            dag_id: key.dag_id.to_string(),
            run_id: key.run_id.to_string(),
            task_id: key.task_id.to_string(),
            state: task_state(state),
            try_number,
            at: crate::views::time(at),
        },
        Event::DagChanged { dag_id } => StreamEvent::Dag { dag_id },
    }
}

pub(crate) fn run_state(state: weft_core::state::DagRunState) -> RunState {
    use weft_core::state::DagRunState as S;
    match state {
        S::Queued => RunState::Queued,
        S::Running => RunState::Running,
        S::Success => RunState::Success,
        S::Failed => RunState::Failed,
    }
}

pub(crate) fn task_state(state: weft_core::state::TaskState) -> TaskState {
    use weft_core::state::TaskState as S;
    match state {
        S::None => TaskState::None,
        S::Scheduled => TaskState::Scheduled,
        S::Queued => TaskState::Queued,
        S::Running => TaskState::Running,
        S::Success => TaskState::Success,
        S::Failed => TaskState::Failed,
        S::UpForRetry => TaskState::UpForRetry,
        S::UpstreamFailed => TaskState::UpstreamFailed,
        S::Skipped => TaskState::Skipped,
        S::Removed => TaskState::Removed,
    }
}

fn event_dag(event: &StreamEvent) -> Option<&str> {
    match event {
        StreamEvent::Run { dag_id, .. }
        | StreamEvent::Task { dag_id, .. }
        | StreamEvent::Dag { dag_id }
        | StreamEvent::Log { dag_id, .. } => Some(dag_id),
        StreamEvent::Resync => None,
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StreamQuery {
    /// The last `seq` this client saw; events after it are replayed first.
    pub since: Option<u64>,
    /// A token, for clients that cannot set headers or cookies on a WebSocket.
    pub token: Option<String>,
}

/// Live state changes over a WebSocket: JSON `StreamMessage`s, server to client.
#[utoipa::path(
    get,
    path = "/api/v1/stream",
    tag = "stream",
    params(StreamQuery),
    responses(
        (status = 101, description = "switching to the WebSocket protocol; messages are StreamMessage", body = StreamMessage),
        (status = 400, description = "not a WebSocket request", body = weft_api_types::ApiError),
        (status = 401, description = "no valid token", body = weft_api_types::ApiError),
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Error> {
    let token = query
        .token
        .as_deref()
        .or_else(|| auth::request_token(&headers))
        .ok_or_else(|| {
            Error::unauthenticated(
                "sign in first: the stream takes the weft_session cookie, a bearer token or \
                 `?token=`",
            )
        })?;
    let principal = auth::authenticate(&state, token).await?;
    let token = token.to_string();
    // Authentication first, so that a caller without a token learns that before anything else.
    let upgrade = upgrade.map_err(|rejection| {
        Error::bad_request(
            "websocket_required",
            format!("open this URL as a WebSocket ({})", rejection.body_text()),
        )
    })?;
    Ok(
        upgrade
            .on_upgrade(move |socket| serve_client(socket, state, token, principal, query.since)),
    )
}

async fn serve_client(
    mut socket: WebSocket,
    state: AppState,
    token: String,
    mut principal: Principal,
    since: Option<u64>,
) {
    let hub = state.hub().clone();
    let mut changes = state.sessions().watch();
    changes.mark_unchanged();
    let mut recheck = tokio::time::interval(std::time::Duration::from_millis(AUTH_RECHECK_MS));
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the caller was checked a moment ago.
    recheck.tick().await;
    let (missed, mut live) = hub.subscribe(since);
    let mut last_sent = since.unwrap_or(0);
    match missed {
        Some(missed) => {
            for message in missed {
                last_sent = message.seq;
                if !send(&mut socket, &principal, &message).await {
                    return;
                }
            }
        }
        None => {
            let resync = StreamMessage {
                seq: hub.last_seq(),
                event: StreamEvent::Resync,
            };
            if !send(&mut socket, &principal, &resync).await {
                return;
            }
            last_sent = 0;
        }
    }
    loop {
        tokio::select! {
            // Authorization first: an event published after a grant was revoked must not
            // reach the client before the revocation does.
            biased;
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                match auth::recheck(&state, &token).await {
                    Ok(current) => principal = current,
                    Err(error) => return close(socket, &error).await,
                }
            }
            _ = recheck.tick() => match auth::recheck(&state, &token).await {
                Ok(current) => principal = current,
                Err(error) => return close(socket, &error).await,
            },
            received = live.recv() => match received {
                Ok(message) => {
                    // Replayed already (it arrived between subscribing and replaying).
                    if message.seq <= last_sent {
                        continue;
                    }
                    last_sent = message.seq;
                    if !send(&mut socket, &principal, &message).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let resync = StreamMessage { seq: hub.last_seq(), event: StreamEvent::Resync };
                    if !send(&mut socket, &principal, &resync).await {
                        return;
                    }
                    live = live.resubscribe();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                // Clients only listen; anything but a close is ignored.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Closes the connection of a client whose authorization ended, saying why.
async fn close(mut socket: WebSocket, error: &Error) {
    use axum::extract::ws::CloseFrame;
    // A close reason is limited to 123 bytes by the protocol.
    let mut reason = error.message.clone();
    if reason.len() > 123 {
        let mut end = 123;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    let frame = CloseFrame {
        code: CLOSE_POLICY,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// Sends `message` if the client may see its DAG; false when the connection is gone.
async fn send(socket: &mut WebSocket, principal: &Principal, message: &StreamMessage) -> bool {
    if let Some(dag_id) = event_dag(&message.event) {
        if !principal.can_see(dag_id) {
            return true;
        }
    }
    let text = serde_json::to_string(message).expect("stream messages serialize");
    socket.send(Message::Text(text.into())).await.is_ok()
}

#[cfg(test)]
mod replay_tests {
    use super::*;

    fn hub(replay_max: usize) -> Hub {
        Hub {
            inner: Arc::new(HubInner {
                state: Mutex::new(Buffer {
                    last_seq: 0,
                    replay: VecDeque::new(),
                    replay_max,
                    replay_bytes: 0,
                }),
                live: broadcast::channel(16).0,
            }),
        }
    }

    fn log_line(bytes: usize) -> StreamEvent {
        StreamEvent::Log {
            dag_id: "etl".into(),
            run_id: "manual__1".into(),
            task_id: "load".into(),
            try_number: 1,
            line: "x".repeat(bytes),
        }
    }

    #[test]
    fn the_replay_buffer_is_bounded_in_bytes() {
        let hub = hub(REPLAY_EVENTS_MAX_DEFAULT);
        let published = 10_000;
        for _ in 0..published {
            hub.publish(log_line(LOG_LINE_BYTES_MAX));
        }
        let buffer = hub.lock();
        assert!(buffer.replay_bytes <= REPLAY_BYTES_MAX);
        assert!(buffer.replay.len() < published, "{}", buffer.replay.len());
        let kept: usize = buffer.replay.iter().map(|m| event_bytes(&m.event)).sum();
        assert_eq!(kept, buffer.replay_bytes);
        // Full: one more event would not fit.
        assert!(
            buffer.replay_bytes + event_bytes(&log_line(LOG_LINE_BYTES_MAX)) > REPLAY_BYTES_MAX
        );
    }

    #[test]
    fn one_replay_answer_is_bounded() {
        let hub = hub(REPLAY_EVENTS_MAX_DEFAULT);
        for _ in 0..(REPLAY_ANSWER_EVENTS_MAX + 100) {
            hub.publish(StreamEvent::Dag {
                dag_id: "etl".into(),
            });
        }
        let last = hub.last_seq();
        let (near, _) = hub.subscribe(Some(last - 5));
        assert_eq!(near.map(|missed| missed.len()), Some(5));
        let (edge, _) = hub.subscribe(Some(last - REPLAY_ANSWER_EVENTS_MAX as u64));
        assert_eq!(
            edge.map(|missed| missed.len()),
            Some(REPLAY_ANSWER_EVENTS_MAX)
        );
        let (far, _) = hub.subscribe(Some(last - REPLAY_ANSWER_EVENTS_MAX as u64 - 1));
        assert!(far.is_none(), "a client that far behind resyncs");
    }
}

//! A remote worker's slots: actors in a `weft worker` process that its node reaches over
//! `ractor_cluster` (found in the process group [`SLOTS_GROUP`], and in one group per queue
//! they serve, [`queue_group`]). Each runs one attempt at a time with the worker's own
//! [`WorkerContext`], as a local slot does with the node's.
//!
//! The protocol (messages in `messages.rs`, their wire form in `wire.rs`):
//! - `Hello` starts a session: the slot stops what an earlier session gave it (that session's
//!   node has counted it lost) and forgets that session's reports.
//! - `Assign` and `Kill` are casts: lost with a broken link, never duplicated within a session.
//!   An `Assign` names its sequence number; a heartbeat says the highest one seen, so the node
//!   finds an assignment that never arrived.
//! - Reports (`Started`, `Finished`, numbered) stay with the slot until a poll acknowledges
//!   them; a poll is answered at once when reports wait, otherwise after the heartbeat
//!   interval, with what the slot runs.
//! - The lease: a slot that has heard no poll for `lease` stops its attempt. The node finds a
//!   lost link by the QUIC idle timeout, longer than the lease, and only then retries the
//!   attempt elsewhere: an attempt cut off from its node never runs beside its retry.

use crate::attempt::RUNNING_REPORT_GRACE;
use crate::executor::worker::{run_attempt, WorkerContext};
use crate::executor::AttemptReport;
use crate::messages::{
    AttemptAssignment, Json, RemoteSlotMsg, SlotCast, SlotHello, SlotLocal, SlotPoll, SlotReport,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_core::dag_run::AttemptOutcome;
use weft_core::ids::AttemptId;

/// The process group every remote slot joins; a node finds a session's slots there.
pub const SLOTS_GROUP: &str = "weft.slots";
/// Reports a slot holds for its node at most; beyond, the oldest go (a node that stopped
/// polling for that long has counted the slot's attempts lost).
pub const REPORTS_HELD_MAX: usize = 64;
/// The longest heartbeat interval: a slot must answer a poll before its node asks again
/// (`POLL_TIMEOUT`, 1.5 s).
pub const HEARTBEAT_MS_MAX: u64 = 1_000;
/// How often a slot looks at its waiting poll and its lease.
const TICK: Duration = Duration::from_millis(100);

/// The process group of the slots that serve `queue`.
pub fn queue_group(queue: &str) -> String {
    format!("weft.queue.{queue}")
}

/// Where a worker sends the logs of its attempts (its node, over the link: `cells`).
pub trait LogShipper: Send + Sync {
    /// `attempt` writes its log at `path`; `ended` resolves, or fails, once it has ended.
    fn ship(
        &self,
        attempt: AttemptId,
        path: std::path::PathBuf,
        ended: tokio::sync::oneshot::Receiver<()>,
    );
}

/// A worker's slots, as it configures them.
pub struct RemoteSlotsConfig {
    /// The worker's name (its certificate's).
    pub worker: String,
    pub slots: u32,
    pub version: String,
    /// The queues it serves (empty: every queue) and its labels.
    pub queues: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// How long a slot with nothing to report keeps a poll before it answers.
    pub heartbeat: Duration,
    /// How long a slot runs its attempt without hearing its node.
    pub lease: Duration,
    /// Makes an assignment the node built fit this worker (its log path, its sandbox).
    pub localize: Box<dyn Fn(AttemptAssignment) -> AttemptAssignment + Send + Sync>,
    /// Where the attempts' logs go besides the worker's own files (`None`: nowhere).
    pub logs: Option<Arc<dyn LogShipper>>,
}

impl std::fmt::Debug for RemoteSlotsConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RemoteSlotsConfig")
            .field("worker", &self.worker)
            .field("slots", &self.slots)
            .field("queues", &self.queues)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// A worker's running slots.
#[derive(Debug)]
pub struct RemoteSlots {
    slots: Vec<ActorRef<RemoteSlotMsg>>,
    busy: Arc<AtomicUsize>,
    held: Arc<AtomicUsize>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl RemoteSlots {
    /// Accept nothing new: what runs finishes, a new assignment is reported lost.
    pub fn drain(&self) {
        for slot in &self.slots {
            let _ = slot.cast(RemoteSlotMsg::Local(SlotLocal::Drain));
        }
    }

    /// How many slots run an attempt now.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    /// Reports the slots hold that their node has not acknowledged.
    pub fn reports_held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Stops the slots (and their attempts) and waits for them.
    pub async fn stop(self) {
        for slot in &self.slots {
            slot.stop(Some("worker stopping".to_string()));
        }
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}

/// Starts a worker's slots and puts them in their process groups.
pub async fn spawn_remote_slots(
    context: Arc<WorkerContext>,
    config: RemoteSlotsConfig,
) -> Result<RemoteSlots, ractor::SpawnErr> {
    let config = Arc::new(config);
    let busy = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(AtomicUsize::new(0));
    let mut slots = Vec::new();
    let mut handles = Vec::new();
    for index in 0..config.slots.max(1) {
        let args = SlotArgs {
            index,
            config: config.clone(),
            context: context.clone(),
            busy: busy.clone(),
            held: held.clone(),
        };
        let (slot, handle) = Actor::spawn(None, RemoteSlot, args).await?;
        let mut groups = vec![SLOTS_GROUP.to_string()];
        groups.extend(config.queues.iter().map(|queue| queue_group(queue)));
        for group in groups {
            ractor::pg::join(group, vec![slot.get_cell()]);
        }
        slots.push(slot);
        handles.push(handle);
    }
    Ok(RemoteSlots {
        slots,
        busy,
        held,
        handles,
    })
}

struct RemoteSlot;

struct SlotArgs {
    index: u32,
    config: Arc<RemoteSlotsConfig>,
    context: Arc<WorkerContext>,
    busy: Arc<AtomicUsize>,
    /// Reports held by all the worker's slots.
    held: Arc<AtomicUsize>,
}

struct Running {
    assignment: Arc<AttemptAssignment>,
    execution: tokio::task::AbortHandle,
    /// Dropped at the attempt's end, which ends its log's stream.
    _log_end: Option<tokio::sync::oneshot::Sender<()>>,
    started_at: weft_core::Timestamp,
    start_reported: bool,
}

struct SlotState {
    args: SlotArgs,
    /// The node's session this slot serves (0: none yet).
    session: u64,
    assigned_seq: u64,
    reports: VecDeque<(u64, SlotReport)>,
    last_report: u64,
    poll: Option<(RpcReplyPort<SlotPoll>, Instant)>,
    last_poll: Instant,
    running: Option<Running>,
    draining: bool,
}

impl Actor for RemoteSlot {
    type Msg = RemoteSlotMsg;
    type State = SlotState;
    type Arguments = SlotArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RemoteSlotMsg>,
        args: SlotArgs,
    ) -> Result<SlotState, ActorProcessingErr> {
        myself.send_interval(TICK, || RemoteSlotMsg::Local(SlotLocal::Tick));
        Ok(SlotState {
            args,
            session: 0,
            assigned_seq: 0,
            reports: VecDeque::new(),
            last_report: 0,
            poll: None,
            last_poll: Instant::now(),
            running: None,
            draining: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RemoteSlotMsg>,
        message: RemoteSlotMsg,
        state: &mut SlotState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RemoteSlotMsg::Hello { session, reply } => {
                if session != state.session {
                    if state.running.is_some() {
                        state.stop_running("a new session with the node began");
                    }
                    state.session = session;
                    state.drop_reports(|_| true);
                    state.assigned_seq = 0;
                    state.poll = None;
                }
                state.last_poll = Instant::now();
                let config = &state.args.config;
                let _ = reply.send(SlotHello {
                    worker: config.worker.clone(),
                    index: state.args.index,
                    slots: config.slots,
                    version: config.version.clone(),
                    queues: config.queues.clone(),
                    labels: config.labels.clone(),
                    draining: state.draining,
                });
            }
            RemoteSlotMsg::Poll {
                session,
                ack,
                reply,
            } => {
                if session != state.session {
                    stale(session, state.session, "poll");
                    return Ok(());
                }
                state.last_poll = Instant::now();
                state.drop_reports(|seq| seq <= ack);
                state.poll = Some((reply, Instant::now()));
                if !state.reports.is_empty() {
                    state.answer_poll();
                }
            }
            RemoteSlotMsg::Cast(SlotCast::Assign {
                session,
                seq,
                assignment: Json(assignment),
            }) => {
                if session != state.session {
                    stale(session, state.session, "assignment");
                    return Ok(());
                }
                state.assigned_seq = state.assigned_seq.max(seq);
                state.assign(&myself, *assignment);
            }
            RemoteSlotMsg::Cast(SlotCast::Kill { session, attempt }) => {
                if session != state.session {
                    stale(session, state.session, "kill");
                    return Ok(());
                }
                if state.running_token() == Some(attempt.token) {
                    state.stop_running("attempt killed");
                }
            }
            RemoteSlotMsg::Local(SlotLocal::Ended { token, report }) => {
                if state.running_token() == Some(token) {
                    state.finish(*report);
                }
            }
            RemoteSlotMsg::Local(SlotLocal::GraceDue { token }) => {
                if let Some(running) = state
                    .running
                    .as_mut()
                    .filter(|running| running.assignment.request.attempt.token == token)
                {
                    running.start_reported = true;
                    let attempt = running.assignment.request.attempt.clone();
                    state.report(SlotReport::Started { attempt });
                }
            }
            RemoteSlotMsg::Local(SlotLocal::Tick) => state.tick(),
            RemoteSlotMsg::Local(SlotLocal::Drain) => {
                state.draining = true;
                state.answer_poll();
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RemoteSlotMsg>,
        state: &mut SlotState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(running) = state.running.take() {
            running.execution.abort();
            state.args.busy.fetch_sub(1, Ordering::Relaxed);
        }
        state.drop_reports(|_| true);
        Ok(())
    }
}

fn stale(got: u64, serving: u64, what: &'static str) {
    tracing::warn!(
        session = got,
        serving,
        what,
        "remote slot dropped a message of another session"
    );
    metrics::counter!("weft_remote_stale_messages_total", "what" => what).increment(1);
}

impl SlotState {
    fn running_token(&self) -> Option<u64> {
        self.running
            .as_ref()
            .map(|running| running.assignment.request.attempt.token)
    }

    fn assign(&mut self, myself: &ActorRef<RemoteSlotMsg>, assignment: AttemptAssignment) {
        let attempt = assignment.request.attempt.clone();
        let refusal = if self.draining {
            Some("the worker is draining")
        } else if self.running.is_some() {
            Some("the worker slot is busy")
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.report(SlotReport::Lost {
                attempt,
                reason: reason.to_string(),
                started_at: None,
                worker: Some(self.args.config.worker.clone()),
            });
            return;
        }
        let assignment = Arc::new((self.args.config.localize)(assignment));
        let log_end = self.args.config.logs.as_ref().map(|logs| {
            let (end, ended) = tokio::sync::oneshot::channel();
            logs.ship(attempt.clone(), assignment.log.path.clone(), ended);
            end
        });
        let token = attempt.token;
        let (context, slot) = (self.args.context.clone(), myself.clone());
        let running = assignment.clone();
        let execution = tokio::spawn(async move {
            let attempt = run_attempt(&context, &running);
            tokio::pin!(attempt);
            let report = tokio::select! {
                report = &mut attempt => report,
                () = tokio::time::sleep(RUNNING_REPORT_GRACE) => {
                    let _ = slot.cast(RemoteSlotMsg::Local(SlotLocal::GraceDue { token }));
                    attempt.await
                }
            };
            let ended = SlotLocal::Ended {
                token,
                report: Box::new(report),
            };
            let _ = slot.cast(RemoteSlotMsg::Local(ended));
        });
        self.args.busy.fetch_add(1, Ordering::Relaxed);
        self.running = Some(Running {
            assignment,
            execution: execution.abort_handle(),
            _log_end: log_end,
            started_at: crate::clock::now(),
            start_reported: false,
        });
    }

    /// Stops the running attempt (dropping its execution kills its process tree) and reports it
    /// failed with `reason`, retryable.
    fn stop_running(&mut self, reason: &str) {
        if let Some(running) = &self.running {
            running.execution.abort();
        }
        self.finish(AttemptReport {
            outcome: AttemptOutcome::Failed {
                reason: reason.to_string(),
                retryable: true,
            },
            result: None,
            log_bytes: 0,
            log_truncated: false,
            exit_code: None,
        });
    }

    fn finish(&mut self, report: AttemptReport) {
        let Some(running) = self.running.take() else {
            return;
        };
        self.args.busy.fetch_sub(1, Ordering::Relaxed);
        self.report(SlotReport::Finished {
            attempt: running.assignment.request.attempt.clone(),
            report: Box::new(report),
            started_at: running.started_at,
            start_unreported: !running.start_reported,
            worker: Some(self.args.config.worker.clone()),
        });
    }

    fn report(&mut self, report: SlotReport) {
        self.last_report += 1;
        self.reports.push_back((self.last_report, report));
        self.args.held.fetch_add(1, Ordering::Relaxed);
        if self.reports.len() > REPORTS_HELD_MAX {
            let oldest = self.reports.front().map_or(0, |(seq, _)| *seq);
            self.drop_reports(|seq| seq <= oldest);
            tracing::warn!(
                slot = self.args.index,
                "remote slot dropped its oldest report: its node has not polled"
            );
        }
        self.answer_poll();
    }

    /// Drops the oldest reports while `gone` says so of their numbers.
    fn drop_reports(&mut self, gone: impl Fn(u64) -> bool) {
        while self.reports.front().is_some_and(|(seq, _)| gone(*seq)) {
            self.reports.pop_front();
            self.args.held.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn answer_poll(&mut self) {
        let Some((reply, _)) = self.poll.take() else {
            return;
        };
        let poll = SlotPoll {
            reports: self
                .reports
                .iter()
                .map(|(seq, report)| (*seq, Json(report.clone())))
                .collect(),
            running: self
                .running
                .as_ref()
                .map(|running| running.assignment.request.attempt.clone()),
            assigned_seq: self.assigned_seq,
            draining: self.draining,
        };
        let _ = reply.send(poll);
    }

    fn tick(&mut self) {
        let heartbeat = self.args.config.heartbeat;
        if self
            .poll
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= heartbeat)
        {
            self.answer_poll();
        }
        let lease = self.args.config.lease;
        if self.running.is_some() && self.last_poll.elapsed() > lease {
            tracing::warn!(
                slot = self.args.index,
                lease_ms = lease.as_millis() as u64,
                "no word from the node within the lease: stopping the attempt"
            );
            metrics::counter!("weft_remote_lease_expired_total").increment(1);
            self.stop_running("the worker lost its node (lease expired)");
        }
    }
}

//! Every message of every actor, and the arguments each actor starts with: the one place that
//! says what actors tell each other. Actor modules import this module, never each other (the
//! supervision tree that spawns them is `tree.rs`); ARCHITECTURE.md has the message-flow table.
//!
//! Messages are plain data where they may cross a process boundary (the attempt assignment and
//! what a worker slot reports); the rest carry handles (`ActorRef`, reply ports) and stay in
//! the process.

use crate::engine::UpsertOutcome;
use crate::error::EngineError;
use crate::executor::{AttemptLimits, AttemptReport, LogTarget, TaskContext};
use crate::shared::Shared;
use crate::worker_slot::SlotHandle;
use ractor::{ActorId, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use weft_core::dag_run::{DispatchRequest, RunContext, RunTimer, TaskInstanceRecord};
use weft_core::ids::{AttemptId, Name, RunKey, TaskInstanceKey};
use weft_core::spec::{DagSpec, FlowControl, TaskKind};
use weft_core::state::{DagRunState, TaskState};
use weft_core::Timestamp;

// --- the scheduler

pub(crate) enum SchedulerMsg {
    UpsertDag {
        spec: Box<DagSpec>,
        reply: RpcReplyPort<Result<UpsertOutcome, EngineError>>,
    },
    SetPaused {
        dag_id: String,
        paused: bool,
        reply: RpcReplyPort<Result<(), EngineError>>,
    },
    Trigger {
        dag_id: String,
        logical_date: Option<Timestamp>,
        conf: serde_json::Value,
        reply: RpcReplyPort<Result<RunKey, EngineError>>,
    },
    Backfill {
        dag_id: String,
        from: Timestamp,
        to: Timestamp,
        reply: RpcReplyPort<Result<Vec<RunKey>, EngineError>>,
    },
    Clear {
        run: RunKey,
        task_ids: Vec<String>,
        downstream: bool,
        upstream: bool,
        reply: RpcReplyPort<Result<(), EngineError>>,
    },
    MarkTask {
        run: RunKey,
        task_id: String,
        map_index: i32,
        state: TaskState,
        reply: RpcReplyPort<Result<(), EngineError>>,
    },
    Tick,
    /// A run's actor handed a change back: it reached the run as the run ended. The scheduler
    /// re-opens the run with it (`round` counts the hand-backs, see `CHANGE_ROUNDS_MAX`).
    ChangeHandedBack {
        run: RunKey,
        change: RunChange,
        reply: RpcReplyPort<Result<(), EngineError>>,
        round: u32,
    },
    /// A run actor finished its run and stops. `actor` tells a stale report (from an actor
    /// the scheduler already replaced, see `active_run_actor`) from the current one.
    RunFinished {
        run: RunKey,
        state: DagRunState,
        actor: ActorId,
    },
    TaskFinalized {
        run: RunKey,
        logical_date: Timestamp,
        task_id: String,
        state: TaskState,
    },
    /// Rebuild the actor of a run whose actor failed (see `handle_supervisor_evt`).
    RebuildRun {
        run: RunKey,
    },
    /// This cell now holds `shard` under `epoch` (set in `Ownership` already): load its DAGs,
    /// adopt its unfinished runs and schedule them.
    ShardGained {
        shard: weft_core::lease::ShardId,
        epoch: u64,
    },
    /// This cell no longer holds `shard` (removed from `Ownership` already): stop deciding for
    /// its DAGs and stand its runs down, writing nothing.
    ShardLost {
        shard: weft_core::lease::ShardId,
    },
    /// Test hook: crash the actor of an active run.
    #[cfg(any(test, feature = "fault-injection"))]
    CrashRun {
        run: RunKey,
    },
    /// Test hook: crash the task actor of a task instance's current attempt.
    #[cfg(any(test, feature = "fault-injection"))]
    CrashTask {
        key: TaskInstanceKey,
    },
}

pub(crate) struct SchedulerArgs {
    pub shared: Arc<Shared>,
    pub dispatcher: ActorRef<DispatcherMsg>,
}

// --- a run

pub(crate) enum DagRunMsg {
    /// An attempt has run for `RUNNING_REPORT_GRACE` (sent by its task actor, which heard it
    /// from the worker slot).
    AttemptStarted {
        attempt: AttemptId,
    },
    AttemptFinished {
        attempt: AttemptId,
        report: Box<AttemptReport>,
        started_at: Option<Timestamp>,
        /// The remote worker it ran on (recorded with the attempt); `None`: the node's slots.
        worker: Option<String>,
        /// The worker slot held back `AttemptStarted` (the attempt ended within its grace
        /// period): the run feeds the start at `started_at` first, and both transitions go
        /// in one store batch (one commit instead of two).
        start_unreported: bool,
    },
    Timer(RunTimer),
    PastTaskFinished {
        task_id: String,
        state: TaskState,
    },
    Clear {
        task_ids: Vec<String>,
        downstream: bool,
        upstream: bool,
        reply: RpcReplyPort<ChangeAnswer>,
    },
    MarkState {
        task_id: String,
        map_index: i32,
        state: TaskState,
        reply: RpcReplyPort<ChangeAnswer>,
    },
    /// The store answered the batch this actor handed it (see `DagRunActorState::flush`).
    Flushed(weft_storage::Result<()>),
    /// The decisions held back for a shared commit wait no longer (see `COMMIT_DELAY`).
    FlushDue,
    /// The rows of new waiting task instances not yet written wait no longer (see
    /// `DEFERRED_ROWS_DELAY`).
    DeferredRowsDue,
    /// The cell no longer owns this run's shard: stop its attempts and stop, writing nothing
    /// (the new owner carries on from the store).
    StandDown,
    /// Test hook: fail the actor as a crash would.
    #[cfg(any(test, feature = "fault-injection"))]
    Crash,
    /// Test hook: fail the task actor of this task instance's current attempt.
    #[cfg(any(test, feature = "fault-injection"))]
    CrashTask {
        key: TaskInstanceKey,
    },
}

/// A change an operator makes to a run's task instances, handed to the run's actor.
#[derive(Debug, Clone)]
pub(crate) enum RunChange {
    Clear {
        task_ids: Vec<String>,
        downstream: bool,
        upstream: bool,
    },
    Mark {
        task_id: String,
        map_index: i32,
        state: TaskState,
    },
}

impl RunChange {
    /// The message that hands this change to a run's actor.
    pub fn message(&self, reply: RpcReplyPort<ChangeAnswer>) -> DagRunMsg {
        match self.clone() {
            RunChange::Clear {
                task_ids,
                downstream,
                upstream,
            } => DagRunMsg::Clear {
                task_ids,
                downstream,
                upstream,
                reply,
            },
            RunChange::Mark {
                task_id,
                map_index,
                state,
            } => DagRunMsg::MarkState {
                task_id,
                map_index,
                state,
                reply,
            },
        }
    }
}

/// A run actor's answer to a change (a clear or a mark), once the change is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeAnswer {
    Applied,
    /// The change came after the actor had decided the run's end (its end was being
    /// committed): the actor decided nothing more and hands the change back once the end is
    /// durable, for the scheduler to re-open the finished run with it.
    RunEnded,
}

pub(crate) enum RunStart {
    Fresh,
    Recovered {
        state: DagRunState,
        task_instances: Vec<TaskInstanceRecord>,
        /// When the run first started (its `dagrun_timeout` counts from here).
        started_at: Option<Timestamp>,
        /// A finished run re-opened to clear or mark a task: it starts with that change, not
        /// before it (started first, it would find itself finished and stop at once).
        start_with_change: bool,
    },
}

pub(crate) struct DagRunArgs {
    pub shared: Arc<Shared>,
    pub context: RunContext,
    pub start: RunStart,
    pub scheduler: ActorRef<SchedulerMsg>,
    pub dispatcher: ActorRef<DispatcherMsg>,
}

// --- a task instance's attempt

pub(crate) enum TaskMsg {
    /// What the worker slot running the attempt reports (or the dispatcher, for an attempt
    /// no slot will report on).
    Slot(SlotReport),
    /// The run's core stopped the attempt (a timeout, a clear or mark, a superseding try):
    /// withdraw it if it waits, stop it if it runs.
    Kill,
    /// The run's core set the attempt's execution timeout: tell the run after `after`.
    ArmTimeout {
        after: std::time::Duration,
        timer: RunTimer,
    },
    /// The execution timeout armed by `ArmTimeout` is due.
    TimeoutDue(RunTimer),
    /// Test hook: fail the actor as a crash would.
    #[cfg(any(test, feature = "fault-injection"))]
    Crash,
}

/// What a worker slot reports about the attempt it runs. Plain data addressed by the attempt,
/// so that it crosses a process boundary unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SlotReport {
    /// The attempt has run for `RUNNING_REPORT_GRACE`.
    Started { attempt: AttemptId },
    /// The attempt ended. `start_unreported`: the slot held `Started` back (the attempt ended
    /// within its grace period), so the end carries the start.
    Finished {
        attempt: AttemptId,
        report: Box<AttemptReport>,
        started_at: Timestamp,
        start_unreported: bool,
        /// The remote worker that ran it, by its certificate's name (the dispatcher sets it);
        /// `None`: the node's own slots.
        #[serde(default)]
        worker: Option<String>,
    },
    /// The attempt will never report: its slot died, no slot could take it, or it was not
    /// found where it was handed (adoption). `started_at`: when a slot started it, if one did.
    Lost {
        attempt: AttemptId,
        reason: String,
        started_at: Option<Timestamp>,
        /// The remote worker it was placed on, if one was.
        #[serde(default)]
        worker: Option<String>,
    },
}

impl SlotReport {
    pub fn attempt(&self) -> &AttemptId {
        match self {
            SlotReport::Started { attempt }
            | SlotReport::Finished { attempt, .. }
            | SlotReport::Lost { attempt, .. } => attempt,
        }
    }
}

pub(crate) struct TaskArgs {
    pub shared: Arc<Shared>,
    pub run: ActorRef<DagRunMsg>,
    pub dispatcher: ActorRef<DispatcherMsg>,
    pub start: TaskStart,
}

/// How a task actor takes up its attempt.
pub(crate) enum TaskStart {
    /// A new attempt the run's core dispatched: build its assignment (reading the upstream
    /// results it needs, when the store may hold some) and enqueue it.
    Dispatch {
        request: DispatchRequest,
        context: Arc<RunContext>,
        /// What every attempt of the run is told about it (see `attempt::run_task_context`).
        run_context: Arc<TaskContext>,
        results_stored: bool,
    },
    /// An attempt handed to the dispatcher before this actor existed (its task actor died, or
    /// its run was rebuilt): find it there, or report it lost.
    Adopt { attempt: AttemptId },
}

impl TaskStart {
    pub fn attempt(&self) -> &AttemptId {
        match self {
            TaskStart::Dispatch { request, .. } => &request.attempt,
            TaskStart::Adopt { attempt } => attempt,
        }
    }
}

// --- the dispatcher

pub(crate) enum DispatcherMsg {
    /// Queue an attempt; its worker slot reports to `reply`, the attempt's task actor.
    Enqueue {
        assignment: Arc<AttemptAssignment>,
        reply: ActorRef<TaskMsg>,
    },
    /// A new task actor takes up an attempt enqueued before it existed: its reports go to
    /// `reply` from now on, or, when the attempt is neither waiting nor running (it ended
    /// unheard, or was never enqueued), `reply` hears it lost.
    Adopt {
        attempt: AttemptId,
        reply: ActorRef<TaskMsg>,
    },
    /// An attempt ended in its slot, which is free again (the core knows which slot it was).
    SlotFree {
        attempt: AttemptId,
    },
    /// Withdraw the waiting request of the attempt with this token, or of an older one, and
    /// stop the attempt with this token if a worker slot is running it.
    Cancel {
        key: TaskInstanceKey,
        token: u64,
    },
    SetPool {
        name: String,
        slots: u32,
    },
    SetDagLimit {
        dag_id: String,
        max_active_tasks: u32,
    },
    /// The queues the node's own slots serve from now on (empty: every queue).
    SetLocalQueues {
        queues: Vec<String>,
    },
    /// The workers the dispatcher knows, and the requests waiting for a queue none serves.
    Workers {
        reply: RpcReplyPort<crate::engine::WorkersView>,
    },
    /// A remote worker's session is ready, with its slots in index order.
    RemoteJoined {
        worker: RemoteWorker,
    },
    /// A remote worker's session ended (its link closed or timed out).
    RemoteLeft {
        name: String,
        session: u64,
    },
    /// Whether `attempt` was placed on the remote worker `worker` (it runs there, or was one
    /// of the last it was given): a log the worker sends for it is taken.
    RemoteAttemptPlaced {
        worker: String,
        attempt: AttemptId,
        reply: RpcReplyPort<bool>,
    },
    /// A remote slot answered the node's poll.
    Polled {
        name: Name,
        session: u64,
        slot: u32,
        poll: SlotPoll,
    },
    /// Test hook: crash one worker slot.
    #[cfg(any(test, feature = "fault-injection"))]
    CrashSlot {
        index: usize,
    },
}

/// A remote worker as its node learns it when a session with it is ready.
#[derive(Debug, Clone)]
pub struct RemoteWorker {
    /// The worker's name from its link's certificate.
    pub name: String,
    /// The node's number for this session (a worker that comes back gets a new one).
    pub session: u64,
    /// Where its link comes from.
    pub address: String,
    pub version: String,
    /// The queues it serves (empty: every queue) and its labels.
    pub queues: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Its slots, by index.
    pub slots: Vec<ActorRef<RemoteSlotMsg>>,
    pub draining: bool,
}

// --- a worker slot

/// One attempt, as handed to a worker slot. Plain data: it crosses process boundaries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptAssignment {
    pub request: DispatchRequest,
    /// What the task runs, and how its result steers the run (the rest of its `TaskSpec` is the
    /// run's business, not the worker's).
    pub kind: TaskKind,
    pub flow: FlowControl,
    /// What every attempt of the run is told about it, shared by them (its attempt fields are
    /// empty; `context` fills them in).
    #[serde(with = "shared_context")]
    pub run: Arc<TaskContext>,
    /// The upstream results this attempt reads (empty for a task that reads none).
    pub xcoms: BTreeMap<String, serde_json::Value>,
    pub max_tries: u32,
    pub limits: AttemptLimits,
    pub log: LogTarget,
}

impl AttemptAssignment {
    /// The whole context of this attempt, for what reads it (templates, Python and in-process
    /// tasks); a plain shell task needs only its context variables and builds none.
    pub fn context(&self) -> TaskContext {
        let key = &self.request.attempt.key;
        TaskContext {
            task_id: key.task_id.to_string(),
            map_index: key.map_index,
            try_number: self.request.attempt.try_number,
            max_tries: self.max_tries,
            xcoms: self.xcoms.clone(),
            ..(*self.run).clone()
        }
    }
}

/// Serializes the shared run context as the plain value it holds.
mod shared_context {
    use crate::executor::TaskContext;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(context: &Arc<TaskContext>, to: S) -> Result<S::Ok, S::Error> {
        context.as_ref().serialize(to)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Arc<TaskContext>, D::Error> {
        TaskContext::deserialize(from).map(Arc::new)
    }
}

pub(crate) enum WorkerSlotMsg {
    /// Stop the attempt with this token if it is the one running.
    Kill { token: u64 },
    /// Test hook: fail the actor as a crash would.
    #[cfg(any(test, feature = "fault-injection"))]
    Crash,
}

pub(crate) struct WorkerSlotArgs {
    pub handle: SlotHandle,
    pub dispatcher: ActorRef<DispatcherMsg>,
}

// --- a remote worker's slot (in a `weft worker` process, reached over `ractor_cluster`)

/// A remote worker slot's message. The node sends the first three over the wire
/// (`wire.rs` says how they look there); `Local` is the slot's own, in its process.
///
/// Every message names the node's session with the worker: a slot serves one session at a
/// time, and drops what an older one sends. Reports travel back as replies to `Poll`, which
/// the node keeps outstanding per slot: a reply goes back over the session its call came on,
/// so the node knows which worker (which certificate) a report comes from, and a report stays
/// with the slot until a later poll acknowledges it, so a reply lost with its link is sent
/// again.
pub enum RemoteSlotMsg {
    /// A session starts: the slot stops what an earlier session gave it, forgets that
    /// session's reports, and says what it is.
    Hello {
        session: u64,
        reply: RpcReplyPort<SlotHello>,
    },
    /// The reports the slot holds with numbers above `ack` (the node has the rest), at once
    /// when it holds some, otherwise after its heartbeat interval; with what it runs now.
    Poll {
        session: u64,
        ack: u64,
        reply: RpcReplyPort<SlotPoll>,
    },
    Cast(SlotCast),
    Local(SlotLocal),
}

/// What the node tells a remote slot without waiting for an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SlotCast {
    /// Run this attempt. `seq` numbers the session's assignments to this slot, so a heartbeat
    /// can say which it has seen (`SlotPoll::assigned_seq`).
    Assign {
        session: u64,
        seq: u64,
        assignment: Json<Box<AttemptAssignment>>,
    },
    /// Stop this attempt if it is the one running.
    Kill { session: u64, attempt: AttemptId },
}

/// A call on the wire (the reply port travels beside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotCall {
    Hello { session: u64 },
    Poll { session: u64, ack: u64 },
}

/// Who a remote slot is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotHello {
    /// The worker's name, as it believes it; the node goes by the link's certificate.
    pub worker: String,
    /// This slot's index among the worker's `slots`.
    pub index: u32,
    pub slots: u32,
    /// The worker's weft version.
    pub version: String,
    pub queues: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub draining: bool,
}

/// A remote slot's answer to a poll: its reports not yet acknowledged, in order, and its
/// heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotPoll {
    pub reports: Vec<(u64, Json<SlotReport>)>,
    /// The attempt the slot runs now.
    pub running: Option<AttemptId>,
    /// The highest `Assign` sequence number of the session the slot has seen.
    pub assigned_seq: u64,
    /// The worker accepts nothing new (SIGTERM): it finishes what runs, then leaves.
    pub draining: bool,
}

/// The first frame of the stream on which a remote worker sends an attempt's log to its node;
/// the log's bytes follow as they are written, the stream's end is the log's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHeader {
    pub attempt: AttemptId,
}

/// A remote slot's own events.
pub enum SlotLocal {
    /// The attempt with this token ended.
    Ended {
        token: u64,
        report: Box<AttemptReport>,
    },
    /// The attempt with this token has run for `RUNNING_REPORT_GRACE`.
    GraceDue { token: u64 },
    /// Time to answer a waiting poll with a heartbeat, and to check the lease.
    Tick,
    /// Accept nothing new from now on.
    Drain,
}

/// A value carried as JSON inside a bincode message: the attempt's assignment and reports hold
/// JSON values (params, conf, results) and internally tagged enums, which bincode's serde
/// support cannot read back (it has no `deserialize_any`).
#[derive(Debug, Clone, PartialEq)]
pub struct Json<T>(pub T);

impl<T: Serialize> Serialize for Json<T> {
    fn serialize<S: serde::Serializer>(&self, to: S) -> Result<S::Ok, S::Error> {
        let bytes = serde_json::to_vec(&self.0).map_err(serde::ser::Error::custom)?;
        to.serialize_bytes(&bytes)
    }
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Json<T> {
    fn deserialize<D: serde::Deserializer<'de>>(from: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl serde::de::Visitor<'_> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("JSON bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
                Ok(bytes.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(bytes)
            }
        }
        let bytes = from.deserialize_byte_buf(Bytes)?;
        serde_json::from_slice(&bytes)
            .map(Json)
            .map_err(serde::de::Error::custom)
    }
}

// Under ractor's `cluster` feature (on, for remote worker slots) a message type says whether it
// may cross processes: none of the engine's actors' messages do (they carry reply ports and
// actor handles); what crosses is `AttemptAssignment` and `SlotReport`, inside the remote
// slot's own messages.
impl ractor::Message for SchedulerMsg {}
impl ractor::Message for DagRunMsg {}
impl ractor::Message for TaskMsg {}
impl ractor::Message for DispatcherMsg {}
impl ractor::Message for WorkerSlotMsg {}
// `RemoteSlotMsg` does cross: its `ractor::Message` is in `wire.rs`.

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
use weft_core::ids::{AttemptId, RunKey, TaskInstanceKey};
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
    },
    /// The attempt will never report: its slot died, no slot could take it, or it was not
    /// found where it was handed (adoption). `started_at`: when a slot started it, if one did.
    Lost {
        attempt: AttemptId,
        reason: String,
        started_at: Option<Timestamp>,
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
    /// Test hook: crash one worker slot.
    #[cfg(any(test, feature = "fault-injection"))]
    CrashSlot {
        index: usize,
    },
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

// Under ractor's `cluster` feature (on, for remote worker slots) a message type says whether it
// may cross processes: none of the engine's actors' messages do (they carry reply ports and
// actor handles); what crosses is `AttemptAssignment` and `SlotReport`, inside the remote
// slot's own messages.
impl ractor::Message for SchedulerMsg {}
impl ractor::Message for DagRunMsg {}
impl ractor::Message for TaskMsg {}
impl ractor::Message for DispatcherMsg {}
impl ractor::Message for WorkerSlotMsg {}

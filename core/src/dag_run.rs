//! The DagRun state machine: one run of one DAG, from creation to a final state.
//!
//! `DagRun::handle(now, input) -> Vec<RunEffect>` decides which task instances are ready,
//! retried, skipped or failed. The driver performs the effects in order: every `PersistTask`
//! is a compare-and-set in the store and must be durable before any later `Dispatch` of the
//! same call is sent (write-ahead).
//! (interface; implementation in progress)

use crate::dag::Dag;
use crate::ids::TaskInstanceKey;
use crate::state::{DagRunState, RunType, TaskState};
use crate::timetable::DataInterval;
use crate::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a run needs to know about itself; fixed when the run is created.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub dag: Arc<Dag>,
    pub run_id: String,
    pub run_type: RunType,
    pub logical_date: Timestamp,
    pub data_interval: DataInterval,
    pub conf: serde_json::Value,
    /// Seed for retry jitter; the driver draws it once per run and stores it with the run.
    pub seed: u64,
    /// State of each task in the previous run of the same DAG (for `depends_on_past`);
    /// absent tasks have no previous instance, which satisfies the dependency.
    pub past: BTreeMap<String, TaskState>,
}

/// The compare-and-set guard of a task instance: the store accepts a write only if the row
/// still holds exactly this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskVersion {
    pub state: TaskState,
    pub try_number: u32,
    /// Fencing token: grows by one every time an attempt is dispatched; a result is accepted
    /// only with the current token.
    pub token: u64,
}

/// A task instance as the run knows it and the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInstanceRecord {
    pub key: TaskInstanceKey,
    pub state: TaskState,
    /// Tries made so far (0 before the first).
    pub try_number: u32,
    pub token: u64,
    /// 1 + retries.
    pub max_tries: u32,
    pub priority_weight: i64,
    pub pool: String,
    pub pool_slots: u32,
    pub queued_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub next_retry_at: Option<Timestamp>,
    /// Why the last try ended as it did (error text, "timed out", "worker lost").
    pub note: Option<String>,
}

impl TaskInstanceRecord {
    pub fn version(&self) -> TaskVersion {
        TaskVersion { state: self.state, try_number: self.try_number, token: self.token }
    }
}

/// How one attempt ended, as the worker (or the driver that lost it) reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptOutcome {
    Success {
        /// For branch tasks: the task ids to follow.
        #[serde(default)]
        branch: Option<Vec<String>>,
        /// For short-circuit tasks: whether downstream tasks go on.
        #[serde(default)]
        proceed: Option<bool>,
        /// Length of the returned list, when the result is a list (feeds mapped downstream tasks).
        #[serde(default)]
        output_len: Option<usize>,
    },
    /// The task failed; `retryable: false` fails it at once (AirflowFailException).
    Failed { reason: String, retryable: bool },
    /// The task asked to be skipped (exit code 99, AirflowSkipException).
    Skipped,
    /// The execution timeout elapsed and the attempt was killed.
    TimedOut,
    /// The worker or its process died without reporting.
    Lost { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunTimer {
    /// A retry delay elapsed.
    Retry { task_id: String, map_index: i32, try_number: u32 },
    /// An attempt ran past its execution timeout.
    ExecutionTimeout { task_id: String, map_index: i32, try_number: u32, token: u64 },
    /// The run ran past `dagrun_timeout`.
    RunTimeout,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunInput {
    /// The run starts, or resumes after its driver was rebuilt from the store.
    Start,
    /// A worker began the attempt: queued -> running.
    AttemptStarted { task_id: String, map_index: i32, try_number: u32, token: u64 },
    /// An attempt ended. Ignored unless `(try_number, token)` is current.
    AttemptFinished {
        task_id: String,
        map_index: i32,
        try_number: u32,
        token: u64,
        outcome: AttemptOutcome,
    },
    TimerFired(RunTimer),
    /// A task of the previous run of this DAG reached a final state (depends_on_past).
    PastTaskFinished { task_id: String, state: TaskState },
    /// Clear task instances (and optionally their downstream/upstream) so they run again.
    Clear { task_ids: Vec<String>, downstream: bool, upstream: bool },
    /// Set a task instance's state by hand (mark success/failed/skipped).
    MarkState { task_id: String, map_index: i32, state: TaskState },
}

/// A task instance ready for a worker slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchRequest {
    pub key: TaskInstanceKey,
    pub try_number: u32,
    pub token: u64,
    pub priority_weight: i64,
    pub run_type: RunType,
    pub pool: String,
    pub pool_slots: u32,
    pub execution_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunEffect {
    /// Compare-and-set a task instance: from `expected` (`None` = create) to `record`.
    PersistTask { expected: Option<TaskVersion>, record: TaskInstanceRecord },
    /// Hand the attempt to the dispatcher (after the `PersistTask` that queued it is durable).
    Dispatch(DispatchRequest),
    /// Stop a running attempt (timeout, or cleared/marked while running).
    Kill { key: TaskInstanceKey, try_number: u32, token: u64 },
    SetTimer { at: Timestamp, timer: RunTimer },
    /// The run's own state changed.
    PersistRun { state: DagRunState, ended_at: Option<Timestamp> },
}

#[derive(Debug, Clone)]
pub struct DagRun {
    context: RunContext,
    state: DagRunState,
    task_instances: BTreeMap<(String, i32), TaskInstanceRecord>,
}

impl DagRun {
    /// A run with no task instances yet; `RunInput::Start` creates them.
    pub fn new(context: RunContext) -> DagRun {
        DagRun { context, state: DagRunState::Queued, task_instances: BTreeMap::new() }
    }

    /// A run rebuilt from the store after a restart.
    pub fn recover(
        context: RunContext,
        state: DagRunState,
        task_instances: Vec<TaskInstanceRecord>,
    ) -> DagRun {
        let task_instances = task_instances
            .into_iter()
            .map(|record| ((record.key.task_id.clone(), record.key.map_index), record))
            .collect();
        DagRun { context, state, task_instances }
    }

    pub fn context(&self) -> &RunContext {
        &self.context
    }

    pub fn state(&self) -> DagRunState {
        self.state
    }

    pub fn task_instances(&self) -> impl Iterator<Item = &TaskInstanceRecord> {
        self.task_instances.values()
    }

    pub fn handle(&mut self, _now: Timestamp, _input: RunInput) -> Vec<RunEffect> {
        Vec::new()
    }
}

//! The DagRun state machine: one run of one DAG, from creation to a final state.
//!
//! `DagRun::handle(now, input) -> Vec<RunEffect>` decides which task instances are ready,
//! retried, skipped or failed. The driver performs the effects in order: every `PersistTask`
//! is a compare-and-set in the store and must be durable before any later `Dispatch` of the
//! same call is sent (write-ahead).
//!
//! Semantics follow Airflow's scheduler (`DagRun.update_state`, `TriggerRuleDep`, `SkipMixin`,
//! `TaskInstance.handle_failure`), decided per event instead of per scheduler loop: a finished
//! task instance marks its direct downstream tasks for evaluation, and only those are looked
//! at, in topological order. Every `PersistTask` carries the exact version the row holds.
//!
//! Recovery (`recover` then `Start`): a `queued` instance is dispatched again with a new token,
//! so a result of the attempt that may have been sent before the restart is fenced out; a
//! `running` instance is counted as a lost try (it is killed, by its old token, and retried per
//! its policy), because its worker may be gone with the old driver and nothing would finish it;
//! an `up_for_retry` instance gets its retry timer again.

use crate::dag::Dag;
use crate::ids::{AttemptId, Name, TaskInstanceKey};
use crate::limits::MAP_INDEX_MAX;
use crate::retry::{jitter, RetryPolicy};
use crate::spec::{FlowControl, MappingSpec, TaskKind, TaskRole};
use crate::state::{DagRunState, RunType, TaskState};
use crate::timetable::DataInterval;
use crate::trigger_rule::{evaluate, evaluate_indirect_setups, Decision, Instance, UpstreamCounts};
use crate::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What a run needs to know about itself; fixed when the run is created.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub dag: Arc<Dag>,
    pub run_id: Name,
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
    pub pool: Name,
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
        TaskVersion {
            state: self.state,
            try_number: self.try_number,
            token: self.token,
        }
    }

    /// The attempt of the current try and token.
    pub fn attempt_id(&self) -> AttemptId {
        AttemptId::new(self.key.clone(), self.try_number, self.token)
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

impl AttemptOutcome {
    /// Reads a successful attempt's result as its task's flow control asks, as Airflow does:
    /// a list result gives the mapped length; a branch task's string or list of strings names
    /// the tasks to follow; a short-circuit task proceeds when the result is truthy (Python's
    /// truthiness). Values the executor already set are kept.
    pub fn read_result(&mut self, flow: FlowControl, result: Option<&serde_json::Value>) {
        let AttemptOutcome::Success {
            branch,
            proceed,
            output_len,
        } = self
        else {
            return;
        };
        if let Some(serde_json::Value::Array(items)) = result {
            output_len.get_or_insert(items.len());
        }
        match flow {
            FlowControl::Normal => {}
            FlowControl::Branch => {
                branch.get_or_insert_with(|| match result {
                    Some(serde_json::Value::String(task_id)) => vec![task_id.clone()],
                    Some(serde_json::Value::Array(items)) => items
                        .iter()
                        .filter_map(|item| item.as_str().map(str::to_string))
                        .collect(),
                    _ => Vec::new(),
                });
            }
            FlowControl::ShortCircuit => {
                proceed.get_or_insert(is_truthy(result));
            }
        }
    }
}

/// Python's truthiness of a JSON value, as Airflow's ShortCircuitOperator reads it.
fn is_truthy(value: Option<&serde_json::Value>) -> bool {
    match value {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(flag)) => *flag,
        Some(serde_json::Value::Number(number)) => number.as_f64() != Some(0.0),
        Some(serde_json::Value::String(text)) => !text.is_empty(),
        Some(serde_json::Value::Array(items)) => !items.is_empty(),
        Some(serde_json::Value::Object(fields)) => !fields.is_empty(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunTimer {
    /// A retry delay elapsed.
    Retry {
        task_id: String,
        map_index: i32,
        try_number: u32,
    },
    /// An attempt ran past its execution timeout.
    ExecutionTimeout { attempt: AttemptId },
    /// The run ran past `dagrun_timeout`.
    RunTimeout,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunInput {
    /// The run starts, or resumes after its driver was rebuilt from the store.
    Start,
    /// A worker began the attempt: queued -> running.
    AttemptStarted {
        attempt: AttemptId,
    },
    /// An attempt ended. Ignored unless its (try, token) is current.
    AttemptFinished {
        attempt: AttemptId,
        outcome: AttemptOutcome,
    },
    TimerFired(RunTimer),
    /// A task of the previous run of this DAG reached a final state (depends_on_past).
    PastTaskFinished {
        task_id: String,
        state: TaskState,
    },
    /// Clear task instances (and optionally their downstream/upstream) so they run again.
    Clear {
        task_ids: Vec<String>,
        downstream: bool,
        upstream: bool,
    },
    /// Set a task instance's state by hand (mark success/failed/skipped).
    MarkState {
        task_id: String,
        map_index: i32,
        state: TaskState,
    },
}

/// A task instance ready for a worker slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchRequest {
    pub attempt: AttemptId,
    pub priority_weight: i64,
    pub run_type: RunType,
    pub pool: Name,
    pub pool_slots: u32,
    /// The worker queue it runs on: only a worker serving it takes it.
    #[serde(default = "default_queue")]
    pub queue: Name,
    pub execution_timeout_ms: Option<u64>,
}

fn default_queue() -> Name {
    Name::from(crate::spec::DEFAULT_QUEUE)
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunEffect {
    /// Compare-and-set a task instance: from `expected` (`None` = create) to `record`.
    PersistTask {
        expected: Option<TaskVersion>,
        record: TaskInstanceRecord,
    },
    /// Hand the attempt to the dispatcher (after the `PersistTask` that queued it is durable).
    Dispatch(DispatchRequest),
    /// Stop a running attempt (timeout, or cleared/marked while running).
    Kill {
        attempt: AttemptId,
    },
    /// Find the attempt a run rebuilt from the store holds as running, and hear its start
    /// and end from wherever it runs; a driver that cannot find it reports it
    /// `AttemptOutcome::Lost` (the try is retried as the task's policy allows).
    Adopt {
        attempt: AttemptId,
    },
    SetTimer {
        at: Timestamp,
        timer: RunTimer,
    },
    /// The run's own state changed.
    PersistRun {
        state: DagRunState,
        ended_at: Option<Timestamp>,
    },
}

/// What one input made the run decide.
#[derive(Debug, Clone)]
pub struct RunDecision {
    pub effects: Vec<RunEffect>,
    /// The attempt whose report (`AttemptStarted` or `AttemptFinished`) the input carried,
    /// when the run took it as the current attempt's (`None` for a stale or duplicate report,
    /// and for inputs that carry none). Drivers store what comes with a report (the attempt
    /// row, its log, its result) exactly when the run says it accepted it.
    pub accepted: Option<AttemptId>,
}

/// Inputs the run ignored, by reason; for metrics and the simulator's checkers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Attempt results and start reports whose (try, token) is not current: stale attempts
    /// fenced out, duplicates, results for unknown task instances.
    pub ignored_results: u64,
    /// Timers that no longer apply (the try moved on, the run was cleared).
    pub ignored_timers: u64,
    /// Other inputs that changed nothing: a second `Start`, unknown task ids, a `MarkState`
    /// to a state that cannot be set by hand.
    pub ignored_inputs: u64,
}

#[derive(Debug, Clone)]
pub struct DagRun {
    /// Shared with the driver's builders of attempt assignments, which need the whole context.
    context: Arc<RunContext>,
    state: DagRunState,
    /// Task instances per task index of `context.dag`, by map index.
    task_instances: Vec<BTreeMap<i32, TaskInstanceRecord>>,
    /// Recovered records of tasks the DAG no longer has; `Start` marks them removed.
    orphans: Vec<TaskInstanceRecord>,
    /// Invariant: `state_counts[s as usize]` is the number of task instances (orphans
    /// included) in state `s`.
    state_counts: [usize; TaskState::ALL.len()],
    /// Invariant: `instance_counts[t]` counts every instance in `task_instances[t]` (as an
    /// upstream of something, so with task `t`'s `is_setup`), hidden placeholders included.
    /// Kept per change so that `live_counts` is refreshed without walking the instances.
    instance_counts: Vec<UpstreamCounts>,
    /// Invariant: `live_counts[t]` counts `live_instances(t)`, which is what task `t` adds to
    /// the upstream counts of each of its direct downstream tasks.
    live_counts: Vec<UpstreamCounts>,
    /// Invariant: `upstream_sums[t]` is the sum of `live_counts` over the direct upstream
    /// tasks of `t`, which is `upstream_counts(upstream_indices(t))`. Evaluating a task reads
    /// it instead of recounting: a join after a fan-out of n tasks is evaluated once per
    /// finished upstream, and a recount each time made that O(n^2).
    upstream_sums: Vec<UpstreamCounts>,
    /// Whether `Start` was handled by this instance of the state machine.
    started: bool,
    /// When the run started; `dagrun_timeout_ms` counts from here.
    started_at: Option<Timestamp>,
    stats: RunStats,
}

/// The effects of one `handle` call and the tasks it has yet to evaluate.
struct Step {
    now: Timestamp,
    effects: Vec<RunEffect>,
    /// The attempt report (start or end) this step took as current, if any.
    accepted: Option<AttemptId>,
    /// Topological positions of tasks whose `none` instances need evaluation.
    dirty: BTreeSet<usize>,
}

impl DagRun {
    /// A run with no task instances yet; `RunInput::Start` creates them.
    pub fn new(context: RunContext) -> DagRun {
        let tasks = context.dag.task_count();
        DagRun {
            context: Arc::new(context),
            state: DagRunState::Queued,
            task_instances: vec![BTreeMap::new(); tasks],
            orphans: Vec::new(),
            state_counts: [0; TaskState::ALL.len()],
            instance_counts: vec![UpstreamCounts::default(); tasks],
            live_counts: vec![UpstreamCounts::default(); tasks],
            upstream_sums: vec![UpstreamCounts::default(); tasks],
            started: false,
            started_at: None,
            stats: RunStats::default(),
        }
    }

    /// A run rebuilt from the store after a restart.
    pub fn recover(
        context: RunContext,
        state: DagRunState,
        task_instances: Vec<TaskInstanceRecord>,
    ) -> DagRun {
        let mut run = DagRun::new(context);
        run.state = state;
        for record in task_instances {
            run.state_counts[record.state as usize] += 1;
            match run.context.dag.task_index(&record.key.task_id) {
                Some(task) => {
                    let state = record.state;
                    let replaced = run.task_instances[task].insert(record.key.map_index, record);
                    run.count_change(task, replaced.map(|r| r.state), state);
                }
                None => run.orphans.push(record),
            }
        }
        run
    }

    /// Sets when the run started, for a run recovered from the store: without it the run
    /// timeout counts from the `Start` after recovery.
    pub fn with_started_at(mut self, started_at: Timestamp) -> DagRun {
        self.started_at = Some(started_at);
        self
    }

    pub fn context(&self) -> &RunContext {
        &self.context
    }

    /// The context, shared: cloning it costs a reference count, not a copy of `conf`.
    pub fn shared_context(&self) -> &Arc<RunContext> {
        &self.context
    }

    pub fn state(&self) -> DagRunState {
        self.state
    }

    pub fn task_instances(&self) -> impl Iterator<Item = &TaskInstanceRecord> {
        self.task_instances
            .iter()
            .flat_map(BTreeMap::values)
            .chain(&self.orphans)
    }

    /// One task instance, if it exists.
    pub fn task_instance(&self, task_id: &str, map_index: i32) -> Option<&TaskInstanceRecord> {
        let task = self.context.dag.task_index(task_id)?;
        self.task_instances[task].get(&map_index)
    }

    pub fn stats(&self) -> RunStats {
        self.stats
    }

    /// Whether this attempt (try number, fencing token) is the one its task instance is queued
    /// for: a dispatch prepared meanwhile for an attempt that was since killed, superseded or
    /// retried must not start.
    pub fn awaits_start(&self, attempt: &AttemptId) -> bool {
        let key = &attempt.key;
        let queued = &[TaskState::Queued];
        self.current_attempt(&key.task_id, key.map_index, attempt.version(), queued)
            .is_some()
    }

    /// Task instances that hold or wait for a worker slot (`queued` or `running`).
    pub fn active_instances(&self) -> usize {
        self.state_counts[TaskState::Queued as usize]
            + self.state_counts[TaskState::Running as usize]
    }

    pub fn handle(&mut self, now: Timestamp, input: RunInput) -> Vec<RunEffect> {
        self.handle_input(now, input).effects
    }

    /// `handle`, also saying which attempt report it accepted.
    pub fn handle_input(&mut self, now: Timestamp, input: RunInput) -> RunDecision {
        let mut step = Step {
            now,
            effects: Vec::new(),
            accepted: None,
            dirty: BTreeSet::new(),
        };
        match input {
            RunInput::Start => self.start(&mut step),
            RunInput::AttemptStarted { attempt } => {
                let key = &attempt.key;
                self.attempt_started(&mut step, &key.task_id, key.map_index, attempt.version())
            }
            RunInput::AttemptFinished { attempt, outcome } => {
                let key = &attempt.key;
                let version = attempt.version();
                self.attempt_finished(&mut step, &key.task_id, key.map_index, version, outcome)
            }
            RunInput::TimerFired(timer) => self.timer_fired(&mut step, timer),
            RunInput::PastTaskFinished { task_id, state } => {
                self.past_task_finished(&mut step, task_id, state)
            }
            RunInput::Clear {
                task_ids,
                downstream,
                upstream,
            } => self.clear(&mut step, &task_ids, downstream, upstream),
            RunInput::MarkState {
                task_id,
                map_index,
                state,
            } => self.mark_state(&mut step, &task_id, map_index, state),
        }
        if self.started && !self.state.is_finished() {
            self.settle(&mut step);
            self.update_run_state(&mut step);
        }
        RunDecision {
            effects: step.effects,
            accepted: step.accepted,
        }
    }

    // ---- inputs ----

    fn start(&mut self, step: &mut Step) {
        if self.started {
            self.stats.ignored_inputs += 1;
            return;
        }
        self.started = true;
        if self.state.is_finished() {
            return;
        }
        let started_at = *self.started_at.get_or_insert(step.now);
        if self.state == DagRunState::Queued {
            self.state = DagRunState::Running;
            step.effects.push(RunEffect::PersistRun {
                state: DagRunState::Running,
                ended_at: None,
            });
        }
        self.arm_run_timeout(step, started_at);
        self.remove_orphans(step);
        for position in 0..self.context.dag.task_count() {
            let task = self.context.dag.topological_indices()[position];
            if self.task_instances[task].is_empty() {
                self.create_instances(step, task);
            } else {
                self.resume_instances(step, task);
            }
            step.dirty.insert(position);
        }
    }

    fn attempt_started(
        &mut self,
        step: &mut Step,
        task_id: &str,
        map_index: i32,
        attempt: (u32, u64),
    ) {
        let Some(task) = self.current_attempt(task_id, map_index, attempt, &[TaskState::Queued])
        else {
            self.stats.ignored_results += 1;
            return;
        };
        step.accepted = Some(self.attempt_id(task, map_index, attempt));
        let now = step.now;
        self.update(step, task, map_index, |record| {
            record.state = TaskState::Running;
            record.started_at = Some(now);
        });
        // Counted from the start of execution, as Airflow does: time spent waiting for a pool
        // or worker slot is not execution time.
        if let Some(timeout_ms) = self.context.dag.task_at(task).execution_timeout_ms {
            let timer = RunTimer::ExecutionTimeout {
                attempt: self.attempt_id(task, map_index, attempt),
            };
            step.effects.push(RunEffect::SetTimer {
                at: after_ms(now, timeout_ms),
                timer,
            });
        }
    }

    fn attempt_finished(
        &mut self,
        step: &mut Step,
        task_id: &str,
        map_index: i32,
        attempt: (u32, u64),
        outcome: AttemptOutcome,
    ) {
        let active = [TaskState::Queued, TaskState::Running];
        let Some(task) = self.current_attempt(task_id, map_index, attempt, &active) else {
            self.stats.ignored_results += 1;
            return;
        };
        step.accepted = Some(self.attempt_id(task, map_index, attempt));
        match outcome {
            AttemptOutcome::Success {
                branch,
                proceed,
                output_len,
            } => {
                let result = SuccessResult {
                    branch,
                    proceed,
                    output_len,
                };
                self.succeed(step, task, map_index, result)
            }
            AttemptOutcome::Skipped => {
                self.finish(step, task, map_index, TaskState::Skipped, None);
            }
            AttemptOutcome::Failed { reason, retryable } => {
                self.fail_try(step, task, map_index, reason, retryable)
            }
            AttemptOutcome::TimedOut => {
                self.fail_try(step, task, map_index, "timed out".to_string(), true)
            }
            AttemptOutcome::Lost { reason } => self.fail_try(
                step,
                task,
                map_index,
                format!("worker lost: {reason}"),
                true,
            ),
        }
    }

    fn timer_fired(&mut self, step: &mut Step, timer: RunTimer) {
        let applied = match timer {
            RunTimer::Retry {
                task_id,
                map_index,
                try_number,
            } => self.retry_due(step, &task_id, map_index, try_number),
            RunTimer::ExecutionTimeout { attempt } => {
                let key = &attempt.key;
                self.execution_timed_out(step, &key.task_id, key.map_index, attempt.version())
            }
            RunTimer::RunTimeout => self.run_timed_out(step),
        };
        if !applied {
            self.stats.ignored_timers += 1;
        }
    }

    fn retry_due(
        &mut self,
        step: &mut Step,
        task_id: &str,
        map_index: i32,
        try_number: u32,
    ) -> bool {
        let Some(task) = self.context.dag.task_index(task_id) else {
            return false;
        };
        let due = self.task_instances[task]
            .get(&map_index)
            .is_some_and(|record| {
                record.state == TaskState::UpForRetry && record.try_number + 1 == try_number
            });
        if due && !self.state.is_finished() {
            self.dispatch(step, task, map_index);
        }
        due
    }

    fn execution_timed_out(
        &mut self,
        step: &mut Step,
        task_id: &str,
        map_index: i32,
        attempt: (u32, u64),
    ) -> bool {
        let active = [TaskState::Queued, TaskState::Running];
        let Some(task) = self.current_attempt(task_id, map_index, attempt, &active) else {
            return false;
        };
        let key = self.key(task, map_index);
        step.effects.push(RunEffect::Kill {
            attempt: AttemptId::new(key, attempt.0, attempt.1),
        });
        let timeout_ms = self
            .context
            .dag
            .task_at(task)
            .execution_timeout_ms
            .unwrap_or_default();
        let note = format!("execution timed out after {timeout_ms} ms");
        // Airflow's AirflowTaskTimeout is an ordinary failure: retried while tries are left.
        self.fail_try(step, task, map_index, note, true);
        true
    }

    /// Airflow's scheduler on `dagrun_timeout`: unfinished task instances are skipped (running
    /// ones stopped) and the run fails.
    fn run_timed_out(&mut self, step: &mut Step) -> bool {
        let Some(timeout_ms) = self.context.dag.spec().dagrun_timeout_ms else {
            return false;
        };
        let due = self
            .started_at
            .is_some_and(|at| step.now >= after_ms(at, timeout_ms));
        if !due || self.state.is_finished() || !self.started {
            return false;
        }
        for task in 0..self.task_instances.len() {
            let unfinished: Vec<i32> = self.instances_where(task, |state| !state.is_finished());
            for map_index in unfinished {
                self.kill_if_active(step, task, map_index);
                let note = Some(format!("run timed out after {timeout_ms} ms"));
                self.finish(step, task, map_index, TaskState::Skipped, note);
            }
        }
        self.finish_run(step, DagRunState::Failed);
        true
    }

    fn past_task_finished(&mut self, step: &mut Step, task_id: String, state: TaskState) {
        let Some(task) = self.context.dag.task_index(&task_id) else {
            self.stats.ignored_inputs += 1;
            return;
        };
        Arc::make_mut(&mut self.context).past.insert(task_id, state);
        // The task itself (depends_on_past) and its upstream tasks (wait_for_downstream).
        self.mark_dirty(step, task);
        for &up in self.context.dag.upstream_indices(task) {
            let position = self.context.dag.topological_position(up);
            step.dirty.insert(position);
        }
    }

    /// Airflow's `clear_task_instances`: instances go back to `none` with their try counter
    /// kept, and `max_tries` grows so that they get their retries again.
    fn clear(&mut self, step: &mut Step, task_ids: &[String], downstream: bool, upstream: bool) {
        let mut tasks = BTreeSet::new();
        for task_id in task_ids {
            let Some(task) = self.context.dag.task_index(task_id) else {
                self.stats.ignored_inputs += 1;
                continue;
            };
            tasks.insert(task);
            if downstream {
                tasks.extend(self.context.dag.descendant_indices(task));
            }
            if upstream {
                tasks.extend(self.context.dag.ancestor_indices(task));
            }
        }
        for &task in &tasks {
            let clearable = self.instances_where(task, |state| {
                !matches!(state, TaskState::None | TaskState::Removed)
            });
            for map_index in clearable {
                self.clear_instance(step, task, map_index);
            }
            self.mark_dirty(step, task);
        }
        if !tasks.is_empty() && self.state.is_finished() {
            self.reopen(step);
        }
    }

    fn clear_instance(&mut self, step: &mut Step, task: usize, map_index: i32) {
        self.kill_if_active(step, task, map_index);
        let retries = self.context.dag.task_at(task).retries;
        self.update(step, task, map_index, |record| {
            record.state = TaskState::None;
            record.max_tries = record.try_number + 1 + retries;
            record.queued_at = None;
            record.started_at = None;
            record.ended_at = None;
            record.next_retry_at = None;
            record.note = None;
        });
    }

    /// A finished run whose task instances were cleared runs again (Airflow sets it queued and
    /// the scheduler starts it; we go straight to running).
    fn reopen(&mut self, step: &mut Step) {
        self.state = DagRunState::Running;
        self.started = true;
        self.started_at = Some(step.now);
        step.effects.push(RunEffect::PersistRun {
            state: DagRunState::Running,
            ended_at: None,
        });
        self.arm_run_timeout(step, step.now);
    }

    /// Airflow's "mark success / failed / skipped": the instance takes the state at once (a
    /// running attempt is stopped) and downstream tasks are decided from it.
    fn mark_state(&mut self, step: &mut Step, task_id: &str, map_index: i32, state: TaskState) {
        let settable = matches!(
            state,
            TaskState::Success | TaskState::Failed | TaskState::Skipped
        );
        let task = self.context.dag.task_index(task_id);
        let current = task.and_then(|task| self.task_instances[task].get(&map_index));
        let (Some(task), Some(record)) = (task, current) else {
            self.stats.ignored_inputs += 1;
            return;
        };
        if !settable || record.state == state {
            self.stats.ignored_inputs += 1;
            return;
        }
        self.kill_if_active(step, task, map_index);
        self.finish(
            step,
            task,
            map_index,
            state,
            Some(format!("marked {state} by hand")),
        );
    }

    // ---- decisions ----

    /// Evaluates the `none` instances of every dirty task, upstream first. Deciding a task can
    /// only dirty tasks further down, so one pass in topological order settles the run.
    fn settle(&mut self, step: &mut Step) {
        while let Some(position) = step.dirty.pop_first() {
            let task = self.context.dag.topological_indices()[position];
            self.evaluate_task(step, task);
        }
    }

    fn evaluate_task(&mut self, step: &mut Step, task: usize) {
        let waiting = self.instances_where(task, |state| state == TaskState::None);
        if waiting.is_empty() {
            return;
        }
        let counts = self.upstream_sums[task];
        // The recount is the reference for the kept sums: debug builds (every test and the
        // simulator) compare them at each evaluation.
        #[cfg(debug_assertions)]
        debug_assert_eq!(
            counts,
            self.upstream_counts(self.context.dag.upstream_indices(task)),
            "kept upstream counts of task `{}`",
            self.context.dag.task_id_at(task)
        );
        let setups = self.context.dag.indirect_setup_indices(task);
        let setup_counts = (!setups.is_empty()).then(|| self.upstream_counts(setups));
        for map_index in waiting {
            let decision = self.decide(task, map_index, &counts, setup_counts.as_ref());
            self.apply(step, task, map_index, decision);
        }
    }

    fn decide(
        &self,
        task: usize,
        map_index: i32,
        counts: &UpstreamCounts,
        setup_counts: Option<&UpstreamCounts>,
    ) -> Decision {
        let spec = self.context.dag.task_at(task);
        let instance = Instance { map_index };
        let setup_decision = setup_counts.and_then(|c| evaluate_indirect_setups(c, instance));
        let decision =
            setup_decision.unwrap_or_else(|| evaluate(spec.trigger_rule, counts, instance));
        // Airflow's scheduler waits for past dependencies before running *or skipping*
        // (`wait_for_past_depends_before_skipping`), but not before failing.
        let blocked_by_past =
            matches!(decision, Decision::Run | Decision::Skip) && !self.past_allows(task);
        if blocked_by_past {
            Decision::Wait
        } else {
            decision
        }
    }

    fn apply(&mut self, step: &mut Step, task: usize, map_index: i32, decision: Decision) {
        match decision {
            Decision::Wait => {}
            Decision::Skip => self.finish(step, task, map_index, TaskState::Skipped, None),
            Decision::UpstreamFailed => {
                self.finish(step, task, map_index, TaskState::UpstreamFailed, None)
            }
            Decision::Removed => self.finish(step, task, map_index, TaskState::Removed, None),
            Decision::Run => self.run(step, task, map_index),
        }
    }

    fn run(&mut self, step: &mut Step, task: usize, map_index: i32) {
        let spec = self.context.dag.task_at(task);
        if map_index < 0 && matches!(spec.mapping, Some(MappingSpec::Upstream { .. })) {
            // Ready to run but never expanded: its upstream produced no list to map over.
            let note = Some("nothing to map over: the upstream task returned no list".to_string());
            self.finish(step, task, map_index, TaskState::UpstreamFailed, note);
            return;
        }
        if spec.kind == TaskKind::Empty {
            // Airflow's scheduler marks EmptyOperator tasks successful without a worker.
            let now = step.now;
            self.update(step, task, map_index, |record| {
                record.state = TaskState::Success;
                record.try_number += 1;
                record.started_at = Some(now);
                record.ended_at = Some(now);
            });
            return;
        }
        self.dispatch(step, task, map_index);
    }

    fn past_allows(&self, task: usize) -> bool {
        let spec = self.context.dag.task_at(task);
        // Airflow: `wait_for_downstream` implies `depends_on_past`.
        if !spec.depends_on_past && !spec.wait_for_downstream {
            return true;
        }
        let done = |task: usize| {
            let task_id = self.context.dag.task_id_at(task);
            self.context
                .past
                .get(task_id)
                .is_none_or(|state| matches!(state, TaskState::Success | TaskState::Skipped))
        };
        done(task)
            && (!spec.wait_for_downstream
                || self
                    .context
                    .dag
                    .downstream_indices(task)
                    .iter()
                    .all(|&down| done(down)))
    }

    /// Counts the live instances of `tasks` from scratch: O(their instances). Used for the
    /// indirect setups, which are few, and in debug builds to check `upstream_sums`.
    fn upstream_counts(&self, tasks: &[usize]) -> UpstreamCounts {
        let mut counts = UpstreamCounts::default();
        for &up in tasks {
            let is_setup = self.is_setup(up);
            for record in self.live_instances(up) {
                counts.add(record.state, is_setup);
            }
        }
        counts
    }

    /// The instances of a task, without the placeholder (map index -1) an expansion removed.
    fn live_instances(&self, task: usize) -> impl Iterator<Item = &TaskInstanceRecord> {
        let expanded = self.task_instances[task].len() > 1;
        self.task_instances[task]
            .values()
            .filter(move |record| !hidden_by_expansion(expanded, record))
    }

    fn is_setup(&self, task: usize) -> bool {
        self.context.dag.task_at(task).role == TaskRole::Setup
    }

    /// Keeps `instance_counts`, `live_counts` and `upstream_sums` true after one change to
    /// `task_instances[task]`: an instance went from state `before` to `after`, or was added
    /// in state `after` (`before: None`). Every change to `task_instances` calls it.
    /// O(out-degree of `task`) plus the task's negative map indices (at most the placeholder).
    fn count_change(&mut self, task: usize, before: Option<TaskState>, after: TaskState) {
        if before == Some(after) {
            return;
        }
        let is_setup = self.is_setup(task);
        let counts = &mut self.instance_counts[task];
        if let Some(before) = before {
            *counts -= UpstreamCounts::from_states([(before, is_setup)]);
        }
        *counts += UpstreamCounts::from_states([(after, is_setup)]);
        // Whether the placeholder is hidden depends on how many instances the task has, so
        // the hidden part is looked at again on every change rather than tracked by delta.
        let mut live = *counts;
        live -= self.hidden_counts(task);
        let previous = std::mem::replace(&mut self.live_counts[task], live);
        if previous == live {
            return;
        }
        for &down in self.context.dag.downstream_indices(task) {
            let sum = &mut self.upstream_sums[down];
            *sum -= previous;
            *sum += live;
        }
    }

    /// The counts of the instances `live_instances` leaves out. Only negative map indices can
    /// be hidden, and the map is ordered by map index, so only those are looked at.
    fn hidden_counts(&self, task: usize) -> UpstreamCounts {
        let instances = &self.task_instances[task];
        let expanded = instances.len() > 1;
        let is_setup = self.is_setup(task);
        UpstreamCounts::from_states(
            instances
                .range(..0)
                .map(|(_, record)| record)
                .filter(|record| hidden_by_expansion(expanded, record))
                .map(|record| (record.state, is_setup)),
        )
    }

    // ---- attempts ----

    fn dispatch(&mut self, step: &mut Step, task: usize, map_index: i32) {
        let now = step.now;
        self.update(step, task, map_index, |record| {
            record.state = TaskState::Queued;
            record.try_number += 1;
            record.token += 1;
            record.queued_at = Some(now);
            record.started_at = None;
            record.ended_at = None;
            record.next_retry_at = None;
        });
        self.push_dispatch(step, task, map_index);
    }

    fn push_dispatch(&self, step: &mut Step, task: usize, map_index: i32) {
        let Some(record) = self.task_instances[task].get(&map_index) else {
            return;
        };
        let spec = self.context.dag.task_at(task);
        step.effects.push(RunEffect::Dispatch(DispatchRequest {
            attempt: record.attempt_id(),
            priority_weight: self.context.dag.priority_weight_at(task),
            run_type: self.context.run_type,
            pool: self.context.dag.pool_name_at(task).clone(),
            pool_slots: spec.pool_slots,
            queue: self.context.dag.queue_name_at(task).clone(),
            execution_timeout_ms: spec.execution_timeout_ms,
        }));
    }

    fn succeed(&mut self, step: &mut Step, task: usize, map_index: i32, result: SuccessResult) {
        let flow = self.context.dag.task_at(task).flow;
        let downstream = self.context.dag.downstream_indices(task);
        if flow == FlowControl::Branch {
            let follow = result.branch.clone().unwrap_or_default();
            let unknown: Vec<&String> = follow
                .iter()
                .filter(|id| {
                    !downstream
                        .iter()
                        .any(|&d| self.context.dag.task_id_at(d) == id.as_str())
                })
                .collect();
            if !unknown.is_empty() {
                // Airflow raises (a retryable failure) when a branch names other tasks.
                let note =
                    format!("branch names tasks that are not directly downstream: {unknown:?}");
                return self.fail_try(step, task, map_index, note, true);
            }
        }
        self.finish(step, task, map_index, TaskState::Success, None);
        match flow {
            FlowControl::Normal => {}
            FlowControl::Branch => {
                self.skip_unfollowed(step, task, result.branch.unwrap_or_default())
            }
            FlowControl::ShortCircuit => {
                // `proceed: None` means the runner reported no truth value: go on.
                if result.proceed == Some(false) {
                    self.skip_descendants(step, task);
                }
            }
        }
        self.expand_mapped_downstream(step, task, result.output_len);
    }

    /// Airflow's `skip_all_except`: direct downstream tasks not followed are skipped.
    fn skip_unfollowed(&mut self, step: &mut Step, task: usize, follow: Vec<String>) {
        let downstream = self.context.dag.downstream_indices(task).to_vec();
        for down in downstream {
            if !follow
                .iter()
                .any(|id| id == self.context.dag.task_id_at(down))
            {
                self.skip_waiting(step, down);
            }
        }
    }

    /// Airflow's ShortCircuitOperator with `ignore_downstream_trigger_rules=True` (the
    /// default): every task downstream, however far, is skipped.
    fn skip_descendants(&mut self, step: &mut Step, task: usize) {
        for down in self.context.dag.descendant_indices(task) {
            self.skip_waiting(step, down);
        }
    }

    fn skip_waiting(&mut self, step: &mut Step, task: usize) {
        for map_index in self.instances_where(task, |state| state == TaskState::None) {
            self.finish(step, task, map_index, TaskState::Skipped, None);
        }
    }

    /// Airflow expands a mapped task as soon as the length of its input is known: here, when
    /// every instance of the task it maps over has succeeded.
    fn expand_mapped_downstream(
        &mut self,
        step: &mut Step,
        source: usize,
        output_len: Option<usize>,
    ) {
        let all_success = self
            .live_instances(source)
            .all(|r| r.state == TaskState::Success);
        if !all_success {
            return;
        }
        let source_mapped = self.context.dag.task_at(source).mapping.is_some();
        let length = if source_mapped {
            Some(self.live_instances(source).count())
        } else {
            output_len
        };
        let source_id = self.context.dag.task_id_at(source).to_string();
        for down in self.context.dag.downstream_indices(source).to_vec() {
            let maps_over_source = matches!(
                &self.context.dag.task_at(down).mapping,
                Some(MappingSpec::Upstream { task_id }) if *task_id == source_id
            );
            let placeholder_waiting = self.task_instances[down].len() == 1
                && self.task_instances[down]
                    .get(&-1)
                    .is_some_and(|r| r.state == TaskState::None);
            if maps_over_source && placeholder_waiting {
                if let Some(length) = length {
                    self.expand(step, down, length);
                }
            }
        }
    }

    fn expand(&mut self, step: &mut Step, task: usize, length: usize) {
        if length == 0 {
            // Airflow skips a task mapped over an empty list.
            let note = Some("mapped over an empty list".to_string());
            return self.finish(step, task, -1, TaskState::Skipped, note);
        }
        if length > MAP_INDEX_MAX {
            let note = Some(format!(
                "maps over {length} elements, more than {MAP_INDEX_MAX}"
            ));
            return self.finish(step, task, -1, TaskState::UpstreamFailed, note);
        }
        self.update(step, task, -1, |record| {
            record.state = TaskState::Removed;
            record.note = Some(format!("expanded into {length} instances"));
        });
        for map_index in 0..length {
            let map_index = i32::try_from(map_index).unwrap_or(i32::MAX);
            self.create(step, task, map_index, TaskState::None);
        }
        self.mark_dirty(step, task);
    }

    /// A try failed: retried after the policy's delay while tries are left (Airflow's
    /// `handle_failure`), failed for good otherwise or when not retryable.
    fn fail_try(
        &mut self,
        step: &mut Step,
        task: usize,
        map_index: i32,
        note: String,
        retryable: bool,
    ) {
        let Some(record) = self.task_instances[task].get(&map_index) else {
            return;
        };
        let next_try = record.try_number + 1;
        if !retryable || record.try_number >= record.max_tries {
            return self.finish(step, task, map_index, TaskState::Failed, Some(note));
        }
        let policy = RetryPolicy::of_task(self.context.dag.task_at(task));
        let jitter = jitter(self.context.seed, &record.key, next_try);
        let at = after_ms(step.now, policy.delay_before_try_ms(next_try, jitter));
        let now = step.now;
        self.update(step, task, map_index, |record| {
            record.state = TaskState::UpForRetry;
            record.ended_at = Some(now);
            record.next_retry_at = Some(at);
            record.note = Some(note);
        });
        let task_id = self.context.dag.task_id_at(task).to_string();
        let timer = RunTimer::Retry {
            task_id,
            map_index,
            try_number: next_try,
        };
        step.effects.push(RunEffect::SetTimer { at, timer });
    }

    // ---- recovery ----

    fn create_instances(&mut self, step: &mut Step, task: usize) {
        match self.context.dag.task_at(task).mapping {
            Some(MappingSpec::Literal { length: 0 }) => {
                // Airflow skips a task mapped over an empty literal.
                self.create(step, task, -1, TaskState::Skipped);
            }
            Some(MappingSpec::Literal { length }) => {
                for map_index in 0..length {
                    let map_index = i32::try_from(map_index).unwrap_or(i32::MAX);
                    self.create(step, task, map_index, TaskState::None);
                }
            }
            None | Some(MappingSpec::Upstream { .. }) => {
                self.create(step, task, -1, TaskState::None)
            }
        }
    }

    fn resume_instances(&mut self, step: &mut Step, task: usize) {
        let indexes: Vec<(i32, TaskState)> = self.task_instances[task]
            .iter()
            .map(|(&i, r)| (i, r.state))
            .collect();
        for (map_index, state) in indexes {
            match state {
                TaskState::Queued => {
                    let now = step.now;
                    self.update(step, task, map_index, |record| {
                        record.token += 1;
                        record.queued_at = Some(now);
                    });
                    self.push_dispatch(step, task, map_index);
                }
                TaskState::Running => {
                    // The attempt may still run (its run's driver was rebuilt, not its
                    // worker): the driver adopts it, or reports it lost.
                    let record = &self.task_instances[task][&map_index];
                    let attempt = record.attempt_id();
                    let started_at = record.started_at.unwrap_or(step.now);
                    step.effects.push(RunEffect::Adopt {
                        attempt: attempt.clone(),
                    });
                    // Its execution timeout counts from its start, as before the rebuild.
                    if let Some(timeout_ms) = self.context.dag.task_at(task).execution_timeout_ms {
                        let timer = RunTimer::ExecutionTimeout { attempt };
                        step.effects.push(RunEffect::SetTimer {
                            at: after_ms(started_at, timeout_ms),
                            timer,
                        });
                    }
                }
                TaskState::UpForRetry => {
                    let record = &self.task_instances[task][&map_index];
                    let at = record.next_retry_at.unwrap_or(step.now);
                    let task_id = record.key.task_id.to_string();
                    let timer = RunTimer::Retry {
                        task_id,
                        map_index,
                        try_number: record.try_number + 1,
                    };
                    step.effects.push(RunEffect::SetTimer { at, timer });
                }
                _ => {}
            }
        }
    }

    /// Airflow's `verify_integrity` marks instances of tasks that left the DAG as removed.
    fn remove_orphans(&mut self, step: &mut Step) {
        for record in &mut self.orphans {
            if record.state == TaskState::Removed {
                continue;
            }
            let expected = Some(record.version());
            self.state_counts[record.state as usize] -= 1;
            record.state = TaskState::Removed;
            self.state_counts[record.state as usize] += 1;
            step.effects.push(RunEffect::PersistTask {
                expected,
                record: record.clone(),
            });
        }
    }

    // ---- run state ----

    /// Airflow's `DagRun.update_state`: once every instance is finished, the run failed when
    /// an effective leaf failed (or upstream-failed) and succeeded otherwise; with unfinished
    /// instances that can never run (nothing active or retrying, none waiting for the past),
    /// the run is deadlocked and fails.
    fn update_run_state(&mut self, step: &mut Step) {
        let unfinished: usize = TaskState::ALL
            .iter()
            .filter(|state| !state.is_finished())
            .map(|&state| self.state_counts[state as usize])
            .sum();
        if unfinished == 0 {
            let failed = self.context.dag.run_state_indices().iter().any(|&task| {
                self.live_instances(task)
                    .any(|r| matches!(r.state, TaskState::Failed | TaskState::UpstreamFailed))
            });
            let state = if failed {
                DagRunState::Failed
            } else {
                DagRunState::Success
            };
            return self.finish_run(step, state);
        }
        if self.is_deadlocked() {
            self.finish_run(step, DagRunState::Failed);
        }
    }

    fn is_deadlocked(&self) -> bool {
        let moving = [
            TaskState::Scheduled,
            TaskState::Queued,
            TaskState::Running,
            TaskState::UpForRetry,
        ];
        if moving
            .iter()
            .any(|&state| self.state_counts[state as usize] > 0)
        {
            return false;
        }
        // Instances waiting for the previous run are not stuck (Airflow excludes them too).
        !(0..self.task_instances.len()).any(|task| {
            let spec = self.context.dag.task_at(task);
            (spec.depends_on_past || spec.wait_for_downstream)
                && self.task_instances[task]
                    .values()
                    .any(|r| r.state == TaskState::None)
        })
    }

    fn finish_run(&mut self, step: &mut Step, state: DagRunState) {
        self.state = state;
        step.effects.push(RunEffect::PersistRun {
            state,
            ended_at: Some(step.now),
        });
    }

    fn arm_run_timeout(&self, step: &mut Step, started_at: Timestamp) {
        if let Some(timeout_ms) = self.context.dag.spec().dagrun_timeout_ms {
            let at = after_ms(started_at, timeout_ms);
            step.effects.push(RunEffect::SetTimer {
                at,
                timer: RunTimer::RunTimeout,
            });
        }
    }

    // ---- records ----

    /// The task index when `(task_id, map_index)` exists in one of `states` with exactly this
    /// (try, token): the only attempt whose reports count.
    fn current_attempt(
        &self,
        task_id: &str,
        map_index: i32,
        attempt: (u32, u64),
        states: &[TaskState],
    ) -> Option<usize> {
        let task = self.context.dag.task_index(task_id)?;
        let record = self.task_instances[task].get(&map_index)?;
        let current =
            (record.try_number, record.token) == attempt && states.contains(&record.state);
        current.then_some(task)
    }

    fn attempt_id(&self, task: usize, map_index: i32, attempt: (u32, u64)) -> AttemptId {
        AttemptId::new(self.key(task, map_index), attempt.0, attempt.1)
    }

    fn instances_where(&self, task: usize, keep: impl Fn(TaskState) -> bool) -> Vec<i32> {
        self.task_instances[task]
            .iter()
            .filter(|(_, r)| keep(r.state))
            .map(|(&i, _)| i)
            .collect()
    }

    fn key(&self, task: usize, map_index: i32) -> TaskInstanceKey {
        TaskInstanceKey {
            dag_id: self.context.dag.dag_name().clone(),
            run_id: self.context.run_id.clone(),
            task_id: self.context.dag.task_name_at(task).clone(),
            map_index,
        }
    }

    fn kill_if_active(&self, step: &mut Step, task: usize, map_index: i32) {
        let Some(record) = self.task_instances[task].get(&map_index) else {
            return;
        };
        if record.state.is_active() {
            step.effects.push(RunEffect::Kill {
                attempt: record.attempt_id(),
            });
        }
    }

    fn finish(
        &mut self,
        step: &mut Step,
        task: usize,
        map_index: i32,
        state: TaskState,
        note: Option<String>,
    ) {
        debug_assert!(state.is_finished(), "finish takes a finished state");
        let now = step.now;
        self.update(step, task, map_index, |record| {
            record.state = state;
            record.ended_at = Some(now);
            record.next_retry_at = None;
            if note.is_some() {
                record.note = note;
            }
        });
    }

    fn create(&mut self, step: &mut Step, task: usize, map_index: i32, state: TaskState) {
        let spec = self.context.dag.task_at(task);
        let record = TaskInstanceRecord {
            key: self.key(task, map_index),
            state,
            try_number: 0,
            token: 0,
            max_tries: 1 + spec.retries,
            priority_weight: self.context.dag.priority_weight_at(task),
            pool: self.context.dag.pool_name_at(task).clone(),
            pool_slots: spec.pool_slots,
            queued_at: None,
            started_at: None,
            ended_at: state.is_finished().then_some(step.now),
            next_retry_at: None,
            note: None,
        };
        self.state_counts[state as usize] += 1;
        step.effects.push(RunEffect::PersistTask {
            expected: None,
            record: record.clone(),
        });
        let replaced = self.task_instances[task].insert(map_index, record);
        self.count_change(task, replaced.map(|r| r.state), state);
        if state.is_finished() {
            self.mark_downstream_dirty(step, task);
        }
    }

    /// Changes one record and emits its compare-and-set from the version it held.
    fn update(
        &mut self,
        step: &mut Step,
        task: usize,
        map_index: i32,
        change: impl FnOnce(&mut TaskInstanceRecord),
    ) {
        let Some(record) = self.task_instances[task].get_mut(&map_index) else {
            return;
        };
        let expected = record.version();
        change(record);
        let state = record.state;
        self.state_counts[expected.state as usize] -= 1;
        self.state_counts[state as usize] += 1;
        step.effects.push(RunEffect::PersistTask {
            expected: Some(expected),
            record: record.clone(),
        });
        self.count_change(task, Some(expected.state), state);
        if state.is_finished() && state != expected.state {
            self.mark_downstream_dirty(step, task);
        }
    }

    fn mark_dirty(&self, step: &mut Step, task: usize) {
        step.dirty
            .insert(self.context.dag.topological_position(task));
    }

    fn mark_downstream_dirty(&self, step: &mut Step, task: usize) {
        let dag = &self.context.dag;
        for &down in dag.downstream_indices(task) {
            step.dirty.insert(dag.topological_position(down));
        }
        if dag.task_at(task).role == TaskRole::Setup {
            for other in 0..dag.task_count() {
                if dag.indirect_setup_indices(other).contains(&task) {
                    step.dirty.insert(dag.topological_position(other));
                }
            }
        }
    }
}

/// Whether `live_instances` leaves `record` out: the placeholder (map index -1) of a task
/// that was expanded (`expanded`: it has more than one instance) and so marked removed.
fn hidden_by_expansion(expanded: bool, record: &TaskInstanceRecord) -> bool {
    expanded && record.key.map_index < 0 && record.state == TaskState::Removed
}

/// The task instances of a run as a person sees them (the API, the grid, `dags test`): the
/// placeholder of a task that expanded into mapped instances is left out, as Airflow shows only
/// the mapped instances. The store keeps it: a rebuilt run reads from it that the task expanded.
pub fn shown_instances(mut records: Vec<TaskInstanceRecord>) -> Vec<TaskInstanceRecord> {
    let expanded: std::collections::HashSet<crate::ids::Name> = records
        .iter()
        .filter(|record| record.key.map_index >= 0)
        .map(|record| record.key.task_id.clone())
        .collect();
    records.retain(|record| !hidden_by_expansion(expanded.contains(&record.key.task_id), record));
    records
}

/// What a successful attempt decided.
struct SuccessResult {
    branch: Option<Vec<String>>,
    proceed: Option<bool>,
    output_len: Option<usize>,
}

fn after_ms(at: Timestamp, ms: u64) -> Timestamp {
    let delta = chrono::TimeDelta::try_milliseconds(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or(chrono::TimeDelta::MAX);
    at.checked_add_signed(delta)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

//! DagRun actors: one per active run. Each drives a `weft_core::dag_run::DagRun`, persists its
//! decisions (one store batch per decision, or per chunk of a wide fan-out's opening, durable
//! before anything it dispatches is) and performs them: each attempt it dispatches (or adopts,
//! when rebuilt from the store) gets a task actor of its own, a supervised child
//! (`task_actor.rs`), which reports the attempt's start and end. A child that fails is rebuilt
//! as one that adopts the attempt (see `handle_supervisor_evt`).

use crate::attempt::{self, log_relative_path, lost_report};
use crate::events::Event;
use crate::executor::AttemptReport;
use crate::messages::{
    ChangeAnswer, DagRunArgs, DagRunMsg, DispatcherMsg, RunStart, SchedulerMsg, TaskArgs, TaskMsg,
    TaskStart,
};
use crate::shared::Shared;
use foldhash::{HashMap, HashMapExt};
use ractor::{
    Actor, ActorId, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SupervisionEvent,
};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use weft_core::dag_run::{
    AttemptOutcome, DagRun, RunContext, RunDecision, RunEffect, RunInput, RunTimer,
    TaskInstanceRecord,
};
use weft_core::ids::{AttemptId, Name, RunKey, TaskInstanceKey};
use weft_core::state::{DagRunState, TaskState};
use weft_core::Timestamp;
use weft_storage::{AttemptRow, LogRow, Write, XcomRow};

pub(crate) struct DagRunActor;

/// Group commit across a wide run, as a database's commit delay with its "siblings" rule: while
/// at least `COMMIT_SIBLINGS_MIN` of the run's task instances hold or wait for a worker slot,
/// decisions that nothing waits on (an attempt's end that dispatches, kills and answers
/// nothing, and does not end the run) are held back up to `COMMIT_DELAY`, or until
/// `COMMIT_BATCH_DECISIONS` of them wait, so that many attempts' ends share one commit. A chain
/// (one active instance) and every decision that dispatches or answers commit at once. Each
/// commit rewrites the pages its rows are on and syncs the log: in a fan-out of 1,000 shell
/// tasks, 10 ms took about a tenth off the engine's CPU per task against 3 ms. What waits is
/// only the durability (and events) of ends nothing depends on; a crash within the delay
/// retries those attempts, as it would any attempt whose end was not yet stored.
const COMMIT_SIBLINGS_MIN: usize = 16;
const COMMIT_DELAY: std::time::Duration = std::time::Duration::from_millis(10);
const COMMIT_BATCH_DECISIONS: usize = 256;

/// A decision that dispatches more than `DISPATCH_SPLIT_MIN` attempts (a fan-out opening) is
/// committed in chunks: its own writes with the first `DISPATCH_CHUNK_FIRST` dispatches, then
/// the rest in chunks of twice the size each time. Each chunk's attempts start once the chunk is
/// durable, so the first ones run while the writer is still writing the others' rows instead of
/// waiting for every row (a 1,000-wide opening took 7 ms to commit in one piece). Each chunk is a
/// consistent state: a prefix of the decision's dispatches, which recovery resumes as it would a
/// run whose other tasks were not queued yet.
const DISPATCH_SPLIT_MIN: usize = 64;
const DISPATCH_CHUNK_FIRST: usize = 32;

/// A task instance created waiting (state `none`: a run's start creates one for every task)
/// is not written with the decision that creates it. Its row is written by the first later
/// decision that moves it (then as the row's creation, with the new state), or after
/// `DEFERRED_ROWS_DELAY`, or with a decision that ends the run or answers a change, whichever
/// comes first. In a fan-out, the start's commit then holds the run and its first task only,
/// and each of the 1,000 rows is written once, queued, instead of created and then rewritten.
/// Nothing depends on a waiting row being durable: it is a task that has not run, which is
/// what a run rebuilt from the store makes of a task without a row, and readers of a run
/// show a task without a row as not started, as they do before the run's start is written.
const DEFERRED_ROWS_DELAY: std::time::Duration = COMMIT_DELAY;

/// The most writes the actor hands the store in one batch: a batch over it is cut (see
/// `cut_oversized`) into batches committed in order. Whatever a run decides in one go, even
/// with many decisions waiting for one commit (a store outage), is then within the store's
/// `BATCH_WRITES_MAX`.
const RUN_BATCH_WRITES_MAX: usize = weft_storage::BATCH_WRITES_MAX;

/// The largest unit `cut_oversized` keeps whole (a mapped task's expansion, with its
/// placeholder) is far below a batch: every cut makes progress.
const _: () = assert!(weft_core::limits::MAP_INDEX_MAX + 1 < RUN_BATCH_WRITES_MAX / 2);

pub(crate) struct DagRunActorState {
    shared: Arc<Shared>,
    run: DagRun,
    key: RunKey,
    stored_state: DagRunState,
    scheduler: ActorRef<SchedulerMsg>,
    dispatcher: ActorRef<DispatcherMsg>,
    /// Whether the store may hold task results of this run: set by the first result this
    /// actor writes, and from the start for a recovered run. While it is clear, dispatches
    /// skip reading results that cannot exist.
    results_stored: bool,
    /// Writes of decisions made but not yet handed to the store. Decisions made while a batch
    /// is being committed wait here and go together in the next batch (see `flush`).
    unflushed: Vec<Write>,
    /// Index in `unflushed` of the write of each task instance and of the run, so that one
    /// batch moves each row once (from the first guard to the last record).
    unflushed_rows: HashMap<Option<TaskInstanceKey>, usize>,
    /// What to do, decision by decision, once `unflushed` is durable.
    undone: Vec<Decided>,
    /// What to do once the batch being committed is durable; `None` when none is.
    committing: Option<Vec<Decided>>,
    /// Batches to commit before `unflushed`, oldest first, each with what to do once it is
    /// durable: a wide decision cut in chunks, and the decisions before it (see
    /// `DISPATCH_SPLIT_MIN`).
    sealed: VecDeque<(Vec<Write>, Vec<Decided>)>,
    /// A `FlushDue` is on its way: decisions are being held back for a shared commit.
    flush_due_armed: bool,
    /// Task instances created waiting whose rows are not written yet (see
    /// `DEFERRED_ROWS_DELAY`): none of them is in `unflushed`, `sealed` or being committed.
    deferred_rows: BTreeMap<TaskInstanceKey, TaskInstanceRecord>,
    /// A `DeferredRowsDue` is on its way.
    deferred_rows_due_armed: bool,
    /// The run was re-opened: `Start` waits for the clear or mark that re-opened it.
    start_deferred: bool,
    /// Changes that came after the run's end was decided, answered once it is durable.
    handed_back: Vec<RpcReplyPort<ChangeAnswer>>,
    /// What each attempt is told about the run (see `attempt::run_task_context`).
    task_context: Arc<crate::executor::TaskContext>,
    /// The task actor of each task instance's current attempt, and the instance of each task
    /// actor (to tell which one a supervision event is about).
    tasks: HashMap<TaskInstanceKey, TaskChild>,
    task_of_actor: HashMap<ActorId, TaskInstanceKey>,
}

/// The task actor of an attempt.
struct TaskChild {
    actor: ActorRef<TaskMsg>,
    token: u64,
}

/// The effects of one decision that wait for its writes to be durable (write-ahead).
struct Decided {
    events: Vec<Event>,
    effects: Vec<RunEffect>,
    finished: Option<DagRunState>,
    reply: Option<RpcReplyPort<ChangeAnswer>>,
}

impl Actor for DagRunActor {
    type Msg = DagRunMsg;
    type State = DagRunActorState;
    type Arguments = DagRunArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<DagRunMsg>,
        args: DagRunArgs,
    ) -> Result<DagRunActorState, ActorProcessingErr> {
        let key = RunKey {
            dag_id: args.context.dag.dag_name().clone(),
            run_id: args.context.run_id.clone(),
        };
        let results_stored = matches!(args.start, RunStart::Recovered { .. });
        let start_deferred = matches!(
            args.start,
            RunStart::Recovered {
                start_with_change: true,
                ..
            }
        );
        let task_context = Arc::new(attempt::run_task_context(&args.context));
        let (run, stored_state) = match args.start {
            RunStart::Fresh => (DagRun::new(args.context), DagRunState::Running),
            RunStart::Recovered {
                state,
                task_instances,
                started_at,
                ..
            } => {
                let run = DagRun::recover(args.context, state, task_instances);
                let run = match started_at {
                    Some(started_at) => run.with_started_at(started_at),
                    None => run,
                };
                (run, state)
            }
        };
        Ok(DagRunActorState {
            shared: args.shared,
            run,
            key,
            stored_state,
            scheduler: args.scheduler,
            dispatcher: args.dispatcher,
            results_stored,
            unflushed: Vec::new(),
            unflushed_rows: HashMap::new(),
            undone: Vec::new(),
            committing: None,
            sealed: VecDeque::new(),
            flush_due_armed: false,
            deferred_rows: BTreeMap::new(),
            deferred_rows_due_armed: false,
            start_deferred,
            handed_back: Vec::new(),
            task_context,
            tasks: HashMap::new(),
            task_of_actor: HashMap::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<DagRunMsg>,
        state: &mut DagRunActorState,
    ) -> Result<(), ActorProcessingErr> {
        if state.start_deferred {
            return Ok(());
        }
        state.decide(&myself, RunInput::Start, Vec::new()).await
    }

    async fn handle(
        &self,
        myself: ActorRef<DagRunMsg>,
        message: DagRunMsg,
        state: &mut DagRunActorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DagRunMsg::AttemptStarted { attempt } => {
                let input = RunInput::AttemptStarted { attempt };
                state.decide(&myself, input, Vec::new()).await?;
            }
            DagRunMsg::AttemptFinished {
                attempt,
                report,
                started_at,
                start_unreported,
            } => {
                let attempt = FinishedAttempt {
                    attempt,
                    started_at,
                    start_unreported,
                };
                state.attempt_finished(&myself, attempt, *report).await?;
            }
            DagRunMsg::Timer(timer) => {
                state
                    .decide(&myself, RunInput::TimerFired(timer), Vec::new())
                    .await?;
            }
            DagRunMsg::PastTaskFinished {
                task_id,
                state: past,
            } => {
                let input = RunInput::PastTaskFinished {
                    task_id,
                    state: past,
                };
                state.decide(&myself, input, Vec::new()).await?;
            }
            DagRunMsg::Clear {
                task_ids,
                downstream,
                upstream,
                reply,
            } => {
                let mut extra = Vec::new();
                for task_id in &task_ids {
                    for record in state
                        .run
                        .task_instances()
                        .filter(|record| &record.key.task_id == task_id)
                    {
                        extra.push(Write::DeleteXcoms {
                            key: record.key.clone(),
                        });
                    }
                }
                let input = RunInput::Clear {
                    task_ids,
                    downstream,
                    upstream,
                };
                state.decide_change(&myself, input, extra, reply).await?;
            }
            DagRunMsg::MarkState {
                task_id,
                map_index,
                state: target,
                reply,
            } => {
                let input = RunInput::MarkState {
                    task_id,
                    map_index,
                    state: target,
                };
                state
                    .decide_change(&myself, input, Vec::new(), reply)
                    .await?;
            }
            DagRunMsg::Flushed(result) => state.flushed(&myself, result).await?,
            DagRunMsg::FlushDue => {
                state.flush_due_armed = false;
                state.flush_now(&myself).await?;
            }
            DagRunMsg::DeferredRowsDue => {
                state.deferred_rows_due_armed = false;
                if !state.deferred_rows.is_empty() {
                    state.write_deferred_rows();
                    state.flush(&myself).await?;
                }
            }
            #[cfg(any(test, feature = "fault-injection"))]
            DagRunMsg::Crash => return Err("injected dag run actor crash".into()),
            #[cfg(any(test, feature = "fault-injection"))]
            DagRunMsg::CrashTask { key } => {
                if let Some(child) = state.tasks.get(&key) {
                    let _ = child.actor.cast(TaskMsg::Crash);
                }
            }
        }
        Ok(())
    }

    /// A task actor stopped (its attempt ended, or it was killed) or failed. A failed one is
    /// rebuilt, if its attempt is still the current one of its task instance, as a task actor
    /// that adopts the attempt: it hears the attempt's end if the attempt still waits or runs,
    /// or reports it lost (a lost try, retried as the task's policy allows).
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<DagRunMsg>,
        event: SupervisionEvent,
        state: &mut DagRunActorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, error) = match event {
            SupervisionEvent::ActorTerminated(cell, ..) => (cell, None),
            SupervisionEvent::ActorFailed(cell, error) => (cell, Some(error)),
            _ => return Ok(()),
        };
        let Some(key) = state.task_of_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        let current = state
            .tasks
            .get(&key)
            .is_some_and(|child| child.actor.get_id() == cell.get_id());
        if !current {
            return Ok(());
        }
        let Some(child) = state.tasks.remove(&key) else {
            return Ok(());
        };
        let Some(error) = error else {
            return Ok(());
        };
        let attempt = state
            .run
            .task_instance(&key.task_id, key.map_index)
            .filter(|record| record.state.is_active() && record.token == child.token)
            .map(|record| record.attempt_id());
        let Some(attempt) = attempt else {
            return Ok(());
        };
        tracing::error!(task = %key, %error, "task actor failed; rebuilding it to adopt its attempt");
        metrics::counter!("weft_task_actors_rebuilt_total").increment(1);
        if !state.ending() {
            state
                .spawn_task(&myself, TaskStart::Adopt { attempt })
                .await;
        }
        Ok(())
    }
}

impl DagRunActorState {
    async fn attempt_finished(
        &mut self,
        myself: &ActorRef<DagRunMsg>,
        attempt: FinishedAttempt,
        mut report: AttemptReport,
    ) -> Result<(), ActorProcessingErr> {
        let FinishedAttempt {
            attempt,
            started_at,
            start_unreported,
        } = attempt;
        refuse_oversized_result(&mut report);
        let key = attempt.key.clone();
        let try_number = attempt.try_number;
        let now = crate::shared::now();
        // The attempt's own records go in the same batch as the decision, and only if the run
        // accepts the result (current try and token): a fenced-out result leaves no trace.
        let mut extra = vec![Write::PutAttempt(AttemptRow {
            attempt: attempt.clone(),
            state: attempt_state(&report.outcome),
            started_at: started_at.unwrap_or(now),
            ended_at: Some(now),
            worker: "local".to_string(),
            note: outcome_note(&report.outcome),
        })];
        if report.log_bytes > 0 {
            extra.push(Write::PutLog(LogRow {
                key: key.clone(),
                try_number,
                path: log_relative_path(&key, try_number),
                bytes: report.log_bytes,
                truncated: report.log_truncated,
            }));
        }
        if let (AttemptOutcome::Success { .. }, Some(value)) = (&report.outcome, &report.result) {
            extra.push(Write::PutXcom(XcomRow {
                key: key.clone(),
                name: "return_value".to_string(),
                value: value.clone(),
            }));
        }
        let prelude = match (start_unreported, started_at) {
            (true, Some(started_at)) => Some((
                started_at,
                RunInput::AttemptStarted {
                    attempt: attempt.clone(),
                },
            )),
            _ => None,
        };
        let input = RunInput::AttemptFinished {
            attempt,
            outcome: report.outcome,
        };
        // The core says whether it took this report as the current attempt's.
        let accepted = |decision: &RunDecision| decision.accepted.is_some();
        self.decide_with(myself, prelude, input, extra, accepted, None)
            .await
    }

    async fn decide(
        &mut self,
        myself: &ActorRef<DagRunMsg>,
        input: RunInput,
        extra: Vec<Write>,
    ) -> Result<(), ActorProcessingErr> {
        self.decide_with(myself, None, input, extra, |_| true, None)
            .await
    }

    /// A decision ended the run (it may not be durable yet): no other is taken (see
    /// `ChangeAnswer::RunEnded`). Every run actor's core starts unfinished, so its state is
    /// finished only once one of this actor's decisions ended it.
    fn ending(&self) -> bool {
        self.run.state().is_finished()
    }

    /// A change by hand (clear, mark); on a re-opened run, the change comes before `Start`.
    async fn decide_change(
        &mut self,
        myself: &ActorRef<DagRunMsg>,
        change: RunInput,
        extra: Vec<Write>,
        reply: RpcReplyPort<ChangeAnswer>,
    ) -> Result<(), ActorProcessingErr> {
        if self.ending() {
            self.handed_back.push(reply);
            return Ok(());
        }
        if std::mem::take(&mut self.start_deferred) {
            let now = crate::shared::now();
            return self
                .decide_with(
                    myself,
                    Some((now, change)),
                    RunInput::Start,
                    extra,
                    |_| true,
                    Some(reply),
                )
                .await;
        }
        self.decide_with(myself, None, change, extra, |_| true, Some(reply))
            .await
    }

    /// Feed one input to the core (after `prelude`, an earlier input at its own time, if any),
    /// persist the resulting writes (plus `extra`, if `include_extra` says so about the effects
    /// of `input`) as one batch (cut in chunks if it opens a wide fan-out, see
    /// `DISPATCH_SPLIT_MIN`), then perform the other effects.
    #[tracing::instrument(level = "debug", skip_all, fields(run = %self.key))]
    async fn decide_with(
        &mut self,
        myself: &ActorRef<DagRunMsg>,
        prelude: Option<(Timestamp, RunInput)>,
        input: RunInput,
        extra: Vec<Write>,
        include_extra: impl Fn(&RunDecision) -> bool,
        reply: Option<RpcReplyPort<ChangeAnswer>>,
    ) -> Result<(), ActorProcessingErr> {
        if self.ending() {
            // The run's end is decided: it stands, and whatever comes before it is durable
            // finds the run over (a change is handed back instead, see `decide_change`).
            debug_assert!(reply.is_none());
            return Ok(());
        }
        let now = crate::shared::now();
        let mut effects = match prelude {
            Some((at, prelude)) => self.run.handle(at.min(now), prelude),
            None => Vec::new(),
        };
        let decided = self.run.handle_input(now, input);
        // Writes of this decision join those of earlier decisions not yet committed.
        let mut batch = std::mem::take(&mut self.unflushed);
        if include_extra(&decided) {
            batch.extend(extra);
        }
        effects.extend(decided.effects);
        if effects.is_empty() && reply.is_none() {
            self.unflushed = batch;
            return Ok(());
        }
        let mut events = Vec::new();
        let mut finished = None;
        // Rows first written by this decision are at `own_from` or later.
        let own_from = batch.len();
        let written = &mut self.unflushed_rows;
        let deferred = &mut self.deferred_rows;
        let context = self.run.shared_context().clone();
        for effect in &effects {
            match effect {
                RunEffect::PersistTask { expected, record } => {
                    // One decision (or the decisions of one batch) may move a task instance
                    // twice (none -> queued -> ...). The batch is atomic, so one write from the
                    // first guard to the last record says the same, and every backend (CQL
                    // too) accepts it.
                    let row = Some(record.key.clone());
                    match written.get(&row) {
                        Some(&index) => {
                            if let Write::PutTaskInstance { record: stored, .. } = &mut batch[index]
                            {
                                *stored = record.clone();
                            }
                        }
                        None if expected.is_none()
                            && record.state == TaskState::None
                            && !expands(&context, &record.key) =>
                        {
                            // Created waiting: written later (see `DEFERRED_ROWS_DELAY`).
                            deferred.insert(record.key.clone(), record.clone());
                            continue;
                        }
                        None => {
                            // A deferred row's first write creates it.
                            let expected = match deferred.remove(&record.key) {
                                Some(_) => None,
                                None => *expected,
                            };
                            written.insert(row, batch.len());
                            batch.push(Write::PutTaskInstance {
                                expected,
                                record: record.clone(),
                            });
                        }
                    }
                    events.push(Event::TaskChanged {
                        key: record.key.clone(),
                        state: record.state,
                        try_number: record.try_number,
                        at: now,
                    });
                }
                RunEffect::PersistRun { state, ended_at } => {
                    let update = Write::UpdateRun {
                        key: self.key.clone(),
                        expected: self.stored_state,
                        state: *state,
                        started_at: None,
                        ended_at: *ended_at,
                    };
                    match written.get(&None) {
                        Some(&index) => {
                            if let Write::UpdateRun {
                                state: stored,
                                ended_at: stored_end,
                                ..
                            } = &mut batch[index]
                            {
                                *stored = *state;
                                *stored_end = *ended_at;
                            }
                        }
                        None => {
                            written.insert(None, batch.len());
                            batch.push(update);
                        }
                    }
                    self.stored_state = *state;
                    events.push(Event::RunChanged {
                        run: self.key.clone(),
                        state: *state,
                        at: now,
                    });
                    if state.is_finished() {
                        finished = Some(*state);
                    }
                }
                _ => {}
            }
        }
        if finished.is_some() || reply.is_some() {
            // A run's end, or an answer to a change, covers every row of the run.
            self.take_deferred_rows(&mut batch, &mut events, now);
        } else if !self.deferred_rows.is_empty() && !self.deferred_rows_due_armed {
            self.deferred_rows_due_armed = true;
            myself.send_after(DEFERRED_ROWS_DELAY, || DagRunMsg::DeferredRowsDue);
        }
        if batch.iter().any(|write| matches!(write, Write::PutXcom(_))) {
            self.results_stored = true;
        }
        let mut decision = Decided {
            events,
            effects,
            finished,
            reply,
        };
        let chunks = split_wide_dispatch(&mut batch, own_from, &mut decision, |key| {
            expands(&context, key)
        });
        self.unflushed = batch;
        self.undone.push(decision);
        if !chunks.is_empty() {
            // The chunks commit after this decision and the ones before it, and before any
            // later decision (which may change their rows).
            self.unflushed_rows.clear();
            let before = (
                std::mem::take(&mut self.unflushed),
                std::mem::take(&mut self.undone),
            );
            self.sealed.push_back(before);
            self.sealed.extend(chunks);
        }
        self.flush(myself).await
    }

    /// Moves the deferred rows into `batch` (which is `unflushed`, taken), as their creation,
    /// with their events.
    fn take_deferred_rows(
        &mut self,
        batch: &mut Vec<Write>,
        events: &mut Vec<Event>,
        now: Timestamp,
    ) {
        for (key, record) in std::mem::take(&mut self.deferred_rows) {
            events.push(Event::TaskChanged {
                key: key.clone(),
                state: record.state,
                try_number: record.try_number,
                at: now,
            });
            self.unflushed_rows.insert(Some(key), batch.len());
            batch.push(Write::PutTaskInstance {
                expected: None,
                record,
            });
        }
    }

    /// Writes the deferred rows with the next batch (see `DEFERRED_ROWS_DELAY`).
    fn write_deferred_rows(&mut self) {
        let mut batch = std::mem::take(&mut self.unflushed);
        let mut events = Vec::new();
        self.take_deferred_rows(&mut batch, &mut events, crate::shared::now());
        self.unflushed = batch;
        self.undone.push(Decided {
            events,
            effects: Vec::new(),
            finished: None,
            reply: None,
        });
    }

    /// Hands the writes of every decision made so far to the store as one batch, unless a
    /// batch is being committed already (then they go once it is: decisions made meanwhile
    /// share the next commit instead of waiting one commit each). The decisions' effects are
    /// performed, in order, only once their batch is durable (`flushed`).
    async fn flush(&mut self, myself: &ActorRef<DagRunMsg>) -> Result<(), ActorProcessingErr> {
        if self.committing.is_none()
            && self.sealed.is_empty()
            && !self.undone.is_empty()
            && self.may_hold_back()
        {
            if !self.flush_due_armed {
                self.flush_due_armed = true;
                myself.send_after(COMMIT_DELAY, || DagRunMsg::FlushDue);
            }
            return Ok(());
        }
        self.flush_now(myself).await
    }

    /// Whether the decisions waiting for a commit may wait for more (see `COMMIT_DELAY`).
    fn may_hold_back(&self) -> bool {
        self.run.active_instances() >= COMMIT_SIBLINGS_MIN
            && self.undone.len() < COMMIT_BATCH_DECISIONS
            && self.undone.iter().all(|decision| {
                decision.reply.is_none()
                    && decision.finished.is_none()
                    && decision.effects.iter().all(|effect| {
                        !matches!(effect, RunEffect::Dispatch(_) | RunEffect::Kill { .. })
                    })
            })
    }

    /// `flush` without holding anything back.
    async fn flush_now(&mut self, myself: &ActorRef<DagRunMsg>) -> Result<(), ActorProcessingErr> {
        while self.committing.is_none() {
            let (batch, decided) = match self.sealed.pop_front() {
                Some(sealed) => sealed,
                None if !self.undone.is_empty() => {
                    self.unflushed_rows.clear();
                    (
                        std::mem::take(&mut self.unflushed),
                        std::mem::take(&mut self.undone),
                    )
                }
                None => break,
            };
            if batch.is_empty() {
                self.perform_decided(myself, decided).await?;
                continue;
            }
            let (batch, decided) = if batch.len() > RUN_BATCH_WRITES_MAX {
                // Committed in order; what was decided waits for the last piece.
                let mut pieces = cut_oversized(batch, RUN_BATCH_WRITES_MAX).into_iter();
                let first = pieces.next().unwrap_or_default();
                let mut rest: Vec<(Vec<Write>, Vec<Decided>)> =
                    pieces.map(|piece| (piece, Vec::new())).collect();
                match rest.last_mut() {
                    Some(last) => last.1 = decided,
                    None => rest.push((Vec::new(), decided)),
                }
                for sealed in rest.into_iter().rev() {
                    self.sealed.push_front(sealed);
                }
                metrics::counter!("weft_run_batches_cut_total").increment(1);
                (first, Vec::new())
            } else {
                (batch, decided)
            };
            self.committing = Some(decided);
            let (shared, myself) = (self.shared.clone(), myself.clone());
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let gone = || {
                    matches!(
                        myself.get_status(),
                        ActorStatus::Stopping | ActorStatus::Stopped
                    )
                };
                // While the store is unavailable, the batch is tried again (backoff, each
                // failure logged and counted) for as long as it takes; the decisions it holds
                // stay in the actor meanwhile, and later ones join the next batch.
                let Some(result) = shared.write_until_answered(batch, gone).await else {
                    return;
                };
                metrics::histogram!("weft_run_persist_seconds")
                    .record(started.elapsed().as_secs_f64());
                let _ = myself.cast(DagRunMsg::Flushed(result));
            });
        }
        Ok(())
    }

    /// The batch being committed is durable, or refused. On a conflict (a guard did not hold:
    /// the store holds something this actor does not know of) the actor fails and its
    /// supervisor rebuilds the run from the store. Any other refusal is for good (see
    /// `fail_refused`). A store that is unavailable is not an answer: the write is tried again
    /// until the store answers (see `flush_now`).
    async fn flushed(
        &mut self,
        myself: &ActorRef<DagRunMsg>,
        result: weft_storage::Result<()>,
    ) -> Result<(), ActorProcessingErr> {
        match result {
            Ok(()) => {}
            Err(error) if error.is_conflict() => return Err(error.into()),
            Err(error) => return self.fail_refused(myself, error).await,
        }
        let decided = self.committing.take().unwrap_or_default();
        self.perform_decided(myself, decided).await?;
        self.flush(myself).await
    }

    /// The store refused a batch of this run for good (over a limit, corrupt, a row gone):
    /// the same batch would be refused again, and a run waiting for it would hang. The run
    /// fails visibly instead: the refusal is logged and counted, the run is stored failed (its
    /// task instances keep what is durable), its attempts are stopped and the scheduler is
    /// told. What was decided and not written is dropped; a change waiting for it gets no
    /// answer (its caller hears that the run stopped).
    async fn fail_refused(
        &mut self,
        myself: &ActorRef<DagRunMsg>,
        error: weft_storage::Error,
    ) -> Result<(), ActorProcessingErr> {
        tracing::error!(run = %self.key, %error, "the store refused a batch of the run for good; the run fails");
        metrics::counter!("weft_run_batches_refused_total").increment(1);
        for record in self.run.task_instances() {
            if record.state.is_active() {
                let _ = self.dispatcher.cast(DispatcherMsg::Cancel {
                    key: record.key.clone(),
                    token: record.token,
                });
            }
        }
        // Their task actors stop with this actor.
        let now = crate::shared::now();
        let failed = Write::UpdateRun {
            key: self.key.clone(),
            expected: DagRunState::Running,
            state: DagRunState::Failed,
            started_at: None,
            ended_at: Some(now),
        };
        // A failure to store the failure fails the actor: the run is rebuilt from the store,
        // decides again and, refused again, comes back here.
        self.shared.write(vec![failed]).await?;
        self.shared.publish(Event::RunChanged {
            run: self.key.clone(),
            state: DagRunState::Failed,
            at: now,
        });
        for reply in self.handed_back.drain(..) {
            let _ = reply.send(ChangeAnswer::RunEnded);
        }
        let _ = self.scheduler.cast(SchedulerMsg::RunFinished {
            run: self.key.clone(),
            state: DagRunState::Failed,
            actor: myself.get_id(),
        });
        myself.stop(None);
        Ok(())
    }

    async fn perform_decided(
        &mut self,
        myself: &ActorRef<DagRunMsg>,
        decided: Vec<Decided>,
    ) -> Result<(), ActorProcessingErr> {
        for decision in decided {
            if self.perform_decision(myself, decision).await? {
                // The run is over: what was decided after its end does not matter.
                break;
            }
        }
        Ok(())
    }

    /// Publishes a durable decision's events and performs its effects; `true` when it
    /// finished the run.
    async fn perform_decision(
        &mut self,
        myself: &ActorRef<DagRunMsg>,
        decision: Decided,
    ) -> Result<bool, ActorProcessingErr> {
        let Decided {
            events,
            effects,
            finished,
            reply,
        } = decision;
        let now = crate::shared::now();
        for event in events {
            if let Event::TaskChanged { key, state, .. } = &event {
                if state.is_finished() && self.depends_on_past_downstream(&key.task_id) {
                    let _ = self.scheduler.cast(SchedulerMsg::TaskFinalized {
                        run: self.key.clone(),
                        logical_date: self.run.context().logical_date,
                        task_id: key.task_id.to_string(),
                        state: *state,
                    });
                }
            }
            self.shared.publish(event);
        }
        for effect in effects {
            self.perform(myself, effect, now).await?;
        }
        if let Some(reply) = reply {
            let _ = reply.send(ChangeAnswer::Applied);
        }
        if let Some(state) = finished {
            for reply in self.handed_back.drain(..) {
                let _ = reply.send(ChangeAnswer::RunEnded);
            }
            let _ = self.scheduler.cast(SchedulerMsg::RunFinished {
                run: self.key.clone(),
                state,
                actor: myself.get_id(),
            });
            myself.stop(None);
            return Ok(true);
        }
        Ok(false)
    }

    fn depends_on_past_downstream(&self, task_id: &str) -> bool {
        self.run
            .context()
            .dag
            .task(task_id)
            .is_some_and(|task| task.depends_on_past)
    }

    async fn perform(
        &mut self,
        myself: &ActorRef<DagRunMsg>,
        effect: RunEffect,
        now: Timestamp,
    ) -> Result<(), ActorProcessingErr> {
        match effect {
            RunEffect::Dispatch(request) => {
                let start = TaskStart::Dispatch {
                    request,
                    context: self.run.shared_context().clone(),
                    run_context: self.task_context.clone(),
                    results_stored: self.results_stored,
                };
                self.spawn_task(myself, start).await;
            }
            RunEffect::Adopt { attempt } => {
                self.spawn_task(myself, TaskStart::Adopt { attempt }).await;
            }
            RunEffect::Kill { attempt } => match self.current_task(&attempt) {
                // The task actor carries the kill, and stops.
                Some(child) => {
                    let _ = child.actor.cast(TaskMsg::Kill);
                    self.tasks.remove(&attempt.key);
                }
                // An attempt without a task actor (its start failed): the dispatcher
                // withdraws it if it waits, or stops it if it runs.
                None => {
                    let (key, token) = (attempt.key, attempt.token);
                    let _ = self.dispatcher.cast(DispatcherMsg::Cancel { key, token });
                }
            },
            RunEffect::SetTimer { at, timer } => {
                let after = (at - now).to_std().unwrap_or_default();
                if let RunTimer::ExecutionTimeout { attempt } = &timer {
                    // The attempt's task actor holds its timeout; an attempt that has ended
                    // (its start reported with its end) has none to hold.
                    if let Some(child) = self.current_task(attempt) {
                        let _ = child.actor.cast(TaskMsg::ArmTimeout { after, timer });
                    }
                    return Ok(());
                }
                myself.send_after(after, move || DagRunMsg::Timer(timer));
            }
            RunEffect::PersistTask { .. } | RunEffect::PersistRun { .. } => {}
        }
        Ok(())
    }

    /// The task actor of `attempt`, if it is the current one of its task instance.
    fn current_task(&self, attempt: &AttemptId) -> Option<&TaskChild> {
        self.tasks
            .get(&attempt.key)
            .filter(|child| child.token == attempt.token)
    }

    /// Starts the task actor of an attempt, as a child of this run's actor. One that cannot be
    /// started (the runtime is shutting down) is a lost try.
    async fn spawn_task(&mut self, myself: &ActorRef<DagRunMsg>, start: TaskStart) {
        let attempt = start.attempt().clone();
        let args = TaskArgs {
            shared: self.shared.clone(),
            run: myself.clone(),
            dispatcher: self.dispatcher.clone(),
            start,
        };
        match crate::tree::spawn_task(args, myself.get_cell()).await {
            Ok(actor) => {
                self.task_of_actor
                    .insert(actor.get_id(), attempt.key.clone());
                let child = TaskChild {
                    actor,
                    token: attempt.token,
                };
                self.tasks.insert(attempt.key, child);
            }
            Err(error) => {
                let reason = format!("cannot start the attempt's task actor: {error}");
                let _ = myself.cast(DagRunMsg::attempt_lost(attempt, &reason));
            }
        }
    }
}

impl DagRunMsg {
    /// The end of an attempt, as the run hears it. `started` is when the attempt started and
    /// whether its start is still unreported (it ended within the grace), for an attempt that
    /// reached a worker slot.
    pub(crate) fn attempt_finished(
        attempt: AttemptId,
        report: AttemptReport,
        started: Option<(Timestamp, bool)>,
    ) -> DagRunMsg {
        DagRunMsg::AttemptFinished {
            attempt,
            report: Box::new(report),
            started_at: started.map(|(at, _)| at),
            start_unreported: started.is_some_and(|(_, unreported)| unreported),
        }
    }

    /// An attempt that could not be handed to a worker, reported as lost (retried as the
    /// task's policy allows).
    pub(crate) fn attempt_lost(attempt: AttemptId, reason: &str) -> DagRunMsg {
        DagRunMsg::attempt_finished(attempt, lost_report(reason), None)
    }
}

/// Cuts a wide decision (see `DISPATCH_SPLIT_MIN`): its dispatches after the first
/// `DISPATCH_CHUNK_FIRST` move, with their rows' writes and events, into chunks to commit after
/// `batch`, each twice the size of the one before. Only rows this decision writes first (at
/// `own_from` or later in `batch`) move; a row that an earlier decision of the batch writes too
/// stays, and so does a row `stays` picks (an instance an expansion creates: the expansion is
/// committed whole, see `cut_oversized`). A decision that answers someone, ends the run or
/// kills is not cut. Returns the chunks in commit order; none when the decision stays whole.
fn split_wide_dispatch(
    batch: &mut Vec<Write>,
    own_from: usize,
    decision: &mut Decided,
    stays: impl Fn(&TaskInstanceKey) -> bool,
) -> Vec<(Vec<Write>, Vec<Decided>)> {
    let dispatches = decision
        .effects
        .iter()
        .filter(|effect| matches!(effect, RunEffect::Dispatch(_)))
        .count();
    let cuttable = decision.reply.is_none()
        && decision.finished.is_none()
        && !decision
            .effects
            .iter()
            .any(|effect| matches!(effect, RunEffect::Kill { .. }));
    if dispatches <= DISPATCH_SPLIT_MIN || !cuttable {
        return Vec::new();
    }
    let own_rows: HashMap<TaskInstanceKey, usize> = batch
        .iter()
        .enumerate()
        .skip(own_from)
        .filter_map(|(index, write)| match write {
            Write::PutTaskInstance { record, .. } if !stays(&record.key) => {
                Some((record.key.clone(), index))
            }
            _ => None,
        })
        .collect();
    // The chunk each moved write goes to, by its index in `batch`; a row's events follow it.
    let mut chunk_of_write: Vec<Option<usize>> = vec![None; batch.len()];
    let mut chunk_effects: Vec<Vec<RunEffect>> = Vec::new();
    let (mut seen, mut capacity) = (0, DISPATCH_CHUNK_FIRST);
    let mut kept = Vec::with_capacity(decision.effects.len());
    for effect in std::mem::take(&mut decision.effects) {
        let moved = match &effect {
            RunEffect::Dispatch(request) => {
                seen += 1;
                own_rows
                    .get(&request.attempt.key)
                    .filter(|_| seen > DISPATCH_CHUNK_FIRST)
            }
            _ => None,
        };
        let Some(&index) = moved else {
            kept.push(effect);
            continue;
        };
        if chunk_effects
            .last()
            .is_none_or(|chunk| chunk.len() >= capacity)
        {
            capacity *= 2;
            chunk_effects.push(Vec::with_capacity(capacity));
        }
        let chunk = chunk_effects.len() - 1;
        chunk_of_write[index] = Some(chunk);
        chunk_effects[chunk].push(effect);
    }
    decision.effects = kept;
    let mut chunk_writes: Vec<Vec<Write>> = chunk_effects.iter().map(|_| Vec::new()).collect();
    let mut kept_writes = Vec::with_capacity(batch.len());
    for (write, chunk) in std::mem::take(batch).into_iter().zip(&chunk_of_write) {
        match chunk {
            Some(chunk) => chunk_writes[*chunk].push(write),
            None => kept_writes.push(write),
        }
    }
    *batch = kept_writes;
    let mut chunk_events: Vec<Vec<Event>> = chunk_effects.iter().map(|_| Vec::new()).collect();
    let mut kept_events = Vec::with_capacity(decision.events.len());
    for event in std::mem::take(&mut decision.events) {
        let chunk = match &event {
            Event::TaskChanged { key, .. } => own_rows.get(key).and_then(|&i| chunk_of_write[i]),
            _ => None,
        };
        match chunk {
            Some(chunk) => chunk_events[chunk].push(event),
            None => kept_events.push(event),
        }
    }
    decision.events = kept_events;
    chunk_writes
        .into_iter()
        .zip(chunk_effects)
        .zip(chunk_events)
        .map(|((writes, effects), events)| {
            let decided = Decided {
                events,
                effects,
                finished: None,
                reply: None,
            };
            (writes, vec![decided])
        })
        .collect()
}

/// Cuts a batch of more than `max` writes into batches of at most `max`, to commit in order.
/// A batch commits one or many decisions atomically, but only some of its writes need each
/// other; the rest may become durable in any order, as they do across batches, because each
/// cut leaves a state that recovery resumes (a prefix of the queued rows, a subset of the
/// accepted results, of the cleared or finished instances: a run rebuilt from the store
/// decides again what was not written, and a result not written is a lost try). Kept whole:
/// the writes of one task instance (its row with the attempt, log and results accepted with it,
/// or its results' deletion) and a mapped task's expansion (its placeholder with the instances
/// it creates, so a rebuilt run never finds part of an expansion), committed before the other
/// rows (an expansion without its upstream's success is an upstream that runs again). The
/// run's own row goes last: a run is never stored finished before its task instances are.
fn cut_oversized(batch: Vec<Write>, max: usize) -> Vec<Vec<Write>> {
    #[derive(Clone, PartialEq, Eq, Hash)]
    enum Unit {
        Expansion(Name),
        Row(TaskInstanceKey),
        Run,
    }
    fn row_key(write: &Write) -> Option<&TaskInstanceKey> {
        match write {
            Write::PutTaskInstance { record, .. } => Some(&record.key),
            Write::PutAttempt(attempt) => Some(&attempt.attempt.key),
            Write::PutLog(log) => Some(&log.key),
            Write::PutXcom(xcom) => Some(&xcom.key),
            Write::DeleteXcoms { key } => Some(key),
            _ => None,
        }
    }
    // Tasks whose instances this batch creates (an expansion, or a literal mapping's start).
    let expanded: std::collections::HashSet<Name> = batch
        .iter()
        .filter_map(|write| match write {
            Write::PutTaskInstance {
                expected: None,
                record,
            } if record.key.map_index >= 0 => Some(record.key.task_id.clone()),
            _ => None,
        })
        .collect();
    let created: std::collections::HashSet<TaskInstanceKey> = batch
        .iter()
        .filter_map(|write| match write {
            Write::PutTaskInstance {
                expected: None,
                record,
            } => Some(record.key.clone()),
            _ => None,
        })
        .collect();
    let unit_of = |write: &Write| match row_key(write) {
        Some(key)
            if expanded.contains(&key.task_id) && (key.map_index < 0 || created.contains(key)) =>
        {
            Unit::Expansion(key.task_id.clone())
        }
        Some(key) => Unit::Row(key.clone()),
        None => Unit::Run,
    };
    let mut units: Vec<(Unit, Vec<Write>)> = Vec::new();
    let mut index: HashMap<Unit, usize> = HashMap::new();
    for write in batch {
        let unit = unit_of(&write);
        let at = *index.entry(unit.clone()).or_insert_with(|| {
            units.push((unit, Vec::new()));
            units.len() - 1
        });
        units[at].1.push(write);
    }
    let class = |unit: &Unit| match unit {
        Unit::Expansion(_) => 0,
        Unit::Row(_) => 1,
        Unit::Run => 2,
    };
    units.sort_by_key(|(unit, _)| class(unit));
    let mut pieces: Vec<Vec<Write>> = vec![Vec::new()];
    for (unit, writes) in units {
        // A unit over the limit (an expansion with many results, only ever after a long wait
        // for the store) goes by task instance rather than be refused whole.
        let parts = if writes.len() > max && matches!(unit, Unit::Expansion(_)) {
            let mut rows: Vec<Vec<Write>> = Vec::new();
            let mut row_index: HashMap<Option<TaskInstanceKey>, usize> = HashMap::new();
            for write in writes {
                let at = *row_index
                    .entry(row_key(&write).cloned())
                    .or_insert_with(|| {
                        rows.push(Vec::new());
                        rows.len() - 1
                    });
                rows[at].push(write);
            }
            rows
        } else {
            vec![writes]
        };
        for part in parts {
            let current = pieces.last_mut().expect("one piece at least");
            if !current.is_empty() && current.len() + part.len() > max {
                pieces.push(part);
            } else {
                current.extend(part);
            }
        }
    }
    pieces
}

/// Whether `key` is an instance created by expanding a task mapped over an upstream result:
/// such a row is written with the expansion (with its placeholder's `removed`), not deferred,
/// because a run rebuilt from the store cannot create it again (the length it maps over is
/// known only from the upstream's result).
fn expands(context: &RunContext, key: &TaskInstanceKey) -> bool {
    key.map_index >= 0
        && context.dag.task(&key.task_id).is_some_and(|task| {
            matches!(
                task.mapping,
                Some(weft_core::spec::MappingSpec::Upstream { .. })
            )
        })
}

/// The attempt an `AttemptFinished` is about.
struct FinishedAttempt {
    attempt: AttemptId,
    started_at: Option<Timestamp>,
    start_unreported: bool,
}

/// A result over the XCom limit fails the attempt (for good: a retry would produce it again)
/// instead of failing the whole store batch.
fn refuse_oversized_result(report: &mut AttemptReport) {
    let Some(value) = &report.result else { return };
    let size = serde_json::to_vec(value)
        .map(|bytes| bytes.len())
        .unwrap_or(usize::MAX);
    if size > weft_core::limits::XCOM_BYTES_MAX {
        report.outcome = AttemptOutcome::Failed {
            reason: format!(
                "task result is {size} bytes, over the limit of {} bytes: return a smaller value or write it to storage and return its location",
                weft_core::limits::XCOM_BYTES_MAX
            ),
            retryable: false,
        };
        report.result = None;
    }
}

fn attempt_state(outcome: &AttemptOutcome) -> TaskState {
    match outcome {
        AttemptOutcome::Success { .. } => TaskState::Success,
        AttemptOutcome::Skipped => TaskState::Skipped,
        AttemptOutcome::Failed { .. } | AttemptOutcome::TimedOut | AttemptOutcome::Lost { .. } => {
            TaskState::Failed
        }
    }
}

fn outcome_note(outcome: &AttemptOutcome) -> Option<String> {
    match outcome {
        AttemptOutcome::Failed { reason, .. } => Some(reason.clone()),
        AttemptOutcome::TimedOut => Some("execution timeout".to_string()),
        AttemptOutcome::Lost { reason } => Some(format!("lost: {reason}")),
        AttemptOutcome::Success { .. } | AttemptOutcome::Skipped => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::dag_run::DispatchRequest;
    use weft_core::state::RunType;

    fn record(task_id: &str, state: TaskState) -> TaskInstanceRecord {
        TaskInstanceRecord {
            key: TaskInstanceKey::new("d", "r", task_id, -1),
            state,
            try_number: 0,
            token: 1,
            max_tries: 1,
            priority_weight: 1,
            pool: Name::from("default_pool"),
            pool_slots: 1,
            queued_at: None,
            started_at: None,
            ended_at: None,
            next_retry_at: None,
            note: None,
        }
    }

    fn dispatch(task_id: &str) -> RunEffect {
        RunEffect::Dispatch(DispatchRequest {
            attempt: AttemptId::new(TaskInstanceKey::new("d", "r", task_id, -1), 1, 1),
            priority_weight: 1,
            run_type: RunType::Manual,
            pool: Name::from("default_pool"),
            pool_slots: 1,
            queue: Name::from("default"),
            execution_timeout_ms: None,
        })
    }

    fn changed(task_id: &str) -> Event {
        Event::TaskChanged {
            key: TaskInstanceKey::new("d", "r", task_id, -1),
            state: TaskState::Queued,
            try_number: 1,
            at: crate::shared::now(),
        }
    }

    fn task_ids(writes: &[Write]) -> Vec<String> {
        writes
            .iter()
            .filter_map(|write| match write {
                Write::PutTaskInstance { record, .. } => Some(record.key.task_id.to_string()),
                _ => None,
            })
            .collect()
    }

    /// A decision that queues and dispatches `width` tasks after the batch holds `earlier`
    /// writes of other decisions; the first `shared` of its tasks were written earlier too.
    fn wide(width: usize, shared: usize) -> (Vec<Write>, usize, Decided) {
        let id = |index: usize| format!("t{index:04}");
        let mut batch: Vec<Write> = (0..shared)
            .map(|index| Write::PutTaskInstance {
                expected: None,
                record: record(&id(index), TaskState::None),
            })
            .collect();
        let own_from = batch.len();
        batch.extend((shared..width).map(|index| Write::PutTaskInstance {
            expected: Some(record(&id(index), TaskState::None).version()),
            record: record(&id(index), TaskState::Queued),
        }));
        let decision = Decided {
            events: (0..width).map(|index| changed(&id(index))).collect(),
            effects: (0..width).map(|index| dispatch(&id(index))).collect(),
            finished: None,
            reply: None,
        };
        (batch, own_from, decision)
    }

    #[test]
    fn a_wide_dispatch_is_cut_in_growing_chunks_each_with_its_rows_and_events() {
        let (mut batch, own_from, mut decision) = wide(300, 40);
        let chunks = split_wide_dispatch(&mut batch, own_from, &mut decision, |_| false);
        // Every dispatch after the 32nd moves with its row if this decision wrote the row
        // first: tasks 0..40 were written earlier (and hold the first 32 dispatches), so
        // tasks 40..300 move, in chunks of 64, 128 and the rest.
        let sizes: Vec<usize> = chunks.iter().map(|(writes, _)| writes.len()).collect();
        assert_eq!(sizes, vec![64, 128, 68]);
        assert_eq!(batch.len(), 40);
        assert_eq!(decision.effects.len(), 40);
        assert_eq!(decision.events.len(), 40);
        let mut moved = Vec::new();
        for (writes, decided) in &chunks {
            let [decided] = decided.as_slice() else {
                panic!("one decision per chunk")
            };
            let rows = task_ids(writes);
            let dispatched: Vec<String> = decided
                .effects
                .iter()
                .map(|effect| match effect {
                    RunEffect::Dispatch(request) => request.attempt.key.task_id.to_string(),
                    other => panic!("only dispatches move: {other:?}"),
                })
                .collect();
            let announced: Vec<String> = decided
                .events
                .iter()
                .map(|event| match event {
                    Event::TaskChanged { key, .. } => key.task_id.to_string(),
                    other => panic!("only task events move: {other:?}"),
                })
                .collect();
            assert_eq!(rows, dispatched);
            assert_eq!(rows, announced);
            moved.extend(rows);
        }
        // In dispatch order, from the 41st task on; none of the shared rows moved.
        let expected: Vec<String> = (40..300).map(|index| format!("t{index:04}")).collect();
        assert_eq!(moved, expected);
        assert_eq!(task_ids(&batch).len(), 40);
        assert!(task_ids(&batch).iter().all(|id| id.as_str() < "t0040"));
    }

    #[test]
    fn an_oversized_batch_is_cut_keeping_rows_and_expansions_whole_and_the_run_last() {
        let instance = |task_id: &str, map_index: i32, state: TaskState| TaskInstanceRecord {
            key: TaskInstanceKey::new("d", "r", task_id, map_index),
            ..record(task_id, state)
        };
        let attempt = |task_id: &str| {
            Write::PutAttempt(AttemptRow {
                attempt: AttemptId::new(TaskInstanceKey::new("d", "r", task_id, -1), 1, 1),
                state: TaskState::Success,
                started_at: crate::shared::now(),
                ended_at: None,
                worker: "local".to_string(),
                note: None,
            })
        };
        let mut batch = Vec::new();
        // Ends of eight tasks (attempt, then row), the source's among them.
        for index in 0..8 {
            let task_id = format!("t{index}");
            batch.push(attempt(&task_id));
            batch.push(Write::PutTaskInstance {
                expected: Some(record(&task_id, TaskState::Running).version()),
                record: record(&task_id, TaskState::Success),
            });
        }
        // Two expansions of five instances each, with their placeholders.
        for task_id in ["m1", "m2"] {
            batch.push(Write::PutTaskInstance {
                expected: Some(record(task_id, TaskState::None).version()),
                record: record(task_id, TaskState::Removed),
            });
            for map_index in 0..5 {
                batch.push(Write::PutTaskInstance {
                    expected: None,
                    record: instance(task_id, map_index, TaskState::None),
                });
            }
        }
        batch.push(Write::UpdateRun {
            key: RunKey {
                dag_id: "d".into(),
                run_id: "r".into(),
            },
            expected: DagRunState::Running,
            state: DagRunState::Success,
            started_at: None,
            ended_at: None,
        });
        let total = batch.len();
        let pieces = cut_oversized(batch, 10);
        assert!(pieces.iter().all(|piece| piece.len() <= 10));
        assert_eq!(pieces.iter().map(Vec::len).sum::<usize>(), total);
        // Expansions first, then each task's attempt with its row, in order, then the run's
        // row; no piece ends inside one of these units.
        let flat: Vec<Write> = pieces.iter().flatten().cloned().collect();
        assert_eq!(task_ids(&flat[..6]), ["m1"; 6]);
        assert_eq!(task_ids(&flat[6..12]), ["m2"; 6]);
        for (index, pair) in flat[12..total - 1].chunks(2).enumerate() {
            match pair {
                [Write::PutAttempt(attempt), Write::PutTaskInstance { record, .. }] => {
                    assert_eq!(attempt.attempt.key, record.key);
                    assert_eq!(*record.key.task_id, format!("t{index}"));
                }
                other => panic!("an attempt apart from its row: {other:?}"),
            }
        }
        assert!(matches!(flat[total - 1], Write::UpdateRun { .. }));
        let unit_ends: Vec<usize> = [6, 12]
            .into_iter()
            .chain((1..=8).map(|task| 12 + 2 * task))
            .chain([total])
            .collect();
        let mut end = 0;
        for piece in &pieces {
            end += piece.len();
            assert!(
                unit_ends.contains(&end),
                "a piece ends inside a unit at {end}"
            );
        }
    }

    #[test]
    fn narrow_answering_ending_or_killing_decisions_stay_whole() {
        let (mut batch, own_from, mut decision) = wide(DISPATCH_SPLIT_MIN, 0);
        assert!(split_wide_dispatch(&mut batch, own_from, &mut decision, |_| false).is_empty());
        assert_eq!(batch.len(), DISPATCH_SPLIT_MIN);

        let (mut batch, own_from, mut decision) = wide(200, 0);
        decision.finished = Some(DagRunState::Failed);
        assert!(split_wide_dispatch(&mut batch, own_from, &mut decision, |_| false).is_empty());

        let (mut batch, own_from, mut decision) = wide(200, 0);
        decision.effects.push(RunEffect::Kill {
            attempt: AttemptId::new(TaskInstanceKey::new("d", "r", "other", -1), 1, 1),
        });
        assert!(split_wide_dispatch(&mut batch, own_from, &mut decision, |_| false).is_empty());
        assert_eq!(batch.len(), 200);
        assert_eq!(decision.effects.len(), 201);
    }
}

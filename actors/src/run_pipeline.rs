//! A run's commit pipeline: what the DagRun actor does between the core's decisions and the
//! store, as plain code. No tokio, no ractor, no clock: the driver passes `now`, commits the
//! batches the pipeline hands it, arms the timers it asks for and performs the effects it
//! returns once they are durable. The DagRun actor (`dag_run_actor.rs`) drives it with the store
//! and `send_after`; the deterministic simulator (`weft-simulations`) drives the same code with
//! its faulty store and simulated time.
//!
//! What it does, decision by decision:
//! - feeds the input to the core `DagRun` and turns the `Persist*` effects into store writes,
//!   coalesced with those of the decisions not committed yet: one batch writes each task
//!   instance (and the run) once, from the first guard to the last record;
//! - includes the writes that come with an input (an attempt's row, log and result) only when
//!   the core accepted the report (`RunDecision::accepted`), and always for other inputs;
//! - defers the rows of task instances created waiting (`DEFERRED_ROWS_DELAY`);
//! - holds back decisions nothing waits on for a shared commit (`COMMIT_DELAY`);
//! - cuts the opening of a wide fan-out in chunks (`DISPATCH_SPLIT_MIN`) and a batch over the
//!   store's limit in pieces (`RUN_BATCH_WRITES_MAX`);
//! - keeps each decision's events and effects (`Decided`) until its writes are durable.
//!
//! The driver's loop: after `decide`, `committed`, `flush_due` or `deferred_rows_due`, call
//! `next_step` until it returns `Commit`, `Wait` or `Idle`: `Commit` is a batch to write (one
//! at a time; `committed` once the store acknowledged it), `Perform` decisions whose writes are
//! durable (nothing to write), `Wait` decisions held back for a shared commit.

use crate::events::Event;
use foldhash::{HashMap, HashMapExt};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use weft_core::dag_run::{DagRun, RunContext, RunEffect, RunInput, TaskInstanceRecord};
use weft_core::ids::{Name, RunKey, TaskInstanceKey};
use weft_core::state::{DagRunState, TaskState};
use weft_core::Timestamp;
use weft_storage::Write;

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
pub const COMMIT_SIBLINGS_MIN: usize = 16;
pub const COMMIT_DELAY: Duration = Duration::from_millis(10);
pub const COMMIT_BATCH_DECISIONS: usize = 256;

/// A decision that dispatches more than `DISPATCH_SPLIT_MIN` attempts (a fan-out opening) is
/// committed in chunks: its own writes with the first `DISPATCH_CHUNK_FIRST` dispatches, then
/// the rest in chunks of twice the size each time. Each chunk's attempts start once the chunk is
/// durable, so the first ones run while the writer is still writing the others' rows instead of
/// waiting for every row (a 1,000-wide opening took 7 ms to commit in one piece). Each chunk is a
/// consistent state: a prefix of the decision's dispatches, which recovery resumes as it would a
/// run whose other tasks were not queued yet.
pub const DISPATCH_SPLIT_MIN: usize = 64;
pub const DISPATCH_CHUNK_FIRST: usize = 32;

/// A task instance created waiting (state `none`: a run's start creates one for every task)
/// is not written with the decision that creates it. Its row is written by the first later
/// decision that moves it (then as the row's creation, with the new state), or after
/// `DEFERRED_ROWS_DELAY`, or with a decision that ends the run or answers a change, whichever
/// comes first. In a fan-out, the start's commit then holds the run and its first task only,
/// and each of the 1,000 rows is written once, queued, instead of created and then rewritten.
/// Nothing depends on a waiting row being durable: it is a task that has not run, which is
/// what a run rebuilt from the store makes of a task without a row, and readers of a run
/// show a task without a row as not started, as they do before the run's start is written.
pub const DEFERRED_ROWS_DELAY: Duration = COMMIT_DELAY;

/// The most writes the pipeline hands the store in one batch: a batch over it is cut (see
/// `cut_oversized`) into batches committed in order. Whatever a run decides in one go, even
/// with many decisions waiting for one commit (a store outage), is then within the store's
/// `BATCH_WRITES_MAX`.
pub const RUN_BATCH_WRITES_MAX: usize = weft_storage::BATCH_WRITES_MAX;

/// The largest unit `cut_oversized` keeps whole (a mapped task's expansion, with its
/// placeholder) is far below a batch: every cut makes progress.
const _: () = assert!(weft_core::limits::MAP_INDEX_MAX + 1 < RUN_BATCH_WRITES_MAX / 2);

/// One run's core state machine and its commit pipeline. `R` is the handle that answers a
/// change by hand (clear, mark) once it is durable: the actor's `RpcReplyPort`, or whatever
/// another driver uses.
pub struct RunPipeline<R> {
    run: DagRun,
    key: RunKey,
    /// The run's state as the store holds it once everything handed over is durable: the guard
    /// of the run's next `UpdateRun`.
    stored_state: DagRunState,
    /// Whether the store may hold task results of this run: set by the first result the
    /// pipeline writes, and from the start for a recovered run. While it is clear, dispatches
    /// may skip reading results that cannot exist.
    results_stored: bool,
    /// Writes of decisions made but not yet handed to the store. Decisions made while a batch
    /// is being committed wait here and go together in the next batch.
    unflushed: Vec<Write>,
    /// Index in `unflushed` of the write of each task instance and of the run, so that one
    /// batch moves each row once (from the first guard to the last record).
    unflushed_rows: HashMap<Option<TaskInstanceKey>, usize>,
    /// What to do, decision by decision, once `unflushed` is durable.
    undone: Vec<Decided<R>>,
    /// What to do once the batch being committed is durable; `None` when none is.
    committing: Option<Vec<Decided<R>>>,
    /// Batches to commit before `unflushed`, oldest first, each with what to do once it is
    /// durable: a wide decision cut in chunks, and the decisions before it (see
    /// `DISPATCH_SPLIT_MIN`), or the pieces of an oversized batch.
    sealed: VecDeque<(Vec<Write>, Vec<Decided<R>>)>,
    /// A flush timer is armed: decisions are being held back for a shared commit.
    flush_due_armed: bool,
    /// The driver's loop passed the hold-back check (or the flush timer fired): `next_step` hands
    /// over what waits without holding it back, until it hands a batch or has nothing left.
    flushing: bool,
    /// Task instances created waiting whose rows are not written yet (see
    /// `DEFERRED_ROWS_DELAY`): none of them is in `unflushed`, `sealed` or being committed.
    deferred_rows: BTreeMap<TaskInstanceKey, TaskInstanceRecord>,
    /// A deferred-rows timer is armed.
    deferred_rows_due_armed: bool,
}

/// The effects of one decision that wait for its writes to be durable (write-ahead).
#[derive(Debug)]
pub struct Decided<R> {
    /// Published once durable, in order.
    pub events: Vec<Event>,
    /// The core's effects, in order (the `Persist*` ones are written already; the driver
    /// performs the others, and any it does not know of, in order).
    pub effects: Vec<RunEffect>,
    /// The decision ended the run in this state.
    pub finished: Option<DagRunState>,
    /// The change this decision applied, to answer once durable.
    pub reply: Option<R>,
}

/// Timers a decision asks the driver to arm (each once: the pipeline remembers it is armed
/// until the driver reports it due).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wants {
    /// The core accepted the report the input carried (`RunDecision::accepted`).
    pub accepted: bool,
    /// Call `deferred_rows_due` after this long.
    pub deferred_rows_after: Option<Duration>,
}

/// What the driver does next (see `RunPipeline::next_step`).
#[derive(Debug)]
pub enum Next<R> {
    /// Write this batch; call `committed` once the store acknowledged it. No other batch is
    /// handed over meanwhile.
    Commit(Vec<Write>),
    /// These decisions are durable (they wrote nothing, or their batch was): perform them in
    /// order, then call `next_step` again.
    Perform(Vec<Decided<R>>),
    /// Decisions are held back for a shared commit; call `flush_due` after `arm_flush` when it
    /// is given (when it is not, a flush timer is armed already).
    Wait { arm_flush: Option<Duration> },
    /// Nothing to do until a decision is made or the batch in flight is acknowledged.
    Idle,
}

impl<R> RunPipeline<R> {
    /// A pipeline around `run`, whose stored state is `stored_state`; `results_stored` when
    /// the store may hold results of the run already (a recovered run).
    pub fn new(run: DagRun, stored_state: DagRunState, results_stored: bool) -> RunPipeline<R> {
        let key = RunKey {
            dag_id: run.context().dag.dag_name().clone(),
            run_id: run.context().run_id.clone(),
        };
        RunPipeline {
            run,
            key,
            stored_state,
            results_stored,
            unflushed: Vec::new(),
            unflushed_rows: HashMap::new(),
            undone: Vec::new(),
            committing: None,
            sealed: VecDeque::new(),
            flush_due_armed: false,
            flushing: false,
            deferred_rows: BTreeMap::new(),
            deferred_rows_due_armed: false,
        }
    }

    /// The core state machine (as decided, durable or not).
    pub fn run(&self) -> &DagRun {
        &self.run
    }

    pub fn key(&self) -> &RunKey {
        &self.key
    }

    pub fn state(&self) -> DagRunState {
        self.run.state()
    }

    pub fn task_instances(&self) -> impl Iterator<Item = &TaskInstanceRecord> {
        self.run.task_instances()
    }

    pub fn shared_context(&self) -> &std::sync::Arc<RunContext> {
        self.run.shared_context()
    }

    pub fn awaits_start(&self, attempt: &weft_core::ids::AttemptId) -> bool {
        self.run.awaits_start(attempt)
    }

    pub fn active_instances(&self) -> usize {
        self.run.active_instances()
    }

    /// Whether the store may hold task results of this run.
    pub fn results_stored(&self) -> bool {
        self.results_stored
    }

    /// A decision ended the run (it may not be durable yet): no other is taken. A run's core
    /// starts unfinished, so its state is finished only once one of its decisions ended it.
    pub fn ending(&self) -> bool {
        self.run.state().is_finished()
    }

    /// Whether a batch is being committed.
    pub fn committing(&self) -> bool {
        self.committing.is_some()
    }

    /// Feeds one input to the core (after `prelude`, an earlier input at its own time, if any)
    /// and gathers its writes, with `extra` (the writes that come with the input), into the
    /// next batch: `extra` is included for an attempt's end only when the core accepted the
    /// report, for any other input always. A decision with no effect and no `reply` leaves its
    /// writes for the next one. Once the run's end is decided nothing more is (a change is to
    /// be handed back by the driver instead: see `ending`). Then drive `next_step`.
    pub fn decide(
        &mut self,
        now: Timestamp,
        prelude: Option<(Timestamp, RunInput)>,
        input: RunInput,
        extra: Vec<Write>,
        reply: Option<R>,
    ) -> Wants {
        let mut wants = Wants::default();
        if self.ending() {
            // The run's end is decided: it stands, and whatever comes before it is durable
            // finds the run over.
            debug_assert!(reply.is_none());
            return wants;
        }
        let mut effects = match prelude {
            Some((at, prelude)) => self.run.handle(at.min(now), prelude),
            None => Vec::new(),
        };
        let finishes_attempt = matches!(input, RunInput::AttemptFinished { .. });
        let decided = self.run.handle_input(now, input);
        wants.accepted = decided.accepted.is_some();
        // Writes of this decision join those of earlier decisions not yet committed.
        let mut batch = std::mem::take(&mut self.unflushed);
        // The attempt's own records go in the same batch as the decision, and only if the run
        // accepts the result (current try and token): a fenced-out result leaves no trace.
        if !finishes_attempt || wants.accepted {
            batch.extend(extra);
        }
        effects.extend(decided.effects);
        if effects.is_empty() && reply.is_none() {
            self.unflushed = batch;
            return wants;
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
            wants.deferred_rows_after = Some(DEFERRED_ROWS_DELAY);
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
        self.flushing = false;
        wants
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

    /// The deferred-rows timer fired (see `DEFERRED_ROWS_DELAY`): the deferred rows go with
    /// the next batch. Then drive `next_step`.
    pub fn deferred_rows_due(&mut self, now: Timestamp) {
        self.deferred_rows_due_armed = false;
        if self.deferred_rows.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.unflushed);
        let mut events = Vec::new();
        self.take_deferred_rows(&mut batch, &mut events, now);
        self.unflushed = batch;
        self.undone.push(Decided {
            events,
            effects: Vec::new(),
            finished: None,
            reply: None,
        });
        self.flushing = false;
    }

    /// The flush timer fired (see `COMMIT_DELAY`): what was held back goes now. Then drive
    /// `next_step`.
    pub fn flush_due(&mut self) {
        self.flush_due_armed = false;
        self.flushing = true;
    }

    /// The batch handed over last is durable: returns the decisions it held, to perform in
    /// order (stop at the one that finished the run). Then drive `next_step`.
    pub fn committed(&mut self) -> Vec<Decided<R>> {
        self.flushing = false;
        self.committing.take().unwrap_or_default()
    }

    /// The next step of the driver's loop. Hands the writes of every decision made so far to
    /// the store as one batch, unless a batch is being committed already (then they go once it
    /// is: decisions made meanwhile share the next commit instead of waiting one commit each),
    /// or they may wait for a shared commit (see `COMMIT_DELAY`). Sealed batches (chunks of a
    /// wide opening, pieces of an oversized batch) go first, in order.
    pub fn next_step(&mut self) -> Next<R> {
        if self.committing.is_some() {
            self.flushing = false;
            return Next::Idle;
        }
        if !self.flushing
            && self.sealed.is_empty()
            && !self.undone.is_empty()
            && self.may_hold_back()
        {
            let arm_flush = (!self.flush_due_armed).then_some(COMMIT_DELAY);
            self.flush_due_armed = true;
            return Next::Wait { arm_flush };
        }
        let (batch, decided) = match self.sealed.pop_front() {
            Some(sealed) => sealed,
            None if !self.undone.is_empty() => {
                self.unflushed_rows.clear();
                (
                    std::mem::take(&mut self.unflushed),
                    std::mem::take(&mut self.undone),
                )
            }
            None => {
                self.flushing = false;
                return Next::Idle;
            }
        };
        if batch.is_empty() {
            // Performed at once; what follows is not held back.
            self.flushing = true;
            return Next::Perform(decided);
        }
        let (batch, decided) = if batch.len() > RUN_BATCH_WRITES_MAX {
            // Committed in order; what was decided waits for the last piece.
            let mut pieces = cut_oversized(batch, RUN_BATCH_WRITES_MAX).into_iter();
            let first = pieces.next().unwrap_or_default();
            let mut rest: Vec<(Vec<Write>, Vec<Decided<R>>)> =
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
        self.flushing = false;
        Next::Commit(batch)
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
}

/// Cuts a wide decision (see `DISPATCH_SPLIT_MIN`): its dispatches after the first
/// `DISPATCH_CHUNK_FIRST` move, with their rows' writes and events, into chunks to commit after
/// `batch`, each twice the size of the one before. Only rows this decision writes first (at
/// `own_from` or later in `batch`) move; a row that an earlier decision of the batch writes too
/// stays, and so does a row `stays` picks (an instance an expansion creates: the expansion is
/// committed whole, see `cut_oversized`). A decision that answers someone, ends the run or
/// kills is not cut. Returns the chunks in commit order; none when the decision stays whole.
fn split_wide_dispatch<R>(
    batch: &mut Vec<Write>,
    own_from: usize,
    decision: &mut Decided<R>,
    stays: impl Fn(&TaskInstanceKey) -> bool,
) -> Vec<(Vec<Write>, Vec<Decided<R>>)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::sync::Arc;
    use weft_core::dag::Dag;
    use weft_core::dag_run::{AttemptOutcome, DispatchRequest};
    use weft_core::ids::AttemptId;
    use weft_core::spec::{DagSpec, TaskKind, TaskSpec};
    use weft_core::state::RunType;
    use weft_storage::AttemptRow;

    fn at(ms: i64) -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
            + chrono::TimeDelta::milliseconds(ms)
    }

    fn shell(task_id: &str, upstream: &[&str]) -> TaskSpec {
        let kind = TaskKind::Shell {
            command: "true".to_string(),
            env: Default::default(),
            append_env: false,
            cwd: None,
            skip_exit_code: None,
            templated: false,
        };
        let mut task = TaskSpec::new(task_id, kind);
        task.upstream = upstream.iter().map(|up| up.to_string()).collect();
        task
    }

    /// A fresh run of a DAG of shell tasks.
    fn pipeline(tasks: Vec<TaskSpec>) -> RunPipeline<u32> {
        let dag = Dag::from_spec(DagSpec::new("d", tasks)).expect("a valid DAG");
        let context = RunContext {
            dag: Arc::new(dag),
            run_id: "r".into(),
            run_type: RunType::Manual,
            logical_date: at(0),
            data_interval: weft_core::timetable::DataInterval::exact(at(0)),
            conf: serde_json::Value::Null,
            seed: 1,
            past: BTreeMap::new(),
        };
        RunPipeline::new(DagRun::new(context), DagRunState::Running, false)
    }

    /// What one turn of the driver's loop did.
    #[derive(Debug, Default)]
    struct Turn {
        batches: Vec<Vec<Write>>,
        dispatched: Vec<AttemptId>,
        answered: Vec<u32>,
        waits: bool,
        arm_flush: bool,
    }

    /// Drives `next_step` as a driver does, with a store that acknowledges every batch at once.
    fn drive(pipeline: &mut RunPipeline<u32>) -> Turn {
        let mut turn = Turn::default();
        loop {
            let decided = match pipeline.next_step() {
                Next::Commit(batch) => {
                    turn.batches.push(batch);
                    pipeline.committed()
                }
                Next::Perform(decided) => decided,
                Next::Wait { arm_flush } => {
                    turn.waits = true;
                    turn.arm_flush = arm_flush == Some(COMMIT_DELAY);
                    return turn;
                }
                Next::Idle => return turn,
            };
            for decision in decided {
                for effect in decision.effects {
                    if let RunEffect::Dispatch(request) = effect {
                        turn.dispatched.push(request.attempt);
                    }
                }
                turn.answered.extend(decision.reply);
            }
        }
    }

    fn success() -> AttemptOutcome {
        AttemptOutcome::Success {
            branch: None,
            proceed: None,
            output_len: None,
        }
    }

    fn attempt_row(attempt: &AttemptId) -> Write {
        Write::PutAttempt(AttemptRow {
            attempt: attempt.clone(),
            state: TaskState::Success,
            started_at: at(0),
            ended_at: Some(at(0)),
            worker: "local".to_string(),
            note: None,
        })
    }

    /// Reports the attempt's start, then its success with its attempt row.
    fn run_attempt(pipeline: &mut RunPipeline<u32>, attempt: &AttemptId, now: i64) -> Turn {
        let started = RunInput::AttemptStarted {
            attempt: attempt.clone(),
        };
        pipeline.decide(at(now), None, started, Vec::new(), None);
        let mut turn = drive(pipeline);
        let finished = RunInput::AttemptFinished {
            attempt: attempt.clone(),
            outcome: success(),
        };
        let extra = vec![attempt_row(attempt)];
        pipeline.decide(at(now + 1), None, finished, extra, None);
        let second = drive(pipeline);
        turn.batches.extend(second.batches);
        turn.dispatched.extend(second.dispatched);
        turn
    }

    fn rows(batch: &[Write]) -> Vec<(String, Option<TaskState>, TaskState)> {
        batch
            .iter()
            .filter_map(|write| match write {
                Write::PutTaskInstance { expected, record } => Some((
                    record.key.task_id.to_string(),
                    expected.map(|version| version.state),
                    record.state,
                )),
                _ => None,
            })
            .collect()
    }

    fn attempts(batch: &[Write]) -> usize {
        batch
            .iter()
            .filter(|write| matches!(write, Write::PutAttempt(_)))
            .count()
    }

    /// The pipeline stays plain code that any driver (the actor, the simulator) can run.
    #[test]
    fn the_pipeline_names_no_runtime_and_reads_no_clock() {
        let source = include_str!("run_pipeline.rs");
        let production = &source[..source.find("#[cfg(test)]").expect("tests below")];
        let forbidden = [
            "tokio",
            "ractor",
            "Shared",
            "shared::",
            "Utc::now",
            "Instant",
            "SystemTime",
        ];
        for (number, line) in production.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for word in forbidden {
                assert!(!line.contains(word), "line {}: {word}", number + 1);
            }
        }
    }

    #[test]
    fn a_chain_commits_each_decision_at_once() {
        let mut pipeline = pipeline(vec![shell("a", &[]), shell("b", &["a"])]);
        let wants = pipeline.decide(at(0), None, RunInput::Start, Vec::new(), None);
        // `b` is created waiting: its row is deferred.
        assert_eq!(wants.deferred_rows_after, Some(DEFERRED_ROWS_DELAY));
        let turn = drive(&mut pipeline);
        assert_eq!(turn.batches.len(), 1);
        assert_eq!(
            rows(&turn.batches[0]),
            [("a".into(), None, TaskState::Queued)]
        );
        let [a] = turn.dispatched.as_slice() else {
            panic!("a is dispatched: {turn:?}")
        };
        let turn = run_attempt(&mut pipeline, a, 10);
        // The start and the end commit one batch each, at once; `b`'s row is created queued.
        assert_eq!(turn.batches.len(), 2);
        assert_eq!(
            rows(&turn.batches[0]),
            [("a".into(), Some(TaskState::Queued), TaskState::Running)]
        );
        assert_eq!(attempts(&turn.batches[1]), 1);
        assert_eq!(
            rows(&turn.batches[1]),
            [
                ("a".into(), Some(TaskState::Running), TaskState::Success),
                ("b".into(), None, TaskState::Queued)
            ]
        );
        assert_eq!(turn.dispatched.len(), 1);
        // The deferred-rows timer finds nothing left to write.
        pipeline.deferred_rows_due(at(20));
        assert!(drive(&mut pipeline).batches.is_empty());
    }

    /// `root` then `width` tasks below it, all started.
    fn fan_out(width: usize) -> (RunPipeline<u32>, Vec<AttemptId>) {
        let mut tasks = vec![shell("root", &[])];
        tasks.extend((0..width).map(|index| shell(&format!("t{index:02}"), &["root"])));
        let mut pipeline = pipeline(tasks);
        pipeline.decide(at(0), None, RunInput::Start, Vec::new(), None);
        let root = drive(&mut pipeline).dispatched.remove(0);
        let turn = run_attempt(&mut pipeline, &root, 10);
        assert_eq!(turn.dispatched.len(), width);
        for (index, attempt) in turn.dispatched.iter().enumerate() {
            let input = RunInput::AttemptStarted {
                attempt: attempt.clone(),
            };
            pipeline.decide(at(20), None, input, Vec::new(), None);
            let turn = drive(&mut pipeline);
            assert!(turn.batches.is_empty() && turn.waits);
            assert_eq!(turn.arm_flush, index == 0, "the flush timer is armed once");
        }
        pipeline.flush_due();
        let turn = drive(&mut pipeline);
        assert_eq!(turn.batches.len(), 1);
        assert_eq!(rows(&turn.batches[0]).len(), width);
        let running = running_attempts(&pipeline);
        assert_eq!(running.len(), width);
        (pipeline, running)
    }

    /// The current attempt of every running task instance.
    fn running_attempts(pipeline: &RunPipeline<u32>) -> Vec<AttemptId> {
        pipeline
            .task_instances()
            .filter(|record| record.state == TaskState::Running)
            .map(|record| AttemptId::new(record.key.clone(), record.try_number, record.token))
            .collect()
    }

    #[test]
    fn a_wide_fan_out_holds_back_ends_and_commits_them_together() {
        let (mut pipeline, running) = fan_out(COMMIT_SIBLINGS_MIN + 4);
        for attempt in &running[..3] {
            let input = RunInput::AttemptFinished {
                attempt: attempt.clone(),
                outcome: success(),
            };
            pipeline.decide(at(30), None, input, vec![attempt_row(attempt)], None);
            let turn = drive(&mut pipeline);
            assert!(turn.batches.is_empty() && turn.waits);
        }
        pipeline.flush_due();
        let turn = drive(&mut pipeline);
        let [batch] = turn.batches.as_slice() else {
            panic!("one shared commit: {turn:?}")
        };
        assert_eq!(attempts(batch), 3);
        assert_eq!(rows(batch).len(), 3);
        assert!(rows(batch)
            .iter()
            .all(|(_, from, to)| *from == Some(TaskState::Running) && *to == TaskState::Success));
    }

    #[test]
    fn an_answer_to_a_change_is_never_held_back() {
        let (mut pipeline, running) = fan_out(COMMIT_SIBLINGS_MIN + 4);
        let input = RunInput::AttemptFinished {
            attempt: running[0].clone(),
            outcome: success(),
        };
        pipeline.decide(at(30), None, input, vec![attempt_row(&running[0])], None);
        assert!(drive(&mut pipeline).waits);
        let mark = RunInput::MarkState {
            task_id: running[1].key.task_id.to_string(),
            map_index: -1,
            state: TaskState::Success,
        };
        pipeline.decide(at(31), None, mark, Vec::new(), Some(7));
        let turn = drive(&mut pipeline);
        // The end held back goes with the change, answered once both are durable.
        let [batch] = turn.batches.as_slice() else {
            panic!("the change commits at once: {turn:?}")
        };
        assert_eq!(attempts(batch), 1);
        assert_eq!(turn.answered, [7]);
        assert!(!turn.waits);
    }

    #[test]
    fn a_rejected_attempt_report_writes_no_attempt_row() {
        let mut pipeline = pipeline(vec![shell("a", &[]), shell("b", &["a"])]);
        pipeline.decide(at(0), None, RunInput::Start, Vec::new(), None);
        let a = drive(&mut pipeline).dispatched.remove(0);
        // A report of another token (a fenced-out attempt) is not accepted: nothing written.
        let stale = AttemptId::new(a.key.clone(), a.try_number, a.token + 1);
        let input = RunInput::AttemptFinished {
            attempt: stale.clone(),
            outcome: success(),
        };
        let wants = pipeline.decide(at(5), None, input, vec![attempt_row(&stale)], None);
        assert!(!wants.accepted);
        assert!(drive(&mut pipeline).batches.is_empty());
        // The current attempt's report is, with its row, in the next batch.
        let input = RunInput::AttemptFinished {
            attempt: a.clone(),
            outcome: success(),
        };
        let wants = pipeline.decide(at(6), None, input, vec![attempt_row(&a)], None);
        assert!(wants.accepted);
        let turn = drive(&mut pipeline);
        let [batch] = turn.batches.as_slice() else {
            panic!("one batch: {turn:?}")
        };
        let rows_of_attempts: Vec<&AttemptId> = batch
            .iter()
            .filter_map(|write| match write {
                Write::PutAttempt(row) => Some(&row.attempt),
                _ => None,
            })
            .collect();
        assert_eq!(rows_of_attempts, [&a]);
    }

    #[test]
    fn decisions_made_while_a_batch_is_in_flight_share_the_next_one() {
        let mut pipeline = pipeline(vec![shell("a", &[]), shell("b", &["a"])]);
        pipeline.decide(at(0), None, RunInput::Start, Vec::new(), None);
        let Next::Commit(_) = pipeline.next_step() else {
            panic!("the start commits")
        };
        let effects = pipeline.committed().remove(0).effects;
        let Some(a) = effects.into_iter().find_map(|effect| match effect {
            RunEffect::Dispatch(request) => Some(request.attempt),
            _ => None,
        }) else {
            panic!("a is dispatched")
        };
        assert!(matches!(pipeline.next_step(), Next::Idle));
        let started = RunInput::AttemptStarted { attempt: a.clone() };
        pipeline.decide(at(1), None, started, Vec::new(), None);
        let Next::Commit(first) = pipeline.next_step() else {
            panic!("the start commits")
        };
        assert_eq!(rows(&first).len(), 1);
        // In flight: the end waits, then goes alone; `a`'s row is written once per batch.
        let finished = RunInput::AttemptFinished {
            attempt: a.clone(),
            outcome: success(),
        };
        pipeline.decide(at(2), None, finished, vec![attempt_row(&a)], None);
        assert!(matches!(pipeline.next_step(), Next::Idle));
        assert_eq!(pipeline.committed().len(), 1);
        let Next::Commit(second) = pipeline.next_step() else {
            panic!("the end commits once the start is durable")
        };
        assert_eq!(
            rows(&second),
            [
                ("a".into(), Some(TaskState::Running), TaskState::Success),
                ("b".into(), None, TaskState::Queued)
            ]
        );
    }

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
            at: at(0),
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
    fn wide(width: usize, shared: usize) -> (Vec<Write>, usize, Decided<()>) {
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
                started_at: at(0),
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

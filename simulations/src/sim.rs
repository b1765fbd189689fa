//! The world of one seed: a single-threaded event loop over simulated time that drives the
//! real core state machines (`Scheduler`, one `DagRun` per active run, `Dispatcher`), with a
//! faulty store, a lossy network, simulated workers (the node's own slots and remote worker
//! slots), node crashes and clock jumps.
//!
//! Each run is driven through the DagRun actor's own commit pipeline
//! (`weft_actors::run_pipeline::RunPipeline`: writes coalesced per batch, group commit, a wide
//! opening in chunks, deferred waiting rows, oversized batches cut, attempt rows only with an
//! accepted result, effects performed only once durable). The simulator is its driver, as the
//! actor is: it commits each batch the pipeline hands over through the faulty store, answering
//! after the store latency it draws (`Event::Committed`), so decisions made meanwhile share the
//! next batch; the pipeline's timers are events; durable effects become messages and timers.
//! What a batch applied is recorded from its writes (also when applied without
//! acknowledgement). The rest of the glue mirrors the actors (`scheduler_actor.rs`,
//! `dispatcher_actor.rs`, `worker_slot.rs`, and the run actor's handling of reports and
//! failures). Not mirrored: a run driver whose write fails is rebuilt from the store where the
//! actor tries the write again until the store answers, and a run's creation and start are
//! two batches.
//!
//! What heals a dropped message (there is no retransmission, as in the actors):
//! - a lost `AttemptStarted`/`AttemptFinished`/`Enqueue`: the run's execution timeout when the
//!   task has one, otherwise recovery from the store at the next restart (queued instances are
//!   dispatched again with a new token, running ones count as a lost try);
//! - a lost `Release`: the slot stays taken until the next restart rebuilds the dispatcher;
//! - a lost `RunFinished`: the scheduler counts the run against `max_active_runs` until the
//!   next restart, which reads run states from the store;
//! - a dead worker: its supervisor reports the attempt lost and frees the slot (as the
//!   dispatcher actor does);
//! - a lost `Kill`: the dispatcher stops an attempt once a newer attempt of the same task
//!   instance is enqueued (`DispatchEffect::Stop`);
//! - a lost `Assign` to a remote slot: the slot stays taken and the attempt queued until its
//!   session ends or the next restart (the slot's `assigned_seq` never reaches the lost seq,
//!   so its heartbeat cannot tell the node);
//! - a lost poll reply: the node polls the slot again, and the reply's reports come again.
//!
//! Remote worker slots (`sim/remote.rs`): a seed has 0 to 3 workers in other processes, 1 to
//! 4 slots each, some serving only the `remote` queue that some tasks name (the node's own
//! worker serves every queue, and placement prefers the remote ones). Each connection is a
//! session, numbered anew at every join; the node sends `WorkerJoined` and holds the session,
//! and a worker that joins again while the node holds its old session has the old one left
//! first. The node sends a slot `Assign { seq, attempt }` and `Kill { attempt }`; the slot
//! answers the node's one outstanding `Poll { ack }` with its reports (`Started`, `Finished`),
//! kept until acknowledged, at once when it holds any, else after the heartbeat (1 s). The
//! node processes a reply's reports in order, skips report seqs already processed, accepts a
//! report only for the attempt it placed on that slot in that session (others are counted as
//! refused), releases an attempt that the slot has seen assigned but does not run, and
//! re-joins a worker whose heartbeat says `draining` with no slots. A session falls silent
//! when its link is cut, its worker dies or pauses, or the node crashes: the node treats it
//! as left once it has heard nothing for the idle timeout (5 s): `WorkerLeft`, its attempts
//! reported lost and released; the worker stops its attempts once it has heard no poll for
//! its lease (3 s), drops its unacknowledged reports and connects again under a new session.
//! A paused worker's attempts do not progress; on resuming it finds its lease expired or not.
//! A draining worker refuses new `Assign`s (reported lost), and leaves once idle. Heartbeats
//! that carry no report are not simulated while a session is healthy (they change nothing);
//! when it falls silent, the times of the last poll the worker heard and of the last reply
//! the node heard are drawn as the steady exchange would leave them. The link drops
//! `Assign`s, `Kill`s and replies (the node polls again after 2 s), duplicates and reorders
//! the messages of a session; a cut loses what is in flight, and a late copy of a reply may
//! arrive after its session is gone. In seeds with remote workers a crashed node stays down
//! longer than the lease (`NODE_DOWNTIME_MS_MIN`), as a real node accepting workers waits its
//! idle timeout before it recovers runs (`runtime/src/commands.rs`): a node back sooner would
//! place retries beside the old node's orphans (seeds 37, 43, 112 without the wait).
//!
//! When faults stop, the node restarts once if anything was dropped or abandoned (a batch
//! applied with its acknowledgement lost abandons its decisions' effects), and the loop runs
//! on without faults until nothing is left to do: that is what `liveness` judges.

mod remote;

use crate::faults::{FaultRates, FaultyStore, WriteOutcome};
use crate::history::{FinalStore, History, Record};
use crate::network::Message;
use crate::rng::SimRng;
use crate::workload::{after_ms, Operation, Workload};
use futures::executor::block_on;
use remote::{NodeSession, RemoteEvent, RemotePlace, RemoteWorker};
pub use remote::{HEARTBEAT_MS, IDLE_TIMEOUT_MS, LEASE_MS, REMOTE_QUEUE};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use weft_actors::run_pipeline::{Decided, Next, RunPipeline};
use weft_core::dag::Dag;
use weft_core::dag_run::{
    AttemptOutcome, DagRun, DispatchRequest, RunContext, RunEffect, RunInput, RunTimer,
    TaskInstanceRecord,
};
use weft_core::dispatch::{DispatchEffect, DispatchInput, Dispatcher, WorkerInfo, LOCAL_WORKER};
use weft_core::ids::{AttemptId, RunKey, TaskInstanceKey};
use weft_core::scheduler::{Scheduler, SchedulerEffect, SchedulerInput};
use weft_core::spec::{FlowControl, MappingSpec, TaskKind, TaskSpec, DEFAULT_QUEUE};
use weft_core::state::{DagRunState, TaskState};
use weft_core::Timestamp;
use weft_storage::{AttemptRow, DagVersionRow, PoolRow, RunRow, Store, Write};

/// The first and the longest wait before a failed run driver is rebuilt (as the actors' store
/// retry backoff, `weft_actors::STORE_RETRY_BACKOFF_MS_FIRST` and `_MAX`).
pub const RUN_DRIVER_BACKOFF_MS_FIRST: u64 = 10;
pub const RUN_DRIVER_BACKOFF_MS_MAX: u64 = 2_000;
/// How long the loop may run after faults stop before unfinished work counts as stuck.
pub const QUIET_MS_MAX: u64 = 30 * 24 * 60 * 60 * 1000;
/// After the quiet period every DAG is paused and the runs in flight get this long to finish
/// (a run created by the last tick before the deadline must not count as stuck; seed 3215).
pub const DRAIN_MS_MAX: u64 = 7 * 24 * 60 * 60 * 1000;
/// Events one seed may process; beyond it the seed is reported as not making progress.
pub const EVENTS_MAX: u64 = 3_000_000;
/// Node crashes, worker deaths and clock jumps per seed, at most.
pub const NODE_CRASHES_MAX: u64 = 4;
pub const WORKER_DEATHS_MAX: u64 = 6;
pub const CLOCK_JUMPS_MAX: u64 = 3;
/// A crashed node stays down at least this long when the seed has remote workers: longer
/// than their lease, so the old node's orphans have stopped when the new one places retries.
pub const NODE_DOWNTIME_MS_MIN: u64 = LEASE_MS + HEARTBEAT_MS;
/// Network latency bounds, and the detour of a delayed message.
const LATENCY_MS_MAX: u64 = 20;
const DETOUR_MS_MAX: u64 = 120_000;

/// A deliberately broken variant, to prove the checkers catch what they claim to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Canary {
    #[default]
    Off,
    /// The run glue rewrites a late result to the current (try, token) so the run accepts it,
    /// as a glue that forgot fencing would. `one_result_per_try` must catch it.
    AcceptStaleResults,
    /// Remote workers let their attempts run on when their lease expires, as a worker that
    /// ignored its lease would. `no_orphan_overlap` must catch it.
    IgnoreLease,
    /// Cells of the cells simulation go on acting for a shard after their lease keeper says
    /// `Lost` (its lease ran out, another cell took it, or it handed it over), as a cell that
    /// ignored its keeper would. `one_owner_per_epoch` must catch it.
    IgnoreCellLease,
}

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Deliver(Message),
    SchedulerWake {
        epoch: u64,
        generation: u64,
    },
    RunTimer {
        epoch: u64,
        driver: u64,
        run: RunKey,
        timer: RunTimer,
    },
    /// The store answers the batch a run driver handed it (after the store latency).
    Committed {
        epoch: u64,
        driver: u64,
        run: RunKey,
    },
    /// A run driver's pipeline timers (`RunPipeline`'s flush and deferred rows).
    FlushDue {
        epoch: u64,
        driver: u64,
        run: RunKey,
    },
    DeferredRowsDue {
        epoch: u64,
        driver: u64,
        run: RunKey,
    },
    /// `generation`: a paused attempt's earlier end no longer counts.
    AttemptDone {
        attempt: u64,
        generation: u64,
    },
    /// Remote workers: their faults, the protocol's timers, the link.
    Remote(RemoteEvent),
    ResumeRun {
        epoch: u64,
        run: RunKey,
    },
    Crash,
    Restart,
    WorkerDeath {
        worker: usize,
    },
    ClockJump {
        ms: u64,
    },
    Operate(Operation),
    FaultsEnd,
    /// The quiet period is over: pause every DAG so no new run is created, and drain.
    PauseAll,
}

#[derive(Debug)]
struct Pending {
    at: Timestamp,
    sequence: u64,
    event: Event,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Pending) -> bool {
        (self.at, self.sequence) == (other.at, other.sequence)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Pending) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    /// Earliest first; equal times in the order they were scheduled.
    fn cmp(&self, other: &Pending) -> std::cmp::Ordering {
        (self.at, self.sequence).cmp(&(other.at, other.sequence))
    }
}

/// The reply handle of a change by hand: the simulated operators neither clear nor mark.
type NoReply = std::convert::Infallible;

/// One active run: the actors' commit pipeline around the core state machine, and what its
/// driver remembers.
struct RunDriver {
    /// Distinguishes incarnations of the driver of one run: timers and commits of a dead one
    /// are ignored.
    id: u64,
    pipeline: RunPipeline<NoReply>,
    /// The batch being committed, with the starts it makes durable; the store applies it when
    /// its `Committed` event comes.
    in_flight: Option<(Vec<Write>, Vec<AttemptId>)>,
    /// Starts the run accepted whose write has not been handed to the store yet.
    starts: Vec<AttemptId>,
}

/// Everything a node holds in memory; dropped whole by a crash.
struct Node {
    scheduler: Scheduler,
    dags: BTreeMap<String, (Arc<Dag>, String)>,
    versions: BTreeMap<String, Arc<Dag>>,
    runs: BTreeMap<RunKey, RunDriver>,
    restarts: BTreeMap<RunKey, u32>,
    dispatcher: Dispatcher,
    idle_workers: Vec<usize>,
    wake_generation: u64,
    /// The node's remote sessions, by remote worker.
    remote: BTreeMap<usize, NodeSession>,
}

/// An attempt executing on a worker.
#[derive(Debug, Clone)]
struct Attempt {
    worker: usize,
    request: DispatchRequest,
    started_at: Timestamp,
    /// `None`: the attempt hangs until killed.
    ends: Option<(u64, AttemptOutcome)>,
    /// When it ends, if it does and is not paused; while paused, the time it has left.
    done_at: Option<Timestamp>,
    left_ms: Option<u64>,
    generation: u64,
    /// Set when it runs on a remote slot.
    remote: Option<RemotePlace>,
}

/// The node went down while handling an event; the caller stops what it was doing.
#[derive(Debug)]
struct NodeDown;

type Handled = Result<(), NodeDown>;

pub struct Simulation {
    canary: Canary,
    now: Timestamp,
    queue: BinaryHeap<Reverse<Pending>>,
    sequence: u64,
    store: FaultyStore,
    rates: FaultRates,
    faults_on: bool,
    /// Whether something happened that only a restart heals (a drop, an abandoned run).
    needs_heal: bool,
    fault_rng: SimRng,
    worker_rng: SimRng,
    /// Draws of the remote workers and their links (a separate stream: a seed without remote
    /// workers draws nothing from it).
    remote_rng: SimRng,
    remote: Vec<RemoteWorker>,
    next_session: u64,
    node: Option<Node>,
    epoch: u64,
    next_driver: u64,
    next_attempt: u64,
    attempts: BTreeMap<u64, Attempt>,
    workload: Workload,
    pub history: History,
    events: u64,
}

impl Simulation {
    pub fn new(seed: u64, canary: Canary) -> Simulation {
        let mut rng = SimRng::new(seed);
        let workload = crate::workload::generate(&mut rng.fork());
        let mut fault_rng = rng.fork();
        let rates = FaultRates::draw(&mut fault_rng);
        let worker_rng = rng.fork();
        let mut remote_rng = rng.fork();
        let mut workload = workload;
        let remote = remote::draw_workers(&mut remote_rng, workload.worker_slots as usize);
        if !remote.is_empty() {
            for dag in &mut workload.dags {
                for task in &mut dag.tasks {
                    if task.kind != TaskKind::Empty && remote_rng.chance(250) {
                        task.queue = Some(REMOTE_QUEUE.to_string());
                    }
                }
            }
        }
        let remote_slots: u32 = remote.iter().map(|w| w.slots).sum();
        let history = History {
            dags: workload.dags.clone(),
            pools: workload.pools.clone(),
            worker_slots: workload.worker_slots + remote_slots,
            remote_workers: remote.iter().map(|w| (w.name.clone(), w.slots)).collect(),
            ..History::default()
        };
        Simulation {
            canary,
            now: workload.start,
            queue: BinaryHeap::new(),
            sequence: 0,
            store: FaultyStore::new(),
            rates,
            faults_on: true,
            needs_heal: false,
            fault_rng,
            worker_rng,
            remote_rng,
            remote,
            next_session: 0,
            node: None,
            epoch: 0,
            next_driver: 0,
            next_attempt: 0,
            attempts: BTreeMap::new(),
            workload,
            history,
            events: 0,
        }
    }

    /// Runs the seed to the end and returns its history.
    pub fn run(mut self) -> History {
        self.register_workload();
        self.plan_faults();
        let _ = self.restart_node();
        let faults_end = after_ms(self.workload.start, self.workload.fault_window_ms);
        let deadline = after_ms(faults_end, QUIET_MS_MAX);
        self.schedule(deadline, Event::PauseAll);
        self.history.schedule_horizon = Some(deadline);
        let drain_end = after_ms(deadline, DRAIN_MS_MAX);
        while let Some(Reverse(pending)) = self.queue.pop() {
            // Past the drain only far-off ticks remain (a monthly schedule's last run is due a
            // month after its end date); liveness judges what is unfinished.
            if pending.at > drain_end {
                break;
            }
            if self.events >= EVENTS_MAX {
                self.history.budget_exhausted = true;
                break;
            }
            self.events += 1;
            self.now = self.now.max(pending.at);
            let _ = self.handle(pending.event);
        }
        self.history.end = Some(self.now);
        self.history.final_started = self.node.as_ref().map(|n| n.dispatcher.started_len());
        self.history.final_executing = self.attempts.len();
        self.history.final_store = self.final_store();
        self.history
    }

    fn schedule(&mut self, at: Timestamp, event: Event) {
        self.sequence += 1;
        let at = at.max(self.now);
        self.queue.push(Reverse(Pending {
            at,
            sequence: self.sequence,
            event,
        }));
    }

    fn record(&mut self, record: Record) {
        self.history.record(self.now, record);
    }

    // ---- setup ----

    /// The DAG processor and pool configuration, before the node starts (no faults).
    fn register_workload(&mut self) {
        let mut batch = Vec::new();
        for (name, slots) in &self.workload.pools {
            batch.push(Write::PutPool(PoolRow {
                name: name.clone(),
                slots: *slots,
                description: String::new(),
            }));
        }
        for dag in &self.workload.dags {
            batch.push(Write::PutDag {
                version: DagVersionRow {
                    dag_id: dag.dag_id.clone(),
                    version_hash: dag.version_hash(),
                    spec_json: serde_json::to_string(dag).expect("a DagSpec serializes"),
                    created_at: self.now,
                },
                fileloc: None,
                paused_if_new: false,
            });
        }
        let outcome = self
            .store
            .write(&mut self.fault_rng, &FaultRates::NONE, batch);
        assert_eq!(
            outcome,
            WriteOutcome::Acknowledged,
            "registering the workload"
        );
    }

    fn plan_faults(&mut self) {
        let start = self.workload.start;
        let window = self.workload.fault_window_ms;
        for (at, operation) in self.workload.operations.clone() {
            self.schedule(at, Event::Operate(operation));
        }
        let rng = &mut self.fault_rng;
        let mut planned = Vec::new();
        for _ in 0..rng.below(NODE_CRASHES_MAX + 1) {
            planned.push((rng.below(window), Event::Crash));
        }
        for _ in 0..rng.below(WORKER_DEATHS_MAX + 1) {
            let worker = rng.below(u64::from(self.workload.worker_slots)) as usize;
            planned.push((rng.below(window), Event::WorkerDeath { worker }));
        }
        for _ in 0..rng.below(CLOCK_JUMPS_MAX + 1) {
            let ms = rng.between(1, 3 * 60 * 60) * 1000;
            planned.push((rng.below(window), Event::ClockJump { ms }));
        }
        for (offset, event) in planned {
            self.schedule(after_ms(start, offset), event);
        }
        // The remote workers connect once the node is up, then meet their faults.
        for worker in 0..self.remote.len() {
            let offset = self.remote_rng.below(2_000);
            let event = Event::Remote(RemoteEvent::Reconnect { worker });
            self.remote[worker].reconnecting = true;
            self.schedule(after_ms(start, offset), event);
        }
        for (offset, event) in remote::draw_faults(&mut self.remote_rng, &self.remote, window) {
            self.schedule(after_ms(start, offset), Event::Remote(event));
        }
        self.schedule(after_ms(start, window), Event::FaultsEnd);
    }

    // ---- events ----

    fn handle(&mut self, event: Event) -> Handled {
        match event {
            Event::Deliver(message) => self.deliver(message),
            Event::SchedulerWake { epoch, generation } => {
                let current = self.node.as_ref().map(|node| node.wake_generation);
                if epoch == self.epoch && current == Some(generation) {
                    self.feed(SchedulerInput::Tick)?;
                }
                Ok(())
            }
            Event::RunTimer {
                epoch,
                driver,
                run,
                timer,
            } => {
                let live = self.driver_id(&run) == Some(driver) && epoch == self.epoch;
                if live {
                    self.decide(&run, RunInput::TimerFired(timer), Vec::new())?;
                }
                Ok(())
            }
            Event::Committed { epoch, driver, run } => {
                let live = self.driver_id(&run) == Some(driver) && epoch == self.epoch;
                if live {
                    self.committed(&run)?;
                }
                Ok(())
            }
            Event::FlushDue { epoch, driver, run } => {
                let live = self.driver_id(&run) == Some(driver) && epoch == self.epoch;
                if live {
                    if let Some(driver) = self.driver_mut(&run) {
                        driver.pipeline.flush_due();
                    }
                    self.drive(&run)?;
                }
                Ok(())
            }
            Event::DeferredRowsDue { epoch, driver, run } => {
                let live = self.driver_id(&run) == Some(driver) && epoch == self.epoch;
                if live {
                    let now = self.now;
                    if let Some(driver) = self.driver_mut(&run) {
                        driver.pipeline.deferred_rows_due(now);
                    }
                    self.drive(&run)?;
                }
                Ok(())
            }
            Event::AttemptDone {
                attempt,
                generation,
            } => {
                let current = self
                    .attempts
                    .get(&attempt)
                    .is_some_and(|a| a.generation == generation && a.left_ms.is_none());
                if current {
                    let done = self.attempts.remove(&attempt).expect("checked above");
                    let (_, outcome) = done.ends.clone().expect("only finishing attempts are done");
                    self.end_attempt(attempt, done, outcome, "finished");
                }
                Ok(())
            }
            Event::Remote(event) => self.remote_event(event),
            Event::ResumeRun { epoch, run } => {
                let absent = self
                    .node
                    .as_ref()
                    .is_some_and(|n| !n.runs.contains_key(&run));
                if epoch == self.epoch && absent {
                    self.resume_run(&run)?;
                }
                Ok(())
            }
            Event::Crash => {
                if self.faults_on {
                    self.crash_node();
                }
                Ok(())
            }
            Event::Restart => {
                if self.node.is_none() {
                    self.restart_node()?;
                }
                Ok(())
            }
            Event::WorkerDeath { worker } => {
                if self.faults_on {
                    self.kill_worker(worker);
                }
                Ok(())
            }
            Event::ClockJump { ms } => {
                if self.faults_on {
                    self.now = after_ms(self.now, ms);
                    self.record(Record::ClockJumped { ms });
                }
                Ok(())
            }
            Event::Operate(operation) => self.operate(operation),
            Event::PauseAll => {
                let dag_ids: Vec<String> = match self.node.as_ref() {
                    Some(node) => node.dags.keys().cloned().collect(),
                    None => Vec::new(),
                };
                self.record(Record::AllPaused);
                for dag_id in dag_ids {
                    self.feed(SchedulerInput::Paused {
                        dag_id,
                        paused: true,
                    })?;
                }
                Ok(())
            }
            Event::FaultsEnd => {
                self.faults_on = false;
                self.rates = FaultRates::NONE;
                self.history.faults_end = Some(self.now);
                if self.needs_heal && self.node.is_some() {
                    self.crash_node();
                }
                Ok(())
            }
        }
    }

    fn operate(&mut self, operation: Operation) -> Handled {
        if self.node.is_none() {
            return Ok(());
        }
        let input = match operation {
            Operation::Trigger { dag_id } => SchedulerInput::Trigger {
                dag_id,
                run_id: None,
                logical_date: None,
                conf: serde_json::Value::Null,
            },
            Operation::Backfill { dag_id, from, to } => {
                SchedulerInput::Backfill { dag_id, from, to }
            }
        };
        self.feed(input)
    }

    // ---- the network ----

    fn send(&mut self, message: Message, extra_delay_ms: u64) {
        let rng = &mut self.fault_rng;
        if rng.chance(self.rates.drop) {
            self.needs_heal = true;
            let what = message.describe();
            self.record(Record::MessageDropped { what });
            return;
        }
        let copies = if rng.chance(self.rates.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let rng = &mut self.fault_rng;
            let mut delay = extra_delay_ms + 1;
            if self.faults_on {
                delay += rng.below(LATENCY_MS_MAX);
                if rng.chance(self.rates.delay) {
                    delay += rng.below(DETOUR_MS_MAX);
                }
            }
            self.schedule(after_ms(self.now, delay), Event::Deliver(message.clone()));
        }
    }

    fn deliver(&mut self, message: Message) -> Handled {
        if self.node.is_none() {
            return Ok(());
        }
        match message {
            Message::Enqueue(request) => self.dispatch(DispatchInput::Enqueue(request)),
            Message::Cancel { key, token } => self.dispatch(DispatchInput::Cancel { key, token }),
            Message::Adopt { attempt } => {
                let runs =
                    self.attempts.values().any(|running| {
                        running.remote.is_none() && running.request.attempt == attempt
                    }) || self.holds_remote(&attempt);
                if !runs {
                    let lost = Message::AttemptFinished {
                        attempt,
                        outcome: AttemptOutcome::Lost {
                            reason: "the attempt was not found where it was handed".to_string(),
                        },
                        started_at: None,
                        worker: None,
                    };
                    self.send(lost, 0);
                }
            }
            Message::Release {
                epoch,
                worker,
                attempt,
            } => {
                if epoch == self.epoch {
                    // A duplicated release must not free the slot twice (the actors' slot
                    // messages cannot be duplicated in process; the network's can).
                    let busy = self.attempts.values().any(|a| a.worker == worker);
                    if let Some(node) = self.node.as_mut() {
                        if !busy && !node.idle_workers.contains(&worker) {
                            node.idle_workers.push(worker);
                        }
                    }
                    self.dispatch(DispatchInput::Release { attempt });
                }
            }
            Message::Kill { key, token } => self.stop_attempt(&key, token),
            Message::AttemptStarted { attempt } => {
                let run = attempt.run();
                let input = RunInput::AttemptStarted { attempt };
                return self.decide(&run, input, Vec::new());
            }
            Message::AttemptFinished {
                attempt,
                outcome,
                started_at,
                worker,
            } => {
                return self.attempt_finished(attempt, outcome, started_at, worker);
            }
            Message::RunFinished { run, state } => {
                if let Some(node) = self.node.as_mut() {
                    node.restarts.remove(&run);
                }
                let input = SchedulerInput::RunFinished {
                    dag_id: run.dag_id.to_string(),
                    run_id: run.run_id.to_string(),
                    state,
                };
                return self.feed(input);
            }
        }
        Ok(())
    }

    // ---- node crash and restart ----

    fn crash_node(&mut self) {
        if self.node.is_none() {
            return;
        }
        // Remote workers stop hearing polls; their lease runs out.
        self.node_going_down();
        self.node = None;
        self.record(Record::NodeCrashed);
        // Local workers run in the node's process (standalone): they die with it. Remote
        // workers run on until their lease expires.
        let local: Vec<u64> = self
            .attempts
            .iter()
            .filter(|(_, attempt)| attempt.remote.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in local {
            self.attempts.remove(&id);
            self.record(Record::AttemptEnded {
                attempt: id,
                how: "node crashed".to_string(),
            });
        }
        self.epoch += 1;
        let mut downtime_ms = if self.faults_on {
            self.fault_rng.between(1, 600) * 1000
        } else {
            1000
        };
        if !self.remote.is_empty() {
            // The old node's remote attempts run on until their workers' lease expires; a
            // node back sooner places their retries beside them (no_orphan_overlap and
            // limits_respected catch it), so the model keeps a node down that long.
            downtime_ms = downtime_ms.max(NODE_DOWNTIME_MS_MIN);
        }
        self.schedule(after_ms(self.now, downtime_ms), Event::Restart);
    }

    /// A fresh node rebuilt from the store, as `SchedulerState::recover` does it.
    fn restart_node(&mut self) -> Handled {
        let mut dispatcher = Dispatcher::new();
        let slots = self.workload.worker_slots;
        dispatcher.handle(DispatchInput::SetWorkerSlots { count: slots });
        for pool in block_on(self.store.inner.pools()).expect("memory store reads") {
            dispatcher.handle(DispatchInput::SetPool {
                name: pool.name,
                slots: pool.slots,
            });
        }
        self.node = Some(Node {
            scheduler: Scheduler::new(),
            dags: BTreeMap::new(),
            versions: BTreeMap::new(),
            runs: BTreeMap::new(),
            restarts: BTreeMap::new(),
            dispatcher,
            idle_workers: (0..slots as usize).rev().collect(),
            wake_generation: 0,
            remote: BTreeMap::new(),
        });
        self.needs_heal = false;
        self.record(Record::NodeRestarted);
        self.recover()
    }

    fn recover(&mut self) -> Handled {
        let store = self.store.inner.clone();
        for row in block_on(store.dags()).expect("memory store reads") {
            let version = block_on(store.dag_version(&row.dag_id, &row.latest_version))
                .expect("memory store reads")
                .expect("the latest version exists");
            let dag = self.load_version(&version);
            let node = self.node.as_mut().ok_or(NodeDown)?;
            node.dags.insert(
                row.dag_id.clone(),
                (dag.clone(), row.latest_version.clone()),
            );
            node.dispatcher.handle(DispatchInput::SetDagLimit {
                dag_id: row.dag_id.clone(),
                max_active_tasks: dag.spec().max_active_tasks,
            });
            let last_automated = block_on(store.latest_scheduled_run(&row.dag_id))
                .expect("memory store reads")
                .map(|run| run.data_interval);
            self.feed(SchedulerInput::DagUpserted {
                dag,
                paused: row.is_paused,
                last_automated,
            })?;
        }
        let active = block_on(store.runs_in_states(&[DagRunState::Queued, DagRunState::Running]))
            .expect("memory store reads");
        for run in &active {
            self.feed(SchedulerInput::RunRecovered {
                dag_id: run.key.dag_id.to_string(),
                run_id: run.key.run_id.to_string(),
                run_type: run.run_type,
                logical_date: run.logical_date,
                data_interval: run.data_interval,
                state: run.state,
            })?;
        }
        for run in active
            .iter()
            .filter(|run| run.state == DagRunState::Running)
        {
            self.resume_run(&run.key)?;
        }
        self.feed(SchedulerInput::Tick)
    }

    fn load_version(&mut self, version: &DagVersionRow) -> Arc<Dag> {
        if let Some(dag) = self
            .node
            .as_ref()
            .and_then(|n| n.versions.get(&version.version_hash))
        {
            return dag.clone();
        }
        let spec = serde_json::from_str(&version.spec_json).expect("stored specs parse");
        let dag = Arc::new(Dag::from_spec(spec).expect("stored specs validate"));
        if let Some(node) = self.node.as_mut() {
            node.versions
                .insert(version.version_hash.clone(), dag.clone());
        }
        dag
    }

    // ---- the scheduler glue (scheduler_actor.rs) ----

    /// Feed one input to the core scheduler and perform its effects in order.
    fn feed(&mut self, input: SchedulerInput) -> Handled {
        let node = self.node.as_mut().ok_or(NodeDown)?;
        let effects = node.scheduler.handle(self.now, input);
        for effect in effects {
            self.perform_scheduler_effect(effect)?;
        }
        Ok(())
    }

    fn perform_scheduler_effect(&mut self, effect: SchedulerEffect) -> Handled {
        match effect {
            SchedulerEffect::CreateRun {
                dag_id,
                run_id,
                run_type,
                logical_date,
                data_interval,
                conf,
            } => {
                let node = self.node.as_ref().ok_or(NodeDown)?;
                let Some((_, version_hash)) = node.dags.get(&dag_id) else {
                    return Ok(());
                };
                let key = RunKey {
                    dag_id: dag_id.into(),
                    run_id: run_id.into(),
                };
                let row = RunRow {
                    key: key.clone(),
                    run_type,
                    state: DagRunState::Queued,
                    logical_date,
                    data_interval,
                    version_hash: version_hash.clone(),
                    conf,
                    seed: self.fault_rng.next_u64(),
                    created_at: self.now,
                    started_at: None,
                    ended_at: None,
                };
                // A conflict means the run exists already: creation is idempotent.
                let record = Record::RunCreated {
                    run: key,
                    run_type,
                    logical_date,
                };
                self.write(vec![Write::CreateRun(row)], record)?;
            }
            SchedulerEffect::StartRun { dag_id, run_id } => {
                let run = RunKey {
                    dag_id: dag_id.into(),
                    run_id: run_id.into(),
                };
                let write = Write::UpdateRun {
                    key: run.clone(),
                    expected: DagRunState::Queued,
                    state: DagRunState::Running,
                    started_at: Some(self.now),
                    ended_at: None,
                };
                let record = Record::RunStateChanged {
                    run: run.clone(),
                    state: DagRunState::Running,
                };
                if self.write(vec![write], record)? {
                    self.spawn_run(&run, None)?;
                } else {
                    self.start_refused(run)?;
                }
            }
            SchedulerEffect::WakeAt(at) => {
                let node = self.node.as_mut().ok_or(NodeDown)?;
                node.wake_generation += 1;
                let event = Event::SchedulerWake {
                    epoch: self.epoch,
                    generation: node.wake_generation,
                };
                self.schedule(at, event);
            }
            // The simulated operators neither clear nor mark, so no run is re-opened.
            SchedulerEffect::Rejected { .. } | SchedulerEffect::ReopenRun { .. } => {}
        }
        Ok(())
    }

    /// The store refused to start a run: tell the scheduler what the store holds, and resume
    /// the run if it is running without a driver (as `scheduler_actor.rs` does).
    fn start_refused(&mut self, run: RunKey) -> Handled {
        let stored = block_on(self.store.inner.run(&run))
            .expect("memory store reads")
            .map(|row| row.state);
        self.feed(SchedulerInput::StartRefused {
            dag_id: run.dag_id.to_string(),
            run_id: run.run_id.to_string(),
            stored,
        })?;
        let driverless = self
            .node
            .as_ref()
            .is_some_and(|n| !n.runs.contains_key(&run));
        if stored == Some(DagRunState::Running) && driverless {
            self.resume_run(&run)?;
        }
        Ok(())
    }

    /// A scheduler write: `Ok(true)` acknowledged, `Ok(false)` refused by a guard; any other
    /// failure takes the scheduler, and with it the node, down (its handler returns `Err`).
    fn write(&mut self, batch: Vec<Write>, applied_record: Record) -> Result<bool, NodeDown> {
        match self.store.write(&mut self.fault_rng, &self.rates, batch) {
            WriteOutcome::Acknowledged => {
                self.record(applied_record);
                Ok(true)
            }
            WriteOutcome::Conflict => Ok(false),
            WriteOutcome::Failed { applied } | WriteOutcome::Crashed { applied } => {
                if applied {
                    self.record(applied_record);
                }
                self.record(Record::StoreFault {
                    what: format!("scheduler write failed (applied: {applied})"),
                });
                self.crash_node();
                Err(NodeDown)
            }
        }
    }

    fn resume_run(&mut self, run: &RunKey) -> Handled {
        let store = self.store.inner.clone();
        let row = block_on(store.run(run)).expect("memory store reads");
        if let Some(row) = row.as_ref().filter(|row| row.state.is_finished()) {
            // Its final state was applied but the acknowledgement lost: it is over.
            return self.feed(SchedulerInput::RunFinished {
                dag_id: run.dag_id.to_string(),
                run_id: run.run_id.to_string(),
                state: row.state,
            });
        }
        let task_instances = block_on(store.task_instances(run)).expect("memory store reads");
        let started_at = row.and_then(|row| row.started_at);
        self.spawn_run(run, Some((task_instances, started_at)))
    }

    /// Builds a run's driver, fresh or recovered, and starts it.
    fn spawn_run(
        &mut self,
        run: &RunKey,
        recovered: Option<(Vec<TaskInstanceRecord>, Option<Timestamp>)>,
    ) -> Handled {
        if self.node.as_ref().ok_or(NodeDown)?.runs.contains_key(run) {
            return Ok(());
        }
        let store = self.store.inner.clone();
        let row = block_on(store.run(run))
            .expect("memory store reads")
            .expect("a started run exists");
        let version = block_on(store.dag_version(&run.dag_id, &row.version_hash))
            .expect("memory store reads")
            .expect("a run's version exists");
        let dag = self.load_version(&version);
        let context = RunContext {
            dag,
            run_id: row.key.run_id.clone(),
            run_type: row.run_type,
            logical_date: row.logical_date,
            data_interval: row.data_interval,
            conf: row.conf.clone(),
            seed: row.seed,
            past: BTreeMap::new(),
        };
        let recovered_run = recovered.is_some();
        let core = match recovered {
            None => DagRun::new(context),
            Some((task_instances, started_at)) => {
                // As the actors do: a recovered run is rebuilt as `running`.
                let core = DagRun::recover(context, DagRunState::Running, task_instances);
                match started_at {
                    Some(at) => core.with_started_at(at),
                    None => core,
                }
            }
        };
        self.next_driver += 1;
        // As the actors do: a recovered run may have results stored.
        let driver = RunDriver {
            id: self.next_driver,
            pipeline: RunPipeline::new(core, DagRunState::Running, recovered_run),
            in_flight: None,
            starts: Vec::new(),
        };
        let node = self.node.as_mut().ok_or(NodeDown)?;
        node.runs.insert(run.clone(), driver);
        self.decide(run, RunInput::Start, Vec::new())
    }

    fn driver_id(&self, run: &RunKey) -> Option<u64> {
        self.node.as_ref()?.runs.get(run).map(|driver| driver.id)
    }

    fn driver_mut(&mut self, run: &RunKey) -> Option<&mut RunDriver> {
        self.node.as_mut()?.runs.get_mut(run)
    }

    // ---- the DagRun glue (dag_run_actor.rs) ----

    fn attempt_finished(
        &mut self,
        reported: AttemptId,
        outcome: AttemptOutcome,
        started_at: Option<Timestamp>,
        worker: Option<usize>,
    ) -> Handled {
        let run = reported.run();
        let key = reported.key.clone();
        let mut attempt = reported.version();
        if self.canary == Canary::AcceptStaleResults {
            let current = self.node.as_ref().and_then(|node| {
                let driver = node.runs.get(&run)?;
                let run = driver.pipeline.run();
                let record = run.task_instance(&key.task_id, key.map_index)?;
                record
                    .state
                    .is_active()
                    .then_some((record.try_number, record.token))
            });
            attempt = current.unwrap_or(attempt);
        }
        // The attempt's row names the attempt the worker ran (as the actors' does); it is
        // written only if the run accepts the report.
        let extra = vec![Write::PutAttempt(AttemptRow {
            attempt: reported,
            state: attempt_state(&outcome),
            started_at: started_at.unwrap_or(self.now),
            ended_at: Some(self.now),
            worker: worker.map_or_else(|| "dispatcher".to_string(), |w| format!("worker-{w}")),
            note: None,
        })];
        let input = RunInput::AttemptFinished {
            attempt: AttemptId::new(key, attempt.0, attempt.1),
            outcome,
        };
        self.decide(&run, input, extra)
    }

    /// Feeds one input to the run's pipeline (which includes `extra` for an attempt's end only
    /// if the run accepts it), arms the timer it asks for, and drives it.
    fn decide(&mut self, run: &RunKey, input: RunInput, extra: Vec<Write>) -> Handled {
        let now = self.now;
        let epoch = self.epoch;
        let node = self.node.as_mut().ok_or(NodeDown)?;
        let Some(driver) = node.runs.get_mut(run) else {
            return Ok(());
        };
        let start = match &input {
            RunInput::AttemptStarted { attempt } => Some(attempt.clone()),
            _ => None,
        };
        let wants = driver.pipeline.decide(now, None, input, extra, None);
        if wants.accepted {
            driver.starts.extend(start);
        }
        if let Some(delay) = wants.deferred_rows_after {
            let event = Event::DeferredRowsDue {
                epoch,
                driver: driver.id,
                run: run.clone(),
            };
            self.schedule(after_ms(now, delay.as_millis() as u64), event);
        }
        self.drive(run)
    }

    /// The driver's loop over its pipeline (as the actor's `flush`): hands the next batch to
    /// the store, which answers after its latency (`Committed`); performs the decisions that
    /// are durable; arms the flush timer while decisions are held back.
    fn drive(&mut self, run: &RunKey) -> Handled {
        loop {
            let (epoch, now) = (self.epoch, self.now);
            let Some(driver) = self.driver_mut(run) else {
                return Ok(());
            };
            let driver_id = driver.id;
            match driver.pipeline.next_step() {
                Next::Commit(batch) => {
                    let keys: Vec<&TaskInstanceKey> = batch
                        .iter()
                        .filter_map(|write| match write {
                            Write::PutTaskInstance { record, .. } => Some(&record.key),
                            _ => None,
                        })
                        .collect();
                    let (starts, later): (Vec<AttemptId>, Vec<AttemptId>) =
                        std::mem::take(&mut driver.starts)
                            .into_iter()
                            .partition(|start| keys.contains(&&start.key));
                    driver.starts = later;
                    driver.in_flight = Some((batch, starts));
                    let latency_ms = self.fault_rng.below(self.rates.store_latency_ms_max + 1);
                    let event = Event::Committed {
                        epoch,
                        driver: driver_id,
                        run: run.clone(),
                    };
                    self.schedule(after_ms(now, latency_ms), event);
                    return Ok(());
                }
                Next::Perform(decided) => self.perform_decided(run, driver_id, decided),
                Next::Wait { arm_flush } => {
                    if let Some(delay) = arm_flush {
                        let event = Event::FlushDue {
                            epoch,
                            driver: driver_id,
                            run: run.clone(),
                        };
                        self.schedule(after_ms(now, delay.as_millis() as u64), event);
                    }
                    return Ok(());
                }
                Next::Idle => return Ok(()),
            }
        }
    }

    /// The store answers the batch in flight: applied or not as the fault layer decides. The
    /// history follows the store: what a batch applied (also without acknowledgement) is
    /// recorded from its writes.
    fn committed(&mut self, run: &RunKey) -> Handled {
        let Some((batch, starts)) = self.driver_mut(run).and_then(|d| d.in_flight.take()) else {
            return Ok(());
        };
        let records = applied_records(run, &batch, starts);
        let outcome = self.store.write(&mut self.fault_rng, &self.rates, batch);
        let applied = matches!(
            outcome,
            WriteOutcome::Acknowledged
                | WriteOutcome::Failed { applied: true }
                | WriteOutcome::Crashed { applied: true }
        );
        if applied {
            for record in records {
                self.record(record);
            }
        }
        match outcome {
            WriteOutcome::Acknowledged => {}
            WriteOutcome::Conflict | WriteOutcome::Failed { .. } => {
                if outcome == (WriteOutcome::Failed { applied: true }) {
                    // The batch's decisions are durable but their effects are never performed
                    // (the rebuilt driver starts from the store): a `Kill` among them is lost.
                    self.needs_heal = true;
                }
                self.run_driver_failed(run);
                return Ok(());
            }
            WriteOutcome::Crashed { applied } => {
                self.record(Record::StoreFault {
                    what: format!("node crashed mid-write (applied: {applied})"),
                });
                self.crash_node();
                return Err(NodeDown);
            }
        }
        let Some(driver) = self.driver_mut(run) else {
            return Ok(());
        };
        let driver_id = driver.id;
        let decided = driver.pipeline.committed();
        self.perform_decided(run, driver_id, decided);
        self.drive(run)
    }

    /// Performs durable decisions in order (as the actor's `perform_decided`): messages to the
    /// dispatcher and workers, the run's timers; a decision that ends the run removes the
    /// driver and tells the scheduler, and what was decided after it does not matter.
    fn perform_decided(&mut self, run: &RunKey, driver_id: u64, decided: Vec<Decided<NoReply>>) {
        for decision in decided {
            for effect in decision.effects {
                match effect {
                    RunEffect::Dispatch(request) => self.send(Message::Enqueue(request), 0),
                    RunEffect::Kill { attempt } => {
                        let (key, token) = (attempt.key, attempt.token);
                        // The run asks the dispatcher to stop the slot's attempt with this
                        // token and to withdraw any waiting request (`DispatcherMsg::Cancel`).
                        self.send(
                            Message::Kill {
                                key: key.clone(),
                                token,
                            },
                            0,
                        );
                        self.send(Message::Cancel { key, token }, 0);
                    }
                    RunEffect::Adopt { attempt } => self.send(Message::Adopt { attempt }, 0),
                    RunEffect::SetTimer { at, timer } => {
                        let event = Event::RunTimer {
                            epoch: self.epoch,
                            driver: driver_id,
                            run: run.clone(),
                            timer,
                        };
                        self.schedule(at, event);
                    }
                    RunEffect::PersistTask { .. } | RunEffect::PersistRun { .. } => {}
                }
            }
            if let Some(state) = decision.finished {
                if let Some(node) = self.node.as_mut() {
                    node.runs.remove(run);
                }
                self.send(
                    Message::RunFinished {
                        run: run.clone(),
                        state,
                    },
                    0,
                );
                return;
            }
        }
    }

    /// The run's driver died on a store error: its supervisor rebuilds it from the store after
    /// a back-off that doubles with each failure in a row, up to `RUN_DRIVER_BACKOFF_MS_MAX`,
    /// and never gives up on it.
    fn run_driver_failed(&mut self, run: &RunKey) {
        self.record(Record::StoreFault {
            what: format!("run driver {run} failed on a store write"),
        });
        let Some(node) = self.node.as_mut() else {
            return;
        };
        node.runs.remove(run);
        let restarts = node.restarts.entry(run.clone()).or_insert(0);
        *restarts = restarts.saturating_add(1);
        let doublings = (*restarts - 1).min(16);
        let backoff = (RUN_DRIVER_BACKOFF_MS_FIRST << doublings).min(RUN_DRIVER_BACKOFF_MS_MAX);
        let at = after_ms(self.now, backoff);
        let event = Event::ResumeRun {
            epoch: self.epoch,
            run: run.clone(),
        };
        self.schedule(at, event);
    }

    // ---- the dispatcher glue (dispatcher_actor.rs) ----

    fn dispatch(&mut self, input: DispatchInput) {
        let Some(node) = self.node.as_mut() else {
            return;
        };
        let effects = node.dispatcher.handle(input);
        for effect in effects {
            match effect {
                DispatchEffect::Start {
                    request,
                    slot,
                    worker,
                } => {
                    if worker.as_ref() != LOCAL_WORKER {
                        self.assign_remote(&worker, slot, request);
                        continue;
                    }
                    // The core places the attempt; the slot must be idle in the workers' view.
                    let slot = slot as usize;
                    let idle = self.node.as_mut().and_then(|node| {
                        let position = node.idle_workers.iter().position(|w| *w == slot)?;
                        Some(node.idle_workers.remove(position))
                    });
                    let Some(worker) = idle else {
                        // The core placed an attempt on a busy or unknown slot: the limits
                        // checker sees the attempt never run; nothing to execute it on.
                        continue;
                    };
                    self.start_attempt(worker, request, None);
                }
                // The dispatcher supervises the local worker slots: a local stop, not a
                // message; a remote slot gets a `Kill`.
                DispatchEffect::Stop(request) => {
                    self.stop_attempt(&request.attempt.key, request.attempt.token)
                }
            }
        }
    }

    // ---- workers (worker_slot.rs) ----

    /// Starts an attempt on a slot (`worker` numbers slots, local then remote); a local one
    /// reports its start to the run, a remote one through its slot's reports.
    fn start_attempt(
        &mut self,
        worker: usize,
        request: DispatchRequest,
        remote: Option<RemotePlace>,
    ) -> u64 {
        self.next_attempt += 1;
        let id = self.next_attempt;
        let task = self.task_spec(&request.attempt.key);
        let ends = plan_attempt(
            &mut self.worker_rng,
            &task,
            &self.workload,
            &request.attempt.key,
        );
        self.record(Record::AttemptStarted {
            attempt: id,
            key: request.attempt.key.clone(),
            try_number: request.attempt.try_number,
            token: request.attempt.token,
            worker,
            pool: request.pool.to_string(),
            pool_slots: request.pool_slots,
        });
        if remote.is_none() {
            self.send(
                Message::AttemptStarted {
                    attempt: request.attempt.clone(),
                },
                0,
            );
        }
        let done_at = ends.as_ref().map(|(after, _)| after_ms(self.now, *after));
        if let Some(at) = done_at {
            let event = Event::AttemptDone {
                attempt: id,
                generation: 0,
            };
            self.schedule(at, event);
        }
        let attempt = Attempt {
            worker,
            request,
            started_at: self.now,
            ends,
            done_at,
            left_ms: None,
            generation: 0,
            remote,
        };
        self.attempts.insert(id, attempt);
        id
    }

    /// The attempt's process is stopped (SIGSTOP): it does not progress until resumed.
    fn suspend_attempt(&mut self, id: u64) {
        let now = self.now;
        let Some(attempt) = self.attempts.get_mut(&id) else {
            return;
        };
        if attempt.left_ms.is_some() {
            return;
        }
        let left = attempt
            .done_at
            .map_or(u64::MAX, |at| (at - now).num_milliseconds().max(0) as u64);
        attempt.left_ms = Some(left);
        attempt.generation += 1;
        self.record(Record::AttemptSuspended { attempt: id });
    }

    fn resume_attempt(&mut self, id: u64) {
        let now = self.now;
        let Some(attempt) = self.attempts.get_mut(&id) else {
            return;
        };
        let Some(left) = attempt.left_ms.take() else {
            return;
        };
        let generation = attempt.generation;
        if attempt.done_at.is_some() {
            let at = after_ms(now, left);
            attempt.done_at = Some(at);
            let event = Event::AttemptDone {
                attempt: id,
                generation,
            };
            self.schedule(at, event);
        }
        self.record(Record::AttemptResumed { attempt: id });
    }

    fn task_spec(&self, key: &TaskInstanceKey) -> TaskSpec {
        let dag = self.workload.dags.iter().find(|d| d.dag_id == key.dag_id);
        dag.and_then(|dag| dag.task(&key.task_id))
            .cloned()
            .expect("attempts belong to workload tasks")
    }

    /// An attempt stops executing: its result goes to the run, its slot back to the dispatcher.
    fn end_attempt(&mut self, id: u64, attempt: Attempt, outcome: AttemptOutcome, how: &str) {
        self.record(Record::AttemptEnded {
            attempt: id,
            how: how.to_string(),
        });
        let request = attempt.request;
        if let Some(place) = attempt.remote {
            self.remote_attempt_ended(id, place, request.attempt, outcome, attempt.started_at);
            return;
        }
        self.send(
            Message::AttemptFinished {
                attempt: request.attempt.clone(),
                outcome,
                started_at: Some(attempt.started_at),
                worker: Some(attempt.worker),
            },
            0,
        );
        self.send(
            Message::Release {
                epoch: self.epoch,
                worker: attempt.worker,
                attempt: request.attempt,
            },
            0,
        );
    }

    /// Stops the attempt with this token: on a local slot at once, on a remote one by a
    /// `Kill` to its slot.
    fn stop_attempt(&mut self, key: &TaskInstanceKey, token: u64) {
        if !self.kill_remote(key, token) {
            self.kill_attempt(key, token);
        }
    }

    fn kill_attempt(&mut self, key: &TaskInstanceKey, token: u64) {
        let found = self
            .attempts
            .iter()
            .find(|(_, a)| {
                a.remote.is_none()
                    && a.request.attempt.key == *key
                    && a.request.attempt.token == token
            })
            .map(|(id, _)| *id);
        if let Some(id) = found {
            let attempt = self.attempts.remove(&id).expect("found above");
            let outcome = AttemptOutcome::Failed {
                reason: "attempt killed".to_string(),
                retryable: true,
            };
            self.end_attempt(id, attempt, outcome, "killed");
        }
    }

    /// A worker slot dies with its attempt; its supervisor reports the attempt lost.
    fn kill_worker(&mut self, worker: usize) {
        let found = self
            .attempts
            .iter()
            .find(|(_, a)| a.worker == worker)
            .map(|(id, _)| *id);
        let Some(id) = found else {
            return;
        };
        self.record(Record::WorkerDied { worker });
        let attempt = self.attempts.remove(&id).expect("found above");
        let outcome = AttemptOutcome::Lost {
            reason: "worker died".to_string(),
        };
        self.end_attempt(id, attempt, outcome, "worker died");
    }

    fn final_store(&self) -> FinalStore {
        let store = &self.store.inner;
        let mut runs = Vec::new();
        let mut task_instances = Vec::new();
        for dag in &self.workload.dags {
            let rows = block_on(store.runs(&dag.dag_id, usize::MAX)).expect("memory store reads");
            for row in rows {
                task_instances
                    .extend(block_on(store.task_instances(&row.key)).expect("memory store reads"));
                runs.push(row);
            }
        }
        FinalStore {
            runs,
            task_instances,
        }
    }
}

/// What a run batch the store applied records in the history, derived from its writes: each
/// task instance write (from its guard to its record: with coalescing, one write may span
/// several transitions of one decision or of several), each run state change, then each
/// accepted result (an attempt row is written only with an accepted result) and each start
/// the batch made durable, then the batch's end.
fn applied_records(run: &RunKey, batch: &[Write], starts: Vec<AttemptId>) -> Vec<Record> {
    let mut records = Vec::new();
    let mut results = Vec::new();
    for write in batch {
        match write {
            Write::PutTaskInstance { expected, record } => records.push(Record::TaskWritten {
                key: record.key.clone(),
                from: *expected,
                to: record.version(),
                max_tries: record.max_tries,
                queued_at: record.queued_at,
                ended_at: record.ended_at,
            }),
            Write::UpdateRun { state, .. } => records.push(Record::RunStateChanged {
                run: run.clone(),
                state: *state,
            }),
            Write::PutAttempt(row) => results.push(Record::ResultAccepted {
                key: row.attempt.key.clone(),
                try_number: row.attempt.try_number,
                token: row.attempt.token,
                state: row.state,
            }),
            _ => {}
        }
    }
    records.extend(results);
    records.extend(starts.into_iter().map(|start| Record::StartAccepted {
        key: start.key,
        try_number: start.try_number,
        token: start.token,
    }));
    records.push(Record::BatchApplied { run: run.clone() });
    records
}

fn attempt_state(outcome: &AttemptOutcome) -> TaskState {
    match outcome {
        AttemptOutcome::Success { .. } => TaskState::Success,
        AttemptOutcome::Skipped => TaskState::Skipped,
        _ => TaskState::Failed,
    }
}

/// What a worker will do with an attempt: finish after some ms with an outcome, or hang
/// (`None`) until killed. Hangs and overruns only happen to tasks with an execution timeout:
/// a task without one that hangs would hang in production too.
fn plan_attempt(
    rng: &mut SimRng,
    task: &TaskSpec,
    workload: &Workload,
    key: &TaskInstanceKey,
) -> Option<(u64, AttemptOutcome)> {
    let mut duration_ms = if rng.chance(700) {
        rng.between(1, 60) * 1000
    } else {
        rng.between(60, 900) * 1000
    };
    let roll = rng.below(1000);
    let outcome = if roll < 130 {
        AttemptOutcome::Failed {
            reason: "simulated failure".to_string(),
            retryable: true,
        }
    } else if roll < 160 {
        AttemptOutcome::Failed {
            reason: "simulated fatal failure".to_string(),
            retryable: false,
        }
    } else if roll < 180 {
        AttemptOutcome::Skipped
    } else {
        success(rng, task, workload, key)
    };
    let Some(timeout_ms) = task.execution_timeout_ms else {
        return Some((duration_ms, outcome));
    };
    if rng.chance(150) {
        duration_ms = timeout_ms + rng.between(1, 600) * 1000;
    }
    if duration_ms <= timeout_ms {
        return Some((duration_ms, outcome));
    }
    // The executor enforces the timeout, or fails to and the run's timer has to.
    if rng.chance(500) {
        Some((timeout_ms, AttemptOutcome::TimedOut))
    } else {
        None
    }
}

fn success(
    rng: &mut SimRng,
    task: &TaskSpec,
    workload: &Workload,
    key: &TaskInstanceKey,
) -> AttemptOutcome {
    let dag = workload.dags.iter().find(|d| d.dag_id == key.dag_id);
    let downstream: Vec<&TaskSpec> = dag
        .map(|dag| {
            dag.tasks
                .iter()
                .filter(|t| t.upstream.contains(&task.task_id))
                .collect()
        })
        .unwrap_or_default();
    let branch = (task.flow == FlowControl::Branch).then(|| {
        downstream
            .iter()
            .filter(|_| rng.chance(500))
            .map(|t| t.task_id.clone())
            .collect()
    });
    let proceed = (task.flow == FlowControl::ShortCircuit).then(|| rng.chance(600));
    let feeds_mapping = downstream.iter().any(|t| {
        matches!(&t.mapping, Some(MappingSpec::Upstream { task_id }) if *task_id == task.task_id)
    });
    let output_len = feeds_mapping.then(|| rng.below(4) as usize);
    AttemptOutcome::Success {
        branch,
        proceed,
        output_len,
    }
}

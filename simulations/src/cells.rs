//! The cells simulation: regional cells that own DAGs through shard leases, over one shared
//! store, with faults. It runs for every seed beside the node simulation ([`crate::sim`]), from
//! its own stream of the seed's randomness, and drives the real `weft_core::lease::LeaseKeeper`,
//! `weft_core::timetable::Timetable` and `weft_storage::memory::MemoryStore` (leases,
//! heartbeats, runs and `Write::Fence`).
//!
//! **Model.** One store and 2 to 4 cells (`cell-0`, ...), 4 to 16 shards, the default lease
//! timings or timings drawn so that `LeaseSettings::check` accepts them. Each cell has its
//! own monotonic clock, `offset + real * rate`, and its keeper is driven by that clock only.
//! **Drift bound:** every rate is within ±2.5 % of real time ([`RATE_PPM_OFF_MAX`]), so any
//! two cells' rates differ by at most 5 %, the bound `LeaseSettings::check` assumes
//! (`weft_core::lease::DRIFT_BOUND_PERCENT`); some seeds put cells at the extremes. Wall-clock
//! decisions (which schedule tick is due) use real time: wall-clock error is not modelled.
//!
//! **The link.** Every store request of a cell (lease compare-and-set, the read of every lease
//! and heartbeat row, its heartbeat, the scan of a shard's runs, fenced run writes) takes a
//! one-way delay each way, 1 to 50 ms, and in some seeds a few take 0.2 to 12 s during the fault
//! window (a write that reaches the store after its sender's lease ended: what fences are for).
//! The store applies a
//! request when it arrives. A cell gives up on a request after [`REQUEST_TIMEOUT_MS`] of its
//! clock; a lease write it gave up on is reported to the keeper as `CasOutcome::Unknown`, a run
//! write as failed, and either may have been applied. The keeper is fed `Observed` from a read
//! every `renew / 2` or so (one at a time), `Written` for each lease write with the cell-clock
//! send time, and a `Tick` before every act.
//!
//! **The work.** 2 to 6 DAGs on interval schedules of 1 to 5 s (catch-up on, with or without
//! data intervals), spread over the shards by `shard_of` and registered in the store before
//! the cells start (no cell writes `PutDag`). On `Gained { shard, epoch }` the cell
//! scans the store (the latest scheduled run of each DAG of the shard, and every unfinished
//! run of the shard), adopts each unfinished run (`[Fence]`, then reads it), and creates the
//! ticks that are due after the latest run, one at a time per DAG, with
//! `[CreateRun, Fence]` (the timetable gives the next tick); a creation refused because the run
//! exists is adopted, never skipped. It "runs" each run: after a random time
//! `[UpdateRun queued -> running, Fence]`, later `[UpdateRun running -> success, Fence]`; a
//! guard conflict makes it adopt the run again (re-read), a write refused with `Error::Fenced`
//! makes it stop acting for that run, a failed or unanswered write is sent again after a
//! backoff. On `Lost` it drops at once everything it does for the shard. Each run write sent
//! is an **act**, recorded with (cell, shard, epoch, send time).
//!
//! **Faults** (during a window of 15 to 40 s, then none): cell crashes (all in-memory state
//! lost; the process restarts after up to twice a lease with a new keeper whose heartbeat
//! versions start at the real time), pauses (SIGSTOP: the cell processes nothing, possibly for
//! longer than a lease, while its clock runs; on resuming it ticks its keeper before its
//! backlog), partitions from the store (requests sent during one are lost before the store,
//! replies arriving during one are lost after it was applied), graceful leave
//! (`LeaseInput::Leave`, the process exits once its hand-overs are answered) and re-join, slow
//! links (for a while every request of a cell takes 0.2 to 12 s to reach the store), and the
//! clock drift above. The simulation then runs on long enough for the rows
//! of dead owners to expire, shards to settle and every run to finish.
//!
//! The checkers ([`checkers`]) judge the [`history::CellsHistory`]: `one_owner_per_epoch`,
//! `schedule_exactly_once` and `fenced_writes_refused`. The canary `Canary::IgnoreCellLease`
//! (`--canary-cell-lease`) makes cells ignore `Lost` and go on acting for the shard;
//! `one_owner_per_epoch` catches it.

pub mod checkers;
pub mod history;

use crate::history::Violation;
use crate::rng::SimRng;
use crate::sim::Canary;
use futures::executor::block_on;
use history::{ActKind, CellDag, CellRecord, CellsHistory, RunChange};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use weft_core::ids::{run_id_for, RunKey};
use weft_core::lease::{
    shard_of, CasOutcome, CellBeat, LeaseEffect, LeaseInput, LeaseKeeper, LeaseOp, LeaseRow,
    LeaseSettings, Millis, ShardId, DRIFT_BOUND_PERCENT,
};
use weft_core::spec::{DagSpec, ScheduleSpec, TaskKind, TaskSpec};
use weft_core::state::{DagRunState, RunType};
use weft_core::timetable::{DagRunInfo, DataInterval, Timetable};
use weft_core::Timestamp;
use weft_storage::memory::MemoryStore;
use weft_storage::{CellRow, DagVersionRow, Error, LeaseWrite, RunRow, Store, Write};

pub const CELLS_MIN: u64 = 2;
pub const CELLS_MAX: u64 = 4;
pub const SHARDS_MIN: u64 = 4;
pub const SHARDS_MAX: u64 = 16;
pub const DAGS_MIN: u64 = 2;
pub const DAGS_MAX: u64 = 6;
pub const EVERY_MS_MIN: u64 = 1_000;
pub const EVERY_MS_MAX: u64 = 5_000;
/// How far a cell's clock rate may be from real time, in parts per million: half the stated
/// drift bound, so two cells differ by at most the bound.
pub const RATE_PPM_OFF_MAX: u64 = DRIFT_BOUND_PERCENT * 10_000 / 2;
/// One-way delay of a request or reply, and of a slow one.
pub const LINK_MS_MIN: u64 = 1;
pub const LINK_MS_MAX: u64 = 50;
pub const SLOW_MS_MIN: u64 = 200;
pub const SLOW_MS_MAX: u64 = 12_000;
/// A cell gives up on a store request after this long by its clock.
pub const REQUEST_TIMEOUT_MS: Millis = 1_500;
/// Faults happen during a window this long from the start.
pub const FAULT_WINDOW_MS_MIN: u64 = 15_000;
pub const FAULT_WINDOW_MS_MAX: u64 = 40_000;
/// Crashes, pauses, partitions, slow links and leaves per seed, at most each.
pub const CRASHES_MAX: u64 = 3;
pub const PAUSES_MAX: u64 = 3;
pub const PARTITIONS_MAX: u64 = 4;
pub const SLOW_LINKS_MAX: u64 = 3;
pub const LEAVES_MAX: u64 = 2;
/// After the last fault ended and the last tick was due, the simulation runs this many leases
/// (`ttl + skew`) and [`SETTLE_MS_EXTRA`] more: time for dead owners' rows to expire, shards
/// to settle, missed ticks to be created and every run to finish.
pub const SETTLE_LEASES: u64 = 5;
pub const SETTLE_MS_EXTRA: u64 = 10_000;
/// Events one seed may process; beyond it the seed is reported as not making progress.
pub const EVENTS_MAX: u64 = 1_000_000;
/// A run waits this long (cell clock) in `queued`, then this long in `running`.
const QUEUED_MS: (u64, u64) = (20, 1_500);
const RUNNING_MS: (u64, u64) = (50, 3_000);
/// The wait before a failed request is sent again (cell clock).
const BACKOFF_MS: (u64, u64) = (100, 800);

/// The real time every seed of the cells simulation starts at.
fn start() -> Timestamp {
    chrono::DateTime::from_timestamp(1_704_067_200, 0).unwrap_or_default()
}

fn ts(real: u64) -> Timestamp {
    start() + chrono::TimeDelta::milliseconds(real as i64)
}

fn real_of(at: Timestamp) -> u64 {
    u64::try_from((at - start()).num_milliseconds()).unwrap_or(0)
}

/// A cell's monotonic clock: `offset + real * rate_ppm / 1e6`.
#[derive(Debug, Clone, Copy)]
struct Clock {
    offset: Millis,
    rate_ppm: u64,
}

impl Clock {
    fn at(&self, real: u64) -> Millis {
        self.offset + real * self.rate_ppm / 1_000_000
    }

    /// Real milliseconds for `ms` of this clock to pass, at least one.
    fn real_for(&self, ms: Millis) -> u64 {
        (ms * 1_000_000).div_ceil(self.rate_ppm).max(1)
    }
}

/// A run write of a cell for a shard.
#[derive(Debug, Clone)]
enum Step {
    Create {
        dag: usize,
        info: DagRunInfo,
    },
    /// `[Fence]`, then read the run.
    Adopt {
        run: RunKey,
    },
    Update {
        run: RunKey,
        from: DagRunState,
        to: DagRunState,
    },
}

impl Step {
    fn kind(&self) -> ActKind {
        match self {
            Step::Create { .. } => ActKind::Create,
            Step::Adopt { .. } => ActKind::Adopt,
            Step::Update { from, to, .. } => ActKind::Update {
                from: *from,
                to: *to,
            },
        }
    }
}

/// A store request of a cell.
#[derive(Debug, Clone)]
enum Request {
    /// Every lease row and heartbeat row.
    Read,
    Lease {
        op: LeaseOp,
        expect: Option<(u64, u64)>,
        row: LeaseRow,
        /// The cell's clock when it sent the write.
        sent: Millis,
    },
    Beat {
        version: u64,
    },
    Retire,
    /// The latest scheduled run of each DAG of the shard, and its unfinished runs.
    Scan {
        shard: ShardId,
        epoch: u64,
    },
    Run {
        shard: ShardId,
        epoch: u64,
        step: Step,
    },
}

#[derive(Debug, Clone)]
enum RunReply {
    /// Applied; for an adoption, the run as read after the fence.
    Applied(Option<RunRow>),
    Conflict,
    Fenced,
    Failed,
}

#[derive(Debug, Clone)]
enum Reply {
    Read {
        leases: Vec<LeaseRow>,
        cells: Vec<CellBeat>,
    },
    Lease(CasOutcome),
    Done,
    Scan {
        latest: BTreeMap<usize, Option<DataInterval>>,
        open: Vec<RunRow>,
    },
    Run(RunReply),
}

#[derive(Debug, Clone)]
enum Timer {
    Read,
    Scan {
        shard: ShardId,
        epoch: u64,
    },
    Due {
        shard: ShardId,
        epoch: u64,
    },
    Step {
        shard: ShardId,
        epoch: u64,
        run: RunKey,
    },
}

#[derive(Debug, Clone)]
enum Event {
    /// A request reaches the store; its reply is kept for the cell when `deliver`.
    Arrive {
        id: u64,
        cell: usize,
        request: Request,
        deliver: bool,
    },
    /// The reply reaches the cell, or the cell gives up waiting for it.
    Answer {
        id: u64,
        cell: usize,
        life: u64,
        request: Request,
    },
    Timer {
        cell: usize,
        life: u64,
        timer: Timer,
    },
    Start {
        cell: usize,
    },
    Crash {
        cell: usize,
        restart_ms: u64,
    },
    Pause {
        cell: usize,
        ms: u64,
    },
    Resume {
        cell: usize,
    },
    Partition {
        cell: usize,
        ms: u64,
    },
    Slow {
        cell: usize,
        ms: u64,
    },
    Leave {
        cell: usize,
        rejoin_ms: u64,
    },
    FaultsEnd,
}

#[derive(Debug)]
struct Pending {
    at: u64,
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

/// A DAG of the workload with its timetable.
struct SimDag {
    dag: CellDag,
    timetable: Timetable,
    version_hash: String,
}

/// The next tick of one DAG a shard's owner creates.
#[derive(Debug, Clone)]
struct Cursor {
    /// `None`: the schedule is over.
    next: Option<DagRunInfo>,
    creating: bool,
    /// After a failed creation: not again before this real time.
    not_before: u64,
}

/// A run the owner drives.
#[derive(Debug, Clone)]
struct Drive {
    /// `None`: not known; adopt (fence and read) it first.
    state: Option<DagRunState>,
    busy: bool,
    /// The next step is not before this real time.
    not_before: u64,
}

/// What a cell does for a shard it holds.
#[derive(Debug)]
struct Owned {
    epoch: u64,
    scanned: bool,
    cursors: BTreeMap<usize, Cursor>,
    runs: BTreeMap<RunKey, Drive>,
    /// The real time of the pending `Due` timer, if one.
    due_at: Option<u64>,
}

/// A running cell process: everything here is lost in a crash.
#[derive(Debug)]
struct Process {
    life: u64,
    keeper: LeaseKeeper,
    shards: BTreeMap<ShardId, Owned>,
    reading: bool,
    leaving: bool,
    /// Lease writes sent and not yet answered.
    lease_writes: usize,
    /// Restart or re-join after exiting from a leave, after this long.
    rejoin_ms: u64,
}

#[derive(Debug)]
struct Cell {
    name: String,
    clock: Clock,
    process: Option<Process>,
    lives: u64,
    /// Events for the cell wait until this real time.
    paused_until: u64,
    /// Real intervals `[from, to)` during which the link to the store loses everything.
    partitions: Vec<(u64, u64)>,
    /// Real intervals during which every request of the cell is slow to reach the store.
    slow: Vec<(u64, u64)>,
}

pub struct CellsSimulation {
    canary: Canary,
    now: u64,
    queue: BinaryHeap<Reverse<Pending>>,
    sequence: u64,
    store: MemoryStore,
    settings: LeaseSettings,
    dags: Vec<SimDag>,
    shard_dags: BTreeMap<ShardId, Vec<usize>>,
    cells: Vec<Cell>,
    /// Replies waiting to reach their cell, by request id.
    replies: BTreeMap<u64, Reply>,
    next_request: u64,
    link_rng: SimRng,
    work_rng: SimRng,
    slow_per_mille: u32,
    faults_on: bool,
    end: u64,
    events: u64,
    pub history: CellsHistory,
}

/// The outcome of one seed of the cells simulation.
#[derive(Debug)]
pub struct CellsReport {
    pub trace_hash: u64,
    pub violations: Vec<Violation>,
    pub history: CellsHistory,
}

/// Runs the cells simulation of `seed` and judges it.
pub fn run(seed: u64, canary: Canary) -> CellsReport {
    let history = CellsSimulation::new(seed, canary).run();
    let violations = checkers::check_all(&history);
    CellsReport {
        trace_hash: history.trace_hash(),
        violations,
        history,
    }
}

/// Lease timings: the defaults, or a shorter lease that `LeaseSettings::check` accepts.
fn draw_settings(rng: &mut SimRng, shards: u32) -> LeaseSettings {
    let mut settings = LeaseSettings {
        shards,
        max_moves: rng.between(1, 8) as usize,
        ..LeaseSettings::default()
    };
    if rng.chance(500) {
        let ttl = rng.between(1_500, 4_000);
        settings.ttl_ms = ttl;
        settings.renew_ms = rng.between(ttl / 5, ttl / 2);
        settings.skew_ms = rng.between((ttl * DRIFT_BOUND_PERCENT).div_ceil(100), ttl / 4);
    }
    debug_assert!(settings.check().is_ok(), "{settings:?}");
    settings
}

impl CellsSimulation {
    pub fn new(seed: u64, canary: Canary) -> CellsSimulation {
        // A stream of its own: the node simulation's draws are unchanged.
        let mut rng = SimRng::new(seed ^ 0xCE11_5000_0000_0000);
        let mut setup = rng.fork();
        let link_rng = rng.fork();
        let work_rng = rng.fork();
        let shards = setup.between(SHARDS_MIN, SHARDS_MAX) as u32;
        let settings = draw_settings(&mut setup, shards);
        let extremes = setup.chance(300);
        let cells: Vec<Cell> = (0..setup.between(CELLS_MIN, CELLS_MAX))
            .map(|index| {
                let off = if extremes {
                    *setup.pick(&[0, 2 * RATE_PPM_OFF_MAX])
                } else {
                    setup.between(0, 2 * RATE_PPM_OFF_MAX)
                };
                Cell {
                    name: format!("cell-{index}"),
                    clock: Clock {
                        offset: setup.below(1 << 40),
                        rate_ppm: 1_000_000 - RATE_PPM_OFF_MAX + off,
                    },
                    process: None,
                    lives: 0,
                    paused_until: 0,
                    partitions: Vec::new(),
                    slow: Vec::new(),
                }
            })
            .collect();
        let history = CellsHistory {
            cells: cells.iter().map(|cell| cell.name.clone()).collect(),
            settings: settings.clone(),
            ..CellsHistory::default()
        };
        let mut sim = CellsSimulation {
            canary,
            now: 0,
            queue: BinaryHeap::new(),
            sequence: 0,
            store: MemoryStore::new(),
            settings,
            dags: Vec::new(),
            shard_dags: BTreeMap::new(),
            cells,
            replies: BTreeMap::new(),
            next_request: 0,
            link_rng,
            work_rng,
            slow_per_mille: 0,
            faults_on: true,
            end: 0,
            events: 0,
            history,
        };
        let window = setup.between(FAULT_WINDOW_MS_MIN, FAULT_WINDOW_MS_MAX);
        sim.draw_workload(&mut setup, window);
        sim.plan_faults(&mut rng.fork(), window);
        sim
    }

    /// The DAGs, registered in the store before the cells start.
    fn draw_workload(&mut self, rng: &mut SimRng, window: u64) {
        let mut batch = Vec::new();
        for index in 0..rng.between(DAGS_MIN, DAGS_MAX) {
            let dag_id = format!("dag-{index}");
            let every_ms = rng.between(EVERY_MS_MIN, EVERY_MS_MAX);
            let data_intervals = rng.chance(500);
            let first = ts(rng.between(0, 3_000));
            let last = ts(window + rng.below(10_000));
            let schedule = ScheduleSpec::Interval {
                every_ms,
                data_intervals,
            };
            let mut spec = DagSpec::new(&dag_id, vec![TaskSpec::new("work", TaskKind::Empty)]);
            spec.schedule = schedule.clone();
            spec.start_date = Some(first);
            spec.end_date = Some(last);
            spec.catchup = true;
            let timetable = Timetable::new(&schedule, "UTC", Some(first), Some(last), true)
                .expect("an interval timetable in UTC");
            let version_hash = spec.version_hash();
            batch.push(Write::PutDag {
                version: DagVersionRow {
                    dag_id: dag_id.clone(),
                    version_hash: version_hash.clone(),
                    spec_json: serde_json::to_string(&spec).expect("a DagSpec serializes"),
                    created_at: start(),
                },
                fileloc: None,
                paused_if_new: false,
            });
            let shard = shard_of(&dag_id, self.settings.shards);
            self.shard_dags
                .entry(shard)
                .or_default()
                .push(self.dags.len());
            let dag = CellDag {
                dag_id,
                shard,
                every_ms,
                data_intervals,
                start: first,
                end: last,
            };
            self.history.dags.push(dag.clone());
            self.dags.push(SimDag {
                dag,
                timetable,
                version_hash,
            });
        }
        block_on(self.store.write(batch)).expect("registering the DAGs");
    }

    fn plan_faults(&mut self, rng: &mut SimRng, window: u64) {
        let cells = self.cells.len() as u64;
        let lease = self.settings.expiry_ms();
        let mut faults_end = window;
        for cell in 0..self.cells.len() {
            let at = rng.below(2_000);
            self.schedule(at, Event::Start { cell });
        }
        self.slow_per_mille = *rng.pick(&[0, 0, 5, 20, 50]);
        for _ in 0..rng.below(CRASHES_MAX + 1) {
            let (at, cell) = (rng.below(window), rng.below(cells) as usize);
            let restart_ms = rng.between(100, 2 * lease);
            faults_end = faults_end.max(at + restart_ms);
            self.schedule(at, Event::Crash { cell, restart_ms });
        }
        for _ in 0..rng.below(PAUSES_MAX + 1) {
            let (at, cell) = (rng.below(window), rng.below(cells) as usize);
            let ms = rng.between(100, 2 * lease);
            faults_end = faults_end.max(at + ms);
            self.schedule(at, Event::Pause { cell, ms });
        }
        for _ in 0..rng.below(PARTITIONS_MAX + 1) {
            let (at, cell) = (rng.below(window), rng.below(cells) as usize);
            let ms = rng.between(100, 2 * lease);
            faults_end = faults_end.max(at + ms);
            self.cells[cell].partitions.push((at, at + ms));
            self.schedule(at, Event::Partition { cell, ms });
        }
        for _ in 0..rng.below(SLOW_LINKS_MAX + 1) {
            let (at, cell) = (rng.below(window), rng.below(cells) as usize);
            let ms = rng.between(100, 2 * lease);
            faults_end = faults_end.max(at + ms + SLOW_MS_MAX);
            self.cells[cell].slow.push((at, at + ms));
            self.schedule(at, Event::Slow { cell, ms });
        }
        for _ in 0..rng.below(LEAVES_MAX + 1) {
            let (at, cell) = (rng.below(window), rng.below(cells) as usize);
            let rejoin_ms = rng.between(200, lease);
            // A leave takes up to a lease or so before the process exits.
            faults_end = faults_end.max(at + 2 * lease + rejoin_ms);
            self.schedule(at, Event::Leave { cell, rejoin_ms });
        }
        self.schedule(window, Event::FaultsEnd);
        self.history.faults_end = Some(ts(faults_end));
        let last_due = self
            .dags
            .iter()
            .map(|dag| real_of(dag.dag.end) + dag.dag.every_ms)
            .max()
            .unwrap_or(0);
        self.end = faults_end.max(last_due) + SETTLE_LEASES * lease + SETTLE_MS_EXTRA;
    }

    /// Runs the seed to its end and returns its history.
    pub fn run(mut self) -> CellsHistory {
        while let Some(Reverse(pending)) = self.queue.pop() {
            if pending.at > self.end {
                break;
            }
            if self.events >= EVENTS_MAX {
                self.history.budget_exhausted = true;
                break;
            }
            self.events += 1;
            self.now = self.now.max(pending.at);
            self.handle(pending.event);
        }
        self.now = self.now.max(self.end);
        self.history.end = Some(ts(self.now));
        for dag in &self.dags {
            let rows =
                block_on(self.store.runs(&dag.dag.dag_id, usize::MAX)).expect("memory store reads");
            for row in rows {
                let epoch = block_on(self.store.run_epoch(&row.key)).expect("memory store reads");
                self.history.final_runs.push((row, epoch));
            }
        }
        self.history
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.sequence += 1;
        self.queue.push(Reverse(Pending {
            at: at.max(self.now),
            sequence: self.sequence,
            event,
        }));
    }

    fn record(&mut self, record: CellRecord) {
        self.history.record(ts(self.now), record);
    }

    fn name(&self, cell: usize) -> String {
        self.cells[cell].name.clone()
    }

    fn clock(&self, cell: usize) -> Millis {
        self.cells[cell].clock.at(self.now)
    }

    /// The real time `ms` of the cell's clock from now.
    fn after(&self, cell: usize, ms: Millis) -> u64 {
        self.now + self.cells[cell].clock.real_for(ms)
    }

    fn process(&mut self, cell: usize) -> Option<&mut Process> {
        self.cells[cell].process.as_mut()
    }

    fn life(&self, cell: usize) -> Option<u64> {
        self.cells[cell].process.as_ref().map(|p| p.life)
    }

    fn owned(&mut self, cell: usize, shard: ShardId, epoch: u64) -> Option<&mut Owned> {
        self.process(cell)?
            .shards
            .get_mut(&shard)
            .filter(|owned| owned.epoch == epoch)
    }

    // ---- events ----

    fn handle(&mut self, event: Event) {
        // Events a paused cell would process wait for it to resume.
        let cell_event = match &event {
            Event::Answer { cell, .. } | Event::Timer { cell, .. } | Event::Leave { cell, .. } => {
                Some(*cell)
            }
            _ => None,
        };
        if let Some(cell) = cell_event {
            let until = self.cells[cell].paused_until;
            if until > self.now && self.cells[cell].process.is_some() {
                self.schedule(until, event);
                return;
            }
        }
        match event {
            Event::Arrive {
                id,
                cell,
                request,
                deliver,
            } => {
                let reply = self.apply(cell, request);
                if deliver {
                    self.replies.insert(id, reply);
                }
            }
            Event::Answer {
                id,
                cell,
                life,
                request,
            } => {
                let reply = self.replies.remove(&id);
                if self.life(cell) == Some(life) {
                    self.answer(cell, request, reply);
                }
            }
            Event::Timer { cell, life, timer } => {
                if self.life(cell) == Some(life) {
                    self.timer(cell, timer);
                }
            }
            Event::Start { cell } => self.start_cell(cell),
            Event::Crash { cell, restart_ms } => {
                if self.faults_on && self.cells[cell].process.is_some() {
                    self.cells[cell].process = None;
                    self.cells[cell].paused_until = self.now;
                    let name = self.name(cell);
                    self.record(CellRecord::Crashed { cell: name });
                    self.schedule(self.now + restart_ms, Event::Start { cell });
                }
            }
            Event::Pause { cell, ms } => {
                if self.faults_on && self.cells[cell].process.is_some() {
                    let until = self.cells[cell].paused_until.max(self.now + ms);
                    self.cells[cell].paused_until = until;
                    let name = self.name(cell);
                    self.record(CellRecord::Paused { cell: name, ms });
                    self.schedule(until, Event::Resume { cell });
                }
            }
            Event::Resume { cell } => {
                let paused = self.cells[cell].paused_until;
                if paused == self.now && self.cells[cell].process.is_some() {
                    let name = self.name(cell);
                    self.record(CellRecord::Resumed { cell: name });
                    // The keeper stands down for leases that ran out before anything else.
                    self.tick(cell);
                }
            }
            Event::Partition { cell, ms } => {
                let name = self.name(cell);
                self.record(CellRecord::Partitioned { cell: name, ms });
            }
            Event::Slow { cell, ms } => {
                let name = self.name(cell);
                self.record(CellRecord::Slowed { cell: name, ms });
            }
            Event::Leave { cell, rejoin_ms } => {
                let now = self.clock(cell);
                let leaving = self.process(cell).is_some_and(|p| p.leaving);
                if self.faults_on && self.cells[cell].process.is_some() && !leaving {
                    let name = self.name(cell);
                    self.record(CellRecord::Leaving { cell: name });
                    if let Some(process) = self.process(cell) {
                        process.leaving = true;
                        process.rejoin_ms = rejoin_ms;
                    }
                    self.feed(cell, LeaseInput::Leave { now });
                }
            }
            Event::FaultsEnd => {
                self.faults_on = false;
                self.slow_per_mille = 0;
                self.record(CellRecord::FaultsEnd);
            }
        }
        if let Some(cell) = cell_event {
            self.exit_if_left(cell);
        }
    }

    fn start_cell(&mut self, cell: usize) {
        if self.cells[cell].process.is_some() {
            return;
        }
        self.cells[cell].lives += 1;
        let life = self.cells[cell].lives;
        let name = self.name(cell);
        // Heartbeat versions must grow across restarts: start from the real time.
        let keeper = LeaseKeeper::new(&name, self.settings.clone(), self.now);
        self.cells[cell].process = Some(Process {
            life,
            keeper,
            shards: BTreeMap::new(),
            reading: false,
            leaving: false,
            lease_writes: 0,
            rejoin_ms: 0,
        });
        self.record(CellRecord::Started { cell: name, life });
        self.timer(cell, Timer::Read);
    }

    /// A leaving process exits once it holds nothing and its lease writes are answered.
    fn exit_if_left(&mut self, cell: usize) {
        let Some(process) = self.cells[cell].process.as_ref() else {
            return;
        };
        let held = process.keeper.held().count();
        if !process.leaving || held > 0 || process.lease_writes > 0 {
            return;
        }
        let rejoin_ms = process.rejoin_ms;
        self.cells[cell].process = None;
        let name = self.name(cell);
        self.record(CellRecord::Left { cell: name });
        self.schedule(self.now + rejoin_ms, Event::Start { cell });
    }

    // ---- the link ----

    fn delay(&mut self, slow: bool) -> u64 {
        if slow || self.link_rng.chance(self.slow_per_mille) {
            self.link_rng.between(SLOW_MS_MIN, SLOW_MS_MAX)
        } else {
            self.link_rng.between(LINK_MS_MIN, LINK_MS_MAX)
        }
    }

    fn partitioned(&self, cell: usize, at: u64) -> bool {
        self.cells[cell]
            .partitions
            .iter()
            .any(|(from, to)| *from <= at && at < *to)
    }

    fn send(&mut self, cell: usize, request: Request) {
        let Some(life) = self.life(cell) else {
            return;
        };
        self.next_request += 1;
        let id = self.next_request;
        let gives_up = self.after(cell, REQUEST_TIMEOUT_MS);
        let slow = self.cells[cell]
            .slow
            .iter()
            .any(|(from, to)| *from <= self.now && self.now < *to);
        let (there, back) = (self.delay(slow), self.delay(false));
        let arrives = self.now + there;
        let answers = arrives + back;
        let lost = self.partitioned(cell, self.now);
        let deliver = !self.partitioned(cell, answers) && answers <= gives_up;
        if !lost {
            let arrive = Event::Arrive {
                id,
                cell,
                request: request.clone(),
                deliver,
            };
            self.schedule(arrives, arrive);
        }
        let at = if deliver && !lost { answers } else { gives_up };
        self.schedule(
            at,
            Event::Answer {
                id,
                cell,
                life,
                request,
            },
        );
    }

    // ---- the store ----

    fn apply(&mut self, cell: usize, request: Request) -> Reply {
        let by = self.name(cell);
        let at = ts(self.now);
        match request {
            Request::Read => {
                let leases = block_on(self.store.leases(self.settings.shards))
                    .expect("memory store reads")
                    .into_iter()
                    .map(|record| record.lease)
                    .collect();
                let cells = block_on(self.store.cells())
                    .expect("memory store reads")
                    .into_iter()
                    .map(|row| CellBeat {
                        cell: row.name,
                        version: row.version,
                    })
                    .collect();
                Reply::Read { leases, cells }
            }
            Request::Lease {
                op, expect, row, ..
            } => match block_on(self.store.write_lease(expect, &row, at)) {
                Ok(LeaseWrite::Applied) => {
                    self.record(CellRecord::LeaseApplied {
                        by,
                        op,
                        shard: row.shard,
                        owner: row.owner.clone(),
                        epoch: row.epoch,
                        version: row.version,
                    });
                    Reply::Lease(CasOutcome::Applied)
                }
                Ok(LeaseWrite::Refused(current)) => Reply::Lease(CasOutcome::Refused(current)),
                Err(_) => Reply::Lease(CasOutcome::Unknown),
            },
            Request::Beat { version } => {
                let row = CellRow {
                    name: by,
                    region: "sim".to_string(),
                    address: String::new(),
                    api: String::new(),
                    version,
                    beat_at: at,
                    started_at: at,
                };
                let _ = block_on(self.store.put_cell(&row));
                Reply::Done
            }
            Request::Retire => {
                let _ = block_on(self.store.delete_cell(&by));
                Reply::Done
            }
            Request::Scan { shard, .. } => {
                let mut latest = BTreeMap::new();
                for &dag in self.shard_dags.get(&shard).into_iter().flatten() {
                    let row = block_on(self.store.latest_scheduled_run(&self.dags[dag].dag.dag_id))
                        .expect("memory store reads");
                    latest.insert(dag, row.map(|row| row.data_interval));
                }
                let shards = self.settings.shards;
                let open = block_on(
                    self.store
                        .runs_in_states(&[DagRunState::Queued, DagRunState::Running]),
                )
                .expect("memory store reads")
                .into_iter()
                .filter(|row| shard_of(&row.key.dag_id, shards) == shard)
                .collect();
                Reply::Scan { latest, open }
            }
            Request::Run { epoch, step, .. } => Reply::Run(self.apply_run(by, epoch, step)),
        }
    }

    fn apply_run(&mut self, by: String, epoch: u64, step: Step) -> RunReply {
        let at = ts(self.now);
        let (run, change, mut batch) = match step {
            Step::Create { dag, info } => {
                let dag = &self.dags[dag];
                let run = RunKey {
                    dag_id: dag.dag.dag_id.as_str().into(),
                    run_id: run_id_for(RunType::Scheduled, info.logical_date).into(),
                };
                let row = RunRow {
                    key: run.clone(),
                    run_type: RunType::Scheduled,
                    state: DagRunState::Queued,
                    logical_date: info.logical_date,
                    data_interval: info.data_interval,
                    version_hash: dag.version_hash.clone(),
                    conf: serde_json::Value::Null,
                    seed: 0,
                    created_at: at,
                    started_at: None,
                    ended_at: None,
                };
                let change = RunChange::Created {
                    logical_date: info.logical_date,
                };
                (run, change, vec![Write::CreateRun(row)])
            }
            Step::Adopt { run } => (run, RunChange::Adopted, Vec::new()),
            Step::Update { run, from, to } => {
                let update = Write::UpdateRun {
                    key: run.clone(),
                    expected: from,
                    state: to,
                    started_at: (to == DagRunState::Running).then_some(at),
                    ended_at: to.is_finished().then_some(at),
                };
                (run, RunChange::State { from, to }, vec![update])
            }
        };
        batch.push(Write::Fence {
            run: run.clone(),
            epoch,
        });
        match block_on(self.store.write(batch)) {
            Ok(()) => {
                let adopted = change == RunChange::Adopted;
                self.record(CellRecord::RunAccepted {
                    by,
                    run: run.clone(),
                    epoch,
                    change,
                });
                if adopted {
                    let row = block_on(self.store.run(&run)).expect("memory store reads");
                    RunReply::Applied(row)
                } else {
                    RunReply::Applied(None)
                }
            }
            Err(Error::Fenced { current, .. }) => {
                self.record(CellRecord::RunFenced {
                    by,
                    run,
                    epoch,
                    current,
                });
                RunReply::Fenced
            }
            Err(error) if error.is_conflict() => RunReply::Conflict,
            Err(_) => RunReply::Failed,
        }
    }

    // ---- the keeper ----

    fn tick(&mut self, cell: usize) {
        let now = self.clock(cell);
        self.feed(cell, LeaseInput::Tick { now });
    }

    fn feed(&mut self, cell: usize, input: LeaseInput) {
        let Some(process) = self.process(cell) else {
            return;
        };
        let effects = process.keeper.handle(input);
        for effect in effects {
            self.perform(cell, effect);
        }
    }

    fn perform(&mut self, cell: usize, effect: LeaseEffect) {
        let Some(life) = self.life(cell) else {
            return;
        };
        match effect {
            LeaseEffect::Write { op, expect, row } => {
                let sent = self.clock(cell);
                if let Some(process) = self.process(cell) {
                    process.lease_writes += 1;
                }
                let request = Request::Lease {
                    op,
                    expect,
                    row,
                    sent,
                };
                self.send(cell, request);
            }
            LeaseEffect::Gained { shard, epoch } => {
                let cell_name = self.name(cell);
                self.record(CellRecord::Gained {
                    cell: cell_name,
                    life,
                    shard,
                    epoch,
                });
                let owned = Owned {
                    epoch,
                    scanned: false,
                    cursors: BTreeMap::new(),
                    runs: BTreeMap::new(),
                    due_at: None,
                };
                if let Some(process) = self.process(cell) {
                    process.shards.insert(shard, owned);
                }
                self.send(cell, Request::Scan { shard, epoch });
            }
            LeaseEffect::Lost { shard, epoch } => {
                let cell_name = self.name(cell);
                self.record(CellRecord::Lost {
                    cell: cell_name,
                    life,
                    shard,
                    epoch,
                });
                // The canary: a cell that goes on deciding after its keeper says stop.
                if self.canary != Canary::IgnoreCellLease
                    && self.owned(cell, shard, epoch).is_some()
                {
                    if let Some(process) = self.process(cell) {
                        process.shards.remove(&shard);
                    }
                }
            }
            LeaseEffect::Beat { version } => self.send(cell, Request::Beat { version }),
            LeaseEffect::Retire => self.send(cell, Request::Retire),
        }
    }

    /// Whether the cell still decides for `shard` under `epoch`, after ticking its keeper
    /// (which stands it down for leases that ran out by its clock).
    fn may_act(&mut self, cell: usize, shard: ShardId, epoch: u64) -> bool {
        self.tick(cell);
        self.owned(cell, shard, epoch).is_some()
    }

    /// Send a run write for a shard (the caller checked `may_act`).
    fn act(&mut self, cell: usize, shard: ShardId, epoch: u64, run: RunKey, step: Step) {
        let Some(life) = self.life(cell) else {
            return;
        };
        let cell_name = self.name(cell);
        self.record(CellRecord::Act {
            cell: cell_name,
            life,
            shard,
            epoch,
            run,
            kind: step.kind(),
        });
        self.send(cell, Request::Run { shard, epoch, step });
    }

    // ---- timers and answers ----

    fn set_timer(&mut self, cell: usize, at: u64, timer: Timer) {
        if let Some(life) = self.life(cell) {
            self.schedule(at, Event::Timer { cell, life, timer });
        }
    }

    fn backoff(&mut self, cell: usize) -> u64 {
        let ms = self.work_rng.between(BACKOFF_MS.0, BACKOFF_MS.1);
        self.after(cell, ms)
    }

    fn timer(&mut self, cell: usize, timer: Timer) {
        match timer {
            Timer::Read => {
                self.tick(cell);
                let Some(process) = self.process(cell) else {
                    return;
                };
                if !process.reading {
                    process.reading = true;
                    self.send(cell, Request::Read);
                }
                let renew = self.settings.renew_ms;
                let ms = renew / 2 + self.work_rng.below(renew / 8 + 1);
                let at = self.after(cell, ms);
                self.set_timer(cell, at, Timer::Read);
            }
            Timer::Scan { shard, epoch } => {
                if self.owned(cell, shard, epoch).is_some() {
                    self.send(cell, Request::Scan { shard, epoch });
                }
            }
            Timer::Due { shard, epoch } => {
                let now = self.now;
                if let Some(owned) = self.owned(cell, shard, epoch) {
                    if owned.due_at.is_some_and(|at| at <= now) {
                        owned.due_at = None;
                    }
                }
                self.create_due(cell, shard, epoch);
            }
            Timer::Step { shard, epoch, run } => self.step(cell, shard, epoch, run),
        }
    }

    fn answer(&mut self, cell: usize, request: Request, reply: Option<Reply>) {
        match request {
            Request::Read => {
                let now = self.clock(cell);
                if let Some(process) = self.process(cell) {
                    process.reading = false;
                }
                match reply {
                    Some(Reply::Read { leases, cells }) => {
                        self.feed(cell, LeaseInput::Observed { now, leases, cells })
                    }
                    _ => self.feed(cell, LeaseInput::Tick { now }),
                }
            }
            Request::Lease { op, row, sent, .. } => {
                let now = self.clock(cell);
                if let Some(process) = self.process(cell) {
                    process.lease_writes = process.lease_writes.saturating_sub(1);
                }
                let outcome = match reply {
                    Some(Reply::Lease(outcome)) => outcome,
                    _ => CasOutcome::Unknown,
                };
                let input = LeaseInput::Written {
                    now,
                    op,
                    row,
                    sent,
                    outcome,
                };
                self.feed(cell, input);
            }
            Request::Beat { .. } | Request::Retire => {}
            Request::Scan { shard, epoch } => self.scanned(cell, shard, epoch, reply),
            Request::Run { shard, epoch, step } => {
                let reply = match reply {
                    Some(Reply::Run(reply)) => reply,
                    _ => RunReply::Failed,
                };
                self.run_answered(cell, shard, epoch, step, reply);
            }
        }
    }

    /// The scan after `Gained`: adopt the unfinished runs, then create the due ticks.
    fn scanned(&mut self, cell: usize, shard: ShardId, epoch: u64, reply: Option<Reply>) {
        let Some(Reply::Scan { latest, open }) = reply else {
            if self.owned(cell, shard, epoch).is_some() {
                let at = self.backoff(cell);
                self.set_timer(cell, at, Timer::Scan { shard, epoch });
            }
            return;
        };
        let now = ts(self.now);
        let cursors: BTreeMap<usize, Cursor> = latest
            .iter()
            .map(|(dag, last)| {
                let next = self.dags[*dag]
                    .timetable
                    .next_dagrun_info(last.as_ref(), now);
                let cursor = Cursor {
                    next,
                    creating: false,
                    not_before: 0,
                };
                (*dag, cursor)
            })
            .collect();
        let Some(owned) = self.owned(cell, shard, epoch) else {
            return;
        };
        owned.scanned = true;
        owned.cursors = cursors;
        for row in &open {
            owned.runs.insert(
                row.key.clone(),
                Drive {
                    state: None,
                    busy: false,
                    not_before: 0,
                },
            );
        }
        for row in open {
            self.step(cell, shard, epoch, row.key);
        }
        self.create_due(cell, shard, epoch);
    }

    /// Create the ticks that are due (one at a time per DAG) and set the timer for the next.
    fn create_due(&mut self, cell: usize, shard: ShardId, epoch: u64) {
        if !self.may_act(cell, shard, epoch) {
            return;
        }
        let now = self.now;
        let mut creates = Vec::new();
        let mut next_due: Option<u64> = None;
        let Some(owned) = self.owned(cell, shard, epoch) else {
            return;
        };
        if !owned.scanned {
            return;
        }
        for (dag, cursor) in owned.cursors.iter_mut() {
            let Some(info) = cursor.next else {
                continue;
            };
            if cursor.creating {
                continue;
            }
            let due = real_of(info.run_after).max(cursor.not_before);
            if due <= now {
                cursor.creating = true;
                creates.push((*dag, info));
            } else {
                next_due = Some(next_due.map_or(due, |at| at.min(due)));
            }
        }
        if let Some(due) = next_due {
            if owned.due_at.is_none_or(|at| due < at) {
                owned.due_at = Some(due);
                self.set_timer(cell, due, Timer::Due { shard, epoch });
            }
        }
        for (dag, info) in creates {
            let run = RunKey {
                dag_id: self.dags[dag].dag.dag_id.as_str().into(),
                run_id: run_id_for(RunType::Scheduled, info.logical_date).into(),
            };
            self.act(cell, shard, epoch, run, Step::Create { dag, info });
        }
    }

    /// The next write for a run the cell drives, unless one is in flight or not yet due.
    fn step(&mut self, cell: usize, shard: ShardId, epoch: u64, run: RunKey) {
        if !self.may_act(cell, shard, epoch) {
            return;
        }
        let now = self.now;
        let Some(owned) = self.owned(cell, shard, epoch) else {
            return;
        };
        let Some(drive) = owned.runs.get_mut(&run) else {
            return;
        };
        if drive.busy || drive.not_before > now {
            return;
        }
        let step = match drive.state {
            None => Step::Adopt { run: run.clone() },
            Some(DagRunState::Queued) => Step::Update {
                run: run.clone(),
                from: DagRunState::Queued,
                to: DagRunState::Running,
            },
            Some(DagRunState::Running) => Step::Update {
                run: run.clone(),
                from: DagRunState::Running,
                to: DagRunState::Success,
            },
            Some(_) => {
                owned.runs.remove(&run);
                return;
            }
        };
        drive.busy = true;
        self.act(cell, shard, epoch, run, step);
    }

    /// The run's next step is due at real time `at`.
    fn next_step(&mut self, cell: usize, shard: ShardId, epoch: u64, run: RunKey, at: u64) {
        let Some(owned) = self.owned(cell, shard, epoch) else {
            return;
        };
        let Some(drive) = owned.runs.get_mut(&run) else {
            return;
        };
        drive.busy = false;
        drive.not_before = at;
        self.set_timer(cell, at, Timer::Step { shard, epoch, run });
    }

    fn run_answered(
        &mut self,
        cell: usize,
        shard: ShardId,
        epoch: u64,
        step: Step,
        reply: RunReply,
    ) {
        if self.owned(cell, shard, epoch).is_none() {
            // Deposed meanwhile: nothing more to do for this shard.
            return;
        }
        match step {
            Step::Create { dag, info } => {
                let next = self.dags[dag]
                    .timetable
                    .next_dagrun_info(Some(&info.data_interval), ts(self.now));
                let retry_at = self.backoff(cell);
                let run = RunKey {
                    dag_id: self.dags[dag].dag.dag_id.as_str().into(),
                    run_id: run_id_for(RunType::Scheduled, info.logical_date).into(),
                };
                let Some(owned) = self.owned(cell, shard, epoch) else {
                    return;
                };
                let Some(cursor) = owned.cursors.get_mut(&dag) else {
                    return;
                };
                cursor.creating = false;
                let state = match reply {
                    RunReply::Applied(_) => Some(DagRunState::Queued),
                    // The run exists: someone created it. Adopt it; the tick has its run.
                    RunReply::Conflict | RunReply::Fenced => None,
                    RunReply::Failed => {
                        cursor.not_before = retry_at;
                        self.create_due(cell, shard, epoch);
                        return;
                    }
                };
                cursor.next = next;
                owned.runs.insert(
                    run.clone(),
                    Drive {
                        state,
                        busy: false,
                        not_before: 0,
                    },
                );
                if state.is_some() {
                    let ms = self.work_rng.between(QUEUED_MS.0, QUEUED_MS.1);
                    let at = self.after(cell, ms);
                    self.next_step(cell, shard, epoch, run, at);
                } else {
                    self.step(cell, shard, epoch, run);
                }
                self.create_due(cell, shard, epoch);
            }
            Step::Adopt { run } => match reply {
                RunReply::Applied(Some(row)) if !row.state.is_finished() => {
                    if let Some(drive) = self
                        .owned(cell, shard, epoch)
                        .and_then(|owned| owned.runs.get_mut(&run))
                    {
                        drive.state = Some(row.state);
                    }
                    let ms = self.work_rng.between(QUEUED_MS.0, QUEUED_MS.1);
                    let at = self.after(cell, ms);
                    self.next_step(cell, shard, epoch, run, at);
                }
                RunReply::Applied(_) | RunReply::Fenced => self.forget(cell, shard, epoch, &run),
                RunReply::Conflict | RunReply::Failed => {
                    let at = self.backoff(cell);
                    self.next_step(cell, shard, epoch, run, at);
                }
            },
            Step::Update { run, to, .. } => match reply {
                RunReply::Applied(_) if to.is_finished() => self.forget(cell, shard, epoch, &run),
                RunReply::Applied(_) => {
                    if let Some(drive) = self
                        .owned(cell, shard, epoch)
                        .and_then(|owned| owned.runs.get_mut(&run))
                    {
                        drive.state = Some(to);
                    }
                    let ms = self.work_rng.between(RUNNING_MS.0, RUNNING_MS.1);
                    let at = self.after(cell, ms);
                    self.next_step(cell, shard, epoch, run, at);
                }
                RunReply::Fenced => self.forget(cell, shard, epoch, &run),
                RunReply::Conflict => {
                    // Not in the state this cell knew: read it again.
                    if let Some(drive) = self
                        .owned(cell, shard, epoch)
                        .and_then(|owned| owned.runs.get_mut(&run))
                    {
                        drive.state = None;
                    }
                    let now = self.now;
                    self.next_step(cell, shard, epoch, run, now);
                }
                RunReply::Failed => {
                    let at = self.backoff(cell);
                    self.next_step(cell, shard, epoch, run, at);
                }
            },
        }
    }

    /// Stop driving a run: it finished, or the cell was deposed for it.
    fn forget(&mut self, cell: usize, shard: ShardId, epoch: u64, run: &RunKey) {
        if let Some(owned) = self.owned(cell, shard, epoch) {
            owned.runs.remove(run);
        }
    }
}

//! The dispatcher: orders ready task instances by priority and hands them to worker slots
//! within pool slots and each DAG's `max_active_tasks`.
//!
//! Order: runs that are not backfills first, then higher effective priority weight, then first
//! come first served. Requests wait in one queue per (pool, DAG); the head of each non-empty
//! queue sits in one ordered set, and a decision walks that set from the best head, skipping
//! heads whose pool or DAG is full. A decision therefore costs O(blocked queues + log n), never
//! a walk over waiting requests. Inside one queue the order is strict: a head that needs more
//! pool slots than are free holds back the requests behind it in the same pool and DAG
//! (Airflow would look past it; head-of-line order keeps big tasks from starving).
//!
//! A request naming a pool that does not exist waits until `SetPool` creates it, as Airflow
//! leaves such task instances scheduled ("will not be scheduled" warning) rather than failing
//! them; they are counted in [`DispatchStats::waiting_for_unknown_pool`].
//!
//! **Workers and placement.** Slots belong to workers ([`WorkerInfo`]: an id, a number of
//! slots, the queues it serves — none listed means every queue — and labels). The dispatcher
//! decides where each attempt runs: a worker that serves the request's queue and has a free
//! slot, and which of its slots (`DispatchEffect::Start`). A request whose queue no worker
//! serves waits, counted in [`DispatchStats::waiting_for_unserved_queue`], and starts when such
//! a worker joins. The node's own slots are one worker, [`LOCAL_WORKER`], like any other.

use crate::dag_run::DispatchRequest;
use crate::ids::{AttemptId, Name, TaskInstanceKey};
use crate::spec::DEFAULT_POOL;
use crate::state::RunType;
use std::cmp::Reverse;
// Hashed with foldhash: these maps are read and written for every dispatched task, and
// SipHash over their string keys was a visible share of the dispatch path's CPU.
use foldhash::{HashMap, HashMapExt};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Slots of `default_pool` until `SetPool` changes them (Airflow's default).
pub const DEFAULT_POOL_SLOTS: u32 = 128;
/// Slots of the local worker until `SetWorkerSlots` or `WorkerJoined` says otherwise
/// (Airflow's `core.parallelism` default).
pub const WORKER_SLOTS_DEFAULT: u32 = 32;
/// The id of the node's own worker, which a fresh dispatcher starts with.
pub const LOCAL_WORKER: &str = "local";
/// Workers one dispatcher knows at once.
pub const WORKERS_MAX: usize = 10_000;

/// A worker as the dispatcher knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub id: Name,
    pub slots: u32,
    /// The queues it serves; empty means every queue.
    pub queues: Vec<Name>,
    pub labels: BTreeMap<String, String>,
}

impl WorkerInfo {
    /// A worker serving every queue.
    pub fn new(id: &str, slots: u32) -> WorkerInfo {
        WorkerInfo {
            id: Name::from(id),
            slots,
            queues: Vec::new(),
            labels: BTreeMap::new(),
        }
    }

    pub fn serves(&self, queue: &str) -> bool {
        self.queues.is_empty() || self.queues.iter().any(|served| served.as_ref() == queue)
    }
}
/// A DAG's `max_active_tasks` until `SetDagLimit` says otherwise (the spec's default).
pub const DAG_ACTIVE_TASKS_DEFAULT: u32 = 16;
/// Task instances whose newest enqueued attempt the dispatcher remembers, oldest forgotten
/// first. A late or duplicated `Enqueue` of an attempt it still remembers never starts it again;
/// one older than this horizon can, and the run's fencing then refuses its reports.
pub const ENQUEUED_REMEMBERED_MAX: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub enum DispatchInput {
    /// A task instance is ready.
    Enqueue(DispatchRequest),
    /// An attempt ended (or was never started) and gives back its pool slots and worker slot.
    /// Named by (try, token): a duplicated or late release of one attempt never frees another
    /// attempt of the same try.
    Release { attempt: AttemptId },
    /// A queued request is no longer wanted (cleared, run failed): the waiting request of the
    /// attempt with this token, or of an older one. Never a newer attempt's: a late cancel must
    /// not withdraw the retry that replaced the attempt it was about.
    Cancel { key: TaskInstanceKey, token: u64 },
    /// Create or resize a pool.
    SetPool { name: String, slots: u32 },
    /// Set a DAG's `max_active_tasks`.
    SetDagLimit {
        dag_id: String,
        max_active_tasks: u32,
    },
    /// The local worker's number of slots (`WorkerJoined` of [`LOCAL_WORKER`], every queue).
    SetWorkerSlots { count: u32 },
    /// A worker joined, or changed its slots, queues or labels. Slots it loses while they run
    /// an attempt stay taken until that attempt is released.
    WorkerJoined(WorkerInfo),
    /// A worker left: nothing more starts on it. Its running attempts stay counted until the
    /// driver releases them (reporting them lost).
    WorkerLeft { id: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum DispatchEffect {
    /// Run this attempt now, on this worker's slot.
    Start {
        request: DispatchRequest,
        worker: Name,
        slot: u32,
    },
    /// Stop this started attempt: a newer attempt of the same task instance was enqueued, so
    /// the run has given up on it (its reports are refused by fencing), yet it still holds a
    /// worker slot and pool slots. The `Kill` that should have stopped it may have been lost
    /// with a crashed run driver, and an attempt whose executor fails to enforce its timeout
    /// would otherwise hold its slots forever (found by the simulator, seed 1701).
    Stop(DispatchRequest),
}

/// Inputs the dispatcher ignored, by reason; for metrics and the simulator's checkers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchStats {
    /// `Enqueue` of an attempt already queued or started with the same (try, token).
    pub duplicate_enqueues: u64,
    /// `Enqueue` of an attempt older than the one already queued for the same task instance.
    pub stale_enqueues: u64,
    /// `Release` of an attempt the dispatcher does not hold.
    pub unknown_releases: u64,
    /// `Cancel` of a task instance with nothing queued.
    pub unknown_cancels: u64,
    /// Requests now waiting on a pool that does not exist.
    pub waiting_for_unknown_pool: u64,
    /// Requests now waiting for a queue that no worker serves.
    pub waiting_for_unserved_queue: u64,
    /// `WorkerJoined` refused because `WORKERS_MAX` workers are known.
    pub workers_refused: u64,
}

/// Queue order: lower sorts first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Rank {
    /// Backfill runs go after every other run type.
    backfill: bool,
    weight: Reverse<i64>,
    sequence: u64,
}

impl Rank {
    fn of(request: &DispatchRequest, sequence: u64) -> Rank {
        Rank {
            backfill: request.run_type == RunType::Backfill,
            weight: Reverse(request.priority_weight),
            sequence,
        }
    }
}

/// One queue per pool, DAG and worker queue.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct QueueId {
    pool: Name,
    dag_id: Name,
    queue: Name,
}

/// A worker and which of its slots are free.
#[derive(Debug, Clone)]
struct Worker {
    info: WorkerInfo,
    /// Free slot indices, lowest last (the next one taken).
    free: Vec<u32>,
    /// Invariant: the slots taken by started attempts (`started` entries placed here).
    taken: BTreeSet<u32>,
}

impl Worker {
    fn new(info: WorkerInfo) -> Worker {
        let free = (0..info.slots).rev().collect();
        Worker {
            info,
            free,
            taken: BTreeSet::new(),
        }
    }

    /// Takes the new shape; slots over the new count are dropped once free.
    fn reshape(&mut self, info: WorkerInfo) {
        self.free = (0..info.slots)
            .rev()
            .filter(|slot| !self.taken.contains(slot))
            .collect();
        self.info = info;
    }
}

/// A started attempt and where it runs.
#[derive(Debug, Clone)]
struct Placed {
    request: DispatchRequest,
    worker: Name,
    slot: u32,
}

#[derive(Debug, Clone)]
struct Waiting {
    queue: QueueId,
    rank: Rank,
    request: DispatchRequest,
}

#[derive(Debug, Clone)]
struct Pool {
    slots: u32,
    /// Invariant: the sum of `pool_slots` of started attempts in this pool (may exceed
    /// `slots` after a pool shrinks; nothing starts until it drops below).
    used: u32,
}

#[derive(Debug, Clone, Default)]
struct DagUsage {
    limit: Option<u32>,
    active: u32,
}

#[derive(Debug, Clone)]
pub struct Dispatcher {
    /// Workers by id, in id order (placement is deterministic).
    workers: BTreeMap<Name, Worker>,
    /// Invariant: the free slots of all workers.
    free_slots: u32,
    pools: HashMap<Name, Pool>,
    dags: HashMap<Name, DagUsage>,
    queues: HashMap<QueueId, BTreeMap<Rank, TaskInstanceKey>>,
    /// The best rank of each non-empty queue.
    heads: BTreeSet<(Rank, QueueId)>,
    /// At most one waiting request per task instance: the newest attempt.
    waiting: HashMap<TaskInstanceKey, Waiting>,
    /// Started attempts per task instance; more than one only while a superseded attempt
    /// still holds its slot.
    started: HashMap<TaskInstanceKey, Vec<Placed>>,
    /// The newest (try, token) ever enqueued per task instance, so that an attempt that was
    /// superseded, or already ran and was released, is not started again by a late duplicate
    /// (found by the simulator, seed 54). Bounded by `ENQUEUED_REMEMBERED_MAX` through
    /// `enqueued_order`.
    newest_enqueued: HashMap<TaskInstanceKey, (u32, u64)>,
    /// Keys of `newest_enqueued` in the order they were first remembered.
    enqueued_order: VecDeque<TaskInstanceKey>,
    next_sequence: u64,
    stats: DispatchStats,
}

impl Default for Dispatcher {
    fn default() -> Dispatcher {
        let default_pool = Pool {
            slots: DEFAULT_POOL_SLOTS,
            used: 0,
        };
        let local = Worker::new(WorkerInfo::new(LOCAL_WORKER, WORKER_SLOTS_DEFAULT));
        Dispatcher {
            workers: [(Name::from(LOCAL_WORKER), local)].into_iter().collect(),
            free_slots: WORKER_SLOTS_DEFAULT,
            pools: [(Name::from(DEFAULT_POOL), default_pool)]
                .into_iter()
                .collect(),
            dags: HashMap::new(),
            queues: HashMap::new(),
            heads: BTreeSet::new(),
            waiting: HashMap::new(),
            started: HashMap::new(),
            newest_enqueued: HashMap::new(),
            enqueued_order: VecDeque::new(),
            next_sequence: 0,
            stats: DispatchStats::default(),
        }
    }
}

impl Dispatcher {
    pub fn new() -> Dispatcher {
        Dispatcher::default()
    }

    pub fn handle(&mut self, input: DispatchInput) -> Vec<DispatchEffect> {
        let mut effects = Vec::new();
        match input {
            DispatchInput::Enqueue(request) => self.enqueue(request, &mut effects),
            DispatchInput::Release { attempt } => {
                self.release(&attempt.key, attempt.try_number, attempt.token)
            }
            DispatchInput::Cancel { key, token } => {
                let waiting = self.waiting.get(&key).map(|w| w.request.attempt.token);
                if waiting.is_some_and(|waiting| waiting <= token) {
                    self.remove_waiting(&key);
                } else {
                    self.stats.unknown_cancels += 1;
                }
            }
            DispatchInput::SetPool { name, slots } => {
                self.pools
                    .entry(name.into())
                    .or_insert(Pool { slots, used: 0 })
                    .slots = slots;
            }
            DispatchInput::SetDagLimit {
                dag_id,
                max_active_tasks,
            } => {
                self.dags.entry(dag_id.into()).or_default().limit = Some(max_active_tasks);
            }
            DispatchInput::SetWorkerSlots { count } => {
                self.worker_joined(WorkerInfo::new(LOCAL_WORKER, count))
            }
            DispatchInput::WorkerJoined(info) => self.worker_joined(info),
            DispatchInput::WorkerLeft { id } => {
                if let Some(worker) = self.workers.remove(id.as_str()) {
                    self.free_slots -= worker.free.len() as u32;
                }
            }
        }
        self.start_ready(&mut effects);
        effects
    }

    pub fn stats(&self) -> DispatchStats {
        let unknown = self
            .waiting
            .values()
            .filter(|w| !self.pools.contains_key(&w.queue.pool));
        DispatchStats {
            waiting_for_unknown_pool: unknown.count() as u64,
            waiting_for_unserved_queue: self.waiting_unserved(),
            ..self.stats
        }
    }

    /// Requests waiting for a queue that no worker serves. Costs one check per non-empty
    /// (pool, DAG, queue) queue, not one per request.
    pub fn waiting_unserved(&self) -> u64 {
        self.queues
            .iter()
            .filter(|(queue, _)| {
                !self
                    .workers
                    .values()
                    .any(|worker| worker.info.serves(&queue.queue))
            })
            .map(|(_, entries)| entries.len() as u64)
            .sum()
    }

    /// Requests waiting for a slot.
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// Attempts started and not yet released.
    pub fn started_len(&self) -> usize {
        self.started.values().map(Vec::len).sum()
    }

    /// The workers, by id.
    pub fn workers(&self) -> impl Iterator<Item = &WorkerInfo> {
        self.workers.values().map(|worker| &worker.info)
    }

    fn worker_joined(&mut self, info: WorkerInfo) {
        let known = self.workers.len();
        match self.workers.get_mut(&info.id) {
            Some(worker) => {
                self.free_slots -= worker.free.len() as u32;
                worker.reshape(info);
                self.free_slots += worker.free.len() as u32;
            }
            None if known >= WORKERS_MAX => self.stats.workers_refused += 1,
            None => {
                let worker = Worker::new(info);
                self.free_slots += worker.free.len() as u32;
                self.workers.insert(worker.info.id.clone(), worker);
            }
        }
    }

    /// Pool slots in use, or `None` for an unknown pool.
    pub fn pool_used(&self, pool: &str) -> Option<u32> {
        self.pools.get(pool).map(|pool| pool.used)
    }

    fn enqueue(&mut self, request: DispatchRequest, effects: &mut Vec<DispatchEffect>) {
        let attempt = request.attempt.version();
        let is_started = self
            .started
            .get(&request.attempt.key)
            .into_iter()
            .flatten()
            .any(|started| started.request.attempt.version() == attempt);
        if is_started {
            self.stats.duplicate_enqueues += 1;
            return;
        }
        match self.newest_enqueued.get(&request.attempt.key).copied() {
            Some(newest) if newest == attempt => {
                // Queued, started, or already ran and released: never start it twice.
                self.stats.duplicate_enqueues += 1;
                return;
            }
            Some(newest) if newest > attempt => {
                self.stats.stale_enqueues += 1;
                return;
            }
            _ => self.remember_enqueued(&request.attempt.key, attempt),
        }
        if let Some(waiting) = self.waiting.get(&request.attempt.key) {
            let queued = waiting.request.attempt.version();
            if queued == attempt {
                self.stats.duplicate_enqueues += 1;
                return;
            }
            if queued > attempt {
                self.stats.stale_enqueues += 1;
                return;
            }
            // A newer attempt (a new token after recovery) replaces the queued one.
            self.remove_waiting(&request.attempt.key);
        }
        let superseded = self.started.get(&request.attempt.key).into_iter().flatten();
        effects.extend(
            superseded
                .filter(|started| started.request.attempt.version() < attempt)
                .map(|started| DispatchEffect::Stop(started.request.clone())),
        );
        self.push_waiting(request);
    }

    fn remember_enqueued(&mut self, key: &TaskInstanceKey, attempt: (u32, u64)) {
        if self.newest_enqueued.insert(key.clone(), attempt).is_none() {
            self.enqueued_order.push_back(key.clone());
        }
        while self.enqueued_order.len() > ENQUEUED_REMEMBERED_MAX {
            if let Some(oldest) = self.enqueued_order.pop_front() {
                self.newest_enqueued.remove(&oldest);
            }
        }
    }

    fn push_waiting(&mut self, request: DispatchRequest) {
        let rank = Rank::of(&request, self.next_sequence);
        self.next_sequence += 1;
        let queue = QueueId {
            pool: request.pool.clone(),
            dag_id: request.attempt.key.dag_id.clone(),
            queue: request.queue.clone(),
        };
        let key = request.attempt.key.clone();
        self.update_queue(&queue, |entries| {
            entries.insert(rank, key.clone());
        });
        self.waiting.insert(
            key,
            Waiting {
                queue,
                rank,
                request,
            },
        );
    }

    fn remove_waiting(&mut self, key: &TaskInstanceKey) -> Option<DispatchRequest> {
        let waiting = self.waiting.remove(key)?;
        self.update_queue(&waiting.queue, |entries| {
            entries.remove(&waiting.rank);
        });
        Some(waiting.request)
    }

    /// Changes one queue and keeps `heads` and `queues` in step with it.
    fn update_queue(
        &mut self,
        queue: &QueueId,
        change: impl FnOnce(&mut BTreeMap<Rank, TaskInstanceKey>),
    ) {
        let entries = self.queues.entry(queue.clone()).or_default();
        let head_before = entries.first_key_value().map(|(rank, _)| *rank);
        change(entries);
        let head_after = entries.first_key_value().map(|(rank, _)| *rank);
        if entries.is_empty() {
            self.queues.remove(queue);
        }
        if head_before != head_after {
            if let Some(rank) = head_before {
                self.heads.remove(&(rank, queue.clone()));
            }
            if let Some(rank) = head_after {
                self.heads.insert((rank, queue.clone()));
            }
        }
    }

    fn release(&mut self, key: &TaskInstanceKey, try_number: u32, token: u64) {
        let Some(attempts) = self.started.get_mut(key) else {
            // "Or was never started": a waiting request of that attempt is withdrawn.
            let waiting = self.waiting.get(key).map(|w| w.request.attempt.version());
            if waiting == Some((try_number, token)) {
                self.remove_waiting(key);
            } else {
                self.stats.unknown_releases += 1;
            }
            return;
        };
        let Some(position) = attempts
            .iter()
            .position(|a| a.request.attempt.version() == (try_number, token))
        else {
            self.stats.unknown_releases += 1;
            return;
        };
        let Placed {
            request,
            worker,
            slot,
        } = attempts.remove(position);
        if attempts.is_empty() {
            self.started.remove(key);
        }
        if let Some(worker) = self.workers.get_mut(&worker) {
            worker.taken.remove(&slot);
            // A slot beyond a shrunk worker's count is not given back.
            if slot < worker.info.slots {
                worker.free.push(slot);
                self.free_slots += 1;
            }
        }
        if let Some(pool) = self.pools.get_mut(&request.pool) {
            pool.used = pool.used.saturating_sub(request.pool_slots);
        }
        if let Some(dag) = self.dags.get_mut(&key.dag_id) {
            dag.active = dag.active.saturating_sub(1);
        }
    }

    fn start_ready(&mut self, effects: &mut Vec<DispatchEffect>) {
        while self.free_slots > 0 {
            let Some(queue) = self.best_startable_queue() else {
                break;
            };
            let Some(key) = self
                .queues
                .get(&queue)
                .and_then(|q| q.values().next().cloned())
            else {
                break;
            };
            let Some(request) = self.remove_waiting(&key) else {
                break;
            };
            let Some((worker, slot)) = self.take_slot(&queue.queue) else {
                break;
            };
            self.mark_started(&request, &worker, slot);
            effects.push(DispatchEffect::Start {
                request,
                worker,
                slot,
            });
        }
    }

    /// The first worker (by id) that serves `queue` and has a free slot.
    fn worker_for(&self, queue: &str) -> Option<&Name> {
        self.workers
            .iter()
            .find(|(_, worker)| !worker.free.is_empty() && worker.info.serves(queue))
            .map(|(id, _)| id)
    }

    fn take_slot(&mut self, queue: &str) -> Option<(Name, u32)> {
        let id = self.worker_for(queue)?.clone();
        let worker = self.workers.get_mut(&id)?;
        let slot = worker.free.pop()?;
        worker.taken.insert(slot);
        self.free_slots -= 1;
        Some((id, slot))
    }

    /// The queue whose head ranks best among the heads that fit their pool and DAG limits.
    fn best_startable_queue(&self) -> Option<QueueId> {
        self.heads
            .iter()
            .find(|(_, queue)| self.head_fits(queue))
            .map(|(_, queue)| queue.clone())
    }

    fn head_fits(&self, queue: &QueueId) -> bool {
        let Some(pool) = self.pools.get(&queue.pool) else {
            return false;
        };
        let Some(key) = self.queues.get(queue).and_then(|q| q.values().next()) else {
            return false;
        };
        let Some(waiting) = self.waiting.get(key) else {
            return false;
        };
        let pool_free = pool.slots.saturating_sub(pool.used);
        let dag = self.dags.get(&queue.dag_id);
        let dag_limit = dag
            .and_then(|d| d.limit)
            .unwrap_or(DAG_ACTIVE_TASKS_DEFAULT);
        let dag_active = dag.map_or(0, |d| d.active);
        waiting.request.pool_slots <= pool_free
            && dag_active < dag_limit
            && self.worker_for(&queue.queue).is_some()
    }

    fn mark_started(&mut self, request: &DispatchRequest, worker: &Name, slot: u32) {
        if let Some(pool) = self.pools.get_mut(&request.pool) {
            pool.used += request.pool_slots;
        }
        self.dags
            .entry(request.attempt.key.dag_id.clone())
            .or_default()
            .active += 1;
        self.started
            .entry(request.attempt.key.clone())
            .or_default()
            .push(Placed {
                request: request.clone(),
                worker: worker.clone(),
                slot,
            });
    }
}

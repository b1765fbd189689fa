//! The Dispatcher actor: runs the core dispatcher (priorities, pools, `max_active_tasks`) and
//! hands started attempts to idle worker slots: the node's own (`LOCAL_WORKER`, through their
//! handles) and those of remote workers (`weft worker`, remote actors of a `ractor_cluster`
//! session, see `remote_slot.rs`). A remote slot's reports come back as answers to the polls
//! this actor keeps outstanding (one per slot); they reach the attempt's task actor through
//! here, once checked against the worker and session the attempt was placed on.

use crate::messages::{
    AttemptAssignment, DispatcherMsg, Json, RemoteSlotMsg, RemoteWorker, SlotCast, SlotPoll,
    SlotReport, TaskMsg, WorkerSlotArgs, WorkerSlotMsg,
};
use crate::shared::Shared;
use crate::worker_slot::SlotHandle;
use foldhash::{HashMap, HashMapExt};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use weft_core::dispatch::{DispatchEffect, DispatchInput, Dispatcher, WorkerInfo, LOCAL_WORKER};
use weft_core::ids::{AttemptId, Name, TaskInstanceKey};

/// Attempts waiting for a slot; beyond this, new requests are refused (reported lost to their
/// runs, which retry them as the policy allows) rather than growing memory without bound.
pub const DISPATCH_QUEUE_MAX: usize = 1_000_000;

pub(crate) struct DispatcherActor;

/// The node's own slots, as the core's worker [`LOCAL_WORKER`].
fn local_worker(slots: usize, queues: &[String]) -> WorkerInfo {
    WorkerInfo {
        queues: queues
            .iter()
            .map(|queue| Name::from(queue.as_str()))
            .collect(),
        ..WorkerInfo::new(LOCAL_WORKER, slots as u32)
    }
}

/// Where an attempt runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// One of the node's own slots.
    Local(usize),
    /// A slot of a remote worker, in one session with it (the slot's `current` says which
    /// assignment number it has).
    Remote {
        worker: Name,
        session: u64,
        slot: u32,
    },
}

/// How long the node waits for a remote slot to answer a poll before it asks again (the slot
/// answers within its heartbeat interval, at most `HEARTBEAT_MS_MAX`). Asking again is
/// harmless (the slot sends again what was not acknowledged) and keeps the slot's lease fresh
/// when an answer was lost: it must stay below the lease.
pub const POLL_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1_500);

/// A remote worker the dispatcher places attempts on.
struct Remote {
    worker: RemoteWorker,
    joined_at: weft_core::Timestamp,
    last_heartbeat: Option<weft_core::Timestamp>,
    slots: Vec<RemoteSlotState>,
    /// Reports refused: of another session, or about an attempt not placed on this worker.
    reports_refused: u64,
}

/// Attempts remembered per remote worker after they were placed on it, so that their logs,
/// which may arrive after their end, are still taken.
const PLACED_REMEMBERED_MAX: usize = 1024;

/// The attempts last placed on each remote worker (across its sessions), oldest first.
#[derive(Default)]
struct Placed {
    by_worker: HashMap<Name, std::collections::VecDeque<AttemptId>>,
}

impl Placed {
    fn remember(&mut self, worker: &Name, attempt: AttemptId) {
        let placed = self.by_worker.entry(worker.clone()).or_default();
        if placed.len() >= PLACED_REMEMBERED_MAX {
            placed.pop_front();
        }
        placed.push_back(attempt);
    }

    fn contains(&self, worker: &str, attempt: &AttemptId) -> bool {
        self.by_worker
            .get(worker)
            .is_some_and(|placed| placed.contains(attempt))
    }
}

struct RemoteSlotState {
    /// The last assignment's number.
    seq: u64,
    /// The highest report number handled (a report sent again is recognised by it).
    handled: u64,
    /// The attempt placed here, by (task instance, token), and its assignment number.
    current: Option<(TaskInstanceKey, u64, u64)>,
    poll: tokio::task::AbortHandle,
}

/// An attempt a worker slot is running.
struct RunningAttempt {
    place: Place,
    try_number: u32,
    /// The attempt's task actor.
    reply: ActorRef<TaskMsg>,
    started_at: weft_core::Timestamp,
}

/// An attempt waiting for a slot.
struct Waiting {
    assignment: Arc<AttemptAssignment>,
    /// The attempt's task actor.
    reply: ActorRef<TaskMsg>,
    since: std::time::Instant,
}

/// Tells a task actor that its attempt will never report.
fn report_lost(
    reply: &ActorRef<TaskMsg>,
    attempt: AttemptId,
    reason: &str,
    started_at: Option<weft_core::Timestamp>,
) {
    report_lost_on(reply, attempt, reason, started_at, None);
}

/// [`report_lost`] for an attempt placed on the remote worker `worker`.
fn report_lost_on(
    reply: &ActorRef<TaskMsg>,
    attempt: AttemptId,
    reason: &str,
    started_at: Option<weft_core::Timestamp>,
    worker: Option<String>,
) {
    let lost = SlotReport::Lost {
        attempt,
        reason: reason.to_string(),
        started_at,
        worker,
    };
    let _ = reply.cast(TaskMsg::Slot(lost));
}

pub(crate) struct DispatcherState {
    core: Dispatcher,
    waiting: HashMap<(TaskInstanceKey, u32), Waiting>,
    /// The slot of every attempt started and not yet freed, by (task instance, token), so a
    /// superseded attempt can be stopped. Bounded by the number of slots.
    running: HashMap<(TaskInstanceKey, u64), RunningAttempt>,
    slots: Vec<ActorRef<WorkerSlotMsg>>,
    /// What each slot runs, shared with its actor and its attempt's task.
    handles: Vec<SlotHandle>,
    /// The remote workers, by name.
    remote: HashMap<Name, Remote>,
    placed: Placed,
    myself: ActorRef<DispatcherMsg>,
    shared: Arc<Shared>,
}

impl Actor for DispatcherActor {
    type Msg = DispatcherMsg;
    type State = DispatcherState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        myself: ActorRef<DispatcherMsg>,
        shared: Arc<Shared>,
    ) -> Result<DispatcherState, ActorProcessingErr> {
        let count = shared.config.worker_slots.max(1);
        let handles: Vec<SlotHandle> = (0..count).map(SlotHandle::new).collect();
        let mut slots = Vec::with_capacity(count);
        for handle in &handles {
            let args = WorkerSlotArgs {
                handle: handle.clone(),
                dispatcher: myself.clone(),
            };
            let slot = crate::tree::spawn_worker_slot(args, myself.get_cell()).await?;
            slots.push(slot);
        }
        let mut core = Dispatcher::new();
        // The node's own slots are one worker among possible others.
        let local = local_worker(count, &shared.config.worker_queues);
        core.handle(DispatchInput::WorkerJoined(local));
        for pool in shared.store.pools().await? {
            core.handle(DispatchInput::SetPool {
                name: pool.name,
                slots: pool.slots,
            });
        }
        Ok(DispatcherState {
            core,
            waiting: HashMap::new(),
            running: HashMap::new(),
            slots,
            handles,
            remote: HashMap::new(),
            placed: Placed::default(),
            myself,
            shared,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<DispatcherMsg>,
        message: DispatcherMsg,
        state: &mut DispatcherState,
    ) -> Result<(), ActorProcessingErr> {
        let effects = match message {
            DispatcherMsg::Enqueue { assignment, reply } => {
                if state.waiting.len() >= DISPATCH_QUEUE_MAX {
                    metrics::counter!("weft_dispatch_rejected_total").increment(1);
                    let attempt = assignment.request.attempt.clone();
                    report_lost(&reply, attempt, "dispatch queue full", None);
                    return Ok(());
                }
                let request = assignment.request.clone();
                let waiting = Waiting {
                    assignment,
                    reply,
                    since: std::time::Instant::now(),
                };
                state.waiting.insert(
                    (request.attempt.key.clone(), request.attempt.try_number),
                    waiting,
                );
                state.core.handle(DispatchInput::Enqueue(request))
            }
            DispatcherMsg::Adopt { attempt, reply } => {
                state.adopt(attempt, reply);
                Vec::new()
            }
            DispatcherMsg::SlotFree { attempt } => {
                // Only once per attempt: a slot that died after freeing itself may have had
                // its attempts released already (supervision events overtake messages), and
                // a second release would list the slot as idle twice.
                if state
                    .running
                    .remove(&(attempt.key.clone(), attempt.token))
                    .is_none()
                {
                    return Ok(());
                }
                state.core.handle(DispatchInput::Release { attempt })
            }
            DispatcherMsg::Cancel { key, token } => {
                state.waiting.retain(|(waiting_key, _), waiting| {
                    *waiting_key != key || waiting.assignment.request.attempt.token > token
                });
                // A running attempt stops too (a timeout, a cleared or marked task, a run
                // rebuilt while the attempt ran); its slot frees itself as usual.
                state.stop(&key, token, "cancelled");
                state.core.handle(DispatchInput::Cancel { key, token })
            }
            DispatcherMsg::SetPool { name, slots } => {
                state.core.handle(DispatchInput::SetPool { name, slots })
            }
            DispatcherMsg::SetDagLimit {
                dag_id,
                max_active_tasks,
            } => state.core.handle(DispatchInput::SetDagLimit {
                dag_id,
                max_active_tasks,
            }),
            DispatcherMsg::Workers { reply } => {
                let _ = reply.send(state.view());
                Vec::new()
            }
            DispatcherMsg::RemoteJoined { worker } => state.remote_joined(worker),
            DispatcherMsg::RemoteLeft { name, session } => {
                state.remote_left(&Name::from(name.as_str()), session, "its link closed")
            }
            DispatcherMsg::RemoteAttemptPlaced {
                worker,
                attempt,
                reply,
            } => {
                let _ = reply.send(state.placed.contains(&worker, &attempt));
                Vec::new()
            }
            DispatcherMsg::Polled {
                name,
                session,
                slot,
                poll,
            } => state.polled(&name, session, slot, poll),
            DispatcherMsg::SetLocalQueues { queues } => {
                let info = local_worker(state.handles.len(), &queues);
                state.core.handle(DispatchInput::WorkerJoined(info))
            }
            #[cfg(any(test, feature = "fault-injection"))]
            DispatcherMsg::CrashSlot { index } => {
                if let Some(slot) = state.slots.get(index) {
                    let _ = slot.cast(WorkerSlotMsg::Crash);
                }
                Vec::new()
            }
        };
        state.perform(effects);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<DispatcherMsg>,
        event: SupervisionEvent,
        state: &mut DispatcherState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, error) = event {
            // A slot died: replace it, report its attempt lost to its run (which retries it
            // as the policy allows) and give its capacity back.
            if let Some(index) = state
                .slots
                .iter()
                .position(|slot| slot.get_id() == cell.get_id())
            {
                tracing::error!(slot = index, %error, "worker slot failed, restarting it");
                // An attempt started in the slot while its actor was dying stops too: every
                // attempt of the slot is reported lost below.
                state.handles[index].abort();
                let args = WorkerSlotArgs {
                    handle: state.handles[index].clone(),
                    dispatcher: myself.clone(),
                };
                let slot = crate::tree::spawn_worker_slot(args, myself.get_cell()).await?;
                state.slots[index] = slot;
                let effects = state.slot_lost(index);
                state.perform(effects);
            }
        }
        Ok(())
    }
}

impl DispatcherState {
    fn perform(&mut self, effects: Vec<DispatchEffect>) {
        metrics::gauge!("weft_dispatch_queue_depth").set(self.waiting.len() as f64);
        let unserved = self.core.waiting_unserved();
        metrics::gauge!("weft_dispatch_waiting_unserved_queue").set(unserved as f64);
        // A start that fails gives its capacity back, which may start another request: those
        // effects join the list (a loop, not a recursion, however many fail in a row).
        let mut effects = std::collections::VecDeque::from(effects);
        while let Some(effect) = effects.pop_front() {
            match effect {
                DispatchEffect::Start {
                    request,
                    worker,
                    slot,
                } => effects.extend(self.start(request, &worker, slot as usize)),
                DispatchEffect::Stop(request) => {
                    self.stop(&request.attempt.key, request.attempt.token, "superseded")
                }
            }
        }
    }

    /// The attempt of a dead slot never reports: report it lost and release its capacity,
    /// which gives the slot back to the core (its replacement is already spawned).
    fn slot_lost(&mut self, index: usize) -> Vec<DispatchEffect> {
        let lost: Vec<(TaskInstanceKey, u64)> = self
            .running
            .iter()
            .filter(|(_, attempt)| attempt.place == Place::Local(index))
            .map(|(id, _)| id.clone())
            .collect();
        let mut effects = Vec::new();
        for (key, token) in lost {
            let Some(attempt) = self.running.remove(&(key.clone(), token)) else {
                continue;
            };
            metrics::counter!("weft_attempts_lost_total", "reason" => "worker_slot_died")
                .increment(1);
            let id = AttemptId::new(key, attempt.try_number, token);
            let started_at = Some(attempt.started_at);
            report_lost(&attempt.reply, id.clone(), "worker slot died", started_at);
            effects.extend(self.core.handle(DispatchInput::Release { attempt: id }));
        }
        effects
    }

    /// Starts `request` where the core placed it; what the core decides when a start fails
    /// and gives its capacity back is returned.
    fn start(
        &mut self,
        request: weft_core::dag_run::DispatchRequest,
        worker: &str,
        slot: usize,
    ) -> Vec<DispatchEffect> {
        let Some(waiting) = self
            .waiting
            .remove(&(request.attempt.key.clone(), request.attempt.try_number))
        else {
            // Cancelled while queued: give the capacity straight back.
            return self.core.handle(DispatchInput::Release {
                attempt: request.attempt,
            });
        };
        if worker != LOCAL_WORKER {
            return self.start_remote(request, waiting, worker, slot as u32);
        }
        if slot >= self.handles.len() {
            tracing::error!(
                worker,
                slot,
                "dispatcher placed an attempt on an unknown slot"
            );
            metrics::counter!("weft_invariant_violations_total", "name" => "unknown_slot")
                .increment(1);
            let reason = "placed on an unknown worker slot";
            report_lost(&waiting.reply, request.attempt.clone(), reason, None);
            return self.core.handle(DispatchInput::Release {
                attempt: request.attempt,
            });
        }
        metrics::counter!("weft_dispatched_total").increment(1);
        metrics::histogram!("weft_dispatch_latency_seconds")
            .record(waiting.since.elapsed().as_secs_f64());
        let Waiting {
            assignment, reply, ..
        } = waiting;
        let attempt = RunningAttempt {
            place: Place::Local(slot),
            try_number: request.attempt.try_number,
            reply: reply.clone(),
            started_at: crate::shared::now(),
        };
        self.running
            .insert((request.attempt.key, request.attempt.token), attempt);
        self.handles[slot].start(&self.shared, &self.myself, assignment, reply);
        Vec::new()
    }

    /// Points the reports of `attempt` at `reply`, a task actor that took it up (its own task
    /// actor died, or its run was rebuilt): at its waiting request, or at the slot running it.
    /// An attempt found in neither (it ended and its end went to the task actor that died, or
    /// it was never enqueued, or this node restarted since) is reported lost to `reply`.
    fn adopt(&mut self, attempt: AttemptId, reply: ActorRef<TaskMsg>) {
        let waiting_key = (attempt.key.clone(), attempt.try_number);
        if let Some(waiting) = self
            .waiting
            .get_mut(&waiting_key)
            .filter(|waiting| waiting.assignment.request.attempt.token == attempt.token)
        {
            waiting.reply = reply;
            metrics::counter!("weft_attempts_adopted_total", "where" => "waiting").increment(1);
            self.shared.attempts_adopted.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let running_key = (attempt.key.clone(), attempt.token);
        if let Some(running) = self.running.get_mut(&running_key) {
            // A remote attempt's reports pass through here: pointing them elsewhere is all.
            let readopted = match running.place {
                Place::Local(slot) => self.handles[slot].readopt(attempt.token, &reply),
                Place::Remote { .. } => true,
            };
            if readopted {
                running.reply = reply;
                metrics::counter!("weft_attempts_adopted_total", "where" => "running").increment(1);
                self.shared.attempts_adopted.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        metrics::counter!("weft_attempts_lost_total", "reason" => "not_found_for_adoption")
            .increment(1);
        let reason = "the attempt was not found where it was handed (it ended unheard, or its worker restarted)";
        report_lost(&reply, attempt, reason, None);
    }

    /// Stops a running attempt (superseded by a newer token, or cancelled by its run); the
    /// slot frees itself as usual.
    fn stop(&mut self, key: &TaskInstanceKey, token: u64, reason: &'static str) {
        let Some(attempt) = self.running.get(&(key.clone(), token)) else {
            return;
        };
        metrics::counter!("weft_attempts_stopped_total", "reason" => reason).increment(1);
        match &attempt.place {
            Place::Local(slot) => {
                let _ = self.slots[*slot].cast(WorkerSlotMsg::Kill { token });
            }
            Place::Remote {
                worker,
                session,
                slot,
            } => {
                let target = self
                    .remote
                    .get(worker)
                    .filter(|remote| remote.worker.session == *session)
                    .and_then(|remote| remote.worker.slots.get(*slot as usize));
                if let Some(target) = target {
                    let kill = SlotCast::Kill {
                        session: *session,
                        attempt: AttemptId::new(key.clone(), attempt.try_number, token),
                    };
                    let _ = target.cast(RemoteSlotMsg::Cast(kill));
                }
            }
        }
    }
}

/// Keeps one poll outstanding at a remote slot and hands each answer to the dispatcher, until
/// the session ends (the remote actor is gone) or the dispatcher stops the loop.
fn spawn_poll(
    dispatcher: ActorRef<DispatcherMsg>,
    slot: ActorRef<RemoteSlotMsg>,
    name: Name,
    session: u64,
    index: u32,
) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let mut ack = 0;
        loop {
            let answer = slot
                .call(
                    |reply| RemoteSlotMsg::Poll {
                        session,
                        ack,
                        reply,
                    },
                    Some(POLL_TIMEOUT),
                )
                .await;
            match answer {
                Ok(ractor::rpc::CallResult::Success(poll)) => {
                    if let Some((last, _)) = poll.reports.last() {
                        ack = ack.max(*last);
                    }
                    let polled = DispatcherMsg::Polled {
                        name: name.clone(),
                        session,
                        slot: index,
                        poll,
                    };
                    if dispatcher.cast(polled).is_err() {
                        return;
                    }
                }
                // Lost on the way, or the slot is slow: ask again (the slot sends again what
                // was not acknowledged).
                Ok(ractor::rpc::CallResult::Timeout) => {}
                // The slot dropped the call (another session), or the session is gone; the
                // session's end reaches the dispatcher on its own. A pause keeps this loop
                // from spinning meanwhile.
                Ok(ractor::rpc::CallResult::SenderError) => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await
                }
                Err(_) => return,
            }
        }
    })
    .abort_handle()
}

impl DispatcherState {
    /// Hands `waiting` to slot `slot` of the remote worker `worker`.
    fn start_remote(
        &mut self,
        request: weft_core::dag_run::DispatchRequest,
        waiting: Waiting,
        worker: &str,
        slot: u32,
    ) -> Vec<DispatchEffect> {
        let name = Name::from(worker);
        let target = self.remote.get_mut(&name).and_then(|remote| {
            let session = remote.worker.session;
            let actor = remote.worker.slots.get(slot as usize)?.clone();
            let state = remote.slots.get_mut(slot as usize)?;
            state.seq += 1;
            state.current = Some((
                request.attempt.key.clone(),
                request.attempt.token,
                state.seq,
            ));
            Some((actor, session, state.seq))
        });
        // `None`: no such slot; `Some(Err(alive))`: the cast failed, with the slot's proxy
        // still alive (the assignment did not encode) or not (its session is gone).
        let sent = target.map(|(actor, session, seq)| {
            let assign = SlotCast::Assign {
                session,
                seq,
                assignment: Json(Box::new((*waiting.assignment).clone())),
            };
            match actor.cast(RemoteSlotMsg::Cast(assign)) {
                Ok(()) => Ok(session),
                Err(_) => Err(matches!(
                    actor.get_status(),
                    ractor::ActorStatus::Running | ractor::ActorStatus::Starting
                )),
            }
        });
        let session = match sent {
            Some(Ok(session)) => session,
            failed => {
                let encodes = !matches!(failed, Some(Err(true)));
                let reason = if encodes {
                    "the remote worker slot could not be reached"
                } else {
                    "the assignment does not fit in a remote message (at most 1 MiB, results read included)"
                };
                tracing::error!(worker, slot, reason, "attempt not handed to a remote slot");
                metrics::counter!("weft_attempts_lost_total", "reason" => "remote_slot_unreachable")
                    .increment(1);
                if let Some(state) = self.remote_slot(&name, slot) {
                    state.current = None;
                }
                report_lost(&waiting.reply, request.attempt.clone(), reason, None);
                let mut effects = self.core.handle(DispatchInput::Release {
                    attempt: request.attempt,
                });
                // A worker that cannot be reached gets nothing more: its session is over,
                // which the link's end will confirm.
                let session = self.remote.get(&name).map(|remote| remote.worker.session);
                if let (true, Some(session)) = (encodes, session) {
                    let why = "its slot could not be reached";
                    effects.extend(self.remote_left(&name, session, why));
                }
                return effects;
            }
        };
        self.placed.remember(&name, request.attempt.clone());
        metrics::counter!("weft_dispatched_total").increment(1);
        metrics::counter!("weft_remote_assigned_total", "worker" => worker.to_string())
            .increment(1);
        metrics::histogram!("weft_dispatch_latency_seconds")
            .record(waiting.since.elapsed().as_secs_f64());
        let attempt = RunningAttempt {
            place: Place::Remote {
                worker: name,
                session,
                slot,
            },
            try_number: request.attempt.try_number,
            reply: waiting.reply,
            started_at: crate::clock::now(),
        };
        self.running
            .insert((request.attempt.key, request.attempt.token), attempt);
        Vec::new()
    }

    /// A remote worker's session is ready: place attempts on its slots from now on. A worker
    /// that comes back while its old session is still known leaves that session first.
    fn remote_joined(&mut self, worker: RemoteWorker) -> Vec<DispatchEffect> {
        let name = Name::from(worker.name.as_str());
        let mut effects = Vec::new();
        if let Some(old) = self.remote.get(&name).map(|remote| remote.worker.session) {
            effects.extend(self.remote_left(&name, old, "it joined again in a new session"));
        }
        if name.as_str() == LOCAL_WORKER {
            tracing::warn!("a remote worker may not be named `{LOCAL_WORKER}`");
            return effects;
        }
        tracing::info!(
            worker = %name,
            session = worker.session,
            address = %worker.address,
            slots = worker.slots.len(),
            queues = ?worker.queues,
            "remote worker joined"
        );
        let slots = worker
            .slots
            .iter()
            .enumerate()
            .map(|(index, slot)| RemoteSlotState {
                seq: 0,
                handled: 0,
                current: None,
                poll: spawn_poll(
                    self.myself.clone(),
                    slot.clone(),
                    name.clone(),
                    worker.session,
                    index as u32,
                ),
            })
            .collect();
        let info = remote_info(&worker);
        self.remote.insert(
            name,
            Remote {
                worker,
                joined_at: crate::clock::now(),
                last_heartbeat: None,
                slots,
                reports_refused: 0,
            },
        );
        effects.extend(self.core.handle(DispatchInput::WorkerJoined(info)));
        effects
    }

    /// A remote worker's session ended: every attempt on it is lost (its run retries it as the
    /// policy allows), and nothing more is placed on it.
    fn remote_left(&mut self, name: &Name, session: u64, why: &str) -> Vec<DispatchEffect> {
        if self
            .remote
            .get(name)
            .is_none_or(|remote| remote.worker.session != session)
        {
            return Vec::new();
        }
        let Some(remote) = self.remote.remove(name) else {
            return Vec::new();
        };
        for slot in &remote.slots {
            slot.poll.abort();
        }
        let lost: Vec<(TaskInstanceKey, u64)> = self
            .running
            .iter()
            .filter(|(_, attempt)| {
                matches!(&attempt.place, Place::Remote { worker, session: placed, .. }
                    if worker == name && *placed == session)
            })
            .map(|(id, _)| id.clone())
            .collect();
        tracing::warn!(
            worker = %name,
            session,
            attempts = lost.len(),
            "remote worker left: {why}"
        );
        let mut effects = self.core.handle(DispatchInput::WorkerLeft {
            id: name.to_string(),
        });
        let reason = format!("its worker {name} left: {why}");
        for (key, token) in lost {
            effects.extend(self.lose_remote(key, token, &reason, "remote_worker_left"));
        }
        effects
    }

    /// A remote attempt that will never report: its task actor hears it lost (a lost try,
    /// retried as the policy allows) and its capacity is released.
    fn lose_remote(
        &mut self,
        key: TaskInstanceKey,
        token: u64,
        reason: &str,
        counted_as: &'static str,
    ) -> Vec<DispatchEffect> {
        let Some(attempt) = self.running.remove(&(key.clone(), token)) else {
            return Vec::new();
        };
        metrics::counter!("weft_attempts_lost_total", "reason" => counted_as).increment(1);
        let id = AttemptId::new(key, attempt.try_number, token);
        let worker = match &attempt.place {
            Place::Remote { worker, .. } => Some(worker.to_string()),
            Place::Local(_) => None,
        };
        let started_at = Some(attempt.started_at);
        report_lost_on(&attempt.reply, id.clone(), reason, started_at, worker);
        self.core.handle(DispatchInput::Release { attempt: id })
    }

    /// A remote slot's answer to a poll: its reports (each handled once, and only when it is
    /// about the attempt placed on that very slot in that very session) and its heartbeat.
    fn polled(
        &mut self,
        name: &Name,
        session: u64,
        index: u32,
        poll: SlotPoll,
    ) -> Vec<DispatchEffect> {
        let Some(remote) = self
            .remote
            .get_mut(name)
            .filter(|remote| remote.worker.session == session)
        else {
            metrics::counter!("weft_remote_reports_refused_total", "why" => "session")
                .increment(poll.reports.len() as u64);
            return Vec::new();
        };
        remote.last_heartbeat = Some(crate::clock::now());
        metrics::counter!("weft_remote_polls_answered_total", "worker" => name.to_string())
            .increment(1);
        metrics::counter!("weft_remote_reports_total", "worker" => name.to_string())
            .increment(poll.reports.len() as u64);
        let mut effects = Vec::new();
        if poll.draining != remote.worker.draining {
            remote.worker.draining = poll.draining;
            tracing::info!(worker = %name, draining = poll.draining, "remote worker draining");
            effects.extend(
                self.core
                    .handle(DispatchInput::WorkerJoined(remote_info(&remote.worker))),
            );
        }
        for (number, Json(mut report)) in poll.reports {
            let Some(slot) = self.remote_slot(name, index) else {
                break;
            };
            if number <= slot.handled {
                continue;
            }
            slot.handled = number;
            let attempt = report.attempt().clone();
            let id = (attempt.key.clone(), attempt.token);
            // `current` is what `running` holds for this slot (set and cleared with it).
            let placed_here = slot
                .current
                .as_ref()
                .is_some_and(|(key, token, _)| (key, *token) == (&id.0, id.1));
            if !placed_here {
                if let Some(remote) = self.remote.get_mut(name) {
                    remote.reports_refused += 1;
                }
                tracing::warn!(worker = %name, %attempt, "remote report refused: not the attempt placed on that slot");
                metrics::counter!("weft_remote_reports_refused_total", "why" => "attempt", "worker" => name.to_string())
                    .increment(1);
                continue;
            }
            // Where it ran is the certificate's say, not the worker's.
            if let SlotReport::Finished { worker, .. } | SlotReport::Lost { worker, .. } =
                &mut report
            {
                *worker = Some(name.to_string());
            }
            let ends = !matches!(report, SlotReport::Started { .. });
            let reply = if ends {
                slot.current = None;
                self.running.remove(&id).map(|running| running.reply)
            } else {
                self.running.get(&id).map(|running| running.reply.clone())
            };
            if let Some(reply) = reply {
                let _ = reply.cast(TaskMsg::Slot(report));
            }
            if ends {
                effects.extend(self.core.handle(DispatchInput::Release { attempt }));
            }
        }
        // The heartbeat: an attempt placed on the slot that the slot has not run though it has
        // seen its assignment (or a later one) never arrived, or ended unreported: it is lost.
        let Some(slot) = self.remote_slot(name, index) else {
            return effects;
        };
        let missing = slot.current.clone().filter(|(key, token, seq)| {
            *seq <= poll.assigned_seq
                && poll
                    .running
                    .as_ref()
                    .is_none_or(|running| (&running.key, running.token) != (key, *token))
        });
        if let Some((key, token, _)) = missing {
            slot.current = None;
            let reason = format!("its worker {name} does not run it (its assignment was lost)");
            effects.extend(self.lose_remote(key, token, &reason, "remote_slot_never_ran"));
        }
        effects
    }

    /// Slot `index` of the remote worker `name`, in its current session.
    fn remote_slot(&mut self, name: &Name, index: u32) -> Option<&mut RemoteSlotState> {
        self.remote
            .get_mut(name)
            .and_then(|remote| remote.slots.get_mut(index as usize))
    }

    /// What the workers page shows.
    fn view(&self) -> crate::engine::WorkersView {
        let mut remote: Vec<crate::engine::RemoteWorkerView> = self
            .remote
            .values()
            .map(|remote| {
                let running: Vec<AttemptId> = self
                    .running
                    .iter()
                    .filter(|(_, attempt)| {
                        matches!(&attempt.place, Place::Remote { worker, session, .. }
                            if worker.as_str() == remote.worker.name && *session == remote.worker.session)
                    })
                    .map(|((key, token), attempt)| {
                        AttemptId::new(key.clone(), attempt.try_number, *token)
                    })
                    .collect();
                crate::engine::RemoteWorkerView {
                    name: remote.worker.name.clone(),
                    session: remote.worker.session,
                    address: remote.worker.address.clone(),
                    version: remote.worker.version.clone(),
                    queues: remote.worker.queues.clone(),
                    labels: remote.worker.labels.clone(),
                    slots: remote.worker.slots.len() as u32,
                    busy: running.len() as u32,
                    draining: remote.worker.draining,
                    joined_at: remote.joined_at,
                    last_heartbeat: remote.last_heartbeat,
                    running,
                    reports_refused: remote.reports_refused,
                }
            })
            .collect();
        remote.sort_by(|a, b| a.name.cmp(&b.name));
        crate::engine::WorkersView {
            workers: self.core.workers().cloned().collect(),
            waiting_unserved_queue: self.core.waiting_unserved(),
            remote,
        }
    }
}

/// A remote worker as the core dispatcher places on it: a draining one gets nothing new.
fn remote_info(worker: &RemoteWorker) -> WorkerInfo {
    let slots = if worker.draining {
        0
    } else {
        worker.slots.len() as u32
    };
    WorkerInfo {
        queues: worker
            .queues
            .iter()
            .map(|queue| Name::from(queue.as_str()))
            .collect(),
        labels: worker.labels.clone(),
        ..WorkerInfo::new(&worker.name, slots)
    }
}

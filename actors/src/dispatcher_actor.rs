//! The Dispatcher actor: runs the core dispatcher (priorities, pools, `max_active_tasks`) and
//! hands started attempts to idle worker slots.

use crate::messages::{
    AttemptAssignment, DispatcherMsg, SlotReport, TaskMsg, WorkerSlotArgs, WorkerSlotMsg,
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

/// An attempt a worker slot is running.
struct RunningAttempt {
    slot: usize,
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
    let lost = SlotReport::Lost {
        attempt,
        reason: reason.to_string(),
        started_at,
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
                let view = crate::engine::WorkersView {
                    workers: state.core.workers().cloned().collect(),
                    waiting_unserved_queue: state.core.waiting_unserved(),
                };
                let _ = reply.send(view);
                Vec::new()
            }
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
        for effect in effects {
            match effect {
                DispatchEffect::Start {
                    request,
                    worker,
                    slot,
                } => self.start(request, &worker, slot as usize),
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
            .filter(|(_, attempt)| attempt.slot == index)
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

    fn start(&mut self, request: weft_core::dag_run::DispatchRequest, worker: &str, slot: usize) {
        let Some(waiting) = self
            .waiting
            .remove(&(request.attempt.key.clone(), request.attempt.try_number))
        else {
            // Cancelled while queued: give the capacity straight back.
            self.core.handle(DispatchInput::Release {
                attempt: request.attempt,
            });
            return;
        };
        if worker != LOCAL_WORKER || slot >= self.handles.len() {
            // Only the local worker exists in this process; the core placed the attempt
            // elsewhere only if it was told of another worker, which nothing does yet.
            tracing::error!(
                worker,
                slot,
                "dispatcher placed an attempt on an unknown slot"
            );
            metrics::counter!("weft_invariant_violations_total", "name" => "unknown_slot")
                .increment(1);
            let reason = "placed on an unknown worker slot";
            report_lost(&waiting.reply, request.attempt.clone(), reason, None);
            self.core.handle(DispatchInput::Release {
                attempt: request.attempt,
            });
            return;
        }
        metrics::counter!("weft_dispatched_total").increment(1);
        metrics::histogram!("weft_dispatch_latency_seconds")
            .record(waiting.since.elapsed().as_secs_f64());
        let Waiting {
            assignment, reply, ..
        } = waiting;
        let attempt = RunningAttempt {
            slot,
            try_number: request.attempt.try_number,
            reply: reply.clone(),
            started_at: crate::shared::now(),
        };
        self.running
            .insert((request.attempt.key, request.attempt.token), attempt);
        self.handles[slot].start(&self.shared, &self.myself, assignment, reply);
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
            if self.handles[running.slot].readopt(attempt.token, &reply) {
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
        if let Some(attempt) = self.running.get(&(key.clone(), token)) {
            metrics::counter!("weft_attempts_stopped_total", "reason" => reason).increment(1);
            let _ = self.slots[attempt.slot].cast(WorkerSlotMsg::Kill { token });
        }
    }
}

//! The Dispatcher actor: runs the core dispatcher (priorities, pools, `max_active_tasks`) and
//! hands started attempts to idle worker slots.

use crate::shared::Shared;
use crate::task_actor::TaskMsg;
use crate::worker_slot::{AttemptAssignment, WorkerSlot, WorkerSlotArgs, WorkerSlotMsg};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::HashMap;
use std::sync::Arc;
use weft_core::dispatch::{DispatchEffect, DispatchInput, Dispatcher};
use weft_core::ids::TaskInstanceKey;

/// Attempts waiting for a slot; beyond this, new requests are refused (and retried by their
/// task actors) rather than growing memory without bound.
pub const DISPATCH_QUEUE_MAX: usize = 1_000_000;

pub(crate) enum DispatcherMsg {
    Enqueue {
        assignment: Box<AttemptAssignment>,
        reply: ActorRef<TaskMsg>,
    },
    SlotFree {
        slot: usize,
        key: TaskInstanceKey,
        try_number: u32,
        token: u64,
    },
    Cancel {
        key: TaskInstanceKey,
    },
    SetPool {
        name: String,
        slots: u32,
    },
    SetDagLimit {
        dag_id: String,
        max_active_tasks: u32,
    },
}

pub(crate) struct DispatcherActor;

pub(crate) struct DispatcherState {
    core: Dispatcher,
    waiting: HashMap<(TaskInstanceKey, u32), (Box<AttemptAssignment>, ActorRef<TaskMsg>)>,
    idle: Vec<usize>,
    slots: Vec<ActorRef<WorkerSlotMsg>>,
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
        let mut slots = Vec::with_capacity(count);
        for index in 0..count {
            let args = WorkerSlotArgs {
                shared: shared.clone(),
                index,
                dispatcher: myself.clone(),
            };
            let (slot, _) = Actor::spawn_linked(None, WorkerSlot, args, myself.get_cell()).await?;
            slots.push(slot);
        }
        let mut core = Dispatcher::new();
        core.handle(DispatchInput::SetWorkerSlots {
            count: count as u32,
        });
        for pool in shared.store.pools().await? {
            core.handle(DispatchInput::SetPool {
                name: pool.name,
                slots: pool.slots,
            });
        }
        Ok(DispatcherState {
            core,
            waiting: HashMap::new(),
            idle: (0..count).rev().collect(),
            slots,
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
                    let _ = reply.cast(TaskMsg::DispatchRefused {
                        try_number: assignment.request.try_number,
                        token: assignment.request.token,
                    });
                    return Ok(());
                }
                let request = assignment.request.clone();
                state.waiting.insert(
                    (request.key.clone(), request.try_number),
                    (assignment, reply),
                );
                state.core.handle(DispatchInput::Enqueue(request))
            }
            DispatcherMsg::SlotFree {
                slot,
                key,
                try_number,
                token,
            } => {
                state.idle.push(slot);
                state.core.handle(DispatchInput::Release {
                    key,
                    try_number,
                    token,
                })
            }
            DispatcherMsg::Cancel { key } => {
                state
                    .waiting
                    .retain(|(waiting_key, _), _| *waiting_key != key);
                state.core.handle(DispatchInput::Cancel { key })
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
        };
        metrics::gauge!("weft_dispatch_queue_depth").set(state.waiting.len() as f64);
        for effect in effects {
            let DispatchEffect::Start(request) = effect;
            state.start(request);
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<DispatcherMsg>,
        event: SupervisionEvent,
        state: &mut DispatcherState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, error) = event {
            // A slot died: replace it. Its attempt, if any, is recovered by its task actor
            // (the attempt never reports, so the run's timers or a restart settle it).
            if let Some(index) = state
                .slots
                .iter()
                .position(|slot| slot.get_id() == cell.get_id())
            {
                tracing::error!(slot = index, %error, "worker slot failed, restarting it");
                let args = WorkerSlotArgs {
                    shared: state.shared.clone(),
                    index,
                    dispatcher: myself.clone(),
                };
                let (slot, _) =
                    Actor::spawn_linked(None, WorkerSlot, args, myself.get_cell()).await?;
                state.slots[index] = slot;
            }
        }
        Ok(())
    }
}

impl DispatcherState {
    fn start(&mut self, request: weft_core::dag_run::DispatchRequest) {
        let Some((assignment, reply)) = self
            .waiting
            .remove(&(request.key.clone(), request.try_number))
        else {
            // Cancelled while queued: give the capacity straight back.
            self.core.handle(DispatchInput::Release {
                key: request.key,
                try_number: request.try_number,
                token: request.token,
            });
            return;
        };
        let Some(slot) = self.idle.pop() else {
            tracing::error!("dispatcher started an attempt with no idle worker slot");
            metrics::counter!("weft_invariant_violations_total", "name" => "no_idle_slot")
                .increment(1);
            self.waiting.insert(
                (request.key.clone(), request.try_number),
                (assignment, reply),
            );
            return;
        };
        metrics::counter!("weft_dispatched_total").increment(1);
        let _ = self.slots[slot].cast(WorkerSlotMsg::Run { assignment, reply });
    }
}

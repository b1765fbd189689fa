//! The dispatcher: orders ready task instances by priority and hands them to worker slots
//! within pool slots and each DAG's `max_active_tasks`.
//! (interface; implementation in progress)

use crate::dag_run::DispatchRequest;
use crate::ids::TaskInstanceKey;

#[derive(Debug, Clone, PartialEq)]
pub enum DispatchInput {
    /// A task instance is ready.
    Enqueue(DispatchRequest),
    /// An attempt ended (or was never started) and gives back its pool slots and worker slot.
    Release { key: TaskInstanceKey, try_number: u32 },
    /// A queued request is no longer wanted (cleared, run failed).
    Cancel { key: TaskInstanceKey },
    /// Create or resize a pool.
    SetPool { name: String, slots: u32 },
    /// Set a DAG's `max_active_tasks`.
    SetDagLimit { dag_id: String, max_active_tasks: u32 },
    /// The number of worker slots that exist.
    SetWorkerSlots { count: u32 },
}

#[derive(Debug, Clone, PartialEq)]
pub enum DispatchEffect {
    /// Run this attempt now on a free worker slot.
    Start(DispatchRequest),
}

#[derive(Debug, Clone, Default)]
pub struct Dispatcher {
    queue: Vec<DispatchRequest>,
}

impl Dispatcher {
    pub fn new() -> Dispatcher {
        Dispatcher::default()
    }

    pub fn handle(&mut self, input: DispatchInput) -> Vec<DispatchEffect> {
        match input {
            DispatchInput::Enqueue(request) => vec![DispatchEffect::Start(request)],
            _ => {
                self.queue.clear();
                Vec::new()
            }
        }
    }
}

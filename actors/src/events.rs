//! State-change events the engine publishes to subscribers (the CLI, the web UI, embedding
//! programs). Published after the change is durable in the store.

use serde::{Deserialize, Serialize};
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::state::{DagRunState, TaskState};
use weft_core::Timestamp;

/// Events buffered per subscriber; a subscriber that falls further behind misses events and
/// is told so (`RecvError::Lagged`), then re-reads the store.
pub const EVENTS_BUFFER_MAX: usize = 65_536;

/// Run state changes buffered for waiters on a run (`Engine::wait_for_run`): a few per run, and
/// a waiter that falls behind re-reads the run from the store. The channel's buffer is
/// allocated whole when the engine starts, so it is kept small.
pub const RUN_EVENTS_BUFFER_MAX: usize = 1_024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    RunChanged {
        run: RunKey,
        state: DagRunState,
        at: Timestamp,
    },
    TaskChanged {
        key: TaskInstanceKey,
        state: TaskState,
        try_number: u32,
        at: Timestamp,
    },
    DagChanged {
        dag_id: String,
    },
}

//! State-change events the engine publishes to subscribers (the CLI, the web UI, embedding
//! programs). Published after the change is durable in the store.

use serde::{Deserialize, Serialize};
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::state::{DagRunState, TaskState};
use weft_core::Timestamp;

/// Events buffered per subscriber; a subscriber that falls further behind misses events and
/// is told so (`RecvError::Lagged`), then re-reads the store.
pub const EVENTS_BUFFER_MAX: usize = 65_536;

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

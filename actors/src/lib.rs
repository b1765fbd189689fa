//! weft-actors: the ractor actors that drive the core state machines and perform their
//! effects, the executors that run attempts, and the embedding API ([`Engine`]).
//!
//! Actor tree (each arrow is supervision; `tree.rs` spawns them, `messages.rs` holds every
//! message):
//!
//! ```text
//! Scheduler ──> DagRun (one per active run)
//! Dispatcher ──> WorkerSlot × N
//! ```
//!
//! A run hands each attempt to the dispatcher, which starts it in an idle worker slot (through
//! the slot's handle, not a message), and hears its start and end from the attempt's own task;
//! there is no actor per task instance.
//!
//! Decisions are made by `weft_core`; actors only persist, send and wait.

mod attempt;
mod dag_run_actor;
mod dispatcher_actor;
mod engine;
mod error;
mod events;
pub mod executor;
mod messages;
pub mod run_pipeline;
mod scheduler_actor;
mod shared;
mod tree;
mod worker_slot;

pub use engine::{
    Engine, EngineConfig, RustDag, TaskError, TaskFn, UpsertOutcome, STORE_RETRY_BACKOFF_MS_FIRST,
    STORE_RETRY_BACKOFF_MS_MAX,
};
pub use error::EngineError;
pub use events::Event;
pub use messages::AttemptAssignment;

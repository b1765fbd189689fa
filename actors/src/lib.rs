//! weft-actors: the ractor actors that drive the core state machines and perform their
//! effects, the executors that run attempts, and the embedding API ([`Engine`]).
//!
//! Actor tree (each arrow is supervision; `tree.rs` spawns them, `messages.rs` holds every
//! message):
//!
//! ```text
//! Scheduler ──> DagRun (one per active run) ──> Task (one per dispatched attempt)
//! Dispatcher ──> WorkerSlot × N
//!            ╌╌> RemoteSlot × N (in `weft worker` processes, remote actors)
//! ```
//!
//! A run's task actor hands its attempt to the dispatcher, which starts it in an idle worker
//! slot (through the slot's handle, not a message); the slot reports the attempt's start and
//! end (`SlotReport`, plain data) to the task actor, which tells its run.
//!
//! Decisions are made by `weft_core`; actors only persist, send and wait.

mod attempt;
mod clock;
pub mod command;
mod dag_run_actor;
mod dispatcher_actor;
mod engine;
mod error;
mod events;
pub mod executor;
mod messages;
mod ownership;
mod remote_slot;
pub mod run_pipeline;
mod scheduler_actor;
mod shared;
mod task_actor;
mod tree;
pub mod wire;
mod worker_slot;

pub use attempt::log_relative_path;
pub use command::{Command, CommandFailure, CommandOutcome, Forwarder};
pub use engine::{
    Engine, EngineConfig, RemoteWorkerView, RustDag, TaskError, TaskFn, UpsertOutcome, WorkersView,
    STORE_RETRY_BACKOFF_MS_FIRST, STORE_RETRY_BACKOFF_MS_MAX,
};
pub use error::EngineError;
pub use events::Event;
pub use messages::{
    AttemptAssignment, Json, LogHeader, RemoteSlotMsg, RemoteWorker, SlotCall, SlotCast, SlotHello,
    SlotPoll, SlotReport,
};
pub use ownership::{Ownership, PeerStatus};
pub use remote_slot::{
    queue_group, spawn_remote_slots, LogShipper, RemoteSlots, RemoteSlotsConfig, HEARTBEAT_MS_MAX,
    REPORTS_HELD_MAX, SLOTS_GROUP,
};

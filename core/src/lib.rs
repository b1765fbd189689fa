//! weft-core: every scheduling decision weft makes, as pure state machines.
//!
//! Nothing in this crate performs IO, reads a clock or draws random numbers: the current time,
//! seeds and ids come in as arguments and decisions come out as data (`Effect`s). The actors,
//! the simulator and the tests drive the same code.

pub mod dag;
pub mod dag_run;
pub mod dispatch;
pub mod ids;
pub mod lease;
pub mod limits;
pub mod priority;
pub mod retry;
pub mod scheduler;
pub mod spec;
pub mod state;
pub mod timetable;
pub mod trigger_rule;

/// A point in time, always UTC inside the core; time zones only matter to timetables.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

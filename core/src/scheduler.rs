//! The Scheduler state machine: which DAG runs to create and start, and when to wake up next.
//!
//! It keeps the next due time of every DAG in an ordered set and answers `Tick` by looking at
//! the due entries only, so the cost of a decision does not grow with the number of idle DAGs.
//! (interface; implementation in progress)

use crate::dag::Dag;
use crate::state::{DagRunState, RunType};
use crate::timetable::DataInterval;
use crate::Timestamp;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum SchedulerInput {
    /// A DAG was added or its definition changed. `last_automated` is the data interval of its
    /// latest scheduled run in the store (none if it never ran).
    DagUpserted { dag: Arc<Dag>, paused: bool, last_automated: Option<DataInterval> },
    DagRemoved { dag_id: String },
    Paused { dag_id: String, paused: bool },
    /// A run that exists in the store (on start-up, rebuilt from the store).
    RunRecovered {
        dag_id: String,
        run_id: String,
        run_type: RunType,
        logical_date: Timestamp,
        state: DagRunState,
    },
    /// Time passed: create the runs that are due.
    Tick,
    /// A manual trigger.
    Trigger {
        dag_id: String,
        run_id: Option<String>,
        logical_date: Option<Timestamp>,
        conf: serde_json::Value,
    },
    /// Create the runs of a date range (inclusive), below fresh runs in priority.
    Backfill { dag_id: String, from: Timestamp, to: Timestamp },
    /// A run reached a final state.
    RunFinished { dag_id: String, run_id: String, state: DagRunState },
}

#[derive(Debug, Clone, PartialEq)]
pub enum SchedulerEffect {
    /// Create a run in the store, state `queued`. The store refuses a second run of the same
    /// DAG at the same logical date, which makes creation idempotent.
    CreateRun {
        dag_id: String,
        run_id: String,
        run_type: RunType,
        logical_date: Timestamp,
        data_interval: DataInterval,
        conf: serde_json::Value,
    },
    /// Start a queued run (there is room under `max_active_runs`).
    StartRun { dag_id: String, run_id: String },
    /// Wake up at this time with `Tick` (replaces any earlier wake-up).
    WakeAt(Timestamp),
    /// A request could not be honoured.
    Rejected { dag_id: String, reason: String },
}

#[derive(Debug, Default)]
pub struct Scheduler {}

impl Scheduler {
    pub fn new() -> Scheduler {
        Scheduler::default()
    }

    pub fn handle(&mut self, _now: Timestamp, _input: SchedulerInput) -> Vec<SchedulerEffect> {
        Vec::new()
    }
}

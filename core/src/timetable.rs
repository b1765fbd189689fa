//! Timetables: when a DAG's runs are due, with Airflow's data-interval semantics.
//! (interface; implementation in progress)

use crate::spec::ScheduleSpec;
use crate::Timestamp;
use serde::{Deserialize, Serialize};

/// The span of data a run covers: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DataInterval {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// One run a timetable asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DagRunInfo {
    pub logical_date: Timestamp,
    pub data_interval: DataInterval,
    /// The earliest time the run may be created (the end of its data interval).
    pub run_after: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimetableError {
    #[error("invalid cron expression `{expression}`: {reason}")]
    BadCron { expression: String, reason: String },
    #[error("unknown time zone `{0}`: use an IANA name such as `Europe/Paris` or `UTC`")]
    UnknownTimezone(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timetable {
    schedule: ScheduleSpec,
    start_date: Option<Timestamp>,
    end_date: Option<Timestamp>,
    catchup: bool,
}

impl Timetable {
    pub fn new(
        schedule: &ScheduleSpec,
        _timezone: &str,
        start_date: Option<Timestamp>,
        end_date: Option<Timestamp>,
        catchup: bool,
    ) -> Result<Timetable, TimetableError> {
        Ok(Timetable { schedule: schedule.clone(), start_date, end_date, catchup })
    }

    /// Manual triggers only.
    pub fn is_manual_only(&self) -> bool {
        matches!(self.schedule, ScheduleSpec::None)
    }

    /// The next run to create after the last automated run (`None` when there was none), as
    /// Airflow's `next_dagrun_info` gives it; `None` when no further run is due ever.
    pub fn next_dagrun_info(&self, _last: Option<&DataInterval>, _now: Timestamp) -> Option<DagRunInfo> {
        None
    }

    /// The data interval of a manual run triggered at `run_after`.
    pub fn infer_manual_data_interval(&self, run_after: Timestamp) -> DataInterval {
        DataInterval { start: run_after, end: run_after }
    }

    /// Every run whose logical date lies in `[from, to]`, for backfills, at most `limit`.
    pub fn runs_between(&self, _from: Timestamp, _to: Timestamp, _limit: usize) -> Vec<DagRunInfo> {
        Vec::new()
    }
}

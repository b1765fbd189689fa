//! Identifiers of DAGs, runs, tasks and task instances.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies one task instance: a task of one DAG run, with its map index (-1 when unmapped,
/// as in Airflow).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskInstanceKey {
    pub dag_id: String,
    pub run_id: String,
    pub task_id: String,
    pub map_index: i32,
}

impl TaskInstanceKey {
    pub fn new(dag_id: &str, run_id: &str, task_id: &str, map_index: i32) -> TaskInstanceKey {
        TaskInstanceKey {
            dag_id: dag_id.to_string(),
            run_id: run_id.to_string(),
            task_id: task_id.to_string(),
            map_index,
        }
    }
}

impl fmt::Display for TaskInstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.dag_id, self.run_id, self.task_id)?;
        if self.map_index >= 0 {
            write!(f, "[{}]", self.map_index)?;
        }
        Ok(())
    }
}

/// Identifies one DAG run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RunKey {
    pub dag_id: String,
    pub run_id: String,
}

impl fmt::Display for RunKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.dag_id, self.run_id)
    }
}

/// The run id Airflow gives a run of the given type at the given logical date,
/// e.g. `scheduled__2024-01-01T00:00:00+00:00` (Python's `isoformat`: microseconds only when
/// not zero).
pub fn run_id_for(run_type: crate::state::RunType, logical_date: crate::Timestamp) -> String {
    use chrono::Timelike;
    let fraction = if logical_date.nanosecond() / 1_000 == 0 {
        ""
    } else {
        "%.6f"
    };
    let format = format!("%Y-%m-%dT%H:%M:%S{fraction}+00:00");
    format!("{}__{}", run_type.as_str(), logical_date.format(&format))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RunType;
    use chrono::TimeZone;

    #[test]
    fn run_ids_look_like_airflow_ones() {
        let midnight = chrono::Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            run_id_for(RunType::Scheduled, midnight),
            "scheduled__2024-01-01T00:00:00+00:00"
        );
        let later = midnight + chrono::Duration::nanoseconds(123_456_789);
        assert_eq!(
            run_id_for(RunType::Manual, later),
            "manual__2024-01-01T00:00:00.123456+00:00"
        );
    }
}

//! Identifiers of DAGs, runs, tasks and task instances.

use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A DAG, run or task id inside a key: an immutable string whose clones share one allocation.
/// Keys are cloned into every message, map and batch a task instance passes through; with
/// `String` ids each clone was three allocations and copies, about a sixth of the engine's CPU
/// with in-process no-op tasks. Serialized as a plain string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Name(Arc<str>);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Name {
    fn from(text: &str) -> Name {
        Name(Arc::from(text))
    }
}

impl From<String> for Name {
    fn from(text: String) -> Name {
        Name(Arc::from(text))
    }
}

impl From<&String> for Name {
    fn from(text: &String) -> Name {
        Name(Arc::from(text.as_str()))
    }
}

impl From<Name> for String {
    fn from(name: Name) -> String {
        name.0.to_string()
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Name> for String {
    fn eq(&self, other: &Name) -> bool {
        **self == *other.0
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        *self == *other.0
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        **self == *other.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
        String::deserialize(deserializer).map(Name::from)
    }
}

/// Identifies one task instance: a task of one DAG run, with its map index (-1 when unmapped,
/// as in Airflow).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskInstanceKey {
    pub dag_id: Name,
    pub run_id: Name,
    pub task_id: Name,
    pub map_index: i32,
}

impl TaskInstanceKey {
    pub fn new(dag_id: &str, run_id: &str, task_id: &str, map_index: i32) -> TaskInstanceKey {
        TaskInstanceKey {
            dag_id: dag_id.into(),
            run_id: run_id.into(),
            task_id: task_id.into(),
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

/// Identifies one attempt: a try of a task instance, with the fencing token it was dispatched
/// under. Every report about an attempt (started, finished, lost, killed) names it by this, and
/// a report counts only while its (try, token) is the task instance's current one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttemptId {
    pub key: TaskInstanceKey,
    pub try_number: u32,
    pub token: u64,
}

impl AttemptId {
    pub fn new(key: TaskInstanceKey, try_number: u32, token: u64) -> AttemptId {
        AttemptId {
            key,
            try_number,
            token,
        }
    }

    /// The (try, token) pair, for comparing attempts of one task instance.
    pub fn version(&self) -> (u32, u64) {
        (self.try_number, self.token)
    }

    /// The run this attempt belongs to.
    pub fn run(&self) -> RunKey {
        RunKey {
            dag_id: self.key.dag_id.clone(),
            run_id: self.key.run_id.clone(),
        }
    }
}

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} try {} token {}",
            self.key, self.try_number, self.token
        )
    }
}

/// Identifies one DAG run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RunKey {
    pub dag_id: Name,
    pub run_id: Name,
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
    fn names_serialize_as_plain_strings_and_compare_with_strs() {
        let key = TaskInstanceKey::new("etl", "manual__1", "load", 2);
        let json = serde_json::to_value(&key).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"dag_id": "etl", "run_id": "manual__1", "task_id": "load", "map_index": 2})
        );
        assert_eq!(
            serde_json::from_value::<TaskInstanceKey>(json).unwrap(),
            key
        );
        assert_eq!(key.task_id, "load");
        assert_eq!(key.task_id, "load".to_string());
        let mut by_name = std::collections::HashMap::new();
        by_name.insert(key.dag_id.clone(), 1);
        assert_eq!(by_name.get("etl"), Some(&1));
        let shared = key.run_id.clone();
        assert!(
            std::ptr::eq(shared.as_str(), key.run_id.as_str()),
            "a clone shares the text"
        );
    }

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

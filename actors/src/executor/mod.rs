//! Executors: how one attempt of a task actually runs. `worker.rs` runs an attempt from its
//! assignment and a `WorkerContext` alone, picking the executor by the task's kind: in-process
//! closures, shell commands as subprocesses, Python callables in a warm Python runner process.
//! Executors never see the engine (its store, scheduler or actors).

pub mod lineage;
pub mod python;
pub mod sandbox;
mod spawn;
pub mod subprocess;
pub mod worker;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use weft_core::dag_run::AttemptOutcome;
use weft_core::ids::TaskInstanceKey;

/// Default size limit of one attempt's log (stdout and stderr together).
pub const LOG_BYTES_MAX_DEFAULT: u64 = 16 * 1024 * 1024;

/// Everything a task's code can see about its run: the template context. Serializable: it is
/// sent to the Python runner as JSON and will cross the network to remote workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskContext {
    pub dag_id: String,
    pub task_id: String,
    pub run_id: String,
    pub map_index: i32,
    pub try_number: u32,
    pub max_tries: u32,
    pub run_type: String,
    /// RFC 3339, UTC.
    pub logical_date: String,
    pub data_interval_start: String,
    pub data_interval_end: String,
    /// The DAG's params merged with the run's conf (conf wins), as Airflow does.
    pub params: serde_json::Map<String, serde_json::Value>,
    pub conf: serde_json::Value,
    /// Results of the run's finished tasks that produced one: task_id -> value (mapped tasks:
    /// a list by map index).
    pub xcoms: BTreeMap<String, serde_json::Value>,
    /// The DAG file, for Python tasks and templated fields.
    pub fileloc: Option<String>,
    /// The DAG's time zone.
    pub timezone: String,
}

/// Limits applied to one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptLimits {
    pub timeout_ms: Option<u64>,
    pub log_bytes_max: u64,
    pub sandbox: Option<sandbox::SandboxSpec>,
}

/// What an attempt produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptReport {
    pub outcome: AttemptOutcome,
    /// The task's result (XCom `return_value`), if any.
    pub result: Option<serde_json::Value>,
    /// Bytes written to the log file.
    pub log_bytes: u64,
    pub log_truncated: bool,
    pub exit_code: Option<i32>,
}

/// Where one attempt writes its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogTarget {
    pub key: TaskInstanceKey,
    pub try_number: u32,
    /// Absolute path of the log file.
    pub path: PathBuf,
}

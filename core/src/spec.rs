//! The serialized form of a DAG: what a DAG file (Python) or the embedding API (Rust) produces,
//! what the store keeps (versioned by content hash) and what the core validates into a [`Dag`].
//!
//! The form is JSON with a `schema_version`. It carries Airflow's concepts (operators, trigger
//! rules, pools, weight rules, params, task groups, templated fields, mapping) so that the
//! compatibility layer can describe Airflow DAG files without a second format. Fields a newer
//! producer adds must be optional with a default, so older readers keep working.
//!
//! [`Dag`]: crate::dag::Dag

use crate::state::{TriggerRule, WeightRule};
use crate::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The schema version this build writes and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DagSpec {
    #[serde(default = "schema_version_default")]
    pub schema_version: u32,
    pub dag_id: String,
    /// The file the DAG came from; `None` for DAGs registered through the embedding API.
    #[serde(default)]
    pub fileloc: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub doc_md: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// `None` (manual only), a preset such as `@daily`, a 5-field cron expression, or an
    /// interval; see [`ScheduleSpec`].
    #[serde(default)]
    pub schedule: ScheduleSpec,
    /// IANA time zone the schedule is read in (`UTC` by default).
    #[serde(default = "timezone_default")]
    pub timezone: String,
    #[serde(default)]
    pub start_date: Option<Timestamp>,
    #[serde(default)]
    pub end_date: Option<Timestamp>,
    #[serde(default)]
    pub catchup: bool,
    #[serde(default = "max_active_runs_default")]
    pub max_active_runs: u32,
    #[serde(default = "max_active_tasks_default")]
    pub max_active_tasks: u32,
    #[serde(default)]
    pub dagrun_timeout_ms: Option<u64>,
    #[serde(default)]
    pub is_paused_upon_creation: Option<bool>,
    /// Run-level parameters with defaults and an optional JSON schema each.
    #[serde(default)]
    pub params: BTreeMap<String, ParamSpec>,
    #[serde(default)]
    pub task_groups: Vec<TaskGroupSpec>,
    pub tasks: Vec<TaskSpec>,
}

fn schema_version_default() -> u32 {
    SCHEMA_VERSION
}
fn timezone_default() -> String {
    "UTC".to_string()
}
fn max_active_runs_default() -> u32 {
    16
}
fn max_active_tasks_default() -> u32 {
    16
}

/// When a DAG runs by itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScheduleSpec {
    /// Manual triggers only (Airflow's `schedule=None`).
    #[default]
    None,
    /// A cron expression (5 fields) or a preset (`@once`, `@hourly`, `@daily`, `@weekly`,
    /// `@monthly`, `@quarterly`, `@yearly`, `@annually`, `@midnight`).
    Cron {
        expression: String,
        /// `true`: Airflow's `CronDataIntervalTimetable` (a run covers `[previous tick, tick)`,
        /// is due at its end, and its logical date is the start). `false`, Airflow 3's default
        /// (`[scheduler] create_cron_data_intervals = False`): `CronTriggerTimetable` (the
        /// logical date is the tick itself and the data interval is empty).
        #[serde(default)]
        data_intervals: bool,
    },
    /// A fixed interval (Airflow's `schedule=timedelta(...)`).
    Interval {
        every_ms: u64,
        /// `true`: Airflow's `DeltaDataIntervalTimetable`; `false`, Airflow 3's default:
        /// `DeltaTriggerTimetable` (Airflow 3.3 picks it with the same
        /// `create_cron_data_intervals` setting as cron schedules).
        #[serde(default)]
        data_intervals: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    #[serde(default)]
    pub default: serde_json::Value,
    #[serde(default)]
    pub description: Option<String>,
    /// A JSON-schema fragment (`type`, `enum`, `minimum`, ...) the value must satisfy.
    #[serde(default)]
    pub schema: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskGroupSpec {
    pub group_id: String,
    #[serde(default)]
    pub parent_group: Option<String>,
    #[serde(default)]
    pub tooltip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub task_id: String,
    /// The operator class as the author wrote it (`BashOperator`, `@task`, `rust`), for display.
    #[serde(default)]
    pub operator: String,
    pub kind: TaskKind,
    /// Direct upstream task ids.
    #[serde(default)]
    pub upstream: Vec<String>,
    #[serde(default)]
    pub trigger_rule: TriggerRule,
    #[serde(default)]
    pub retries: u32,
    #[serde(default = "retry_delay_ms_default")]
    pub retry_delay_ms: u64,
    #[serde(default)]
    pub retry_exponential_backoff: bool,
    #[serde(default)]
    pub max_retry_delay_ms: Option<u64>,
    #[serde(default)]
    pub execution_timeout_ms: Option<u64>,
    #[serde(default = "priority_weight_default")]
    pub priority_weight: i64,
    #[serde(default)]
    pub weight_rule: WeightRule,
    #[serde(default = "pool_default")]
    pub pool: String,
    #[serde(default = "pool_slots_default")]
    pub pool_slots: u32,
    /// The worker queue the task runs on (Airflow's `queue=`); `None` is `default`. Only a
    /// worker that serves the queue runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(default)]
    pub depends_on_past: bool,
    #[serde(default)]
    pub wait_for_downstream: bool,
    #[serde(default)]
    pub task_group: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub doc_md: Option<String>,
    /// What the task decides about its downstream tasks when it succeeds.
    #[serde(default)]
    pub flow: FlowControl,
    /// Setup/teardown role (Airflow 2.7+).
    #[serde(default)]
    pub role: TaskRole,
    /// Names of fields whose values are Jinja templates rendered at run time.
    #[serde(default)]
    pub template_fields: Vec<String>,
    /// Dynamic task mapping: the task expands into one instance per element.
    #[serde(default)]
    pub mapping: Option<MappingSpec>,
    /// Operator-specific values that the core does not interpret (carried for the runner and
    /// the UI).
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn retry_delay_ms_default() -> u64 {
    300_000
}
fn priority_weight_default() -> i64 {
    1
}
fn pool_default() -> String {
    DEFAULT_POOL.to_string()
}
fn pool_slots_default() -> u32 {
    1
}

/// The queue a task runs on unless it names another (Airflow's `operators.default_queue`).
pub const DEFAULT_QUEUE: &str = "default";

/// The pool every task uses unless it names another, as in Airflow.
pub const DEFAULT_POOL: &str = "default_pool";

/// How a task is executed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TaskKind {
    /// Does nothing; succeeds at once without a worker (EmptyOperator).
    Empty,
    /// A shell command run with `bash -c`. When `templated`, the runner renders the command
    /// (and env values) with Jinja before it runs.
    Shell {
        command: String,
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Keep the worker's environment and add `env` (otherwise `env` replaces it when set).
        #[serde(default)]
        append_env: bool,
        #[serde(default)]
        cwd: Option<String>,
        /// Exit code that means "skipped" (Airflow's 99 by default).
        #[serde(default = "skip_exit_code_default")]
        skip_exit_code: Option<i32>,
        #[serde(default)]
        templated: bool,
    },
    /// A Python callable from the DAG file, run by the Python task runner.
    Python {
        /// Module-qualified name, for display (`etl.extract`).
        #[serde(default)]
        callable: String,
    },
    /// A Rust closure registered with the embedding API under this name.
    InProcess { handler: String },
}

fn skip_exit_code_default() -> Option<i32> {
    Some(99)
}

/// What a successful task decides for its downstream tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowControl {
    #[default]
    Normal,
    /// Returns the task ids to follow; direct downstream tasks not named are skipped.
    Branch,
    /// Returns a truth value; when false, all downstream tasks are skipped.
    ShortCircuit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskRole {
    #[default]
    Normal,
    Setup,
    Teardown,
}

/// Dynamic task mapping: where the list to expand over comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum MappingSpec {
    /// A literal list known when the DAG was parsed.
    Literal { length: usize },
    /// The result (XCom) of an upstream task, known only at run time.
    Upstream { task_id: String },
}

impl DagSpec {
    /// The content hash that versions a DAG definition: SHA-256 of its canonical JSON.
    pub fn version_hash(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("a DagSpec always serializes");
        let digest = Sha256::digest(&canonical);
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    pub fn task(&self, task_id: &str) -> Option<&TaskSpec> {
        self.tasks.iter().find(|task| task.task_id == task_id)
    }
}

impl TaskSpec {
    /// A task with the defaults Airflow would give it.
    pub fn new(task_id: &str, kind: TaskKind) -> TaskSpec {
        TaskSpec {
            task_id: task_id.to_string(),
            operator: String::new(),
            kind,
            upstream: Vec::new(),
            trigger_rule: TriggerRule::default(),
            retries: 0,
            retry_delay_ms: retry_delay_ms_default(),
            retry_exponential_backoff: false,
            max_retry_delay_ms: None,
            execution_timeout_ms: None,
            priority_weight: priority_weight_default(),
            weight_rule: WeightRule::default(),
            pool: pool_default(),
            pool_slots: 1,
            queue: None,
            depends_on_past: false,
            wait_for_downstream: false,
            task_group: None,
            owner: None,
            doc_md: None,
            flow: FlowControl::Normal,
            role: TaskRole::Normal,
            template_fields: Vec::new(),
            mapping: None,
            extra: serde_json::Map::new(),
        }
    }
}

impl DagSpec {
    /// A manual-only DAG in UTC with the given tasks and Airflow's defaults.
    pub fn new(dag_id: &str, tasks: Vec<TaskSpec>) -> DagSpec {
        DagSpec {
            schema_version: SCHEMA_VERSION,
            dag_id: dag_id.to_string(),
            fileloc: None,
            description: None,
            doc_md: None,
            display_name: None,
            owner: None,
            tags: Vec::new(),
            schedule: ScheduleSpec::None,
            timezone: timezone_default(),
            start_date: None,
            end_date: None,
            catchup: false,
            max_active_runs: max_active_runs_default(),
            max_active_tasks: max_active_tasks_default(),
            dagrun_timeout_ms: None,
            is_paused_upon_creation: None,
            params: BTreeMap::new(),
            task_groups: Vec::new(),
            tasks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_json_gets_airflow_defaults() {
        let spec: DagSpec = serde_json::from_str(
            r#"{"dag_id": "d", "tasks": [{"task_id": "t", "kind": {"type": "shell", "command": "true"}}]}"#,
        )
        .unwrap();
        assert_eq!(spec.schema_version, SCHEMA_VERSION);
        assert_eq!(spec.timezone, "UTC");
        assert_eq!(spec.max_active_runs, 16);
        let task = &spec.tasks[0];
        assert_eq!(task.pool, "default_pool");
        assert_eq!(task.retry_delay_ms, 300_000);
        assert_eq!(task.trigger_rule, TriggerRule::AllSuccess);
        match &task.kind {
            TaskKind::Shell { skip_exit_code, .. } => assert_eq!(*skip_exit_code, Some(99)),
            other => panic!("unexpected kind {other:?}"),
        }
    }

    #[test]
    fn version_hash_follows_content() {
        let a = DagSpec::new("d", vec![TaskSpec::new("t", TaskKind::Empty)]);
        let mut b = a.clone();
        assert_eq!(a.version_hash(), b.version_hash());
        b.tasks[0].retries = 3;
        assert_ne!(a.version_hash(), b.version_hash());
        assert_eq!(a.version_hash().len(), 64);
    }
}

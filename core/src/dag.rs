//! A validated DAG: the serialized form checked and indexed on a petgraph graph.
//! (interface; implementation in progress)

use crate::spec::{DagSpec, TaskSpec};
use crate::timetable::{Timetable, TimetableError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    #[error("dag `{dag_id}` has a cycle: {}", cycle.join(" -> "))]
    Cycle { dag_id: String, cycle: Vec<String> },
    #[error("dag `{dag_id}` has task id `{task_id}` more than once")]
    DuplicateTaskId { dag_id: String, task_id: String },
    #[error("task `{task_id}` in dag `{dag_id}` names unknown upstream task `{upstream}`")]
    UnknownUpstream { dag_id: String, task_id: String, upstream: String },
    #[error("dag `{dag_id}` has no tasks")]
    Empty { dag_id: String },
    #[error("dag `{dag_id}` has {count} {what}, more than the limit of {max}")]
    TooLarge { dag_id: String, what: &'static str, count: usize, max: usize },
    #[error("invalid id `{id}`: {reason}")]
    InvalidId { id: String, reason: String },
    #[error("dag `{dag_id}`: {source}")]
    Schedule { dag_id: String, source: TimetableError },
    #[error("dag `{dag_id}`: {reason}")]
    Invalid { dag_id: String, reason: String },
}

#[derive(Debug, Clone)]
pub struct Dag {
    spec: DagSpec,
    timetable: Timetable,
}

impl Dag {
    pub fn from_spec(spec: DagSpec) -> Result<Dag, DagError> {
        let timetable = Timetable::new(
            &spec.schedule,
            &spec.timezone,
            spec.start_date,
            spec.end_date,
            spec.catchup,
        )
        .map_err(|source| DagError::Schedule { dag_id: spec.dag_id.clone(), source })?;
        Ok(Dag { spec, timetable })
    }

    pub fn dag_id(&self) -> &str {
        &self.spec.dag_id
    }

    pub fn spec(&self) -> &DagSpec {
        &self.spec
    }

    pub fn timetable(&self) -> &Timetable {
        &self.timetable
    }

    pub fn task(&self, task_id: &str) -> Option<&TaskSpec> {
        self.spec.task(task_id)
    }

    /// Task ids in a topological order (upstream before downstream).
    pub fn topological_order(&self) -> Vec<&str> {
        self.spec.tasks.iter().map(|task| task.task_id.as_str()).collect()
    }

    pub fn upstream(&self, task_id: &str) -> Vec<&str> {
        self.task(task_id)
            .map(|task| task.upstream.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    pub fn downstream(&self, task_id: &str) -> Vec<&str> {
        self.spec
            .tasks
            .iter()
            .filter(|task| task.upstream.iter().any(|up| up == task_id))
            .map(|task| task.task_id.as_str())
            .collect()
    }

    /// The effective priority of a task after its weight rule.
    pub fn priority_weight(&self, task_id: &str) -> i64 {
        self.task(task_id).map(|task| task.priority_weight).unwrap_or(1)
    }
}

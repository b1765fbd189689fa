//! Preparing an attempt for a worker slot: the template context, the results of upstream
//! tasks, limits and the log path. Each attempt's task actor builds its assignment (reading
//! upstream results from the store only for tasks that use them).

use crate::engine::EngineConfig;
use crate::executor::sandbox::SandboxSpec;
use crate::executor::{AttemptLimits, AttemptReport, LogTarget, TaskContext};
use crate::messages::AttemptAssignment;
use crate::shared::Shared;
use std::collections::BTreeMap;
use std::sync::Arc;
use weft_core::dag_run::{AttemptOutcome, DispatchRequest, RunContext};
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::spec::{TaskKind, TaskSpec};

/// How long the start of an attempt is held back before the run is told (and persists the
/// `running` state). An attempt that ends sooner reports start and end together, so that the
/// run commits both transitions in one batch: one fsync per task instead of two on the
/// critical path of a chain. Nothing depends on `running` before it is durable; a crash in
/// this window leaves the instance `queued`, which recovery re-dispatches with a new token,
/// as it would after a crash just before the start.
pub(crate) const RUNNING_REPORT_GRACE: std::time::Duration = std::time::Duration::from_millis(20);

/// Upstream results by task id (a list for a mapped task), as templates and handlers see them.
pub(crate) type Results = BTreeMap<String, serde_json::Value>;

pub(crate) fn lost_report(reason: &str) -> AttemptReport {
    AttemptReport {
        outcome: AttemptOutcome::Lost {
            reason: reason.to_string(),
        },
        result: None,
        log_bytes: 0,
        log_truncated: false,
        exit_code: None,
    }
}

/// Whether a task can read upstream results: a plain shell command (no template to render) or
/// an empty task never looks, so its dispatch skips the store read.
pub(crate) fn reads_results(task: &TaskSpec) -> bool {
    match &task.kind {
        TaskKind::Shell { templated, .. } => *templated,
        TaskKind::Empty => false,
        TaskKind::Python { .. } | TaskKind::InProcess { .. } => true,
    }
}

/// The stored `return_value` results of a run's tasks.
pub(crate) async fn read_results(shared: &Shared, run: &RunKey) -> weft_storage::Result<Results> {
    let mut results = Results::new();
    for row in shared.store.xcoms(run).await? {
        if row.name != "return_value" {
            continue;
        }
        if row.key.map_index < 0 {
            results.insert(row.key.task_id.to_string(), row.value);
        } else {
            let slot = results
                .entry(row.key.task_id.to_string())
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let serde_json::Value::Array(items) = slot {
                let index = row.key.map_index as usize;
                if items.len() <= index {
                    items.resize(index + 1, serde_json::Value::Null);
                }
                items[index] = row.value;
            }
        }
    }
    Ok(results)
}

/// What every attempt of a run is told about the run (dates, params, conf, DAG file), built
/// once per run and shared by its attempts' assignments: the attempts' own fields (task, try,
/// results) are left empty here and filled in by `AttemptAssignment::context`.
pub(crate) fn run_task_context(context: &RunContext) -> TaskContext {
    let dag = &context.dag;
    let mut params = serde_json::Map::new();
    for (name, param) in &dag.spec().params {
        params.insert(name.clone(), param.default.clone());
    }
    if let serde_json::Value::Object(conf) = &context.conf {
        for (name, value) in conf {
            params.insert(name.clone(), value.clone());
        }
    }
    let rfc3339 =
        |at: weft_core::Timestamp| at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    TaskContext {
        dag_id: dag.dag_name().to_string(),
        task_id: String::new(),
        run_id: context.run_id.to_string(),
        map_index: -1,
        try_number: 0,
        max_tries: 0,
        run_type: context.run_type.as_str().to_string(),
        logical_date: rfc3339(context.logical_date),
        data_interval_start: rfc3339(context.data_interval.start),
        data_interval_end: rfc3339(context.data_interval.end),
        params,
        conf: context.conf.clone(),
        xcoms: Results::new(),
        fileloc: dag.spec().fileloc.clone(),
        timezone: dag.spec().timezone.clone(),
    }
}

/// The sandbox of `task`'s attempts: the node's, or the full sandbox when the task asks for it
/// (a task can raise its isolation, never lower it).
fn task_sandbox(config: &EngineConfig, task: &TaskSpec) -> Option<SandboxSpec> {
    let wants_full = task
        .extra
        .get("isolation")
        .is_some_and(|isolation| isolation == "full");
    if !wants_full || config.sandbox.as_ref().is_some_and(|spec| spec.namespaces) {
        return config.sandbox.clone();
    }
    Some(config.sandbox_full.clone().unwrap_or(SandboxSpec {
        // Refused at the attempt's start with the reason (no bubblewrap here).
        namespaces: true,
        ..SandboxSpec::default()
    }))
}

/// Everything a worker slot needs to run the attempt `request` of a task of the run whose
/// `run_task_context` is `run`.
pub(crate) fn build_assignment(
    shared: &Shared,
    run: &Arc<TaskContext>,
    task: &TaskSpec,
    request: DispatchRequest,
    xcoms: Results,
) -> AttemptAssignment {
    let key = &request.attempt.key;
    let config = &shared.config;
    let limits = AttemptLimits {
        timeout_ms: request.execution_timeout_ms,
        log_bytes_max: config.log_bytes_max,
        sandbox: task_sandbox(config, task),
    };
    let log = LogTarget {
        key: key.clone(),
        try_number: request.attempt.try_number,
        path: config
            .data_dir
            .join(log_relative_path(key, request.attempt.try_number)),
    };
    AttemptAssignment {
        request,
        kind: task.kind.clone(),
        flow: task.flow,
        run: run.clone(),
        xcoms,
        max_tries: task.retries + 1,
        limits,
        log,
    }
}

/// Where an attempt's log lives under the data directory, as Airflow lays out its logs.
/// Built in one string (it is built for every attempt).
pub fn log_relative_path(key: &TaskInstanceKey, try_number: u32) -> String {
    use std::fmt::Write as _;
    let (dag_id, run_id, task_id) = (
        key.dag_id.as_str(),
        key.run_id.as_str(),
        key.task_id.as_str(),
    );
    let mut path = String::with_capacity(64 + dag_id.len() + run_id.len() + task_id.len());
    path.push_str("logs/dag_id=");
    path.push_str(dag_id);
    path.push_str("/run_id=");
    path.extend(run_id.chars().map(|c| {
        if c.is_ascii_alphanumeric() || "-_.+".contains(c) {
            c
        } else {
            '_'
        }
    }));
    path.push_str("/task_id=");
    path.push_str(task_id);
    if key.map_index >= 0 {
        let _ = write!(path, "/map_index={}", key.map_index);
    }
    let _ = write!(path, "/attempt={try_number}.log");
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_follow_airflow_with_run_ids_made_safe() {
        let key = TaskInstanceKey::new("etl", "manual__2026-12-03T18:00:00+00:00", "load", -1);
        assert_eq!(
            log_relative_path(&key, 2),
            "logs/dag_id=etl/run_id=manual__2026-12-03T18_00_00+00_00/task_id=load/attempt=2.log"
        );
        let mapped = TaskInstanceKey::new("etl", "r/1", "load", 7);
        assert_eq!(
            log_relative_path(&mapped, 1),
            "logs/dag_id=etl/run_id=r_1/task_id=load/map_index=7/attempt=1.log"
        );
    }
}

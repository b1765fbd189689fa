//! Running one attempt as a worker does: the attempt's assignment and a [`WorkerContext`] are
//! all it takes. The context holds what a worker needs to run attempts (the registry of
//! in-process handlers and the warm Python runner pool) and nothing of the engine: no store to
//! write to, no scheduler, no actor. An engine's worker slots run their attempts through the
//! engine's context; a worker in another process builds one of its own.

use super::python::{NodeSecrets, PythonRunnerConfig, PythonRunnerPool, Rendered};
use super::subprocess::{run_shell, ShellCommand};
use super::AttemptReport;
use crate::engine::{TaskError, TaskFn};
use crate::messages::AttemptAssignment;
use futures::FutureExt as _;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use tokio::sync::OnceCell;
use weft_core::dag_run::AttemptOutcome;
use weft_core::spec::{FlowControl, TaskKind};

/// The in-process task handlers by name. Cheap to clone; every clone is the same registry, so a
/// handler registered after a worker started is seen by its next attempt.
#[derive(Clone, Default)]
pub struct Handlers {
    by_name: Arc<RwLock<HashMap<String, TaskFn>>>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<String> = self.read().keys().cloned().collect();
        names.sort();
        formatter.debug_set().entries(names).finish()
    }
}

impl Handlers {
    /// Registers (or replaces) the handler called `name`.
    pub fn register(&self, name: impl Into<String>, function: TaskFn) {
        self.write().insert(name.into(), function);
    }

    /// Registers (or replaces) each handler of `handlers`.
    pub fn extend(&self, handlers: impl IntoIterator<Item = (String, TaskFn)>) {
        self.write().extend(handlers);
    }

    pub fn get(&self, name: &str) -> Option<TaskFn> {
        self.read().get(name).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, TaskFn>> {
        self.by_name.read().expect("handler registry poisoned")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, TaskFn>> {
        self.by_name.write().expect("handler registry poisoned")
    }
}

/// What a worker needs to run attempts: the in-process handlers, and the warm Python runner
/// pool (started on first use, so that a worker without Python tasks never starts a Python
/// process) with what answers its runners' calls for Variables and Connections.
pub struct WorkerContext {
    handlers: Handlers,
    python_config: PythonRunnerConfig,
    secrets: Option<NodeSecrets>,
    python: OnceCell<Arc<PythonRunnerPool>>,
}

impl std::fmt::Debug for WorkerContext {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WorkerContext")
            .field("handlers", &self.handlers)
            .field("python", &self.python_config)
            .field("secrets", &self.secrets.is_some())
            .finish_non_exhaustive()
    }
}

impl WorkerContext {
    /// A worker running the in-process tasks of `handlers` and Python tasks with runners
    /// started as `python` says, whose calls are answered from `secrets` (`None`: refused).
    pub fn new(
        handlers: Handlers,
        python: PythonRunnerConfig,
        secrets: Option<NodeSecrets>,
    ) -> WorkerContext {
        WorkerContext {
            handlers,
            python_config: python,
            secrets,
            python: OnceCell::new(),
        }
    }

    /// The registry this worker looks handlers up in (shared with whoever registers them).
    pub fn handlers(&self) -> &Handlers {
        &self.handlers
    }

    /// The warm Python runner pool, started on first use.
    pub async fn python(&self) -> Arc<PythonRunnerPool> {
        self.python
            .get_or_init(|| async {
                let config = self.python_config.clone();
                Arc::new(match self.secrets.clone() {
                    Some(secrets) => PythonRunnerPool::with_secrets(config, secrets),
                    None => PythonRunnerPool::new(config),
                })
            })
            .await
            .clone()
    }

    /// Stops the Python runners, if any were started.
    pub async fn shutdown(&self) {
        if let Some(pool) = self.python.get() {
            pool.shutdown().await;
        }
    }
}

/// Runs one attempt with the executor its task kind needs, then reads the result as the task's
/// flow control asks (branch targets, short-circuit, mapped length).
pub async fn run_attempt(worker: &WorkerContext, assignment: &AttemptAssignment) -> AttemptReport {
    let report = execute_kind(worker, assignment).await;
    interpret_result(assignment.flow, report)
}

fn interpret_result(flow: FlowControl, mut report: AttemptReport) -> AttemptReport {
    report.outcome.read_result(flow, report.result.as_ref());
    report
}

/// The shell and Python executors' futures are boxed: they are large, and every attempt's
/// future (moved into its tokio task) is as large as its largest branch, which made moving an
/// in-process attempt's future a visible share of the engine's CPU.
async fn execute_kind(worker: &WorkerContext, assignment: &AttemptAssignment) -> AttemptReport {
    match &assignment.kind {
        TaskKind::Empty => success(None),
        TaskKind::InProcess { handler } => run_in_process(worker, handler, assignment).await,
        TaskKind::Shell { templated, .. } => {
            Box::pin(run_shell_kind(worker, assignment, *templated)).await
        }
        TaskKind::Python { .. } => {
            Box::pin(async {
                worker
                    .python()
                    .await
                    .run_callable(&assignment.context(), &assignment.log, &assignment.limits)
                    .await
            })
            .await
        }
    }
}

async fn run_shell_kind(
    worker: &WorkerContext,
    assignment: &AttemptAssignment,
    templated: bool,
) -> AttemptReport {
    let rendered;
    let mut masks = Vec::new();
    let kind = if templated {
        match render_shell(worker, assignment).await {
            Ok((kind, used)) => (rendered, masks) = (kind, used),
            Err(reason) => return failed(reason, false),
        }
        &rendered
    } else {
        &assignment.kind
    };
    let Some(mut command) = ShellCommand::from_kind(kind) else {
        return failed("not a shell task".to_string(), false);
    };
    command.masks = masks;
    let try_number = assignment.request.attempt.try_number.to_string();
    let extra_env = context_env(assignment, &try_number);
    run_shell(&command, &assignment.log, &assignment.limits, &extra_env).await
}

/// The shell task with its templates rendered, and the secret values they used (to mask in
/// its log).
async fn render_shell(
    worker: &WorkerContext,
    assignment: &AttemptAssignment,
) -> Result<(TaskKind, Vec<String>), String> {
    let TaskKind::Shell {
        command,
        env,
        append_env,
        cwd,
        skip_exit_code,
        ..
    } = &assignment.kind
    else {
        return Err("not a shell task".to_string());
    };
    let fields = serde_json::json!({ "command": command, "env": env });
    let Rendered {
        fields: rendered,
        masks,
    } = worker
        .python()
        .await
        .render(&assignment.context(), fields)
        .await
        .map_err(|error| format!("template rendering failed: {error}"))?;
    let command = rendered["command"].as_str().unwrap_or(command).to_string();
    let env: BTreeMap<String, String> =
        serde_json::from_value(rendered["env"].clone()).unwrap_or_else(|_| env.clone());
    let kind = TaskKind::Shell {
        command,
        env,
        append_env: *append_env,
        cwd: cwd.clone(),
        skip_exit_code: *skip_exit_code,
        templated: false,
    };
    Ok((kind, masks))
}

async fn run_in_process(
    worker: &WorkerContext,
    handler: &str,
    assignment: &AttemptAssignment,
) -> AttemptReport {
    let Some(function) = worker.handlers.get(handler) else {
        return failed(
            format!("no in-process handler named `{handler}` is registered"),
            false,
        );
    };
    // A panic in the handler fails the attempt, not the worker slot; polled in place rather
    // than in a task of its own (a spawn per attempt), and dropped at the timeout.
    let call = std::panic::AssertUnwindSafe(function(assignment.context())).catch_unwind();
    let outcome = match assignment.limits.timeout_ms {
        Some(timeout_ms) => {
            match tokio::time::timeout(std::time::Duration::from_millis(timeout_ms), call).await {
                Ok(joined) => joined,
                Err(_) => return timed_out(),
            }
        }
        None => call.await,
    };
    match outcome {
        Ok(Ok(result)) => success(result),
        Ok(Err(TaskError::Skip)) => AttemptReport {
            outcome: AttemptOutcome::Skipped,
            ..success(None)
        },
        Ok(Err(TaskError::Fail { reason, retryable })) => failed(reason, retryable),
        Err(payload) => failed(format!("task panicked: {}", panic_text(payload)), true),
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-text panic payload".to_string()
    }
}

/// Environment variables that tell a task process about its run (Airflow's AIRFLOW_CTX_*).
fn context_env<'a>(
    assignment: &'a AttemptAssignment,
    try_number: &'a str,
) -> [(&'static str, &'a str); 5] {
    let run = &assignment.run;
    [
        ("WEFT_CTX_DAG_ID", &run.dag_id),
        (
            "WEFT_CTX_TASK_ID",
            assignment.request.attempt.key.task_id.as_str(),
        ),
        ("WEFT_CTX_RUN_ID", &run.run_id),
        ("WEFT_CTX_TRY_NUMBER", try_number),
        ("WEFT_CTX_LOGICAL_DATE", &run.logical_date),
    ]
}

fn success(result: Option<serde_json::Value>) -> AttemptReport {
    AttemptReport {
        outcome: AttemptOutcome::Success {
            branch: None,
            proceed: None,
            output_len: None,
        },
        result,
        log_bytes: 0,
        log_truncated: false,
        exit_code: None,
    }
}

fn failed(reason: String, retryable: bool) -> AttemptReport {
    AttemptReport {
        outcome: AttemptOutcome::Failed { reason, retryable },
        ..success(None)
    }
}

fn timed_out() -> AttemptReport {
    AttemptReport {
        outcome: AttemptOutcome::TimedOut,
        ..success(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::{AttemptLimits, LogTarget, TaskContext};
    use weft_core::dag_run::DispatchRequest;
    use weft_core::ids::{AttemptId, Name, TaskInstanceKey};
    use weft_core::state::RunType;

    fn assignment() -> AttemptAssignment {
        let run = TaskContext {
            dag_id: "etl".to_string(),
            task_id: String::new(),
            run_id: "manual__1".to_string(),
            map_index: -1,
            try_number: 0,
            max_tries: 0,
            run_type: "manual".to_string(),
            logical_date: "2026-12-03T18:00:00.000000Z".to_string(),
            data_interval_start: "2026-12-03T18:00:00.000000Z".to_string(),
            data_interval_end: "2026-12-03T18:00:00.000000Z".to_string(),
            params: serde_json::Map::from_iter([("n".to_string(), serde_json::json!(3))]),
            conf: serde_json::json!({"n": 3}),
            xcoms: BTreeMap::new(),
            fileloc: Some("/dags/etl.py".to_string()),
            timezone: "UTC".to_string(),
        };
        let key = TaskInstanceKey::new("etl", "manual__1", "load", 4);
        AttemptAssignment {
            request: DispatchRequest {
                attempt: AttemptId::new(key.clone(), 2, 9),
                priority_weight: 1,
                run_type: RunType::Manual,
                pool: Name::from("default_pool"),
                pool_slots: 1,
                queue: Name::from("default"),
                execution_timeout_ms: None,
            },
            kind: TaskKind::Empty,
            flow: FlowControl::Normal,
            run: Arc::new(run),
            xcoms: BTreeMap::from([("extract".to_string(), serde_json::json!([1, 2]))]),
            max_tries: 3,
            limits: AttemptLimits {
                timeout_ms: None,
                log_bytes_max: 1024,
                sandbox: None,
            },
            log: LogTarget {
                key,
                try_number: 2,
                path: "/logs/attempt=2.log".into(),
            },
        }
    }

    #[test]
    fn an_attempt_context_is_its_run_context_with_its_own_fields() {
        let assignment = assignment();
        let context = assignment.context();
        assert_eq!(
            (
                context.task_id.as_str(),
                context.map_index,
                context.try_number,
                context.max_tries
            ),
            ("load", 4, 2, 3)
        );
        assert_eq!(context.xcoms["extract"], serde_json::json!([1, 2]));
        assert_eq!(
            (
                context.dag_id.as_str(),
                context.run_id.as_str(),
                context.params["n"].clone()
            ),
            ("etl", "manual__1", serde_json::json!(3))
        );
        let try_number = assignment.request.attempt.try_number.to_string();
        assert_eq!(
            context_env(&assignment, &try_number),
            [
                ("WEFT_CTX_DAG_ID", "etl"),
                ("WEFT_CTX_TASK_ID", "load"),
                ("WEFT_CTX_RUN_ID", "manual__1"),
                ("WEFT_CTX_TRY_NUMBER", "2"),
                ("WEFT_CTX_LOGICAL_DATE", "2026-12-03T18:00:00.000000Z"),
            ]
        );
    }

    #[test]
    fn an_assignment_serializes_as_plain_data_and_back() {
        let assignment = assignment();
        let text = serde_json::to_string(&assignment).unwrap();
        let back: AttemptAssignment = serde_json::from_str(&text).unwrap();
        assert_eq!(back, assignment);
    }
}

//! A worker runs attempts from their assignments and a `WorkerContext` alone, with no engine,
//! store or actor: as a worker in a process of its own will.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use weft_actors::executor::python::PythonRunnerConfig;
use weft_actors::executor::worker::{run_attempt, Handlers, WorkerContext};
use weft_actors::executor::{AttemptLimits, AttemptReport, LogTarget, TaskContext};
use weft_actors::{AttemptAssignment, TaskError, TaskFn};
use weft_core::dag_run::{AttemptOutcome, DispatchRequest};
use weft_core::ids::{AttemptId, Name, TaskInstanceKey};
use weft_core::spec::{FlowControl, TaskKind};
use weft_core::state::RunType;

/// Generous bound for anything that should be quick, so a loaded CI machine does not flake.
const PATIENCE: Duration = Duration::from_secs(10);

/// A worker with no Python runner started (none of these tasks needs one) and no secrets.
fn worker(handlers: Handlers) -> WorkerContext {
    WorkerContext::new(handlers, PythonRunnerConfig::from_env(), None)
}

fn assignment(task_id: &str, kind: TaskKind, logs: &Path) -> AttemptAssignment {
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
        params: serde_json::Map::new(),
        conf: serde_json::json!({}),
        xcoms: BTreeMap::new(),
        fileloc: None,
        timezone: "UTC".to_string(),
    };
    let key = TaskInstanceKey::new("etl", "manual__1", task_id, -1);
    AttemptAssignment {
        request: DispatchRequest {
            attempt: AttemptId::new(key.clone(), 2, 7),
            priority_weight: 1,
            run_type: RunType::Manual,
            pool: Name::from("default_pool"),
            pool_slots: 1,
            queue: Name::from("default"),
            execution_timeout_ms: None,
        },
        kind,
        flow: FlowControl::Normal,
        run: Arc::new(run),
        xcoms: BTreeMap::from([("extract".to_string(), serde_json::json!([1, 2, 3]))]),
        max_tries: 3,
        limits: AttemptLimits {
            timeout_ms: None,
            log_bytes_max: 64 * 1024,
            sandbox: None,
        },
        log: LogTarget {
            key,
            try_number: 2,
            path: logs.join(format!("{task_id}/2.log")),
        },
    }
}

/// The assignment as a remote worker receives it: serialized and read back.
fn over_the_wire(assignment: &AttemptAssignment) -> AttemptAssignment {
    serde_json::from_str(&serde_json::to_string(assignment).unwrap()).unwrap()
}

async fn run(worker: &WorkerContext, assignment: &AttemptAssignment) -> AttemptReport {
    tokio::time::timeout(PATIENCE, run_attempt(worker, &over_the_wire(assignment)))
        .await
        .expect("the attempt ends in time")
}

fn handler<F>(function: F) -> TaskFn
where
    F: Fn(TaskContext) -> Result<Option<serde_json::Value>, TaskError> + Send + Sync + 'static,
{
    Arc::new(move |context| {
        let result = function(context);
        Box::pin(async move { result })
    })
}

#[tokio::test]
async fn an_in_process_attempt_runs_on_a_worker_without_an_engine() {
    let logs = tempfile::tempdir().unwrap();
    let handlers = Handlers::default();
    let worker = worker(handlers.clone());
    let load = assignment(
        "load",
        TaskKind::InProcess {
            handler: "etl.load".to_string(),
        },
        logs.path(),
    );

    let report = run(&worker, &load).await;
    assert_eq!(
        report.outcome,
        AttemptOutcome::Failed {
            reason: "no in-process handler named `etl.load` is registered".to_string(),
            retryable: false
        }
    );

    // Registered after the worker was built, through a clone of its registry: the next attempt
    // finds it. The handler sees the attempt's own context.
    handlers.register(
        "etl.load",
        handler(|context| {
            let total: i64 = context.xcoms["extract"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|n| n.as_i64())
                .sum();
            Ok(Some(serde_json::json!({
                "task": context.task_id,
                "try": context.try_number,
                "total": total,
            })))
        }),
    );
    let report = run(&worker, &load).await;
    assert!(
        matches!(report.outcome, AttemptOutcome::Success { .. }),
        "{report:?}"
    );
    assert_eq!(
        report.result,
        Some(serde_json::json!({"task": "load", "try": 2, "total": 6}))
    );

    // The result is read as the task's flow control asks.
    handlers.register("etl.pick", handler(|_| Ok(Some(serde_json::json!("load")))));
    let mut pick = assignment(
        "pick",
        TaskKind::InProcess {
            handler: "etl.pick".to_string(),
        },
        logs.path(),
    );
    pick.flow = FlowControl::Branch;
    let report = run(&worker, &pick).await;
    assert!(
        matches!(
            &report.outcome,
            AttemptOutcome::Success { branch: Some(branch), .. } if branch == &["load"]
        ),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_shell_attempt_runs_on_a_worker_without_an_engine() {
    let logs = tempfile::tempdir().unwrap();
    let worker = worker(Handlers::default());
    let shell = |command: &str| TaskKind::Shell {
        command: command.to_string(),
        env: BTreeMap::new(),
        append_env: false,
        cwd: None,
        skip_exit_code: Some(99),
        templated: false,
    };

    let echo = assignment(
        "echo",
        shell("echo \"$WEFT_CTX_DAG_ID/$WEFT_CTX_TASK_ID try $WEFT_CTX_TRY_NUMBER\"; echo done"),
        logs.path(),
    );
    let report = run(&worker, &echo).await;
    assert!(
        matches!(report.outcome, AttemptOutcome::Success { .. }),
        "{report:?}"
    );
    assert_eq!(report.result, Some(serde_json::json!("done")));
    assert_eq!(report.exit_code, Some(0));
    let log = std::fs::read_to_string(&echo.log.path).unwrap();
    assert_eq!(log, "etl/echo try 2\ndone\n");

    let skip = assignment("skip", shell("exit 99"), logs.path());
    let report = run(&worker, &skip).await;
    assert_eq!(report.outcome, AttemptOutcome::Skipped, "{report:?}");
}

//! Variables and Connections from the node's vault, end to end: DAG files whose tasks read and
//! write them (Airflow's `Variable`, `BaseHook.get_connection`, `{{ var.value.x }}` in a
//! shell command) run through the engine, and the secrets they used are masked in the logs.
//! Also the shell executor's masking on its own. Needs `python3` with jinja2
//! (`scripts/install-deps.sh`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use weft_actors::executor::subprocess::{run_shell, ShellCommand};
use weft_actors::executor::{AttemptLimits, LogTarget};
use weft_actors::{Engine, EngineConfig};
use weft_core::dag_run::AttemptOutcome;
use weft_core::ids::TaskInstanceKey;
use weft_core::spec::DagSpec;
use weft_core::state::{DagRunState, TaskState};
use weft_storage::memory::MemoryStore;
use weft_storage::vault::{Connection, Variable};
use weft_storage::Store;

/// A bound on how long the run may take before the test fails (not a speed assertion).
const RUN_DEADLINE: Duration = Duration::from_secs(120);
const TOKEN: &str = "tok-5ecr3t-f00d";
const PASSWORD: &str = "wh-pa55-beef";

const DAG_FILE: &str = r#"
import datetime
from airflow.sdk import DAG, task, Variable, BaseHook
from airflow.providers.standard.operators.bash import BashOperator
from weft import BashOperator as ShellOperator

with DAG("secrets_dag", schedule=None, start_date=datetime.datetime(2024, 1, 1)):
    @task
    def use_secrets():
        token = Variable.get("api_token")
        Variable.set("seen_by_task", "yes:" + str(len(token)), description="set by a task")
        password = BaseHook.get_connection("warehouse").password
        print("token", token, "password", password)
        return len(password)

    # Rendered and run in the Python runner (Airflow's operator) ...
    airflow_echo = BashOperator(task_id="airflow_echo",
                                bash_command="echo token={{ var.value.api_token }}")
    # ... and rendered by the runner, run by the node's shell executor (weft's operator).
    shell_echo = ShellOperator(
        task_id="shell_echo",
        bash_command="echo token={{ var.value.api_token }}; echo pw={{ conn.warehouse.password }}",
    )
    use_secrets() >> [airflow_echo, shell_echo]
"#;

/// The DAG specs of a DAG file, as the DAG processor makes them (`python3 -m weft.processor`).
fn parse(path: &Path) -> Vec<DagSpec> {
    let config = weft_actors::executor::python::PythonRunnerConfig::from_env();
    let output = std::process::Command::new(&config.python)
        .args(["-m", "weft.processor"])
        .arg(path)
        .env("PYTHONPATH", &config.python_path)
        .output()
        .expect("python3 runs (see scripts/install-deps.sh)");
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "the DAG processor answered no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(
        answer["error"].is_null(),
        "import error: {}",
        answer["error"]
    );
    serde_json::from_value(answer["dags"].clone()).expect("DAG specs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_read_and_write_the_vault_and_their_logs_mask_the_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let dag_file = dir.path().join("secrets_dag.py");
    std::fs::write(&dag_file, DAG_FILE).unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::start(store.clone(), EngineConfig::new(dir.path().join("data")))
        .await
        .unwrap();
    let at = chrono::Utc::now();
    let vault = engine.vault().clone();
    let token = Variable {
        key: "api_token".into(),
        value: TOKEN.into(),
        description: String::new(),
    };
    vault.set_variable(&token, at).await.unwrap();
    let uri = format!("postgres://etl:{PASSWORD}@warehouse.internal:5432/sales");
    let connection = Connection::from_uri("warehouse", &uri).unwrap();
    vault.set_connection(&connection, at).await.unwrap();

    for spec in parse(&dag_file) {
        engine.upsert_dag(spec).await.unwrap();
    }
    let run = engine
        .trigger("secrets_dag", serde_json::json!({}))
        .await
        .unwrap();
    let state = tokio::time::timeout(RUN_DEADLINE, engine.wait_for_run(&run))
        .await
        .expect("the run finishes")
        .expect("the run exists");

    let mut logs = Vec::new();
    for task_id in ["use_secrets", "airflow_echo", "shell_echo"] {
        let key = TaskInstanceKey::new("secrets_dag", run.run_id.as_str(), task_id, -1);
        let text = std::fs::read_to_string(engine.log_path(&key, 1)).unwrap_or_default();
        logs.push((task_id, text));
    }
    let instances = store.task_instances(&run).await.unwrap();
    assert_eq!(state, DagRunState::Success, "{instances:?}\n{logs:#?}");
    assert!(
        instances.iter().all(|ti| ti.state == TaskState::Success),
        "{instances:?}"
    );

    let seen = vault.variable("seen_by_task").await.unwrap();
    let seen = seen.expect("the task set the variable");
    assert_eq!(
        (seen.value.as_str(), seen.description.as_str()),
        ("yes:15", "set by a task")
    );
    let audit = store.audit(10).await.unwrap();
    let entry = audit
        .iter()
        .find(|row| row.action == "variable.set")
        .expect("an audit entry of the change");
    assert_eq!(
        entry.actor,
        format!("task:secrets_dag/{}/use_secrets", run.run_id.as_str())
    );
    assert_eq!(entry.target, "seen_by_task");
    assert!(!entry.detail.contains("yes:15"), "{entry:?}");

    let expected = [
        ("use_secrets", "token *** password ***"),
        ("airflow_echo", "token=***"),
        ("shell_echo", "token=***\npw=***"),
    ];
    for ((task_id, text), (_, shown)) in logs.iter().zip(expected) {
        assert!(text.contains(shown), "{task_id}: {text}");
        assert!(
            !text.contains(TOKEN) && !text.contains(PASSWORD),
            "{task_id} shows a secret: {text}"
        );
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn the_shell_executor_masks_values_split_across_writes() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogTarget {
        key: TaskInstanceKey::new("dag", "run", "task", -1),
        try_number: 1,
        path: dir.path().join("task.log"),
    };
    let limits = AttemptLimits {
        timeout_ms: Some(30_000),
        log_bytes_max: 1 << 20,
        sandbox: None,
    };
    let command = ShellCommand {
        masks: vec![TOKEN.to_string(), String::new()],
        ..ShellCommand::new(format!(
            "printf 'a={}'; sleep 0.2; printf '{} b\\n'; printf 'end {TOKEN}'",
            &TOKEN[..5],
            &TOKEN[5..]
        ))
    };
    let report = run_shell(&command, &log, &limits, &[]).await;
    let text = std::fs::read_to_string(&log.path).unwrap();
    assert!(
        matches!(report.outcome, AttemptOutcome::Success { .. }),
        "{report:?}"
    );
    assert_eq!(text, "a=*** b\nend ***");
    assert_eq!(report.log_bytes, text.len() as u64);
    // Without masks the output is written as it came.
    let plain = ShellCommand::new(format!("printf '{TOKEN}'"));
    run_shell(&plain, &log, &limits, &[]).await;
    assert_eq!(std::fs::read_to_string(&log.path).unwrap(), TOKEN);
}

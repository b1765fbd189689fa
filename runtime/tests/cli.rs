//! The `weft` binary end to end: real DAG files parsed by real Python, real subprocesses, a
//! real SQLite file, and a node killed with SIGKILL mid-run.

mod common;

use common::http;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Home {
    dir: tempfile::TempDir,
    dags: PathBuf,
}

impl Home {
    fn new() -> Home {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // Tasks run as a user of their own: they read the DAG folder and write to `shared`.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dags = dir.path().join("dags");
        std::fs::create_dir_all(&dags).unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        Home { dir, dags }
    }

    /// A directory tasks may write to.
    fn shared(&self) -> PathBuf {
        self.dir.path().join("shared")
    }

    fn with_examples() -> Home {
        let home = Home::new();
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/dags");
        for entry in std::fs::read_dir(examples).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, home.dags.join(path.file_name().unwrap())).unwrap();
        }
        home
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dags.join(name), text).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
        command
            .args(args)
            .env("WEFT_HOME", self.dir.path().join("home"))
            .env("WEFT_DAGS_FOLDER", &self.dags)
            .env("WEFT_LOG", "warn")
            // A standalone node serves its UI on a port of its own: tests run side by side, and
            // something else may hold the default 8080.
            .env("WEFT_WEB__BIND", "127.0.0.1:0")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let output = self.run(&all);
        let stdout = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(&stdout).unwrap_or_else(|error| {
            panic!(
                "{args:?} printed no JSON ({error}):\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
    }
}

fn dags_test(home: &Home, dag_id: &str) -> Value {
    home.json(&["dags", "test", dag_id])
}

#[test]
fn every_example_dag_runs_to_success() {
    let home = Home::with_examples();
    for dag_id in ["etl_with_retries", "fan_out_fan_in", "paris_weekday_report"] {
        let result = dags_test(&home, dag_id);
        assert_eq!(result["run_state"], "success", "{dag_id}: {result:#}");
        for (task, value) in result["tasks"].as_object().unwrap() {
            assert_eq!(value["state"], "success", "{dag_id}.{task}: {result:#}");
        }
    }
    let branching = dags_test(&home, "branching");
    assert_eq!(branching["run_state"], "success", "{branching:#}");
    let even = branching["tasks"]["even_day"]["state"]
        .as_str()
        .unwrap()
        .to_string();
    let odd = branching["tasks"]["odd_day"]["state"]
        .as_str()
        .unwrap()
        .to_string();
    let mut pair = [even, odd];
    pair.sort();
    assert_eq!(
        pair,
        ["skipped".to_string(), "success".to_string()],
        "exactly one branch runs: {branching:#}"
    );
    assert_eq!(branching["tasks"]["join"]["state"], "success");
}

#[test]
fn a_task_mapped_over_an_upstream_output_shows_only_its_mapped_instances() {
    let home = Home::new();
    home.write(
        "mapped.py",
        "from airflow.sdk import DAG, task\nwith DAG(dag_id='mapped', schedule=None) as dag:\n    @task\n    def numbers():\n        return [1, 2, 3]\n    @task\n    def double(x):\n        return 2 * x\n    double.expand(x=numbers())\n",
    );
    let result = dags_test(&home, "mapped");
    assert_eq!(result["run_state"], "success", "{result:#}");
    let tasks = result["tasks"].as_object().unwrap();
    let mut names: Vec<&str> = tasks.keys().map(String::as_str).collect();
    names.sort_unstable();
    // Airflow shows the three mapped instances, not the unexpanded one as `removed`.
    assert_eq!(
        names,
        ["double[0]", "double[1]", "double[2]", "numbers"],
        "{result:#}"
    );
    assert!(
        tasks.values().all(|task| task["state"] == "success"),
        "{result:#}"
    );
}

#[test]
fn dags_test_exits_non_zero_when_the_run_fails() {
    let home = Home::new();
    home.write(
        "failing.py",
        "from weft import DAG, BashOperator\nwith DAG(dag_id='failing', schedule=None) as dag:\n    BashOperator(task_id='boom', bash_command='exit 3') >> BashOperator(task_id='never', bash_command='true')\n",
    );
    let output = home.run(&["dags", "test", "failing", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["run_state"], "failed");
    assert_eq!(result["tasks"]["boom"]["state"], "failed");
    assert_eq!(result["tasks"]["never"]["state"], "upstream_failed");
}

#[test]
fn a_chain_of_100_and_a_fan_out_of_1000_shell_tasks_complete() {
    let home = Home::new();
    home.write(
        "big.py",
        r#"
from weft import DAG, BashOperator
with DAG(dag_id="chain100", schedule=None) as chain:
    previous = None
    for i in range(100):
        task = BashOperator(task_id=f"t{i}", bash_command="true")
        if previous is not None:
            previous >> task
        previous = task
with DAG(dag_id="fanout1000", schedule=None, max_active_tasks=64) as fan:
    start = BashOperator(task_id="start", bash_command="true")
    end = BashOperator(task_id="end", bash_command="true")
    for i in range(1000):
        start >> BashOperator(task_id=f"leaf{i}", bash_command="true") >> end
"#,
    );
    let started = Instant::now();
    let chain = dags_test(&home, "chain100");
    let chain_time = started.elapsed();
    assert_eq!(chain["run_state"], "success");
    assert_eq!(chain["tasks"].as_object().unwrap().len(), 100);
    let started = Instant::now();
    let fan = dags_test(&home, "fanout1000");
    let fan_time = started.elapsed();
    assert_eq!(fan["run_state"], "success");
    assert_eq!(fan["tasks"].as_object().unwrap().len(), 1002);
    assert!(fan["tasks"]
        .as_object()
        .unwrap()
        .values()
        .all(|task| task["state"] == "success"));
    // Reported, not asserted: speed is the benchmark suite's business.
    eprintln!("chain100: {chain_time:?} (whole command), fanout1000: {fan_time:?} (whole command)");
}

#[test]
fn bad_dag_files_become_import_errors_with_file_and_line() {
    let home = Home::new();
    home.write("good.py", "from weft import DAG, EmptyOperator\nwith DAG(dag_id='good', schedule=None) as dag:\n    EmptyOperator(task_id='a')\n");
    home.write(
        "syntax.py",
        "from weft import DAG\nwith DAG(dag_id='syntax' as dag:\n    pass\n",
    );
    home.write(
        "exception.py",
        "from weft import DAG\n\nraise RuntimeError('boom at import')\n",
    );
    home.write(
        "cycle.py",
        "from weft import DAG, EmptyOperator\nwith DAG(dag_id='cyclic', schedule=None) as dag:\n    a = EmptyOperator(task_id='a')\n    b = EmptyOperator(task_id='b')\n    a >> b >> a\n",
    );
    home.write("bad_cron.py", "from weft import DAG, EmptyOperator\nwith DAG(dag_id='bad_cron', schedule='61 * * * *') as dag:\n    EmptyOperator(task_id='a')\n");
    home.write(
        "bad_tz.py",
        "from weft import DAG, EmptyOperator\nwith DAG(dag_id='bad_tz', schedule='@daily', timezone='Mars/Olympus') as dag:\n    EmptyOperator(task_id='a')\n",
    );
    // Within one scan the first path in order keeps a dag id: this file comes after good.py.
    home.write(
        "z_duplicate.py",
        "from weft import DAG, EmptyOperator\nwith DAG(dag_id='good', schedule=None) as dag:\n    EmptyOperator(task_id='b')\n",
    );
    let output = home
        .command(&["dags", "errors", "--json"])
        .output()
        .unwrap();
    let errors: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stderr)));
    let by_file = |name: &str| -> Value {
        errors
            .as_array()
            .unwrap()
            .iter()
            .find(|error| error["fileloc"].as_str().unwrap().ends_with(name))
            .cloned()
            .unwrap_or_else(|| panic!("no import error for {name}: {errors:#}"))
    };
    assert_eq!(by_file("syntax.py")["line"], 2);
    let exception = by_file("exception.py");
    assert_eq!(exception["line"], 3);
    assert!(exception["message"]
        .as_str()
        .unwrap()
        .contains("boom at import"));
    let cycle = by_file("cycle.py")["message"].as_str().unwrap().to_string();
    assert!(
        cycle.contains("cycle") && cycle.contains('a') && cycle.contains('b'),
        "{cycle}"
    );
    assert!(by_file("bad_cron.py")["message"]
        .as_str()
        .unwrap()
        .contains("61"));
    assert!(by_file("bad_tz.py")["message"]
        .as_str()
        .unwrap()
        .contains("Mars/Olympus"));
    assert!(by_file("z_duplicate.py")["message"]
        .as_str()
        .unwrap()
        .contains("good"));
    assert!(errors
        .as_array()
        .unwrap()
        .iter()
        .all(|error| !error["fileloc"].as_str().unwrap().ends_with("good.py")));
    let dags = home.json(&["dags", "list"]);
    let ids: Vec<&str> = dags
        .as_array()
        .unwrap()
        .iter()
        .map(|dag| dag["dag_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["good"], "only the good file's DAG is registered");
}

#[test]
fn a_dag_file_that_hangs_at_import_times_out() {
    let home = Home::new();
    home.write(
        "slow.py",
        "import time\nfrom weft import DAG\ntime.sleep(120)\n",
    );
    let mut command = home.command(&["dags", "errors", "--json"]);
    command.env("WEFT_CORE__DAG_FILE_PARSE_TIMEOUT_MS", "3000");
    let started = Instant::now();
    let output = command.output().unwrap();
    let errors: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(errors.as_array().unwrap().len(), 1, "{errors:#}");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(message.contains("timed out after 3 s"), "{message}");
    // Bounded, not timed: the import was killed rather than waited for.
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "the hanging import was not killed"
    );
}

#[test]
fn a_broken_file_keeps_the_last_good_version_running() {
    let home = Home::new();
    home.write("etl.py", "from weft import DAG, BashOperator\nwith DAG(dag_id='etl', schedule=None) as dag:\n    BashOperator(task_id='v1', bash_command='true')\n");
    assert_eq!(
        home.json(&["tasks", "list", "etl"]),
        serde_json::json!(["v1"])
    );
    home.write("etl.py", "from weft import DAG, BashOperator\nwith DAG(dag_id='etl', schedule=None) as dag:\n    BashOperator(task_id='v1', bash_command='true'\n");
    let errors = home.json(&["dags", "errors"]);
    assert_eq!(errors.as_array().unwrap().len(), 1, "{errors:#}");
    assert_eq!(
        home.json(&["tasks", "list", "etl"]),
        serde_json::json!(["v1"])
    );
    let result = dags_test(&home, "etl");
    assert_eq!(
        result["run_state"], "success",
        "the last good version still runs"
    );
}

#[test]
fn next_execution_prints_logical_dates_and_data_intervals() {
    let home = Home::new();
    home.write(
        "daily.py",
        "from datetime import datetime\nfrom weft import DAG, EmptyOperator\nwith DAG(dag_id='daily', schedule='0 3 * * *', start_date=datetime(2030, 1, 1), catchup=True) as dag:\n    EmptyOperator(task_id='a')\n",
    );
    let next = home.json(&["dags", "next-execution", "daily", "-n", "2"]);
    let dates: Vec<&str> = next
        .as_array()
        .unwrap()
        .iter()
        .map(|info| info["logical_date"].as_str().unwrap())
        .collect();
    assert_eq!(dates.len(), 2, "{next:#}");
    assert!(dates[0].starts_with("2030-01-01T03:00:00"), "{next:#}");
    assert!(dates[1].starts_with("2030-01-02T03:00:00"), "{next:#}");
}

#[test]
fn backfill_dry_run_lists_the_runs_it_would_create() {
    let home = Home::new();
    home.write(
        "daily.py",
        "from datetime import datetime\nfrom weft import DAG, EmptyOperator\nwith DAG(dag_id='daily', schedule='@daily', start_date=datetime(2024, 1, 1)) as dag:\n    EmptyOperator(task_id='a')\n",
    );
    let planned = home.json(&[
        "dags",
        "backfill",
        "daily",
        "-s",
        "2024-01-01",
        "-e",
        "2024-01-05",
        "--dry-run",
    ]);
    assert_eq!(planned.as_array().unwrap().len(), 5, "{planned:#}");
    let runs = home.json(&["runs", "list"]);
    assert_eq!(runs, serde_json::json!([]), "a dry run creates nothing");
}

#[test]
fn backfill_runs_the_range_and_reports_progress() {
    let home = Home::new();
    home.write(
        "daily.py",
        "from datetime import datetime\nfrom weft import DAG, BashOperator\nwith DAG(dag_id='daily', schedule='@daily', start_date=datetime(2024, 1, 1)) as dag:\n    BashOperator(task_id='a', bash_command='echo {{ ds }}')\n",
    );
    let output = home.run(&[
        "dags",
        "backfill",
        "daily",
        "-s",
        "2024-01-01",
        "-e",
        "2024-01-03",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("3 runs, 0 failed"));
    let runs = home.json(&["runs", "list", "daily"]);
    // The DAG is unpaused, so its latest scheduled run also exists; count the backfill's.
    let backfill: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|run| run["run_type"] == "backfill")
        .map(|run| run["state"].as_str().unwrap())
        .collect();
    assert_eq!(backfill, vec!["success"; 3], "{runs:#}");
}

#[test]
fn an_unknown_configuration_key_is_a_clear_error() {
    let home = Home::new();
    let output = home
        .command(&["dags", "list"])
        .env("WEFT_WORKERS__SLOTZ", "3")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown field `slotz`"), "{stderr}");
}

#[test]
fn a_triggered_run_without_a_node_is_started_by_the_next_node() {
    let home = Home::new();
    home.write("hello.py", "from weft import DAG, BashOperator\nwith DAG(dag_id='hello', schedule=None) as dag:\n    BashOperator(task_id='say', bash_command='echo hello {{ run_id }}')\n    BashOperator(task_id='quiet', bash_command='true')\n");
    let triggered = home.json(&["dags", "trigger", "hello", "--conf", "{\"x\": 1}"]);
    let run_id = triggered["run_id"].as_str().unwrap().to_string();
    let runs = home.json(&["runs", "list", "hello"]);
    assert_eq!(runs[0]["state"], "queued");
    // The offline trigger takes the scheduler's decision: a logical date holds one run, and
    // conf is a JSON object.
    let at = ["--logical-date", "2024-03-01T00:00:00Z"];
    let first = home.run(&[&["dags", "trigger", "hello"][..], &at[..]].concat());
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = home.run(&[&["dags", "trigger", "hello"][..], &at[..]].concat());
    assert!(!second.status.success());
    let refusal = String::from_utf8_lossy(&second.stderr);
    assert!(refusal.contains("exists already"), "{refusal}");
    let array = home.run(&["dags", "trigger", "hello", "--conf", "[1]"]);
    assert!(!array.status.success());
    let output = home.run(&["standalone", "--exit-when-idle"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let state = home.json(&["tasks", "state", "hello", "say", &run_id]);
    assert_eq!(state["state"], "success");
    let logs = home.run(&["tasks", "logs", "hello", "say", &run_id]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains(&format!("hello {run_id}")));
    // A task that printed nothing has an empty log (and no file behind it).
    let quiet = home.run(&["tasks", "logs", "hello", "quiet", &run_id]);
    assert!(
        quiet.status.success(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&quiet.stdout), "");
}

/// kill -9 the node while tasks run, restart it: every run completes, no attempt result is
/// accepted twice, and no task is reported successful that did not run.
#[test]
fn a_node_killed_mid_run_finishes_every_run_after_restart() {
    let home = Home::new();
    let markers = home.shared().join("markers");
    home.write(
        "crashy.py",
        r#"
import os
from datetime import timedelta
from weft import DAG, BashOperator
MARKERS = os.environ["WEFT_TEST_MARKERS"]
with DAG(dag_id="crashy", schedule=None, default_args={"retries": 3, "retry_delay": timedelta(seconds=0)}) as dag:
    previous = None
    for i in range(4):
        wide = [BashOperator(task_id=f"s{i}_{j}", bash_command=f"echo $WEFT_CTX_TASK_ID:$WEFT_CTX_TRY_NUMBER >> {MARKERS}; sleep 0.3") for j in range(3)]
        for upstream in previous or []:
            upstream >> wide
        previous = wide
"#,
    );
    let mut first = home
        .command(&["standalone", "--trigger-new-dags"])
        .env("WEFT_TEST_MARKERS", &markers)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&markers)
        .map(|text| text.lines().count())
        .unwrap_or(0)
        < 4
    {
        assert!(Instant::now() < deadline, "tasks never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();

    let mut second = home.command(&["standalone", "--exit-when-idle"]);
    second.env("WEFT_TEST_MARKERS", &markers);
    let output = second.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let runs = home.json(&["runs", "list", "crashy"]);
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["state"], "success", "{runs:#}");
    let run_id = runs[0]["key"]["run_id"].as_str().unwrap().to_string();
    let ran = std::fs::read_to_string(&markers).unwrap();
    assert!(
        ran.lines().count() > 12,
        "the kill interrupted at least one attempt, which ran again:\n{ran}"
    );
    let db = home.dir.path().join("home/weft.db");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use weft_storage::Store;
        let store = weft_storage::sqlite::SqliteStore::open(&db, Default::default()).unwrap();
        let run = weft_core::ids::RunKey {
            dag_id: "crashy".into(),
            run_id: run_id.as_str().into(),
        };
        let records = store.task_instances(&run).await.unwrap();
        assert_eq!(records.len(), 12);
        for record in records {
            assert_eq!(
                record.state,
                weft_core::state::TaskState::Success,
                "{record:?}"
            );
            let marker = format!("{}:{}", record.key.task_id, record.try_number);
            assert!(
                ran.lines().any(|line| line == marker),
                "{marker} succeeded but never ran:\n{ran}"
            );
            let accepted = store
                .attempts(&record.key)
                .await
                .unwrap()
                .into_iter()
                .filter(|attempt| attempt.state == weft_core::state::TaskState::Success)
                .count();
            assert_eq!(
                accepted, 1,
                "{} has {accepted} accepted results",
                record.key
            );
        }
    });
}

/// Twenty rounds of kill -9 while tasks run, each round with a new run: a restarted node kills
/// what its predecessor left before it retries those attempts, so no task instance ever runs
/// twice at once (each attempt holds a lock on its instance's file for its whole life and
/// records an overlap if it cannot take it), nothing is lost and nothing fails wrongly.
#[test]
fn twenty_kill_9_rounds_never_run_an_attempt_twice_at_once() {
    const ROUNDS: usize = 20;
    let home = Home::new();
    let shared = home.shared();
    let markers = shared.join("markers");
    // The attempts' working directories, which killed nodes leave behind.
    let task_dirs = home.dir.path().join("tasks");
    home.write(
        "crashy.py",
        r#"
import os
from datetime import timedelta
from weft import DAG, BashOperator
SHARED = os.environ["WEFT_TEST_SHARED"]
COMMAND = (
    'exec 9>>{shared}/$WEFT_CTX_RUN_ID.$WEFT_CTX_TASK_ID.lock; '
    'if ! flock -n 9; then echo "overlap $WEFT_CTX_RUN_ID $WEFT_CTX_TASK_ID:$WEFT_CTX_TRY_NUMBER" >> {shared}/markers; exit 1; fi; '
    'echo "start $WEFT_CTX_RUN_ID $WEFT_CTX_TASK_ID:$WEFT_CTX_TRY_NUMBER $$" >> {shared}/markers; '
    'sleep 1; '
    'echo "end $WEFT_CTX_RUN_ID $WEFT_CTX_TASK_ID:$WEFT_CTX_TRY_NUMBER $$" >> {shared}/markers'
).format(shared=SHARED)
with DAG(dag_id="crashy", schedule=None, default_args={"retries": 30, "retry_delay": timedelta(seconds=0)}) as dag:
    first = [BashOperator(task_id=f"a{j}", bash_command=COMMAND) for j in range(3)]
    second = [BashOperator(task_id=f"b{j}", bash_command=COMMAND) for j in range(3)]
    for upstream in first:
        upstream >> second
"#,
    );
    let starts = |text: &str| text.lines().filter(|l| l.starts_with("start ")).count();
    for round in 0..ROUNDS {
        let trigger = home
            .command(&["dags", "trigger", "crashy"])
            .env("WEFT_TEST_SHARED", &shared)
            .env("WEFT_SANDBOX__TASK_DIRS", &task_dirs)
            .output()
            .unwrap();
        assert!(
            trigger.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&trigger.stderr)
        );
        let before = starts(&std::fs::read_to_string(&markers).unwrap_or_default());
        let mut node = home
            .command(&["standalone"])
            .env("WEFT_TEST_SHARED", &shared)
            .env("WEFT_SANDBOX__TASK_DIRS", &task_dirs)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while starts(&std::fs::read_to_string(&markers).unwrap_or_default()) <= before {
            assert!(Instant::now() < deadline, "round {round}: no task started");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Somewhere inside the attempts' second of work.
        std::thread::sleep(Duration::from_millis(100 + 37 * round as u64 % 400));
        node.kill().unwrap(); // SIGKILL
        node.wait().unwrap();
    }
    let mut last = home.command(&["standalone", "--exit-when-idle"]);
    last.env("WEFT_TEST_SHARED", &shared)
        .env("WEFT_SANDBOX__TASK_DIRS", &task_dirs);
    let output = last.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let ran = std::fs::read_to_string(&markers).unwrap();
    let overlaps: Vec<&str> = ran.lines().filter(|l| l.starts_with("overlap")).collect();
    let runs = home.json(&["runs", "list", "crashy"]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), ROUNDS);
    let db = home.dir.path().join("home/weft.db");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (mut lost, mut wrongly_failed, mut instances) = (0, 0, 0);
    runtime.block_on(async {
        use weft_storage::Store;
        let store = weft_storage::sqlite::SqliteStore::open(&db, Default::default()).unwrap();
        for run in runs {
            let run_id = run["key"]["run_id"].as_str().unwrap().to_string();
            if run["state"] != "success" {
                wrongly_failed += 1;
            }
            let key = weft_core::ids::RunKey {
                dag_id: "crashy".into(),
                run_id: run_id.as_str().into(),
            };
            let records = store.task_instances(&key).await.unwrap();
            lost += 6 - records.len();
            for record in records {
                instances += 1;
                if record.state != weft_core::state::TaskState::Success {
                    wrongly_failed += 1;
                    continue;
                }
                let end = format!("end {run_id} {}:{} ", record.key.task_id, record.try_number);
                if !ran.lines().any(|line| line.starts_with(&end)) {
                    lost += 1;
                }
                let accepted = store
                    .attempts(&record.key)
                    .await
                    .unwrap()
                    .into_iter()
                    .filter(|a| a.state == weft_core::state::TaskState::Success)
                    .count();
                assert_eq!(
                    accepted, 1,
                    "{} has {accepted} accepted results",
                    record.key
                );
            }
        }
    });
    println!(
        "kill -9 rounds: {ROUNDS}, task instances: {instances}, running twice at once: {}, \
         lost: {lost}, wrongly failed: {wrongly_failed}, attempts started: {}",
        overlaps.len(),
        starts(&ran)
    );
    assert!(
        overlaps.is_empty(),
        "attempts ran twice at once:\n{}",
        overlaps.join("\n")
    );
    assert_eq!(lost, 0, "{ran}");
    assert_eq!(wrongly_failed, 0, "{runs:#?}");
    // What the killed nodes' attempts left in their working directories is gone too.
    let left: Vec<_> = std::fs::read_dir(&task_dirs)
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A node's home holds the store, the admin password and the session secret: neither other
/// users nor tasks (which run as a user of their own) may read it.
#[test]
fn a_node_keeps_its_home_private() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    let dir = home.dir.path().join("home");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = home.run(&["standalone", "--exit-when-idle"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("weft.db")), 0o600);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("isolation user: tasks run as uid 61000:61000"),
        "the start-up line says which isolation is in force: {stderr}"
    );
}

/// The control socket answers only its node's user and root, even when its file could be
/// reached by others, and audits what it does.
#[test]
fn the_control_socket_refuses_other_users_and_audits_commands() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    home.write(
        "hello.py",
        "from weft import DAG, BashOperator\nwith DAG(dag_id='hello', schedule=None) as dag:\n    BashOperator(task_id='say', bash_command='true')\n",
    );
    let dir = home.dir.path().join("home");
    let socket = dir.join("weft.sock");
    let mut node = home
        .command(&["standalone"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "the node never opened its socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // DAG files are parsed in the background once the node serves.
    while !String::from_utf8_lossy(&home.run(&["dags", "list"]).stdout).contains("hello") {
        assert!(Instant::now() < deadline, "the DAG was never registered");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A deployment that opened the home and the socket to everyone.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let client = "import socket, sys\n\
                  s = socket.socket(socket.AF_UNIX)\n\
                  s.connect(sys.argv[1])\n\
                  s.sendall(b'{\"op\": \"set_paused\", \"dag_id\": \"hello\", \"paused\": true}\\n')\n\
                  print(s.makefile().readline())\n";
    let stranger = Command::new("setpriv")
        .args(["--reuid", "61000", "--regid", "61000", "--clear-groups"])
        .args(["/usr/bin/python3", "-c", client])
        .arg(&socket)
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&stranger.stdout);
    assert!(
        answer.contains("uid 61000 may not control this node"),
        "{answer} {}",
        String::from_utf8_lossy(&stranger.stderr)
    );
    // The node's own user is served, and audited.
    let paused = home.run(&["dags", "pause", "hello"]);
    assert!(
        paused.status.success(),
        "{}",
        String::from_utf8_lossy(&paused.stderr)
    );
    node.kill().unwrap();
    node.wait().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let audit = runtime.block_on(async {
        use weft_storage::Store;
        let store =
            weft_storage::sqlite::SqliteStore::open(dir.join("weft.db"), Default::default())
                .unwrap();
        store.audit(10).await.unwrap()
    });
    assert!(
        audit.iter().any(|entry| entry.actor == "cli:uid=0"
            && entry.action == "pause"
            && entry.target == "hello"),
        "{audit:?}"
    );
    assert!(!audit.iter().any(|entry| entry.actor.contains("61000")));
}

/// A node serves its API before its DAG files are parsed: a slow DAG file keeps neither the UI
/// nor the API waiting.
#[test]
fn the_api_is_served_while_dag_files_parse() {
    use std::io::BufRead;
    let home = Home::new();
    let release = home.shared().join("release");
    home.write(
        "slow_dag.py",
        &format!(
            "import os, time\nfrom weft import DAG, EmptyOperator\n\
             while not os.path.exists({release:?}):\n    time.sleep(0.05)\n\
             with DAG(dag_id='slow', schedule=None) as dag:\n    EmptyOperator(task_id='t')\n",
            release = release.display().to_string()
        ),
    );
    let mut node = home
        .command(&["standalone", "--bind", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = node.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line_with = |needle: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("the node never printed `{needle}`"),
            }
        }
    };
    let served = next_line_with("UI and API on http://");
    let address = served.split("http://").nth(1).unwrap().trim().to_string();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    use std::io::{Read, Write};
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The DAG file is still being parsed.
    assert!(!release.exists());
    std::fs::write(&release, "").unwrap();
    let parsed = next_line_with("DAGs from");
    assert!(parsed.contains("1 DAGs"), "{parsed}");
    node.kill().unwrap();
    node.wait().unwrap();
}

#[test]
fn a_cql_store_that_is_down_is_a_clear_error() {
    let home = Home::new();
    let output = home.run(&["dags", "list", "--store", "cql://127.0.0.1:1/weft_down"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot open the CQL store"), "{stderr}");
    assert!(
        stderr.contains("127.0.0.1:1"),
        "the error names the address: {stderr}"
    );
    let output = home.run(&["dags", "list", "--store", "mysql://x/y"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown scheme"));
}

/// The whole engine on a real CQL server (`WEFT_TEST_CQL=host:port`, set by CI).
#[test]
fn standalone_runs_the_example_dags_on_a_cql_store() {
    let Ok(address) = std::env::var("WEFT_TEST_CQL") else {
        eprintln!("WEFT_TEST_CQL is not set: no CQL server to run against");
        return;
    };
    let home = Home::with_examples();
    let keyspace = format!("weft_cli_{}", std::process::id());
    let url = format!("cql://{address}/{keyspace}");
    let output = home.run(&[
        "standalone",
        "--store",
        &url,
        "--trigger-new-dags",
        "--exit-when-idle",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let runs = home.json(&["runs", "list", "--store", &url]);
    let runs = runs.as_array().unwrap();
    assert!(runs.len() >= 4, "every example DAG ran: {runs:#?}");
    assert!(
        runs.iter().all(|run| run["state"] == "success"),
        "{runs:#?}"
    );
}

/// Sends one HTTP/1.1 request to `address` and returns (status, body).
#[test]
fn standalone_serves_the_api_and_creates_the_first_admin() {
    use std::io::{BufRead, Write};
    let home = Home::new();
    // A user made with `weft users create` before the first start.
    let mut create = home
        .command(&[
            "users",
            "create",
            "--username",
            "ops",
            "--role",
            "op",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(create.stdin.take().unwrap(), "ops password 1").unwrap();
    let output = create.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let refused = home.run(&["users", "create", "--username", "x", "--role", "king"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("admin, op, user or viewer"));

    let mut node = home
        .command(&["standalone", "--bind", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(node.stderr.take().unwrap()).lines();
    let mut address = None;
    let mut printed_password = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("with password `").nth(1) {
            printed_password = rest.split('`').next().map(str::to_string);
        }
        if let Some(url) = line.split("UI and API on http://").nth(1) {
            address = Some(url.trim().to_string());
            break;
        }
    }
    let address = address.expect("standalone says where it serves");
    // A user exists, so no admin is created.
    assert!(
        printed_password.is_none(),
        "an admin is created only when there is no user"
    );
    let (status, body) = http(&address, "GET", "/health", None, None);
    assert_eq!(status, 200, "{body}");
    let login = r#"{"username":"ops","password":"ops password 1"}"#;
    let (status, body) = http(&address, "POST", "/api/v1/auth/login", None, Some(login));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"role\":\"op\""), "{body}");
    let (status, _) = http(&address, "GET", "/api/v1/dags", None, None);
    assert_eq!(status, 401);
    node.kill().unwrap();
    node.wait().unwrap();

    // A fresh home: the first start creates `admin` and keeps its password in a file.
    let fresh = Home::new();
    let mut node = fresh
        .command(&["standalone", "--bind", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(node.stderr.take().unwrap()).lines();
    let mut printed = None;
    let mut address = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("with password `").nth(1) {
            printed = rest.split('`').next().map(str::to_string);
        }
        if let Some(url) = line.split("UI and API on http://").nth(1) {
            address = Some(url.trim().to_string());
            break;
        }
    }
    let printed = printed.expect("the admin password is printed");
    let stored = std::fs::read_to_string(
        fresh
            .dir
            .path()
            .join("home")
            .join("standalone_admin_password.txt"),
    )
    .unwrap();
    assert_eq!(stored.trim(), printed);
    let login = format!(r#"{{"username":"admin","password":"{printed}"}}"#);
    let (status, body) = http(
        &address.unwrap(),
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&login),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"role\":\"admin\""));
    node.kill().unwrap();
    node.wait().unwrap();
}

fn succeed(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Whether any file of the store (the database and its journal) holds `text` in clear.
fn store_files_contain(dir: &Path, text: &str) -> bool {
    ["weft.db", "weft.db-wal", "weft.db-shm"]
        .iter()
        .any(|name| {
            std::fs::read(dir.join(name)).is_ok_and(|bytes| {
                bytes
                    .windows(text.len())
                    .any(|window| window == text.as_bytes())
            })
        })
}

/// Variables and connections reach the store only sealed; a key rotation while the node runs
/// leaves every value readable under a new key and the old one gone from the key file; the
/// changes go through the node and are audited without their values.
#[test]
fn secrets_are_sealed_at_rest_and_the_key_rotates_while_the_node_runs() {
    let home = Home::new();
    let dir = home.dir.path().join("home");
    let socket = dir.join("weft.sock");
    let mut node = home
        .command(&["standalone"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "the node never opened its socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let original_key = std::fs::read_to_string(dir.join("secret.key")).unwrap();
    succeed(
        home.run(&["variables", "set", "db_password", "S3cr3t-Value-123"]),
        "variables set",
    );
    succeed(
        home.run(&[
            "connections",
            "set",
            "warehouse",
            "--conn-uri",
            "postgres://etl:Pw-4567-xyz@db.internal:5432/dw",
        ]),
        "connections set",
    );
    let import = home.dir.path().join("variables.json");
    std::fs::write(&import, r#"{"bucket": "s3://b", "limits": {"rows": 10}}"#).unwrap();
    succeed(
        home.run(&["variables", "import", import.to_str().unwrap()]),
        "variables import",
    );
    let rotated = succeed(home.run(&["rotate-key", "--json"]), "rotate-key");
    let report: Value = serde_json::from_str(&rotated).unwrap();
    assert_eq!(report["resealed"], 4, "{report}");
    let new_key = std::fs::read_to_string(dir.join("secret.key")).unwrap();
    assert_ne!(new_key, original_key);
    let key_lines = |text: &str| text.lines().filter(|line| !line.starts_with('#')).count();
    assert_eq!(key_lines(&new_key), 1, "the retired key is gone: {new_key}");
    // The running node and a fresh reader both open everything under the new key.
    let value = succeed(home.run(&["variables", "get", "db_password"]), "get");
    assert_eq!(value.trim(), "S3cr3t-Value-123");
    let uri = succeed(
        home.run(&["connections", "get", "warehouse", "--uri"]),
        "connections get",
    );
    assert!(uri.contains("Pw-4567-xyz"), "{uri}");
    let limits = succeed(home.run(&["variables", "get", "limits", "-j"]), "get -j");
    assert!(limits.contains("\"rows\": 10"), "{limits}");
    succeed(home.run(&["variables", "delete", "bucket"]), "delete");
    let missing = home.run(&["variables", "get", "bucket"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("there is no variable `bucket`"));
    node.kill().unwrap();
    node.wait().unwrap();

    for secret in ["S3cr3t-Value-123", "Pw-4567-xyz", "db.internal"] {
        assert!(
            !store_files_contain(&dir, secret),
            "`{secret}` is in the store in clear"
        );
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let audit = runtime.block_on(async {
        use weft_storage::Store;
        let store =
            weft_storage::sqlite::SqliteStore::open(dir.join("weft.db"), Default::default())
                .unwrap();
        store.audit(50).await.unwrap()
    });
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .filter(|entry| entry.actor == "cli:uid=0")
        .map(|entry| (entry.action.as_str(), entry.target.as_str()))
        .collect();
    for expected in [
        ("variable.set", "db_password"),
        ("connection.set", "warehouse"),
        ("variable.set", "limits"),
        ("secrets.rotate_key", ""),
        ("variable.delete", "bucket"),
    ] {
        assert!(actions.contains(&expected), "{expected:?} in {actions:?}");
    }
    assert!(
        audit
            .iter()
            .any(|entry| entry.action == "secrets.rotate_key"
                && entry.detail.contains("control socket")),
        "the rotation was made by the running node: {audit:?}"
    );
    assert!(
        !audit.iter().any(|entry| entry.detail.contains("S3cr3t")),
        "no audit entry holds a value"
    );
}

/// A key given in `WEFT_SECRET_KEY` opens the store but never reaches a task; a bad key text
/// and a key file others can read are refused with what to do.
#[test]
fn the_secret_key_stays_out_of_tasks_and_bad_keys_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    let probe = home.shared().join("probe.txt");
    home.write(
        "probe.py",
        &format!(
            "from weft import DAG, BashOperator\nwith DAG(dag_id='probe', schedule=None) as dag:\n    BashOperator(task_id='env', bash_command='echo \"key=${{WEFT_SECRET_KEY:-absent}} token={{{{ var.value.token }}}}\" > {}')\n",
            probe.display()
        ),
    );
    let key = "q83vEjYS2jVOZp6hxEEnDTfZQvIf2Y8J2ha2QpnjfZ0=";
    let run = |args: &[&str], key_text: &str| {
        home.command(args)
            .env("WEFT_SECRET_KEY", key_text)
            .output()
            .unwrap()
    };
    succeed(run(&["variables", "set", "token", "t-1"], key), "set");
    let result = run(&["dags", "test", "probe", "--json"], key);
    let text = succeed(result, "dags test");
    assert!(text.contains("\"success\""), "{text}");
    // The task sees no key, and `dags test` reads the stored variable through the vault.
    assert_eq!(
        std::fs::read_to_string(&probe).unwrap().trim(),
        "key=absent token=t-1"
    );
    // The same key opens the value; another key does not, and says which key sealed it.
    let value = succeed(run(&["variables", "get", "token"], key), "get");
    assert_eq!(value.trim(), "t-1");
    let other = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let refused = run(&["variables", "get", "token"], other);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("not in the keyring"), "{stderr}");
    let bad = run(&["variables", "list"], "not-a-key");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("WEFT_SECRET_KEY"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // Without the variable the key file is used; one that others can read is refused.
    succeed(
        home.run(&["variables", "set", "other", "o"]),
        "a key file is created",
    );
    let key_file = home.dir.path().join("home").join("secret.key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = home.run(&["variables", "get", "other"]);
    assert!(!open.status.success());
    assert!(
        String::from_utf8_lossy(&open.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&open.stderr)
    );
}

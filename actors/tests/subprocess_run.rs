//! Shell tasks run as real `bash -c` processes: logs, outcomes, environment, working directory,
//! log limit, timeout and cancellation killing the whole process tree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weft_actors::executor::subprocess::{run_shell, ShellCommand};
use weft_actors::executor::{AttemptLimits, AttemptReport, LogTarget, LOG_BYTES_MAX_DEFAULT};
use weft_core::dag_run::AttemptOutcome;
use weft_core::ids::TaskInstanceKey;

/// Generous bound for anything that should be quick, so a loaded CI machine does not flake.
const PATIENCE: Duration = Duration::from_secs(10);

fn log_target(dir: &Path) -> LogTarget {
    LogTarget {
        key: TaskInstanceKey::new("dag", "run", "task", -1),
        try_number: 1,
        // A nested path: the executor creates parent directories.
        path: dir.join("logs/dag/run/task/1.log"),
    }
}

fn limits() -> AttemptLimits {
    AttemptLimits {
        timeout_ms: None,
        log_bytes_max: LOG_BYTES_MAX_DEFAULT,
        sandbox: None,
    }
}

async fn run(command: ShellCommand) -> (AttemptReport, String) {
    run_with(command, limits(), &[]).await
}

async fn run_with(
    command: ShellCommand,
    limits: AttemptLimits,
    extra_env: &[(&str, &str)],
) -> (AttemptReport, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = log_target(dir.path());
    let report = run_shell(&command, &log, &limits, extra_env).await;
    let text = std::fs::read_to_string(&log.path).unwrap_or_default();
    (report, text)
}

fn is_success(outcome: &AttemptOutcome) -> bool {
    matches!(outcome, AttemptOutcome::Success { .. })
}

/// Live `sleep <marker>` processes (the marker also appears in the shell's own command line).
fn sleeps_with(marker: &str) -> Vec<u32> {
    let own = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != own)
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline) == format!("sleep\0{marker}\0")
        })
        .collect()
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn stdout_and_stderr_land_in_the_log() {
    let (report, log) = run(ShellCommand::new("echo to-stdout; echo to-stderr >&2")).await;
    assert!(is_success(&report.outcome), "{report:?}");
    assert!(log.contains("to-stdout\n"), "{log}");
    assert!(log.contains("to-stderr\n"), "{log}");
    assert_eq!(report.log_bytes, log.len() as u64);
    assert!(!report.log_truncated);
    assert_eq!(report.exit_code, Some(0));
}

#[tokio::test]
async fn exit_codes_decide_the_outcome() {
    let (report, _) = run(ShellCommand::new("exit 1")).await;
    assert_eq!(
        report.outcome,
        AttemptOutcome::Failed {
            reason: "bash command exited with code 1".into(),
            retryable: true
        }
    );
    assert_eq!(report.exit_code, Some(1));

    let (report, _) = run(ShellCommand::new("exit 99")).await;
    assert_eq!(report.outcome, AttemptOutcome::Skipped);

    let mut no_skip = ShellCommand::new("exit 99");
    no_skip.skip_exit_code = None;
    let (report, _) = run(no_skip).await;
    assert!(
        matches!(report.outcome, AttemptOutcome::Failed { .. }),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_signal_is_named_in_the_reason() {
    let (report, _) = run(ShellCommand::new("kill -SEGV $$")).await;
    match report.outcome {
        AttemptOutcome::Failed { reason, .. } => assert!(reason.contains("SIGSEGV"), "{reason}"),
        other => panic!("unexpected outcome {other:?}"),
    }
    assert_eq!(report.exit_code, None);
}

/// As Airflow's BashOperator (stderr goes to stdout): the last line written to either is the
/// result, and the log holds both in the order they were written.
#[tokio::test]
async fn the_last_output_line_is_the_result() {
    let (report, log) = run(ShellCommand::new(
        "echo first; echo second >&2; echo third; echo last-line >&2",
    ))
    .await;
    assert_eq!(report.result, Some(serde_json::json!("last-line")));
    assert_eq!(log, "first\nsecond\nthird\nlast-line\n");

    let (report, _) = run(ShellCommand::new("true")).await;
    assert_eq!(report.result, Some(serde_json::json!("")));
}

#[tokio::test]
async fn env_replaces_the_worker_environment_unless_appended() {
    // cargo sets this for the test process, so the worker environment has it.
    let inherited = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = "echo \"A=${A-unset} M=${CARGO_MANIFEST_DIR-unset} C=${WEFT_CTX_DAG_ID-unset}\"";
    let extra: &[(&str, &str)] = &[("WEFT_CTX_DAG_ID", "my_dag")];

    let inherit = ShellCommand::new(script);
    let (report, _) = run_with(inherit, limits(), extra).await;
    let expected = format!("A=unset M={inherited} C=my_dag");
    assert_eq!(report.result, Some(serde_json::json!(expected)));

    let mut only = ShellCommand::new(script);
    only.env = BTreeMap::from([("A".to_string(), "1".to_string())]);
    let (report, _) = run_with(only.clone(), limits(), extra).await;
    assert_eq!(
        report.result,
        Some(serde_json::json!("A=1 M=unset C=my_dag"))
    );

    let mut appended = only;
    appended.append_env = true;
    let (report, _) = run_with(appended, limits(), extra).await;
    let expected = format!("A=1 M={inherited} C=my_dag");
    assert_eq!(report.result, Some(serde_json::json!(expected)));
}

#[tokio::test]
async fn cwd_is_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = ShellCommand::new("pwd; echo content > written.txt");
    command.cwd = Some(dir.path().to_path_buf());
    let (report, _) = run(command).await;
    let expected = dir.path().canonicalize().unwrap().display().to_string();
    assert_eq!(report.result, Some(serde_json::json!(expected)));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("written.txt")).unwrap(),
        "content\n"
    );
}

#[tokio::test]
async fn a_missing_cwd_fails_with_a_clear_reason() {
    let mut command = ShellCommand::new("true");
    command.cwd = Some(PathBuf::from("/nonexistent/weft-test-dir"));
    let (report, log) = run(command).await;
    let reason = "working directory /nonexistent/weft-test-dir does not exist";
    assert_eq!(
        report.outcome,
        AttemptOutcome::Failed {
            reason: reason.into(),
            retryable: true
        }
    );
    assert!(log.contains(reason), "{log}");
}

#[tokio::test]
async fn the_log_limit_truncates_and_the_child_still_finishes() {
    let log_bytes_max = 1024 * 1024;
    let limits = AttemptLimits {
        log_bytes_max,
        ..limits()
    };
    let command = ShellCommand::new("yes | head -c 10000000; echo done-after-output >&2");
    let started = Instant::now();
    let (report, log) = run_with(command, limits, &[]).await;
    assert!(
        started.elapsed() < PATIENCE * 3,
        "a full pipe must not block the child"
    );
    assert!(is_success(&report.outcome), "{report:?}");
    assert!(report.log_truncated);
    let note = log.lines().last().unwrap();
    assert!(
        note.starts_with(&format!("[weft] log truncated at {log_bytes_max} bytes")),
        "{note}"
    );
    assert_eq!(report.log_bytes, log.len() as u64);
    assert!(
        report.log_bytes < log_bytes_max + 200,
        "{}",
        report.log_bytes
    );
    assert!(
        !log.contains("done-after-output"),
        "output past the limit is dropped"
    );
}

#[tokio::test]
async fn a_timeout_kills_the_whole_tree_including_setsid_escapees() {
    let marker = "300.1717";
    let command = ShellCommand::new(format!(
        "sleep {marker} & sleep {marker} & setsid sleep {marker} & echo started; wait"
    ));
    let limits = AttemptLimits {
        timeout_ms: Some(1_000),
        ..limits()
    };
    let started = Instant::now();
    let attempt = tokio::spawn(run_with(command, limits, &[]));
    wait_until("the tree has started", || sleeps_with(marker).len() == 3).await;

    let (report, log) = tokio::time::timeout(PATIENCE, attempt)
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < PATIENCE);
    assert_eq!(report.outcome, AttemptOutcome::TimedOut);
    assert!(log.contains("started"), "{log}");
    assert!(log.contains("[weft] timed out after 1000 ms"), "{log}");
    assert_eq!(sleeps_with(marker), Vec::<u32>::new());
}

#[tokio::test]
async fn dropping_the_attempt_kills_the_tree() {
    let marker = "300.2727";
    let command = ShellCommand::new(format!(
        "sleep {marker} & setsid sleep {marker} & sleep {marker}"
    ));
    let attempt = tokio::spawn(run_with(command, limits(), &[]));
    wait_until("the tree has started", || sleeps_with(marker).len() == 3).await;

    attempt.abort();
    assert!(attempt.await.unwrap_err().is_cancelled());
    wait_until("the tree is gone", || sleeps_with(marker).is_empty()).await;
}

#[tokio::test]
async fn background_stragglers_are_reaped_when_the_task_ends() {
    let marker = "300.3737";
    // The straggler closes its output, so the task ends while it still runs.
    let command = ShellCommand::new(format!("sleep {marker} >/dev/null 2>&1 & echo done"));
    let (report, _) = run(command).await;
    assert!(is_success(&report.outcome), "{report:?}");
    wait_until("the straggler is gone", || sleeps_with(marker).is_empty()).await;
}

#[tokio::test]
async fn a_silent_attempt_leaves_no_log_file_and_a_talkative_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_target(dir.path());
    let silent = run_shell(&ShellCommand::new("true"), &log, &limits(), &[]).await;
    assert!(is_success(&silent.outcome), "{:?}", silent.outcome);
    assert_eq!((silent.log_bytes, silent.log_truncated), (0, false));
    assert!(!log.path.exists(), "no output, no file");
    assert!(!log.path.parent().unwrap().exists(), "nor its directory");

    let talkative = run_shell(&ShellCommand::new("echo spoken"), &log, &limits(), &[]).await;
    assert!(is_success(&talkative.outcome), "{:?}", talkative.outcome);
    assert_eq!(std::fs::read_to_string(&log.path).unwrap(), "spoken\n");
    assert_eq!(talkative.log_bytes, 7);
}

#[tokio::test]
async fn output_that_cannot_be_logged_is_reported_as_truncated_and_the_task_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    // The log's directory cannot be created: a file stands where it would go.
    std::fs::write(dir.path().join("logs"), b"not a directory").unwrap();
    let log = log_target(dir.path());
    let report = run_shell(&ShellCommand::new("echo lost"), &log, &limits(), &[]).await;
    assert!(is_success(&report.outcome), "{:?}", report.outcome);
    assert_eq!(report.result, Some(serde_json::json!("lost")));
    assert_eq!((report.log_bytes, report.log_truncated), (0, true));
}

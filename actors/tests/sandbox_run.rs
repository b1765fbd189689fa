//! Sandboxed shell tasks: bubblewrap namespaces (read-only root, private pids and network),
//! cgroup limits (memory, pids, cpu) and the rlimit fallback. Needs bwrap:
//! `bash deploy/install-sandbox-deps.sh`.

use std::path::Path;
use std::time::{Duration, Instant};

use weft_actors::executor::sandbox::{
    self, CgroupSupport, ResourceControl, SandboxSpec, SandboxSupport, SandboxedCommand,
};
use weft_actors::executor::subprocess::{run_shell, ShellCommand};
use weft_actors::executor::{AttemptLimits, AttemptReport, LogTarget, LOG_BYTES_MAX_DEFAULT};
use weft_core::dag_run::AttemptOutcome;
use weft_core::ids::TaskInstanceKey;

const PATIENCE: Duration = Duration::from_secs(10);
const MEMORY_BYTES_MAX: u64 = 100 * 1024 * 1024;

fn namespaces() -> SandboxSpec {
    SandboxSpec {
        namespaces: true,
        ..SandboxSpec::default()
    }
}

async fn run_sandboxed(command: ShellCommand, sandbox: SandboxSpec) -> (AttemptReport, String) {
    let limits = AttemptLimits {
        timeout_ms: Some(60_000),
        log_bytes_max: LOG_BYTES_MAX_DEFAULT,
        sandbox: Some(sandbox),
    };
    run_with_limits(command, limits).await
}

async fn run_with_limits(command: ShellCommand, limits: AttemptLimits) -> (AttemptReport, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = LogTarget {
        key: TaskInstanceKey::new("dag", "run", "task", -1),
        try_number: 1,
        path: dir.path().join("task.log"),
    };
    let report = run_shell(&command, &log, &limits, &[]).await;
    let text = std::fs::read_to_string(&log.path).unwrap_or_default();
    (report, text)
}

fn failure_reason(report: &AttemptReport) -> &str {
    match &report.outcome {
        AttemptOutcome::Failed { reason, .. } => reason,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn is_success(outcome: &AttemptOutcome) -> bool {
    matches!(outcome, AttemptOutcome::Success { .. })
}

fn first_line(log: &str) -> &str {
    log.lines().next().unwrap_or_default()
}

/// Live `sleep <marker>` processes (the marker also appears in the shell's own command line).
fn sleeps_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline) == format!("sleep\0{marker}\0")
        })
        .count()
}

fn support() -> SandboxSupport {
    let support = sandbox::detect();
    assert!(
        support.bwrap.is_some(),
        "run deploy/install-sandbox-deps.sh first"
    );
    support
}

#[tokio::test]
async fn the_root_is_read_only_and_scratch_is_writable() {
    support();
    let command = ShellCommand::new(
        "touch /usr/weft-sandbox-test 2>&1 || echo root-refused; \
         echo scratch > /tmp/scratch && cat /tmp/scratch",
    );
    let (report, log) = run_sandboxed(command, namespaces()).await;
    assert!(is_success(&report.outcome), "{report:?} {log}");
    assert!(log.contains("Read-only file system"), "{log}");
    assert!(log.contains("root-refused"), "{log}");
    assert_eq!(report.result, Some(serde_json::json!("scratch")));
    assert!(!Path::new("/usr/weft-sandbox-test").exists());
    assert!(
        first_line(&log).starts_with("[weft] sandbox: bwrap"),
        "{log}"
    );
}

#[tokio::test]
async fn the_working_directory_is_writable() {
    support();
    let dir = tempfile::tempdir().unwrap();
    let mut command = ShellCommand::new("echo kept > out.txt && pwd");
    command.cwd = Some(dir.path().to_path_buf());
    let (report, log) = run_sandboxed(command, namespaces()).await;
    assert!(is_success(&report.outcome), "{report:?} {log}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "kept\n"
    );
}

#[tokio::test]
async fn host_pids_and_network_are_invisible() {
    support();
    let command = ShellCommand::new(
        "echo processes=$(ls /proc | grep -c '^[0-9]'); \
         echo interfaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,); \
         echo $$",
    );
    let (report, log) = run_sandboxed(command, namespaces()).await;
    assert!(is_success(&report.outcome), "{report:?} {log}");
    let pid: u32 = report
        .result
        .as_ref()
        .and_then(|r| r.as_str()?.parse().ok())
        .unwrap();
    assert!(pid < 10, "pid {pid} is not from a fresh pid namespace");
    let processes: u32 = log
        .lines()
        .find_map(|l| l.strip_prefix("processes="))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(processes < 10, "{log}");
    assert!(log.contains("interfaces=lo,\n"), "{log}");
}

#[tokio::test]
async fn the_memory_limit_oom_kills() {
    let support = support();
    let sandbox = SandboxSpec {
        memory_bytes_max: Some(MEMORY_BYTES_MAX),
        ..namespaces()
    };
    let command = ShellCommand::new("python3 -c 'x = bytearray(500_000_000); print(len(x))'");
    let (report, log) = run_sandboxed(command, sandbox).await;
    let reason = failure_reason(&report);
    if support.cgroup != CgroupSupport::None {
        assert!(
            reason.contains("memory limit of 104857600 bytes"),
            "{reason}"
        );
        assert!(first_line(&log).contains("memory"), "{log}");
    }
}

#[tokio::test]
async fn the_pids_limit_refuses_forks() {
    let support = support();
    let sandbox = SandboxSpec {
        pids_max: Some(50),
        ..namespaces()
    };
    let command = ShellCommand::new("for i in $(seq 200); do sleep 5 & done; wait");
    let (report, log) = run_sandboxed(command, sandbox).await;
    if support.cgroup != CgroupSupport::None {
        let reason = failure_reason(&report);
        assert!(reason.contains("pids limit of 50"), "{reason}");
        assert!(log.contains("fork"), "{log}");
    } else {
        assert!(
            first_line(&log).contains("pids limit not enforced"),
            "{log}"
        );
    }
}

#[tokio::test]
async fn the_cpu_quota_throttles() {
    let support = support();
    if support.cgroup == CgroupSupport::None {
        return assert!(support.to_string().contains("rlimits"));
    }
    // A fifth of a core: two seconds of spinning get at most ~0.4 s of cpu.
    let sandbox = SandboxSpec {
        cpu_millis_max: Some(200),
        ..namespaces()
    };
    let command = ShellCommand::new(
        "python3 -c '\nimport os, time\nt = time.time()\nwhile time.time() - t < 2: pass\n\
         c = os.times()\nprint(c.user + c.system)'",
    );
    let (report, log) = run_sandboxed(command, sandbox).await;
    assert!(is_success(&report.outcome), "{report:?} {log}");
    let cpu_seconds: f64 = report
        .result
        .as_ref()
        .and_then(|r| r.as_str()?.parse().ok())
        .unwrap();
    assert!(cpu_seconds < 1.2, "cpu {cpu_seconds} s in 2 s of wall time");
    assert!(first_line(&log).contains("cpu"), "{log}");
}

#[tokio::test]
async fn rlimits_are_the_fallback() {
    support();
    let sandbox = SandboxSpec {
        memory_bytes_max: Some(MEMORY_BYTES_MAX),
        file_bytes_max: Some(64 * 1024),
        resource_control: ResourceControl::Rlimits,
        ..namespaces()
    };
    let command = ShellCommand::new("python3 -c 'x = bytearray(500_000_000)'");
    let (report, log) = run_sandboxed(command.clone(), sandbox.clone()).await;
    assert_eq!(
        first_line(&log),
        "[weft] sandbox: bwrap, rlimits (as, fsize)"
    );
    failure_reason(&report);
    assert!(log.contains("MemoryError"), "{log}");

    let command = ShellCommand::new("head -c 1000000 /dev/zero > /tmp/big");
    let (report, _) = run_sandboxed(command, sandbox).await;
    assert!(failure_reason(&report).contains("SIGXFSZ"), "{report:?}");
}

#[tokio::test]
async fn limits_work_without_namespaces() {
    let support = support();
    let sandbox = SandboxSpec {
        memory_bytes_max: Some(MEMORY_BYTES_MAX),
        ..SandboxSpec::default()
    };
    let command = ShellCommand::new("python3 -c 'x = bytearray(500_000_000)'");
    let (report, log) = run_sandboxed(command, sandbox).await;
    failure_reason(&report);
    assert!(!first_line(&log).contains("bwrap"), "{log}");
    if support.cgroup != CgroupSupport::None {
        assert!(
            failure_reason(&report).contains("memory limit"),
            "{report:?}"
        );
    }
}

#[tokio::test]
async fn a_timeout_kills_everything_in_the_sandbox() {
    support();
    let marker = "300.4747";
    let command = ShellCommand::new(format!(
        "sleep {marker} & (setsid sleep {marker} >/dev/null 2>&1 &); echo started; wait"
    ));
    let limits = AttemptLimits {
        timeout_ms: Some(1_000),
        log_bytes_max: LOG_BYTES_MAX_DEFAULT,
        sandbox: Some(SandboxSpec {
            pids_max: Some(100),
            ..namespaces()
        }),
    };
    let started = Instant::now();
    let (report, log) = run_with_limits(command, limits).await;
    assert!(started.elapsed() < PATIENCE);
    assert_eq!(report.outcome, AttemptOutcome::TimedOut, "{log}");
    assert!(log.contains("started"), "{log}");
    let deadline = Instant::now() + PATIENCE;
    while sleeps_with(marker) > 0 {
        assert!(
            Instant::now() < deadline,
            "sandboxed processes survived the timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_missing_bwrap_is_a_clear_error() {
    let support = SandboxSupport {
        bwrap: None,
        cgroup: CgroupSupport::None,
    };
    let command = SandboxedCommand {
        argv: vec!["bash".into()],
        cwd: None,
        timeout_ms: None,
    };
    let error = sandbox::prepare(&namespaces(), &support, command).unwrap_err();
    assert_eq!(
        error.to_string(),
        "sandbox requested but bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
    );
}

#[test]
fn detect_describes_this_machine() {
    let support = sandbox::detect();
    let description = support.to_string();
    assert!(description.starts_with("namespaces: "), "{description}");
    assert!(description.contains("; limits: "), "{description}");
}

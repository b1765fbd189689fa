//! The escape suite: from inside a task (shell and Python), try what a hostile task would try,
//! under the default isolation (a user of its own) and under the full sandbox, and check that
//! every attempt is refused or contained. Runs as root, as a node does (and as CI does):
//! `bash deploy/install-sandbox-deps.sh` installs bubblewrap and a Python the task user can run.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use weft_actors::executor::python::{PythonRunnerConfig, PythonRunnerPool};
use weft_actors::executor::sandbox::{self, CgroupSupport, SandboxSpec, TaskIdentity};
use weft_actors::executor::subprocess::{run_shell, ShellCommand};
use weft_actors::executor::{AttemptLimits, AttemptReport, LogTarget, TaskContext};
use weft_core::dag_run::AttemptOutcome;
use weft_core::ids::TaskInstanceKey;

const TASK_USER: TaskIdentity = TaskIdentity {
    uid: 61_000,
    gid: 61_000,
};
/// What a task prints when an escape worked; the suite fails if any log has it.
const ESCAPED: &str = "ESCAPED";
const SECRET: &str = "the-admin-password-f00d";

/// A node's home with a secret in it, made private as the node makes it.
struct Node {
    _dir: tempfile::TempDir,
    home: PathBuf,
    secret: PathBuf,
    task_dirs: PathBuf,
    /// A directory everyone can read but only root can write, with a root-owned file.
    root_owned: PathBuf,
}

fn node() -> Node {
    assert!(
        sandbox::is_root(),
        "the escape suite runs as root, as a node that isolates tasks does"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = home.join("standalone_admin_password.txt");
    std::fs::write(&secret, SECRET).unwrap();
    let root_owned = dir.path().join("shared");
    std::fs::create_dir(&root_owned).unwrap();
    std::fs::set_permissions(&root_owned, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(root_owned.join("config"), "root's").unwrap();
    std::fs::set_permissions(
        root_owned.join("config"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    Node {
        task_dirs: dir.path().join("tasks"),
        _dir: dir,
        home,
        secret,
        root_owned,
    }
}

fn user_isolation(node: &Node) -> SandboxSpec {
    SandboxSpec {
        run_as: Some(TASK_USER),
        task_dirs: Some(node.task_dirs.clone()),
        ..SandboxSpec::default()
    }
}

fn full_sandbox(node: &Node) -> SandboxSpec {
    SandboxSpec {
        namespaces: true,
        hidden_paths: vec![node.home.clone()],
        memory_bytes_max: Some(64 * 1024 * 1024),
        pids_max: Some(64),
        ..user_isolation(node)
    }
}

/// One escape attempt: a shell command that prints `ESCAPED` if it got through.
struct Attempt {
    name: &'static str,
    command: String,
}

/// Runs every attempt under `spec`, returning (name, report, log) for each.
async fn run_all(spec: &SandboxSpec, attempts: &[Attempt]) -> Vec<(String, AttemptReport, String)> {
    let logs = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for attempt in attempts {
        let log = LogTarget {
            key: TaskInstanceKey::new("escape", "run", attempt.name, -1),
            try_number: 1,
            path: logs.path().join(format!("{}.log", attempt.name)),
        };
        let limits = AttemptLimits {
            timeout_ms: Some(30_000),
            log_bytes_max: 1 << 20,
            sandbox: Some(spec.clone()),
        };
        let report = run_shell(
            &ShellCommand::new(attempt.command.clone()),
            &log,
            &limits,
            &[],
        )
        .await;
        let text = std::fs::read_to_string(&log.path).unwrap_or_default();
        results.push((attempt.name.to_string(), report, text));
    }
    results
}

/// Checks that no attempt escaped and prints the tally.
fn assert_contained(level: &str, results: &[(String, AttemptReport, String)]) {
    let mut escaped = Vec::new();
    for (name, report, log) in results {
        if log.contains(ESCAPED) || log.contains(SECRET) {
            escaped.push(format!("{name}: {:?}\n{log}", report.outcome));
        }
    }
    println!(
        "escape suite ({level}): {} attempts, {} refused or contained",
        results.len(),
        results.len() - escaped.len()
    );
    assert!(
        escaped.is_empty(),
        "{} of {} escapes worked under {level}:\n{}",
        escaped.len(),
        results.len(),
        escaped.join("\n---\n")
    );
}

fn shell_attempts(node: &Node) -> Vec<Attempt> {
    let secret = node.secret.display();
    let home = node.home.display();
    let shared = node.root_owned.display();
    let node_pid = std::process::id();
    vec![
        Attempt {
            name: "read_home_secret",
            command: format!("cat {secret} && echo {ESCAPED}"),
        },
        Attempt {
            name: "list_home",
            command: format!("ls {home} | grep -q . && echo {ESCAPED}"),
        },
        Attempt {
            name: "signal_node",
            command: format!("kill -0 {node_pid} && echo {ESCAPED}"),
        },
        Attempt {
            name: "write_root_owned_file",
            command: format!("echo changed > {shared}/config && echo {ESCAPED}"),
        },
        Attempt {
            name: "plant_file_in_root_owned_dir",
            command: format!("touch {shared}/planted.py && echo {ESCAPED}"),
        },
        Attempt {
            name: "become_root_again",
            command: format!("[ \"$(id -u)\" = 0 ] && echo {ESCAPED}"),
        },
        Attempt {
            name: "keep_capabilities",
            command: format!(
                "grep -q '^CapEff:[[:space:]]*0*$' /proc/self/status || echo {ESCAPED}"
            ),
        },
    ]
}

#[tokio::test]
async fn default_isolation_contains_a_hostile_shell_task() {
    let node = node();
    let spec = user_isolation(&node);
    let mut attempts = shell_attempts(&node);
    attempts.push(Attempt {
        name: "who_and_where",
        command: "echo \"$(id -u):$(id -g):$(id -G) $PWD $HOME\"".to_string(),
    });
    let results = run_all(&spec, &attempts).await;
    let (_, report, _) = &results[0];
    assert!(
        matches!(report.outcome, AttemptOutcome::Failed { .. }),
        "{report:?}"
    );
    // The attempts ran as the task user without root's groups, in a directory of their own.
    let (_, _, who) = results.last().unwrap();
    let own_dir = node.task_dirs.display().to_string();
    assert!(
        who.starts_with("61000:61000:61000 ") && who.contains(&format!("{own_dir}/attempt-")),
        "{who}"
    );
    assert_contained("default isolation", &results);
    assert_eq!(
        std::fs::read_to_string(node.root_owned.join("config")).unwrap(),
        "root's"
    );
    assert!(!node.root_owned.join("planted.py").exists());
}

#[tokio::test]
async fn full_sandbox_contains_a_hostile_shell_task() {
    let node = node();
    assert!(
        sandbox::support().bwrap.is_some(),
        "run deploy/install-sandbox-deps.sh first"
    );
    let spec = full_sandbox(&node);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut attempts = shell_attempts(&node);
    attempts.extend([
        Attempt {
            name: "remount_root_writable",
            command: format!("mount -o remount,rw / && echo {ESCAPED}"),
        },
        Attempt {
            name: "write_outside_own_directory",
            command: format!("touch /var/tmp/weft-escape-$$ && echo {ESCAPED}"),
        },
        Attempt {
            name: "reach_the_network",
            command: format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo {ESCAPED}"),
        },
        Attempt {
            name: "unshare_a_namespace",
            command: format!("unshare -m true && echo {ESCAPED}"),
        },
        Attempt {
            name: "see_node_processes",
            command: format!("[ -e /proc/{} ] && echo {ESCAPED}", std::process::id()),
        },
    ]);
    if !matches!(sandbox::support().cgroup, CgroupSupport::None) {
        attempts.extend([
            Attempt {
                name: "leave_the_cgroup",
                command: format!(
                    "for f in $(find /sys/fs/cgroup -name cgroup.procs 2>/dev/null); do \
                     echo $$ > $f 2>/dev/null && echo {ESCAPED} $f && break; done; true"
                ),
            },
            Attempt {
                name: "exceed_memory",
                command: format!(
                    "python3 -c 'b = bytearray(300 * 1024 * 1024); print(len(b))' && echo {ESCAPED}"
                ),
            },
            Attempt {
                name: "exceed_pids",
                command: format!(
                    "for i in $(seq 200); do sleep 5 & done 2>/dev/null; \
                     [ $(jobs -p | wc -l) -ge 200 ] && echo {ESCAPED}; kill $(jobs -p) 2>/dev/null; true"
                ),
            },
        ]);
    }
    let results = run_all(&spec, &attempts).await;
    assert!(
        results[0].2.contains("bwrap"),
        "first line names the sandbox: {}",
        results[0].2
    );
    assert_contained("full sandbox", &results);
    drop(listener);
}

/// A daemon a task leaves behind (its own session, output closed) does not outlive the
/// attempt.
#[tokio::test]
async fn a_daemon_does_not_outlive_its_attempt() {
    let node = node();
    let marker = format!("{}", 900_000 + std::process::id() % 90_000);
    for (level, spec) in [
        ("default isolation", user_isolation(&node)),
        ("full sandbox", full_sandbox(&node)),
    ] {
        let command = format!("setsid sleep {marker} </dev/null >/dev/null 2>&1 & echo started");
        let results = run_all(
            &spec,
            &[Attempt {
                name: "daemon",
                command,
            }],
        )
        .await;
        assert!(
            matches!(results[0].1.outcome, AttemptOutcome::Success { .. }),
            "{level}: {:?} {}",
            results[0].1.outcome,
            results[0].2
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sleeps_with(&marker) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{level}: the daemon outlived its attempt"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

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

/// A Python the task user can run: Debian's, with the SDK's dependencies from Debian's
/// packages (`deploy/install-sandbox-deps.sh`). A Python under root's home cannot be.
fn task_python() -> String {
    let python = "/usr/bin/python3";
    assert!(
        Path::new(python).exists(),
        "run deploy/install-sandbox-deps.sh first"
    );
    python.to_string()
}

const PYTHON_DAG: &str = r#"
import os, signal
from datetime import datetime
from weft import DAG, task

SECRET = "@SECRET@"
SHARED = "@SHARED@"
NODE = @NODE@

def attempt(name, action):
    try:
        action()
        print(f"ESCAPED {name}")
    except Exception as error:
        print(f"refused {name}: {type(error).__name__}")

with DAG(dag_id="escape", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
    @task
    def hostile():
        attempt("read_home_secret", lambda: print(open(SECRET).read()))
        attempt("signal_node", lambda: os.kill(NODE, 0))
        attempt("write_root_owned_file", lambda: open(os.path.join(SHARED, "config"), "w").write("changed"))
        attempt("become_root", lambda: os.setuid(0))
        return os.getuid()

    hostile()
"#;

#[tokio::test]
async fn python_tasks_run_confined_as_the_task_user() {
    let node = node();
    let dags = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dags.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dag_file = dags.path().join("escape.py");
    let dag = PYTHON_DAG
        .replace("@SECRET@", &node.secret.display().to_string())
        .replace("@SHARED@", &node.root_owned.display().to_string())
        .replace("@NODE@", &std::process::id().to_string());
    std::fs::write(&dag_file, dag).unwrap();
    std::fs::set_permissions(&dag_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let python = task_python();
    let logs = tempfile::tempdir().unwrap();
    for (level, spec) in [
        ("default isolation", user_isolation(&node)),
        (
            "full sandbox",
            SandboxSpec {
                // As a node gives them: the DAG folder and the SDK, which may be under /tmp.
                readable_paths: vec![
                    dags.path().to_path_buf(),
                    PythonRunnerConfig::from_env().python_path,
                ],
                ..full_sandbox(&node)
            },
        ),
    ] {
        let pool = PythonRunnerPool::new(PythonRunnerConfig {
            python: python.clone(),
            processes: 1,
            sandbox: Some(spec.clone()),
            ..PythonRunnerConfig::from_env()
        });
        let context = TaskContext {
            dag_id: "escape".into(),
            task_id: "hostile".into(),
            run_id: "manual".into(),
            map_index: -1,
            try_number: 1,
            max_tries: 1,
            run_type: "manual".into(),
            logical_date: "2024-01-01T00:00:00Z".into(),
            data_interval_start: "2024-01-01T00:00:00Z".into(),
            data_interval_end: "2024-01-01T00:00:00Z".into(),
            params: serde_json::Map::new(),
            conf: json!({}),
            xcoms: BTreeMap::new(),
            fileloc: Some(dag_file.display().to_string()),
            timezone: "UTC".into(),
        };
        let log = LogTarget {
            key: TaskInstanceKey::new("escape", "manual", "hostile", -1),
            try_number: 1,
            path: logs.path().join(format!("{}.log", level.replace(' ', "_"))),
        };
        let limits = AttemptLimits {
            timeout_ms: Some(30_000),
            log_bytes_max: 1 << 20,
            sandbox: Some(spec.clone()),
        };
        let report = pool.run_callable(&context, &log, &limits).await;
        let text = std::fs::read_to_string(&log.path).unwrap_or_default();
        pool.shutdown().await;
        assert!(
            matches!(report.outcome, AttemptOutcome::Success { .. }),
            "{level}: {:?}\n{text}",
            report.outcome
        );
        assert_eq!(report.result, Some(json!(TASK_USER.uid)), "{level}: {text}");
        let refused = text.lines().filter(|l| l.starts_with("refused")).count();
        println!("escape suite (python, {level}): 4 attempts, {refused} refused");
        assert_eq!(refused, 4, "{level}: {text}");
        assert!(
            !text.contains(ESCAPED) && !text.contains(SECRET),
            "{level}: {text}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(node.root_owned.join("config")).unwrap(),
        "root's"
    );
}

/// A task can ask for the full sandbox (`executor_config={"isolation": "full"}` in a DAG file,
/// the task's `isolation` extra) on a node whose default is a user of its own; its siblings keep
/// the default.
#[tokio::test]
async fn a_task_can_ask_for_the_full_sandbox() {
    use weft_core::spec::{DagSpec, TaskKind, TaskSpec};
    let node = node();
    let shell = |task_id: &str, command: &str| {
        let mut task = TaskSpec::new(
            task_id,
            TaskKind::Shell {
                command: command.to_string(),
                env: Default::default(),
                append_env: false,
                cwd: None,
                skip_exit_code: Some(99),
                templated: false,
            },
        );
        task.operator = "BashOperator".to_string();
        task
    };
    // Pid 1 is bubblewrap inside the sandbox's pid namespace, the machine's init outside.
    let mut sandboxed = shell("sandboxed", "test \"$(cat /proc/1/comm)\" = bwrap");
    sandboxed.extra.insert("isolation".into(), json!("full"));
    let plain = shell("plain", "test \"$(cat /proc/1/comm)\" != bwrap");
    let spec = DagSpec::new("per_task_isolation", vec![sandboxed, plain]);
    let data = tempfile::tempdir().unwrap();
    let mut config = weft_actors::EngineConfig::new(data.path());
    config.sandbox = Some(user_isolation(&node));
    config.sandbox_full = Some(full_sandbox(&node));
    let store = std::sync::Arc::new(weft_storage::memory::MemoryStore::new());
    let engine = weft_actors::Engine::start(store.clone(), config)
        .await
        .unwrap();
    engine.upsert_dag(spec).await.unwrap();
    let run = engine
        .trigger("per_task_isolation", json!({}))
        .await
        .unwrap();
    let state = tokio::time::timeout(Duration::from_secs(60), engine.wait_for_run(&run))
        .await
        .expect("the run ends")
        .unwrap();
    use weft_storage::Store;
    let instances = store.task_instances(&run).await.unwrap();
    assert_eq!(
        state,
        weft_core::state::DagRunState::Success,
        "{instances:#?}"
    );
    engine.shutdown().await;
}

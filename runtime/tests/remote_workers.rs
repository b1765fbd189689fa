//! Remote workers end to end: a `weft standalone` node and `weft worker` processes on
//! 127.0.0.1, talking QUIC with mutual TLS under certificates made by `weft certs`. Workers are
//! killed with SIGKILL, paused with SIGSTOP, and refused for a foreign CA, a missing
//! certificate and another protocol version; corrupt and oversized frames close only their
//! own link.
//!
//! The node's own slots serve only a queue no task uses, so every attempt runs on a worker;
//! where an attempt ran is read from its log, which a worker writes under its own home.

mod common;

use common::{http, wait_until, Process, WAIT};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A deployment: a node's home with the CA and certificates, a DAG folder, workers' homes.
struct Deployment {
    dir: tempfile::TempDir,
    node: Option<Process>,
    workers: BTreeMap<String, Process>,
}

impl Deployment {
    /// A CA, the node's certificate (for 127.0.0.1) and one certificate per worker.
    fn new(workers: &[&str]) -> Deployment {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // Tasks run as a user of their own: they write to `shared`.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for folder in ["dags", "shared"] {
            std::fs::create_dir_all(dir.path().join(folder)).unwrap();
        }
        std::fs::set_permissions(
            dir.path().join("shared"),
            std::fs::Permissions::from_mode(0o777),
        )
        .unwrap();
        let deployment = Deployment {
            dir,
            node: None,
            workers: BTreeMap::new(),
        };
        deployment.certs(&["init"]);
        deployment.certs(&["issue", "--node", "node", "--san", "127.0.0.1"]);
        for worker in workers {
            deployment.certs(&["issue", "--worker", worker]);
        }
        deployment
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn node_home(&self) -> PathBuf {
        self.path().join("node")
    }

    fn worker_home(&self, name: &str) -> PathBuf {
        self.path().join(format!("worker-{name}"))
    }

    fn shared(&self) -> PathBuf {
        self.path().join("shared")
    }

    fn command(&self, home: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
        command
            .args(args)
            .env("WEFT_HOME", home)
            .env("WEFT_DAGS_FOLDER", self.path().join("dags"))
            .env("WEFT_TEST_SHARED", self.shared())
            .env("WEFT_LOG", "info")
            .env("NO_COLOR", "1")
            .env("WEFT_WEB__BIND", "127.0.0.1:0")
            .stdin(Stdio::null());
        command
    }

    fn certs(&self, args: &[&str]) {
        let mut all = vec!["certs"];
        all.extend_from_slice(args);
        let output = self.command(&self.node_home(), &all).output().unwrap();
        assert!(
            output.status.success(),
            "weft certs {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn write_dag(&self, name: &str, text: &str) {
        std::fs::write(self.path().join("dags").join(name), text).unwrap();
    }

    /// Starts the node, listening for workers on a port of its own; its own slots serve a
    /// queue no task uses.
    fn start_node(&mut self) {
        let mut command = self.command(&self.node_home(), &["standalone"]);
        command
            .env("WEFT_WORKERS__LISTEN", "127.0.0.1:0")
            .env("WEFT_WORKERS__IDLE_TIMEOUT_MS", "2500")
            .env("WEFT_WORKERS__QUEUES", r#"["node-only"]"#);
        let node = Process::spawn(command);
        node.wait_for_line("remote workers connect to");
        node.wait_for_line("DAGs from");
        self.node = Some(node);
    }

    fn node(&self) -> &Process {
        self.node.as_ref().unwrap()
    }

    fn node_address(&self) -> String {
        let line = self.node().wait_for_line("remote workers connect to");
        let rest = line.split("connect to ").nth(1).unwrap();
        rest.split_whitespace().next().unwrap().to_string()
    }

    /// A worker's command with its certificates copied to its own home (the CA's key stays
    /// with the node).
    fn worker_command(&self, name: &str, extra: &[&str]) -> Command {
        let home = self.worker_home(name);
        let certs = home.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        for file in [
            "ca.pem".to_string(),
            format!("worker-{name}.pem"),
            format!("worker-{name}.key"),
        ] {
            let from = self.node_home().join("certs").join(&file);
            if from.exists() {
                std::fs::copy(from, certs.join(&file)).unwrap();
            }
        }
        let address = self.node_address();
        let mut args = vec!["worker", "--connect", &address, "--name", name];
        args.extend_from_slice(extra);
        let mut command = self.command(&home, &args);
        // Found dead or cut off within seconds.
        command
            .env("WEFT_WORKER__HEARTBEAT_MS", "300")
            .env("WEFT_WORKER__LEASE_MS", "2000")
            .env("WEFT_WORKER__IDLE_TIMEOUT_MS", "2500");
        command
    }

    fn start_worker(&mut self, name: &str, extra: &[&str]) {
        let worker = Process::spawn(self.worker_command(name, extra));
        worker.wait_for_line("joined the node");
        self.workers.insert(name.to_string(), worker);
        self.wait_for_workers(|list| list.iter().any(|worker| worker["name"] == name));
    }

    /// Runs a `weft` command against the node and reads the JSON it prints.
    fn node_json(&self, args: &[&str]) -> Value {
        let output = self.command(&self.node_home(), args).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    fn workers_list(&self) -> Vec<Value> {
        let list = self.node_json(&["workers", "list", "--json"]);
        list.as_array().unwrap().clone()
    }

    fn wait_for_workers(&self, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        wait_until("the node's workers", || {
            let list = self.workers_list();
            check(&list).then_some(list)
        })
    }

    fn trigger(&self, dag_id: &str) -> String {
        let created = self.node_json(&["dags", "trigger", dag_id, "--json"]);
        created["run_id"].as_str().unwrap().to_string()
    }

    fn run_state(&self, dag_id: &str, run_id: &str) -> String {
        let output = self
            .command(&self.node_home(), &["runs", "list", dag_id, "--json"])
            .output()
            .unwrap();
        let runs: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        runs.as_array()
            .into_iter()
            .flatten()
            .find(|run| run["key"]["run_id"] == run_id)
            .map(|run| run["state"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    }

    fn wait_for_run(&self, dag_id: &str, run_id: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let state = self.run_state(dag_id, run_id);
            if state == "success" || state == "failed" {
                return state;
            }
            if Instant::now() >= deadline {
                panic!("run {run_id} did not finish:\n{}", self.said());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the node and the workers wrote on stderr.
    fn said(&self) -> String {
        let mut all = format!("--- node\n{}", self.node().stderr());
        for (name, worker) in &self.workers {
            all.push_str(&format!("--- {name}\n{}", worker.stderr()));
        }
        all
    }

    /// The task ids (with their try) whose logs a worker wrote, for a DAG.
    fn logs_on(&self, worker: &str, dag_id: &str) -> Vec<(String, u32)> {
        logs_under(&self.worker_home(worker), dag_id)
    }

    fn markers(&self) -> String {
        std::fs::read_to_string(self.shared().join("markers")).unwrap_or_default()
    }
}

/// The (task, try) of every log under a home, for a DAG.
fn logs_under(home: &Path, dag_id: &str) -> Vec<(String, u32)> {
    let root = home.join("logs").join(format!("dag_id={dag_id}"));
    let mut found = Vec::new();
    for run in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for task in std::fs::read_dir(run.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = task.file_name().to_string_lossy().to_string();
            let task_id = name.trim_start_matches("task_id=").to_string();
            for log in std::fs::read_dir(task.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let file = log.file_name().to_string_lossy().to_string();
                let try_number = file
                    .trim_start_matches("attempt=")
                    .trim_end_matches(".log")
                    .parse()
                    .unwrap();
                found.push((task_id.clone(), try_number));
            }
        }
    }
    found.sort();
    found
}

/// A shell command that notes its start and end (task, try) in the shared markers file, and
/// says it started in its log.
const MARKED: &str = r#"
import os
SHARED = os.environ["WEFT_TEST_SHARED"]
def marked(seconds):
    return (
        'echo started; '
        'echo "start $WEFT_CTX_TASK_ID:$WEFT_CTX_TRY_NUMBER" >> {shared}/markers; '
        'sleep {seconds}; '
        'echo "end $WEFT_CTX_TASK_ID:$WEFT_CTX_TRY_NUMBER" >> {shared}/markers'
    ).format(shared=SHARED, seconds=seconds)
"#;

#[test]
fn a_chain_and_a_fan_out_run_on_three_workers_with_tasks_routed_by_queue() {
    let mut deployment = Deployment::new(&["w1", "w2", "w3"]);
    deployment.write_dag(
        "spread.py",
        r#"
from weft import DAG, BashOperator, task
with DAG(dag_id="spread", schedule=None) as dag:
    @task
    def seed():
        print("python on a worker")
        return 7
    chain = [BashOperator(task_id=f"c{i}", bash_command="echo chain") for i in range(5)]
    seed() >> chain[0]
    for a, b in zip(chain, chain[1:]):
        a >> b
    fan = [BashOperator(task_id=f"f{i}", bash_command="echo fan; sleep 0.2") for i in range(24)]
    chain[-1] >> fan
    gpu = BashOperator(task_id="gpu", bash_command="echo gpu", queue="gpu")
    fan >> gpu
"#,
    );
    deployment.start_node();
    deployment.start_worker("w1", &["--slots", "4", "--queues", "default"]);
    deployment.start_worker(
        "w2",
        &["--slots", "4", "--queues", "default", "--label", "zone=b"],
    );
    deployment.start_worker("w3", &["--slots", "2", "--queues", "gpu"]);
    let workers = deployment.wait_for_workers(|list| list.len() == 3);
    let w2 = workers
        .iter()
        .find(|worker| worker["name"] == "w2")
        .unwrap();
    assert_eq!(w2["labels"]["zone"], "b");
    assert_eq!(w2["slots"], 4);
    let w3 = workers
        .iter()
        .find(|worker| worker["name"] == "w3")
        .unwrap();
    assert_eq!(w3["queues"], serde_json::json!(["gpu"]));

    // The API, as the Workers page reads it, once each worker has sent a heartbeat.
    deployment.wait_for_workers(|list| {
        list.iter()
            .all(|worker| !worker["last_heartbeat"].is_null())
    });
    let api = deployment.api_workers();
    let names: Vec<&str> = api["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|worker| worker["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["local", "w1", "w2", "w3"], "{api}");
    let w3 = &api["workers"][3];
    assert_eq!(w3["kind"], "remote");
    assert_eq!(w3["version"], env!("CARGO_PKG_VERSION"));
    assert!(w3["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(w3["last_heartbeat"].is_string(), "{w3}");
    assert_eq!(api["workers"][0]["kind"], "local");

    let run_id = deployment.trigger("spread");
    assert_eq!(deployment.wait_for_run("spread", &run_id), "success");

    let on_w1 = deployment.logs_on("w1", "spread");
    let on_w2 = deployment.logs_on("w2", "spread");
    let on_w3 = deployment.logs_on("w3", "spread");
    assert_eq!(on_w3, vec![("gpu".to_string(), 1)], "only w3 serves gpu");
    assert!(!on_w1.iter().chain(&on_w2).any(|(task, _)| task == "gpu"));
    let default_tasks: Vec<&(String, u32)> = on_w1.iter().chain(&on_w2).collect();
    assert_eq!(
        default_tasks.len(),
        30,
        "each default-queue task once, on w1 or w2"
    );
    assert!(default_tasks.iter().any(|(task, _)| task == "seed"));
    let fanned = |on: &[(String, u32)]| on.iter().filter(|(task, _)| task.starts_with('f')).count();
    assert!(
        fanned(&on_w1) > 0 && fanned(&on_w2) > 0,
        "the fan-out spreads over both workers: w1 {on_w1:?}, w2 {on_w2:?}"
    );

    // Every log reached the node too, whole, where the UI and `weft tasks logs` read it.
    let mut everywhere: Vec<(String, u32)> =
        on_w1.iter().chain(&on_w2).chain(&on_w3).cloned().collect();
    everywhere.sort();
    wait_until("the logs on the node", || {
        (deployment.logs_on_node("spread") == everywhere).then_some(())
    });
    let gpu = deployment.node_log("spread", &run_id, "gpu", 1);
    assert_eq!(gpu, "gpu\n");
    let seed = deployment.node_log("spread", &run_id, "seed", 1);
    assert!(seed.contains("python on a worker"), "{seed}");
    let output = deployment
        .command(
            &deployment.node_home(),
            &["tasks", "logs", "spread", "c0", &run_id],
        )
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("chain"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Deployment {
    /// `GET /api/v1/workers`, signed in as the admin the node created.
    fn api_workers(&self) -> Value {
        self.api_get("/api/v1/workers")
    }

    /// A GET of the node's API, signed in as the admin the node created.
    fn api_get(&self, path: &str) -> Value {
        let said = self.node().wait_for_line("UI and API on http://");
        let address = said.split("http://").nth(1).unwrap().trim().to_string();
        let created = self.node().wait_for_line("with password `");
        let password = created.split('`').nth(3).unwrap().to_string();
        let login = serde_json::json!({ "username": "admin", "password": password }).to_string();
        let (status, body) = http(&address, "POST", "/api/v1/auth/login", None, Some(&login));
        assert_eq!(status, 200, "{body}");
        let token: Value = serde_json::from_str(&body).unwrap();
        let token = token["access_token"].as_str().unwrap().to_string();
        let (status, body) = http(&address, "GET", path, Some(&token), None);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Where each try of a task ran, as the API says (`hostname`: the worker's name).
    fn tries_ran_on(&self, dag_id: &str, run_id: &str, task_id: &str) -> Vec<String> {
        let run = run_id.replace(':', "%3A").replace('+', "%2B");
        let task = self.api_get(&format!("/api/v1/dags/{dag_id}/runs/{run}/tasks/{task_id}"));
        task["tries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|attempt| attempt["hostname"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The node's copies of the logs of a DAG (the workers stream them there).
    fn logs_on_node(&self, dag_id: &str) -> Vec<(String, u32)> {
        logs_under(&self.node_home(), dag_id)
    }

    fn node_log(&self, dag_id: &str, run_id: &str, task_id: &str, try_number: u32) -> String {
        let run = run_id.replace([':'], "_");
        let path = self.node_home().join(format!(
            "logs/dag_id={dag_id}/run_id={run}/task_id={task_id}/attempt={try_number}.log"
        ));
        std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    }
}

#[test]
fn a_worker_killed_mid_run_has_its_attempts_retried_on_the_others() {
    let mut deployment = Deployment::new(&["w1", "w2", "w3"]);
    deployment.write_dag(
        "killed.py",
        &format!(
            r#"{MARKED}
from datetime import timedelta
from weft import DAG, BashOperator
with DAG(dag_id="killed", schedule=None,
         default_args={{"retries": 3, "retry_delay": timedelta(seconds=0)}}) as dag:
    [BashOperator(task_id=f"t{{i}}", bash_command=marked(3)) for i in range(6)]
"#
        ),
    );
    deployment.start_node();
    for name in ["w1", "w2", "w3"] {
        deployment.start_worker(name, &["--slots", "2"]);
    }
    let run_id = deployment.trigger("killed");
    // Each worker runs two of the six tasks; kill w1 while they run.
    let on_w1 = wait_until("w1 to run two attempts", || {
        let on = deployment.logs_on("w1", "killed");
        (on.len() == 2).then_some(on)
    });
    std::thread::sleep(Duration::from_millis(300));
    deployment.workers.remove("w1"); // SIGKILL
    let killed = Instant::now();
    assert_eq!(deployment.wait_for_run("killed", &run_id), "success");
    eprintln!("the run finished {:?} after the kill", killed.elapsed());

    let markers = deployment.markers();
    let ends = |task: &str, try_number: u32| {
        markers
            .lines()
            .filter(|line| *line == format!("end {task}:{try_number}"))
            .count()
    };
    for (task, try_number) in &on_w1 {
        assert_eq!(
            ends(task, *try_number),
            0,
            "{task} try {try_number} died with w1"
        );
        let retried: Vec<(String, u32)> = ["w2", "w3"]
            .iter()
            .flat_map(|worker| deployment.logs_on(worker, "killed"))
            .filter(|(other, number)| other == task && *number > *try_number)
            .collect();
        assert_eq!(retried.len(), 1, "{task}: retried once, on another worker");
        assert_eq!(ends(task, retried[0].1), 1);
        let ran_on = deployment.tries_ran_on("killed", &run_id, task);
        assert_eq!(ran_on.len(), 2, "{task}: {ran_on:?}");
        assert_eq!(ran_on[0], "w1", "the lost try is recorded with its worker");
        assert!(ran_on[1] == "w2" || ran_on[1] == "w3", "{ran_on:?}");
    }
    // Every try ended at most once, and every task exactly once.
    for i in 0..6 {
        let task = format!("t{i}");
        let ended: usize = (1..=4).map(|try_number| ends(&task, try_number)).sum();
        assert_eq!(ended, 1, "{task}:\n{markers}");
    }
    let left = deployment.wait_for_workers(|list| list.len() == 2);
    assert!(left.iter().all(|worker| worker["name"] != "w1"));
    assert!(
        deployment.node().stderr().contains("remote worker left"),
        "the node says w1 left"
    );
}

#[test]
fn a_worker_paused_past_its_lease_is_refused_then_joins_again() {
    let mut deployment = Deployment::new(&["w1", "w2"]);
    deployment.write_dag(
        "paused.py",
        &format!(
            r#"{MARKED}
from datetime import timedelta
from weft import DAG, BashOperator
with DAG(dag_id="paused", schedule=None,
         default_args={{"retries": 2, "retry_delay": timedelta(seconds=0)}}) as dag:
    BashOperator(task_id="long", bash_command=marked(12), queue="q")
"#
        ),
    );
    deployment.start_node();
    deployment.start_worker("w1", &["--slots", "1", "--queues", "q"]);
    let first = deployment.workers_list()[0]["session"].as_u64().unwrap();
    let run_id = deployment.trigger("paused");
    wait_until("the first try on w1", || {
        deployment.markers().contains("start long:1").then_some(())
    });
    // Only now may another worker take the retry.
    deployment.start_worker("w2", &["--slots", "1", "--queues", "q"]);
    deployment.workers["w1"].signal("-STOP");
    // The node finds the link idle, counts the try lost and retries it on w2.
    wait_until("the retry on w2", || {
        deployment.markers().contains("start long:2").then_some(())
    });
    assert!(deployment.node().stderr().contains("remote worker left"));
    deployment.workers["w1"].signal("-CONT");
    // Back, w1 finds its lease expired, stops its attempt and joins again in a new session.
    let back = deployment.wait_for_workers(|list| {
        list.iter()
            .any(|worker| worker["name"] == "w1" && worker["session"].as_u64() != Some(first))
    });
    assert!(back.iter().any(|worker| worker["name"] == "w1"));
    deployment.workers["w1"].wait_for_line("lease");
    assert_eq!(deployment.wait_for_run("paused", &run_id), "success");
    let markers = deployment.markers();
    assert!(
        !markers.contains("end long:1"),
        "the try of the paused worker was stopped, its result never counted:\n{markers}"
    );
    assert!(markers.contains("end long:2"), "{markers}");
    assert_eq!(
        deployment.logs_on("w2", "paused"),
        vec![("long".to_string(), 2)]
    );
}

#[test]
fn workers_with_a_foreign_certificate_none_or_another_protocol_are_refused() {
    let mut deployment = Deployment::new(&["w1"]);
    deployment.start_node();

    // A worker whose certificate another CA signed, under the same name.
    let foreign = tempfile::tempdir().unwrap();
    for args in [vec!["init"], vec!["issue", "--worker", "w1"]] {
        let mut all = vec!["certs"];
        all.extend(args);
        all.extend(["--dir", foreign.path().to_str().unwrap()]);
        let output = deployment
            .command(&deployment.node_home(), &all)
            .output()
            .unwrap();
        assert!(output.status.success());
    }
    let mut command = deployment.worker_command("w1", &[]);
    let home = deployment.worker_home("w1");
    for file in ["worker-w1.pem", "worker-w1.key"] {
        std::fs::copy(foreign.path().join(file), home.join("certs").join(file)).unwrap();
    }
    command.env("WEFT_WORKER__CERTS_DIR", home.join("certs"));
    let mut worker = Process::spawn(command);
    assert_eq!(worker.wait_exit(), Some(2), "{}", worker.stderr());
    let said = worker.stderr();
    assert!(said.contains("TLS"), "{said}");
    deployment.node().wait_for_line("refused");

    // A worker without a certificate of its own says what to do.
    let bare = deployment.path().join("worker-bare");
    std::fs::create_dir_all(&bare).unwrap();
    let address = deployment.node_address();
    let output = deployment
        .command(&bare, &["worker", "--connect", &address, "--name", "bare"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("weft certs issue --worker bare"), "{said}");

    // A worker of another protocol version: both sides name both versions.
    let mut worker = Process::spawn(deployment.worker_command("w1", &["--protocol-version", "99"]));
    assert_eq!(worker.wait_exit(), Some(2), "{}", worker.stderr());
    let said = worker.stderr();
    assert!(
        said.contains("this side speaks 99, the peer speaks 1"),
        "{said}"
    );
    deployment
        .node()
        .wait_for_line("this side speaks 1, the peer speaks 99");

    // And a good one still joins.
    std::fs::remove_dir_all(deployment.worker_home("w1")).unwrap();
    deployment.start_worker("w1", &[]);
}

/// Sends `bytes` raw on the first stream of a link of worker `name` (a certificate of this
/// deployment), and returns how the node closed the link.
fn raw_link_closed_by_node(deployment: &Deployment, name: &str, bytes: Vec<u8>) -> String {
    use weft_cells::certs::Identity;
    use weft_cells::link::{Connector, Credentials, LinkSettings};
    let identity = Identity::worker(name).unwrap();
    let credentials = Credentials::load(&deployment.node_home().join("certs"), &identity).unwrap();
    let address: std::net::SocketAddr = deployment.node_address().parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let connector = Connector::bind(
            "127.0.0.1:0".parse().unwrap(),
            &credentials,
            LinkSettings::default(),
        )
        .unwrap();
        let link = tokio::time::timeout(WAIT, connector.connect(address, "127.0.0.1"))
            .await
            .unwrap()
            .unwrap();
        let (mut send, _recv) = link.open().await.unwrap().into_streams();
        send.write_all(&bytes).await.unwrap();
        let reason = tokio::time::timeout(WAIT, link.closed()).await.unwrap();
        reason.to_string()
    })
}

#[test]
fn a_corrupt_frame_and_an_oversized_frame_close_only_that_link() {
    let mut deployment = Deployment::new(&["w1", "w8", "w9"]);
    deployment.write_dag(
        "after.py",
        r#"
from weft import DAG, BashOperator
with DAG(dag_id="after", schedule=None) as dag:
    BashOperator(task_id="a", bash_command="echo a") >> BashOperator(task_id="b", bash_command="echo b")
"#,
    );
    deployment.start_node();
    deployment.start_worker("w1", &["--slots", "2"]);

    // A frame whose format byte no version of weft writes.
    let mut corrupt = 5u32.to_be_bytes().to_vec();
    corrupt.push(0xEE);
    corrupt.extend_from_slice(b"junk");
    let reason = raw_link_closed_by_node(&deployment, "w8", corrupt);
    assert!(
        reason.contains("frame format byte is 238") && reason.ends_with("(code 4)"),
        "closed with the bad-frame code and reason: {reason}"
    );

    // A frame that claims more than the limit: refused from its length alone.
    let mut oversized = (8u32 * 1024 * 1024).to_be_bytes().to_vec();
    oversized.push(1);
    oversized.extend_from_slice(&[0u8; 1024]);
    let reason = raw_link_closed_by_node(&deployment, "w9", oversized);
    assert!(
        reason.contains("over the limit") && reason.ends_with("(code 4)"),
        "closed with the bad-frame code and reason: {reason}"
    );
    // The node logs each refusal (its log line may come after the peer saw the close).
    for worker in ["weft://worker/w8", "weft://worker/w9"] {
        deployment.node().wait_for_line(worker);
    }

    // The worker that behaved is still there and runs a DAG.
    let workers = deployment.workers_list();
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers[0]["name"], "w1");
    let run_id = deployment.trigger("after");
    assert_eq!(deployment.wait_for_run("after", &run_id), "success");
}

#[test]
fn sigterm_drains_a_worker_it_finishes_what_runs_and_takes_nothing_new() {
    let mut deployment = Deployment::new(&["w1", "w2"]);
    deployment.write_dag(
        "drain.py",
        &format!(
            r#"{MARKED}
from weft import DAG, BashOperator
with DAG(dag_id="drain", schedule=None) as dag:
    BashOperator(task_id="first", bash_command=marked(2)) >> BashOperator(task_id="second", bash_command=marked(0))
"#
        ),
    );
    deployment.start_node();
    deployment.start_worker("w1", &["--slots", "1"]);
    let run_id = deployment.trigger("drain");
    wait_until("the first task on w1", || {
        deployment.markers().contains("start first:1").then_some(())
    });
    deployment.workers["w1"].signal("-TERM");
    let listed = deployment.wait_for_workers(|list| {
        list.iter()
            .any(|worker| worker["name"] == "w1" && worker["draining"] == true)
    });
    assert_eq!(listed[0]["busy"], 1, "{listed:?}");
    let output = deployment
        .command(&deployment.node_home(), &["workers", "list"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("draining"));
    // What runs finishes; then the worker leaves, and the next task waits for another.
    let status = deployment.workers.get_mut("w1").unwrap().wait_exit();
    assert_eq!(status, Some(0), "{}", deployment.workers["w1"].stderr());
    assert!(deployment.markers().contains("end first:1"));
    deployment.wait_for_workers(|list| list.is_empty());
    assert_eq!(deployment.run_state("drain", &run_id), "running");
    deployment.start_worker("w2", &["--slots", "1"]);
    assert_eq!(deployment.wait_for_run("drain", &run_id), "success");
    assert_eq!(
        deployment.logs_on("w1", "drain"),
        vec![("first".to_string(), 1)]
    );
    assert_eq!(
        deployment.logs_on("w2", "drain"),
        vec![("second".to_string(), 1)]
    );
}

#[test]
fn an_assignment_over_the_message_limit_fails_its_task_with_the_reason_and_the_worker_stays() {
    let mut deployment = Deployment::new(&["w1"]);
    // Twenty results of 60 KB each (under the 64 KiB result limit) read by one task: its
    // assignment is over the 1 MiB remote message limit.
    deployment.write_dag(
        "wide.py",
        r#"
from weft import DAG, task
with DAG(dag_id="wide", schedule=None) as dag:
    @task
    def big(i):
        return "x" * 60000
    @task
    def sink(*values):
        return len(values)
    sink(*[big.override(task_id=f"big{i}")(i) for i in range(20)])
"#,
    );
    deployment.start_node();
    deployment.start_worker("w1", &["--slots", "4"]);
    let run_id = deployment.trigger("wide");
    assert_eq!(deployment.wait_for_run("wide", &run_id), "failed");
    let said = deployment.said();
    assert!(
        said.contains("the assignment does not fit in a remote message"),
        "{said}"
    );
    assert_eq!(
        deployment.tries_ran_on("wide", &run_id, "big0"),
        ["w1"],
        "the others ran on the worker"
    );
    // The worker was not taken for gone.
    let workers = deployment.workers_list();
    assert_eq!(workers.len(), 1, "{workers:?}");
}

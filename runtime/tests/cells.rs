//! Cells end to end: `weft cell` processes on 127.0.0.1 sharing one CQL store (`WEFT_TEST_CQL`,
//! set by CI), each owning shards of the DAGs through leases. The owner of a DAG is killed
//! with SIGKILL, or paused with SIGSTOP past its lease; another cell takes its shards and the
//! run completes, every task with one accepted result and no schedule tick missed or doubled.
//!
//! Leases here are short (2 s, renewed every 0.5 s) so failovers take seconds. The tests run one
//! at a time.

mod common;

use common::{http, wait_until, Process, WAIT};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SHARDS: u32 = 4;
const LEASE_MS: u64 = 2_000;

/// A chain whose middle task runs long enough to be killed mid-run; one retry, at once.
const CHAIN: &str = r#"
from datetime import datetime, timedelta
from weft import DAG, BashOperator

with DAG(dag_id="cell_chain", schedule=None, start_date=datetime(2024, 1, 1),
         default_args={"retries": 1, "retry_delay": timedelta(seconds=0)}) as dag:
    a = BashOperator(task_id="a", bash_command="echo a")
    b = BashOperator(task_id="b", bash_command="sleep 6; echo b")
    c = BashOperator(task_id="c", bash_command="echo c")
    a >> b >> c
"#;

/// Scheduled every 2 seconds from a start a little in the past, every tick run (catchup).
fn ticker(start: &str) -> String {
    format!(
        r#"
from datetime import datetime, timedelta
from weft import DAG, BashOperator

with DAG(dag_id="cell_ticker", schedule=timedelta(seconds=2),
         start_date=datetime.fromisoformat("{start}"), catchup=True, max_active_runs=16) as dag:
    BashOperator(task_id="tick", bash_command="true")
"#
    )
}

struct Cells {
    dir: tempfile::TempDir,
    store: String,
    cells: Vec<(String, Option<Process>)>,
    /// Relays between a cell and the store, by cell (see `start_relayed`).
    relays: Vec<(String, Vec<weft_linkemu::Link>)>,
    runtime: tokio::runtime::Runtime,
    /// Whether cells link with each other over QUIC (`link`): each has a certificate and a
    /// `--listen` address.
    linked: bool,
    /// Each linked cell's `--listen` address.
    listens: Vec<(String, String)>,
    /// Settings every cell started from now on gets (`WEFT_...` variables).
    cell_env: Vec<(String, String)>,
    /// The admin's API token on each cell, once signed in there.
    tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Held for the test's life (dropped last, after the processes): these tests run one at a
    /// time, since each one's timing assumes a machine that its own cells share with no other
    /// test's (two cores run the store's two nodes too).
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// One cells test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Cells {
    /// A fresh keyspace on the test server, or `None` when there is no server.
    fn new() -> Option<Cells> {
        let Ok(address) = std::env::var("WEFT_TEST_CQL") else {
            eprintln!("WEFT_TEST_CQL is not set: no CQL server to run against");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("dags")).unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let keyspace = format!("cells_{}_{nanos}", std::process::id());
        let store = match std::env::var("WEFT_TEST_CQL_DC2") {
            Ok(_) => format!("cql://{address}/{keyspace}?dc=dc1&replication=dc1:1,dc2:1"),
            Err(_) => format!("cql://{address}/{keyspace}?dc=dc1&replication=dc1:1"),
        };
        Some(Cells {
            dir,
            store,
            cells: Vec::new(),
            relays: Vec::new(),
            linked: false,
            listens: Vec::new(),
            cell_env: Vec::new(),
            tokens: std::sync::Mutex::default(),
            _serial: SERIAL
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap(),
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn home(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    fn write_dag(&self, name: &str, text: &str) {
        std::fs::write(self.path().join("dags").join(name), text).unwrap();
    }

    fn command(&self, home: &Path, args: &[&str]) -> Command {
        self.command_on(&self.store, home, args)
    }

    fn command_on(&self, store: &str, home: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
        command
            .arg("--store")
            .arg(store)
            .args(args)
            .env("WEFT_HOME", home)
            .env("WEFT_DAGS_FOLDER", self.path().join("dags"))
            .env(
                "WEFT_LOG",
                std::env::var("CELLS_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .env("WEFT_WEB__BIND", "127.0.0.1:0")
            .env("WEFT_CELL__SHARDS", SHARDS.to_string())
            .env("WEFT_CELL__LEASE_MS", LEASE_MS.to_string())
            .env("WEFT_CELL__RENEW_MS", "500")
            .env("WEFT_CELL__SKEW_MS", "200")
            .stdin(Stdio::null());
        command
    }

    fn start(&mut self, name: &str) {
        let store = self.store.clone();
        self.start_on(name, &store);
    }

    /// Starts a cell that reaches every store node through a TCP relay of its own, so that
    /// it alone can be cut from the store (`cut`).
    fn start_relayed(&mut self, name: &str) {
        let nodes: Vec<String> = ["WEFT_TEST_CQL", "WEFT_TEST_CQL_DC2"]
            .iter()
            .filter_map(|variable| std::env::var(variable).ok())
            .collect();
        let mut links = Vec::new();
        let mut via = Vec::new();
        for (index, node) in nodes.iter().enumerate() {
            // Rules by address alone: a node's peers are announced with the port the driver
            // first connected to.
            let target: std::net::SocketAddr = node.parse().unwrap();
            let link = self
                .runtime
                .block_on(weft_linkemu::start(
                    &format!("{name}-store-{index}"),
                    weft_linkemu::Proto::Tcp,
                    "127.0.0.1:0".parse().unwrap(),
                    target,
                    weft_linkemu::LinkSettings::default(),
                ))
                .unwrap();
            via.push(format!("{}>{}", target.ip(), link.local_addr()));
            links.push(link);
        }
        // The keyspace and options after the hosts (`cql://HOSTS/KEYSPACE?...`).
        let (_, rest) = self
            .store
            .strip_prefix("cql://")
            .and_then(|url| url.split_once('/'))
            .unwrap();
        let store = format!(
            "cql://{}/{rest}&via={}",
            links[0].local_addr(),
            via.join(",")
        );
        self.relays.push((name.to_string(), links));
        self.start_on(name, &store);
    }

    /// Cut (or heal) the links between `name` and the store: bytes are held, not lost.
    fn cut(&self, name: &str, cut: bool) {
        let (_, links) = self.relays.iter().find(|(cell, _)| cell == name).unwrap();
        for link in links {
            link.set(weft_linkemu::LinkSettings {
                blackhole: cut,
                ..weft_linkemu::LinkSettings::default()
            })
            .unwrap();
        }
    }

    /// From now on, cells get certificates from one CA (`weft certs`) and a QUIC address, and
    /// link with each other.
    fn link(&mut self) {
        let certs = self.path().join("certs");
        let certs_dir = certs.to_str().unwrap().to_string();
        for args in [
            vec!["certs", "init", "--dir", &certs_dir],
            vec![
                "certs",
                "issue",
                "--node",
                "cell-a",
                "--san",
                "127.0.0.1",
                "--dir",
                &certs_dir,
            ],
            vec![
                "certs",
                "issue",
                "--node",
                "cell-b",
                "--san",
                "127.0.0.1",
                "--dir",
                &certs_dir,
            ],
            vec!["certs", "issue", "--worker", "w1", "--dir", &certs_dir],
        ] {
            let output = self.command(&self.home("cli"), &args).output().unwrap();
            assert!(
                output.status.success(),
                "weft {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        self.linked = true;
    }

    fn start_on(&mut self, name: &str, store: &str) {
        let home = self.home(name);
        let mut args = vec!["cell", "--name", name, "--region", "test"];
        let listen;
        if self.linked {
            let port = std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            listen = format!("127.0.0.1:{port}");
            args.extend(["--listen", listen.as_str()]);
            self.listens.push((name.to_string(), listen.clone()));
        }
        let mut command = self.command_on(store, &home, &args);
        command.envs(self.cell_env.iter().map(|(key, value)| (key, value)));
        if self.linked {
            command
                .env("WEFT_WORKERS__CERTS_DIR", self.path().join("certs"))
                .env("WEFT_WORKERS__IDLE_TIMEOUT_MS", "3000");
        }
        let process = Process::spawn(command);
        process.wait_for_line("DAGs from");
        self.cells.push((name.to_string(), Some(process)));
    }

    fn process(&self, name: &str) -> &Process {
        self.cells
            .iter()
            .find(|(cell, _)| cell == name)
            .and_then(|(_, process)| process.as_ref())
            .unwrap_or_else(|| panic!("no running cell {name}"))
    }

    /// Every running cell's stderr, for a failure's message.
    fn said(&self) -> String {
        self.cells
            .iter()
            .filter_map(|(name, process)| {
                process
                    .as_ref()
                    .map(|process| format!("--- {name}\n{}", process.stderr()))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `weft <args> --json` from a home of its own (no node there: it reads the store).
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let output = self.command(&self.home("cli"), &all).output().unwrap();
        assert!(
            output.status.success(),
            "weft {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
    }

    /// Which cell holds each shard, as `weft cells list` reads it from the store.
    fn owners(&self) -> Vec<(String, u32, u64)> {
        let list = self.json(&["cells", "list"]);
        let mut owners = Vec::new();
        for cell in list["cells"].as_array().into_iter().flatten() {
            for shard in cell["shards"].as_array().into_iter().flatten() {
                owners.push((
                    cell["name"].as_str().unwrap().to_string(),
                    shard["shard"].as_u64().unwrap() as u32,
                    shard["epoch"].as_u64().unwrap(),
                ));
            }
        }
        owners
    }

    /// Waits until `cell` holds exactly `count` shards and every shard has one owner.
    fn wait_for_shares(&self, shares: &[(&str, usize)]) -> Vec<(String, u32, u64)> {
        let deadline = Instant::now() + WAIT;
        loop {
            let owners = self.owners();
            let settled = owners.len() == SHARDS as usize
                && shares.iter().all(|(cell, count)| {
                    owners.iter().filter(|(owner, _, _)| owner == cell).count() == *count
                });
            if settled {
                return owners;
            }
            assert!(
                Instant::now() < deadline,
                "shards did not settle to {shares:?}: {owners:?}\n{}",
                self.said()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn owner_of(&self, dag_id: &str) -> (String, u64) {
        let shard = weft_core::lease::shard_of(dag_id, SHARDS);
        let (owner, _, epoch) = self
            .owners()
            .into_iter()
            .find(|(_, held, _)| *held == shard)
            .unwrap_or_else(|| panic!("shard {shard} has no owner"));
        (owner, epoch)
    }

    /// Trigger through the control socket of the cell named `on`.
    fn trigger(&self, on: &str, dag_id: &str) -> Result<String, String> {
        let output = self
            .command(&self.home(on), &["dags", "trigger", dag_id, "--json"])
            .output()
            .unwrap();
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).to_string());
        }
        let created: Value = serde_json::from_slice(&output.stdout).unwrap();
        Ok(created["run_id"].as_str().unwrap().to_string())
    }

    fn task(&self, dag_id: &str, task_id: &str, run_id: &str) -> Value {
        let output = self
            .command(
                &self.home("cli"),
                &["tasks", "state", dag_id, task_id, run_id, "--json"],
            )
            .output()
            .unwrap();
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
    }

    fn runs(&self, dag_id: &str) -> Vec<Value> {
        self.json(&["runs", "list", dag_id, "--limit", "1000"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn wait_for_run(&self, dag_id: &str, run_id: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let state = self
                .runs(dag_id)
                .iter()
                .find(|run| run["key"]["run_id"] == run_id)
                .map(|run| run["state"].as_str().unwrap_or_default().to_string())
                .unwrap_or_default();
            if state == "success" || state == "failed" {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} did not finish:\n{}",
                self.said()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for_task_state(&self, dag_id: &str, task_id: &str, run_id: &str, state: &str) {
        wait_until(&format!("task {task_id} {state}"), || {
            (self.task(dag_id, task_id, run_id)["state"] == state).then_some(())
        });
    }

    /// Starts cell-a, then cell-b (each through relays when `relayed`), waits until they share
    /// the shards, and triggers the chain on its owner; returns (owner, the other, the run),
    /// once the chain's task `b` runs.
    fn chain_running_on_its_owner(&mut self, relayed: bool) -> (String, String, String) {
        for (cell, settled) in [
            ("cell-a", vec![("cell-a", SHARDS as usize)]),
            ("cell-b", vec![("cell-a", 2), ("cell-b", 2)]),
        ] {
            if relayed {
                self.start_relayed(cell);
            } else {
                self.start(cell);
            }
            self.wait_for_shares(&settled);
        }
        let (owner, _) = self.owner_of("cell_chain");
        let other = if owner == "cell-a" {
            "cell-b"
        } else {
            "cell-a"
        };
        let run_id = self.trigger(&owner, "cell_chain").unwrap();
        self.wait_for_task_state("cell_chain", "b", &run_id, "running");
        (owner, other.to_string(), run_id)
    }

    /// A call to the API of the cell named `on`, signed in as the admin it created.
    fn api(&self, on: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let process = self.process(on);
        let said = process.wait_for_line("UI and API on http://");
        let address = said.split("http://").nth(1).unwrap().trim().to_string();
        // One sign-in per cell: sign-ins are rate limited per client address.
        let mut tokens = self.tokens.lock().unwrap();
        let token = tokens.entry(on.to_string()).or_insert_with(|| {
            let password = self.admin_password();
            let login =
                serde_json::json!({ "username": "admin", "password": password }).to_string();
            let (status, answer) = http(&address, "POST", "/api/v1/auth/login", None, Some(&login));
            assert_eq!(status, 200, "{answer}");
            let token: Value = serde_json::from_str(&answer).unwrap();
            token["access_token"].as_str().unwrap().to_string()
        });
        let (status, answer) = http(&address, method, path, Some(token.as_str()), body);
        (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
    }

    /// The admin's password, printed by the cell that created the admin (the first one).
    fn admin_password(&self) -> String {
        let created = self
            .cells
            .iter()
            .filter_map(|(_, process)| process.as_ref())
            .find_map(|process| {
                process
                    .stderr()
                    .lines()
                    .find(|line| line.contains("with password `"))
                    .map(str::to_string)
            })
            .expect("no cell printed the admin's password");
        created.split('`').nth(3).unwrap().to_string()
    }

    fn kill(&mut self, name: &str) {
        let entry = self
            .cells
            .iter_mut()
            .find(|(cell, _)| cell == name)
            .unwrap();
        if let Some(mut process) = entry.1.take() {
            process.signal("-KILL");
            process.wait_exit();
        }
    }
}

/// Asserts that each task of the chain run ended `success` with one accepted result: the
/// store holds one state per task instance, so a second accepted result would show as a try
/// number past the tries the run needed.
fn assert_chain_succeeded_once(cells: &Cells, run_id: &str, max_try_of_b: u64) {
    for task_id in ["a", "b", "c"] {
        let task = cells.task("cell_chain", task_id, run_id);
        assert_eq!(task["state"], "success", "task {task_id}: {task}");
        let tries = task["try_number"].as_u64().unwrap();
        let limit = if task_id == "b" { max_try_of_b } else { 1 };
        assert!(tries <= limit, "task {task_id} took {tries} tries: {task}");
    }
}

#[test]
fn kill9_of_the_owner_moves_its_shards_and_runs_and_ticks_carry_on() {
    let Some(mut cells) = Cells::new() else {
        return;
    };
    cells.write_dag("chain.py", CHAIN);
    let start = (chrono::Utc::now() - chrono::Duration::seconds(4))
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string();
    cells.write_dag("ticker.py", &ticker(&start));
    cells.start("cell-a");
    cells.wait_for_shares(&[("cell-a", SHARDS as usize)]);
    cells.start("cell-b");
    cells.wait_for_shares(&[("cell-a", 2), ("cell-b", 2)]);

    let (owner, epoch) = cells.owner_of("cell_chain");
    let other = if owner == "cell-a" {
        "cell-b"
    } else {
        "cell-a"
    };
    // A command for a DAG the cell does not own is refused, naming the shard.
    let refused = cells.trigger(other, "cell_chain").unwrap_err();
    assert!(refused.contains("another cell owns"), "{refused}");
    let run_id = cells.trigger(&owner, "cell_chain").unwrap();
    cells.wait_for_task_state("cell_chain", "b", &run_id, "running");

    let killed_at = Instant::now();
    cells.kill(&owner);
    let owners = cells.wait_for_shares(&[(other, SHARDS as usize)]);
    let took_over = killed_at.elapsed();
    let shard = weft_core::lease::shard_of("cell_chain", SHARDS);
    let new_epoch = owners
        .iter()
        .find(|(_, held, _)| *held == shard)
        .map(|(_, _, epoch)| *epoch)
        .unwrap();
    assert!(
        new_epoch > epoch,
        "the epoch grows with the new owner: {epoch} -> {new_epoch}"
    );
    eprintln!("shards moved {} ms after the kill", took_over.as_millis());

    // The try of `b` that ran on the dead cell is lost; its retry runs on the survivor.
    assert_eq!(
        cells.wait_for_run("cell_chain", &run_id),
        "success",
        "{}",
        cells.said()
    );
    assert_chain_succeeded_once(&cells, &run_id, 2);

    // The ticker kept its schedule across the failover: consecutive ticks 2 s apart, none
    // twice, none missing, every one of them run.
    let ticks_after = chrono::Utc::now();
    wait_until("the ticker's runs up to now", || {
        let runs = cells.runs("cell_ticker");
        let done = runs.iter().all(|run| run["state"] == "success");
        let newest = runs
            .iter()
            .filter_map(|run| run["logical_date"].as_str())
            .filter_map(|date| chrono::DateTime::parse_from_rfc3339(date).ok())
            .max()?;
        (done && newest.with_timezone(&chrono::Utc) + chrono::Duration::seconds(4) >= ticks_after)
            .then_some(())
    });
    let runs = cells.runs("cell_ticker");
    let mut dates: Vec<chrono::DateTime<chrono::FixedOffset>> = runs
        .iter()
        .filter(|run| run["run_type"] == "scheduled")
        .map(|run| {
            chrono::DateTime::parse_from_rfc3339(run["logical_date"].as_str().unwrap()).unwrap()
        })
        .collect();
    dates.sort();
    assert!(dates.len() >= 5, "too few ticks: {dates:?}");
    for pair in dates.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]).num_seconds(),
            2,
            "ticks must be consecutive, once each: {dates:?}"
        );
    }
}

#[test]
fn an_owner_paused_past_its_lease_is_deposed_and_stands_down() {
    let Some(mut cells) = Cells::new() else {
        return;
    };
    cells.write_dag("chain.py", CHAIN);
    let (owner, other, run_id) = cells.chain_running_on_its_owner(false);
    let other = other.as_str();

    cells.process(&owner).signal("-STOP");
    cells.wait_for_shares(&[(other, SHARDS as usize)]);
    cells.process(&owner).signal("-CONT");
    // Back, it finds its leases over, stops deciding and hands its runs to nobody.
    cells
        .process(&owner)
        .wait_for_line("stood down from a shard");
    assert_eq!(
        cells.wait_for_run("cell_chain", &run_id),
        "success",
        "{}",
        cells.said()
    );
    assert_chain_succeeded_once(&cells, &run_id, 2);
    // It rejoins and gets its share again, under new epochs.
    let owners = cells.wait_for_shares(&[("cell-a", 2), ("cell-b", 2)]);
    assert!(owners.iter().all(|(_, _, epoch)| *epoch >= 2), "{owners:?}");
}

/// The middle task of this chain is cut from the store 0.8 s before it ends (see the test): its
/// result is written while the owner's lease still holds, and held in the cut link until
/// another cell has taken the shard.
const SHORT_CHAIN: &str = r#"
from datetime import datetime, timedelta
from weft import DAG, BashOperator

with DAG(dag_id="cell_chain", schedule=None, start_date=datetime(2024, 1, 1),
         default_args={"retries": 1, "retry_delay": timedelta(seconds=0)}) as dag:
    a = BashOperator(task_id="a", bash_command="echo a")
    b = BashOperator(task_id="b", bash_command="sleep 8; echo b")
    c = BashOperator(task_id="c", bash_command="echo c")
    a >> b >> c
"#;

/// How long `b` of `SHORT_CHAIN` runs, and how long before its end its owner is cut: less than
/// the time an owner keeps deciding after its last renewal (lease 2 s - skew 0.2 s, less one
/// 0.5 s renewal period).
const B_RUNS_MS: i64 = 8_000;
const CUT_BEFORE_END_MS: i64 = 800;

#[test]
fn an_owner_cut_from_the_store_stops_deciding_and_its_late_write_is_refused_by_epoch() {
    let Some(mut cells) = Cells::new() else {
        return;
    };
    cells.write_dag("chain.py", SHORT_CHAIN);
    let (owner, other, run_id) = cells.chain_running_on_its_owner(true);
    let other = other.as_str();
    let b = cells.task("cell_chain", "b", &run_id);
    let started = chrono::DateTime::parse_from_rfc3339(b["started_at"].as_str().unwrap()).unwrap();
    let cut_at = started + chrono::Duration::milliseconds(B_RUNS_MS - CUT_BEFORE_END_MS);
    let wait = (cut_at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .expect("the machine took too long to see `b` running to cut before it ends");
    std::thread::sleep(wait);

    cells.cut(&owner, true);
    cells
        .process(&owner)
        .wait_for_line("stood down from a shard");
    cells.wait_for_shares(&[(other, SHARDS as usize)]);
    cells.cut(&owner, false);
    // The result of `b` the owner wrote before it stood down reaches the store now, after the
    // new owner adopted the run under a newer epoch: the store refuses it.
    cells
        .process(&owner)
        .wait_for_line("the store refused a write under an old epoch");
    assert_eq!(
        cells.wait_for_run("cell_chain", &run_id),
        "success",
        "{}",
        cells.said()
    );
    // The refused result is not the one kept: `b` ran again under the new owner.
    let b = cells.task("cell_chain", "b", &run_id);
    assert_eq!(b["try_number"], 2, "{b}");
    assert_chain_succeeded_once(&cells, &run_id, 2);
}

const QUICK: &str = r#"
from datetime import datetime
from weft import DAG, BashOperator

with DAG(dag_id="cell_quick", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
    BashOperator(task_id="a", bash_command="echo a") >> BashOperator(task_id="b", bash_command="echo b")
"#;

#[test]
fn commands_sent_to_any_cell_reach_the_owner_and_every_cell_sees_its_runs_live() {
    let Some(mut cells) = Cells::new() else {
        return;
    };
    cells.write_dag("quick.py", QUICK);
    cells.link();
    cells.start("cell-a");
    cells.wait_for_shares(&[("cell-a", SHARDS as usize)]);
    cells.start("cell-b");
    cells.wait_for_shares(&[("cell-a", 2), ("cell-b", 2)]);
    for cell in ["cell-a", "cell-b"] {
        cells.process(cell).wait_for_line("cell link up");
    }
    let (owner, _) = cells.owner_of("cell_quick");
    let other = if owner == "cell-a" {
        "cell-b"
    } else {
        "cell-a"
    };

    // A trigger on the cell that does not own the DAG (its control socket, as `weft dags
    // trigger` on that machine) is carried out by the owner and answered with its run.
    let run_id = cells.trigger(other, "cell_quick").unwrap();
    cells
        .process(&owner)
        .wait_for_line("command from another cell");
    assert_eq!(cells.wait_for_run("cell_quick", &run_id), "success");
    // The owner's events reached the other cell: its own subscribers saw the run finish.
    cells
        .process(other)
        .wait_for_line(&format!("run cell_quick/{run_id} finished: success"));

    // The other cell's API names the owner of the run, and its links.
    let path = format!(
        "/api/v1/dags/cell_quick/runs/{}",
        run_id.replace(':', "%3A").replace('+', "%2B")
    );
    let (status, detail) = cells.api(other, "GET", &path, None);
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["cell"], owner.as_str(), "{detail}");
    let list = wait_until("the other cell measures its link with the owner", || {
        let (status, list) = cells.api(other, "GET", "/api/v1/cells", None);
        assert_eq!(status, 200, "{list}");
        let owner_row = list["cells"]
            .as_array()?
            .iter()
            .find(|cell| cell["name"] == owner.as_str())?
            .clone();
        owner_row["rtt_ms"].as_f64().map(|_| list)
    });
    assert_eq!(list["this_cell"], other, "{list}");
    let names: Vec<&str> = list["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cell| cell["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{list}");
    for cell in list["cells"].as_array().unwrap() {
        assert_eq!(cell["shards"].as_array().unwrap().len(), 2, "{list}");
    }
    // `weft cells list` on the other cell's machine asks the running cell, links included.
    let output = cells
        .command(&cells.home(other), &["cells", "list", "--json"])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed["this_cell"], other, "{listed}");

    // A pause through the other cell's API is the owner's too, and so is a clear.
    let (status, answer) = cells.api(
        other,
        "PATCH",
        "/api/v1/dags/cell_quick",
        Some(r#"{"paused": true}"#),
    );
    assert_eq!(status, 200, "{answer}");
    let dags = cells.json(&["dags", "list"]);
    let quick = dags
        .as_array()
        .unwrap()
        .iter()
        .find(|dag| dag["dag_id"] == "cell_quick")
        .cloned()
        .unwrap();
    assert_eq!(quick["is_paused"], true, "{quick}");
    let clear = format!("{path}/clear");
    let (status, answer) = cells.api(
        other,
        "POST",
        &clear,
        Some(r#"{"task_ids": ["b"], "dry_run": false}"#),
    );
    assert_eq!(status, 200, "{answer}");
    let said = cells.process(&owner).stderr();
    assert!(
        said.matches("command from another cell").count() >= 3,
        "trigger, pause and clear reached the owner:\n{said}"
    );
    // A command for a DAG nobody registered is refused as the owner refuses it.
    let (status, answer) = cells.api(other, "POST", "/api/v1/dags/no_such_dag/runs", Some("{}"));
    assert_eq!(status, 404, "{answer}");
}

/// Its task runs only on a remote worker: the cells' own slots serve another queue.
const ON_A_WORKER: &str = r#"
from datetime import datetime
from weft import DAG, BashOperator

with DAG(dag_id="cell_remote", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
    BashOperator(task_id="far", bash_command="echo far", queue="remote")
"#;

#[test]
fn a_worker_joins_the_nearest_cell_and_the_next_nearest_when_that_one_dies() {
    let Some(mut cells) = Cells::new() else {
        return;
    };
    cells.write_dag("remote.py", ON_A_WORKER);
    cells.link();
    cells
        .cell_env
        .push(("WEFT_WORKERS__QUEUES".into(), r#"["local"]"#.into()));
    cells.start("cell-a");
    cells.wait_for_shares(&[("cell-a", SHARDS as usize)]);
    cells.start("cell-b");
    cells.wait_for_shares(&[("cell-a", 2), ("cell-b", 2)]);
    let listen = |name: &str| {
        cells
            .listens
            .iter()
            .find(|(cell, _)| cell == name)
            .map(|(_, listen)| listen.clone())
            .unwrap()
    };
    // cell-a is 30 ms away (each way) through a relay; cell-b is next door.
    let far = cells
        .runtime
        .block_on(weft_linkemu::start(
            "far",
            weft_linkemu::Proto::Udp,
            "127.0.0.1:0".parse().unwrap(),
            listen("cell-a").parse().unwrap(),
            weft_linkemu::LinkSettings {
                delay: Duration::from_millis(30),
                ..weft_linkemu::LinkSettings::default()
            },
        ))
        .unwrap();
    let connect = format!("{},{}", far.local_addr(), listen("cell-b"));
    let mut worker = Command::new(env!("CARGO_BIN_EXE_weft"));
    worker
        .args([
            "worker",
            "--connect",
            &connect,
            "--name",
            "w1",
            "--queues",
            "remote",
            "--slots",
            "2",
        ])
        .env("WEFT_HOME", cells.home("w1"))
        .env("WEFT_DAGS_FOLDER", cells.path().join("dags"))
        .env("WEFT_WORKER__CERTS_DIR", cells.path().join("certs"))
        .env("WEFT_WORKER__IDLE_TIMEOUT_MS", "3000")
        .env("WEFT_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    let worker = Process::spawn(worker);
    let joined = worker.wait_for_line("joined the node");
    assert!(joined.contains("cell-b"), "the nearest is cell-b: {joined}");

    // cell-b dies: the worker joins cell-a, the next nearest, and serves its runs.
    cells.kill("cell-b");
    cells.wait_for_shares(&[("cell-a", SHARDS as usize)]);
    wait_until("the worker joins cell-a", || {
        worker
            .stderr()
            .lines()
            .any(|line| line.contains("joined the node") && line.contains("cell-a"))
            .then_some(())
    });
    let run_id = cells.trigger("cell-a", "cell_remote").unwrap();
    assert_eq!(
        cells.wait_for_run("cell_remote", &run_id),
        "success",
        "only the worker serves the task's queue:\n{}\n--- w1\n{}",
        cells.said(),
        worker.stderr()
    );
}

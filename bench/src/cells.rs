//! Failover between cells: two `weft cell` processes on a CQL store (`WEFT_BENCH_CQL` or
//! `WEFT_TEST_CQL`, `host:port`), default lease settings. The cell owning a DAG is killed with
//! SIGKILL while the DAG's task runs on its slots; measured: the time from the kill to the
//! start of the task's next attempt on the other cell (the first task of the resumed run: its
//! retry, or try 1 again under a new token), and to the other cell's take of the shard. The cells are the `weft` binary next to this one (build it
//! with the same profile: `cargo build [--release] -p weft`).

use crate::measure::{Summary, Usage};
use crate::report::WorkloadResult;
use crate::workloads::{Sizes, Workspace};
use anyhow::Context as _;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weft_core::ids::TaskInstanceKey;
use weft_core::lease::{shard_of, SHARDS_DEFAULT};
use weft_storage::cql::{CqlOptions, CqlStore};
use weft_storage::Store;

/// The longest any step of a trial may take.
const STEP_WAIT: Duration = Duration::from_secs(60);
/// The issue's aim: the resumed run's first task starts within this of the owner's death.
pub const FAILOVER_S_MAX: f64 = 10.0;

const DAG: &str = r#"
from datetime import datetime, timedelta
import os
from weft import DAG, BashOperator

MARK = os.environ["WEFT_BENCH_MARK"]
with DAG(dag_id="bench_failover", schedule=None, start_date=datetime(2024, 1, 1),
         default_args={"retries": 1, "retry_delay": timedelta(seconds=0)}) as dag:
    BashOperator(task_id="victim", bash_command=(
        f"if [ -e '{MARK}' ]; then echo retried; exit 0; fi; touch '{MARK}'; exec sleep 120"))
"#;

/// Where the CQL server is, if any.
pub fn cql_address() -> Option<String> {
    std::env::var("WEFT_BENCH_CQL")
        .or_else(|_| std::env::var("WEFT_TEST_CQL"))
        .ok()
}

/// The `weft` binary beside this one.
pub fn weft_binary() -> Option<PathBuf> {
    let path = std::env::current_exe().ok()?.parent()?.join("weft");
    path.exists().then_some(path)
}

struct Cell {
    name: String,
    home: PathBuf,
    child: Child,
}

impl Drop for Cell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn failover_cells(
    workspace: &Workspace,
    sizes: &Sizes,
    address: &str,
    weft: &Path,
) -> anyhow::Result<WorkloadResult> {
    let name = "failover_cells";
    let dir = workspace.fresh_dir(name)?;
    let usage = Usage::start();
    let (mut to_resume, mut to_take, mut trials) = (Vec::new(), Vec::new(), Vec::new());
    for trial in 0..sizes.kill_trials.max(1) {
        let measured = one_trial(&dir.join(format!("trial{trial}")), address, weft, trial).await?;
        to_resume.push(measured.0);
        to_take.push(measured.1);
        trials.push(
            json!({ "kill_to_next_attempt_started_s": measured.0, "kill_to_shard_taken_s": measured.1 }),
        );
    }
    let summary = Summary::of(&to_resume);
    let description = format!(
        "{} trials: the cell owning a DAG killed (SIGKILL) while its task runs, another cell up \
         (default lease 4 s, skew 0.5 s, 64 shards); seconds from the kill to the start of the \
         task's next attempt on the other cell",
        to_resume.len()
    );
    Ok(WorkloadResult::new(name, &description, summary, usage)
        .with_note("kill_to_shard_taken_s", json!(Summary::of(&to_take)))
        .with_note("trials", json!(trials))
        .with_note(
            "goals",
            json!({
                "failover_s_max": FAILOVER_S_MAX,
                "met_by_max": summary.max <= FAILOVER_S_MAX,
            }),
        ))
}

/// One trial on a keyspace of its own: (kill to next attempt start, kill to shard taken), seconds.
async fn one_trial(
    dir: &Path,
    address: &str,
    weft: &Path,
    trial: usize,
) -> anyhow::Result<(f64, f64)> {
    std::fs::create_dir_all(dir.join("dags"))?;
    std::fs::write(dir.join("dags/failover.py"), DAG)?;
    let mark = dir.join("first-try-started");
    let keyspace = format!("bench_failover_{}_{trial}", std::process::id());
    let url = format!("cql://{address}/{keyspace}?dc=dc1");
    let options = CqlOptions {
        contact_points: vec![address.to_string()],
        keyspace: keyspace.clone(),
        ..CqlOptions::default()
    };
    let spawn = |cell: &str| -> anyhow::Result<Cell> {
        let home = dir.join(cell);
        std::fs::create_dir_all(&home)?;
        let child = Command::new(weft)
            .args(["--store", &url, "cell", "--name", cell, "--region", "bench"])
            .env("WEFT_HOME", &home)
            .env("WEFT_DAGS_FOLDER", dir.join("dags"))
            .env("WEFT_BENCH_MARK", &mark)
            .env("WEFT_WEB__BIND", "127.0.0.1:0")
            .env("WEFT_SANDBOX__ISOLATION", "none")
            .env("WEFT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", weft.display()))?;
        Ok(Cell {
            name: cell.to_string(),
            home,
            child,
        })
    };
    let mut cells = vec![spawn("cell-a")?];
    // The first cell creates the keyspace; connect once it has.
    let store = wait_for("the store's keyspace", || async {
        CqlStore::connect(CqlOptions {
            apply_migrations: false,
            ..options.clone()
        })
        .await
        .ok()
    })
    .await?;
    wait_for("cell-a to hold every shard", || async {
        let owned = owners(&store).await;
        (owned.iter().filter(|owner| *owner == "cell-a").count() == SHARDS_DEFAULT as usize)
            .then_some(())
    })
    .await?;
    cells.push(spawn("cell-b")?);
    wait_for("the shards to be shared", || async {
        let owned = owners(&store).await;
        let b = owned.iter().filter(|owner| *owner == "cell-b").count();
        (b == SHARDS_DEFAULT as usize / 2 && owned.len() == SHARDS_DEFAULT as usize).then_some(())
    })
    .await?;
    let shard = shard_of("bench_failover", SHARDS_DEFAULT);
    let owner = owners(&store).await[shard as usize].clone();
    let victim = cells
        .iter()
        .position(|cell| cell.name == owner)
        .context("no owner")?;
    // Registered by the owner's scan of the DAG folder, then triggered through its socket.
    let run_id = wait_for("the owner to register and trigger the DAG", || async {
        let output = Command::new(weft)
            .args([
                "--store",
                &url,
                "dags",
                "trigger",
                "bench_failover",
                "--json",
            ])
            .env("WEFT_HOME", &cells[victim].home)
            .env("WEFT_DAGS_FOLDER", dir.join("dags"))
            .output()
            .ok()?;
        let created: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        created["run_id"].as_str().map(str::to_string)
    })
    .await?;
    let key = TaskInstanceKey::new("bench_failover", &run_id, "victim", -1);
    // Killed once the store has the first try running, so that the kill falls while it runs.
    let first_token = wait_for("the first try to run", || async {
        let record = store.task_instance(&key).await.ok().flatten()?;
        (record.state == weft_core::state::TaskState::Running && mark.exists())
            .then_some(record.token)
    })
    .await?;
    let killed_at = chrono::Utc::now();
    let killed = Instant::now();
    let mut dead = cells.remove(victim);
    dead.child.kill()?;
    dead.child.wait()?;
    let mut taken = None;
    let deadline = Instant::now() + STEP_WAIT;
    let resumed_at = loop {
        if taken.is_none() {
            let owned = owners(&store).await;
            if owned
                .get(shard as usize)
                .is_some_and(|now| *now != owner && !now.is_empty())
            {
                taken = Some(killed.elapsed().as_secs_f64());
            }
        }
        // The first attempt of the task that the other cell starts: the retry, or try 1
        // dispatched again under a new token when the new owner found it still to start.
        let attempts = store.attempts(&key).await.unwrap_or_default();
        if let Some(resumed) = attempts
            .iter()
            .find(|row| row.attempt.token != first_token && row.started_at > killed_at)
        {
            break resumed.started_at;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no attempt of the task started on the other cell within {STEP_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let to_resume = (resumed_at - killed_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
    let to_take = taken.unwrap_or(to_resume);
    drop(cells);
    Ok((to_resume, to_take))
}

/// The owner of each shard (`""`: none).
async fn owners(store: &CqlStore) -> Vec<String> {
    let mut owners = vec![String::new(); SHARDS_DEFAULT as usize];
    if let Ok(leases) = store.leases(SHARDS_DEFAULT).await {
        for record in leases {
            if let Some(owner) = record.lease.owner {
                owners[record.lease.shard as usize] = owner;
            }
        }
    }
    owners
}

async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + STEP_WAIT;
    loop {
        if let Some(found) = check().await {
            return Ok(found);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what}: not within {STEP_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs of the event workload (a one-task DAG each): about seven state changes per run.
pub fn event_runs(smoke: bool) -> usize {
    if smoke {
        10
    } else {
        200
    }
}

/// The emulated one-way latency between regions of the second measurement.
pub const REGION_DELAY_MS: u64 = 40;

/// Cross-cell event latency: two cells' engines in this process on one store (in memory: the
/// store is not on the measured path), linked over QUIC with mutual TLS on 127.0.0.1, the
/// second cell through a `weft-linkemu` UDP relay that adds `REGION_DELAY_MS` each way in the
/// second measurement. Cell A owns the DAG and runs it; measured: from the moment A's own
/// subscribers see a state change to the moment B's subscribers (what B's live stream reads)
/// see the same change.
pub async fn events_cells(workspace: &Workspace, runs: usize) -> anyhow::Result<WorkloadResult> {
    let name = "events_cells";
    let dir = workspace.fresh_dir(name)?;
    let usage = Usage::start();
    let direct = event_latency(&dir.join("direct"), 0, runs).await?;
    let delayed = event_latency(&dir.join("delayed"), REGION_DELAY_MS, runs).await?;
    let ms = |samples: &[f64]| Summary::of(&samples.iter().map(|s| s * 1e3).collect::<Vec<_>>());
    let description = format!(
        "{runs} one-task runs on cell A; seconds from a state change seen on cell A to the same \
         change seen on cell B over their QUIC link (direct on 127.0.0.1; the notes add \
         {REGION_DELAY_MS} ms each way through a UDP relay)"
    );
    Ok(
        WorkloadResult::new(name, &description, Summary::of(&direct.0), usage)
            .with_note("direct_ms", json!(ms(&direct.0)))
            .with_note(
                &format!("delay_{REGION_DELAY_MS}ms_ms"),
                json!(ms(&delayed.0)),
            )
            .with_note(
                "missed",
                json!({ "direct": direct.1, "delayed": delayed.1 }),
            )
            .with_note("link", json!({ "direct": direct.2, "delayed": delayed.2 })),
    )
}

/// The latencies (seconds) of every change cell B saw, and how many changes it did not see.
async fn event_latency(
    dir: &Path,
    delay_ms: u64,
    runs: usize,
) -> anyhow::Result<(Vec<f64>, usize, serde_json::Value)> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use weft_actors::{Engine, EngineConfig, Ownership, RustDag};
    use weft_cells::certs::{self, Identity};
    use weft_cells::link::{Connector, Credentials, LinkSettings};
    use weft_cells::peers::Peers;
    use weft_cells::workers::WorkerService;

    let certs_dir = dir.join("certs");
    certs::init(&certs_dir, false)?;
    let store: Arc<dyn Store> = Arc::new(weft_storage::memory::MemoryStore::new());
    let mut engines = Vec::new();
    let mut credentials = Vec::new();
    for cell in ["cell-a", "cell-b"] {
        let identity = Identity::node(cell)?;
        certs::issue(&certs_dir, &identity, &["127.0.0.1".to_string()])?;
        credentials.push(Credentials::load(&certs_dir, &identity)?);
        let mut config = EngineConfig::new(dir.join(cell));
        config.ownership = Some(Arc::new(Ownership::for_cell(1, cell)));
        engines.push(Engine::start(store.clone(), config).await?);
    }
    let (a, b) = (engines[0].clone(), engines[1].clone());
    let listen = "127.0.0.1:0".parse()?;
    let service =
        WorkerService::start_for(&a, listen, &credentials[0], LinkSettings::default()).await?;
    let relay = weft_linkemu::start(
        "regions",
        weft_linkemu::Proto::Udp,
        "127.0.0.1:0".parse()?,
        service.local_addr()?,
        weft_linkemu::LinkSettings {
            delay: Duration::from_millis(delay_ms),
            ..weft_linkemu::LinkSettings::default()
        },
    )
    .await?;
    let reach = relay.local_addr().to_string();
    let settings = weft_core::lease::LeaseSettings {
        shards: 1,
        ..weft_core::lease::LeaseSettings::default()
    };
    let identity = weft_cells::cell::CellIdentity {
        name: "cell-a".into(),
        region: "one".into(),
        address: reach.clone(),
        api: String::new(),
    };
    let keeper = weft_cells::cell::CellKeeper::start(store.clone(), a.clone(), identity, settings);
    let connector =
        |index: usize| Connector::bind(listen, &credentials[index], LinkSettings::default());
    let peers_a = Peers::start(
        a.clone(),
        connector(0)?,
        Identity::node("cell-a")?,
        Vec::new(),
    );
    service.route_cells(peers_a.acceptor());
    let peers_b = Peers::start(
        b.clone(),
        connector(1)?,
        Identity::node("cell-b")?,
        vec![reach],
    );
    let deadline = Instant::now() + STEP_WAIT;
    while a.ownership().and_then(|o| o.epoch_of(0)).is_none() || peers_b.view().is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "cell A took no shard, or B has no link with A"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.register(
        RustDag::new("bench_events")
            .task("only", &[], |_| async { Ok(None) })
            .settings(|spec| spec.max_active_runs = 1_000),
    )
    .await?;

    // Each side's subscriber notes when it saw each change.
    type Seen = Arc<Mutex<HashMap<String, Instant>>>;
    let watch = |engine: &Engine, seen: Seen| {
        let mut events = engine.subscribe();
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                if matches!(&event, weft_actors::Event::DagChanged { .. }) {
                    continue;
                }
                let at = Instant::now();
                seen.lock()
                    .unwrap()
                    .entry(format!("{event:?}"))
                    .or_insert(at);
            }
        })
    };
    let (seen_a, seen_b): (Seen, Seen) = (Arc::default(), Arc::default());
    let watchers = [watch(&a, seen_a.clone()), watch(&b, seen_b.clone())];
    // One run first, until B sees its changes: B's event stream from A is open.
    let deadline = Instant::now() + STEP_WAIT;
    while seen_b.lock().unwrap().is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "cell B saw no change of cell A's runs"
        );
        let run = a.trigger("bench_events", json!({})).await?;
        tokio::time::timeout(STEP_WAIT, a.wait_for_run(&run)).await??;
        tokio::time::sleep(Duration::from_millis(4 * delay_ms + 100)).await;
    }
    seen_a.lock().unwrap().clear();
    seen_b.lock().unwrap().clear();
    for _ in 0..runs {
        let run = a.trigger("bench_events", json!({})).await?;
        tokio::time::timeout(STEP_WAIT, a.wait_for_run(&run)).await??;
    }
    // The last changes are on their way.
    tokio::time::sleep(Duration::from_millis(4 * delay_ms + 500)).await;
    for watcher in watchers {
        watcher.abort();
    }
    let link = peers_b
        .view()
        .first()
        .map(|peer| {
            json!({
                "rtt_ms": peer.rtt_ms,
                "lost_packets": peer.lost_packets,
                "congestion_window_bytes": peer.congestion_window,
            })
        })
        .unwrap_or_default();
    let (seen_a, seen_b) = (
        seen_a.lock().unwrap().clone(),
        seen_b.lock().unwrap().clone(),
    );
    let mut latencies = Vec::new();
    let mut missed = 0;
    for (event, at_a) in &seen_a {
        match seen_b.get(event) {
            Some(at_b) => latencies.push(at_b.saturating_duration_since(*at_a).as_secs_f64()),
            None => missed += 1,
        }
    }
    peers_a.stop();
    peers_b.stop();
    keeper.leave().await;
    service.stop().await;
    a.shutdown().await;
    b.shutdown().await;
    Ok((latencies, missed, link))
}

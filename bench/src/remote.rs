//! Remote workers for the remote workloads: the node's side (a CA and certificates made in the
//! workload's directory, a `WorkerService` on 127.0.0.1 whose workers are handed to the
//! engine) and the workers, each a process of its own: this binary run again with
//! [`WORKER_ENV`] set, serving its slots over QUIC with mutual TLS until the bench closes its
//! standard input (or dies, which closes it too). A worker must be a process of its own:
//! `ractor`'s process groups and actor ids are per process, and a node and a worker in one
//! process would take each other's slots for local actors.
//!
//! The settings are `weft worker`'s defaults: heartbeat 1 s, lease 2.5 s, link keep-alive
//! 1 s and idle timeout 3.5 s. Tasks run without isolation, their logs under the worker's own
//! directory, streamed to the node as `weft worker` does.

use anyhow::{anyhow, Context as _};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_actors::executor::python::PythonRunnerConfig;
use weft_actors::executor::worker::{Handlers, WorkerContext};
use weft_actors::{Engine, RemoteSlotsConfig, RemoteWorkerView};
use weft_cells::certs::{self, Identity};
use weft_cells::link::{Credentials, LinkSettings};
use weft_cells::worker::WorkerLink;
use weft_cells::workers::WorkerService;

/// Set in a worker process: its [`WorkerSpec`] as JSON.
pub const WORKER_ENV: &str = "WEFT_BENCH_WORKER";

/// `weft worker`'s defaults.
pub const HEARTBEAT: Duration = Duration::from_millis(1_000);
pub const LEASE: Duration = Duration::from_millis(2_500);
pub const KEEP_ALIVE: Duration = Duration::from_millis(1_000);
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(3_500);

/// The longest a worker may take to start and join its node.
const JOIN_WAIT: Duration = Duration::from_secs(30);
/// The longest a worker may take to stop once its standard input is closed.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// The node's name in its certificate.
const NODE_NAME: &str = "bench-node";

/// Both sides' link settings.
fn link_settings() -> LinkSettings {
    LinkSettings {
        keep_alive: KEEP_ALIVE,
        idle_timeout: IDLE_TIMEOUT,
        ..LinkSettings::default()
    }
}

/// What a worker process serves, and where.
#[derive(Debug, Serialize, Deserialize)]
struct WorkerSpec {
    name: String,
    slots: u32,
    /// The node's `HOST:PORT`.
    connect: String,
    /// Holds `ca.pem` and the worker's certificate and key.
    certs: PathBuf,
    /// The worker's own directory: its tasks' logs.
    home: PathBuf,
}

/// A worker process's part: joins the node, serves its slots until standard input closes.
pub async fn worker_main(spec: &str) -> anyhow::Result<()> {
    let spec: WorkerSpec = serde_json::from_str(spec).context("reading the worker's spec")?;
    let identity = Identity::worker(&spec.name)?;
    let credentials = Credentials::load(&spec.certs, &identity)?;
    let context = Arc::new(WorkerContext::new(
        Handlers::default(),
        PythonRunnerConfig::from_env(),
        None,
    ));
    let home = spec.home.clone();
    let current = weft_cells::logs::CurrentLink::default();
    let slots = weft_actors::spawn_remote_slots(
        context.clone(),
        RemoteSlotsConfig {
            worker: spec.name.clone(),
            slots: spec.slots,
            version: env!("CARGO_PKG_VERSION").to_string(),
            queues: Vec::new(),
            labels: BTreeMap::new(),
            heartbeat: HEARTBEAT,
            lease: LEASE,
            // The node's log path means nothing here; no isolation.
            localize: Box::new(move |mut assignment| {
                let log = &mut assignment.log;
                log.path = home.join(weft_actors::log_relative_path(&log.key, log.try_number));
                assignment.limits.sandbox = None;
                assignment
            }),
            logs: Some(Arc::new(weft_cells::logs::LogUploader::new(
                current.clone(),
            ))),
        },
    )
    .await
    .map_err(|error| anyhow!("cannot start the worker's slots: {error}"))?;
    let link = WorkerLink {
        connect: vec![spec.connect.clone()],
        server_name: "127.0.0.1".to_string(),
        settings: link_settings(),
    };
    // Standard input closes when the bench closes it or dies.
    let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut buffer = [0u8; 64];
        while matches!(std::io::stdin().read(&mut buffer), Ok(read) if read > 0) {}
        let _ = closed.send(());
    });
    let stop = async {
        let _ = stdin_closed.await;
    };
    let served = weft_cells::worker::serve(&link, &credentials, &identity, &current, stop).await;
    slots.stop().await;
    context.shutdown().await;
    served.map_err(|error| anyhow!("worker {}: {error}", spec.name))
}

/// The node's side: its certificates, its worker service feeding `engine`, its workers.
pub struct Cluster {
    dir: PathBuf,
    certs: PathBuf,
    address: SocketAddr,
    service: WorkerService,
    workers: BTreeMap<String, tokio::process::Child>,
}

impl Cluster {
    /// A CA and the node's certificate in `dir/certs`, and the node listening on 127.0.0.1.
    pub async fn start(dir: &Path, engine: &Engine) -> anyhow::Result<Cluster> {
        let certs_dir = dir.join("certs");
        certs::init(&certs_dir, false)?;
        let node = Identity::node(NODE_NAME)?;
        certs::issue(&certs_dir, &node, &["127.0.0.1".to_string()])?;
        let credentials = Credentials::load(&certs_dir, &node)?;
        let listen: SocketAddr = "127.0.0.1:0".parse()?;
        let service =
            WorkerService::start_for(engine, listen, &credentials, link_settings()).await?;
        let address = service.local_addr()?;
        Ok(Cluster {
            dir: dir.to_path_buf(),
            certs: certs_dir,
            address,
            service,
            workers: BTreeMap::new(),
        })
    }

    /// The worker `name`'s own directory, where its tasks' logs go.
    pub fn home(&self, name: &str) -> PathBuf {
        self.dir.join(format!("worker-{name}"))
    }

    /// Starts the worker `name` with `slots` slots (its certificate issued the first time).
    pub fn spawn_worker(&mut self, name: &str, slots: u32) -> anyhow::Result<()> {
        let identity = Identity::worker(name)?;
        if !certs::cert_path(&self.certs, &identity).exists() {
            certs::issue(&self.certs, &identity, &[])?;
        }
        let home = self.home(name);
        std::fs::create_dir_all(&home)?;
        let spec = WorkerSpec {
            name: name.to_string(),
            slots,
            connect: self.address.to_string(),
            certs: self.certs.clone(),
            home,
        };
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .env(WORKER_ENV, serde_json::to_string(&spec)?)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")?;
        self.workers.insert(name.to_string(), child);
        Ok(())
    }

    /// Waits until the engine has a session with each of `names` (one not in `stale`, the
    /// sessions of workers gone), with all its slots; returns the remote workers it has.
    pub async fn wait_joined(
        &mut self,
        engine: &Engine,
        names: &[&str],
        stale: &[u64],
    ) -> anyhow::Result<Vec<RemoteWorkerView>> {
        let deadline = Instant::now() + JOIN_WAIT;
        loop {
            let remote = engine.workers().await?.remote;
            let joined = names.iter().all(|name| {
                remote.iter().any(|worker| {
                    worker.name == *name && !stale.contains(&worker.session) && !worker.draining
                })
            });
            if joined {
                return Ok(remote);
            }
            for (name, child) in &mut self.workers {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!("worker {name} exited ({status}) before it joined");
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "workers {names:?} did not join within {JOIN_WAIT:?} (the node has {:?})",
                remote.iter().map(|worker| &worker.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills the worker `name` with SIGKILL and reaps it.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let mut child = self
            .workers
            .remove(name)
            .with_context(|| format!("no worker {name} to kill"))?;
        child.start_kill()?;
        tokio::time::timeout(STOP_WAIT, child.wait())
            .await
            .with_context(|| format!("worker {name} did not die of SIGKILL"))??;
        Ok(())
    }

    /// Stops the workers (their standard input closed: they leave the node and exit), reaping
    /// them, so that their CPU is counted as this process's children's; then the service.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let mut stuck = Vec::new();
        for (name, mut child) in std::mem::take(&mut self.workers) {
            drop(child.stdin.take());
            match tokio::time::timeout(STOP_WAIT, child.wait()).await {
                Ok(status) => {
                    let status = status?;
                    if !status.success() {
                        stuck.push(format!("{name} exited {status}"));
                    }
                }
                Err(_) => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    stuck.push(format!("{name} did not stop within {STOP_WAIT:?}"));
                }
            }
        }
        self.service.stop().await;
        anyhow::ensure!(stuck.is_empty(), "workers: {}", stuck.join("; "));
        Ok(())
    }
}

impl Cluster {
    /// CPU seconds (user + system) the live workers and their reaped task processes have
    /// used, from `/proc/PID/stat` (clock ticks of 10 ms).
    pub fn workers_cpu_s(&self) -> f64 {
        self.workers
            .values()
            .filter_map(|child| child.id())
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .filter_map(|stat| {
                // Fields after the command's closing parenthesis, from the state (field 3):
                // utime, stime, cutime and cstime are fields 14 to 17.
                let (_, rest) = stat.rsplit_once(')')?;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let ticks: Option<Vec<f64>> = fields
                    .get(11..15)?
                    .iter()
                    .map(|field| field.parse::<f64>().ok())
                    .collect();
                Some(ticks?.iter().sum::<f64>() / CLOCK_TICKS_PER_S)
            })
            .sum()
    }
}

/// `sysconf(_SC_CLK_TCK)` on Linux.
const CLOCK_TICKS_PER_S: f64 = 100.0;

//! Remote workers: the `weft worker` process, a node's `workers.listen`, and `weft workers
//! list`.

use crate::cli::WorkerArgs;
use crate::config::{Config, WorkerConfig};
use crate::control::{self, Request};
use crate::node;
use crate::output::{print_json, print_table};
use anyhow::{anyhow, bail, Context};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use weft_actors::executor::worker::{Handlers, WorkerContext};
use weft_actors::{AttemptAssignment, Engine, RemoteSlotsConfig, RemoteWorkerView};
use weft_cells::certs::Identity;
use weft_cells::link::{host_of, Credentials, LinkSettings};
use weft_cells::worker::WorkerLink;
use weft_cells::workers::WorkerService;

/// `weft worker`: runs attempts for the node at `--connect` until SIGTERM (which drains it) or
/// a refusal another dial cannot mend.
pub async fn worker(config: Config, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let protocol_version = args
        .protocol_version
        .unwrap_or(weft_cells::link::PROTOCOL_VERSION);
    let settings = worker_settings(&config, args)?;
    let name = if settings.name.is_empty() {
        host_name()?
    } else {
        settings.name.clone()
    };
    let identity = Identity::worker(&name)?;
    let certs = config.certs_dir(&settings.certs_dir);
    let credentials = Credentials::load(&certs, &identity).with_context(|| {
        format!(
            "this worker's certificate: issue it with `weft certs issue --worker {name}` where \
             the CA is, and put ca.pem, {stem}.pem and {stem}.key in {}",
            certs.display(),
            stem = identity.file_stem()
        )
    })?;
    let connect: Vec<String> = settings
        .connect
        .split(',')
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .map(str::to_string)
        .collect();
    let server_name = if settings.server_name.is_empty() {
        connect
            .iter()
            .map(|address| host_of(address))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        settings.server_name.clone()
    };
    let home = config.core.home.clone();
    node::secure_home(&home)?;
    let lock_path = home.join("worker.lock");
    let lock = std::fs::File::create(&lock_path)?;
    lock.try_lock().map_err(|_| {
        anyhow!(
            "another weft worker runs on {} (lock {} is held): use another WEFT_HOME",
            home.display(),
            lock_path.display()
        )
    })?;
    // Task processes a previous worker of this home left behind die first.
    node::reap_predecessors(&config);
    let isolation = node::task_isolation(&config);
    let current_link = weft_cells::logs::CurrentLink::default();
    let context = Arc::new(WorkerContext::new(
        Handlers::default(),
        node::python_runners(&config, &isolation),
        None,
    ));
    let slots = weft_actors::spawn_remote_slots(
        context.clone(),
        RemoteSlotsConfig {
            worker: name.clone(),
            slots: settings.slots,
            version: env!("CARGO_PKG_VERSION").to_string(),
            queues: settings.queues.clone(),
            labels: settings.labels.clone(),
            heartbeat: Duration::from_millis(settings.heartbeat_ms),
            lease: Duration::from_millis(settings.lease_ms),
            localize: Box::new(localizer(
                home.clone(),
                config.core.dags_folder.clone(),
                isolation.clone(),
            )),
            logs: Some(Arc::new(weft_cells::logs::LogUploader::new(
                current_link.clone(),
            ))),
        },
    )
    .await
    .map_err(|error| anyhow!("cannot start the worker's slots: {error}"))?;
    eprintln!(
        "weft worker {name}: {} slots, queues {}, node {} (`{server_name}`; of several, the nearest that answers)",
        settings.slots,
        if settings.queues.is_empty() {
            "all".to_string()
        } else {
            settings.queues.join(",")
        },
        settings.connect
    );
    eprintln!("{}", isolation.summary);
    let link = WorkerLink {
        connect,
        server_name: settings.server_name.clone(),
        settings: LinkSettings {
            keep_alive: Duration::from_millis(settings.keep_alive_ms),
            idle_timeout: Duration::from_millis(settings.idle_timeout_ms),
            protocol_version,
        },
    };
    let stop = drained(&slots, Duration::from_millis(settings.heartbeat_ms));
    let served =
        weft_cells::worker::serve(&link, &credentials, &identity, &current_link, stop).await;
    slots.stop().await;
    context.shutdown().await;
    match served {
        Ok(()) => {
            eprintln!("weft worker {name}: stopped");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("weft worker {name}: {error}");
            Ok(ExitCode::from(2))
        }
    }
}

/// The worker's settings: `[worker]` with the flags over it.
fn worker_settings(config: &Config, args: WorkerArgs) -> anyhow::Result<WorkerConfig> {
    let mut settings = config.worker.clone();
    if let Some(connect) = args.connect {
        settings.connect = connect;
    }
    if let Some(slots) = args.slots {
        settings.slots = slots;
    }
    if let Some(queues) = args.queues {
        settings.queues = queues.into_iter().filter(|q| !q.is_empty()).collect();
    }
    for label in args.labels {
        let (key, value) = label
            .split_once('=')
            .ok_or_else(|| anyhow!("--label `{label}`: write it KEY=VALUE"))?;
        settings.labels.insert(key.to_string(), value.to_string());
    }
    if let Some(name) = args.name {
        settings.name = name;
    }
    if let Some(server_name) = args.server_name {
        settings.server_name = server_name;
    }
    if let Some(certs) = args.certs {
        settings.certs_dir = certs;
    }
    if settings.connect.is_empty() {
        bail!("say where the node listens: --connect HOST:PORT (or worker.connect)");
    }
    if settings.slots == 0 || settings.slots > weft_cells::workers::WORKER_SLOTS_MAX {
        bail!(
            "--slots {}: a worker has 1 to {} slots",
            settings.slots,
            weft_cells::workers::WORKER_SLOTS_MAX
        );
    }
    if settings.heartbeat_ms == 0 || settings.heartbeat_ms > weft_actors::HEARTBEAT_MS_MAX {
        bail!(
            "worker.heartbeat_ms is {}: it must be 1 to {} (the node asks again after 1.5 s)",
            settings.heartbeat_ms,
            weft_actors::HEARTBEAT_MS_MAX
        );
    }
    if settings.lease_ms < 2 * weft_actors::HEARTBEAT_MS_MAX {
        bail!(
            "worker.lease_ms is {}: it must be at least {} ms, or a slow poll stops attempts",
            settings.lease_ms,
            2 * weft_actors::HEARTBEAT_MS_MAX
        );
    }
    if settings.lease_ms >= settings.idle_timeout_ms {
        eprintln!(
            "warning: worker.lease_ms ({}) is not below the link's idle timeout ({} ms): an \
             attempt cut off from its node may still run when the node retries it",
            settings.lease_ms, settings.idle_timeout_ms
        );
    }
    Ok(settings)
}

/// Resolves once the worker should stop: at SIGTERM or Ctrl-C it drains (accepts nothing new)
/// and resolves when nothing runs and the last reports had time to reach the node; a second
/// signal stops it at once.
async fn drained(slots: &weft_actors::RemoteSlots, heartbeat: Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!(
        "weft worker: draining: {} attempts run on, nothing new starts",
        slots.busy()
    );
    slots.drain();
    let done = async {
        while slots.busy() > 0 || slots.reports_held() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        () = done => {}
        _ = terminate.recv() => return,
        _ = tokio::signal::ctrl_c() => return,
    }
    // The heartbeat that says the slots are idle.
    tokio::time::sleep(heartbeat.min(Duration::from_millis(200))).await;
}

/// Makes an assignment the node built fit this worker: its log goes under this worker's home
/// (the node's path means nothing here), a Python task's DAG file is the one in this worker's
/// DAG folder, and its task runs confined as this worker's configuration says (its user, its
/// folders), with the resource limits the node set.
fn localizer(
    home: std::path::PathBuf,
    dags_folder: std::path::PathBuf,
    isolation: node::TaskIsolation,
) -> impl Fn(AttemptAssignment) -> AttemptAssignment + Send + Sync {
    move |mut assignment| {
        if let Some(fileloc) = assignment.run.fileloc.clone() {
            if let Some(local) = dag_file_here(&dags_folder, &fileloc) {
                std::sync::Arc::make_mut(&mut assignment.run).fileloc = Some(local);
            }
        }
        let log = &mut assignment.log;
        log.path = home.join(weft_actors::log_relative_path(&log.key, log.try_number));
        let asked = assignment.limits.sandbox.take();
        let wants_full = asked.as_ref().is_some_and(|spec| spec.namespaces);
        let mut spec = if wants_full {
            // Without bubblewrap here the node's spec stays, and the attempt is refused at
            // its start with that reason.
            isolation.full.clone().or(asked.clone())
        } else {
            isolation.shell.clone()
        };
        if let (Some(spec), Some(asked)) = (&mut spec, &asked) {
            spec.memory_bytes_max = asked.memory_bytes_max.or(spec.memory_bytes_max);
            spec.cpu_millis_max = asked.cpu_millis_max.or(spec.cpu_millis_max);
            spec.pids_max = asked.pids_max.or(spec.pids_max);
            spec.file_bytes_max = asked.file_bytes_max.or(spec.file_bytes_max);
        }
        assignment.limits.sandbox = spec;
        assignment
    }
}

/// Where a DAG file the node read at `fileloc` is on this worker: the same path when it exists
/// here, otherwise the longest tail of it found under the worker's DAG folder (the node's
/// `/srv/dags/team/etl.py` is `team/etl.py` under a worker's `/opt/dags`). `None`: keep the
/// node's path (the task then fails, naming the file it could not import).
fn dag_file_here(dags_folder: &std::path::Path, fileloc: &str) -> Option<String> {
    let path = std::path::Path::new(fileloc);
    if path.exists() {
        return None;
    }
    let parts: Vec<_> = path.components().collect();
    (0..parts.len()).find_map(|skip| {
        let tail: std::path::PathBuf = parts[skip..]
            .iter()
            .filter(|part| matches!(part, std::path::Component::Normal(_)))
            .collect();
        let candidate = dags_folder.join(&tail);
        (!tail.as_os_str().is_empty() && candidate.is_file())
            .then(|| candidate.display().to_string())
    })
}

fn host_name() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_default();
    if name.is_empty() {
        bail!("no host name to go by: name this worker with --name");
    }
    Ok(name)
}

/// A node's `workers.listen`: accepts remote workers and hands them to `engine`. `None` when
/// it is not configured.
pub async fn serve_workers(
    config: &Config,
    engine: &Engine,
) -> anyhow::Result<Option<WorkerService>> {
    let workers = &config.workers;
    if workers.listen.is_empty() {
        return Ok(None);
    }
    let listen: std::net::SocketAddr = workers.listen.parse().map_err(|_| {
        anyhow!(
            "workers.listen `{}` is not an address such as 0.0.0.0:7070",
            workers.listen
        )
    })?;
    let identity = Identity::node(&workers.node_name)?;
    let certs = config.certs_dir(&workers.certs_dir);
    let credentials = Credentials::load(&certs, &identity).with_context(|| {
        format!(
            "the node's certificate for workers.listen: make the CA with `weft certs init` and \
             this node's certificate with `weft certs issue --node {} --san HOST` (in {})",
            workers.node_name,
            certs.display()
        )
    })?;
    let settings = LinkSettings {
        keep_alive: Duration::from_millis(workers.keep_alive_ms),
        idle_timeout: Duration::from_millis(workers.idle_timeout_ms),
        ..LinkSettings::default()
    };
    let service = WorkerService::start_for(engine, listen, &credentials, settings).await?;
    Ok(Some(service))
}

/// A cell's links with the other cells, over the same QUIC endpoint and certificate as its
/// remote workers (`workers.listen`). `None`, with a warning, for a cell without one: it then
/// forwards no command and sees only its own runs live.
pub fn cell_peers(
    config: &Config,
    engine: &Engine,
    service: Option<&WorkerService>,
) -> anyhow::Result<Option<weft_cells::peers::Peers>> {
    let Some(service) = service else {
        eprintln!(
            "weft cell: no links with other cells (set --listen or workers.listen): commands \
             for DAGs other cells own are refused here, and their runs are not shown live"
        );
        return Ok(None);
    };
    let identity = Identity::node(&config.workers.node_name)?;
    let certs = config.certs_dir(&config.workers.certs_dir);
    let credentials = Credentials::load(&certs, &identity)?;
    let settings = LinkSettings {
        keep_alive: Duration::from_millis(config.workers.keep_alive_ms),
        idle_timeout: Duration::from_millis(config.workers.idle_timeout_ms),
        ..LinkSettings::default()
    };
    let bind: std::net::SocketAddr = if service.local_addr()?.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let connector = weft_cells::Connector::bind(bind, &credentials, settings)?;
    let peers = weft_cells::peers::Peers::start(
        engine.clone(),
        connector,
        identity,
        config.cell.peers.clone(),
    );
    service.route_cells(peers.acceptor());
    eprintln!(
        "weft cell: links with other cells on {} (peers: {})",
        service.local_addr()?,
        if config.cell.peers.is_empty() {
            "from the heartbeat rows".to_string()
        } else {
            config.cell.peers.join(", ")
        }
    );
    Ok(Some(peers))
}

/// `weft workers list`: the running node's remote workers.
pub async fn workers_list(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let Some(response) = control::send(&config.core.home, &Request::Workers).await? else {
        bail!(
            "no node runs on {}: remote workers are known to a running node",
            config.core.home.display()
        );
    };
    let result = response.into_result()?;
    if json {
        print_json(&result);
        return Ok(ExitCode::SUCCESS);
    }
    let workers: Vec<RemoteWorkerView> = serde_json::from_value(result)?;
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|worker| {
            vec![
                worker.name.clone(),
                worker.address.clone(),
                worker.version.clone(),
                if worker.queues.is_empty() {
                    "*".to_string()
                } else {
                    worker.queues.join(",")
                },
                worker
                    .labels
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect::<Vec<_>>()
                    .join(","),
                worker.busy.to_string(),
                worker.slots.saturating_sub(worker.busy).to_string(),
                crate::output::time(worker.last_heartbeat),
                worker.running.len().to_string(),
                if worker.draining { "draining" } else { "up" }.to_string(),
            ]
        })
        .collect();
    print_table(
        false,
        &[
            "NAME",
            "ADDRESS",
            "VERSION",
            "QUEUES",
            "LABELS",
            "BUSY",
            "FREE",
            "LAST HEARTBEAT",
            "RUNNING",
            "STATE",
        ],
        &rows,
        &workers,
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(connect: Option<&str>) -> WorkerArgs {
        WorkerArgs {
            connect: connect.map(str::to_string),
            slots: None,
            queues: None,
            labels: Vec::new(),
            name: None,
            server_name: None,
            certs: None,
            protocol_version: None,
        }
    }

    #[test]
    fn bad_worker_settings_are_refused_with_what_to_fix() {
        let refused = |config: &Config, args: WorkerArgs| {
            worker_settings(config, args).unwrap_err().to_string()
        };
        let config = Config::default();
        assert!(refused(&config, args(None)).contains("--connect HOST:PORT"));
        let mut zero = args(Some("a:1"));
        zero.slots = Some(0);
        assert!(refused(&config, zero).contains("1 to 1024 slots"));
        let mut label = args(Some("a:1"));
        label.labels = vec!["zone".to_string()];
        assert!(refused(&config, label).contains("KEY=VALUE"));
        let mut slow = config.clone();
        slow.worker.heartbeat_ms = 5_000;
        assert!(refused(&slow, args(Some("a:1"))).contains("heartbeat_ms is 5000"));
        let mut short = config.clone();
        short.worker.lease_ms = 500;
        assert!(refused(&short, args(Some("a:1"))).contains("lease_ms is 500"));

        let mut good = args(Some("node.example:7070"));
        good.queues = Some(vec!["gpu".to_string(), String::new()]);
        good.labels = vec!["zone=a".to_string()];
        let settings = worker_settings(&config, good).unwrap();
        assert_eq!(settings.queues, ["gpu"]);
        assert_eq!(settings.labels["zone"], "a");
        assert_eq!(host_of(&settings.connect), "node.example");
        assert_eq!(host_of("[::1]:7070"), "::1");
    }

    #[test]
    fn a_dag_file_is_found_in_the_workers_folder_by_the_longest_tail_of_its_path() {
        let folder = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(folder.path().join("team")).unwrap();
        std::fs::write(folder.path().join("team/etl.py"), "").unwrap();
        std::fs::write(folder.path().join("etl.py"), "").unwrap();
        let here = |fileloc: &str| dag_file_here(folder.path(), fileloc);
        assert_eq!(
            here("/srv/nowhere/dags/team/etl.py"),
            Some(folder.path().join("team/etl.py").display().to_string())
        );
        assert_eq!(
            here("/srv/nowhere/dags/other/etl.py"),
            Some(folder.path().join("etl.py").display().to_string()),
            "a shorter tail when the longer is not there"
        );
        assert_eq!(here("/srv/nowhere/missing.py"), None);
        let same = folder.path().join("etl.py").display().to_string();
        assert_eq!(here(&same), None, "a path that exists here stays");
    }
}

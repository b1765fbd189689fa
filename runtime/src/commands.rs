//! What each CLI verb does.

use crate::cli::{
    CellArgs, CellsCommand, CertsCommand, Cli, Command, ConnectionsCommand, DagsCommand,
    RunsCommand, StandaloneArgs, TasksCommand, UsersCommand, VariablesCommand,
};
use crate::config::Config;
use crate::control::{self, Request};
use crate::node;
use crate::output::{print_json, print_table, time};
use crate::secrets::Change;
use anyhow::{anyhow, bail, Context};
use chrono::{NaiveDate, TimeZone, Utc};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use weft_actors::Engine;
use weft_core::dag::Dag;
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::spec::DagSpec;
use weft_core::state::{DagRunState, TaskState};
use weft_core::Timestamp;
use weft_storage::vault::{Connection, Variable, Vault};
use weft_storage::Store;

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut config = Config::load(cli.global.config.as_deref(), &env)?;
    if let Some(folder) = &cli.global.dags_folder {
        config.core.dags_folder = folder.clone();
    }
    if let Some(store) = &cli.global.store {
        config.store.url = store.clone();
    }
    let json = cli.global.json;
    match cli.command {
        Command::Standalone(args) => standalone(config, args).await,
        Command::Cell(args) => cell(config, args).await,
        Command::Cells(CellsCommand::List) => cells_list(&config, json).await,
        Command::Dags(command) => dags(config, json, command).await,
        Command::Tasks(command) => tasks(config, json, command).await,
        Command::Runs(RunsCommand::List { dag_id, limit }) => {
            runs_list(config, json, dag_id, limit).await
        }
        Command::Users(command) => users(config, command).await,
        Command::Variables(command) => variables(config, json, command).await,
        Command::Connections(command) => connections(config, json, command).await,
        Command::Certs(command) => certs(&config, json, command),
        Command::Worker(args) => crate::remote::worker(config, args).await,
        Command::Workers(crate::cli::WorkersCommand::List) => {
            crate::remote::workers_list(&config, json).await
        }
        Command::RotateKey => {
            let report = change_secrets(&config, Change::RotateKey).await?;
            if json {
                println!("{report}");
            } else {
                println!(
                    "sealed {} variables and connections again under key {} ({} were already \
                     under it); retired keys: {}; keys from {}",
                    report["resealed"],
                    report["primary_key"].as_str().unwrap_or_default(),
                    report["already_current"],
                    report["retired_keys"],
                    report["keys_from"].as_str().unwrap_or_default(),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `weft certs`: the deployment's CA and the certificates it issues (no store, no node).
fn certs(config: &Config, json: bool, command: CertsCommand) -> anyhow::Result<ExitCode> {
    use weft_cells::certs::{self, Identity};
    let default_dir = || config.core.home.join("certs");
    match command {
        CertsCommand::Init { dir, force } => {
            let dir = dir.unwrap_or_else(default_dir);
            let files = certs::init(&dir, force)?;
            if json {
                print_json(&serde_json::json!({
                    "ca_cert": files.cert,
                    "ca_key": files.key,
                }));
            } else {
                println!(
                    "made the deployment CA: {} (the certificate every node and worker trusts) \
                     and {} (its key, mode 0600: keep it where certificates are issued)",
                    files.cert.display(),
                    files.key.display()
                );
            }
        }
        CertsCommand::Issue {
            worker,
            node,
            sans,
            dir,
        } => {
            let dir = dir.unwrap_or_else(default_dir);
            let identity = match (worker, node) {
                (Some(name), None) => Identity::worker(&name)?,
                (None, Some(name)) => Identity::node(&name)?,
                _ => bail!("name either --worker NAME or --node NAME"),
            };
            let issued = certs::issue(&dir, &identity, &sans)?;
            if json {
                print_json(&serde_json::json!({
                    "identity": issued.identity.uri(),
                    "cert": issued.cert,
                    "key": issued.key,
                    "replaced": issued.replaced,
                }));
            } else {
                println!(
                    "issued {}: {} and {} (its key, mode 0600){}",
                    issued.identity,
                    issued.cert.display(),
                    issued.key.display(),
                    if issued.replaced {
                        "; the earlier certificate for this name was replaced"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The variables and connections of the store, opened with this node's keys (reads need no
/// running node).
async fn local_vault(config: &Config) -> anyhow::Result<Vault> {
    let store = open(config).await?;
    let (keys, _) = crate::secrets::load_keys(config)?;
    Ok(Vault::new(store, keys))
}

/// Makes a change to variables or connections: through the running node, or here.
async fn change_secrets(config: &Config, change: Change) -> anyhow::Result<serde_json::Value> {
    control_or_local(config, Request::Secrets { change }).await
}

async fn variables(
    config: Config,
    json: bool,
    command: VariablesCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        VariablesCommand::List => {
            let variables = local_vault(&config).await?.variables().await?;
            let values: Vec<serde_json::Value> = variables
                .iter()
                .map(|v| serde_json::json!({"key": v.key, "description": v.description}))
                .collect();
            let rows: Vec<Vec<String>> = variables
                .iter()
                .map(|v| vec![v.key.clone(), v.description.clone()])
                .collect();
            print_table(json, &["key", "description"], &rows, &values);
        }
        VariablesCommand::Get {
            key,
            default,
            deserialize_json,
        } => {
            let value = match local_vault(&config).await?.variable(&key).await? {
                Some(variable) => variable.value,
                None => match default {
                    Some(default) => default,
                    None => bail!("there is no variable `{key}`; set it with `weft variables set {key} VALUE`"),
                },
            };
            if deserialize_json {
                let parsed: serde_json::Value = serde_json::from_str(&value)
                    .with_context(|| format!("variable `{key}` is not JSON"))?;
                println!("{}", serde_json::to_string_pretty(&parsed)?);
            } else {
                println!("{value}");
            }
        }
        VariablesCommand::Set {
            key,
            value,
            description,
            serialize_json,
        } => {
            if serialize_json {
                serde_json::from_str::<serde_json::Value>(&value)
                    .with_context(|| format!("the value of `{key}` is not JSON"))?;
            }
            let variable = Variable {
                key: key.clone(),
                value,
                description: description.unwrap_or_default(),
            };
            change_secrets(&config, Change::SetVariable { variable }).await?;
            println!("variable `{key}` set");
        }
        VariablesCommand::Delete { key } => {
            change_secrets(&config, Change::DeleteVariable { key: key.clone() }).await?;
            println!("variable `{key}` deleted");
        }
        VariablesCommand::Import { file } => {
            let variables = crate::secrets::parse_variables(&crate::secrets::read_import(&file)?)?;
            let count = variables.len();
            for variable in variables {
                let key = variable.key.clone();
                change_secrets(&config, Change::SetVariable { variable })
                    .await
                    .with_context(|| format!("variable `{key}` (those before it were imported)"))?;
            }
            println!("imported {count} variables");
        }
        VariablesCommand::Export { file } => {
            let variables = local_vault(&config).await?.variables().await?;
            crate::secrets::write_export(&file, &crate::secrets::export_variables(&variables))?;
            if file != std::path::Path::new("-") {
                println!(
                    "exported {} variables to {}",
                    variables.len(),
                    file.display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn connections(
    config: Config,
    json: bool,
    command: ConnectionsCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        ConnectionsCommand::List => {
            let connections = local_vault(&config).await?.connections().await?;
            let values: Vec<serde_json::Value> = connections
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "conn_id": c.conn_id, "conn_type": c.conn_type, "host": c.host,
                        "port": c.port, "description": c.description,
                    })
                })
                .collect();
            let rows: Vec<Vec<String>> = connections
                .iter()
                .map(|c| {
                    vec![
                        c.conn_id.clone(),
                        c.conn_type.clone(),
                        c.host.clone().unwrap_or_default(),
                        c.port.map(|port| port.to_string()).unwrap_or_default(),
                        c.description.clone(),
                    ]
                })
                .collect();
            let headers = ["conn_id", "conn_type", "host", "port", "description"];
            print_table(json, &headers, &rows, &values);
        }
        ConnectionsCommand::Get { conn_id, uri } => {
            let Some(connection) = local_vault(&config).await?.connection(&conn_id).await? else {
                bail!("there is no connection `{conn_id}`; add it with `weft connections set {conn_id} --conn-uri URI`");
            };
            if uri {
                println!("{}", connection.to_uri());
            } else {
                println!("{}", serde_json::to_string_pretty(&connection)?);
            }
        }
        ConnectionsCommand::Set {
            conn_id,
            conn_uri,
            conn_type,
            conn_host,
            conn_login,
            conn_password,
            conn_password_stdin,
            conn_schema,
            conn_port,
            conn_extra,
            conn_description,
        } => {
            let password = if conn_password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("cannot read the password from standard input")?;
                Some(line.trim_end_matches(['\r', '\n']).to_string())
            } else {
                conn_password
            };
            let mut connection = match conn_uri {
                Some(uri) => {
                    if conn_type.is_some()
                        || conn_host.is_some()
                        || conn_schema.is_some()
                        || conn_port.is_some()
                    {
                        bail!("give either --conn-uri or the fields (--conn-type, --conn-host, ...), not both");
                    }
                    Connection::from_uri(&conn_id, &uri)?
                }
                None => Connection {
                    conn_id: conn_id.clone(),
                    conn_type: conn_type.ok_or_else(|| {
                        anyhow!("give --conn-uri, or --conn-type with the other fields")
                    })?,
                    host: conn_host,
                    schema: conn_schema,
                    port: conn_port,
                    ..Connection::default()
                },
            };
            if conn_login.is_some() {
                connection.login = conn_login;
            }
            if password.is_some() {
                connection.password = password;
            }
            if conn_extra.is_some() {
                connection.extra = conn_extra;
            }
            connection.description = conn_description.unwrap_or_default();
            change_secrets(&config, Change::SetConnection { connection }).await?;
            println!("connection `{conn_id}` set");
        }
        ConnectionsCommand::Delete { conn_id } => {
            change_secrets(
                &config,
                Change::DeleteConnection {
                    conn_id: conn_id.clone(),
                },
            )
            .await?;
            println!("connection `{conn_id}` deleted");
        }
        ConnectionsCommand::Import { file } => {
            let connections =
                crate::secrets::parse_connections(&crate::secrets::read_import(&file)?)?;
            let count = connections.len();
            for connection in connections {
                let conn_id = connection.conn_id.clone();
                change_secrets(&config, Change::SetConnection { connection })
                    .await
                    .with_context(|| {
                        format!("connection `{conn_id}` (those before it were imported)")
                    })?;
            }
            println!("imported {count} connections");
        }
        ConnectionsCommand::Export { file } => {
            let connections = local_vault(&config).await?.connections().await?;
            crate::secrets::write_export(&file, &crate::secrets::export_connections(&connections))?;
            if file != std::path::Path::new("-") {
                println!(
                    "exported {} connections to {}",
                    connections.len(),
                    file.display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn users(config: Config, command: UsersCommand) -> anyhow::Result<ExitCode> {
    let UsersCommand::Create {
        username,
        role,
        password_stdin,
    } = command;
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        crate::web::generate_password()
    };
    let store = open(&config).await?;
    crate::web::create_user(store.as_ref(), &username, &role, &password).await?;
    if password_stdin {
        println!("created user `{username}` with role {role}");
    } else {
        println!("created user `{username}` with role {role} and password `{password}`");
    }
    Ok(ExitCode::SUCCESS)
}

/// `weft cell`: a standalone node whose engine decides only for the shards it holds by lease.
async fn cell(mut config: Config, args: CellArgs) -> anyhow::Result<ExitCode> {
    if let Some(name) = args.name {
        config.cell.name = name;
    }
    if let Some(region) = args.region {
        config.cell.region = region;
    }
    if let Some(listen) = args.listen {
        config.workers.listen = listen;
    }
    if let Some(advertise) = args.advertise {
        config.cell.advertise = advertise;
    }
    config.cell.peers.extend(args.peers);
    if config.cell.name.is_empty() {
        bail!("a cell needs a name, unique in the deployment: --name or cell.name");
    }
    if config.workers.node_name == crate::config::WorkersConfig::default().node_name {
        // A cell's certificate names the cell.
        config.workers.node_name = config.cell.name.clone();
    }
    if config.store.url.is_empty() {
        bail!(
            "a cell needs the store it shares with the other cells: --store cql://HOST:PORT/KEYSPACE \
             (or store.url); the embedded store is one machine's"
        );
    }
    config.cell.lease().map_err(|reason| anyhow!(reason))?;
    let args = StandaloneArgs {
        exit_when_idle: false,
        trigger_new_dags: false,
        bind: args.bind,
        insecure_http: args.insecure_http,
    };
    standalone(config, args).await
}

/// `weft cells list`: the cells' heartbeat rows and the shards' lease rows, from the store;
/// with a cell running on this home, also its links' round-trip times and workers.
async fn cells_list(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let list: weft_api_types::CellList =
        match control::send(&config.core.home, &control::Request::Cells).await {
            // A node that is no cell refuses: the store's rows are all there is.
            Ok(Some(response)) if response.ok => serde_json::from_value(response.result)?,
            _ => {
                let store = open(config).await?;
                weft_web::api::cells::cell_list(store.as_ref(), config.cell.shards, None, None)
                    .await?
            }
        };
    let rows: Vec<Vec<String>> = list
        .cells
        .iter()
        .map(|cell| {
            vec![
                if cell.this {
                    format!("{} (this)", cell.name)
                } else {
                    cell.name.clone()
                },
                cell.region.clone(),
                cell.address.clone(),
                cell.api.clone(),
                cell.shards.len().to_string(),
                format!("{} ms", cell.heartbeat_age_ms),
                cell.rtt_ms
                    .map_or_else(|| "-".to_string(), |rtt| format!("{rtt:.1} ms")),
                cell.workers
                    .map_or_else(|| "-".to_string(), |workers| workers.to_string()),
                cell.shards
                    .iter()
                    .map(|shard| format!("{}@{}", shard.shard, shard.epoch))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    let value = serde_json::to_value(&list)?;
    print_table(
        json,
        &[
            "CELL",
            "REGION",
            "ADDRESS",
            "API",
            "SHARDS",
            "HEARTBEAT",
            "RTT",
            "WORKERS",
            "SHARD@EPOCH",
        ],
        &rows,
        &value,
    );
    if !json && !list.unowned_shards.is_empty() {
        println!("shards without a live owner: {:?}", list.unowned_shards);
    }
    Ok(ExitCode::SUCCESS)
}

async fn standalone(config: Config, args: StandaloneArgs) -> anyhow::Result<ExitCode> {
    // Installed before the engine starts, so that /metrics sees everything it records.
    let metrics = weft_web::metrics::install_recorder();
    // The API and UI are served at once; DAG files are parsed by the scan loop below, unless
    // this run needs them before it starts (new DAGs to trigger, an exit once idle).
    let parse_first = args.trigger_new_dags || args.exit_when_idle;
    let LocalNode {
        engine,
        store,
        mut processor,
        summary,
        _lock,
    } = LocalNode::start(&config, parse_first).await?;
    eprintln!(
        "weft standalone: store {}, {} worker slots",
        if config.store.url.is_empty() {
            config.store_path().display().to_string()
        } else {
            config.store.url.clone()
        },
        config.workers.slots
    );
    let dags_folder = config.core.dags_folder.clone();
    let print_summary = move |summary: &node::SyncSummary| {
        eprintln!(
            "weft standalone: {} DAGs from {} ({} import errors)",
            summary.dags,
            dags_folder.display(),
            summary.errors,
        );
    };
    let mut first_scan_done = summary.is_some();
    if let Some(summary) = &summary {
        print_summary(summary);
    }
    eprintln!("{}", node::task_isolation(&config).summary);
    let keys = crate::secrets::key_source(&config);
    let control = tokio::spawn(control::serve(
        config.core.home.clone(),
        engine.clone(),
        keys,
    ));
    crate::web::bootstrap_admin(&config, &engine).await?;
    let bind = args.bind.clone().unwrap_or_else(|| config.web.bind.clone());
    let mut config = config;
    config.web.insecure_http |= args.insecure_http;
    let web_shutdown = Arc::new(tokio::sync::Notify::new());
    let web = crate::web::start(&config, &engine, &bind, metrics, web_shutdown.clone()).await?;
    let remote_workers = crate::remote::serve_workers(&config, &engine).await?;
    let keeper = if config.cell.name.is_empty() {
        None
    } else {
        let settings = config.cell.lease().map_err(|reason| anyhow!(reason))?;
        let identity = weft_cells::cell::CellIdentity {
            name: config.cell.name.clone(),
            region: config.cell.region.clone(),
            address: if config.cell.advertise.is_empty() {
                config.workers.listen.clone()
            } else {
                config.cell.advertise.clone()
            },
            api: format!("http://{bind}"),
        };
        eprintln!(
            "weft cell {} (region {}): {} shards, lease {} ms",
            identity.name, identity.region, settings.shards, settings.ttl_ms
        );
        Some(weft_cells::cell::CellKeeper::start(
            store.clone(),
            engine.clone(),
            identity,
            settings,
        ))
    };
    if let Some(service) = &remote_workers {
        eprintln!(
            "weft standalone: remote workers connect to {} (QUIC with mutual TLS, as node `{}`)",
            service.local_addr()?,
            config.workers.node_name
        );
    }
    let peers = if keeper.is_some() {
        crate::remote::cell_peers(&config, &engine, remote_workers.as_ref())?
    } else {
        None
    };
    if args.trigger_new_dags {
        for dag in store.dags().await? {
            if !dag.is_paused && store.runs(&dag.dag_id, 1).await?.is_empty() {
                let run = engine.trigger(&dag.dag_id, serde_json::json!({})).await?;
                eprintln!("triggered {run}");
            }
        }
    }
    let mut events = engine.subscribe();
    let mut scan = tokio::time::interval(std::time::Duration::from_millis(
        config.core.dag_dir_scan_interval_ms,
    ));
    let mut idle_check = tokio::time::interval(std::time::Duration::from_millis(500));
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = terminate.recv() => break,
            _ = scan.tick() => {
                match node::sync_dags(node::DagSink::Engine(&engine), &mut processor).await {
                    Ok(summary) if !first_scan_done => {
                        first_scan_done = true;
                        print_summary(&summary);
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "dag folder scan failed"),
                }
            }
            event = events.recv() => {
                if let Ok(weft_actors::Event::RunChanged { run, state, .. }) = event {
                    if state.is_finished() {
                        eprintln!("run {run} finished: {state}");
                    }
                }
            }
            _ = idle_check.tick(), if args.exit_when_idle => {
                if is_idle(store.as_ref()).await? {
                    break;
                }
            }
        }
    }
    eprintln!("weft standalone: shutting down");
    if let Some(peers) = &peers {
        peers.stop();
    }
    if let Some(keeper) = keeper {
        // Hand the shards over, so the other cells take them without waiting out a lease.
        keeper.leave().await;
    }
    web_shutdown.notify_one();
    // Open WebSocket streams keep a graceful shutdown waiting: give it a moment, then stop.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), web).await;
    control.abort();
    if let Some(service) = remote_workers {
        service.stop().await;
    }
    engine.shutdown().await;
    let _ = std::fs::remove_file(control::socket_path(&config.core.home));
    Ok(ExitCode::SUCCESS)
}

/// This process acting as the node of a data directory: it holds the directory's lock, so no
/// other node runs tasks from the same store.
struct LocalNode {
    engine: Engine,
    store: Arc<dyn Store>,
    processor: crate::dag_processor::DagProcessor,
    /// The first pass over the DAG folder, when `start` was asked to make it.
    summary: Option<node::SyncSummary>,
    _lock: std::fs::File,
}

impl LocalNode {
    async fn start(config: &Config, parse_first: bool) -> anyhow::Result<LocalNode> {
        std::fs::create_dir_all(&config.core.home).with_context(|| {
            format!(
                "cannot create the data directory {}",
                config.core.home.display()
            )
        })?;
        let lock_path = config.core.home.join("node.lock");
        let lock = std::fs::File::create(&lock_path)?;
        lock.try_lock().map_err(|_| {
            anyhow!(
                "another weft node is running on {} (lock {} is held): stop it, or use another WEFT_HOME",
                config.core.home.display(),
                lock_path.display()
            )
        })?;
        node::secure_home(&config.core.home)?;
        node::reap_predecessors(config);
        if !config.workers.listen.is_empty() {
            // A previous node of this home may have left attempts on remote workers: each
            // stops them within its lease, which is shorter than the link's idle timeout.
            // Retries placed sooner could run beside them.
            let wait = std::time::Duration::from_millis(config.workers.idle_timeout_ms);
            eprintln!(
                "weft: waiting {} ms before recovering runs, so that attempts a previous node                  left on remote workers have stopped",
                wait.as_millis()
            );
            tokio::time::sleep(wait).await;
        }
        let store = node::open_store(config).await?;
        node::secure_home(&config.core.home)?;
        let engine = Engine::start(store.clone(), node::engine_config(config)?).await?;
        let mut processor = node::dag_processor(config);
        let summary = if parse_first {
            Some(node::sync_dags(node::DagSink::Engine(&engine), &mut processor).await?)
        } else {
            None
        };
        Ok(LocalNode {
            engine,
            store,
            processor,
            summary,
            _lock: lock,
        })
    }
}

async fn node_is_running(config: &Config) -> bool {
    tokio::net::UnixStream::connect(control::socket_path(&config.core.home))
        .await
        .is_ok()
}

async fn is_idle(store: &dyn Store) -> anyhow::Result<bool> {
    Ok(store
        .runs_in_states(&[DagRunState::Queued, DagRunState::Running])
        .await?
        .is_empty())
}

async fn open(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let store = node::open_store(config).await?;
    // A store file the CLI created is as private as a node's.
    node::secure_home(&config.core.home)?;
    Ok(store)
}

async fn load_dag(store: &dyn Store, dag_id: &str) -> anyhow::Result<Dag> {
    let row = store.dag(dag_id).await?.ok_or_else(|| {
        anyhow!("dag `{dag_id}` is not registered: check `weft dags list` and `weft dags errors`")
    })?;
    let version = store
        .dag_version(dag_id, &row.latest_version)
        .await?
        .ok_or_else(|| anyhow!("dag `{dag_id}`: its latest version is missing from the store"))?;
    let spec: DagSpec = serde_json::from_str(&version.spec_json)?;
    Ok(Dag::from_spec(spec)?)
}

/// Open the store with the DAG folder's current definitions in it: a running node keeps them
/// in step itself; otherwise parse the folder and write them straight to the store.
async fn refresh(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let store = open(config).await?;
    if !node_is_running(config).await {
        let mut processor = node::dag_processor(config);
        node::sync_dags(node::DagSink::Store(store.as_ref()), &mut processor).await?;
    }
    Ok(store)
}

fn parse_date(text: &str) -> anyhow::Result<Timestamp> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").with_context(|| {
        format!("`{text}` is not a date: use YYYY-MM-DD or RFC 3339 (2024-01-31T00:00:00Z)")
    })?;
    Ok(Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight exists")))
}

fn parse_conf(conf: Option<&str>) -> anyhow::Result<serde_json::Value> {
    match conf {
        None => Ok(serde_json::json!({})),
        Some(text) => {
            let value: serde_json::Value = serde_json::from_str(text)
                .context("--conf must be a JSON object, e.g. '{\"key\": 1}'")?;
            if !value.is_object() {
                bail!("--conf must be a JSON object, e.g. '{{\"key\": 1}}'");
            }
            Ok(value)
        }
    }
}

async fn control_or_local(config: &Config, request: Request) -> anyhow::Result<serde_json::Value> {
    if let Some(response) = control::send(&config.core.home, &request).await? {
        return match response.error {
            None => Ok(response.result),
            Some(error) => bail!("{error}"),
        };
    }
    // No node is running: this process becomes the node for the request. A run it starts
    // is finished by the next node if this one stops first.
    // Triggers and pauses only write the store: the next node starts queued runs.
    match request {
        Request::Trigger {
            dag_id,
            conf,
            logical_date,
        } => return trigger_offline(config, &dag_id, logical_date, conf).await,
        // Remote workers are known to a running node only.
        Request::Workers => return Ok(serde_json::json!([])),
        Request::Cells => bail!("the cells are known to a running cell"),
        Request::Secrets { change } => {
            // Keys and store as the node would have them; the change is audited the same way.
            let store = open(config).await?;
            let (keys, source) = crate::secrets::load_keys(config)?;
            let vault = Vault::new(store.clone(), keys);
            let audit = crate::secrets::audit_entry(
                weft_actors::executor::sandbox::effective_uid(),
                &change,
                "cli, no node running",
            );
            let result = crate::secrets::apply(&vault, &source, change).await?;
            crate::secrets::record(store.as_ref(), audit).await;
            return Ok(result);
        }
        Request::SetPaused { dag_id, paused } => {
            let store = refresh(config).await?;
            if store.dag(&dag_id).await?.is_none() {
                bail!("dag `{dag_id}` is not registered: check `weft dags list` and `weft dags errors`");
            }
            store
                .write(vec![weft_storage::Write::SetPaused { dag_id, paused }])
                .await?;
            return Ok(serde_json::Value::Null);
        }
        _ => {}
    }
    let local = LocalNode::start(config, true).await?;
    let engine = &local.engine;
    let result = match request {
        Request::Trigger { .. }
        | Request::SetPaused { .. }
        | Request::Secrets { .. }
        | Request::Workers
        | Request::Cells => {
            unreachable!("handled above")
        }
        Request::Clear {
            run,
            task_ids,
            downstream,
            upstream,
        } => {
            let ids: Vec<&str> = task_ids.iter().map(String::as_str).collect();
            engine.clear(&run, &ids, downstream, upstream).await?;
            let state = engine.wait_for_run(&run).await?;
            serde_json::json!({ "run_state": state })
        }
        Request::Backfill { dag_id, from, to } => {
            let runs = engine.backfill(&dag_id, from, to).await?;
            serde_json::json!(runs
                .iter()
                .map(|run| run.run_id.clone())
                .collect::<Vec<_>>())
        }
    };
    local.engine.shutdown().await;
    Ok(result)
}

/// Create a queued manual run in the store; a node starts it.
async fn trigger_offline(
    config: &Config,
    dag_id: &str,
    logical_date: Option<Timestamp>,
    conf: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    use weft_core::scheduler::{Scheduler, SchedulerEffect, SchedulerInput};
    let store = refresh(config).await?;
    let dag = load_dag(store.as_ref(), dag_id).await?;
    let row = store
        .dag(dag_id)
        .await?
        .ok_or_else(|| anyhow!("dag `{dag_id}` is not registered"))?;
    let now = Utc::now();
    // The core's trigger decision, as a node's scheduler takes it: the run id, the data
    // interval, the limits on conf, and a logical date that no run holds yet.
    let mut core = Scheduler::new();
    let upserted = SchedulerInput::DagUpserted {
        dag: Arc::new(dag),
        paused: row.is_paused,
        last_automated: None,
    };
    core.handle(now, upserted);
    let at = logical_date.unwrap_or(now);
    let just_after = at + chrono::TimeDelta::microseconds(1);
    if let Some(existing) = store.previous_run(dag_id, just_after).await? {
        if existing.logical_date == at {
            let recovered = SchedulerInput::RunRecovered {
                dag_id: dag_id.to_string(),
                run_id: existing.key.run_id.to_string(),
                run_type: existing.run_type,
                logical_date: existing.logical_date,
                data_interval: existing.data_interval,
                state: existing.state,
            };
            core.handle(now, recovered);
        }
    }
    let trigger = SchedulerInput::Trigger {
        dag_id: dag_id.to_string(),
        run_id: None,
        logical_date: Some(at),
        conf,
    };
    let effects = core.handle(now, trigger);
    let created = effects.into_iter().find_map(|effect| match effect {
        SchedulerEffect::Rejected { reason, .. } => Some(Err(reason)),
        SchedulerEffect::CreateRun {
            run_id,
            run_type,
            logical_date,
            data_interval,
            conf,
            ..
        } => Some(Ok((run_id, run_type, logical_date, data_interval, conf))),
        _ => None,
    });
    let (run_id, run_type, logical_date, data_interval, conf) = match created {
        Some(Ok(created)) => created,
        Some(Err(reason)) => bail!("cannot trigger `{dag_id}`: {reason}"),
        None => bail!("cannot trigger `{dag_id}`: the scheduler decided no run"),
    };
    let run = weft_storage::RunRow {
        key: RunKey {
            dag_id: dag_id.into(),
            run_id: run_id.as_str().into(),
        },
        run_type,
        state: DagRunState::Queued,
        logical_date,
        data_interval,
        version_hash: row.latest_version,
        conf,
        seed: now.timestamp_nanos_opt().unwrap_or(0) as u64,
        created_at: now,
        started_at: None,
        ended_at: None,
    };
    store
        .write(vec![weft_storage::Write::CreateRun(run)])
        .await?;
    Ok(
        serde_json::json!({ "dag_id": dag_id, "run_id": run_id, "note": "queued; it starts when a node runs (weft standalone)" }),
    )
}

async fn dags(config: Config, json: bool, command: DagsCommand) -> anyhow::Result<ExitCode> {
    match command {
        DagsCommand::List => {
            let store = refresh(&config).await?;
            let mut rows = Vec::new();
            let mut values = Vec::new();
            for row in store.dags().await? {
                let dag = load_dag(store.as_ref(), &row.dag_id).await?;
                let spec = dag.spec();
                let schedule = schedule_text(spec);
                rows.push(vec![
                    row.dag_id.clone(),
                    row.fileloc.clone().unwrap_or_default(),
                    spec.owner.clone().unwrap_or_default(),
                    schedule.clone(),
                    row.is_paused.to_string(),
                ]);
                values.push(serde_json::json!({
                    "dag_id": row.dag_id, "fileloc": row.fileloc, "owner": spec.owner,
                    "schedule": schedule, "is_paused": row.is_paused, "tags": spec.tags,
                }));
            }
            print_table(
                json,
                &["dag_id", "fileloc", "owner", "schedule", "is_paused"],
                &rows,
                &values,
            );
            Ok(ExitCode::SUCCESS)
        }
        DagsCommand::Show { dag_id } => {
            let store = refresh(&config).await?;
            let dag = load_dag(store.as_ref(), &dag_id).await?;
            if json {
                print_json(dag.spec());
            } else {
                println!("dag {} ({})", dag_id, schedule_text(dag.spec()));
                for task_id in dag.topological_order() {
                    let upstream = dag.upstream(task_id);
                    println!("  {task_id} <- [{}]", upstream.join(", "));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DagsCommand::Trigger {
            dag_id,
            conf,
            logical_date,
        } => {
            let logical_date = logical_date.as_deref().map(parse_date).transpose()?;
            let request = Request::Trigger {
                dag_id,
                conf: parse_conf(conf.as_deref())?,
                logical_date,
            };
            let result = control_or_local(&config, request).await?;
            if json {
                print_json(&result);
            } else {
                println!(
                    "created run {}",
                    result["run_id"].as_str().unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DagsCommand::Pause { dag_id } => set_paused(&config, json, dag_id, true).await,
        DagsCommand::Unpause { dag_id } => set_paused(&config, json, dag_id, false).await,
        DagsCommand::Test {
            dag_id,
            logical_date,
            conf,
        } => {
            dags_test(
                &config,
                json,
                &dag_id,
                logical_date.as_deref(),
                conf.as_deref(),
            )
            .await
        }
        DagsCommand::Backfill {
            dag_id,
            start_date,
            end_date,
            dry_run,
            rerun_failed,
        } => {
            let from = parse_date(&start_date)?;
            let to = parse_date(&end_date)?;
            backfill(&config, json, &dag_id, from, to, dry_run, rerun_failed).await
        }
        DagsCommand::Errors => {
            let store = refresh(&config).await?;
            let errors = store.import_errors().await?;
            let rows: Vec<Vec<String>> = errors
                .iter()
                .map(|error| {
                    vec![
                        error.fileloc.clone(),
                        error.line.map(|line| line.to_string()).unwrap_or_default(),
                        error.message.lines().next().unwrap_or_default().to_string(),
                    ]
                })
                .collect();
            print_table(json, &["filepath", "line", "error"], &rows, &errors);
            Ok(ExitCode::SUCCESS)
        }
        DagsCommand::NextExecution {
            dag_id,
            num_executions,
        } => {
            let store = refresh(&config).await?;
            let dag = load_dag(store.as_ref(), &dag_id).await?;
            let mut last = store
                .latest_scheduled_run(&dag_id)
                .await?
                .map(|run| run.data_interval);
            let timetable = dag.timetable();
            let mut values = Vec::new();
            // Each next run after the previous one; with catchup off, the first is the latest
            // one due now, as the scheduler would create it.
            let now = Utc::now();
            for _ in 0..num_executions {
                let Some(info) = timetable.next_dagrun_info(last.as_ref(), now) else {
                    break;
                };
                values.push(info);
                last = Some(info.data_interval);
            }
            if json {
                print_json(&values);
            } else if values.is_empty() {
                println!("None");
            } else {
                for info in &values {
                    println!(
                        "{}  data interval [{}, {})",
                        info.logical_date.to_rfc3339(),
                        info.data_interval.start.to_rfc3339(),
                        info.data_interval.end.to_rfc3339()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn schedule_text(spec: &DagSpec) -> String {
    match &spec.schedule {
        weft_core::spec::ScheduleSpec::None => "None".to_string(),
        weft_core::spec::ScheduleSpec::Cron { expression, .. } => {
            format!("{expression} ({})", spec.timezone)
        }
        weft_core::spec::ScheduleSpec::Interval { every_ms, .. } => {
            format!("every {} s", every_ms / 1000)
        }
    }
}

async fn set_paused(
    config: &Config,
    json: bool,
    dag_id: String,
    paused: bool,
) -> anyhow::Result<ExitCode> {
    control_or_local(
        config,
        Request::SetPaused {
            dag_id: dag_id.clone(),
            paused,
        },
    )
    .await?;
    if json {
        print_json(&serde_json::json!({ "dag_id": dag_id, "is_paused": paused }));
    } else {
        println!(
            "dag {dag_id} is {}",
            if paused { "paused" } else { "unpaused" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn dags_test(
    config: &Config,
    json: bool,
    dag_id: &str,
    logical_date: Option<&str>,
    conf: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let logical_date = logical_date.map(parse_date).transpose()?;
    let conf = parse_conf(conf)?;
    let store = refresh(config).await?;
    let dag = load_dag(store.as_ref(), dag_id).await.with_context(|| {
        format!(
            "dag `{dag_id}` is not in {}: check `weft dags errors`",
            config.core.dags_folder.display()
        )
    })?;
    let scratch = Scratch::start(config, dag.spec().clone(), store.as_ref()).await?;
    let run = scratch
        .engine
        .trigger_at(dag_id, logical_date, conf)
        .await?;
    let state = scratch.engine.wait_for_run(&run).await?;
    let records = weft_core::dag_run::shown_instances(scratch.store.task_instances(&run).await?);
    scratch.engine.shutdown().await;
    let mut tasks = BTreeMap::new();
    for record in &records {
        let name = if record.key.map_index >= 0 {
            format!("{}[{}]", record.key.task_id, record.key.map_index)
        } else {
            record.key.task_id.to_string()
        };
        tasks.insert(
            name,
            serde_json::json!({ "state": record.state, "try_number": record.try_number }),
        );
    }
    if json {
        print_json(
            &serde_json::json!({ "run_id": run.run_id, "run_state": state, "tasks": tasks }),
        );
    } else {
        for (name, value) in &tasks {
            println!(
                "{name}: {} (try {})",
                value["state"].as_str().unwrap_or_default(),
                value["try_number"]
            );
        }
        println!("run {} {state}", run.run_id);
    }
    Ok(if state == DagRunState::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A throwaway engine on an in-memory store with one DAG, for `dags test` and `tasks test`:
/// it runs real tasks but records nothing in the node's store.
struct Scratch {
    engine: Engine,
    store: Arc<dyn Store>,
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A throwaway engine for `spec`, holding copies of the variables and connections of
    /// `source` (still sealed, opened with the node's keys): a test run reads them as a real
    /// run does, and what it changes stays in the scratch store.
    async fn start(config: &Config, spec: DagSpec, source: &dyn Store) -> anyhow::Result<Scratch> {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn Store> = Arc::new(weft_storage::memory::MemoryStore::new());
        for kind in [
            weft_storage::SecretKind::Variable,
            weft_storage::SecretKind::Connection,
        ] {
            let copies = source
                .secrets(kind)
                .await?
                .into_iter()
                .map(|row| weft_storage::Write::PutSecret {
                    row,
                    guard: weft_storage::SecretGuard::Any,
                })
                .collect::<Vec<_>>();
            for batch in copies.chunks(weft_storage::BATCH_WRITES_MAX) {
                store.write(batch.to_vec()).await?;
            }
        }
        let mut engine_config = node::engine_config(config)?;
        engine_config.data_dir = dir.path().to_path_buf();
        let engine = Engine::start(store.clone(), engine_config).await?;
        engine.upsert_dag(spec).await?;
        Ok(Scratch { engine, store, dir })
    }
}

async fn backfill(
    config: &Config,
    json: bool,
    dag_id: &str,
    from: Timestamp,
    to: Timestamp,
    dry_run: bool,
    rerun_failed: bool,
) -> anyhow::Result<ExitCode> {
    if from > to {
        bail!("--start-date is after --end-date");
    }
    let store = refresh(config).await?;
    let dag = load_dag(store.as_ref(), dag_id).await?;
    let planned = dag
        .timetable()
        .runs_between(from, to, weft_core::limits::BACKFILL_RUNS_MAX);
    if dry_run {
        if json {
            print_json(&planned);
        } else {
            println!("would create {} runs of {dag_id}:", planned.len());
            for info in &planned {
                println!(
                    "  {}",
                    weft_core::ids::run_id_for(
                        weft_core::state::RunType::Backfill,
                        info.logical_date
                    )
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    // With no node running, this process is the node until the backfill is done.
    let local = if node_is_running(config).await {
        None
    } else {
        Some(LocalNode::start(config, true).await?)
    };
    let keys = crate::secrets::key_source(config);
    let send = |request: Request| {
        let local = local.as_ref().map(|local| local.engine.clone());
        let keys = keys.clone();
        async move {
            match local {
                Some(engine) => crate::control::execute(&engine, &keys, request).await,
                None => control::send(&config.core.home, &request)
                    .await?
                    .ok_or_else(|| anyhow!("the node stopped during the backfill"))?,
            }
            .into_result()
        }
    };
    let mut runs: Vec<RunKey> = Vec::new();
    if rerun_failed {
        let existing = store
            .runs(dag_id, weft_core::limits::BACKFILL_RUNS_MAX)
            .await?;
        for run in existing
            .into_iter()
            .filter(|run| run.logical_date >= from && run.logical_date <= to)
        {
            if run.state != DagRunState::Failed {
                continue;
            }
            let task_ids: Vec<String> = store
                .task_instances(&run.key)
                .await?
                .into_iter()
                .filter(|record| {
                    matches!(record.state, TaskState::Failed | TaskState::UpstreamFailed)
                })
                .map(|record| record.key.task_id.to_string())
                .collect();
            send(Request::Clear {
                run: run.key.clone(),
                task_ids,
                downstream: true,
                upstream: false,
            })
            .await?;
            runs.push(run.key);
        }
    }
    let created = send(Request::Backfill {
        dag_id: dag_id.to_string(),
        from,
        to,
    })
    .await?;
    for run_id in created
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|id| id.as_str())
    {
        runs.push(RunKey {
            dag_id: dag_id.into(),
            run_id: run_id.into(),
        });
    }
    let total = runs.len();
    let mut finished = BTreeMap::new();
    while finished.len() < total {
        for run in &runs {
            if finished.contains_key(&run.run_id) {
                continue;
            }
            let state = store.run(run).await?.map(|row| row.state);
            if let Some(state) = state.filter(|state| state.is_finished()) {
                finished.insert(run.run_id.clone(), state);
                if !json {
                    progress(finished.len(), total, &run.run_id, state);
                }
            }
        }
        if finished.len() < total {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    if let Some(local) = local {
        local.engine.shutdown().await;
    }
    let failed = finished
        .values()
        .filter(|state| **state != DagRunState::Success)
        .count();
    if json {
        print_json(&serde_json::json!({ "runs": total, "failed": failed, "states": finished }));
    } else {
        eprintln!();
        println!("backfill of {dag_id}: {total} runs, {failed} failed");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn progress(done: usize, total: usize, run_id: &str, state: DagRunState) {
    const WIDTH: usize = 30;
    let filled = (WIDTH * done).checked_div(total).unwrap_or(WIDTH);
    eprint!(
        "\r[{}{}] {done}/{total} {run_id} {state}   ",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled)
    );
}

async fn tasks(config: Config, json: bool, command: TasksCommand) -> anyhow::Result<ExitCode> {
    match command {
        TasksCommand::List { dag_id } => {
            let store = refresh(&config).await?;
            let dag = load_dag(store.as_ref(), &dag_id).await?;
            let ids: Vec<&str> = dag.topological_order();
            if json {
                print_json(&ids);
            } else {
                for id in ids {
                    println!("{id}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TasksCommand::Test {
            dag_id,
            task_id,
            logical_date,
        } => tasks_test(&config, json, &dag_id, &task_id, logical_date.as_deref()).await,
        TasksCommand::Clear {
            dag_id,
            run_id,
            tasks,
            downstream,
            upstream,
        } => {
            let store = open(&config).await?;
            let run = RunKey {
                dag_id: dag_id.into(),
                run_id: run_id.into(),
            };
            let task_ids = if tasks.is_empty() {
                store
                    .task_instances(&run)
                    .await?
                    .into_iter()
                    .filter(|record| {
                        matches!(record.state, TaskState::Failed | TaskState::UpstreamFailed)
                    })
                    .map(|record| record.key.task_id.to_string())
                    .collect()
            } else {
                tasks
            };
            drop(store);
            let count = task_ids.len();
            control_or_local(
                &config,
                Request::Clear {
                    run: run.clone(),
                    task_ids,
                    downstream,
                    upstream,
                },
            )
            .await?;
            if json {
                print_json(&serde_json::json!({ "cleared": count }));
            } else {
                println!("cleared {count} task(s) of {run}");
            }
            Ok(ExitCode::SUCCESS)
        }
        TasksCommand::State {
            dag_id,
            task_id,
            run_id,
        } => {
            let store = open(&config).await?;
            let key = TaskInstanceKey::new(&dag_id, &run_id, &task_id, -1);
            let record = store
                .task_instance(&key)
                .await?
                .ok_or_else(|| anyhow!("no task instance {key}"))?;
            if json {
                print_json(&record);
            } else {
                println!("{}", record.state);
            }
            Ok(ExitCode::SUCCESS)
        }
        TasksCommand::Logs {
            dag_id,
            task_id,
            run_id,
            try_number,
            map_index,
        } => {
            let store = open(&config).await?;
            let key = TaskInstanceKey::new(&dag_id, &run_id, &task_id, map_index);
            let try_number = match try_number {
                Some(number) => number,
                None => {
                    store
                        .task_instance(&key)
                        .await?
                        .ok_or_else(|| anyhow!("no task instance {key}"))?
                        .try_number
                }
            };
            let Some(entry) = store.log_entry(&key, try_number).await? else {
                // A try that printed nothing has no log (nor a file behind it).
                let attempts = store.attempts(&key).await?;
                if !attempts
                    .iter()
                    .any(|attempt| attempt.attempt.try_number == try_number)
                {
                    bail!("no log for {key} try {try_number}");
                }
                if json {
                    print_json(&serde_json::json!({ "path": null, "truncated": false, "log": "" }));
                }
                return Ok(ExitCode::SUCCESS);
            };
            let text = std::fs::read_to_string(config.core.home.join(&entry.path))
                .with_context(|| format!("cannot read the log file {}", entry.path))?;
            if json {
                print_json(
                    &serde_json::json!({ "path": entry.path, "truncated": entry.truncated, "log": text }),
                );
            } else {
                print!("{text}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Run one task alone, ignoring its dependencies, on a throwaway in-memory store.
async fn tasks_test(
    config: &Config,
    json: bool,
    dag_id: &str,
    task_id: &str,
    logical_date: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let logical_date = logical_date.map(parse_date).transpose()?;
    let store = refresh(config).await?;
    let dag = load_dag(store.as_ref(), dag_id).await?;
    let mut task = dag
        .task(task_id)
        .cloned()
        .ok_or_else(|| anyhow!("dag `{dag_id}` has no task `{task_id}`"))?;
    task.upstream.clear();
    task.retries = 0;
    task.mapping = None;
    let mut spec = dag.spec().clone();
    spec.tasks = vec![task];
    spec.task_groups.clear();
    spec.schedule = weft_core::spec::ScheduleSpec::None;
    let scratch = Scratch::start(config, spec, store.as_ref()).await?;
    let run = scratch
        .engine
        .trigger_at(dag_id, logical_date, serde_json::json!({}))
        .await?;
    let state = scratch.engine.wait_for_run(&run).await?;
    let key = TaskInstanceKey::new(dag_id, &run.run_id, task_id, -1);
    let record = scratch.store.task_instance(&key).await?;
    let log = match scratch.store.log_entry(&key, 1).await? {
        Some(entry) => {
            std::fs::read_to_string(scratch.dir.path().join(entry.path)).unwrap_or_default()
        }
        None => String::new(),
    };
    scratch.engine.shutdown().await;
    let task_state = record.map(|record| record.state).unwrap_or(TaskState::None);
    if json {
        print_json(&serde_json::json!({ "state": task_state, "log": log }));
    } else {
        print!("{log}");
        println!("{task_id}: {task_state}");
    }
    Ok(if state == DagRunState::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn runs_list(
    config: Config,
    json: bool,
    dag_id: Option<String>,
    limit: usize,
) -> anyhow::Result<ExitCode> {
    let store = open(&config).await?;
    let dag_ids = match dag_id {
        Some(dag_id) => vec![dag_id],
        None => store
            .dags()
            .await?
            .into_iter()
            .map(|row| row.dag_id)
            .collect(),
    };
    let mut runs = Vec::new();
    for dag_id in dag_ids {
        runs.extend(store.runs(&dag_id, limit).await?);
    }
    runs.sort_by_key(|run| std::cmp::Reverse(run.logical_date));
    runs.truncate(limit);
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|run| {
            vec![
                run.key.dag_id.to_string(),
                run.key.run_id.to_string(),
                run.state.to_string(),
                run.logical_date.to_rfc3339(),
                time(run.started_at),
                time(run.ended_at),
            ]
        })
        .collect();
    print_table(
        json,
        &[
            "dag_id",
            "run_id",
            "state",
            "logical_date",
            "start_date",
            "end_date",
        ],
        &rows,
        &runs,
    );
    Ok(ExitCode::SUCCESS)
}

//! Assembly of a node: the one place that picks a concrete store backend, starts the engine
//! on it, and keeps the registered DAGs in step with the DAG folder.

use crate::config::Config;
use crate::config::Isolation;
use crate::dag_processor::DagProcessor;
use crate::store_url::StoreUrl;
use anyhow::Context;
use std::sync::Arc;
use weft_actors::executor::sandbox::{SandboxSpec, TaskIdentity};
use weft_actors::{Engine, EngineConfig};
use weft_storage::{ImportErrorRow, Store, Write};

/// Open the store the configuration names.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let url = if config.store.url.is_empty() {
        StoreUrl::Sqlite(config.store_path())
    } else {
        config.store.url.parse::<StoreUrl>()?
    };
    match url {
        StoreUrl::Sqlite(path) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).with_context(|| {
                    format!("cannot create the data directory {}", parent.display())
                })?;
            }
            let synchronous = match config.store.synchronous.as_str() {
                "full" => weft_storage::sqlite::Synchronous::Full,
                "normal" => weft_storage::sqlite::Synchronous::Normal,
                other => anyhow::bail!("store.synchronous is `{other}`: use `full` or `normal`"),
            };
            let options = weft_storage::sqlite::SqliteOptions {
                synchronous,
                ..Default::default()
            };
            let store = weft_storage::sqlite::SqliteStore::open(&path, options)
                .with_context(|| format!("cannot open the store {}", path.display()))?;
            Ok(Arc::new(store))
        }
        StoreUrl::Cql(options) => {
            let keyspace = options.keyspace.clone();
            let store = weft_storage::cql::CqlStore::connect(options)
                .await
                .with_context(|| format!("cannot open the CQL store (keyspace `{keyspace}`)"))?;
            Ok(Arc::new(store))
        }
    }
}

/// The engine's settings from `config`, with the keys of Variables and Connections (the key
/// file is created on first use).
pub fn engine_config(config: &Config) -> anyhow::Result<EngineConfig> {
    let mut engine = EngineConfig::new(&config.core.home);
    engine.secret_keys = crate::secrets::load_keys(config)?.0;
    engine.worker_slots = config.workers.slots;
    engine.worker_queues = config.workers.queues.clone();
    engine.log_bytes_max = config.workers.log_bytes_max;
    let isolation = task_isolation(config);
    engine.python = python_runners(config, &isolation);
    engine.sandbox = isolation.shell;
    engine.sandbox_full = isolation.full;
    if !config.cell.name.is_empty() {
        engine.ownership = Some(std::sync::Arc::new(weft_actors::Ownership::for_cell(
            config.cell.shards,
            &config.cell.name,
        )));
    }
    Ok(engine)
}

/// The warm Python runners `config` asks for, confined as `isolation` says.
pub fn python_runners(
    config: &Config,
    isolation: &TaskIsolation,
) -> weft_actors::executor::python::PythonRunnerConfig {
    let mut python = weft_actors::executor::python::PythonRunnerConfig::from_env();
    python.python = python_interpreter(config);
    python.processes = config.python.runners;
    python.sandbox = isolation.python.clone();
    python
}

/// Address space a DAG file parser may use unless the sandbox sets a memory limit: room for
/// heavy imports, a bound on a file that allocates without end.
pub const PARSE_MEMORY_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;

/// How task processes are confined on this node, and the start-up line that says so.
#[derive(Debug, Clone)]
pub struct TaskIsolation {
    pub shell: Option<SandboxSpec>,
    /// The full sandbox, for tasks that ask for it (`executor_config`).
    pub full: Option<SandboxSpec>,
    pub python: Option<SandboxSpec>,
    /// What is in force, and why not more where the machine cannot give it.
    pub summary: String,
}

/// The isolation `config` asks for, as far as this machine and this node's user can give it.
pub fn task_isolation(config: &Config) -> TaskIsolation {
    let level = config.sandbox.level();
    let root = weft_actors::executor::sandbox::is_root();
    let identity = TaskIdentity {
        uid: config.sandbox.task_uid,
        gid: config.sandbox.task_gid,
    };
    let task_dirs = task_isolation_dirs(config);
    let limits = SandboxSpec {
        memory_bytes_max: config.sandbox.memory_bytes_max,
        cpu_millis_max: config.sandbox.cpu_millis_max,
        pids_max: config.sandbox.pids_max,
        ..SandboxSpec::default()
    };
    let full = SandboxSpec {
        namespaces: true,
        run_as: root.then_some(identity),
        hidden_paths: vec![config.core.home.clone()],
        readable_paths: vec![
            config.core.dags_folder.clone(),
            weft_actors::executor::python::PythonRunnerConfig::from_env().python_path,
        ],
        task_dirs: Some(task_dirs.clone()),
        share_network: config.sandbox.share_network,
        ..limits.clone()
    };
    let (shell, mut summary) = match level {
        Isolation::None => {
            let limited = limits != SandboxSpec::default();
            let summary = "isolation none: tasks run as the node's user (sandbox.isolation)";
            (limited.then_some(limits), summary.to_string())
        }
        Isolation::User if !root => (
            None,
            format!(
                "isolation none: tasks run as the node's user, because the node is not root \
                 (uid {}) and cannot give them a user of their own; run it as root, or set \
                 sandbox.isolation = \"full\" for namespaces",
                weft_actors::executor::sandbox::effective_uid()
            ),
        ),
        Isolation::User => (
            Some(SandboxSpec {
                run_as: Some(identity),
                task_dirs: Some(task_dirs),
                ..limits
            }),
            format!(
                "isolation user: tasks run as uid {}:{}, not the node's; the host's files and \
                 network as that user sees them",
                identity.uid, identity.gid
            ),
        ),
        Isolation::Full => (
            Some(full.clone()),
            format!(
                "isolation full: {}{}; {}",
                if root {
                    format!("uid {}:{}, ", identity.uid, identity.gid)
                } else {
                    String::new()
                },
                if config.sandbox.share_network {
                    "namespaces with the host's network, read-only root, home hidden"
                } else {
                    "namespaces without network, read-only root, home hidden"
                },
                weft_actors::executor::sandbox::support()
            ),
        ),
    };
    let python = match &shell {
        Some(spec) if spec.run_as.is_some() || spec.namespaces => {
            match python_runs_confined(&python_interpreter(config), spec) {
                Ok(()) => Some(spec.clone()),
                Err(reason) => {
                    summary.push_str(&format!(
                        "; python tasks run as the node's user: {reason}; install Python where \
                         uid {} can read it, or set python.interpreter",
                        config.sandbox.task_uid
                    ));
                    None
                }
            }
        }
        other => other.clone(),
    };
    TaskIsolation {
        shell,
        full: weft_actors::executor::sandbox::support()
            .bwrap
            .is_some()
            .then_some(full),
        python,
        summary,
    }
}

/// `python.interpreter` as the node finds it on its PATH. Task users then run that very file:
/// looked up as the task user, `python3` may skip an interpreter it cannot reach (pyenv's, under
/// `/root`) and find another one, without the packages the node's has.
fn python_interpreter(config: &Config) -> String {
    let name = &config.python.interpreter;
    if name.contains('/') {
        return name.clone();
    }
    weft_actors::executor::sandbox::find_program(name)
        .map(|found| found.display().to_string())
        .unwrap_or_else(|| name.clone())
}

/// Whether `python` starts (and finds its standard library) confined as `spec` says. A node
/// asks several times at start (the engine, the DAG processor, the start-up line): the answer
/// is kept per interpreter and user, so the probe process starts once.
fn python_runs_confined(python: &str, spec: &SandboxSpec) -> Result<(), String> {
    type Probes = std::collections::HashMap<(String, Option<TaskIdentity>), Result<(), String>>;
    static PROBES: std::sync::Mutex<Option<Probes>> = std::sync::Mutex::new(None);
    let key = (python.to_string(), spec.run_as);
    let mut probes = PROBES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    probes
        .get_or_insert_with(Default::default)
        .entry(key)
        .or_insert_with(|| probe_python(python, spec))
        .clone()
}

fn probe_python(python: &str, spec: &SandboxSpec) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(python);
    command
        .args(["-c", "import json"])
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(identity) = spec.run_as {
        command.uid(identity.uid).gid(identity.gid);
    }
    let output = command
        .output()
        .map_err(|e| format!("the task user cannot start {python}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or("no message").to_string();
        Err(format!("{python} does not start as the task user ({last})"))
    }
}

/// Makes the node's home private: the directory 0700 (its store, secrets, logs and control
/// socket are then out of reach of other users, task users included) and the store's files
/// 0600.
pub fn secure_home(home: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(home)
        .with_context(|| format!("cannot create the data directory {}", home.display()))?;
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private (mode 0700)", home.display()))?;
    for name in ["weft.db", "weft.db-wal", "weft.db-shm"] {
        let path = home.join(name);
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot make {} private (mode 0600)", path.display()))?;
        }
    }
    Ok(())
}

/// Kills the task processes a previous node of this home left running (see
/// `executor::lineage`), after marking this node's own, and removes what dead nodes left in the
/// attempts' cgroups and working directories. Call it holding the home's lock and before the
/// engine recovers runs.
pub fn reap_predecessors(config: &Config) {
    use weft_actors::executor::lineage;
    let home_id = lineage::home_id(&config.core.home);
    let instance = format!(
        "{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    lineage::mark_task_processes(&home_id, &instance);
    let task_dirs = task_isolation_dirs(config);
    let reaped = lineage::reap_predecessors(&home_id, Some(&task_dirs));
    if reaped.processes > 0 || reaped.cgroups > 0 || reaped.task_dirs > 0 {
        eprintln!(
            "killed {} task processes and removed {} attempt cgroups and {} working directories \
             left by a previous node",
            reaped.processes, reaped.cgroups, reaped.task_dirs
        );
    }
}

/// Where attempts get their working directories (`sandbox.task_dirs`).
fn task_isolation_dirs(config: &Config) -> std::path::PathBuf {
    if config.sandbox.task_dirs.as_os_str().is_empty() {
        std::env::temp_dir().join("weft-tasks")
    } else {
        config.sandbox.task_dirs.clone()
    }
}

pub fn dag_processor(config: &Config) -> DagProcessor {
    let mut processor = crate::dag_processor::DagProcessorConfig::new(&config.core.dags_folder);
    processor.python = python_interpreter(config);
    processor.parse_timeout_ms = config.core.dag_file_parse_timeout_ms;
    // DAG files are parsed as Python tasks run, without network and with a memory limit.
    processor.sandbox = task_isolation(config).python.map(|spec| SandboxSpec {
        share_network: false,
        memory_bytes_max: Some(spec.memory_bytes_max.unwrap_or(PARSE_MEMORY_BYTES_MAX)),
        ..spec
    });
    DagProcessor::new(processor)
}

/// What one pass over the DAG folder changed.
#[derive(Debug, Default)]
pub struct SyncSummary {
    pub dags: usize,
    pub changed: usize,
    pub errors: usize,
}

/// Where parsed DAGs go: a running engine, or straight into the store when no node runs.
#[derive(Clone, Copy)]
pub enum DagSink<'a> {
    Engine(&'a Engine),
    Store(&'a dyn Store),
}

impl DagSink<'_> {
    fn store(&self) -> &dyn Store {
        match self {
            DagSink::Engine(engine) => engine.store().as_ref(),
            DagSink::Store(store) => *store,
        }
    }

    async fn register(&self, spec: weft_core::spec::DagSpec) -> anyhow::Result<bool> {
        match self {
            DagSink::Engine(engine) => {
                Ok(engine.upsert_dag(spec).await? != weft_actors::UpsertOutcome::Unchanged)
            }
            DagSink::Store(store) => {
                let dag = weft_core::dag::Dag::from_spec(spec)?;
                let version_hash = dag.spec().version_hash();
                let current = store.dag(dag.dag_id()).await?;
                if current
                    .as_ref()
                    .is_some_and(|row| row.latest_version == version_hash)
                {
                    return Ok(false);
                }
                store
                    .write(vec![Write::PutDag {
                        version: weft_storage::DagVersionRow {
                            dag_id: dag.dag_id().to_string(),
                            version_hash,
                            spec_json: serde_json::to_string(dag.spec())?,
                            created_at: chrono::Utc::now(),
                        },
                        fileloc: dag.spec().fileloc.clone(),
                        paused_if_new: dag.spec().is_paused_upon_creation.unwrap_or(false),
                    }])
                    .await?;
                Ok(true)
            }
        }
    }
}

/// Parse the changed DAG files and register their DAGs. A file that fails becomes an import
/// error; the DAGs it defined before keep their last good version.
pub async fn sync_dags(
    sink: DagSink<'_>,
    processor: &mut DagProcessor,
) -> anyhow::Result<SyncSummary> {
    let scan = processor
        .scan()
        .await
        .context("cannot scan the DAG folder")?;
    let mut summary = SyncSummary::default();
    let mut writes = Vec::new();
    for (file, dags) in scan.parsed {
        let fileloc = file.display().to_string();
        writes.push(Write::ClearImportError {
            fileloc: fileloc.clone(),
        });
        for spec in dags {
            summary.dags += 1;
            let dag_id = spec.dag_id.clone();
            match sink.register(spec).await {
                Ok(false) => {}
                Ok(true) => summary.changed += 1,
                Err(error) => {
                    summary.errors += 1;
                    writes.push(import_error(
                        &fileloc,
                        None,
                        format!("dag `{dag_id}`: {error}"),
                    ));
                }
            }
        }
    }
    for file in scan.removed_files {
        writes.push(Write::ClearImportError {
            fileloc: file.display().to_string(),
        });
    }
    for error in scan.errors {
        summary.errors += 1;
        tracing::warn!(file = %error.file.display(), line = ?error.line, message = %error.message, "dag file failed to import");
        writes.push(import_error(
            &error.file.display().to_string(),
            error.line,
            error.message,
        ));
    }
    if !writes.is_empty() {
        sink.store().write(writes).await?;
    }
    Ok(summary)
}

fn import_error(fileloc: &str, line: Option<u32>, message: String) -> Write {
    Write::PutImportError(ImportErrorRow {
        fileloc: fileloc.to_string(),
        line,
        message,
        at: chrono::Utc::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Task users run the interpreter the node found: a bare name is resolved on the node's
    /// PATH once, so that a task user's lookup cannot land on another Python.
    #[test]
    fn the_python_interpreter_is_the_one_on_the_nodes_path() {
        let mut config = Config::default();
        config.python.interpreter = "sh".to_string();
        let resolved = python_interpreter(&config);
        assert!(std::path::Path::new(&resolved).is_absolute(), "{resolved}");
        assert!(resolved.ends_with("/sh"), "{resolved}");
        config.python.interpreter = "/opt/python/bin/python3".to_string();
        assert_eq!(python_interpreter(&config), "/opt/python/bin/python3");
        config.python.interpreter = "no-such-python-anywhere".to_string();
        assert_eq!(python_interpreter(&config), "no-such-python-anywhere");
    }

    /// The start-up line of each level reads as one sentence (no wrapped source lines in it).
    #[test]
    fn the_isolation_line_says_what_is_in_force() {
        for (level, said) in [
            (Isolation::None, "isolation none"),
            (Isolation::User, "isolation "),
            (Isolation::Full, "isolation full"),
        ] {
            let mut config = Config::default();
            config.sandbox.isolation = level;
            let summary = task_isolation(&config).summary;
            assert!(summary.starts_with(said), "{summary}");
            assert!(!summary.contains("  "), "{summary}");
            assert!(!summary.contains('\n'), "{summary}");
        }
    }
}

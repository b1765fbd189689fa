//! Assembly of a node: the one place that picks a concrete store backend, starts the engine
//! on it, and keeps the registered DAGs in step with the DAG folder.

use crate::config::Config;
use crate::dag_processor::DagProcessor;
use crate::store_url::StoreUrl;
use anyhow::Context;
use std::sync::Arc;
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

pub fn engine_config(config: &Config) -> EngineConfig {
    let mut engine = EngineConfig::new(&config.core.home);
    engine.worker_slots = config.workers.slots;
    engine.log_bytes_max = config.workers.log_bytes_max;
    engine.python.python = config.python.interpreter.clone();
    engine.python.processes = config.python.runners;
    if config.sandbox.enabled {
        engine.sandbox = Some(weft_actors::executor::sandbox::SandboxSpec {
            namespaces: true,
            memory_bytes_max: config.sandbox.memory_bytes_max,
            cpu_millis_max: config.sandbox.cpu_millis_max,
            pids_max: config.sandbox.pids_max,
            ..Default::default()
        });
    }
    engine
}

pub fn dag_processor(config: &Config) -> DagProcessor {
    let mut processor = crate::dag_processor::DagProcessorConfig::new(&config.core.dags_folder);
    processor.python = config.python.interpreter.clone();
    processor.parse_timeout_ms = config.core.dag_file_parse_timeout_ms;
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

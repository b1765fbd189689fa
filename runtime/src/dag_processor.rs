//! The DAG processor: finds the Python DAG files of a folder, parses the ones that changed in
//! `python -m weft.processor` subprocesses (isolated, with a timeout) and validates their DAGs
//! with the core, turning every problem into an import error of its file.
//!
//! Invariants: a file is re-parsed only when its content hash changes (mtime and size only
//! decide whether to read it); a dag id belongs to at most one file, and a file keeps its ids
//! while it is broken, so the last good version of its DAGs keeps running and no other file
//! can take them over.

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::Semaphore;
use weft_core::dag::{Dag, DagError};
use weft_core::spec::DagSpec;

/// How long one file may take to import before it is killed.
pub const PARSE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Parser subprocesses running at once.
pub const PARSE_CONCURRENCY_DEFAULT: usize = 4;
/// Files one parser subprocess imports, one after the other, at most. Starting Python and
/// importing the SDK costs far more than importing a small DAG file, so a cold scan of many
/// files shares that start among a batch; the SDK's loader gives each file a fresh module.
pub const PARSE_BATCH_FILES_MAX: usize = 50;
/// Largest DAG file read; larger files are import errors.
pub const FILE_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// Largest answer read from one parser subprocess (the serialized DAGs of one file).
pub const OUTPUT_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Bytes of a parser's stderr kept to explain a crash.
pub const STDERR_BYTES_KEPT: u64 = 8 * 1024;
/// Python files a DAGs folder may hold.
pub const FILES_MAX: usize = 100_000;
/// Folder nesting followed below the DAGs folder (also stops symlink loops).
pub const FOLDER_DEPTH_MAX: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the dags folder {path}: {source}; check that it exists and is readable")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the dags folder {path} holds more than {FILES_MAX} python files; point it at a smaller folder")]
    TooManyFiles { path: PathBuf },
}

/// Where the DAG files are and how to parse them.
#[derive(Debug, Clone)]
pub struct DagProcessorConfig {
    pub dags_folder: PathBuf,
    /// The interpreter (`WEFT_PYTHON`, default `python3`).
    pub python: String,
    /// Folder holding the `weft` package (`WEFT_PYTHON_PATH`, default the SDK of this tree).
    pub python_path: PathBuf,
    pub parse_timeout_ms: u64,
    pub parse_concurrency: usize,
    /// How parsers are confined: DAG files are DAG authors' code, as trusted as their tasks and
    /// no more (the node sets the Python tasks' isolation, without network, with a memory
    /// limit).
    pub sandbox: Option<weft_actors::executor::sandbox::SandboxSpec>,
}

impl DagProcessorConfig {
    /// Defaults, with the interpreter and SDK location from the environment.
    pub fn new(dags_folder: impl Into<PathBuf>) -> DagProcessorConfig {
        DagProcessorConfig {
            dags_folder: dags_folder.into(),
            python: std::env::var("WEFT_PYTHON").unwrap_or_else(|_| "python3".to_string()),
            python_path: std::env::var_os("WEFT_PYTHON_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk/python"))
                }),
            parse_timeout_ms: PARSE_TIMEOUT_MS_DEFAULT,
            parse_concurrency: PARSE_CONCURRENCY_DEFAULT,
            sandbox: None,
        }
    }
}

/// A DAG file that could not be loaded: where, why, and what kind of problem it is (`syntax`,
/// `exception`, `cycle`, `duplicate_dag_id`, `duplicate_task_id`, `bad_schedule`,
/// `unknown_timezone`, `timeout`, `invalid_dag`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    pub file: PathBuf,
    pub line: Option<u32>,
    pub kind: String,
    pub message: String,
}

impl ImportError {
    fn new(file: &Path, kind: &str, message: impl Into<String>) -> ImportError {
        ImportError {
            file: file.to_path_buf(),
            line: None,
            kind: kind.to_string(),
            message: message.into(),
        }
    }
}

/// What one scan found. Files not mentioned did not change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanResult {
    /// Files that now load, with all of their DAGs (an empty list: the file defines none any
    /// more). Replace every DAG that came from such a file.
    pub parsed: Vec<(PathBuf, Vec<DagSpec>)>,
    /// Files that changed and no longer load. Keep the last good version of their DAGs.
    pub errors: Vec<ImportError>,
    /// Files that are gone: drop their DAGs.
    pub removed_files: Vec<PathBuf>,
}

impl ScanResult {
    // Part of the processor's API; the node does not ask it yet.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.parsed.is_empty() && self.errors.is_empty() && self.removed_files.is_empty()
    }
}

/// What the processor remembers about one file between scans.
#[derive(Debug, Clone)]
struct FileRecord {
    modified: Option<SystemTime>,
    size: u64,
    hash: [u8; 32],
    /// Dag ids this file owns (kept while the file is broken).
    owned: BTreeSet<String>,
    /// The DAGs of the last parse that a clash of dag ids kept out; retried every scan.
    blocked: Option<Vec<DagSpec>>,
    error: Option<ImportError>,
}

/// How a file looks compared with the last scan.
enum Survey {
    Unchanged,
    /// Touched but the same bytes: remember the new mtime, parse nothing.
    SameContent {
        modified: Option<SystemTime>,
        size: u64,
    },
    Changed {
        modified: Option<SystemTime>,
        size: u64,
        hash: [u8; 32],
        mentions_dag: bool,
    },
    Unreadable(ImportError),
}

/// Scans a DAGs folder and re-parses only what changed. See the module docs for invariants.
#[derive(Debug)]
pub struct DagProcessor {
    config: DagProcessorConfig,
    files: BTreeMap<PathBuf, FileRecord>,
    /// dag id -> the file that defines it.
    owners: BTreeMap<String, PathBuf>,
}

impl DagProcessor {
    pub fn new(config: DagProcessorConfig) -> DagProcessor {
        DagProcessor {
            config,
            files: BTreeMap::new(),
            owners: BTreeMap::new(),
        }
    }

    /// Every file that currently fails to load, changed this scan or not.
    // For the UI's import-error list; the node does not ask it yet.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn import_errors(&self) -> Vec<ImportError> {
        self.files
            .values()
            .filter_map(|record| record.error.clone())
            .collect()
    }

    /// The file that defines `dag_id`, if any.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn owner_of(&self, dag_id: &str) -> Option<&Path> {
        self.owners.get(dag_id).map(PathBuf::as_path)
    }

    /// Looks at every `*.py` file of the folder and parses those whose content changed.
    pub async fn scan(&mut self) -> Result<ScanResult, Error> {
        let folder = self.config.dags_folder.clone();
        let known: BTreeMap<PathBuf, (Option<SystemTime>, u64, [u8; 32])> = self
            .files
            .iter()
            .map(|(path, record)| (path.clone(), (record.modified, record.size, record.hash)))
            .collect();
        let surveys = tokio::task::spawn_blocking(move || survey_folder(&folder, &known))
            .await
            .expect("the folder survey does not panic")?;

        let mut result = ScanResult::default();
        let present: BTreeSet<&PathBuf> = surveys.keys().collect();
        let removed: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|path| !present.contains(path))
            .cloned()
            .collect();
        for path in removed {
            let record = self.files.remove(&path).expect("removed file was known");
            self.release(&record.owned);
            result.removed_files.push(path);
        }

        let mut to_parse = Vec::new();
        let mut outcomes: BTreeMap<PathBuf, Result<Vec<DagSpec>, ImportError>> = BTreeMap::new();
        let mut new_stats = BTreeMap::new();
        for (path, survey) in surveys {
            match survey {
                Survey::Unchanged => {}
                Survey::SameContent { modified, size } => {
                    if let Some(record) = self.files.get_mut(&path) {
                        record.modified = modified;
                        record.size = size;
                    }
                }
                Survey::Changed {
                    modified,
                    size,
                    hash,
                    mentions_dag,
                } => {
                    new_stats.insert(path.clone(), (modified, size, hash));
                    if mentions_dag {
                        to_parse.push(path);
                    } else {
                        outcomes.insert(path, Ok(Vec::new()));
                    }
                }
                Survey::Unreadable(error) => {
                    outcomes.insert(path, Err(error));
                }
            }
        }
        outcomes.extend(self.parse_all(to_parse).await);
        self.apply(outcomes, new_stats, &mut result);
        Ok(result)
    }

    /// Parses files concurrently (at most `parse_concurrency` subprocesses at once), in
    /// batches of at most `PARSE_BATCH_FILES_MAX` files per subprocess.
    async fn parse_all(
        &self,
        paths: Vec<PathBuf>,
    ) -> BTreeMap<PathBuf, Result<Vec<DagSpec>, ImportError>> {
        let concurrency = self.config.parse_concurrency.max(1);
        let batch_files = paths
            .len()
            .div_ceil(concurrency)
            .clamp(1, PARSE_BATCH_FILES_MAX);
        let permits = Arc::new(Semaphore::new(concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for batch in paths.chunks(batch_files) {
            let (config, permits, batch) = (self.config.clone(), permits.clone(), batch.to_vec());
            tasks.spawn(async move {
                let _permit = permits
                    .acquire_owned()
                    .await
                    .expect("semaphore is never closed");
                let mut outcomes = parse_batch(&config, &batch).await;
                for (path, outcome) in &mut outcomes {
                    if let Ok(dags) = outcome {
                        *outcome = validate(path, std::mem::take(dags));
                    }
                }
                outcomes
            });
        }
        let mut outcomes = BTreeMap::new();
        while let Some(joined) = tasks.join_next().await {
            outcomes.extend(joined.expect("a parse task does not panic"));
        }
        outcomes
    }

    /// Folds this scan's parse outcomes into the records and the result, settling dag id
    /// ownership in path order.
    fn apply(
        &mut self,
        outcomes: BTreeMap<PathBuf, Result<Vec<DagSpec>, ImportError>>,
        new_stats: BTreeMap<PathBuf, (Option<SystemTime>, u64, [u8; 32])>,
        result: &mut ScanResult,
    ) {
        // Files that parsed give up their ids first, so a dag moving between two files that
        // both changed this scan is not a clash.
        for (path, outcome) in &outcomes {
            if outcome.is_ok() {
                if let Some(record) = self.files.get(path) {
                    let owned = record.owned.clone();
                    self.release(&owned);
                }
            }
        }
        let retried: Vec<(PathBuf, Vec<DagSpec>)> = self
            .files
            .iter()
            .filter(|(path, _)| !outcomes.contains_key(*path))
            .filter_map(|(path, record)| record.blocked.clone().map(|dags| (path.clone(), dags)))
            .collect();
        let mut claims: BTreeMap<PathBuf, (Vec<DagSpec>, bool)> = retried
            .into_iter()
            .map(|(path, dags)| (path, (dags, false)))
            .collect();

        for (path, outcome) in outcomes {
            let (modified, size, hash) =
                new_stats.get(&path).copied().unwrap_or((None, 0, [0; 32]));
            let record = self
                .files
                .entry(path.clone())
                .or_insert_with(|| FileRecord {
                    modified,
                    size,
                    hash,
                    owned: BTreeSet::new(),
                    blocked: None,
                    error: None,
                });
            if new_stats.contains_key(&path) {
                (record.modified, record.size, record.hash) = (modified, size, hash);
            }
            match outcome {
                Ok(dags) => {
                    claims.insert(path, (dags, true));
                }
                Err(error) => {
                    record.blocked = None;
                    record.error = Some(error.clone());
                    result.errors.push(error);
                }
            }
        }

        for (path, (dags, changed)) in claims {
            let clash = dags.iter().find_map(|dag| {
                let owner = self.owners.get(&dag.dag_id)?;
                (owner != &path).then(|| (dag.dag_id.clone(), owner.clone()))
            });
            let record = self.files.get_mut(&path).expect("claiming file is known");
            match clash {
                Some((dag_id, owner)) => {
                    let error = ImportError::new(
                        &path,
                        "duplicate_dag_id",
                        format!(
                            "dag id `{dag_id}` is already defined in {}; rename one of them",
                            owner.display()
                        ),
                    );
                    record.blocked = Some(dags);
                    record.error = Some(error.clone());
                    if changed {
                        result.errors.push(error);
                    }
                }
                None => {
                    let had_something = !record.owned.is_empty() || record.error.is_some();
                    record.owned = dags.iter().map(|dag| dag.dag_id.clone()).collect();
                    record.blocked = None;
                    record.error = None;
                    for dag_id in &record.owned {
                        self.owners.insert(dag_id.clone(), path.clone());
                    }
                    // A helper module that never defined a DAG is not news.
                    if !dags.is_empty() || had_something {
                        result.parsed.push((path, dags));
                    }
                }
            }
        }
        result.errors.sort_by(|a, b| a.file.cmp(&b.file));
    }

    fn release(&mut self, dag_ids: &BTreeSet<String>) {
        for dag_id in dag_ids {
            self.owners.remove(dag_id);
        }
    }
}

/// Lists the folder's Python files and compares each with what was known about it.
fn survey_folder(
    folder: &Path,
    known: &BTreeMap<PathBuf, (Option<SystemTime>, u64, [u8; 32])>,
) -> Result<BTreeMap<PathBuf, Survey>, Error> {
    let folder = std::fs::canonicalize(folder).map_err(|source| Error::Folder {
        path: folder.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    collect_python_files(&folder, 0, &mut files).map_err(|source| Error::Folder {
        path: folder.clone(),
        source,
    })?;
    if files.len() > FILES_MAX {
        return Err(Error::TooManyFiles { path: folder });
    }
    Ok(files
        .into_iter()
        .map(|path| {
            let survey = survey_file(&path, known.get(&path));
            (path, survey)
        })
        .collect())
}

fn collect_python_files(
    folder: &Path,
    depth: usize,
    files: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    if depth > FOLDER_DEPTH_MAX || files.len() > FILES_MAX {
        return Ok(());
    }
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Hidden folders and bytecode caches never hold DAG files.
        if name.starts_with('.') || name == "__pycache__" {
            continue;
        }
        let path = entry.path();
        let Ok(metadata) = std::fs::metadata(&path) else {
            continue;
        };
        if metadata.is_dir() {
            collect_python_files(&path, depth + 1, files)?;
        } else if metadata.is_file() && name.ends_with(".py") {
            files.push(path);
        }
    }
    Ok(())
}

fn survey_file(path: &Path, known: Option<&(Option<SystemTime>, u64, [u8; 32])>) -> Survey {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) => {
            return Survey::Unreadable(ImportError::new(path, "unreadable", error.to_string()))
        }
    };
    let (modified, size) = (metadata.modified().ok(), metadata.len());
    if let Some((known_modified, known_size, _)) = known {
        if *known_modified == modified && *known_size == size && modified.is_some() {
            return Survey::Unchanged;
        }
    }
    if size > FILE_BYTES_MAX {
        let message = format!("the file has {size} bytes, more than the limit of {FILE_BYTES_MAX}");
        return Survey::Unreadable(ImportError::new(path, "too_large", message));
    }
    let content = match std::fs::read(path) {
        Ok(content) => content,
        Err(error) => {
            return Survey::Unreadable(ImportError::new(path, "unreadable", error.to_string()))
        }
    };
    let hash: [u8; 32] = Sha256::digest(&content).into();
    if known.is_some_and(|(_, _, known_hash)| *known_hash == hash) {
        return Survey::SameContent { modified, size };
    }
    // Airflow's safe mode: only files that mention DAGs are imported.
    let mentions_dag = content
        .windows(3)
        .any(|window| window.eq_ignore_ascii_case(b"dag"));
    Survey::Changed {
        modified,
        size,
        hash,
        mentions_dag,
    }
}

/// The answer of `python -m weft.processor` for one file.
#[derive(Debug, serde::Deserialize)]
struct ProcessorAnswer {
    dags: Vec<serde_json::Value>,
    error: Option<ProcessorError>,
}

#[derive(Debug, serde::Deserialize)]
struct ProcessorError {
    kind: String,
    message: String,
    line: Option<u32>,
}

/// `python -m weft.processor FILE...`: its own process group, so a timeout also kills what
/// the files started.
fn parser_command(config: &DagProcessorConfig, paths: &[PathBuf]) -> std::io::Result<Command> {
    let mut python_path = config.python_path.clone().into_os_string();
    if let Some(existing) = std::env::var_os("PYTHONPATH") {
        python_path.push(":");
        python_path.push(existing);
    }
    let mut argv: Vec<std::ffi::OsString> = vec![
        config.python.clone().into(),
        "-m".into(),
        "weft.processor".into(),
    ];
    argv.extend(paths.iter().map(|path| path.clone().into_os_string()));
    let mut command = weft_actors::executor::python::confined_python(argv, config.sandbox.as_ref())
        .map_err(std::io::Error::other)?;
    command
        .env("PYTHONPATH", python_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    Ok(command)
}

fn spawn_error(config: &DagProcessorConfig, path: &Path, error: std::io::Error) -> ImportError {
    let message = format!(
        "cannot start the DAG parser `{}`: {error}; set WEFT_PYTHON to a python 3.11+ interpreter",
        config.python
    );
    ImportError::new(path, "processor", message)
}

/// Imports several DAG files in one Python subprocess, one after the other, and returns each
/// file's DAGs (not yet validated by the core) in order. Each answer gets the whole parse
/// timeout. A file that hangs gets the timeout error; a file that kills the subprocess or
/// garbles its answer is imported again alone (`parse_file`), so that its error is its own;
/// the files after it go on in a new subprocess.
pub async fn parse_batch(
    config: &DagProcessorConfig,
    paths: &[PathBuf],
) -> Vec<(PathBuf, Result<Vec<DagSpec>, ImportError>)> {
    let mut outcomes = Vec::with_capacity(paths.len());
    let mut rest = paths;
    while let [first, others @ ..] = rest {
        if others.is_empty() {
            outcomes.push((first.clone(), parse_file(config, first).await));
            break;
        }
        let settled = parse_batch_once(config, rest, &mut outcomes).await;
        rest = &rest[settled.max(1)..];
    }
    outcomes
}

/// One subprocess over `paths`; returns how many files it settled (pushed to `outcomes`).
async fn parse_batch_once(
    config: &DagProcessorConfig,
    paths: &[PathBuf],
    outcomes: &mut Vec<(PathBuf, Result<Vec<DagSpec>, ImportError>)>,
) -> usize {
    let mut child = match parser_command(config, paths).and_then(|mut command| command.spawn()) {
        Ok(child) => child,
        Err(error) => {
            outcomes.push((paths[0].clone(), Err(spawn_error(config, &paths[0], error))));
            return 1;
        }
    };
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    // Drained so that a chatty file cannot block the subprocess on a full pipe.
    let drain = tokio::spawn(async move { read_tail(&mut stderr, &mut Vec::new()).await });
    let mut reader = tokio::io::BufReader::new(stdout);
    let timeout = Duration::from_millis(config.parse_timeout_ms);
    let mut settled = 0;
    // The subprocess died or garbled its answer while importing `paths[settled]`.
    let mut broken = false;
    for path in paths {
        let mut line = Vec::new();
        let mut limited = (&mut reader).take(OUTPUT_BYTES_MAX + 1);
        let read = tokio::time::timeout(timeout, limited.read_until(b'\n', &mut line)).await;
        match read {
            Err(_) => {
                if let Some(pid) = pid {
                    weft_actors::executor::python::kill_process_group(pid);
                }
                metrics::counter!("weft_dag_parse_timeouts_total").increment(1);
                outcomes.push((path.clone(), Err(timeout_error(path, timeout))));
                settled += 1;
                break;
            }
            Ok(Ok(_)) if line.len() as u64 > OUTPUT_BYTES_MAX => {
                let message =
                    format!("the file's DAGs serialize to more than {OUTPUT_BYTES_MAX} bytes");
                outcomes.push((
                    path.clone(),
                    Err(ImportError::new(path, "too_large", message)),
                ));
                settled += 1;
                break;
            }
            Ok(Ok(read)) if read > 0 => match serde_json::from_slice::<ProcessorAnswer>(&line) {
                Ok(answer) => {
                    outcomes.push((path.clone(), answer_dags(path, answer)));
                    settled += 1;
                }
                Err(_) => {
                    broken = true;
                    break;
                }
            },
            // The subprocess ended or broke before answering for this file.
            Ok(_) => {
                broken = true;
                break;
            }
        }
    }
    if settled < paths.len() {
        if let Some(pid) = pid {
            weft_actors::executor::python::kill_process_group(pid);
        }
    }
    drop(reader);
    let _ = child.wait().await;
    drain.abort();
    if broken {
        // The file being imported broke the subprocess: import it alone for its own error.
        let path = &paths[settled];
        let outcome = parse_file(config, path).await;
        outcomes.push((path.clone(), outcome));
        settled += 1;
    }
    settled
}

fn timeout_error(path: &Path, timeout: Duration) -> ImportError {
    let message = format!(
        "timed out after {} s while importing; a DAG file must not block at import, move \
         slow work into tasks",
        timeout.as_secs_f64()
    );
    ImportError::new(path, "timeout", message)
}

/// The DAGs of one file's answer, or its import error.
fn answer_dags(path: &Path, answer: ProcessorAnswer) -> Result<Vec<DagSpec>, ImportError> {
    if let Some(error) = answer.error {
        return Err(ImportError {
            file: path.to_path_buf(),
            line: error.line,
            kind: error.kind,
            message: error.message,
        });
    }
    answer
        .dags
        .into_iter()
        .map(|value| {
            serde_json::from_value::<DagSpec>(value).map_err(|error| {
                let message = format!("the DAG parser wrote a DAG this build cannot read: {error}");
                ImportError::new(path, "invalid_dag", message)
            })
        })
        .collect()
}

/// Imports one DAG file in a fresh Python subprocess and returns its DAGs as it serialized
/// them (not yet validated by the core).
pub async fn parse_file(
    config: &DagProcessorConfig,
    path: &Path,
) -> Result<Vec<DagSpec>, ImportError> {
    let mut child = parser_command(config, std::slice::from_ref(&path.to_path_buf()))
        .and_then(|mut command| command.spawn())
        .map_err(|error| spawn_error(config, path, error))?;
    let pid = child.id();
    let mut stdout = child
        .stdout
        .take()
        .expect("stdout is piped")
        .take(OUTPUT_BYTES_MAX + 1);
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let run = async {
        let mut output = Vec::new();
        let mut errors = Vec::new();
        let (read_out, _) = tokio::join!(
            stdout.read_to_end(&mut output),
            read_tail(&mut stderr, &mut errors)
        );
        let status = child.wait().await;
        (read_out.map(|_| output), errors, status)
    };
    let timeout = Duration::from_millis(config.parse_timeout_ms);
    let Ok((output, errors, status)) = tokio::time::timeout(timeout, run).await else {
        if let Some(pid) = pid {
            weft_actors::executor::python::kill_process_group(pid);
        }
        metrics::counter!("weft_dag_parse_timeouts_total").increment(1);
        return Err(timeout_error(path, timeout));
    };
    let stderr_text = String::from_utf8_lossy(&errors).trim().to_string();
    let output = output.map_err(|error| ImportError::new(path, "processor", error.to_string()))?;
    if output.len() as u64 > OUTPUT_BYTES_MAX {
        let message = format!("the file's DAGs serialize to more than {OUTPUT_BYTES_MAX} bytes");
        return Err(ImportError::new(path, "too_large", message));
    }
    let answer: ProcessorAnswer = serde_json::from_slice(&output).map_err(|error| {
        let status = status.map(|status| status.to_string()).unwrap_or_default();
        let message = format!("the DAG parser gave no answer ({error}, {status}): {stderr_text}");
        ImportError::new(path, "processor", message)
    })?;
    answer_dags(path, answer)
}

/// Reads a stream to its end, keeping its first `STDERR_BYTES_KEPT` bytes.
async fn read_tail(stream: &mut tokio::process::ChildStderr, kept: &mut Vec<u8>) {
    let mut buffer = [0u8; 4096];
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        let room = (STDERR_BYTES_KEPT as usize).saturating_sub(kept.len());
        kept.extend_from_slice(&buffer[..read.min(room)]);
    }
}

/// Checks every DAG of a file with the core, and that the file does not define a dag twice.
fn validate(path: &Path, dags: Vec<DagSpec>) -> Result<Vec<DagSpec>, ImportError> {
    let mut seen = BTreeSet::new();
    for dag in &dags {
        if !seen.insert(dag.dag_id.clone()) {
            let message = format!(
                "dag id `{}` is defined twice in this file; rename one",
                dag.dag_id
            );
            return Err(ImportError::new(path, "duplicate_dag_id", message));
        }
        if let Err(error) = Dag::from_spec(dag.clone()) {
            return Err(ImportError::new(
                path,
                dag_error_kind(&error),
                error.to_string(),
            ));
        }
    }
    Ok(dags)
}

fn dag_error_kind(error: &DagError) -> &'static str {
    match error {
        DagError::Cycle { .. } => "cycle",
        DagError::DuplicateTaskId { .. } => "duplicate_task_id",
        DagError::Schedule { source, .. } if source.to_string().contains("time zone") => {
            "unknown_timezone"
        }
        DagError::Schedule { .. } => "bad_schedule",
        _ => "invalid_dag",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::spec::{ScheduleSpec, TaskKind};

    const GOOD: &str = r#"
from datetime import datetime
from weft import DAG, BashOperator, task

with DAG("good", schedule="@daily", start_date=datetime(2024, 1, 1)):
    @task
    def hello():
        return "hi"

    hello() >> BashOperator(task_id="echo", bash_command="echo {{ ds }}")
"#;

    struct Folder {
        dir: tempfile::TempDir,
    }

    impl Folder {
        fn new() -> Folder {
            Folder {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            std::fs::canonicalize(&path).unwrap()
        }

        fn processor(&self) -> DagProcessor {
            DagProcessor::new(self.config())
        }

        fn config(&self) -> DagProcessorConfig {
            DagProcessorConfig {
                parse_timeout_ms: 20_000,
                ..DagProcessorConfig::new(self.dir.path())
            }
        }
    }

    /// The one import error of a scan of a folder holding only `text`.
    async fn only_error(text: &str) -> ImportError {
        let folder = Folder::new();
        let path = folder.write("broken_dag.py", text);
        let result = folder.processor().scan().await.unwrap();
        assert!(result.parsed.is_empty(), "parsed {:?}", result.parsed);
        assert_eq!(result.errors.len(), 1, "errors {:?}", result.errors);
        let error = result.errors.into_iter().next().unwrap();
        assert_eq!(error.file, path);
        error
    }

    #[tokio::test]
    async fn good_file_gives_its_dags() {
        let folder = Folder::new();
        let path = folder.write("nested/good_dag.py", GOOD);
        folder.write("helpers.py", "VALUE = 1\n");
        let result = folder.processor().scan().await.unwrap();
        assert!(result.errors.is_empty(), "errors {:?}", result.errors);
        assert_eq!(result.parsed.len(), 1);
        let (file, dags) = &result.parsed[0];
        assert_eq!(file, &path);
        let dag = &dags[0];
        assert_eq!(dag.dag_id, "good");
        assert_eq!(dag.fileloc.as_deref(), Some(path.to_str().unwrap()));
        assert!(
            matches!(&dag.schedule, ScheduleSpec::Cron { expression, .. } if expression == "@daily")
        );
        let echo = dag.task("echo").unwrap();
        assert_eq!(echo.upstream, vec!["hello".to_string()]);
        assert!(matches!(
            &echo.kind,
            TaskKind::Shell {
                templated: true,
                ..
            }
        ));
        assert!(matches!(
            &dag.task("hello").unwrap().kind,
            TaskKind::Python { .. }
        ));
    }

    #[tokio::test]
    async fn syntax_error_names_its_line() {
        let error = only_error("from weft import DAG\n\nwith DAG('x') as dag\n    pass\n").await;
        assert_eq!((error.kind.as_str(), error.line), ("syntax", Some(3)));
    }

    #[tokio::test]
    async fn exception_names_the_line_in_the_dag_file() {
        let error =
            only_error("from weft import DAG\nimport os\n\nos.environ['NOPE_NOT_SET']\n").await;
        assert_eq!((error.kind.as_str(), error.line), ("exception", Some(4)));
        assert!(
            error.message.contains("KeyError"),
            "message {}",
            error.message
        );
    }

    #[tokio::test]
    async fn cycle_names_its_tasks_and_the_closing_line() {
        let text = "from weft import DAG, EmptyOperator\nwith DAG('c'):\n    a = EmptyOperator(task_id='a')\n    b = EmptyOperator(task_id='b')\n    a >> b\n    b >> a\n";
        let error = only_error(text).await;
        assert_eq!((error.kind.as_str(), error.line), ("cycle", Some(6)));
        assert!(
            error.message.contains("a -> b -> a"),
            "message {}",
            error.message
        );
    }

    #[tokio::test]
    async fn bad_cron_and_unknown_time_zone_name_their_line() {
        let error = only_error("from weft import DAG\n\nDAG('x', schedule='61 * * * *')\n").await;
        assert_eq!((error.kind.as_str(), error.line), ("bad_schedule", Some(3)));
        let error = only_error("from weft import DAG\nDAG('x', timezone='Mars/Olympus')\n").await;
        assert_eq!(
            (error.kind.as_str(), error.line),
            ("unknown_timezone", Some(2))
        );
        assert!(error.message.contains("Mars/Olympus"));
    }

    #[tokio::test]
    async fn duplicate_dag_id_in_one_file() {
        let error = only_error("from weft import DAG\nDAG('same')\nDAG('same')\n").await;
        assert_eq!(
            (error.kind.as_str(), error.line),
            ("duplicate_dag_id", Some(3))
        );
    }

    #[tokio::test]
    async fn hanging_file_times_out_and_is_killed() {
        let folder = Folder::new();
        let path = folder.write(
            "slow_dag.py",
            "import time\nfrom weft import DAG\ntime.sleep(60)\n",
        );
        let config = DagProcessorConfig {
            parse_timeout_ms: 2_000,
            ..folder.config()
        };
        let started = std::time::Instant::now();
        let result = DagProcessor::new(config).scan().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(result.errors.len(), 1);
        assert_eq!(result.errors[0].file, path);
        assert_eq!(result.errors[0].kind, "timeout");
        assert!(
            result.errors[0].message.contains("timed out after 2 s"),
            "{}",
            result.errors[0].message
        );
    }

    #[tokio::test]
    async fn duplicate_dag_id_across_files_fails_the_later_file_until_resolved() {
        let folder = Folder::new();
        let first = folder.write("a_dag.py", "from weft import DAG, EmptyOperator\nwith DAG('shared'):\n    EmptyOperator(task_id='t')\n");
        let second = folder.write("b_dag.py", "from weft import DAG, EmptyOperator\nwith DAG('shared'):\n    EmptyOperator(task_id='u')\n");
        let mut processor = folder.processor();
        let result = processor.scan().await.unwrap();
        assert_eq!(result.parsed.len(), 1);
        assert_eq!(result.parsed[0].0, first);
        assert_eq!(result.errors.len(), 1);
        assert_eq!(
            (
                result.errors[0].file.as_path(),
                result.errors[0].kind.as_str()
            ),
            (second.as_path(), "duplicate_dag_id")
        );
        assert!(result.errors[0].message.contains("a_dag.py"));
        assert_eq!(processor.owner_of("shared"), Some(first.as_path()));

        // The first file lets go of the id: the second, unchanged, now loads.
        std::fs::remove_file(&first).unwrap();
        let result = processor.scan().await.unwrap();
        assert_eq!(result.removed_files, vec![first]);
        assert_eq!(result.parsed.len(), 1);
        assert_eq!(result.parsed[0].0, second);
        assert!(processor.import_errors().is_empty());
        assert_eq!(processor.owner_of("shared"), Some(second.as_path()));
    }

    #[tokio::test]
    async fn only_changed_files_are_parsed_again() {
        let folder = Folder::new();
        let good = folder.write("good_dag.py", GOOD);
        let other = folder.write("other_dag.py", "from weft import DAG, EmptyOperator\nwith DAG('other'):\n    EmptyOperator(task_id='t')\n");
        let mut processor = folder.processor();
        assert_eq!(processor.scan().await.unwrap().parsed.len(), 2);
        assert!(processor.scan().await.unwrap().is_empty());

        // Same bytes, new mtime: read and hashed, not parsed.
        std::fs::write(&good, GOOD).unwrap();
        assert!(processor.scan().await.unwrap().is_empty());

        // A broken file is reported once and its dag id stays owned (last good version runs).
        std::fs::write(&other, "from weft import DAG\nraise RuntimeError('boom')\n").unwrap();
        let result = processor.scan().await.unwrap();
        assert!(result.parsed.is_empty());
        assert_eq!(result.errors.len(), 1);
        assert_eq!(
            (result.errors[0].file.as_path(), result.errors[0].line),
            (other.as_path(), Some(2))
        );
        assert_eq!(processor.owner_of("other"), Some(other.as_path()));
        assert!(processor.scan().await.unwrap().is_empty());
        assert_eq!(processor.import_errors().len(), 1);

        // Fixed again: parsed, and only that file.
        std::fs::write(&other, "from weft import DAG, EmptyOperator\nwith DAG('other'):\n    EmptyOperator(task_id='t2')\n").unwrap();
        let result = processor.scan().await.unwrap();
        assert_eq!(result.parsed.len(), 1);
        assert_eq!(result.parsed[0].0, other);
        assert_eq!(result.parsed[0].1[0].tasks[0].task_id, "t2");
        assert!(processor.import_errors().is_empty());
    }

    #[tokio::test]
    async fn removed_file_is_reported_and_frees_its_dag_ids() {
        let folder = Folder::new();
        let good = folder.write("good_dag.py", GOOD);
        let mut processor = folder.processor();
        processor.scan().await.unwrap();
        std::fs::remove_file(&good).unwrap();
        let result = processor.scan().await.unwrap();
        assert_eq!(result.removed_files, vec![good]);
        assert!(result.parsed.is_empty() && result.errors.is_empty());
        assert_eq!(processor.owner_of("good"), None);
    }

    #[tokio::test]
    async fn missing_folder_is_an_error_that_names_it() {
        let config = DagProcessorConfig::new("/no/such/dags/folder");
        let error = DagProcessor::new(config).scan().await.unwrap_err();
        assert!(
            error.to_string().contains("/no/such/dags/folder"),
            "{error}"
        );
    }
}

//! The SQLite backend: one database file, WAL mode, one writer thread doing group commit, a
//! small pool of read connections.
//!
//! Writes go through [`writer`]: batches queue on a bounded channel, and the writer thread
//! commits everything queued in one transaction with a savepoint per batch. Reads run on
//! `spawn_blocking` against read-only connections, which in WAL mode never wait for the writer.
//! The schema lives in `sqlite/migrations/*.sql`, applied by [`migrations`] and recorded in
//! `schema_migrations`; column encodings are described in `rows.rs`.

mod migrations;
mod rows;
mod writer;

pub use migrations::SCHEMA_VERSION;

use crate::{
    batch, ApiTokenRow, AttemptRow, AuditRow, CellRow, DagRow, DagVersionRow, Error,
    ImportErrorRow, LeaseRecord, LogRow, PoolRow, Result, RunRow, SecretKind, SecretRow, Store,
    UserRow, Write, XcomRow,
};
use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use weft_core::dag_run::TaskInstanceRecord;
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::state::DagRunState;
use weft_core::Timestamp;
use writer::{WriteRequest, Writer};

/// Batches that may wait for the writer; past it writers wait for room (backpressure, counted
/// in `weft_store_write_queue_full_total`).
pub const WRITE_QUEUE_BATCHES_MAX: usize = 1024;
/// Batches committed together in one transaction.
pub const GROUP_COMMIT_BATCHES_MAX: usize = 512;
/// Read connections in the pool.
pub const READ_CONNECTIONS_DEFAULT: usize = 4;
/// How long a connection waits for a lock held by another process before giving up.
pub const BUSY_TIMEOUT_MS_DEFAULT: u64 = 5_000;

/// SQLite's `synchronous` setting: how hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// No fsync: fast, and a power loss can lose acknowledged writes. Tests only.
    Off,
    /// In WAL mode, a power loss can lose the last commits but never corrupts the file.
    Normal,
    /// Every commit is on disk before it is acknowledged (the default).
    Full,
}

impl Synchronous {
    fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
    pub busy_timeout_ms: u64,
    /// At least one.
    pub read_connections: usize,
    pub write_queue_batches_max: usize,
    pub group_commit_batches_max: usize,
    /// Cap on the database size in pages (SQLite's `max_page_count`); writes past it fail as on
    /// a full disk. `None` leaves SQLite's own limit.
    pub file_pages_max: Option<u64>,
}

impl Default for SqliteOptions {
    fn default() -> SqliteOptions {
        SqliteOptions {
            synchronous: Synchronous::Full,
            busy_timeout_ms: BUSY_TIMEOUT_MS_DEFAULT,
            read_connections: READ_CONNECTIONS_DEFAULT,
            write_queue_batches_max: WRITE_QUEUE_BATCHES_MAX,
            group_commit_batches_max: GROUP_COMMIT_BATCHES_MAX,
            file_pages_max: None,
        }
    }
}

/// Counters of the writer thread, shared with every handle.
#[derive(Debug, Default)]
pub struct SqliteStats {
    transactions_committed: AtomicU64,
    transactions_failed: AtomicU64,
    batches_committed: AtomicU64,
    batches_refused: AtomicU64,
}

/// A snapshot of [`SqliteStats`]. With group commit, `transactions_committed` grows slower
/// than `batches_committed + batches_refused` under concurrent writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteCounts {
    pub transactions_committed: u64,
    pub transactions_failed: u64,
    pub batches_committed: u64,
    /// Batches refused by a guard or reference check: rolled back alone inside a committed
    /// transaction, or with their transaction when they were alone in it.
    pub batches_refused: u64,
}

/// A cheap-to-clone handle. The writer thread stops, after draining its queue, when the last
/// handle is dropped.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// `None` only while dropping, to close the queue before joining the writer.
    requests: Option<mpsc::Sender<WriteRequest>>,
    writer: Option<JoinHandle<()>>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    stats: Arc<SqliteStats>,
    migrations_applied: Vec<u32>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!(path = %self.path.display(), "the store writer thread panicked");
            }
        }
    }
}

/// Maps a SQLite error to the store's error; `doing` says what was being done.
pub(crate) fn sqlite_error(error: rusqlite::Error, doing: &str) -> Error {
    match error.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => Error::Unavailable(format!(
            "the disk holding the database is full (while {doing}): free some space and retry; \
             the failed write was not acknowledged and nothing acknowledged was lost"
        )),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => Error::Corrupt(format!(
            "the database file is damaged or is not a weft database ({error}, while {doing}): \
             restore it from a backup, or move it away to start with an empty store"
        )),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Unavailable(format!(
            "the database is locked by another process (while {doing}): stop the other weft \
             process using this file, or raise busy_timeout_ms"
        )),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            Error::Unavailable(format!(
                "cannot open or write the database file ({error}, while {doing}): check the \
                 path and its permissions"
            ))
        }
        Some(ErrorCode::ConstraintViolation) => Error::Conflict {
            what: doing.to_string(),
            detail: error.to_string(),
        },
        _ => match error {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => Error::Corrupt(format!(
                "a stored value cannot be read ({error}, while {doing}): the file was changed \
                 outside weft; restore it from a backup"
            )),
            error => Error::Unavailable(format!("sqlite failed while {doing}: {error}")),
        },
    }
}

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Refuses a non-empty file that is not SQLite before SQLite touches it, with its path in the
/// message.
fn check_header(path: &Path) -> Result<()> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(Error::Unavailable(format!(
                "cannot read the database file {}: {error}: check the path and its permissions",
                path.display()
            )))
        }
    };
    let mut header = Vec::with_capacity(SQLITE_HEADER.len());
    let read = file
        .by_ref()
        .take(SQLITE_HEADER.len() as u64)
        .read_to_end(&mut header);
    match read {
        Ok(0) => Ok(()),
        Ok(_) if header == SQLITE_HEADER => Ok(()),
        Ok(_) => Err(Error::Corrupt(format!(
            "{} is not a SQLite database (its header is wrong): restore it from a backup, or move \
             it away to start with an empty store",
            path.display()
        ))),
        Err(error) => Err(Error::Unavailable(format!(
            "cannot read the database file {}: {error}",
            path.display()
        ))),
    }
}

/// Prepared statements a connection keeps. rusqlite's default (16) is fewer than the distinct
/// statements the writer uses, so its LRU cache kept evicting and SQLite kept re-parsing.
const STATEMENT_CACHE_CAPACITY: usize = 256;

fn configure_writer(connection: &Connection, options: &SqliteOptions) -> rusqlite::Result<String> {
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    connection.busy_timeout(Duration::from_millis(options.busy_timeout_ms))?;
    let journal_mode: String =
        connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    connection.pragma_update(None, "synchronous", options.synchronous.pragma_value())?;
    connection.pragma_update(None, "foreign_keys", true)?;
    // The savepoint journal (the pages a batch changes, as they were, so that a refused batch
    // can be rolled back alone) stays in memory: by default it spills to a temporary file past
    // 64 KiB, and writing that file was half of the writer's `pwrite` calls in a wide run.
    // Its size is bounded by the pages one group's batches change.
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    if let Some(pages) = options.file_pages_max {
        let pages = i64::try_from(pages).unwrap_or(i64::MAX);
        connection.pragma_update(None, "max_page_count", pages)?;
    }
    Ok(journal_mode)
}

fn open_reader(path: &Path, options: &SqliteOptions) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    connection.busy_timeout(Duration::from_millis(options.busy_timeout_ms))?;
    Ok(connection)
}

/// Names the file in errors raised while opening it.
fn at_path(path: &Path) -> impl Fn(Error) -> Error + '_ {
    move |error| match error {
        Error::Corrupt(message) => Error::Corrupt(format!("{}: {message}", path.display())),
        Error::Unavailable(message) => Error::Unavailable(format!("{}: {message}", path.display())),
        other => other,
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` and brings its schema up to date.
    /// Blocking: call it at startup or from `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<SqliteStore> {
        let path = path.as_ref();
        check_header(path)?;
        let mut connection = Connection::open(path)
            .map_err(|error| sqlite_error(error, "opening"))
            .map_err(at_path(path))?;
        let journal_mode = configure_writer(&connection, &options)
            .map_err(|error| sqlite_error(error, "configuring the connection"))
            .map_err(at_path(path))?;
        if !journal_mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Unavailable(format!(
                "{}: sqlite refused WAL mode (journal mode is `{journal_mode}`): put the database \
                 on a local filesystem",
                path.display()
            )));
        }
        // The store is a driver: reading the clock here only stamps the migration record.
        let now_micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let display = path.display().to_string();
        let migrations_applied =
            migrations::migrate(&mut connection, &display, now_micros).map_err(at_path(path))?;

        let readers = (0..options.read_connections.max(1))
            .map(|_| open_reader(path, &options).map(Mutex::new))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|error| sqlite_error(error, "opening a read connection"))
            .map_err(at_path(path))?;

        let stats = Arc::new(SqliteStats::default());
        let (requests, receiver) = mpsc::channel(options.write_queue_batches_max.max(1));
        let writer = Writer {
            connection,
            requests: receiver,
            group_commit_batches_max: options.group_commit_batches_max.max(1),
            stats: stats.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("weft-store-writer".to_string())
            .spawn(move || writer.run())
            .map_err(|error| {
                Error::Unavailable(format!("cannot start the store writer thread: {error}"))
            })?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                requests: Some(requests),
                writer: Some(writer),
                readers,
                next_reader: AtomicUsize::new(0),
                stats,
                migrations_applied,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The migrations this handle applied when it opened the file (empty when it was current).
    pub fn migrations_applied_at_open(&self) -> &[u32] {
        &self.inner.migrations_applied
    }

    pub fn counts(&self) -> SqliteCounts {
        let stats = &self.inner.stats;
        SqliteCounts {
            transactions_committed: stats.transactions_committed.load(Ordering::Relaxed),
            transactions_failed: stats.transactions_failed.load(Ordering::Relaxed),
            batches_committed: stats.batches_committed.load(Ordering::Relaxed),
            batches_refused: stats.batches_refused.load(Ordering::Relaxed),
        }
    }

    /// Runs a query on a pooled read connection off the async threads.
    async fn read<T, F>(&self, doing: &'static str, query: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let index = inner.next_reader.fetch_add(1, Ordering::Relaxed) % inner.readers.len();
            // A panic in a query leaves the connection usable: it holds no open transaction.
            let connection = inner.readers[index]
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            query(&connection).map_err(|error| sqlite_error(error, doing))
        })
        .await
        .map_err(|error| Error::Unavailable(format!("a store read task failed: {error}")))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn write(&self, batch: Vec<Write>) -> Result<()> {
        let batch = batch::prepare(batch)?;
        if batch.is_empty() {
            return Ok(());
        }
        let stopped =
            || Error::Unavailable("the store writer has stopped: restart the process".to_string());
        let sender = self.inner.requests.as_ref().ok_or_else(stopped)?;
        let (reply, answer) = oneshot::channel();
        match sender.try_send(WriteRequest { batch, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(request)) => {
                metrics::counter!("weft_store_write_queue_full_total").increment(1);
                sender.send(request).await.map_err(|_| stopped())?;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(stopped()),
        }
        answer.await.map_err(|_| {
            Error::Unavailable(
                "the store writer stopped before answering: the write may or may not have \
                 happened; re-read before retrying"
                    .to_string(),
            )
        })?
    }

    async fn dag(&self, dag_id: &str) -> Result<Option<DagRow>> {
        let dag_id = dag_id.to_string();
        self.read("reading a dag", move |c| rows::dag(c, &dag_id))
            .await
    }

    async fn dags(&self) -> Result<Vec<DagRow>> {
        self.read("reading dags", rows::dags).await
    }

    async fn dag_version(&self, dag_id: &str, version_hash: &str) -> Result<Option<DagVersionRow>> {
        let (dag_id, version_hash) = (dag_id.to_string(), version_hash.to_string());
        self.read("reading a dag version", move |c| {
            rows::dag_version(c, &dag_id, &version_hash)
        })
        .await
    }

    async fn dag_versions(&self, dag_id: &str) -> Result<Vec<DagVersionRow>> {
        let dag_id = dag_id.to_string();
        self.read("reading dag versions", move |c| {
            rows::dag_versions(c, &dag_id)
        })
        .await
    }

    async fn run(&self, key: &RunKey) -> Result<Option<RunRow>> {
        let key = key.clone();
        self.read("reading a run", move |c| rows::run(c, &key))
            .await
    }

    async fn runs(&self, dag_id: &str, limit: usize) -> Result<Vec<RunRow>> {
        let dag_id = dag_id.to_string();
        self.read("reading runs", move |c| rows::runs(c, &dag_id, limit))
            .await
    }

    async fn runs_before(
        &self,
        dag_id: &str,
        before: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<RunRow>> {
        let dag_id = dag_id.to_string();
        self.read("reading a page of runs", move |c| {
            rows::runs_before(c, &dag_id, before, limit)
        })
        .await
    }

    async fn runs_in_states(&self, states: &[DagRunState]) -> Result<Vec<RunRow>> {
        let states = states.to_vec();
        self.read("reading runs by state", move |c| {
            rows::runs_in_states(c, &states)
        })
        .await
    }

    async fn latest_scheduled_run(&self, dag_id: &str) -> Result<Option<RunRow>> {
        let dag_id = dag_id.to_string();
        self.read("reading the latest scheduled run", move |c| {
            rows::latest_scheduled_run(c, &dag_id)
        })
        .await
    }

    async fn previous_run(&self, dag_id: &str, logical_date: Timestamp) -> Result<Option<RunRow>> {
        let dag_id = dag_id.to_string();
        self.read("reading the previous run", move |c| {
            rows::previous_run(c, &dag_id, logical_date)
        })
        .await
    }

    async fn task_instance(&self, key: &TaskInstanceKey) -> Result<Option<TaskInstanceRecord>> {
        let key = key.clone();
        self.read("reading a task instance", move |c| {
            rows::task_instance(c, &key)
        })
        .await
    }

    async fn task_instances(&self, run: &RunKey) -> Result<Vec<TaskInstanceRecord>> {
        let run = run.clone();
        self.read("reading task instances", move |c| {
            rows::task_instances(c, &run)
        })
        .await
    }

    async fn attempts(&self, key: &TaskInstanceKey) -> Result<Vec<AttemptRow>> {
        let key = key.clone();
        self.read("reading attempts", move |c| rows::attempts(c, &key))
            .await
    }

    async fn xcoms(&self, run: &RunKey) -> Result<Vec<XcomRow>> {
        let run = run.clone();
        self.read("reading xcoms", move |c| rows::xcoms(c, &run))
            .await
    }

    async fn log_entry(&self, key: &TaskInstanceKey, try_number: u32) -> Result<Option<LogRow>> {
        let key = key.clone();
        self.read("reading a log entry", move |c| {
            rows::log_entry(c, &key, try_number)
        })
        .await
    }

    async fn import_errors(&self) -> Result<Vec<ImportErrorRow>> {
        self.read("reading import errors", rows::import_errors)
            .await
    }

    async fn pools(&self) -> Result<Vec<PoolRow>> {
        self.read("reading pools", rows::pools).await
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditRow>> {
        self.read("reading the audit log", move |c| rows::audit(c, limit))
            .await
    }

    async fn user(&self, username: &str) -> Result<Option<UserRow>> {
        let username = username.to_string();
        self.read("reading a user", move |c| rows::user(c, &username))
            .await
    }

    async fn users(&self) -> Result<Vec<UserRow>> {
        self.read("reading users", rows::users).await
    }

    async fn api_token(&self, id: &str) -> Result<Option<ApiTokenRow>> {
        let id = id.to_string();
        self.read("reading an api token", move |c| rows::api_token(c, &id))
            .await
    }

    async fn api_tokens(&self) -> Result<Vec<ApiTokenRow>> {
        self.read("reading api tokens", rows::api_tokens).await
    }

    async fn secret(&self, kind: SecretKind, id: &str) -> Result<Option<SecretRow>> {
        let id = id.to_string();
        self.read("reading a variable or connection", move |c| {
            rows::secret(c, kind, &id)
        })
        .await
    }

    async fn leases(&self, shards: u32) -> Result<Vec<LeaseRecord>> {
        self.read("reading shard leases", move |c| rows::leases(c, shards))
            .await
    }

    async fn cells(&self) -> Result<Vec<CellRow>> {
        self.read("reading cells", rows::cells).await
    }

    async fn run_epoch(&self, key: &RunKey) -> Result<Option<u64>> {
        let key = key.clone();
        self.read("reading a run's owner epoch", move |c| {
            rows::run_epoch(c, &key)
        })
        .await
    }

    async fn secrets(&self, kind: SecretKind) -> Result<Vec<SecretRow>> {
        self.read("reading variables or connections", move |c| {
            rows::secrets(c, kind)
        })
        .await
    }
}

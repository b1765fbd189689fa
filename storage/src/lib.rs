//! weft-storage: the store API every backend implements, and its backends.
//!
//! Every task-instance transition is a compare-and-set on (state, try number, fencing token):
//! [`Store::write`] applies a batch of [`Write`]s atomically and refuses the whole batch when
//! one guard does not hold. Backends: [`sqlite`] (the embedded default) and [`memory`] (tests and
//! simulation). [`conformance`] is the one suite every backend passes.

pub mod batch;
pub mod conformance;
pub mod cql;
pub mod memory;
pub mod sqlite;
mod types;
pub mod vault;

pub use types::*;

use async_trait::async_trait;
use weft_core::dag_run::TaskInstanceRecord;
use weft_core::ids::{RunKey, TaskInstanceKey};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A compare-and-set guard did not hold; nothing in the batch was written.
    #[error("conflict on {what}: {detail}")]
    Conflict { what: String, detail: String },
    #[error("{what} not found")]
    NotFound { what: String },
    /// A value is over its named limit.
    #[error("{what} is {size} bytes, over the limit of {max} bytes")]
    TooLarge {
        what: String,
        size: usize,
        max: usize,
    },
    /// A collection is over its named limit on the number of entries; nothing was written.
    #[error("{what} has {count} entries, over the limit of {max}: split it")]
    TooMany {
        what: String,
        count: usize,
        max: usize,
    },
    /// A `Write::Fence` did not hold: the run belongs to a newer owner epoch. The writer was
    /// deposed and must stop deciding for the run; nothing in the batch was written.
    #[error("fenced: run {run} is owned under epoch {current}, newer than this writer's {epoch}")]
    Fenced {
        run: String,
        epoch: u64,
        current: u64,
    },
    /// The backend could not be reached or failed; the write may not have happened.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The stored data is not what this build understands.
    #[error("store corrupt: {0}")]
    Corrupt(String),
}

/// Why a `PutSecret` guard did not hold, as a conflict's detail.
pub fn secret_guard_failed(guard: &SecretGuard) -> &'static str {
    match guard {
        SecretGuard::Any => "",
        SecretGuard::Absent => "it exists already",
        SecretGuard::Sealed(_) => "it changed (or was deleted) since it was read",
    }
}

impl Error {
    /// A compare-and-set guard did not hold: re-read and decide again rather than retry blindly.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The metadata store. Implementations are cheap to clone handles (`Arc` inside) and safe to
/// use from many tasks at once.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Apply writes atomically, in order; all or nothing. Returns when durable.
    async fn write(&self, batch: Vec<Write>) -> Result<()>;

    // --- DAGs
    async fn dag(&self, dag_id: &str) -> Result<Option<DagRow>>;
    async fn dags(&self) -> Result<Vec<DagRow>>;
    /// The serialized DAG at a version (JSON text).
    async fn dag_version(&self, dag_id: &str, version_hash: &str) -> Result<Option<DagVersionRow>>;
    /// Versions of a DAG, newest first.
    async fn dag_versions(&self, dag_id: &str) -> Result<Vec<DagVersionRow>>;

    // --- runs
    async fn run(&self, key: &RunKey) -> Result<Option<RunRow>>;
    /// Runs of a DAG, newest logical date first, at most `limit`.
    async fn runs(&self, dag_id: &str, limit: usize) -> Result<Vec<RunRow>>;
    /// Runs of a DAG with a logical date strictly before `before` (all when `None`), newest
    /// first, at most `limit`: the pages of the grid.
    async fn runs_before(
        &self,
        dag_id: &str,
        before: Option<weft_core::Timestamp>,
        limit: usize,
    ) -> Result<Vec<RunRow>>;
    /// Runs in any of the given states, across DAGs (recovery after a restart).
    async fn runs_in_states(&self, states: &[weft_core::state::DagRunState])
        -> Result<Vec<RunRow>>;
    /// The scheduled run of a DAG with the latest logical date.
    async fn latest_scheduled_run(&self, dag_id: &str) -> Result<Option<RunRow>>;
    /// The run of the DAG just before `logical_date` (depends_on_past).
    async fn previous_run(
        &self,
        dag_id: &str,
        logical_date: weft_core::Timestamp,
    ) -> Result<Option<RunRow>>;

    // --- task instances and attempts
    async fn task_instance(&self, key: &TaskInstanceKey) -> Result<Option<TaskInstanceRecord>>;
    async fn task_instances(&self, run: &RunKey) -> Result<Vec<TaskInstanceRecord>>;
    /// Attempts of one task instance, oldest first.
    async fn attempts(&self, key: &TaskInstanceKey) -> Result<Vec<AttemptRow>>;

    // --- results, logs, errors, pools, audit
    async fn xcoms(&self, run: &RunKey) -> Result<Vec<XcomRow>>;
    async fn log_entry(&self, key: &TaskInstanceKey, try_number: u32) -> Result<Option<LogRow>>;
    async fn import_errors(&self) -> Result<Vec<ImportErrorRow>>;
    async fn pools(&self) -> Result<Vec<PoolRow>>;
    /// Audit entries, newest first, at most `limit`.
    async fn audit(&self, limit: usize) -> Result<Vec<AuditRow>>;

    // --- users and API tokens of the web UI and API
    async fn user(&self, username: &str) -> Result<Option<UserRow>>;
    /// Every user, by name.
    async fn users(&self) -> Result<Vec<UserRow>>;
    async fn api_token(&self, id: &str) -> Result<Option<ApiTokenRow>>;
    /// Every API token, by id.
    async fn api_tokens(&self) -> Result<Vec<ApiTokenRow>>;

    // --- variables and connections (sealed; see `vault` for their values)
    async fn secret(&self, kind: SecretKind, id: &str) -> Result<Option<SecretRow>>;
    /// Every row of one kind, by id.
    async fn secrets(&self, kind: SecretKind) -> Result<Vec<SecretRow>>;

    // --- cells: shard leases and heartbeats (always at global serial consistency in CQL)
    /// The lease rows of shards `0..shards` that exist, by shard.
    async fn leases(&self, shards: u32) -> Result<Vec<LeaseRecord>>;
    /// Compare-and-set a lease row ([`Write::PutLease`]); a refusal carries the row as read
    /// after it (possibly older than the row that refused: compare epochs and versions).
    async fn write_lease(
        &self,
        expect: Option<(u64, u64)>,
        row: &weft_core::lease::LeaseRow,
        at: weft_core::Timestamp,
    ) -> Result<LeaseWrite> {
        let write = Write::PutLease {
            expect,
            row: row.clone(),
            at,
        };
        match self.write(vec![write]).await {
            Ok(()) => Ok(LeaseWrite::Applied),
            Err(error) if error.is_conflict() => {
                let current = self.leases(row.shard + 1).await?;
                Ok(LeaseWrite::Refused(
                    current
                        .into_iter()
                        .map(|record| record.lease)
                        .find(|lease| lease.shard == row.shard),
                ))
            }
            Err(error) => Err(error),
        }
    }
    /// Create or replace a cell's heartbeat row.
    async fn put_cell(&self, row: &CellRow) -> Result<()> {
        self.write(vec![Write::PutCell(row.clone())]).await
    }
    /// Remove a cell's heartbeat row (it left); removing none is not an error.
    async fn delete_cell(&self, name: &str) -> Result<()> {
        self.write(vec![Write::DeleteCell {
            name: name.to_string(),
        }])
        .await
    }
    /// Every cell's heartbeat row, by name.
    async fn cells(&self) -> Result<Vec<CellRow>>;
    /// The owner epoch a run was last written under (`None`: never fenced).
    async fn run_epoch(&self, key: &RunKey) -> Result<Option<u64>>;
}

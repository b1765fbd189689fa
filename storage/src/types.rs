//! Rows and writes of the store API: plain data shared by every backend.

use serde::{Deserialize, Serialize};
use weft_core::dag_run::{TaskInstanceRecord, TaskVersion};
use weft_core::ids::{AttemptId, RunKey, TaskInstanceKey};
use weft_core::state::{DagRunState, RunType};
use weft_core::timetable::DataInterval;
use weft_core::Timestamp;

/// Size limit of one task result (XCom value), serialized.
pub const XCOM_BYTES_MAX: usize = weft_core::limits::XCOM_BYTES_MAX;
/// Size limit of one import error message.
pub const IMPORT_ERROR_BYTES_MAX: usize = 64 * 1024;
/// Size limit of one audit entry's detail.
pub const AUDIT_DETAIL_BYTES_MAX: usize = 16 * 1024;
/// Writes in one batch.
pub const BATCH_WRITES_MAX: usize = 10_000;

/// Longest variable key or connection id, in characters (Airflow's `ID_LEN`).
pub const SECRET_ID_CHARS_MAX: usize = 250;
/// Longest description of a variable or connection, in bytes.
pub const SECRET_DESCRIPTION_BYTES_MAX: usize = 4 * 1024;
/// Largest sealed value of one variable or connection, in bytes (the plaintext limit of
/// [`crate::vault`] is set so that a value at it seals within this).
pub const SECRET_SEALED_BYTES_MAX: usize = 512 * 1024;

/// The pool every store starts with, as in Airflow; it can be resized but not deleted.
pub const DEFAULT_POOL_NAME: &str = "default_pool";
pub const DEFAULT_POOL_SLOTS: u32 = 128;
pub const DEFAULT_POOL_DESCRIPTION: &str = "Default pool";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DagRow {
    pub dag_id: String,
    /// The version that new runs use.
    pub latest_version: String,
    pub fileloc: Option<String>,
    pub is_paused: bool,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DagVersionRow {
    pub dag_id: String,
    pub version_hash: String,
    /// The serialized DAG (weft_core::spec::DagSpec as JSON).
    pub spec_json: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    pub key: RunKey,
    pub run_type: RunType,
    pub state: DagRunState,
    pub logical_date: Timestamp,
    pub data_interval: DataInterval,
    /// The DAG version this run executes.
    pub version_hash: String,
    pub conf: serde_json::Value,
    /// Seed for this run's retry jitter.
    pub seed: u64,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRow {
    /// Which attempt: the task instance, its try and fencing token (flattened in JSON, as
    /// `key`, `try_number` and `token`).
    #[serde(flatten)]
    pub attempt: AttemptId,
    /// Final state of the attempt (`running` while it runs).
    pub state: weft_core::state::TaskState,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub worker: String,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct XcomRow {
    pub key: TaskInstanceKey,
    /// `return_value` for a task's result.
    pub name: String,
    pub value: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    pub key: TaskInstanceKey,
    pub try_number: u32,
    /// Path of the log file, relative to the data directory.
    pub path: String,
    pub bytes: u64,
    /// The log hit its size limit and was cut.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportErrorRow {
    pub fileloc: String,
    pub line: Option<u32>,
    pub message: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolRow {
    pub name: String,
    pub slots: u32,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    /// Assigned by the store, increasing.
    pub id: u64,
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// A person or script that signs in to the web UI and API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRow {
    pub username: String,
    /// An argon2 PHC string; never the password.
    pub password_hash: String,
    /// `admin`, `op`, `user` or `viewer`.
    pub role: String,
    /// DAGs a `user` or `viewer` may see; empty means every DAG.
    pub dag_grants: Vec<String>,
    pub disabled: bool,
    pub created_at: Timestamp,
    /// Grows whenever the user's sessions are revoked (sign-out everywhere, a new password,
    /// disabling): a session token carries the epoch it was issued in and is refused once the
    /// stored epoch has moved past it, on every node and after a restart.
    #[serde(default)]
    pub session_epoch: u64,
}

/// An API token for scripts. Only a hash of its secret is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiTokenRow {
    /// The public part of the token, shown in listings.
    pub id: String,
    pub name: String,
    /// The user the token acts as.
    pub username: String,
    /// SHA-256 of the secret part, hex.
    pub secret_hash: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
}

/// Which of Airflow's two secret tables a [`SecretRow`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    Variable,
    Connection,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::Variable => "variable",
            SecretKind::Connection => "connection",
        }
    }
}

/// A Variable or a Connection as stored: everything but its id and description is sealed
/// (encrypted and authenticated) by [`crate::vault`]; a store never sees a value in clear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretRow {
    pub kind: SecretKind,
    /// The variable's key or the connection's id.
    pub id: String,
    pub description: String,
    /// The sealed value: `weft1:<key id>:<base64 of nonce, ciphertext and tag>`.
    pub sealed: String,
    pub updated_at: Timestamp,
}

/// What must be stored for a `PutSecret` to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretGuard {
    /// Whatever is stored (a plain set).
    Any,
    /// Nothing: the row is created, and a row that exists is a conflict.
    Absent,
    /// The row with exactly this sealed value: a change made from what was read (an update,
    /// a re-seal) never overwrites a change made since.
    Sealed(String),
}

/// One write of a batch. Guarded writes fail the whole batch with `Error::Conflict` when the
/// guard does not hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Write {
    /// Store a DAG version (idempotent on `(dag_id, version_hash)`) and make it the latest.
    PutDag {
        version: DagVersionRow,
        fileloc: Option<String>,
        paused_if_new: bool,
    },
    SetPaused {
        dag_id: String,
        paused: bool,
    },
    /// Create a run; conflicts when the run id exists, or when a run of the same DAG has the
    /// same logical date and type `scheduled` or `backfill` (one run per schedule tick).
    CreateRun(RunRow),
    /// Change a run's state; guarded by its current state.
    UpdateRun {
        key: RunKey,
        expected: DagRunState,
        state: DagRunState,
        started_at: Option<Timestamp>,
        ended_at: Option<Timestamp>,
    },
    /// Compare-and-set a task instance. `expected: None` creates it (conflicts if it exists);
    /// otherwise the stored (state, try_number, token) must equal `expected`.
    PutTaskInstance {
        expected: Option<TaskVersion>,
        record: TaskInstanceRecord,
    },
    /// Record an attempt (insert or replace on `(key, try_number)`).
    PutAttempt(AttemptRow),
    /// Store a task result; refused with `Error::TooLarge` over `XCOM_BYTES_MAX`.
    PutXcom(XcomRow),
    /// Remove a task instance's results (when it is cleared).
    DeleteXcoms {
        key: TaskInstanceKey,
    },
    PutLog(LogRow),
    /// Record (or replace) the import error of a file.
    PutImportError(ImportErrorRow),
    ClearImportError {
        fileloc: String,
    },
    PutPool(PoolRow),
    DeletePool {
        name: String,
    },
    /// Append an audit entry (`id` is ignored and assigned by the store).
    Audit(AuditRow),
    /// Create or replace a user.
    PutUser(UserRow),
    /// Create or replace an API token.
    PutApiToken(ApiTokenRow),
    /// Remove an API token; removing one that does not exist is not an error.
    DeleteApiToken {
        id: String,
    },
    /// Create or replace a variable or connection, if `guard` holds (else `Error::Conflict`).
    /// Refused with `Error::TooLarge` when `sealed` is over `SECRET_SEALED_BYTES_MAX`.
    PutSecret {
        row: SecretRow,
        guard: SecretGuard,
    },
    /// Remove a variable or connection; removing one that does not exist is not an error.
    DeleteSecret {
        kind: SecretKind,
        id: String,
    },
    /// Guard the batch by the epoch of the cell that owns the run's shard: refused with
    /// `Error::Fenced` when the run was written under a newer epoch (its writer was deposed);
    /// otherwise the run's owner epoch becomes `epoch`. A run created earlier in the same batch
    /// is stamped. A batch of only a fence is how a new owner adopts a run before it acts.
    Fence {
        run: RunKey,
        epoch: u64,
    },
    /// Compare-and-set a shard's lease row: written when the stored row's (epoch, version) is
    /// `expect`, or when there is none and `expect` is `None`; else `Error::Conflict`. Use
    /// [`Store::write_lease`](crate::Store::write_lease), which says what the row is instead.
    PutLease {
        expect: Option<(u64, u64)>,
        row: weft_core::lease::LeaseRow,
        at: Timestamp,
    },
    /// Create or replace a cell's heartbeat row.
    PutCell(CellRow),
    /// Remove a cell's heartbeat row; removing none is not an error.
    DeleteCell {
        name: String,
    },
}

/// A shard's lease row with the wall time of its last write, by the writer's clock (shown as
/// the lease's age; decisions never use it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub lease: weft_core::lease::LeaseRow,
    pub written_at: Timestamp,
}

/// The result of a compare-and-set of a lease row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseWrite {
    Applied,
    /// The guard did not hold: the row as it is (`None`: there is none).
    Refused(Option<weft_core::lease::LeaseRow>),
}

/// A cell's heartbeat row, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellRow {
    pub name: String,
    pub region: String,
    /// Where its peers and workers reach it (QUIC).
    pub address: String,
    /// Its web UI and API.
    pub api: String,
    /// Grows on every heartbeat.
    pub version: u64,
    pub beat_at: Timestamp,
    pub started_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attempt rows stored as JSON (the CQL store's bodies) before `AttemptId` existed read
    /// the same, and are written the same.
    #[test]
    fn attempt_rows_keep_their_json_shape() {
        let stored = r#"{"key":{"dag_id":"d","run_id":"r","task_id":"t","map_index":-1},
            "try_number":2,"token":7,"state":"success","started_at":"2024-01-01T00:00:00Z",
            "ended_at":null,"worker":"local","note":null}"#;
        let row: AttemptRow = serde_json::from_str(stored).expect("the stored shape reads");
        assert_eq!(row.attempt.version(), (2, 7));
        assert_eq!(row.attempt.key, TaskInstanceKey::new("d", "r", "t", -1));
        let written = serde_json::to_value(&row).expect("serializes");
        assert_eq!(written["try_number"], 2);
        assert_eq!(written["token"], 7);
        assert_eq!(written["key"]["task_id"], "t");
        assert!(written.get("attempt").is_none());
    }
}

//! How [`Store::write`](crate::Store::write) maps a batch onto CQL, and the prepared statements.
//!
//! A batch is planned into parts, applied in this order:
//!
//! 1. **Checks that read only facts that never change back**: a DAG or a run exists (neither is
//!    ever deleted), a pool to delete exists and is not the default pool. A failing check
//!    refuses the batch before anything is written.
//! 2. **DAG registrations** (`PutDag`): idempotent, applied before the runs that need them.
//!    A batch refused by a later guard may leave its DAG version stored; storing it again is a
//!    no-op, and the next parse of the DAG file would store it anyway.
//! 3. **One conditional batch per run partition** `(dag_id, run_id)`, in the order the runs
//!    first appear: the run's creation (`IF run_state = null`) or state change (`IF run_state =
//!    ? AND run_version = ?`) or, failing both, an existence stamp (`IF run_state IN (..)`);
//!    every task-instance put (`IF state = null` to create, `IF state = ? AND try_number = ? AND
//!    token = ?` to change); an existence stamp on each task instance that an attempt, result or
//!    log entry refers to; and those attempts, results and log entries themselves. All of it
//!    applies or none of it does: **this is SQLite's guarantee for everything of one run.**
//!    Creating a scheduled or backfill run first claims its tick in `run_ticks`
//!    (`IF NOT EXISTS`); the claim records the run id, so repeating the same creation after a
//!    crash finds its own claim and completes, and a refused creation releases the claim.
//! 4. Pool deletions (`IF EXISTS`), then variables and connections (each write a lightweight
//!    transaction: `IF sealed = ?` for a guarded re-seal, `IF NOT EXISTS` / `IF EXISTS` for a
//!    put, `IF EXISTS` for a delete), then the unguarded writes (pause flags, pools, import
//!    errors), then audit entries (ids from a sequence advanced with `IF last = ?`).
//!
//! **Where this is weaker than SQLite.** With more than one guarded part (several runs, or a run
//! and a pool deletion), every guard is first checked at serial consistency, so a batch that
//! would fail writes nothing. A concurrent writer that changes a guard between that check and
//! the apply can still make a later part fail after earlier parts were applied; the error then
//! names the applied parts. Unguarded writes of step 4 that fail after step 3 succeeded (a node
//! lost in between) leave the guarded part applied and return `Unavailable`; repeating the batch
//! is safe: every write is idempotent or guarded by what it already wrote. The indexes
//! (`dag_runs`, `runs_by_state`) are written before the run changes and checked on read, so a
//! crash leaves at most an entry that readers skip.

use super::{
    corrupt, serial_consistency, to_json, try_item, CqlStore, SerialScope, AUDIT_IDS_PER_BUCKET,
};
use crate::{
    AuditRow, Error, PoolRow, Result, RunRow, SecretGuard, SecretKind, SecretRow, Store, Write,
    DEFAULT_POOL_NAME,
};
use scylla::client::session::Session;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError, WriteType};
use scylla::frame::types::Consistency;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use std::collections::BTreeSet;
use weft_core::dag_run::{TaskInstanceRecord, TaskVersion};
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::state::DagRunState;
use weft_core::Timestamp;

pub(super) const KIND_ATTEMPT: &str = "attempt";
pub(super) const KIND_XCOM: &str = "xcom";
pub(super) const KIND_LOG: &str = "log";
const AUDIT_SEQUENCE: &str = "audit";

/// The run's static columns in `run_items`.
pub(super) struct RunStatic {
    pub state: DagRunState,
    pub version: i64,
    pub run: RunRow,
    pub write_id: Option<i64>,
    /// The epoch the run was last written under; `None`: never fenced.
    pub owner_epoch: Option<u64>,
}

pub(super) struct TaskInstanceRow {
    pub record: TaskInstanceRecord,
    pub write_id: Option<i64>,
}

macro_rules! statements {
    ($($name:ident: $kind:ident => $cql:expr,)*) => {
        /// Every statement the store runs, prepared once on connect.
        pub(super) struct Statements { $(pub $name: PreparedStatement,)* }

        impl Statements {
            pub async fn prepare(session: &Session, options: &super::CqlOptions) -> Result<Statements> {
                Ok(Statements { $($name: prepare(session, options, Level::$kind, $cql).await?,)* })
            }
        }
    };
}

/// The consistency a statement runs at; see the module documentation of `cql` for the rule.
#[derive(Clone, Copy)]
enum Level {
    /// Reads: LOCAL_QUORUM.
    Read,
    /// Reads that must see every acknowledged compare-and-set: SERIAL or LOCAL_SERIAL.
    SerialRead,
    /// Lightweight transactions and what other regions must see with them: commit at QUORUM
    /// (global scope) or LOCAL_QUORUM (local scope).
    Guarded,
    /// Diagnostics no guard reads: LOCAL_QUORUM.
    Local,
    /// Lease rows: SERIAL and QUORUM whatever the keyspace's serial scope, since the cells
    /// that compete for a shard may sit in any region.
    GlobalGuarded,
}

async fn prepare(
    session: &Session,
    options: &super::CqlOptions,
    level: Level,
    cql: &str,
) -> Result<PreparedStatement> {
    let prepared = session.prepare(cql).await;
    let mut statement = prepared
        .map_err(|error| super::unavailable(options, format!("prepare `{cql}`: {error}")))?;
    statement.set_page_size(super::PAGE_ROWS);
    let commit = match options.serial_scope {
        SerialScope::Global => Consistency::Quorum,
        SerialScope::Local => Consistency::LocalQuorum,
    };
    match level {
        Level::Read | Level::Local => statement.set_consistency(Consistency::LocalQuorum),
        Level::SerialRead => statement.set_consistency(match options.serial_scope {
            SerialScope::Global => Consistency::Serial,
            SerialScope::Local => Consistency::LocalSerial,
        }),
        Level::Guarded => {
            statement.set_consistency(commit);
            statement.set_serial_consistency(Some(serial_consistency(options.serial_scope)));
        }
        Level::GlobalGuarded => {
            statement.set_consistency(Consistency::Quorum);
            statement.set_serial_consistency(Some(serial_consistency(SerialScope::Global)));
        }
    }
    Ok(statement)
}

const RUN_STATIC: &str = "SELECT run_state, run_version, run_body, run_write, owner_epoch FROM run_items WHERE dag_id = ? AND run_id = ? LIMIT 1";
const TASK_INSTANCE: &str =
    "SELECT body, write_id FROM run_items WHERE dag_id = ? AND run_id = ? AND kind = 'ti' \
     AND task_id = ? AND map_index = ? AND item = ''";

statements! {
    dag: Read => "SELECT dag_id, latest_version, fileloc, is_paused, updated_at FROM dags WHERE dag_id = ?",
    dag_serial: SerialRead => "SELECT dag_id FROM dags WHERE dag_id = ?",
    dag_list: Read => "SELECT dag_id FROM dag_list WHERE catalog = ?",
    dag_version: Read => "SELECT dag_id, version_hash, spec_json, created_at FROM dag_versions WHERE dag_id = ? AND version_hash = ?",
    dag_versions: Read => "SELECT dag_id, version_hash, spec_json, created_at, created FROM dag_versions WHERE dag_id = ?",
    run_static: Read => RUN_STATIC,
    run_static_serial: SerialRead => RUN_STATIC,
    task_instance: Read => TASK_INSTANCE,
    task_instance_serial: SerialRead => TASK_INSTANCE,
    task_instances: Read => "SELECT body FROM run_items WHERE dag_id = ? AND run_id = ? AND kind = 'ti'",
    items_of_task: Read => "SELECT body FROM run_items WHERE dag_id = ? AND run_id = ? AND kind = ? AND task_id = ? AND map_index = ?",
    items_of_run: Read => "SELECT body FROM run_items WHERE dag_id = ? AND run_id = ? AND kind = ?",
    item: Read => "SELECT body FROM run_items WHERE dag_id = ? AND run_id = ? AND kind = ? AND task_id = ? AND map_index = ? AND item = ?",
    dag_runs: Read => "SELECT logical_date, run_id FROM dag_runs WHERE dag_id = ? AND run_type = ?",
    dag_runs_before: Read => "SELECT logical_date, run_id FROM dag_runs WHERE dag_id = ? AND run_type = ? AND logical_date < ?",
    runs_by_state: Read => "SELECT dag_id, logical_date, run_id FROM runs_by_state WHERE state = ?",
    pools: Read => "SELECT name, slots, description FROM pools WHERE catalog = ?",
    pool_serial: SerialRead => "SELECT name FROM pools WHERE catalog = 0 AND name = ?",
    import_errors: Read => "SELECT fileloc, line, message, at FROM import_errors WHERE catalog = ?",
    audit: Read => "SELECT id, at, actor, action, target, detail FROM audit WHERE bucket = ? LIMIT ?",
    tick_serial: SerialRead => "SELECT run_id FROM run_ticks WHERE dag_id = ? AND logical_date = ?",
    sequence_serial: SerialRead => "SELECT last FROM sequences WHERE name = ?",

    dag_create: Guarded => "INSERT INTO dags (dag_id, latest_version, fileloc, is_paused, updated_at) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS",
    dag_update: Guarded => "UPDATE dags SET latest_version = ?, updated_at = ? WHERE dag_id = ? IF EXISTS",
    dag_update_fileloc: Guarded => "UPDATE dags SET latest_version = ?, updated_at = ?, fileloc = ? WHERE dag_id = ? IF EXISTS",
    dag_set_paused: Guarded => "UPDATE dags SET is_paused = ? WHERE dag_id = ? IF EXISTS",
    dag_list_insert: Guarded => "INSERT INTO dag_list (catalog, dag_id) VALUES (0, ?)",
    version_insert: Guarded => "INSERT INTO dag_versions (dag_id, version_hash, spec_json, created_at, created) VALUES (?, ?, ?, ?, now()) IF NOT EXISTS",
    run_create: Guarded => "UPDATE run_items SET run_state = ?, run_version = 1, run_body = ?, run_write = ? \
         WHERE dag_id = ? AND run_id = ? IF run_state = null",
    run_update: Guarded => "UPDATE run_items SET run_state = ?, run_version = ?, run_body = ?, run_write = ? \
         WHERE dag_id = ? AND run_id = ? IF run_state = ? AND run_version = ?",
    run_stamp: Guarded => "UPDATE run_items SET run_write = ? WHERE dag_id = ? AND run_id = ? \
         IF run_state IN ('queued', 'running', 'success', 'failed')",
    run_create_fenced: Guarded => "UPDATE run_items SET run_state = ?, run_version = 1, run_body = ?, run_write = ?, owner_epoch = ? \
         WHERE dag_id = ? AND run_id = ? IF run_state = null",
    run_update_fenced: Guarded => "UPDATE run_items SET run_state = ?, run_version = ?, run_body = ?, run_write = ? \
         WHERE dag_id = ? AND run_id = ? IF run_state = ? AND run_version = ? AND owner_epoch = ?",
    run_stamp_fenced: Guarded => "UPDATE run_items SET run_write = ? WHERE dag_id = ? AND run_id = ? \
         IF run_state IN ('queued', 'running', 'success', 'failed') AND owner_epoch = ?",
    run_adopt: Guarded => "UPDATE run_items SET owner_epoch = ? WHERE dag_id = ? AND run_id = ? \
         IF run_state IN ('queued', 'running', 'success', 'failed') AND owner_epoch = ?",
    run_adopt_unfenced: Guarded => "UPDATE run_items SET owner_epoch = ? WHERE dag_id = ? AND run_id = ? \
         IF run_state IN ('queued', 'running', 'success', 'failed') AND owner_epoch = null",
    leases: Read => "SELECT shard, owner, epoch, version, written_at FROM shard_leases WHERE shard IN ?",
    lease_create: GlobalGuarded => "INSERT INTO shard_leases (shard, owner, epoch, version, written_at) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS",
    lease_update: GlobalGuarded => "UPDATE shard_leases SET owner = ?, epoch = ?, version = ?, written_at = ? \
         WHERE shard = ? IF epoch = ? AND version = ?",
    cells: Read => "SELECT name, region, address, api, version, beat_at, started_at FROM cells WHERE catalog = ?",
    cell_put: Local => "INSERT INTO cells (catalog, name, region, address, api, version, beat_at, started_at) VALUES (0, ?, ?, ?, ?, ?, ?, ?)",
    cell_delete: Local => "DELETE FROM cells WHERE catalog = 0 AND name = ?",
    task_instance_create: Guarded => "UPDATE run_items SET state = ?, try_number = ?, fencing_token = ?, write_id = ?, body = ? \
         WHERE dag_id = ? AND run_id = ? AND kind = 'ti' AND task_id = ? AND map_index = ? AND item = '' IF state = null",
    task_instance_update: Guarded => "UPDATE run_items SET state = ?, try_number = ?, fencing_token = ?, write_id = ?, body = ? \
         WHERE dag_id = ? AND run_id = ? AND kind = 'ti' AND task_id = ? AND map_index = ? AND item = '' \
         IF state = ? AND try_number = ? AND fencing_token = ?",
    task_instance_stamp: Guarded => "UPDATE run_items SET write_id = ? \
         WHERE dag_id = ? AND run_id = ? AND kind = 'ti' AND task_id = ? AND map_index = ? AND item = '' \
         IF state IN ('none', 'scheduled', 'queued', 'running', 'success', 'failed', 'up_for_retry', 'upstream_failed', 'skipped', 'removed')",
    item_put: Guarded => "UPDATE run_items SET body = ? WHERE dag_id = ? AND run_id = ? AND kind = ? AND task_id = ? AND map_index = ? AND item = ?",
    xcoms_delete: Guarded => "DELETE FROM run_items WHERE dag_id = ? AND run_id = ? AND kind = 'xcom' AND task_id = ? AND map_index = ?",
    dag_runs_insert: Guarded => "INSERT INTO dag_runs (dag_id, run_type, logical_date, run_id) VALUES (?, ?, ?, ?)",
    tick_claim: Guarded => "INSERT INTO run_ticks (dag_id, logical_date, run_id) VALUES (?, ?, ?) IF NOT EXISTS",
    tick_release: Guarded => "DELETE FROM run_ticks WHERE dag_id = ? AND logical_date = ? IF run_id = ?",
    state_index_insert: Guarded => "INSERT INTO runs_by_state (state, dag_id, logical_date, run_id) VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
    state_index_delete: Guarded => "DELETE FROM runs_by_state USING TIMESTAMP ? WHERE state = ? AND dag_id = ? AND logical_date = ? AND run_id = ?",
    pool_put: Local => "INSERT INTO pools (catalog, name, slots, description) VALUES (0, ?, ?, ?)",
    pool_create_if_absent: Guarded => "INSERT INTO pools (catalog, name, slots, description) VALUES (0, ?, ?, ?) IF NOT EXISTS",
    pool_delete: Guarded => "DELETE FROM pools WHERE catalog = 0 AND name = ? IF EXISTS",
    import_error_put: Local => "INSERT INTO import_errors (catalog, fileloc, line, message, at) VALUES (0, ?, ?, ?, ?)",
    import_error_clear: Local => "DELETE FROM import_errors WHERE catalog = 0 AND fileloc = ?",
    sequence_init: Guarded => "INSERT INTO sequences (name, last) VALUES (?, 0) IF NOT EXISTS",
    sequence_advance: Guarded => "UPDATE sequences SET last = ? WHERE name = ? IF last = ?",
    users: Read => "SELECT body FROM users WHERE catalog = ?",
    user: Read => "SELECT body FROM users WHERE catalog = 0 AND username = ?",
    user_put: Local => "INSERT INTO users (catalog, username, body) VALUES (0, ?, ?)",
    api_tokens: Read => "SELECT body FROM api_tokens WHERE catalog = ?",
    api_token: Read => "SELECT body FROM api_tokens WHERE catalog = 0 AND id = ?",
    api_token_put: Local => "INSERT INTO api_tokens (catalog, id, body) VALUES (0, ?, ?)",
    api_token_delete: Local => "DELETE FROM api_tokens WHERE catalog = 0 AND id = ?",
    secrets: Read => "SELECT kind, id, description, sealed, updated_at FROM secrets WHERE catalog = 0 AND kind = ?",
    secret: Read => "SELECT kind, id, description, sealed, updated_at FROM secrets WHERE catalog = 0 AND kind = ? AND id = ?",
    secret_serial: SerialRead => "SELECT sealed FROM secrets WHERE catalog = 0 AND kind = ? AND id = ?",
    secret_create: Guarded => "INSERT INTO secrets (catalog, kind, id, description, sealed, updated_at) VALUES (0, ?, ?, ?, ?, ?) IF NOT EXISTS",
    secret_replace: Guarded => "UPDATE secrets SET description = ?, sealed = ?, updated_at = ? WHERE catalog = 0 AND kind = ? AND id = ? IF EXISTS",
    secret_reseal: Guarded => "UPDATE secrets SET description = ?, sealed = ?, updated_at = ? WHERE catalog = 0 AND kind = ? AND id = ? IF sealed = ?",
    secret_delete: Guarded => "DELETE FROM secrets WHERE catalog = 0 AND kind = ? AND id = ? IF EXISTS",
    audit_insert: Local => "INSERT INTO audit (bucket, id, at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
}

// ---------------------------------------------------------------------------------------------
// Planning

/// Everything a batch writes to one run partition.
#[derive(Default)]
struct RunPart {
    key: Option<RunKey>,
    create: Option<RunRow>,
    update: Option<RunUpdate>,
    /// Task-instance puts, in batch order; at most one per task instance.
    task_instances: Vec<(Option<TaskVersion>, TaskInstanceRecord)>,
    /// Task instances that attempts, results or logs of this batch refer to.
    referenced: BTreeSet<TaskInstanceKey>,
    items: Vec<Item>,
    /// The owner epoch the batch writes this run under (`Write::Fence`).
    fence: Option<u64>,
}

struct RunUpdate {
    expected: DagRunState,
    state: DagRunState,
    started_at: Option<Timestamp>,
    ended_at: Option<Timestamp>,
}

enum Item {
    Put {
        key: TaskInstanceKey,
        kind: &'static str,
        item: String,
        body: String,
    },
    DeleteXcoms {
        key: TaskInstanceKey,
    },
}

#[derive(Default)]
struct Plan {
    /// DAGs that must exist before the batch, and are not registered by it.
    dags_required: BTreeSet<String>,
    dag_writes: Vec<Write>,
    runs: Vec<RunPart>,
    pool_deletions: Vec<String>,
    /// `PutSecret` and `DeleteSecret`, each a lightweight transaction of its own.
    secrets: Vec<Write>,
    plain: Vec<Write>,
    audit: Vec<AuditRow>,
    /// `PutLease`, each a lightweight transaction of its own at global serial consistency.
    leases: Vec<Write>,
}

impl Plan {
    fn of(batch: Vec<Write>) -> Result<Plan> {
        let mut plan = Plan::default();
        let mut registered = BTreeSet::new();
        for write in batch {
            match write {
                Write::PutDag { .. } => {
                    if let Write::PutDag { version, .. } = &write {
                        registered.insert(version.dag_id.clone());
                    }
                    plan.dag_writes.push(write);
                }
                Write::SetPaused { ref dag_id, .. } => {
                    if !registered.contains(dag_id) {
                        plan.dags_required.insert(dag_id.clone());
                    }
                    plan.plain.push(write);
                }
                Write::CreateRun(run) => {
                    if !registered.contains(run.key.dag_id.as_str()) {
                        plan.dags_required.insert(run.key.dag_id.to_string());
                    }
                    let part = plan.run_part(&run.key);
                    if part.create.is_some() {
                        return Err(conflict(
                            format!("run {}", run.key),
                            "created twice in one batch",
                        ));
                    }
                    part.create = Some(run);
                }
                Write::UpdateRun {
                    key,
                    expected,
                    state,
                    started_at,
                    ended_at,
                } => {
                    let part = plan.run_part(&key);
                    if part.update.is_some() || part.create.is_some() {
                        return Err(conflict(
                            format!("run {key}"),
                            "the CQL store applies one change of a run per batch: split the batch",
                        ));
                    }
                    part.update = Some(RunUpdate {
                        expected,
                        state,
                        started_at,
                        ended_at,
                    });
                }
                Write::PutTaskInstance { expected, record } => {
                    let part = plan.run_part(&run_key(&record.key));
                    if part
                        .task_instances
                        .iter()
                        .any(|(_, put)| put.key == record.key)
                    {
                        return Err(conflict(
                            format!("task instance {}", record.key),
                            "the CQL store applies one change of a task instance per batch: split the batch",
                        ));
                    }
                    part.task_instances.push((expected, record));
                }
                Write::PutAttempt(attempt) => {
                    let item = Item::Put {
                        key: attempt.attempt.key.clone(),
                        kind: KIND_ATTEMPT,
                        item: try_item(attempt.attempt.try_number),
                        body: to_json(&attempt),
                    };
                    plan.run_item(&attempt.attempt.key, item, true);
                }
                Write::PutXcom(xcom) => {
                    let item = Item::Put {
                        key: xcom.key.clone(),
                        kind: KIND_XCOM,
                        item: xcom.name.clone(),
                        body: to_json(&xcom),
                    };
                    plan.run_item(&xcom.key, item, true);
                }
                Write::PutLog(log) => {
                    let item = Item::Put {
                        key: log.key.clone(),
                        kind: KIND_LOG,
                        item: try_item(log.try_number),
                        body: to_json(&log),
                    };
                    plan.run_item(&log.key, item, true);
                }
                Write::DeleteXcoms { key } => {
                    plan.run_item(&key.clone(), Item::DeleteXcoms { key }, false)
                }
                Write::DeletePool { name } => {
                    if name == DEFAULT_POOL_NAME {
                        return Err(conflict(
                            format!("pool `{name}`"),
                            "the default pool cannot be deleted; set its slots instead",
                        ));
                    }
                    plan.pool_deletions.push(name);
                }
                Write::Audit(entry) => plan.audit.push(entry),
                Write::PutImportError(_)
                | Write::ClearImportError { .. }
                | Write::PutPool(_)
                | Write::PutUser(_)
                | Write::PutApiToken(_)
                | Write::DeleteApiToken { .. } => plan.plain.push(write),
                Write::PutSecret { .. } | Write::DeleteSecret { .. } => plan.secrets.push(write),
                Write::Fence { run, epoch } => {
                    let part = plan.run_part(&run);
                    if part.fence.is_some_and(|fence| fence != epoch) {
                        return Err(conflict(
                            format!("run {run}"),
                            "fenced with two epochs in one batch",
                        ));
                    }
                    part.fence = Some(epoch);
                }
                Write::PutLease { .. } => plan.leases.push(write),
                Write::PutCell(_) | Write::DeleteCell { .. } => plan.plain.push(write),
            }
        }
        for part in &mut plan.runs {
            let puts: BTreeSet<&TaskInstanceKey> = part
                .task_instances
                .iter()
                .map(|(_, record)| &record.key)
                .collect();
            part.referenced.retain(|key| !puts.contains(key));
        }
        Ok(plan)
    }

    fn run_part(&mut self, key: &RunKey) -> &mut RunPart {
        let index = match self
            .runs
            .iter()
            .position(|part| part.key.as_ref() == Some(key))
        {
            Some(index) => index,
            None => {
                self.runs.push(RunPart {
                    key: Some(key.clone()),
                    ..RunPart::default()
                });
                self.runs.len() - 1
            }
        };
        &mut self.runs[index]
    }

    fn run_item(&mut self, key: &TaskInstanceKey, item: Item, needs_task_instance: bool) {
        let part = self.run_part(&run_key(key));
        if needs_task_instance {
            part.referenced.insert(key.clone());
        }
        part.items.push(item);
    }
}

fn run_key(key: &TaskInstanceKey) -> RunKey {
    RunKey {
        dag_id: key.dag_id.clone(),
        run_id: key.run_id.clone(),
    }
}

fn conflict(what: impl Into<String>, detail: impl Into<String>) -> Error {
    Error::Conflict {
        what: what.into(),
        detail: detail.into(),
    }
}

fn not_found(what: impl Into<String>) -> Error {
    Error::NotFound { what: what.into() }
}

// ---------------------------------------------------------------------------------------------
// Applying

pub(super) async fn apply(store: &CqlStore, batch: Vec<Write>) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let plan = Plan::of(batch)?;
    for dag_id in &plan.dags_required {
        if !dag_exists(store, dag_id).await? {
            return Err(not_found(format!("dag `{dag_id}`")));
        }
    }
    for name in &plan.pool_deletions {
        if !pool_exists(store, name).await? {
            return Err(not_found(format!("pool `{name}`")));
        }
    }
    // With one guarded part the conditional batch is all or nothing by itself; with more,
    // check every guard first so that a batch that would fail writes nothing.
    if plan.runs.len() + plan.pool_deletions.len() + plan.secrets.len() + plan.leases.len() > 1 {
        for part in &plan.runs {
            check_guards(store, part).await?;
        }
        for write in &plan.secrets {
            check_secret_guard(store, write).await?;
        }
    }
    for write in &plan.dag_writes {
        if let Write::PutDag {
            version,
            fileloc,
            paused_if_new,
        } = write
        {
            put_dag(store, version, fileloc.as_deref(), *paused_if_new).await?;
        }
    }
    let mut applied: Vec<String> = Vec::new();
    for part in &plan.runs {
        let key = part.key.as_ref().expect("a run part has a key");
        apply_run_part(store, part)
            .await
            .map_err(|error| partially_applied(error, &applied))?;
        applied.push(format!("run {key}"));
    }
    for name in &plan.pool_deletions {
        delete_pool(store, name)
            .await
            .map_err(|error| partially_applied(error, &applied))?;
        applied.push(format!("pool `{name}` deletion"));
    }
    for write in &plan.secrets {
        apply_secret(store, write)
            .await
            .map_err(|error| partially_applied(error, &applied))?;
        if let Write::PutSecret { row, .. } = write {
            applied.push(format!("{} `{}`", row.kind.as_str(), row.id));
        }
    }
    for write in &plan.leases {
        apply_lease(store, write)
            .await
            .map_err(|error| partially_applied(error, &applied))?;
    }
    for write in &plan.plain {
        apply_plain(store, write).await?;
    }
    if !plan.audit.is_empty() {
        append_audit(store, &plan.audit).await?;
    }
    Ok(())
}

/// A guard failed after other parts of the batch were applied: say so.
fn partially_applied(error: Error, applied: &[String]) -> Error {
    if applied.is_empty() {
        return error;
    }
    let note = format!(
        " (a concurrent writer changed it after the batch was checked; already applied: {})",
        applied.join(", ")
    );
    match error {
        Error::Conflict { what, detail } => Error::Conflict {
            what,
            detail: detail + &note,
        },
        Error::NotFound { what } => Error::NotFound { what: what + &note },
        other => other,
    }
}

async fn execute(
    store: &CqlStore,
    statement: &PreparedStatement,
    values: impl scylla::serialize::row::SerializeRow,
    doing: &str,
) -> Result<()> {
    let result = store.inner.session.execute_unpaged(statement, values).await;
    result.map_err(|error| store.error(doing, error))?;
    Ok(())
}

/// Run a lightweight transaction; `Ok(true)` when it applied.
async fn execute_conditional(
    store: &CqlStore,
    statement: &PreparedStatement,
    values: impl scylla::serialize::row::SerializeRow,
    doing: &str,
) -> Result<bool> {
    let result = store.inner.session.execute_unpaged(statement, values).await;
    let result = result.map_err(|error| store.error(doing, error))?;
    applied_column(result, doing)
}

fn applied_column(
    result: scylla::response::query_result::QueryResult,
    doing: &str,
) -> Result<bool> {
    let rows = result
        .into_rows_result()
        .map_err(|error| corrupt(doing, error))?;
    let row: Row = rows.first_row().map_err(|error| corrupt(doing, error))?;
    match row.columns.first() {
        Some(Some(CqlValue::Boolean(applied))) => Ok(*applied),
        other => Err(corrupt(doing, format!("no [applied] column: {other:?}"))),
    }
}

async fn dag_exists(store: &CqlStore, dag_id: &str) -> Result<bool> {
    if store.dag(dag_id).await?.is_some() {
        return Ok(true);
    }
    // Not seen at LOCAL_QUORUM: confirm at serial consistency before refusing, since a DAG
    // registered in another region may not have reached this one's quorum yet.
    let rows: Vec<(String,)> = store
        .rows(&store.inner.statements.dag_serial, (dag_id,), "read a dag")
        .await?;
    Ok(!rows.is_empty())
}

async fn pool_exists(store: &CqlStore, name: &str) -> Result<bool> {
    let rows: Vec<(String,)> = store
        .rows(&store.inner.statements.pool_serial, (name,), "read a pool")
        .await?;
    Ok(!rows.is_empty())
}

async fn put_dag(
    store: &CqlStore,
    version: &crate::DagVersionRow,
    fileloc: Option<&str>,
    paused_if_new: bool,
) -> Result<()> {
    let statements = &store.inner.statements;
    let updated_at = version.created_at.timestamp_micros();
    let version_values = (
        &version.dag_id,
        &version.version_hash,
        &version.spec_json,
        updated_at,
    );
    // Idempotent: a version already stored keeps its first text and creation time.
    execute_conditional(
        store,
        &statements.version_insert,
        version_values,
        "store a dag version",
    )
    .await?;
    let create = (
        &version.dag_id,
        &version.version_hash,
        fileloc,
        paused_if_new,
        updated_at,
    );
    let created =
        execute_conditional(store, &statements.dag_create, create, "register a dag").await?;
    if !created {
        match fileloc {
            Some(fileloc) => {
                let values = (&version.version_hash, updated_at, fileloc, &version.dag_id);
                execute_conditional(
                    store,
                    &statements.dag_update_fileloc,
                    values,
                    "update a dag",
                )
                .await?;
            }
            None => {
                let values = (&version.version_hash, updated_at, &version.dag_id);
                execute_conditional(store, &statements.dag_update, values, "update a dag").await?;
            }
        }
    }
    execute(
        store,
        &statements.dag_list_insert,
        (&version.dag_id,),
        "list a dag",
    )
    .await
}

async fn delete_pool(store: &CqlStore, name: &str) -> Result<()> {
    let deleted = execute_conditional(
        store,
        &store.inner.statements.pool_delete,
        (name,),
        "delete a pool",
    )
    .await?;
    if deleted {
        Ok(())
    } else {
        Err(not_found(format!("pool `{name}`")))
    }
}

fn secret_conflict(row: &SecretRow, guard: &SecretGuard) -> Error {
    conflict(
        format!("{} `{}`", row.kind.as_str(), row.id),
        crate::secret_guard_failed(guard),
    )
}

/// The sealed value stored for a row, read at serial consistency.
async fn stored_sealed(store: &CqlStore, kind: SecretKind, id: &str) -> Result<Option<String>> {
    let rows: Vec<(Option<String>,)> = store
        .rows(
            &store.inner.statements.secret_serial,
            (kind.as_str(), id),
            "read a variable or connection",
        )
        .await?;
    Ok(rows.into_iter().next().and_then(|(sealed,)| sealed))
}

async fn check_secret_guard(store: &CqlStore, write: &Write) -> Result<()> {
    if let Write::PutSecret { row, guard } = write {
        let stored = || stored_sealed(store, row.kind, &row.id);
        let holds = match guard {
            SecretGuard::Any => true,
            SecretGuard::Absent => stored().await?.is_none(),
            SecretGuard::Sealed(expected) => stored().await?.as_deref() == Some(expected.as_str()),
        };
        if !holds {
            return Err(secret_conflict(row, guard));
        }
    }
    Ok(())
}

/// A variable or connection write. Every write of the table is a lightweight transaction: an
/// unconditional put creates (`IF NOT EXISTS`) or replaces (`IF EXISTS`), whichever holds,
/// trying again if a concurrent create or delete came in between.
async fn apply_secret(store: &CqlStore, write: &Write) -> Result<()> {
    let statements = &store.inner.statements;
    match write {
        Write::PutSecret { row, guard } => {
            let kind = row.kind.as_str();
            let at = row.updated_at.timestamp_micros();
            match guard {
                SecretGuard::Sealed(expected) => {
                    let values = (&row.description, &row.sealed, at, kind, &row.id, expected);
                    let doing = "change a variable or connection";
                    let statement = &statements.secret_reseal;
                    return match execute_conditional(store, statement, values, doing).await? {
                        true => Ok(()),
                        false => Err(secret_conflict(row, guard)),
                    };
                }
                SecretGuard::Absent => {
                    let values = (kind, &row.id, &row.description, &row.sealed, at);
                    let doing = "create a variable or connection";
                    let statement = &statements.secret_create;
                    return match execute_conditional(store, statement, values, doing).await? {
                        true => Ok(()),
                        false => Err(secret_conflict(row, guard)),
                    };
                }
                SecretGuard::Any => {}
            }
            for _ in 0..store.inner.options.cas_attempts_max.max(1) {
                let values = (kind, &row.id, &row.description, &row.sealed, at);
                let doing = "create a variable or connection";
                if execute_conditional(store, &statements.secret_create, values, doing).await? {
                    return Ok(());
                }
                let values = (&row.description, &row.sealed, at, kind, &row.id);
                let doing = "replace a variable or connection";
                if execute_conditional(store, &statements.secret_replace, values, doing).await? {
                    return Ok(());
                }
            }
            Err(conflict(
                format!("{kind} `{}`", row.id),
                "it was created and deleted concurrently again and again; write it again",
            ))
        }
        Write::DeleteSecret { kind, id } => {
            // Deleting a row that does not exist is not an error.
            let values = (kind.as_str(), id);
            let doing = "delete a variable or connection";
            execute_conditional(store, &statements.secret_delete, values, doing).await?;
            Ok(())
        }
        _ => Ok(()),
    }
}

async fn apply_plain(store: &CqlStore, write: &Write) -> Result<()> {
    let statements = &store.inner.statements;
    match write {
        Write::SetPaused { dag_id, paused } => {
            let applied = execute_conditional(
                store,
                &statements.dag_set_paused,
                (paused, dag_id),
                "pause a dag",
            )
            .await?;
            if applied {
                Ok(())
            } else {
                Err(not_found(format!("dag `{dag_id}`")))
            }
        }
        Write::PutPool(PoolRow {
            name,
            slots,
            description,
        }) => {
            execute(
                store,
                &statements.pool_put,
                (name, *slots as i64, description),
                "put a pool",
            )
            .await
        }
        Write::PutImportError(error) => {
            let values = (
                &error.fileloc,
                error.line.map(i64::from),
                &error.message,
                error.at.timestamp_micros(),
            );
            execute(
                store,
                &statements.import_error_put,
                values,
                "record an import error",
            )
            .await
        }
        Write::ClearImportError { fileloc } => {
            execute(
                store,
                &statements.import_error_clear,
                (fileloc,),
                "clear an import error",
            )
            .await
        }
        Write::PutUser(user) => {
            let values = (&user.username, to_json(user));
            execute(store, &statements.user_put, values, "put a user").await
        }
        Write::PutApiToken(token) => {
            let values = (&token.id, to_json(token));
            execute(store, &statements.api_token_put, values, "put an api token").await
        }
        Write::DeleteApiToken { id } => {
            let values = (id,);
            execute(
                store,
                &statements.api_token_delete,
                values,
                "delete an api token",
            )
            .await
        }
        Write::PutCell(cell) => {
            let values = (
                &cell.name,
                &cell.region,
                &cell.address,
                &cell.api,
                cell.version as i64,
                cell.beat_at.timestamp_micros(),
                cell.started_at.timestamp_micros(),
            );
            execute(
                store,
                &statements.cell_put,
                values,
                "write a cell's heartbeat",
            )
            .await
        }
        Write::DeleteCell { name } => {
            execute(store, &statements.cell_delete, (name,), "remove a cell").await
        }
        _ => Ok(()),
    }
}

/// A compare-and-set of a lease row, at global serial consistency. An uncertain outcome is an
/// error: the lease keeper reads the row again and decides from what it finds.
async fn apply_lease(store: &CqlStore, write: &Write) -> Result<()> {
    let Write::PutLease { expect, row, at } = write else {
        return Ok(());
    };
    let statements = &store.inner.statements;
    let shard = row.shard as i32;
    let at = at.timestamp_micros();
    let doing = "write a shard lease";
    let applied = match expect {
        None => {
            let values = (shard, &row.owner, row.epoch as i64, row.version as i64, at);
            execute_conditional(store, &statements.lease_create, values, doing).await?
        }
        Some((epoch, version)) => {
            let values = (
                &row.owner,
                row.epoch as i64,
                row.version as i64,
                at,
                shard,
                *epoch as i64,
                *version as i64,
            );
            execute_conditional(store, &statements.lease_update, values, doing).await?
        }
    };
    if applied {
        Ok(())
    } else {
        Err(conflict(
            format!("lease of shard {}", row.shard),
            "it changed since it was read",
        ))
    }
}

/// Raise a run's owner epoch from what a serial read found to `epoch` (the fenced batch is
/// then tried again); refuse when the run is owned under a newer epoch.
async fn adopt(store: &CqlStore, key: &RunKey, found: Option<u64>, epoch: u64) -> Result<()> {
    if let Some(current) = found.filter(|current| *current > epoch) {
        return Err(Error::Fenced {
            run: key.to_string(),
            epoch,
            current,
        });
    }
    if found == Some(epoch) {
        return Ok(());
    }
    let statements = &store.inner.statements;
    let doing = "adopt a run under a new owner epoch";
    let partition = (key.dag_id.as_str(), key.run_id.as_str());
    // Not applied: another writer moved the epoch meanwhile; the caller's next attempt reads it.
    match found {
        None => {
            let values = (epoch as i64, partition.0, partition.1);
            execute_conditional(store, &statements.run_adopt_unfenced, values, doing).await?;
        }
        Some(current) => {
            let values = (epoch as i64, partition.0, partition.1, current as i64);
            execute_conditional(store, &statements.run_adopt, values, doing).await?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One run partition

/// What one attempt at a conditional batch learned.
enum Outcome {
    Applied,
    NotApplied,
    /// Timed out or lost its connection: it may or may not have applied.
    Uncertain(String),
}

async fn apply_run_part(store: &CqlStore, part: &RunPart) -> Result<()> {
    let key = part.key.as_ref().expect("a run part has a key");
    let attempts_max = store.inner.options.cas_attempts_max.max(1);
    let mut last_uncertainty = String::new();
    for _ in 0..attempts_max {
        let write_id = store.next_write_id();
        // The run's current version, read at serial consistency, for a state change.
        let current = match &part.update {
            Some(update) => {
                let current = store
                    .run_static(key, true)
                    .await?
                    .ok_or_else(|| not_found(format!("run {key}")))?;
                if current.state != update.expected {
                    return Err(conflict(
                        format!("run {key}"),
                        format!(
                            "expected state {}, found {}",
                            update.expected, current.state
                        ),
                    ));
                }
                Some(current)
            }
            None => None,
        };
        let claimed_tick = match &part.create {
            Some(run) => prepare_creation(store, run).await?,
            None => false,
        };
        if let (Some(update), Some(current)) = (&part.update, &current) {
            let values = (
                update.state.as_str(),
                key.dag_id.as_str(),
                current.run.logical_date.timestamp_micros(),
                key.run_id.as_str(),
            );
            let index = (values.0, values.1, values.2, values.3, current.version + 1);
            execute(
                store,
                &store.inner.statements.state_index_insert,
                index,
                "index a run by state",
            )
            .await?;
        }
        let (batch, values) = conditional_batch(store, part, current.as_ref(), write_id);
        let outcome = match store.inner.session.batch(&batch, values).await {
            Ok(result) => {
                if applied_column(result, "apply a run's writes")? {
                    Outcome::Applied
                } else {
                    Outcome::NotApplied
                }
            }
            Err(error) => classify(store, error)?,
        };
        let applied = match outcome {
            Outcome::Applied => true,
            Outcome::NotApplied => false,
            Outcome::Uncertain(reason) => {
                last_uncertainty = reason;
                stamped(store, part, write_id).await?
            }
        };
        if applied {
            if let (Some(update), Some(current)) = (&part.update, &current) {
                // An update to the same state keeps its entry: deleting it at the timestamp the
                // new entry was written with would win the tie and drop the run from the index.
                if update.expected != update.state {
                    remove_old_state_index(store, key, update.expected, current).await;
                }
            }
            return Ok(());
        }
        if let Err(error) = check_guards(store, part).await {
            if claimed_tick {
                release_tick(store, part).await;
            }
            return Err(error);
        }
        // Every guard holds, yet the batch did not apply: a race that has since settled, or an
        // uncertain outcome that did not happen. Try again with a new write id.
    }
    Err(Error::Unavailable(format!(
        "the writes of run {key} neither applied nor conflicted after {attempts_max} attempts \
         (last uncertain outcome: {last_uncertainty}); the CQL cluster is overloaded or partitioned: \
         check deploy/cql-test-cluster.sh status and re-read before deciding again"
    )))
}

/// A driver error of a conditional batch: definite failures become store errors, the rest are
/// uncertain outcomes to resolve by reading back.
fn classify(store: &CqlStore, error: ExecutionError) -> Result<Outcome> {
    let uncertain = match &error {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db_error, _)) => {
            match db_error {
                DbError::WriteTimeout {
                    write_type: WriteType::Cas,
                    ..
                } => true,
                DbError::WriteTimeout { .. } | DbError::WriteFailure { .. } | DbError::Other(_) => {
                    true
                }
                // Refused before any replica was asked: it did not apply.
                DbError::Unavailable { .. } | DbError::Overloaded | DbError::IsBootstrapping => {
                    false
                }
                _ => false,
            }
        }
        ExecutionError::LastAttemptError(RequestAttemptError::BrokenConnectionError(_)) => true,
        ExecutionError::RequestTimeout(_) => true,
        _ => false,
    };
    if uncertain {
        Ok(Outcome::Uncertain(error.to_string()))
    } else {
        Err(store.error("apply a run's writes", error))
    }
}

/// Whether a conditional batch with `write_id` applied, read at serial consistency (which
/// completes any in-progress Paxos round it finds). The batch stamps the run and every task
/// instance it puts; finding the stamp on any of them proves it applied.
async fn stamped(store: &CqlStore, part: &RunPart, write_id: i64) -> Result<bool> {
    let key = part.key.as_ref().expect("a run part has a key");
    if let Some(run) = store.run_static(key, true).await? {
        if run.write_id == Some(write_id) {
            return Ok(true);
        }
    }
    for (_, record) in &part.task_instances {
        if let Some(row) = store.task_instance_row(&record.key, true).await? {
            if row.write_id == Some(write_id) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Evaluate the part's guards, in batch order, against a serial read: the first that fails is
/// the error the batch reports, as the SQLite backend would report it.
async fn check_guards(store: &CqlStore, part: &RunPart) -> Result<()> {
    let key = part.key.as_ref().expect("a run part has a key");
    let run = store.run_static(key, true).await?;
    match (&part.create, &run) {
        (Some(_), Some(_)) => {
            return Err(conflict(format!("run {key}"), "a run with this id exists"))
        }
        (Some(run), None) => check_tick_free(store, run).await?,
        (None, None) => return Err(not_found(format!("run {key}"))),
        (None, Some(_)) => {}
    }
    // The fence first: a deposed owner's batch is refused for its epoch, whatever else the
    // new owner has changed since.
    if let (Some(epoch), None, Some(run)) = (part.fence, &part.create, &run) {
        adopt(store, key, run.owner_epoch, epoch).await?;
    }
    if let (Some(update), Some(run)) = (&part.update, &run) {
        if run.state != update.expected {
            return Err(conflict(
                format!("run {key}"),
                format!("expected state {}, found {}", update.expected, run.state),
            ));
        }
    }
    for (expected, record) in &part.task_instances {
        let found = if part.create.is_some() {
            None
        } else {
            store
                .task_instance_row(&record.key, true)
                .await?
                .map(|row| row.record.version())
        };
        let what = || format!("task instance {}", record.key);
        match (expected, found) {
            (None, Some(found)) => return Err(conflict(what(), format!("exists with {found:?}"))),
            (Some(expected), None) => {
                return Err(conflict(
                    what(),
                    format!("expected {expected:?}, found no row"),
                ))
            }
            (Some(expected), Some(found)) if *expected != found => {
                return Err(conflict(
                    what(),
                    format!("expected {expected:?}, found {found:?}"),
                ))
            }
            _ => {}
        }
    }
    for referenced in &part.referenced {
        if part.create.is_some() || store.task_instance_row(referenced, true).await?.is_none() {
            return Err(not_found(format!("task instance {referenced}")));
        }
    }
    Ok(())
}

async fn check_tick_free(store: &CqlStore, run: &RunRow) -> Result<()> {
    if !crate::memory::takes_schedule_tick(run.run_type) {
        return Ok(());
    }
    let claim = (run.key.dag_id.as_str(), run.logical_date.timestamp_micros());
    let rows: Vec<(Option<String>,)> = store
        .rows(
            &store.inner.statements.tick_serial,
            claim,
            "read a schedule tick",
        )
        .await?;
    match rows.into_iter().next().and_then(|(holder,)| holder) {
        Some(holder) if holder != run.key.run_id.as_str() => Err(conflict(
            format!("run {}", run.key),
            format!(
                "run {}/{holder} already has logical date {}",
                run.key.dag_id.as_str(),
                run.logical_date
            ),
        )),
        _ => Ok(()),
    }
}

/// Before a run's conditional batch: index it (so no reader misses it once it exists) and
/// claim its schedule tick. Returns whether this call claimed the tick.
async fn prepare_creation(store: &CqlStore, run: &RunRow) -> Result<bool> {
    let statements = &store.inner.statements;
    let logical_date = run.logical_date.timestamp_micros();
    let listing = (
        run.key.dag_id.as_str(),
        run.run_type.as_str(),
        logical_date,
        run.key.run_id.as_str(),
    );
    execute(store, &statements.dag_runs_insert, listing, "list a run").await?;
    let index = (
        run.state.as_str(),
        run.key.dag_id.as_str(),
        logical_date,
        run.key.run_id.as_str(),
        1_i64,
    );
    execute(
        store,
        &statements.state_index_insert,
        index,
        "index a run by state",
    )
    .await?;
    if !crate::memory::takes_schedule_tick(run.run_type) {
        return Ok(false);
    }
    let claim = (
        run.key.dag_id.as_str(),
        logical_date,
        run.key.run_id.as_str(),
    );
    let result = store
        .inner
        .session
        .execute_unpaged(&statements.tick_claim, claim)
        .await;
    let result = result.map_err(|error| store.error("claim a schedule tick", error))?;
    let rows = result
        .into_rows_result()
        .map_err(|error| corrupt("claim a schedule tick", error))?;
    let row: Row = rows
        .first_row()
        .map_err(|error| corrupt("claim a schedule tick", error))?;
    if let Some(Some(CqlValue::Boolean(true))) = row.columns.first() {
        return Ok(true);
    }
    // Not applied: the result carries the claim's current row (`[applied], dag_id,
    // logical_date, run_id`). Our own claim, left by an interrupted attempt, is ours to use.
    let holder = row.columns.iter().rev().find_map(|column| match column {
        Some(CqlValue::Text(text)) if *text != run.key.dag_id.as_str() => Some(text.clone()),
        _ => None,
    });
    match holder {
        Some(holder) if holder == run.key.run_id.as_str() => Ok(false),
        Some(holder) => Err(conflict(
            format!("run {}", run.key),
            format!(
                "run {}/{holder} already has logical date {}",
                run.key.dag_id.as_str(),
                run.logical_date
            ),
        )),
        None if row.columns.len() >= 4 => Ok(false),
        None => Err(corrupt(
            "claim a schedule tick",
            "the refused claim carries no run id",
        )),
    }
}

async fn release_tick(store: &CqlStore, part: &RunPart) {
    let Some(run) = &part.create else { return };
    let values = (
        run.key.dag_id.as_str(),
        run.logical_date.timestamp_micros(),
        run.key.run_id.as_str(),
    );
    if let Err(error) = execute_conditional(
        store,
        &store.inner.statements.tick_release,
        values,
        "release a tick",
    )
    .await
    {
        // The claim stays; repeating this creation completes it, another run for the tick is
        // refused. Nothing is run twice.
        tracing::warn!(run = %run.key, %error, "could not release the schedule tick of a refused run");
    }
}

async fn remove_old_state_index(
    store: &CqlStore,
    key: &RunKey,
    old_state: DagRunState,
    current: &RunStatic,
) {
    let values = (
        current.version + 1,
        old_state.as_str(),
        key.dag_id.as_str(),
        current.run.logical_date.timestamp_micros(),
        key.run_id.as_str(),
    );
    let result = execute(
        store,
        &store.inner.statements.state_index_delete,
        values,
        "unindex a run",
    )
    .await;
    if let Err(error) = result {
        // Readers check index entries against the run, so a stale one is skipped, not returned.
        tracing::warn!(run = %key, %error, "could not remove a run's old state index entry");
    }
}

type Values = Vec<Vec<Option<CqlValue>>>;

fn text(value: &str) -> Option<CqlValue> {
    Some(CqlValue::Text(value.to_string()))
}

fn bigint(value: i64) -> Option<CqlValue> {
    Some(CqlValue::BigInt(value))
}

/// The one conditional batch of a run part.
fn conditional_batch(
    store: &CqlStore,
    part: &RunPart,
    current: Option<&RunStatic>,
    write_id: i64,
) -> (Batch, Values) {
    let statements = &store.inner.statements;
    let key = part.key.as_ref().expect("a run part has a key");
    let mut batch = Batch::new(BatchType::Unlogged);
    let mut values: Values = Vec::new();
    let partition = [text(key.dag_id.as_str()), text(key.run_id.as_str())];
    let fence = part.fence.map(|epoch| bigint(epoch as i64));
    if let Some(run) = &part.create {
        let mut row = vec![
            text(run.state.as_str()),
            text(&to_json(run)),
            bigint(write_id),
        ];
        match &fence {
            Some(epoch) => {
                batch.append_statement(statements.run_create_fenced.clone());
                row.push(epoch.clone());
            }
            None => batch.append_statement(statements.run_create.clone()),
        }
        row.extend([partition[0].clone(), partition[1].clone()]);
        values.push(row);
    } else if let (Some(update), Some(current)) = (&part.update, current) {
        let mut run = current.run.clone();
        run.state = update.state;
        run.started_at = update.started_at.or(run.started_at);
        run.ended_at = update.ended_at.or(run.ended_at);
        let mut row = vec![
            text(update.state.as_str()),
            bigint(current.version + 1),
            text(&to_json(&run)),
            bigint(write_id),
            partition[0].clone(),
            partition[1].clone(),
            text(update.expected.as_str()),
            bigint(current.version),
        ];
        match &fence {
            Some(epoch) => {
                batch.append_statement(statements.run_update_fenced.clone());
                row.push(epoch.clone());
            }
            None => batch.append_statement(statements.run_update.clone()),
        }
        values.push(row);
    } else {
        let mut row = vec![bigint(write_id), partition[0].clone(), partition[1].clone()];
        match &fence {
            Some(epoch) => {
                batch.append_statement(statements.run_stamp_fenced.clone());
                row.push(epoch.clone());
            }
            None => batch.append_statement(statements.run_stamp.clone()),
        }
        values.push(row);
    }
    for (expected, record) in &part.task_instances {
        let mut row = vec![
            text(record.state.as_str()),
            bigint(i64::from(record.try_number)),
            bigint(record.token as i64),
            bigint(write_id),
            text(&to_json(record)),
            partition[0].clone(),
            partition[1].clone(),
            text(record.key.task_id.as_str()),
            Some(CqlValue::Int(record.key.map_index)),
        ];
        match expected {
            None => batch.append_statement(statements.task_instance_create.clone()),
            Some(expected) => {
                batch.append_statement(statements.task_instance_update.clone());
                row.extend([
                    text(expected.state.as_str()),
                    bigint(i64::from(expected.try_number)),
                    bigint(expected.token as i64),
                ]);
            }
        }
        values.push(row);
    }
    if part.create.is_none() {
        for referenced in &part.referenced {
            batch.append_statement(statements.task_instance_stamp.clone());
            values.push(vec![
                bigint(write_id),
                partition[0].clone(),
                partition[1].clone(),
                text(&referenced.task_id),
                Some(CqlValue::Int(referenced.map_index)),
            ]);
        }
    }
    for item in &part.items {
        match item {
            Item::Put {
                key: task,
                kind,
                item,
                body,
            } => {
                batch.append_statement(statements.item_put.clone());
                values.push(vec![
                    text(body),
                    partition[0].clone(),
                    partition[1].clone(),
                    text(kind),
                    text(&task.task_id),
                    Some(CqlValue::Int(task.map_index)),
                    text(item),
                ]);
            }
            Item::DeleteXcoms { key: task } => {
                batch.append_statement(statements.xcoms_delete.clone());
                values.push(vec![
                    partition[0].clone(),
                    partition[1].clone(),
                    text(&task.task_id),
                    Some(CqlValue::Int(task.map_index)),
                ]);
            }
        }
    }
    let commit = match store.inner.options.serial_scope {
        SerialScope::Global => Consistency::Quorum,
        SerialScope::Local => Consistency::LocalQuorum,
    };
    batch.set_consistency(commit);
    batch.set_serial_consistency(Some(serial_consistency(store.inner.options.serial_scope)));
    (batch, values)
}

// ---------------------------------------------------------------------------------------------
// Audit

pub(super) async fn audit_last_id(store: &CqlStore) -> Result<u64> {
    let rows: Vec<(Option<i64>,)> = store
        .rows(
            &store.inner.statements.sequence_serial,
            (AUDIT_SEQUENCE,),
            "read the audit sequence",
        )
        .await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|(last,)| last)
        .unwrap_or(0) as u64)
}

/// Allocate ids for `entries` by advancing the sequence with compare-and-set, then store them.
async fn append_audit(store: &CqlStore, entries: &[AuditRow]) -> Result<()> {
    let statements = &store.inner.statements;
    execute_conditional(
        store,
        &statements.sequence_init,
        (AUDIT_SEQUENCE,),
        "create the audit sequence",
    )
    .await?;
    let count = entries.len() as i64;
    let attempts_max = store.inner.options.cas_attempts_max.max(1) * 4;
    for _ in 0..attempts_max {
        let last = audit_last_id(store).await? as i64;
        let advance = (last + count, AUDIT_SEQUENCE, last);
        let advanced = store
            .inner
            .session
            .execute_unpaged(&statements.sequence_advance, advance)
            .await;
        let advanced = match advanced {
            Ok(result) => applied_column(result, "advance the audit sequence")?,
            // Uncertain: if it did apply, its ids are simply skipped; ids must only increase.
            Err(error) => matches!(classify(store, error)?, Outcome::Applied),
        };
        if !advanced {
            continue;
        }
        for (offset, entry) in entries.iter().enumerate() {
            let id = last + 1 + offset as i64;
            let values = (
                id / AUDIT_IDS_PER_BUCKET as i64,
                id,
                entry.at.timestamp_micros(),
                &entry.actor,
                &entry.action,
                &entry.target,
                &entry.detail,
            );
            execute(
                store,
                &statements.audit_insert,
                values,
                "append an audit entry",
            )
            .await?;
        }
        return Ok(());
    }
    Err(Error::Unavailable(format!(
        "could not allocate audit ids after {attempts_max} attempts: too many concurrent writers"
    )))
}

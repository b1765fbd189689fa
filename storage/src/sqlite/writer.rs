//! The single writer thread of the SQLite backend: group commit.
//!
//! Writers queue their batch and wait. The thread takes everything queued (up to
//! `group_commit_batches_max`), applies each batch inside its own SAVEPOINT of one transaction
//! (a group of one batch needs none: the transaction itself is rolled back if it is refused),
//! commits once and then answers every waiter. One fsync thus covers many batches, which is what
//! keeps throughput up with `synchronous=FULL`. A batch whose guard fails is rolled back to its
//! savepoint alone; the others in the group still commit. A storage failure (full disk, IO
//! error) rolls back the whole group and every batch in it gets the error: none of them was
//! acknowledged, so nothing acknowledged is lost.

use super::rows::{micros, optional_micros, u64_bits};
use super::{sqlite_error, SqliteStats};
use crate::memory::takes_schedule_tick;
use crate::{
    ApiTokenRow, AttemptRow, AuditRow, DagVersionRow, Error, ImportErrorRow, LogRow, PoolRow,
    Result, RunRow, SecretGuard, SecretRow, UserRow, Write, XcomRow, DEFAULT_POOL_NAME,
};
use rusqlite::{params, Connection, OptionalExtension};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use weft_core::dag_run::{TaskInstanceRecord, TaskVersion};
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::state::DagRunState;
use weft_core::Timestamp;

/// One queued batch and the waiter to answer once its group is committed (or refused).
pub(crate) struct WriteRequest {
    pub batch: Vec<Write>,
    pub reply: oneshot::Sender<Result<()>>,
}

pub(crate) struct Writer {
    pub connection: Connection,
    pub requests: mpsc::Receiver<WriteRequest>,
    pub group_commit_batches_max: usize,
    pub stats: Arc<SqliteStats>,
}

impl Writer {
    /// Runs until every sender is dropped and the queue is drained.
    pub fn run(mut self) {
        while let Some(first) = self.requests.blocking_recv() {
            let mut group = vec![first];
            while group.len() < self.group_commit_batches_max {
                match self.requests.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
    }

    fn commit_group(&mut self, group: Vec<WriteRequest>) {
        let started = Instant::now();
        metrics::histogram!("weft_store_group_batches").record(group.len() as f64);
        let outcomes = match self.apply_group(&group) {
            Ok(outcomes) => outcomes,
            Err(error) => {
                self.roll_back_group();
                group.iter().map(|_| Err(same_error(&error))).collect()
            }
        };
        metrics::histogram!("weft_store_commit_seconds").record(started.elapsed().as_secs_f64());
        for (outcome, request) in outcomes.into_iter().zip(group) {
            // A waiter that gave up (its task was cancelled) needs no answer.
            let _ = request.reply.send(outcome);
        }
    }

    /// Applies every batch in one transaction. `Ok` holds each batch's own outcome; `Err` means
    /// the transaction as a whole failed and nothing was committed.
    fn apply_group(&mut self, group: &[WriteRequest]) -> Result<Vec<Result<()>>> {
        let connection = &self.connection;
        run_cached(connection, "BEGIN IMMEDIATE")
            .map_err(|error| sqlite_error(error, "starting a write transaction"))?;
        let outcomes = match group {
            // One batch needs no savepoint: a refusal rolls the transaction back instead. (A
            // savepoint copies each page the batch changes, the first time it changes it.)
            [only] => match apply_writes(connection, &only.batch) {
                Ok(()) => vec![Ok(())],
                Err(error) if is_batch_refusal(&error) => {
                    run_cached(connection, "ROLLBACK")
                        .map_err(|error| sqlite_error(error, "rolling back a refused batch"))?;
                    self.stats.batches_refused.fetch_add(1, Ordering::Relaxed);
                    if error.is_conflict() {
                        metrics::counter!("weft_store_conflicts_total").increment(1);
                    }
                    return Ok(vec![Err(error)]);
                }
                Err(error) => return Err(error),
            },
            _ => group
                .iter()
                .map(|request| apply_batch(connection, &request.batch))
                .collect::<Result<Vec<_>>>()?,
        };
        let mut writes_committed = 0;
        for (request, outcome) in group.iter().zip(&outcomes) {
            if outcome.is_ok() {
                writes_committed += request.batch.len();
                metrics::histogram!("weft_store_batch_writes").record(request.batch.len() as f64);
            }
        }
        run_cached(connection, "COMMIT").map_err(|error| sqlite_error(error, "committing"))?;

        let refused = outcomes.iter().filter(|outcome| outcome.is_err()).count();
        let conflicts = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, Err(e) if e.is_conflict()))
            .count();
        self.stats
            .transactions_committed
            .fetch_add(1, Ordering::Relaxed);
        self.stats
            .batches_committed
            .fetch_add((outcomes.len() - refused) as u64, Ordering::Relaxed);
        self.stats
            .batches_refused
            .fetch_add(refused as u64, Ordering::Relaxed);
        metrics::counter!("weft_store_writes_total").increment(writes_committed as u64);
        metrics::counter!("weft_store_conflicts_total").increment(conflicts as u64);
        Ok(outcomes)
    }

    fn roll_back_group(&self) {
        if !self.connection.is_autocommit() {
            if let Err(error) = self.connection.execute_batch("ROLLBACK") {
                tracing::warn!(%error, "rolling back a failed store transaction failed");
            }
        }
        self.stats
            .transactions_failed
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!("weft_store_transaction_failures_total").increment(1);
    }
}

/// Applies one batch inside a savepoint. The outer `Err` is a storage failure that dooms the
/// whole transaction; the inner `Err` refuses this batch alone (rolled back to its savepoint).
fn apply_batch(connection: &Connection, batch: &[Write]) -> Result<Result<()>> {
    run_cached(connection, "SAVEPOINT batch")
        .map_err(|error| sqlite_error(error, "opening a savepoint"))?;
    match apply_writes(connection, batch) {
        Ok(()) => {
            run_cached(connection, "RELEASE batch")
                .map_err(|error| sqlite_error(error, "releasing a savepoint"))?;
            Ok(Ok(()))
        }
        Err(error) if is_batch_refusal(&error) => {
            connection
                .execute_batch("ROLLBACK TO batch; RELEASE batch")
                .map_err(|error| sqlite_error(error, "rolling back a refused batch"))?;
            Ok(Err(error))
        }
        Err(error) => Err(error),
    }
}

/// Applies a batch's writes in order, up to the first that fails.
fn apply_writes(connection: &Connection, batch: &[Write]) -> Result<()> {
    batch
        .iter()
        .try_for_each(|write| apply_write(connection, write))
}

/// Runs one statement from the connection's cache: the transaction and savepoint statements
/// run several times per commit, and parsing them each time was a visible share of the
/// writer's CPU.
fn run_cached(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// A copy of a transaction-level error for each waiter of the group.
fn same_error(error: &Error) -> Error {
    match error {
        Error::Corrupt(message) => Error::Corrupt(message.clone()),
        Error::Unavailable(message) => Error::Unavailable(message.clone()),
        other => Error::Unavailable(other.to_string()),
    }
}

/// Refusals concern one batch; anything else (full disk, IO error) concerns the transaction.
fn is_batch_refusal(error: &Error) -> bool {
    matches!(
        error,
        Error::Conflict { .. }
            | Error::Fenced { .. }
            | Error::NotFound { .. }
            | Error::TooLarge { .. }
            | Error::TooMany { .. }
    )
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

fn apply_write(connection: &Connection, write: &Write) -> Result<()> {
    let doing = "applying a write";
    let failed = |error| sqlite_error(error, doing);
    match write {
        Write::PutDag { version, fileloc, paused_if_new } => {
            put_dag(connection, version, fileloc.as_deref(), *paused_if_new).map_err(failed)
        }
        Write::SetPaused { dag_id, paused } => {
            let changed = connection
                .prepare_cached("UPDATE dags SET is_paused = ?2 WHERE dag_id = ?1")
                .and_then(|mut statement| statement.execute(params![dag_id, paused]))
                .map_err(failed)?;
            if changed == 0 {
                return Err(not_found(format!("dag `{dag_id}`")));
            }
            Ok(())
        }
        Write::CreateRun(run) => create_run(connection, run),
        Write::UpdateRun { key, expected, state, started_at, ended_at } => {
            update_run(connection, key, *expected, *state, *started_at, *ended_at)
        }
        Write::PutTaskInstance { expected, record } => put_task_instance(connection, *expected, record),
        Write::PutAttempt(attempt) => {
            put_attempt(connection, attempt).map_err(|error| of_task_instance(error, &attempt.attempt.key, doing))
        }
        Write::PutXcom(xcom) => {
            put_xcom(connection, xcom).map_err(|error| of_task_instance(error, &xcom.key, doing))
        }
        Write::DeleteXcoms { key } => connection
            .prepare_cached(
                "DELETE FROM xcoms WHERE dag_id = ?1 AND run_id = ?2 AND task_id = ?3 AND map_index = ?4",
            )
            .and_then(|mut statement| {
                statement.execute(params![key.dag_id.as_str(), key.run_id.as_str(), key.task_id.as_str(), key.map_index])
            })
            .map(|_| ())
            .map_err(failed),
        Write::PutLog(log) => {
            put_log(connection, log).map_err(|error| of_task_instance(error, &log.key, doing))
        }
        Write::PutImportError(error) => put_import_error(connection, error).map_err(failed),
        Write::ClearImportError { fileloc } => connection
            .prepare_cached("DELETE FROM import_errors WHERE fileloc = ?1")
            .and_then(|mut statement| statement.execute([fileloc]))
            .map(|_| ())
            .map_err(failed),
        Write::PutPool(pool) => put_pool(connection, pool).map_err(failed),
        Write::DeletePool { name } => delete_pool(connection, name),
        Write::Audit(entry) => put_audit(connection, entry).map_err(failed),
        Write::PutUser(user) => put_user(connection, user).map_err(failed),
        Write::PutApiToken(token) => put_api_token(connection, token).map_err(failed),
        Write::DeleteApiToken { id } => connection
            .prepare_cached("DELETE FROM api_tokens WHERE id = ?1")
            .and_then(|mut statement| statement.execute([id]))
            .map(|_| ())
            .map_err(failed),
        Write::PutSecret { row, guard } => put_secret(connection, row, guard),
        Write::Fence { run, epoch } => fence(connection, run, *epoch),
        Write::PutLease { expect, row, at } => put_lease(connection, *expect, row, *at),
        Write::PutCell(cell) => connection
            .prepare_cached(
                "INSERT OR REPLACE INTO cells (name, region, address, api, version, beat_at, \
                 started_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    cell.name,
                    cell.region,
                    cell.address,
                    cell.api,
                    u64_bits(cell.version),
                    micros(cell.beat_at),
                    micros(cell.started_at)
                ])
            })
            .map(|_| ())
            .map_err(failed),
        Write::DeleteCell { name } => connection
            .prepare_cached("DELETE FROM cells WHERE name = ?1")
            .and_then(|mut statement| statement.execute([name]))
            .map(|_| ())
            .map_err(failed),
        Write::DeleteSecret { kind, id } => connection
            .prepare_cached("DELETE FROM secrets WHERE kind = ?1 AND id = ?2")
            .and_then(|mut statement| statement.execute([kind.as_str(), id.as_str()]))
            .map(|_| ())
            .map_err(failed),
    }
}

/// Raise a run's owner epoch to `epoch`, refusing when it is newer (see `Write::Fence`).
fn fence(connection: &Connection, run: &RunKey, epoch: u64) -> Result<()> {
    let failed = |error| sqlite_error(error, "fencing a run");
    let current: Option<Option<i64>> = connection
        .prepare_cached("SELECT owner_epoch FROM dag_runs WHERE dag_id = ?1 AND run_id = ?2")
        .and_then(|mut statement| {
            statement
                .query_row(params![run.dag_id.as_str(), run.run_id.as_str()], |row| {
                    row.get(0)
                })
                .optional()
        })
        .map_err(failed)?;
    let Some(current) = current else {
        return Err(not_found(format!("run {run}")));
    };
    let current = current.map(|bits| bits as u64).unwrap_or(0);
    if current > epoch {
        return Err(Error::Fenced {
            run: run.to_string(),
            epoch,
            current,
        });
    }
    connection
        .prepare_cached("UPDATE dag_runs SET owner_epoch = ?3 WHERE dag_id = ?1 AND run_id = ?2")
        .and_then(|mut statement| {
            statement.execute(params![
                run.dag_id.as_str(),
                run.run_id.as_str(),
                u64_bits(epoch)
            ])
        })
        .map(|_| ())
        .map_err(failed)
}

fn put_lease(
    connection: &Connection,
    expect: Option<(u64, u64)>,
    row: &weft_core::lease::LeaseRow,
    at: Timestamp,
) -> Result<()> {
    let failed = |error| sqlite_error(error, "writing a shard lease");
    let changed = match expect {
        None => connection
            .prepare_cached(
                "INSERT OR IGNORE INTO shard_leases (shard, owner, epoch, version, written_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    row.shard,
                    row.owner,
                    u64_bits(row.epoch),
                    u64_bits(row.version),
                    micros(at)
                ])
            }),
        Some((epoch, version)) => connection
            .prepare_cached(
                "UPDATE shard_leases SET owner = ?2, epoch = ?3, version = ?4, written_at = ?5 \
                 WHERE shard = ?1 AND epoch = ?6 AND version = ?7",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    row.shard,
                    row.owner,
                    u64_bits(row.epoch),
                    u64_bits(row.version),
                    micros(at),
                    u64_bits(epoch),
                    u64_bits(version)
                ])
            }),
    }
    .map_err(failed)?;
    if changed == 0 {
        return Err(conflict(
            format!("lease of shard {}", row.shard),
            "it changed since it was read",
        ));
    }
    Ok(())
}

fn put_secret(connection: &Connection, row: &SecretRow, guard: &SecretGuard) -> Result<()> {
    let failed = |error| sqlite_error(error, "writing a variable or connection");
    let what = || format!("{} `{}`", row.kind.as_str(), row.id);
    let insert = match guard {
        SecretGuard::Any => "INSERT OR REPLACE",
        _ => "INSERT OR IGNORE",
    };
    let changed = match guard {
        SecretGuard::Any | SecretGuard::Absent => connection
            .prepare_cached(&format!(
                "{insert} INTO secrets (kind, id, description, sealed, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)"
            ))
            .and_then(|mut statement| {
                statement.execute(params![
                    row.kind.as_str(),
                    row.id,
                    row.description,
                    row.sealed,
                    micros(row.updated_at)
                ])
            }),
        SecretGuard::Sealed(expected) => connection
            .prepare_cached(
                "UPDATE secrets SET description = ?3, sealed = ?4, updated_at = ?5 \
                 WHERE kind = ?1 AND id = ?2 AND sealed = ?6",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    row.kind.as_str(),
                    row.id,
                    row.description,
                    row.sealed,
                    micros(row.updated_at),
                    expected
                ])
            }),
    }
    .map_err(failed)?;
    if changed == 0 {
        return Err(conflict(what(), crate::secret_guard_failed(guard)));
    }
    Ok(())
}

fn put_dag(
    connection: &Connection,
    version: &DagVersionRow,
    fileloc: Option<&str>,
    paused_if_new: bool,
) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "INSERT INTO dags (dag_id, latest_version, fileloc, is_paused, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (dag_id) DO UPDATE SET latest_version = excluded.latest_version, \
             fileloc = COALESCE(excluded.fileloc, dags.fileloc), updated_at = excluded.updated_at",
        )?
        .execute(params![
            version.dag_id,
            version.version_hash,
            fileloc,
            paused_if_new,
            micros(version.created_at)
        ])?;
    // Idempotent: a version already stored keeps its first text and creation time.
    connection
        .prepare_cached(
            "INSERT INTO dag_versions (dag_id, version_hash, spec_json, created_at) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (dag_id, version_hash) DO NOTHING",
        )?
        .execute(params![
            version.dag_id,
            version.version_hash,
            version.spec_json,
            micros(version.created_at)
        ])?;
    Ok(())
}

fn create_run(connection: &Connection, run: &RunRow) -> Result<()> {
    let doing = "creating a run";
    let exists = |sql: &str, values: &[&dyn rusqlite::ToSql]| -> Result<Option<String>> {
        connection
            .prepare_cached(sql)
            .and_then(|mut statement| statement.query_row(values, |row| row.get(0)).optional())
            .map_err(|error| sqlite_error(error, doing))
    };
    if exists(
        "SELECT dag_id FROM dags WHERE dag_id = ?1",
        &[&run.key.dag_id.as_str()],
    )?
    .is_none()
    {
        return Err(not_found(format!(
            "dag `{}` of run {}",
            run.key.dag_id.as_str(),
            run.key
        )));
    }
    let same_id = "SELECT run_id FROM dag_runs WHERE dag_id = ?1 AND run_id = ?2";
    if exists(
        same_id,
        &[&run.key.dag_id.as_str(), &run.key.run_id.as_str()],
    )?
    .is_some()
    {
        return Err(conflict(
            format!("run {}", run.key),
            "a run with this id exists",
        ));
    }
    if takes_schedule_tick(run.run_type) {
        let same_tick = "SELECT run_id FROM dag_runs WHERE dag_id = ?1 AND logical_date = ?2 \
                         AND run_type IN ('scheduled', 'backfill')";
        if let Some(other) = exists(
            same_tick,
            &[&run.key.dag_id.as_str(), &micros(run.logical_date)],
        )? {
            return Err(conflict(
                format!("run {}", run.key),
                format!(
                    "run {}/{other} already has logical date {}",
                    run.key.dag_id.as_str(),
                    run.logical_date
                ),
            ));
        }
    }
    let conf = serde_json::to_string(&run.conf).map_err(|error| {
        Error::Unavailable(format!("serializing the conf of run {}: {error}", run.key))
    })?;
    connection
        .prepare_cached(
            "INSERT INTO dag_runs (dag_id, run_id, run_type, state, logical_date, interval_start, \
             interval_end, version_hash, conf, seed, created_at, started_at, ended_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                run.key.dag_id.as_str(),
                run.key.run_id.as_str(),
                run.run_type.as_str(),
                run.state.as_str(),
                micros(run.logical_date),
                micros(run.data_interval.start),
                micros(run.data_interval.end),
                run.version_hash,
                conf,
                u64_bits(run.seed),
                micros(run.created_at),
                optional_micros(run.started_at),
                optional_micros(run.ended_at),
            ])
        })
        .map(|_| ())
        .map_err(|error| sqlite_error(error, doing))
}

fn update_run(
    connection: &Connection,
    key: &RunKey,
    expected: DagRunState,
    state: DagRunState,
    started_at: Option<Timestamp>,
    ended_at: Option<Timestamp>,
) -> Result<()> {
    let doing = "updating a run";
    let changed = connection
        .prepare_cached(
            "UPDATE dag_runs SET state = ?4, started_at = COALESCE(?5, started_at), \
             ended_at = COALESCE(?6, ended_at) WHERE dag_id = ?1 AND run_id = ?2 AND state = ?3",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                key.dag_id.as_str(),
                key.run_id.as_str(),
                expected.as_str(),
                state.as_str(),
                optional_micros(started_at),
                optional_micros(ended_at),
            ])
        })
        .map_err(|error| sqlite_error(error, doing))?;
    if changed == 1 {
        return Ok(());
    }
    let found: Option<String> = connection
        .prepare_cached("SELECT state FROM dag_runs WHERE dag_id = ?1 AND run_id = ?2")
        .and_then(|mut statement| {
            statement
                .query_row([key.dag_id.as_str(), key.run_id.as_str()], |row| row.get(0))
                .optional()
        })
        .map_err(|error| sqlite_error(error, doing))?;
    match found {
        None => Err(not_found(format!("run {key}"))),
        Some(found) => Err(conflict(
            format!("run {key}"),
            format!("expected state {expected}, found {found}"),
        )),
    }
}

fn put_task_instance(
    connection: &Connection,
    expected: Option<TaskVersion>,
    record: &TaskInstanceRecord,
) -> Result<()> {
    let doing = "writing a task instance";
    let key = &record.key;
    let missing_run = || {
        not_found(format!(
            "run {}/{} of task instance {key}",
            key.dag_id.as_str(),
            key.run_id.as_str()
        ))
    };
    // The foreign key finds a missing run on insert; an update changes no row of a missing
    // run (its rows cannot outlive it), which the lookup below tells from a conflict.
    let changed = match expected {
        None => insert_task_instance(connection, record),
        Some(expected) => update_task_instance(connection, expected, record),
    };
    match changed {
        Ok(1) => return Ok(()),
        Ok(_) => {}
        Err(error) if is_foreign_key_violation(&error) => return Err(missing_run()),
        Err(error) => return Err(sqlite_error(error, doing)),
    }
    let run_exists: Option<String> = connection
        .prepare_cached("SELECT run_id FROM dag_runs WHERE dag_id = ?1 AND run_id = ?2")
        .and_then(|mut statement| {
            statement
                .query_row([key.dag_id.as_str(), key.run_id.as_str()], |row| row.get(0))
                .optional()
        })
        .map_err(|error| sqlite_error(error, doing))?;
    if run_exists.is_none() {
        return Err(missing_run());
    }
    let found = current_version(connection, key).map_err(|error| sqlite_error(error, doing))?;
    let detail = match (expected, found) {
        (None, Some(found)) => format!("exists with {found:?}"),
        (expected, found) => format!("expected {expected:?}, found {found:?}"),
    };
    Err(conflict(format!("task instance {key}"), detail))
}

/// Inserts unless the row exists; returns the rows changed (0 on conflict).
fn insert_task_instance(
    connection: &Connection,
    record: &TaskInstanceRecord,
) -> rusqlite::Result<usize> {
    connection
        .prepare_cached(
            "INSERT INTO task_instances (dag_id, run_id, task_id, map_index, state, try_number, \
             token, max_tries, priority_weight, pool, pool_slots, queued_at, started_at, ended_at, \
             next_retry_at, note) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            record.key.dag_id.as_str(),
            record.key.run_id.as_str(),
            record.key.task_id.as_str(),
            record.key.map_index,
            record.state.as_str(),
            record.try_number,
            u64_bits(record.token),
            record.max_tries,
            record.priority_weight,
            record.pool.as_str(),
            record.pool_slots,
            optional_micros(record.queued_at),
            optional_micros(record.started_at),
            optional_micros(record.ended_at),
            optional_micros(record.next_retry_at),
            record.note,
        ])
}

/// The compare-and-set: changes the row only if it still holds `expected`.
fn update_task_instance(
    connection: &Connection,
    expected: TaskVersion,
    record: &TaskInstanceRecord,
) -> rusqlite::Result<usize> {
    connection
        .prepare_cached(
            "UPDATE task_instances SET state = ?5, try_number = ?6, token = ?7, max_tries = ?8, \
             priority_weight = ?9, pool = ?10, pool_slots = ?11, queued_at = ?12, \
             started_at = ?13, ended_at = ?14, next_retry_at = ?15, note = ?16 \
             WHERE dag_id = ?1 AND run_id = ?2 AND task_id = ?3 AND map_index = ?4 \
             AND state = ?17 AND try_number = ?18 AND token = ?19",
        )?
        .execute(params![
            record.key.dag_id.as_str(),
            record.key.run_id.as_str(),
            record.key.task_id.as_str(),
            record.key.map_index,
            record.state.as_str(),
            record.try_number,
            u64_bits(record.token),
            record.max_tries,
            record.priority_weight,
            record.pool.as_str(),
            record.pool_slots,
            optional_micros(record.queued_at),
            optional_micros(record.started_at),
            optional_micros(record.ended_at),
            optional_micros(record.next_retry_at),
            record.note,
            expected.state.as_str(),
            expected.try_number,
            u64_bits(expected.token),
        ])
}

/// The stored (state, try, token) of a task instance, for conflict messages.
fn current_version(
    connection: &Connection,
    key: &TaskInstanceKey,
) -> rusqlite::Result<Option<String>> {
    connection
        .prepare_cached(
            "SELECT state, try_number, token FROM task_instances \
             WHERE dag_id = ?1 AND run_id = ?2 AND task_id = ?3 AND map_index = ?4",
        )?
        .query_row(
            params![
                key.dag_id.as_str(),
                key.run_id.as_str(),
                key.task_id.as_str(),
                key.map_index
            ],
            |row| {
                let state: String = row.get(0)?;
                let try_number: u32 = row.get(1)?;
                let token = row.get::<_, i64>(2)? as u64;
                Ok(format!("state {state}, try {try_number}, token {token}"))
            },
        )
        .optional()
}

/// A write of a task instance's attempt, XCom or log: the foreign key refuses it when the task
/// instance does not exist (checked by SQLite on insert, so no lookup of our own first).
fn of_task_instance(error: rusqlite::Error, key: &TaskInstanceKey, doing: &str) -> Error {
    if is_foreign_key_violation(&error) {
        not_found(format!("task instance {key}"))
    } else {
        sqlite_error(error, doing)
    }
}

fn is_foreign_key_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
    )
}

/// The attempt, XCom and log rows are upserts rather than `INSERT OR REPLACE`: a replace may
/// delete a row before it inserts, so SQLite opens a statement journal for it and copies each
/// page it touches there first, which made these writes about a tenth dearer.
fn put_attempt(connection: &Connection, attempt: &AttemptRow) -> rusqlite::Result<()> {
    let key = &attempt.attempt.key;
    connection
        .prepare_cached(
            "INSERT INTO attempts (dag_id, run_id, task_id, map_index, try_number, \
             token, state, started_at, ended_at, worker, note) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
             ON CONFLICT (dag_id, run_id, task_id, map_index, try_number) DO UPDATE SET \
             token = excluded.token, state = excluded.state, started_at = excluded.started_at, \
             ended_at = excluded.ended_at, worker = excluded.worker, note = excluded.note",
        )?
        .execute(params![
            key.dag_id.as_str(),
            key.run_id.as_str(),
            key.task_id.as_str(),
            key.map_index,
            attempt.attempt.try_number,
            u64_bits(attempt.attempt.token),
            attempt.state.as_str(),
            micros(attempt.started_at),
            optional_micros(attempt.ended_at),
            attempt.worker,
            attempt.note,
        ])?;
    Ok(())
}

fn put_xcom(connection: &Connection, xcom: &XcomRow) -> rusqlite::Result<()> {
    let key = &xcom.key;
    let value = xcom.value.to_string();
    connection
        .prepare_cached(
            "INSERT INTO xcoms (dag_id, run_id, task_id, map_index, name, value) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (dag_id, run_id, task_id, map_index, name) DO UPDATE SET \
             value = excluded.value",
        )?
        .execute(params![
            key.dag_id.as_str(),
            key.run_id.as_str(),
            key.task_id.as_str(),
            key.map_index,
            xcom.name,
            value
        ])?;
    Ok(())
}

fn put_log(connection: &Connection, log: &LogRow) -> rusqlite::Result<()> {
    let key = &log.key;
    connection
        .prepare_cached(
            "INSERT INTO logs (dag_id, run_id, task_id, map_index, try_number, path, \
             bytes, truncated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (dag_id, run_id, task_id, map_index, try_number) DO UPDATE SET \
             path = excluded.path, bytes = excluded.bytes, truncated = excluded.truncated",
        )?
        .execute(params![
            key.dag_id.as_str(),
            key.run_id.as_str(),
            key.task_id.as_str(),
            key.map_index,
            log.try_number,
            log.path,
            u64_bits(log.bytes),
            log.truncated,
        ])?;
    Ok(())
}

fn put_import_error(connection: &Connection, error: &ImportErrorRow) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "INSERT OR REPLACE INTO import_errors (fileloc, line, message, at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![error.fileloc, error.line, error.message, micros(error.at)])?;
    Ok(())
}

fn put_pool(connection: &Connection, pool: &PoolRow) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "INSERT OR REPLACE INTO pools (name, slots, description) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![pool.name, pool.slots, pool.description])?;
    Ok(())
}

fn delete_pool(connection: &Connection, name: &str) -> Result<()> {
    if name == DEFAULT_POOL_NAME {
        return Err(conflict(
            format!("pool `{name}`"),
            "the default pool cannot be deleted; set its slots instead",
        ));
    }
    let deleted = connection
        .prepare_cached("DELETE FROM pools WHERE name = ?1")
        .and_then(|mut statement| statement.execute([name]))
        .map_err(|error| sqlite_error(error, "deleting a pool"))?;
    if deleted == 0 {
        return Err(not_found(format!("pool `{name}`")));
    }
    Ok(())
}

fn put_audit(connection: &Connection, entry: &AuditRow) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            micros(entry.at),
            entry.actor,
            entry.action,
            entry.target,
            entry.detail
        ])?;
    Ok(())
}

fn put_user(connection: &Connection, user: &UserRow) -> rusqlite::Result<()> {
    let grants = serde_json::to_string(&user.dag_grants)
        .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))?;
    connection
        .prepare_cached(
            "INSERT OR REPLACE INTO users (username, password_hash, role, dag_grants, disabled, \
             created_at, session_epoch) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            user.username,
            user.password_hash,
            user.role,
            grants,
            user.disabled,
            micros(user.created_at),
            user.session_epoch as i64
        ])?;
    Ok(())
}

fn put_api_token(connection: &Connection, token: &ApiTokenRow) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "INSERT OR REPLACE INTO api_tokens (id, name, username, secret_hash, created_at, \
             expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            token.id,
            token.name,
            token.username,
            token.secret_hash,
            micros(token.created_at),
            optional_micros(token.expires_at)
        ])?;
    Ok(())
}

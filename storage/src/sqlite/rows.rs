//! Conversions between SQLite columns and the store's rows, and the read queries.
//!
//! Encodings (see `migrations/0001_initial.sql`): timestamps are INTEGER microseconds since the
//! Unix epoch, enums are their Airflow spelling, u64 values their i64 bit pattern, JSON is TEXT.
//! A value that does not decode is reported as corruption, never replaced by a default.

use crate::{
    ApiTokenRow, AttemptRow, AuditRow, CellRow, DagRow, DagVersionRow, ImportErrorRow, LeaseRecord,
    LogRow, PoolRow, RunRow, SecretKind, SecretRow, UserRow, XcomRow,
};
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::str::FromStr;
use weft_core::dag_run::TaskInstanceRecord;
use weft_core::ids::{AttemptId, RunKey, TaskInstanceKey};
use weft_core::lease::LeaseRow;
use weft_core::state::DagRunState;
use weft_core::timetable::DataInterval;
use weft_core::Timestamp;

pub(crate) fn micros(timestamp: Timestamp) -> i64 {
    timestamp.timestamp_micros()
}

pub(crate) fn optional_micros(timestamp: Option<Timestamp>) -> Option<i64> {
    timestamp.map(micros)
}

/// u64 values keep all 64 bits by storing their i64 bit pattern.
pub(crate) fn u64_bits(value: u64) -> i64 {
    value as i64
}

fn conversion_error(column: usize, kind: Type, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, kind, message.into())
}

fn timestamp_at(row: &Row<'_>, column: usize) -> rusqlite::Result<Timestamp> {
    let value: i64 = row.get(column)?;
    Timestamp::from_timestamp_micros(value).ok_or_else(|| {
        conversion_error(
            column,
            Type::Integer,
            format!("timestamp {value} us is out of range"),
        )
    })
}

fn optional_timestamp_at(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<Timestamp>> {
    match row.get::<_, Option<i64>>(column)? {
        None => Ok(None),
        Some(_) => timestamp_at(row, column).map(Some),
    }
}

fn parsed_at<T>(row: &Row<'_>, column: usize) -> rusqlite::Result<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text: String = row.get(column)?;
    text.parse()
        .map_err(|error: T::Err| conversion_error(column, Type::Text, error.to_string()))
}

fn json_at(row: &Row<'_>, column: usize) -> rusqlite::Result<serde_json::Value> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text)
        .map_err(|error| conversion_error(column, Type::Text, error.to_string()))
}

fn u64_at(row: &Row<'_>, column: usize) -> rusqlite::Result<u64> {
    Ok(row.get::<_, i64>(column)? as u64)
}

/// Reads the four key columns starting at `first`.
fn task_instance_key_at(row: &Row<'_>, first: usize) -> rusqlite::Result<TaskInstanceKey> {
    Ok(TaskInstanceKey {
        dag_id: row.get::<_, String>(first)?.into(),
        run_id: row.get::<_, String>(first + 1)?.into(),
        task_id: row.get::<_, String>(first + 2)?.into(),
        map_index: row.get(first + 3)?,
    })
}

const DAG_COLUMNS: &str = "dag_id, latest_version, fileloc, is_paused, updated_at";

fn dag_row(row: &Row<'_>) -> rusqlite::Result<DagRow> {
    Ok(DagRow {
        dag_id: row.get(0)?,
        latest_version: row.get(1)?,
        fileloc: row.get(2)?,
        is_paused: row.get(3)?,
        updated_at: timestamp_at(row, 4)?,
    })
}

const DAG_VERSION_COLUMNS: &str = "dag_id, version_hash, spec_json, created_at";

fn dag_version_row(row: &Row<'_>) -> rusqlite::Result<DagVersionRow> {
    Ok(DagVersionRow {
        dag_id: row.get(0)?,
        version_hash: row.get(1)?,
        spec_json: row.get(2)?,
        created_at: timestamp_at(row, 3)?,
    })
}

const RUN_COLUMNS: &str = "dag_id, run_id, run_type, state, logical_date, interval_start, \
     interval_end, version_hash, conf, seed, created_at, started_at, ended_at";

fn run_row(row: &Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        key: RunKey {
            dag_id: row.get::<_, String>(0)?.into(),
            run_id: row.get::<_, String>(1)?.into(),
        },
        run_type: parsed_at(row, 2)?,
        state: parsed_at(row, 3)?,
        logical_date: timestamp_at(row, 4)?,
        data_interval: DataInterval {
            start: timestamp_at(row, 5)?,
            end: timestamp_at(row, 6)?,
        },
        version_hash: row.get(7)?,
        conf: json_at(row, 8)?,
        seed: u64_at(row, 9)?,
        created_at: timestamp_at(row, 10)?,
        started_at: optional_timestamp_at(row, 11)?,
        ended_at: optional_timestamp_at(row, 12)?,
    })
}

const TASK_INSTANCE_COLUMNS: &str = "dag_id, run_id, task_id, map_index, state, try_number, \
     token, max_tries, priority_weight, pool, pool_slots, queued_at, started_at, ended_at, \
     next_retry_at, note";

fn task_instance_row(row: &Row<'_>) -> rusqlite::Result<TaskInstanceRecord> {
    Ok(TaskInstanceRecord {
        key: task_instance_key_at(row, 0)?,
        state: parsed_at(row, 4)?,
        try_number: row.get(5)?,
        token: u64_at(row, 6)?,
        max_tries: row.get(7)?,
        priority_weight: row.get(8)?,
        pool: row.get::<_, String>(9)?.into(),
        pool_slots: row.get(10)?,
        queued_at: optional_timestamp_at(row, 11)?,
        started_at: optional_timestamp_at(row, 12)?,
        ended_at: optional_timestamp_at(row, 13)?,
        next_retry_at: optional_timestamp_at(row, 14)?,
        note: row.get(15)?,
    })
}

const ATTEMPT_COLUMNS: &str = "dag_id, run_id, task_id, map_index, try_number, token, state, \
     started_at, ended_at, worker, note";

fn attempt_row(row: &Row<'_>) -> rusqlite::Result<AttemptRow> {
    Ok(AttemptRow {
        attempt: AttemptId::new(task_instance_key_at(row, 0)?, row.get(4)?, u64_at(row, 5)?),
        state: parsed_at(row, 6)?,
        started_at: timestamp_at(row, 7)?,
        ended_at: optional_timestamp_at(row, 8)?,
        worker: row.get(9)?,
        note: row.get(10)?,
    })
}

fn xcom_row(row: &Row<'_>) -> rusqlite::Result<XcomRow> {
    Ok(XcomRow {
        key: task_instance_key_at(row, 0)?,
        name: row.get(4)?,
        value: json_at(row, 5)?,
    })
}

fn log_row(row: &Row<'_>) -> rusqlite::Result<LogRow> {
    Ok(LogRow {
        key: task_instance_key_at(row, 0)?,
        try_number: row.get(4)?,
        path: row.get(5)?,
        bytes: u64_at(row, 6)?,
        truncated: row.get(7)?,
    })
}

fn import_error_row(row: &Row<'_>) -> rusqlite::Result<ImportErrorRow> {
    Ok(ImportErrorRow {
        fileloc: row.get(0)?,
        line: row.get(1)?,
        message: row.get(2)?,
        at: timestamp_at(row, 3)?,
    })
}

fn pool_row(row: &Row<'_>) -> rusqlite::Result<PoolRow> {
    Ok(PoolRow {
        name: row.get(0)?,
        slots: row.get(1)?,
        description: row.get(2)?,
    })
}

fn audit_row(row: &Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        id: u64_at(row, 0)?,
        at: timestamp_at(row, 1)?,
        actor: row.get(2)?,
        action: row.get(3)?,
        target: row.get(4)?,
        detail: row.get(5)?,
    })
}

fn collect<T>(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: fn(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement.query_map(params, decode)?;
    rows.collect()
}

fn first<T>(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: fn(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    connection
        .prepare_cached(sql)?
        .query_row(params, decode)
        .optional()
}

/// SQL `LIMIT` for a `usize` limit; anything beyond i64 means "all".
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

pub(crate) fn dag(connection: &Connection, dag_id: &str) -> rusqlite::Result<Option<DagRow>> {
    let sql = format!("SELECT {DAG_COLUMNS} FROM dags WHERE dag_id = ?1");
    first(connection, &sql, [dag_id], dag_row)
}

pub(crate) fn dags(connection: &Connection) -> rusqlite::Result<Vec<DagRow>> {
    let sql = format!("SELECT {DAG_COLUMNS} FROM dags ORDER BY dag_id");
    collect(connection, &sql, [], dag_row)
}

pub(crate) fn dag_version(
    connection: &Connection,
    dag_id: &str,
    version_hash: &str,
) -> rusqlite::Result<Option<DagVersionRow>> {
    let sql = format!(
        "SELECT {DAG_VERSION_COLUMNS} FROM dag_versions WHERE dag_id = ?1 AND version_hash = ?2"
    );
    first(connection, &sql, [dag_id, version_hash], dag_version_row)
}

pub(crate) fn dag_versions(
    connection: &Connection,
    dag_id: &str,
) -> rusqlite::Result<Vec<DagVersionRow>> {
    let sql = format!(
        "SELECT {DAG_VERSION_COLUMNS} FROM dag_versions WHERE dag_id = ?1 \
         ORDER BY created_at DESC, rowid DESC"
    );
    collect(connection, &sql, [dag_id], dag_version_row)
}

pub(crate) fn run(connection: &Connection, key: &RunKey) -> rusqlite::Result<Option<RunRow>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM dag_runs WHERE dag_id = ?1 AND run_id = ?2");
    first(
        connection,
        &sql,
        [key.dag_id.as_str(), key.run_id.as_str()],
        run_row,
    )
}

pub(crate) fn runs(
    connection: &Connection,
    dag_id: &str,
    limit: usize,
) -> rusqlite::Result<Vec<RunRow>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM dag_runs WHERE dag_id = ?1 \
         ORDER BY logical_date DESC, run_id DESC LIMIT ?2"
    );
    collect(connection, &sql, params![dag_id, sql_limit(limit)], run_row)
}

pub(crate) fn runs_before(
    connection: &Connection,
    dag_id: &str,
    before: Option<Timestamp>,
    limit: usize,
) -> rusqlite::Result<Vec<RunRow>> {
    let Some(before) = before else {
        return runs(connection, dag_id, limit);
    };
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM dag_runs WHERE dag_id = ?1 AND logical_date < ?2 \
         ORDER BY logical_date DESC, run_id DESC LIMIT ?3"
    );
    let values = params![dag_id, micros(before), sql_limit(limit)];
    collect(connection, &sql, values, run_row)
}

pub(crate) fn runs_in_states(
    connection: &Connection,
    states: &[DagRunState],
) -> rusqlite::Result<Vec<RunRow>> {
    // A state list is at most the four run states, so one query per state stays cheap and
    // keeps the SQL static; the merge below restores the documented order.
    let sql = format!("SELECT {RUN_COLUMNS} FROM dag_runs WHERE state = ?1");
    let mut states: Vec<DagRunState> = states.to_vec();
    states.sort();
    states.dedup();
    let mut runs = Vec::new();
    for state in states {
        runs.extend(collect(connection, &sql, [state.as_str()], run_row)?);
    }
    runs.sort_by(|a, b| {
        (a.key.dag_id.as_str(), a.logical_date, a.key.run_id.as_str()).cmp(&(
            b.key.dag_id.as_str(),
            b.logical_date,
            b.key.run_id.as_str(),
        ))
    });
    Ok(runs)
}

pub(crate) fn latest_scheduled_run(
    connection: &Connection,
    dag_id: &str,
) -> rusqlite::Result<Option<RunRow>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM dag_runs WHERE dag_id = ?1 AND run_type = 'scheduled' \
         ORDER BY logical_date DESC, run_id DESC LIMIT 1"
    );
    first(connection, &sql, [dag_id], run_row)
}

pub(crate) fn previous_run(
    connection: &Connection,
    dag_id: &str,
    logical_date: Timestamp,
) -> rusqlite::Result<Option<RunRow>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM dag_runs WHERE dag_id = ?1 AND logical_date < ?2 \
         ORDER BY logical_date DESC, run_id DESC LIMIT 1"
    );
    first(
        connection,
        &sql,
        params![dag_id, micros(logical_date)],
        run_row,
    )
}

pub(crate) fn task_instance(
    connection: &Connection,
    key: &TaskInstanceKey,
) -> rusqlite::Result<Option<TaskInstanceRecord>> {
    let sql = format!(
        "SELECT {TASK_INSTANCE_COLUMNS} FROM task_instances \
         WHERE dag_id = ?1 AND run_id = ?2 AND task_id = ?3 AND map_index = ?4"
    );
    first(
        connection,
        &sql,
        params![
            key.dag_id.as_str(),
            key.run_id.as_str(),
            key.task_id.as_str(),
            key.map_index
        ],
        task_instance_row,
    )
}

pub(crate) fn task_instances(
    connection: &Connection,
    run: &RunKey,
) -> rusqlite::Result<Vec<TaskInstanceRecord>> {
    let sql = format!(
        "SELECT {TASK_INSTANCE_COLUMNS} FROM task_instances WHERE dag_id = ?1 AND run_id = ?2 \
         ORDER BY task_id, map_index"
    );
    collect(
        connection,
        &sql,
        [run.dag_id.as_str(), run.run_id.as_str()],
        task_instance_row,
    )
}

pub(crate) fn attempts(
    connection: &Connection,
    key: &TaskInstanceKey,
) -> rusqlite::Result<Vec<AttemptRow>> {
    let sql = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM attempts \
         WHERE dag_id = ?1 AND run_id = ?2 AND task_id = ?3 AND map_index = ?4 \
         ORDER BY try_number"
    );
    collect(
        connection,
        &sql,
        params![
            key.dag_id.as_str(),
            key.run_id.as_str(),
            key.task_id.as_str(),
            key.map_index
        ],
        attempt_row,
    )
}

pub(crate) fn xcoms(connection: &Connection, run: &RunKey) -> rusqlite::Result<Vec<XcomRow>> {
    let sql = "SELECT dag_id, run_id, task_id, map_index, name, value FROM xcoms \
               WHERE dag_id = ?1 AND run_id = ?2 ORDER BY task_id, map_index, name";
    collect(
        connection,
        sql,
        [run.dag_id.as_str(), run.run_id.as_str()],
        xcom_row,
    )
}

pub(crate) fn log_entry(
    connection: &Connection,
    key: &TaskInstanceKey,
    try_number: u32,
) -> rusqlite::Result<Option<LogRow>> {
    let sql = "SELECT dag_id, run_id, task_id, map_index, try_number, path, bytes, truncated \
               FROM logs WHERE dag_id = ?1 AND run_id = ?2 AND task_id = ?3 AND map_index = ?4 \
               AND try_number = ?5";
    first(
        connection,
        sql,
        params![
            key.dag_id.as_str(),
            key.run_id.as_str(),
            key.task_id.as_str(),
            key.map_index,
            try_number
        ],
        log_row,
    )
}

pub(crate) fn import_errors(connection: &Connection) -> rusqlite::Result<Vec<ImportErrorRow>> {
    let sql = "SELECT fileloc, line, message, at FROM import_errors ORDER BY fileloc";
    collect(connection, sql, [], import_error_row)
}

pub(crate) fn pools(connection: &Connection) -> rusqlite::Result<Vec<PoolRow>> {
    collect(
        connection,
        "SELECT name, slots, description FROM pools ORDER BY name",
        [],
        pool_row,
    )
}

pub(crate) fn audit(connection: &Connection, limit: usize) -> rusqlite::Result<Vec<AuditRow>> {
    let sql = "SELECT id, at, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT ?1";
    collect(connection, sql, [sql_limit(limit)], audit_row)
}

fn user_row(row: &Row<'_>) -> rusqlite::Result<UserRow> {
    let grants: String = row.get(3)?;
    let dag_grants = serde_json::from_str(&grants)
        .map_err(|error| conversion_error(3, Type::Text, error.to_string()))?;
    Ok(UserRow {
        username: row.get(0)?,
        password_hash: row.get(1)?,
        role: row.get(2)?,
        dag_grants,
        disabled: row.get(4)?,
        created_at: timestamp_at(row, 5)?,
        session_epoch: row.get::<_, i64>(6)? as u64,
    })
}

fn api_token_row(row: &Row<'_>) -> rusqlite::Result<ApiTokenRow> {
    Ok(ApiTokenRow {
        id: row.get(0)?,
        name: row.get(1)?,
        username: row.get(2)?,
        secret_hash: row.get(3)?,
        created_at: timestamp_at(row, 4)?,
        expires_at: optional_timestamp_at(row, 5)?,
    })
}

const USER_COLUMNS: &str =
    "username, password_hash, role, dag_grants, disabled, created_at, session_epoch";
const API_TOKEN_COLUMNS: &str = "id, name, username, secret_hash, created_at, expires_at";

pub(crate) fn user(connection: &Connection, username: &str) -> rusqlite::Result<Option<UserRow>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1");
    first(connection, &sql, [username], user_row)
}

pub(crate) fn users(connection: &Connection) -> rusqlite::Result<Vec<UserRow>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY username");
    collect(connection, &sql, [], user_row)
}

pub(crate) fn api_token(
    connection: &Connection,
    id: &str,
) -> rusqlite::Result<Option<ApiTokenRow>> {
    let sql = format!("SELECT {API_TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1");
    first(connection, &sql, [id], api_token_row)
}

pub(crate) fn api_tokens(connection: &Connection) -> rusqlite::Result<Vec<ApiTokenRow>> {
    let sql = format!("SELECT {API_TOKEN_COLUMNS} FROM api_tokens ORDER BY id");
    collect(connection, &sql, [], api_token_row)
}

fn secret_row(row: &Row<'_>) -> rusqlite::Result<SecretRow> {
    let kind: String = row.get(0)?;
    let kind = match kind.as_str() {
        "variable" => SecretKind::Variable,
        "connection" => SecretKind::Connection,
        other => {
            let message = format!("unknown secret kind `{other}`");
            return Err(conversion_error(0, Type::Text, message));
        }
    };
    Ok(SecretRow {
        kind,
        id: row.get(1)?,
        description: row.get(2)?,
        sealed: row.get(3)?,
        updated_at: timestamp_at(row, 4)?,
    })
}

const SECRET_COLUMNS: &str = "kind, id, description, sealed, updated_at";

pub(crate) fn secret(
    connection: &Connection,
    kind: SecretKind,
    id: &str,
) -> rusqlite::Result<Option<SecretRow>> {
    let sql = format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE kind = ?1 AND id = ?2");
    first(connection, &sql, [kind.as_str(), id], secret_row)
}

pub(crate) fn secrets(
    connection: &Connection,
    kind: SecretKind,
) -> rusqlite::Result<Vec<SecretRow>> {
    let sql = format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE kind = ?1 ORDER BY id");
    collect(connection, &sql, [kind.as_str()], secret_row)
}

const LEASE_COLUMNS: &str = "shard, owner, epoch, version, written_at";

pub(crate) fn leases(connection: &Connection, shards: u32) -> rusqlite::Result<Vec<LeaseRecord>> {
    let sql = format!("SELECT {LEASE_COLUMNS} FROM shard_leases WHERE shard < ?1 ORDER BY shard");
    collect(connection, &sql, [shards], |row| {
        Ok(LeaseRecord {
            lease: LeaseRow {
                shard: row.get(0)?,
                owner: row.get(1)?,
                epoch: u64_at(row, 2)?,
                version: u64_at(row, 3)?,
            },
            written_at: timestamp_at(row, 4)?,
        })
    })
}

const CELL_COLUMNS: &str = "name, region, address, api, version, beat_at, started_at";

pub(crate) fn cells(connection: &Connection) -> rusqlite::Result<Vec<CellRow>> {
    let sql = format!("SELECT {CELL_COLUMNS} FROM cells ORDER BY name");
    collect(connection, &sql, [], |row| {
        Ok(CellRow {
            name: row.get(0)?,
            region: row.get(1)?,
            address: row.get(2)?,
            api: row.get(3)?,
            version: u64_at(row, 4)?,
            beat_at: timestamp_at(row, 5)?,
            started_at: timestamp_at(row, 6)?,
        })
    })
}

pub(crate) fn run_epoch(connection: &Connection, key: &RunKey) -> rusqlite::Result<Option<u64>> {
    connection
        .prepare_cached("SELECT owner_epoch FROM dag_runs WHERE dag_id = ?1 AND run_id = ?2")?
        .query_row(params![key.dag_id.as_str(), key.run_id.as_str()], |row| {
            row.get::<_, Option<i64>>(0)
        })
        .optional()
        .map(|epoch| epoch.flatten().map(|bits| bits as u64))
}

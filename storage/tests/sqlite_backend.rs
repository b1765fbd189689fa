//! Behaviour of the SQLite backend beyond the conformance suite: migrations, refusing files it
//! does not understand, group commit, and a full disk.

use rusqlite::Connection;
use std::path::Path;
use std::sync::Arc;
use weft_core::dag_run::TaskInstanceRecord;
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::state::{DagRunState, RunType, TaskState};
use weft_core::timetable::DataInterval;
use weft_storage::sqlite::{SqliteOptions, SqliteStore, SCHEMA_VERSION};
use weft_storage::{AuditRow, DagVersionRow, Error, PoolRow, RunRow, Store, Write};

fn at(seconds: i64) -> weft_core::Timestamp {
    weft_core::Timestamp::from_timestamp(1_704_067_200 + seconds, 0).expect("in range")
}

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path, SqliteOptions::default()).expect("open the store")
}

fn audit(action: &str, detail_bytes: usize) -> Write {
    Write::Audit(AuditRow {
        id: 0,
        at: at(0),
        actor: "test".into(),
        action: action.into(),
        target: "store".into(),
        detail: "d".repeat(detail_bytes),
    })
}

fn schema_versions(path: &Path) -> Vec<u32> {
    let connection = Connection::open(path).expect("open directly");
    let mut statement = connection
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .expect("prepare");
    let versions = statement.query_map([], |row| row.get(0)).expect("query");
    versions.collect::<Result<_, _>>().expect("read versions")
}

#[tokio::test]
async fn migrations_apply_once_and_reopen_is_idempotent() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("weft.db");
    let store = open(&path);
    assert_eq!(store.migrations_applied_at_open(), &[1, 2, 3, 4, 5, 6]);
    let resized = PoolRow {
        name: "default_pool".into(),
        slots: 7,
        description: "Default pool".into(),
    };
    store
        .write(vec![Write::PutPool(resized.clone())])
        .await
        .unwrap();
    drop(store);

    for _ in 0..2 {
        let store = open(&path);
        assert!(
            store.migrations_applied_at_open().is_empty(),
            "nothing to apply on reopen"
        );
        assert_eq!(
            store.pools().await.unwrap(),
            vec![resized.clone()],
            "the seed ran once"
        );
    }
    assert_eq!(
        schema_versions(&path),
        (1..=SCHEMA_VERSION).collect::<Vec<_>>()
    );
}

/// A file written by a build at schema version 2 opens, gets migration 3 (the unused task
/// instance indices dropped) and keeps its rows.
#[tokio::test]
async fn a_version_2_file_is_upgraded_and_keeps_its_rows() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("weft.db");
    {
        let connection = Connection::open(&path).unwrap();
        connection
            .execute_batch(include_str!("../src/sqlite/migrations/0001_initial.sql"))
            .unwrap();
        connection
            .execute_batch(include_str!(
                "../src/sqlite/migrations/0002_users_and_tokens.sql"
            ))
            .unwrap();
        connection
            .execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER NOT NULL PRIMARY KEY, \
                 name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT; \
                 INSERT INTO schema_migrations VALUES (1, 'initial', 0), (2, 'users_and_tokens', 0); \
                 INSERT INTO pools (name, slots, description) VALUES ('etl', 3, 'kept');",
            )
            .unwrap();
    }
    let indices = |path: &Path| -> Vec<String> {
        let connection = Connection::open(path).unwrap();
        let mut statement = connection
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' \
                 AND tbl_name = 'task_instances' AND sql IS NOT NULL ORDER BY name",
            )
            .unwrap();
        let names = statement.query_map([], |row| row.get(0)).unwrap();
        names.collect::<Result<_, _>>().unwrap()
    };
    assert_eq!(
        indices(&path),
        vec!["task_instances_by_pool_state", "task_instances_by_state"]
    );

    let store = open(&path);
    assert_eq!(store.migrations_applied_at_open(), &[3, 4, 5, 6]);
    assert!(store.pools().await.unwrap().contains(&PoolRow {
        name: "etl".into(),
        slots: 3,
        description: "kept".into(),
    }));
    drop(store);
    assert!(indices(&path).is_empty(), "{:?}", indices(&path));
    assert_eq!(schema_versions(&path), vec![1, 2, 3, 4, 5, 6]);
}

/// A file at schema version 3, as its migrations left it, with one of each row on a task's
/// path (and `extra` SQL run after them).
fn version_3_file(path: &Path, extra: &str) {
    let connection = Connection::open(path).unwrap();
    for migration in [
        include_str!("../src/sqlite/migrations/0001_initial.sql"),
        include_str!("../src/sqlite/migrations/0002_users_and_tokens.sql"),
        include_str!("../src/sqlite/migrations/0003_drop_unused_task_instance_indices.sql"),
    ] {
        connection.execute_batch(migration).unwrap();
    }
    connection
        .execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER NOT NULL PRIMARY KEY, \
             name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT; \
             INSERT INTO schema_migrations VALUES (1, 'initial', 0), (2, 'users_and_tokens', 0), \
                 (3, 'drop_unused_task_instance_indices', 0); \
             INSERT INTO dags VALUES ('etl', 'v1', NULL, 0, 0); \
             INSERT INTO dag_runs VALUES ('etl', 'r1', 'manual', 'running', 0, 0, 0, 'v1', '{}', \
                 7, 0, 1, NULL); \
             INSERT INTO task_instances VALUES ('etl', 'r1', 'extract', -1, 'success', 1, 5, 1, 1, \
                 'default_pool', 1, 2, 3, 4, NULL, NULL); \
             INSERT INTO attempts VALUES ('etl', 'r1', 'extract', -1, 1, 5, 'success', 3, 4, \
                 'local', NULL); \
             INSERT INTO xcoms VALUES ('etl', 'r1', 'extract', -1, 'return_value', '[1,2,3]'); \
             INSERT INTO logs VALUES ('etl', 'r1', 'extract', -1, 1, 'logs/x.log', 12, 0);",
        )
        .unwrap();
    connection.execute_batch(extra).unwrap();
}

fn table_sql(path: &Path, table: &str) -> String {
    let connection = Connection::open(path).unwrap();
    connection
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |row| row.get(0),
        )
        .unwrap()
}

/// Migration 4 rebuilds the tables of a task's path as WITHOUT ROWID tables: the rows come
/// through, and foreign keys hold again afterwards.
#[tokio::test]
async fn a_version_3_file_gets_clustered_task_tables_and_keeps_its_rows() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("weft.db");
    version_3_file(&path, "");
    assert!(!table_sql(&path, "attempts").contains("WITHOUT ROWID"));

    let store = open(&path);
    assert_eq!(store.migrations_applied_at_open(), &[4, 5, 6]);
    let run = RunKey {
        dag_id: "etl".into(),
        run_id: "r1".into(),
    };
    let key = TaskInstanceKey::new("etl", "r1", "extract", -1);
    let record = store.task_instance(&key).await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.try_number, record.token),
        (TaskState::Success, 1, 5)
    );
    let attempts = store.attempts(&key).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].worker, "local");
    let xcoms = store.xcoms(&run).await.unwrap();
    assert_eq!(xcoms.len(), 1);
    assert_eq!(xcoms[0].value, serde_json::json!([1, 2, 3]));
    // Foreign keys are enforced again: a result of a task instance that does not exist is
    // refused.
    let orphan = Write::PutXcom(weft_storage::XcomRow {
        key: TaskInstanceKey::new("etl", "r1", "missing", -1),
        name: "return_value".into(),
        value: serde_json::json!(1),
    });
    assert!(store.write(vec![orphan]).await.is_err());
    drop(store);
    for table in ["task_instances", "attempts", "xcoms", "logs"] {
        let sql = table_sql(&path, table);
        assert!(sql.contains("WITHOUT ROWID"), "{table}: {sql}");
        assert!(
            sql.starts_with(&format!("CREATE TABLE \"{table}\""))
                || sql.starts_with(&format!("CREATE TABLE {table}")),
            "{sql}"
        );
    }
    assert_eq!(schema_versions(&path), vec![1, 2, 3, 4, 5, 6]);
}

/// A version-3 file whose rows refer to rows that do not exist (written with foreign keys
/// off) is not migrated: the error says so and the file stays at version 3, rows and all.
#[tokio::test]
async fn a_version_3_file_with_dangling_rows_is_refused_and_left_as_it_was() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("weft.db");
    version_3_file(
        &path,
        "PRAGMA foreign_keys = OFF; \
         INSERT INTO xcoms VALUES ('etl', 'r1', 'gone', -1, 'return_value', '1');",
    );
    let Err(error) = SqliteStore::open(&path, SqliteOptions::default()) else {
        panic!("the migration is refused");
    };
    assert!(
        error
            .to_string()
            .contains("refer to rows that do not exist"),
        "{error}"
    );
    assert_eq!(schema_versions(&path), vec![1, 2, 3]);
    assert!(!table_sql(&path, "xcoms").contains("WITHOUT ROWID"));
    let connection = Connection::open(&path).unwrap();
    let rows: i64 = connection
        .query_row("SELECT COUNT(*) FROM xcoms", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 2);
}

#[tokio::test]
async fn a_newer_schema_is_refused_with_what_to_do() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("weft.db");
    drop(open(&path));
    let newer = SCHEMA_VERSION + 1;
    Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, 'future', 0)",
            [newer],
        )
        .unwrap();

    let error = SqliteStore::open(&path, SqliteOptions::default()).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::Corrupt(_)), "{message}");
    assert!(
        message.contains(&format!("schema version {newer}")),
        "{message}"
    );
    assert!(message.contains("newer"), "{message}");
    assert!(message.contains("run a newer weft"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[tokio::test]
async fn garbage_is_refused_as_corrupt() {
    let directory = tempfile::tempdir().unwrap();
    let not_sqlite = directory.path().join("garbage.db");
    std::fs::write(
        &not_sqlite,
        (0..8192u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let error = SqliteStore::open(&not_sqlite, SqliteOptions::default()).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::Corrupt(_)), "{message}");
    assert!(message.contains("is not a SQLite database"), "{message}");
    assert!(message.contains("restore it from a backup"), "{message}");

    // A right header over garbage gets past the first check and is caught by SQLite.
    let bad_body = directory.path().join("bad_body.db");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend((0..8192u32).map(|i| (i * 31 % 253) as u8));
    std::fs::write(&bad_body, bytes).unwrap();
    let error = SqliteStore::open(&bad_body, SqliteOptions::default()).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::Corrupt(_)), "{message}");
    assert!(message.contains("restore it from a backup"), "{message}");
}

#[tokio::test]
async fn an_undecodable_value_reads_as_corrupt() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("weft.db");
    let store = open(&path);
    let version = DagVersionRow {
        dag_id: "d".into(),
        version_hash: "v1".into(),
        spec_json: "{}".into(),
        created_at: at(0),
    };
    let run = RunRow {
        key: RunKey {
            dag_id: "d".into(),
            run_id: "r".into(),
        },
        run_type: RunType::Manual,
        state: DagRunState::Queued,
        logical_date: at(0),
        data_interval: DataInterval {
            start: at(0),
            end: at(0),
        },
        version_hash: "v1".into(),
        conf: serde_json::json!({}),
        seed: 0,
        created_at: at(0),
        started_at: None,
        ended_at: None,
    };
    store
        .write(vec![
            Write::PutDag {
                version,
                fileloc: None,
                paused_if_new: false,
            },
            Write::CreateRun(run.clone()),
        ])
        .await
        .unwrap();
    Connection::open(&path)
        .unwrap()
        .execute("UPDATE dag_runs SET state = 'bogus'", [])
        .unwrap();
    let error = store.run(&run.key).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::Corrupt(_)), "{message}");
    assert!(message.contains("bogus"), "{message}");
}

/// A batch alone in its transaction (no savepoint) that is refused part-way leaves nothing
/// of its earlier writes, commits nothing, and leaves the writer ready for the next batch.
#[tokio::test]
async fn a_lone_batch_refused_midway_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("weft.db"));
    let before = store.counts();
    let orphan = Write::PutXcom(weft_storage::XcomRow {
        key: TaskInstanceKey::new("etl", "r1", "missing", -1),
        name: "return_value".into(),
        value: serde_json::json!(1),
    });
    let refused = store
        .write(vec![audit("written first", 10), orphan])
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::NotFound { .. }), "{refused}");
    assert!(store.audit(10).await.unwrap().is_empty());
    let after = store.counts();
    assert_eq!(after.transactions_committed, before.transactions_committed);
    assert_eq!(after.batches_refused, before.batches_refused + 1);
    assert_eq!(after.transactions_failed, before.transactions_failed);

    store.write(vec![audit("next", 10)]).await.unwrap();
    let entries = store.audit(10).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].action, "next");
    assert_eq!(
        store.counts().transactions_committed,
        before.transactions_committed + 1
    );
}

/// Writers for the group-commit test: half append audit entries, half race for one CAS.
const GROUP_WRITERS: usize = 64;
const BATCHES_PER_WRITER: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn group_commit_puts_many_batches_in_one_transaction() {
    let directory = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&directory.path().join("weft.db")));
    let run = RunKey {
        dag_id: "d".into(),
        run_id: "r".into(),
    };
    let version = DagVersionRow {
        dag_id: "d".into(),
        version_hash: "v1".into(),
        spec_json: "{}".into(),
        created_at: at(0),
    };
    let run_row = RunRow {
        key: run.clone(),
        run_type: RunType::Manual,
        state: DagRunState::Running,
        logical_date: at(0),
        data_interval: DataInterval {
            start: at(0),
            end: at(0),
        },
        version_hash: "v1".into(),
        conf: serde_json::json!({}),
        seed: 0,
        created_at: at(0),
        started_at: None,
        ended_at: None,
    };
    store
        .write(vec![
            Write::PutDag {
                version,
                fileloc: None,
                paused_if_new: false,
            },
            Write::CreateRun(run_row),
        ])
        .await
        .unwrap();
    let before = store.counts();

    let barrier = Arc::new(tokio::sync::Barrier::new(GROUP_WRITERS));
    let tasks: Vec<_> = (0..GROUP_WRITERS)
        .map(|writer| {
            let (store, barrier, run) = (store.clone(), barrier.clone(), run.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut won = 0;
                for step in 0..BATCHES_PER_WRITER {
                    let batch = if writer % 2 == 0 {
                        vec![audit(&format!("w{writer}s{step}"), 10)]
                    } else {
                        let record = task(&run, &format!("contested_{step}"), writer as u64);
                        vec![Write::PutTaskInstance {
                            expected: None,
                            record,
                        }]
                    };
                    match store.write(batch).await {
                        Ok(()) => won += 1,
                        Err(Error::Conflict { .. }) => {}
                        Err(error) => panic!("writer {writer}: {error}"),
                    }
                }
                won
            })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await.unwrap();
    }

    let counts = store.counts();
    let batches = (GROUP_WRITERS * BATCHES_PER_WRITER) as u64;
    let audits = (GROUP_WRITERS / 2 * BATCHES_PER_WRITER) as u64;
    // Every audit batch and exactly one creation per contested task instance got through.
    assert_eq!(accepted, audits + BATCHES_PER_WRITER as u64);
    assert_eq!(
        counts.batches_committed - before.batches_committed,
        accepted
    );
    assert_eq!(
        counts.batches_refused - before.batches_refused,
        batches - accepted
    );
    let transactions = counts.transactions_committed - before.transactions_committed;
    assert!(
        transactions < batches,
        "{batches} batches took {transactions} transactions: no grouping"
    );
    assert_eq!(store.audit(1_000).await.unwrap().len() as u64, audits);
    assert_eq!(
        store.task_instances(&run).await.unwrap().len(),
        BATCHES_PER_WRITER
    );
}

fn task(run: &RunKey, task_id: &str, token: u64) -> TaskInstanceRecord {
    TaskInstanceRecord {
        key: TaskInstanceKey::new(&run.dag_id, &run.run_id, task_id, -1),
        state: TaskState::None,
        try_number: 0,
        token,
        max_tries: 1,
        priority_weight: 1,
        pool: "default_pool".into(),
        pool_slots: 1,
        queued_at: None,
        started_at: None,
        ended_at: None,
        next_retry_at: None,
        note: None,
    }
}

/// Pages the capped database may grow to: the schema takes about 25, so a few dozen audit
/// entries of 8 KiB fill the rest.
const CAPPED_FILE_PAGES_MAX: u64 = 64;
/// Writes tried before the test gives up waiting for the cap.
const FILL_WRITES_MAX: usize = 1_000;

#[tokio::test]
async fn a_full_disk_is_a_clear_error_and_loses_nothing_acknowledged() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("weft.db");
    let options = SqliteOptions {
        file_pages_max: Some(CAPPED_FILE_PAGES_MAX),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&path, options).unwrap();

    let mut acknowledged = Vec::new();
    let mut failure = None;
    for index in 0..FILL_WRITES_MAX {
        let action = format!("fill-{index}");
        match store.write(vec![audit(&action, 8 * 1024)]).await {
            Ok(()) => acknowledged.push(action),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    let error = failure.expect("the capped file fills up");
    let message = error.to_string();
    assert!(matches!(error, Error::Unavailable(_)), "{message}");
    assert!(
        message.contains("disk holding the database is full"),
        "{message}"
    );
    assert!(
        message.contains("nothing acknowledged was lost"),
        "{message}"
    );
    assert!(!acknowledged.is_empty());

    // Still full: refused again, and reads keep working.
    assert!(matches!(
        store.write(vec![audit("again", 8 * 1024)]).await,
        Err(Error::Unavailable(_))
    ));
    assert_eq!(
        store.audit(FILL_WRITES_MAX).await.unwrap().len(),
        acknowledged.len()
    );
    drop(store);

    // "Free space": reopen without the cap; every acknowledged write is there and writes resume.
    let store = open(&path);
    let mut stored: Vec<String> = store
        .audit(FILL_WRITES_MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    stored.reverse();
    assert_eq!(stored, acknowledged);
    store.write(vec![audit("after", 8 * 1024)]).await.unwrap();
    assert_eq!(store.audit(1).await.unwrap()[0].action, "after");
}

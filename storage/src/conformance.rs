//! The one conformance suite every store backend passes, run unchanged against each.
//!
//! A backend's test file implements [`Backend`] (and [`DurableBackend`] if its data survives a
//! restart) and generates one `#[tokio::test]` per case with one line:
//!
//! ```text
//! weft_storage::conformance_tests!(MemoryBackend);           // every case but durability
//! weft_storage::conformance_tests!(SqliteBackend::new(), durable); // plus reopen-and-read-back
//! ```
//!
//! The calling crate needs `tokio` with the `macros` and `rt-multi-thread` features. Cases use
//! whole-second timestamps, because backends may store microseconds only.
//!
//! # The semantics the cases hold every backend to
//! - A batch is all or nothing: a refused batch leaves no trace. Audit ids only increase
//!   (gaps are allowed). An empty batch succeeds.
//! - Limits come from [`crate::batch::prepare`]: XCom, run conf and DAG spec over their limit
//!   and batches over `BATCH_WRITES_MAX` are refused; import-error messages and audit details
//!   are cut to their limit and end with [`TRUNCATED_MARKER`].
//! - References must exist, else `NotFound`: a run's DAG; a task instance's run; an attempt's,
//!   XCom's and log entry's task instance; the dag of `SetPaused`, the run of `UpdateRun`, the
//!   pool of `DeletePool`. Deleting `default_pool` is a `Conflict`.
//! - `PutDag` creates the DAG with `is_paused = paused_if_new`, else keeps `is_paused`; it
//!   always makes the version the latest, keeps the old `fileloc` when given `None`, and sets
//!   `updated_at` to the version's `created_at`. A version already stored keeps its first text.
//! - `UpdateRun` with `started_at`/`ended_at` `None` leaves those columns as they were.
//! - `PutTaskInstance` with `Some(expected)` on a missing row is a `Conflict` (its run exists).
//! - Orders: DAGs and pools by name, import errors by file, versions newest `created_at` first,
//!   runs newest logical date first then greatest run id, `runs_in_states` by (dag id, logical
//!   date, run id), task instances by (task id, map index), XComs by (task id, map index,
//!   name), attempts by try, audit newest id first. `latest_scheduled_run` counts only
//!   `scheduled` runs; `previous_run` any type with a strictly earlier logical date;
//!   `runs_before` the `runs` order from strictly before its cursor. Users by name, API
//!   tokens by id; deleting a missing token is not an error.
//! - Variables and connections (`SecretRow`) are kept apart by kind and listed by id;
//!   `PutSecret` with `SecretGuard::Sealed(sealed)` is a `Conflict` unless that exact sealed
//!   value is stored (a missing row included), with `SecretGuard::Absent` unless no row is; deleting a missing one is not an error; ids of 1 to
//!   `SECRET_ID_CHARS_MAX` characters and sealed values up to `SECRET_SEALED_BYTES_MAX` bytes.

use crate::batch::TRUNCATED_MARKER;
use crate::{
    ApiTokenRow, AttemptRow, AuditRow, CellRow, DagVersionRow, Error, ImportErrorRow, LeaseWrite,
    LogRow, PoolRow, Result, RunRow, SecretGuard, SecretKind, SecretRow, Store, UserRow, Write,
    XcomRow, AUDIT_DETAIL_BYTES_MAX, BATCH_WRITES_MAX, DEFAULT_POOL_NAME, DEFAULT_POOL_SLOTS,
    IMPORT_ERROR_BYTES_MAX, SECRET_ID_CHARS_MAX, SECRET_SEALED_BYTES_MAX, XCOM_BYTES_MAX,
};
use async_trait::async_trait;
use std::sync::Arc;
use weft_core::dag_run::{TaskInstanceRecord, TaskVersion};
use weft_core::ids::{AttemptId, RunKey, TaskInstanceKey};
use weft_core::lease::LeaseRow;
use weft_core::state::{DagRunState, RunType, TaskState};
use weft_core::timetable::DataInterval;
use weft_core::Timestamp;

/// Makes fresh stores for the suite.
#[async_trait]
pub trait Backend: Send + Sync {
    type Store: Store;
    /// A new, empty store (holding only the default pool), not shared with other cases.
    async fn create(&self) -> Self::Store;
}

/// A backend whose data outlives its handles.
#[async_trait]
pub trait DurableBackend: Backend {
    /// Drop every handle of `store` and open the same data again, as after a restart.
    async fn reopen(&self, store: Self::Store) -> Self::Store;
}

/// The one list of conformance cases: calls the macro named in the first brackets with the
/// tokens of the second brackets followed by every case name (the durable case excepted), so
/// that every runner of the suite takes its cases from here.
#[macro_export]
macro_rules! conformance_cases {
    ([$($callback:tt)*] [$($prefix:tt)*]) => {
        $($callback)*!($($prefix)*
            dags_put_versions_latest_and_paused,
            runs_one_per_logical_date,
            run_update_guarded_by_state,
            task_instance_create_once,
            task_instance_update_with_current_version,
            task_instance_stale_version_conflicts,
            batch_with_failing_guard_writes_nothing,
            racing_writers_exactly_one_wins,
            references_must_exist,
            attempts_oldest_first,
            xcoms_put_get_delete_and_too_large,
            logs_index,
            import_errors_put_clear_and_truncate,
            pools_put_delete_and_default,
            audit_ids_increase_newest_first,
            runs_in_states_across_dags,
            runs_in_states_follow_updates,
            latest_scheduled_run_ignores_other_types,
            previous_run_is_just_before,
            runs_newest_first_with_limit,
            runs_before_pages_newest_first,
            users_and_api_tokens_put_read_delete,
            secrets_put_reseal_and_delete,
            oversize_batch_refused,
            leases_compare_and_set_on_epoch_and_version,
            racing_takers_exactly_one_leases_a_shard,
            cells_beat_list_and_leave,
            fence_refuses_a_deposed_owner,
        );
    };
}

/// Generates one `#[tokio::test]` per conformance case. `durable` adds the cases that need
/// [`DurableBackend`].
#[macro_export]
macro_rules! conformance_tests {
    (@cases $backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let backend = $backend;
                $crate::conformance::$case(&backend).await;
            }
        )*
    };
    ($backend:expr, durable) => {
        $crate::conformance_tests!($backend);
        $crate::conformance_tests!(@cases $backend; durable_writes_survive_reopen);
    };
    ($backend:expr) => {
        $crate::conformance_cases!([$crate::conformance_tests] [@cases $backend;]);
    };
}

// ---------------------------------------------------------------------------------------------
// Fixtures

const DAG: &str = "etl";

/// 2024-01-01T00:00:00Z plus `seconds`.
pub fn at(seconds: i64) -> Timestamp {
    Timestamp::from_timestamp(1_704_067_200 + seconds, 0).expect("fixture time is in range")
}

fn dag_version(dag_id: &str, hash: &str, created: i64) -> DagVersionRow {
    DagVersionRow {
        dag_id: dag_id.to_string(),
        version_hash: hash.to_string(),
        spec_json: format!(r#"{{"dag_id":"{dag_id}","hash":"{hash}"}}"#),
        created_at: at(created),
    }
}

fn put_dag(dag_id: &str) -> Write {
    Write::PutDag {
        version: dag_version(dag_id, "v1", 0),
        fileloc: None,
        paused_if_new: false,
    }
}

fn run_row(dag_id: &str, run_id: &str, run_type: RunType, logical: i64) -> RunRow {
    RunRow {
        key: RunKey {
            dag_id: dag_id.into(),
            run_id: run_id.into(),
        },
        run_type,
        state: DagRunState::Queued,
        logical_date: at(logical),
        data_interval: DataInterval {
            start: at(logical),
            end: at(logical + 60),
        },
        version_hash: "v1".to_string(),
        conf: serde_json::json!({"source": "conformance", "n": [1, 2, 3]}),
        // All 64 bits must survive.
        seed: u64::MAX - 7,
        created_at: at(logical + 60),
        started_at: None,
        ended_at: None,
    }
}

fn task_record(run: &RunKey, task_id: &str, map_index: i32) -> TaskInstanceRecord {
    TaskInstanceRecord {
        key: TaskInstanceKey::new(&run.dag_id, &run.run_id, task_id, map_index),
        state: TaskState::None,
        try_number: 0,
        token: 0,
        max_tries: 3,
        priority_weight: 5,
        pool: DEFAULT_POOL_NAME.into(),
        pool_slots: 1,
        queued_at: None,
        started_at: None,
        ended_at: None,
        next_retry_at: None,
        note: None,
    }
}

/// `record` moved to queued for its next try with a new fencing token.
fn queued(record: &TaskInstanceRecord, token: u64) -> TaskInstanceRecord {
    TaskInstanceRecord {
        state: TaskState::Queued,
        try_number: record.try_number + 1,
        token,
        queued_at: Some(at(100)),
        ..record.clone()
    }
}

fn create(record: &TaskInstanceRecord) -> Write {
    Write::PutTaskInstance {
        expected: None,
        record: record.clone(),
    }
}

fn update(expected: TaskVersion, record: &TaskInstanceRecord) -> Write {
    Write::PutTaskInstance {
        expected: Some(expected),
        record: record.clone(),
    }
}

fn audit_entry(action: &str) -> AuditRow {
    AuditRow {
        id: 999,
        at: at(5),
        actor: "admin".to_string(),
        action: action.to_string(),
        target: DAG.to_string(),
        detail: String::new(),
    }
}

fn attempt(key: &TaskInstanceKey, try_number: u32, state: TaskState) -> AttemptRow {
    AttemptRow {
        attempt: AttemptId::new(key.clone(), try_number, u64::from(try_number) + 10),
        state,
        started_at: at(200 + i64::from(try_number)),
        ended_at: None,
        worker: format!("worker-{try_number}"),
        note: None,
    }
}

/// A DAG with one queued scheduled run at logical date `at(0)`.
async fn store_with_run<S: Store>(store: &S) -> RunKey {
    let run = run_row(DAG, "scheduled__1", RunType::Scheduled, 0);
    let key = run.key.clone();
    must(
        store.write(vec![put_dag(DAG), Write::CreateRun(run)]).await,
        "create a dag and a run",
    );
    key
}

/// A run with one task instance `extract` (state none, try 0, token 0).
async fn store_with_task<S: Store>(store: &S) -> TaskInstanceRecord {
    let run = store_with_run(store).await;
    let record = task_record(&run, "extract", -1);
    must(
        store.write(vec![create(&record)]).await,
        "create a task instance",
    );
    record
}

#[track_caller]
fn must<T>(result: Result<T>, doing: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{doing}: unexpected error: {error}"),
    }
}

#[track_caller]
fn assert_conflict(result: Result<()>, doing: &str) {
    match result {
        Err(Error::Conflict { .. }) => {}
        other => panic!("{doing}: expected a conflict, got {other:?}"),
    }
}

#[track_caller]
fn assert_not_found(result: Result<()>, doing: &str) {
    match result {
        Err(Error::NotFound { .. }) => {}
        other => panic!("{doing}: expected not found, got {other:?}"),
    }
}

fn run_ids(runs: &[RunRow]) -> Vec<&str> {
    runs.iter().map(|run| run.key.run_id.as_str()).collect()
}

// ---------------------------------------------------------------------------------------------
// Cases

pub async fn dags_put_versions_latest_and_paused<B: Backend>(backend: &B) {
    let store = backend.create().await;
    assert_eq!(must(store.dag(DAG).await, "read"), None);
    assert!(must(store.dags().await, "read").is_empty());

    let v1 = dag_version(DAG, "v1", 10);
    let put_v1 = Write::PutDag {
        version: v1.clone(),
        fileloc: Some("dags/etl.py".into()),
        paused_if_new: true,
    };
    must(store.write(vec![put_v1]).await, "put v1");
    let dag = must(store.dag(DAG).await, "read").expect("dag exists");
    assert_eq!(dag.latest_version, "v1");
    assert!(dag.is_paused, "a new dag takes paused_if_new");
    assert_eq!(dag.fileloc.as_deref(), Some("dags/etl.py"));
    assert_eq!(dag.updated_at, at(10));

    let v2 = dag_version(DAG, "v2", 20);
    must(
        store
            .write(vec![Write::PutDag {
                version: v2.clone(),
                fileloc: None,
                paused_if_new: false,
            }])
            .await,
        "put v2",
    );
    let dag = must(store.dag(DAG).await, "read").expect("dag exists");
    assert_eq!(dag.latest_version, "v2");
    assert!(
        dag.is_paused,
        "paused_if_new does not touch an existing dag"
    );
    assert_eq!(
        dag.fileloc.as_deref(),
        Some("dags/etl.py"),
        "no fileloc keeps the old one"
    );
    assert_eq!(
        must(store.dag_versions(DAG).await, "read"),
        vec![v2.clone(), v1.clone()]
    );

    // Storing a known version again is idempotent but makes it the latest.
    let v1_again = DagVersionRow {
        spec_json: "{}".into(),
        created_at: at(30),
        ..v1.clone()
    };
    must(
        store
            .write(vec![Write::PutDag {
                version: v1_again,
                fileloc: None,
                paused_if_new: false,
            }])
            .await,
        "put v1 again",
    );
    assert_eq!(
        must(store.dag_version(DAG, "v1").await, "read"),
        Some(v1.clone())
    );
    assert_eq!(must(store.dag_versions(DAG).await, "read"), vec![v2, v1]);
    assert_eq!(
        must(store.dag(DAG).await, "read")
            .expect("dag")
            .latest_version,
        "v1"
    );
    assert_eq!(must(store.dag_version(DAG, "v9").await, "read"), None);

    must(
        store
            .write(vec![Write::SetPaused {
                dag_id: DAG.into(),
                paused: false,
            }])
            .await,
        "unpause",
    );
    assert!(!must(store.dag(DAG).await, "read").expect("dag").is_paused);
    let half_valid = vec![
        Write::SetPaused {
            dag_id: DAG.into(),
            paused: true,
        },
        Write::SetPaused {
            dag_id: "missing".into(),
            paused: true,
        },
    ];
    assert_not_found(store.write(half_valid).await, "pause a missing dag");
    assert!(
        !must(store.dag(DAG).await, "read").expect("dag").is_paused,
        "the batch wrote nothing"
    );

    must(
        store.write(vec![put_dag("audit_dag")]).await,
        "put a second dag",
    );
    let ids: Vec<String> = must(store.dags().await, "read")
        .into_iter()
        .map(|dag| dag.dag_id)
        .collect();
    assert_eq!(ids, vec!["audit_dag".to_string(), DAG.to_string()]);
}

pub async fn runs_one_per_logical_date<B: Backend>(backend: &B) {
    let store = backend.create().await;
    must(
        store.write(vec![put_dag(DAG), put_dag("other")]).await,
        "put dags",
    );
    let scheduled = run_row(DAG, "scheduled__1", RunType::Scheduled, 0);
    must(
        store.write(vec![Write::CreateRun(scheduled.clone())]).await,
        "create scheduled run",
    );
    assert_eq!(
        must(store.run(&scheduled.key).await, "read"),
        Some(scheduled.clone())
    );

    let backfill_same_tick = run_row(DAG, "backfill__1", RunType::Backfill, 0);
    assert_conflict(
        store
            .write(vec![Write::CreateRun(backfill_same_tick)])
            .await,
        "backfill on a taken tick",
    );
    let scheduled_same_tick = run_row(DAG, "scheduled__again", RunType::Scheduled, 0);
    assert_conflict(
        store
            .write(vec![Write::CreateRun(scheduled_same_tick)])
            .await,
        "second scheduled run",
    );
    let same_id = run_row(DAG, "scheduled__1", RunType::Manual, 3600);
    assert_conflict(
        store.write(vec![Write::CreateRun(same_id)]).await,
        "same run id",
    );

    for run_id in ["manual__1", "manual__2"] {
        let manual = run_row(DAG, run_id, RunType::Manual, 0);
        must(
            store.write(vec![Write::CreateRun(manual)]).await,
            "manual runs share a tick",
        );
    }
    let next_tick = run_row(DAG, "scheduled__2", RunType::Scheduled, 3600);
    must(
        store.write(vec![Write::CreateRun(next_tick)]).await,
        "next tick",
    );
    let backfill_free_tick = run_row(DAG, "backfill__0", RunType::Backfill, -3600);
    must(
        store
            .write(vec![Write::CreateRun(backfill_free_tick)])
            .await,
        "backfill on a free tick",
    );
    let other_dag = run_row("other", "scheduled__1", RunType::Scheduled, 0);
    must(
        store.write(vec![Write::CreateRun(other_dag)]).await,
        "another dag's tick",
    );

    assert_eq!(must(store.runs(DAG, 100).await, "read").len(), 5);
    assert_eq!(must(store.runs("other", 100).await, "read").len(), 1);
}

pub async fn run_update_guarded_by_state<B: Backend>(backend: &B) {
    let store = backend.create().await;
    let key = store_with_run(&store).await;
    let start = |expected| Write::UpdateRun {
        key: key.clone(),
        expected,
        state: DagRunState::Running,
        started_at: Some(at(70)),
        ended_at: None,
    };
    assert_conflict(
        store.write(vec![start(DagRunState::Running)]).await,
        "stale run state",
    );
    assert_eq!(
        must(store.run(&key).await, "read").expect("run").state,
        DagRunState::Queued
    );

    must(
        store.write(vec![start(DagRunState::Queued)]).await,
        "start the run",
    );
    let run = must(store.run(&key).await, "read").expect("run");
    assert_eq!(
        (run.state, run.started_at, run.ended_at),
        (DagRunState::Running, Some(at(70)), None)
    );

    let finish = Write::UpdateRun {
        key: key.clone(),
        expected: DagRunState::Running,
        state: DagRunState::Success,
        started_at: None,
        ended_at: Some(at(90)),
    };
    must(store.write(vec![finish]).await, "finish the run");
    let run = must(store.run(&key).await, "read").expect("run");
    assert_eq!(run.state, DagRunState::Success);
    assert_eq!(
        run.started_at,
        Some(at(70)),
        "None leaves started_at as it was"
    );
    assert_eq!(run.ended_at, Some(at(90)));

    let missing = RunKey {
        dag_id: DAG.into(),
        run_id: "missing".into(),
    };
    let update_missing = Write::UpdateRun {
        key: missing,
        expected: DagRunState::Queued,
        state: DagRunState::Running,
        started_at: None,
        ended_at: None,
    };
    assert_not_found(
        store.write(vec![update_missing]).await,
        "update a missing run",
    );
}

pub async fn task_instance_create_once<B: Backend>(backend: &B) {
    let store = backend.create().await;
    let run = store_with_run(&store).await;
    let record = task_record(&run, "extract", -1);
    must(store.write(vec![create(&record)]).await, "create");
    assert_eq!(
        must(store.task_instance(&record.key).await, "read"),
        Some(record.clone())
    );

    let different = TaskInstanceRecord {
        priority_weight: 99,
        ..record.clone()
    };
    assert_conflict(store.write(vec![create(&different)]).await, "create twice");
    assert_eq!(
        must(store.task_instance(&record.key).await, "read"),
        Some(record.clone())
    );

    // Listed by task id, then map index.
    let mapped: Vec<TaskInstanceRecord> = [("load", 1), ("load", 0), ("check", -1)]
        .iter()
        .map(|(task, index)| task_record(&run, task, *index))
        .collect();
    must(
        store.write(mapped.iter().map(create).collect()).await,
        "create mapped",
    );
    let listed: Vec<(String, i32)> = must(store.task_instances(&run).await, "read")
        .into_iter()
        .map(|record| (record.key.task_id.to_string(), record.key.map_index))
        .collect();
    let expected: Vec<(String, i32)> = [("check", -1), ("extract", -1), ("load", 0), ("load", 1)]
        .iter()
        .map(|(t, i)| (t.to_string(), *i))
        .collect();
    assert_eq!(listed, expected);
}

pub async fn task_instance_update_with_current_version<B: Backend>(backend: &B) {
    let store = backend.create().await;
    let record = store_with_task(&store).await;
    let queued_record = queued(&record, 1);
    must(
        store
            .write(vec![update(record.version(), &queued_record)])
            .await,
        "queue",
    );
    assert_eq!(
        must(store.task_instance(&record.key).await, "read"),
        Some(queued_record.clone())
    );

    let running = TaskInstanceRecord {
        state: TaskState::Running,
        started_at: Some(at(120)),
        note: Some("on worker-1".into()),
        ..queued_record.clone()
    };
    must(
        store
            .write(vec![update(queued_record.version(), &running)])
            .await,
        "run",
    );
    assert_eq!(
        must(store.task_instance(&record.key).await, "read"),
        Some(running)
    );
}

pub async fn task_instance_stale_version_conflicts<B: Backend>(backend: &B) {
    let store = backend.create().await;
    let record = store_with_task(&store).await;
    let current = queued(&record, 1);
    must(
        store.write(vec![update(record.version(), &current)]).await,
        "queue",
    );
    let next = TaskInstanceRecord {
        state: TaskState::Running,
        ..current.clone()
    };
    let version = current.version();
    let stale = [
        (
            "stale state",
            TaskVersion {
                state: TaskState::Scheduled,
                ..version
            },
        ),
        (
            "stale try",
            TaskVersion {
                try_number: 0,
                ..version
            },
        ),
        (
            "stale token",
            TaskVersion {
                token: 0,
                ..version
            },
        ),
    ];
    for (what, expected) in stale {
        assert_conflict(store.write(vec![update(expected, &next)]).await, what);
        assert_eq!(
            must(store.task_instance(&record.key).await, "read"),
            Some(current.clone()),
            "{what}"
        );
    }
    let absent = task_record(
        &RunKey {
            dag_id: DAG.into(),
            run_id: "scheduled__1".into(),
        },
        "absent",
        -1,
    );
    assert_conflict(
        store.write(vec![update(absent.version(), &absent)]).await,
        "update a missing row",
    );
    assert_eq!(must(store.task_instance(&absent.key).await, "read"), None);
}

pub async fn batch_with_failing_guard_writes_nothing<B: Backend>(backend: &B) {
    let store = backend.create().await;
    let record = store_with_task(&store).await;
    let run = RunKey {
        dag_id: DAG.into(),
        run_id: "scheduled__1".into(),
    };
    let created = task_record(&run, "load", -1);
    let stale = TaskVersion {
        token: 42,
        ..record.version()
    };
    let batch = vec![
        create(&created),
        Write::PutAttempt(attempt(&created.key, 1, TaskState::Running)),
        Write::PutXcom(XcomRow {
            key: created.key.clone(),
            name: "return_value".into(),
            value: 1.into(),
        }),
        Write::Audit(audit_entry("rejected")),
        Write::PutPool(PoolRow {
            name: "etl".into(),
            slots: 2,
            description: String::new(),
        }),
        Write::UpdateRun {
            key: run.clone(),
            expected: DagRunState::Queued,
            state: DagRunState::Running,
            started_at: Some(at(1)),
            ended_at: None,
        },
        update(stale, &queued(&record, 1)),
    ];
    assert_conflict(store.write(batch).await, "batch with a stale guard last");

    assert_eq!(must(store.task_instance(&created.key).await, "read"), None);
    assert_eq!(
        must(store.task_instance(&record.key).await, "read"),
        Some(record.clone())
    );
    assert!(must(store.attempts(&created.key).await, "read").is_empty());
    assert!(must(store.xcoms(&run).await, "read").is_empty());
    assert!(must(store.audit(10).await, "read").is_empty());
    assert_eq!(must(store.pools().await, "read").len(), 1);
    assert_eq!(
        must(store.run(&run).await, "read").expect("run").state,
        DagRunState::Queued
    );

    // The store is still usable and the same writes go through without the stale guard.
    must(
        store
            .write(vec![
                create(&created),
                Write::Audit(audit_entry("accepted")),
            ])
            .await,
        "retry",
    );
    assert_eq!(
        must(store.task_instance(&created.key).await, "read"),
        Some(created)
    );
    assert_eq!(must(store.audit(10).await, "read").len(), 1);
}

/// Concurrent writers racing for the same transitions.
pub const RACE_ROUNDS: usize = 20;
pub const RACE_WRITERS: usize = 16;

pub async fn racing_writers_exactly_one_wins<B: Backend>(backend: &B) {
    let store = Arc::new(backend.create().await);
    let run = store_with_run(store.as_ref()).await;
    for round in 0..RACE_ROUNDS {
        let base = task_record(&run, &format!("race_{round}"), -1);

        // Everyone tries to create the same task instance.
        let creations = race(&store, |writer| {
            let record = TaskInstanceRecord {
                priority_weight: writer as i64,
                ..base.clone()
            };
            vec![create(&record)]
        })
        .await;
        let winner = single_winner(&creations, round, "create");
        let stored = must(store.task_instance(&base.key).await, "read").expect("created");
        assert_eq!(
            stored.priority_weight, winner as i64,
            "round {round}: the winner's row is stored"
        );

        // Everyone tries to dispatch the same try with their own fencing token.
        let version = stored.version();
        let dispatches = race(&store, |writer| {
            vec![update(version, &queued(&stored, 100 + writer as u64))]
        })
        .await;
        let winner = single_winner(&dispatches, round, "dispatch");
        let stored = must(store.task_instance(&base.key).await, "read").expect("exists");
        assert_eq!(
            stored.token,
            100 + winner as u64,
            "round {round}: the winner's token is stored"
        );
        assert_eq!(stored.try_number, 1);
    }
}

/// Runs `RACE_WRITERS` writes at once, released together by a barrier.
async fn race<S: Store>(store: &Arc<S>, batch_of: impl Fn(usize) -> Vec<Write>) -> Vec<Result<()>> {
    let barrier = Arc::new(tokio::sync::Barrier::new(RACE_WRITERS));
    let tasks: Vec<_> = (0..RACE_WRITERS)
        .map(|writer| {
            let (store, barrier, batch) = (store.clone(), barrier.clone(), batch_of(writer));
            tokio::spawn(async move {
                barrier.wait().await;
                store.write(batch).await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.expect("writer task panicked"));
    }
    results
}

#[track_caller]
fn single_winner(results: &[Result<()>], round: usize, what: &str) -> usize {
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, result)| result.is_ok())
        .map(|(writer, _)| writer)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "round {round}: {what} must have exactly one winner, got {results:?}"
    );
    for result in results.iter().filter(|result| result.is_err()) {
        assert!(
            matches!(result, Err(Error::Conflict { .. })),
            "round {round}: {what} losers get a conflict, got {result:?}"
        );
    }
    winners[0]
}

pub async fn references_must_exist<B: Backend>(backend: &B) {
    let store = backend.create().await;
    let orphan_run = run_row("missing_dag", "manual__1", RunType::Manual, 0);
    assert_not_found(
        store.write(vec![Write::CreateRun(orphan_run)]).await,
        "run of a missing dag",
    );

    let run = store_with_run(&store).await;
    let missing_run = RunKey {
        dag_id: DAG.into(),
        run_id: "missing".into(),
    };
    let orphan = task_record(&missing_run, "extract", -1);
    assert_not_found(
        store.write(vec![create(&orphan)]).await,
        "task instance of a missing run",
    );

    let missing_task = TaskInstanceKey::new(&run.dag_id, &run.run_id, "missing", -1);
    let orphans = [
        Write::PutAttempt(attempt(&missing_task, 1, TaskState::Running)),
        Write::PutXcom(XcomRow {
            key: missing_task.clone(),
            name: "return_value".into(),
            value: 1.into(),
        }),
        Write::PutLog(LogRow {
            key: missing_task.clone(),
            try_number: 1,
            path: "x.log".into(),
            bytes: 1,
            truncated: false,
        }),
    ];
    for write in orphans {
        assert_not_found(
            store.write(vec![write.clone()]).await,
            &format!("{write:?}"),
        );
    }
    assert!(must(store.xcoms(&run).await, "read").is_empty());
}

pub async fn attempts_oldest_first<B: Backend>(backend: &B) {
    let store = backend.create().await;
    let record = store_with_task(&store).await;
    let writes = [3, 1, 2]
        .iter()
        .map(|try_number| Write::PutAttempt(attempt(&record.key, *try_number, TaskState::Failed)))
        .collect();
    must(store.write(writes).await, "put attempts");
    let tries: Vec<u32> = must(store.attempts(&record.key).await, "read")
        .iter()
        .map(|a| a.attempt.try_number)
        .collect();
    assert_eq!(tries, vec![1, 2, 3]);

    let replaced = AttemptRow {
        state: TaskState::Success,
        ended_at: Some(at(300)),
        note: Some("done".into()),
        ..attempt(&record.key, 2, TaskState::Running)
    };
    must(
        store.write(vec![Write::PutAttempt(replaced.clone())]).await,
        "replace try 2",
    );
    let attempts = must(store.attempts(&record.key).await, "read");
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[1], replaced);
    let other = TaskInstanceKey {
        task_id: "other".into(),
        ..record.key.clone()
    };
    assert!(must(store.attempts(&other).await, "read").is_empty());
}

pub async fn xcoms_put_get_delete_and_too_large<B: Backend>(backend: &B) {
    let store = backend.create().await;
    let first = store_with_task(&store).await;
    let run = RunKey {
        dag_id: DAG.into(),
        run_id: "scheduled__1".into(),
    };
    let second = task_record(&run, "load", 0);
    must(store.write(vec![create(&second)]).await, "create second");
    let xcom = |key: &TaskInstanceKey, name: &str, value: serde_json::Value| XcomRow {
        key: key.clone(),
        name: name.into(),
        value,
    };
    let rows = [
        xcom(&second.key, "return_value", serde_json::json!([1, 2])),
        xcom(&first.key, "return_value", serde_json::json!({"rows": 10})),
        xcom(&first.key, "extra", serde_json::json!("text")),
    ];
    must(
        store
            .write(rows.iter().cloned().map(Write::PutXcom).collect())
            .await,
        "put xcoms",
    );
    let expected = vec![rows[2].clone(), rows[1].clone(), rows[0].clone()];
    assert_eq!(must(store.xcoms(&run).await, "read"), expected);

    let replaced = xcom(&first.key, "return_value", serde_json::json!(null));
    must(
        store.write(vec![Write::PutXcom(replaced.clone())]).await,
        "replace",
    );
    assert_eq!(must(store.xcoms(&run).await, "read")[1], replaced);

    must(
        store
            .write(vec![Write::DeleteXcoms {
                key: first.key.clone(),
            }])
            .await,
        "delete",
    );
    assert_eq!(must(store.xcoms(&run).await, "read"), vec![rows[0].clone()]);

    // The limit counts serialized bytes: a string of n bytes serializes to n + 2.
    let at_limit = xcom(
        &first.key,
        "return_value",
        "x".repeat(XCOM_BYTES_MAX - 2).into(),
    );
    must(
        store.write(vec![Write::PutXcom(at_limit)]).await,
        "an xcom at the limit",
    );
    let over = xcom(
        &second.key,
        "return_value",
        "x".repeat(XCOM_BYTES_MAX - 1).into(),
    );
    let result = store
        .write(vec![
            Write::Audit(audit_entry("before")),
            Write::PutXcom(over),
        ])
        .await;
    match result {
        Err(Error::TooLarge { size, max, .. }) => {
            assert_eq!((size, max), (XCOM_BYTES_MAX + 1, XCOM_BYTES_MAX))
        }
        other => panic!("an xcom over the limit: expected too large, got {other:?}"),
    }
    assert!(
        must(store.audit(10).await, "read").is_empty(),
        "the refused batch wrote nothing"
    );
    assert_eq!(must(store.xcoms(&run).await, "read").len(), 2);
}

pub async fn logs_index<B: Backend>(backend: &B) {
    let store = backend.create().await;
    let record = store_with_task(&store).await;
    let log = |try_number: u32, bytes: u64, truncated: bool| LogRow {
        key: record.key.clone(),
        try_number,
        path: format!("logs/{DAG}/extract/{try_number}.log"),
        bytes,
        truncated,
    };
    must(
        store
            .write(vec![
                Write::PutLog(log(1, 10, false)),
                Write::PutLog(log(2, 20, false)),
            ])
            .await,
        "put logs",
    );
    assert_eq!(
        must(store.log_entry(&record.key, 1).await, "read"),
        Some(log(1, 10, false))
    );
    assert_eq!(
        must(store.log_entry(&record.key, 2).await, "read"),
        Some(log(2, 20, false))
    );
    assert_eq!(must(store.log_entry(&record.key, 3).await, "read"), None);
    must(
        store
            .write(vec![Write::PutLog(log(2, u64::MAX, true))])
            .await,
        "replace",
    );
    assert_eq!(
        must(store.log_entry(&record.key, 2).await, "read"),
        Some(log(2, u64::MAX, true))
    );
}

pub async fn import_errors_put_clear_and_truncate<B: Backend>(backend: &B) {
    let store = backend.create().await;
    let error = |fileloc: &str, message: &str| ImportErrorRow {
        fileloc: fileloc.into(),
        line: Some(3),
        message: message.into(),
        at: at(1),
    };
    must(
        store
            .write(vec![
                Write::PutImportError(error("b.py", "bad")),
                Write::PutImportError(error("a.py", "worse")),
            ])
            .await,
        "put",
    );
    assert_eq!(
        must(store.import_errors().await, "read"),
        vec![error("a.py", "worse"), error("b.py", "bad")]
    );
    must(
        store
            .write(vec![Write::PutImportError(error("a.py", "still bad"))])
            .await,
        "replace",
    );
    must(
        store
            .write(vec![Write::ClearImportError {
                fileloc: "b.py".into(),
            }])
            .await,
        "clear",
    );
    must(
        store
            .write(vec![Write::ClearImportError {
                fileloc: "never.py".into(),
            }])
            .await,
        "clear a missing one",
    );
    assert_eq!(
        must(store.import_errors().await, "read"),
        vec![error("a.py", "still bad")]
    );

    let huge = "traceback line\n".repeat(IMPORT_ERROR_BYTES_MAX / 10);
    must(
        store
            .write(vec![Write::PutImportError(error("huge.py", &huge))])
            .await,
        "a huge import error is kept, cut",
    );
    let stored = must(store.import_errors().await, "read")
        .into_iter()
        .find(|e| e.fileloc == "huge.py")
        .expect("stored");
    assert!(
        stored.message.len() <= IMPORT_ERROR_BYTES_MAX,
        "cut to the limit"
    );
    assert!(stored.message.starts_with("traceback line\n"));
    assert!(stored.message.ends_with(TRUNCATED_MARKER));
}

pub async fn pools_put_delete_and_default<B: Backend>(backend: &B) {
    let store = backend.create().await;
    let default = PoolRow {
        name: DEFAULT_POOL_NAME.into(),
        slots: DEFAULT_POOL_SLOTS,
        description: "Default pool".into(),
    };
    assert_eq!(must(store.pools().await, "read"), vec![default.clone()]);

    let etl = PoolRow {
        name: "etl".into(),
        slots: 4,
        description: "extract jobs".into(),
    };
    let resized = PoolRow {
        slots: 64,
        ..default.clone()
    };
    must(
        store
            .write(vec![
                Write::PutPool(etl.clone()),
                Write::PutPool(resized.clone()),
            ])
            .await,
        "put pools",
    );
    assert_eq!(
        must(store.pools().await, "read"),
        vec![resized.clone(), etl]
    );

    must(
        store
            .write(vec![Write::DeletePool { name: "etl".into() }])
            .await,
        "delete",
    );
    assert_not_found(
        store
            .write(vec![Write::DeletePool { name: "etl".into() }])
            .await,
        "delete twice",
    );
    assert_conflict(
        store
            .write(vec![Write::DeletePool {
                name: DEFAULT_POOL_NAME.into(),
            }])
            .await,
        "delete the default pool",
    );
    assert_eq!(must(store.pools().await, "read"), vec![resized]);
}

pub async fn audit_ids_increase_newest_first<B: Backend>(backend: &B) {
    let store = backend.create().await;
    for action in ["a1", "a2", "a3"] {
        must(
            store.write(vec![Write::Audit(audit_entry(action))]).await,
            "audit",
        );
    }
    must(
        store
            .write(vec![
                Write::Audit(audit_entry("a4")),
                Write::Audit(audit_entry("a5")),
            ])
            .await,
        "audit batch",
    );
    let all = must(store.audit(100).await, "read");
    let actions: Vec<&str> = all.iter().map(|entry| entry.action.as_str()).collect();
    assert_eq!(actions, vec!["a5", "a4", "a3", "a2", "a1"]);
    assert!(
        all.windows(2).all(|pair| pair[0].id > pair[1].id),
        "ids increase: {all:?}"
    );
    assert_eq!(all[0].actor, "admin");
    assert_eq!(all[0].at, at(5));

    let newest = must(store.audit(2).await, "read");
    assert_eq!(newest, all[..2].to_vec());
    assert!(must(store.audit(0).await, "read").is_empty());

    let long = AuditRow {
        detail: "d".repeat(AUDIT_DETAIL_BYTES_MAX + 1),
        ..audit_entry("long")
    };
    must(
        store.write(vec![Write::Audit(long)]).await,
        "a long detail is kept, cut",
    );
    let stored = must(store.audit(1).await, "read").remove(0);
    assert!(stored.id > all[0].id);
    assert!(stored.detail.len() <= AUDIT_DETAIL_BYTES_MAX);
    assert!(stored.detail.ends_with(TRUNCATED_MARKER));
}

pub async fn runs_in_states_across_dags<B: Backend>(backend: &B) {
    let store = backend.create().await;
    must(
        store.write(vec![put_dag("a"), put_dag("b")]).await,
        "put dags",
    );
    let with_state = |dag: &str, run_id: &str, logical: i64, state| RunRow {
        state,
        ..run_row(dag, run_id, RunType::Manual, logical)
    };
    let runs = [
        with_state("b", "r1", 0, DagRunState::Running),
        with_state("a", "r2", 60, DagRunState::Queued),
        with_state("a", "r1", 120, DagRunState::Running),
        with_state("a", "r3", 0, DagRunState::Success),
        with_state("b", "r0", 0, DagRunState::Failed),
    ];
    must(
        store
            .write(runs.iter().cloned().map(Write::CreateRun).collect())
            .await,
        "create runs",
    );
    let active = must(
        store
            .runs_in_states(&[DagRunState::Queued, DagRunState::Running])
            .await,
        "read",
    );
    let keys: Vec<String> = active.iter().map(|run| run.key.to_string()).collect();
    assert_eq!(
        keys,
        vec!["a/r2", "a/r1", "b/r1"],
        "ordered by dag, logical date, run id"
    );
    assert_eq!(active[0], runs[1]);
    let finished = must(
        store
            .runs_in_states(&[DagRunState::Success, DagRunState::Failed])
            .await,
        "read",
    );
    assert_eq!(finished.len(), 2);
    assert!(must(store.runs_in_states(&[]).await, "read").is_empty());
}

/// A run is found by its current state through every update, including an update that keeps
/// the state (a run rebuilt after a restart writes `running` over `running`).
pub async fn runs_in_states_follow_updates<B: Backend>(backend: &B) {
    let store = backend.create().await;
    must(store.write(vec![put_dag(DAG)]).await, "put dag");
    let run = run_row(DAG, "r1", RunType::Manual, 60);
    must(
        store.write(vec![Write::CreateRun(run.clone())]).await,
        "create run",
    );
    let keys_in = |states: Vec<RunRow>| -> Vec<String> {
        states.iter().map(|run| run.key.to_string()).collect()
    };
    let update = |expected, state| Write::UpdateRun {
        key: run.key.clone(),
        expected,
        state,
        started_at: None,
        ended_at: None,
    };
    let steps = [
        (DagRunState::Queued, DagRunState::Running),
        (DagRunState::Running, DagRunState::Running),
        (DagRunState::Running, DagRunState::Running),
        (DagRunState::Running, DagRunState::Success),
    ];
    for (expected, state) in steps {
        must(
            store.write(vec![update(expected, state)]).await,
            "update run",
        );
        let found = must(store.runs_in_states(&[state]).await, "read");
        assert_eq!(
            keys_in(found),
            vec![run.key.to_string()],
            "after {expected} -> {state}"
        );
        let others: Vec<DagRunState> = [
            DagRunState::Queued,
            DagRunState::Running,
            DagRunState::Success,
            DagRunState::Failed,
        ]
        .into_iter()
        .filter(|other| *other != state)
        .collect();
        let elsewhere = must(store.runs_in_states(&others).await, "read");
        assert!(
            elsewhere.is_empty(),
            "after {expected} -> {state} the run is only under {state}: {elsewhere:?}"
        );
    }
}

pub async fn latest_scheduled_run_ignores_other_types<B: Backend>(backend: &B) {
    let store = backend.create().await;
    must(
        store.write(vec![put_dag(DAG), put_dag("other")]).await,
        "put dags",
    );
    assert_eq!(must(store.latest_scheduled_run(DAG).await, "read"), None);
    let runs = vec![
        run_row(DAG, "scheduled__1", RunType::Scheduled, 60),
        run_row(DAG, "scheduled__3", RunType::Scheduled, 180),
        run_row(DAG, "scheduled__2", RunType::Scheduled, 120),
        run_row(DAG, "backfill__5", RunType::Backfill, 300),
        run_row(DAG, "manual__6", RunType::Manual, 360),
        run_row("other", "scheduled__9", RunType::Scheduled, 900),
    ];
    must(
        store
            .write(runs.into_iter().map(Write::CreateRun).collect())
            .await,
        "create runs",
    );
    let latest = must(store.latest_scheduled_run(DAG).await, "read").expect("a scheduled run");
    assert_eq!(latest.key.run_id, "scheduled__3");
    assert_eq!(latest.logical_date, at(180));
}

pub async fn previous_run_is_just_before<B: Backend>(backend: &B) {
    let store = backend.create().await;
    must(
        store.write(vec![put_dag(DAG), put_dag("other")]).await,
        "put dags",
    );
    let runs = vec![
        run_row(DAG, "scheduled__1", RunType::Scheduled, 60),
        run_row(DAG, "manual__2", RunType::Manual, 120),
        run_row(DAG, "scheduled__3", RunType::Scheduled, 180),
        run_row("other", "scheduled__2", RunType::Scheduled, 150),
    ];
    must(
        store
            .write(runs.into_iter().map(Write::CreateRun).collect())
            .await,
        "create runs",
    );
    let previous = |seconds| {
        let store = &store;
        async move { must(store.previous_run(DAG, at(seconds)).await, "read").map(|run| run.key.run_id) }
    };
    assert_eq!(previous(60).await, None);
    assert_eq!(previous(120).await.as_deref(), Some("scheduled__1"));
    assert_eq!(previous(180).await.as_deref(), Some("manual__2"));
    assert_eq!(previous(10_000).await.as_deref(), Some("scheduled__3"));
}

pub async fn runs_newest_first_with_limit<B: Backend>(backend: &B) {
    let store = backend.create().await;
    must(store.write(vec![put_dag(DAG)]).await, "put dag");
    let runs = vec![
        run_row(DAG, "scheduled__2", RunType::Scheduled, 120),
        run_row(DAG, "scheduled__4", RunType::Scheduled, 240),
        run_row(DAG, "scheduled__1", RunType::Scheduled, 60),
        run_row(DAG, "manual__4", RunType::Manual, 240),
        run_row(DAG, "scheduled__3", RunType::Scheduled, 180),
    ];
    must(
        store
            .write(runs.into_iter().map(Write::CreateRun).collect())
            .await,
        "create runs",
    );
    let all = must(store.runs(DAG, 100).await, "read");
    // Same logical date: greater run id first.
    assert_eq!(
        run_ids(&all),
        vec![
            "scheduled__4",
            "manual__4",
            "scheduled__3",
            "scheduled__2",
            "scheduled__1"
        ]
    );
    assert_eq!(
        run_ids(&must(store.runs(DAG, 2).await, "read")),
        vec!["scheduled__4", "manual__4"]
    );
    assert!(must(store.runs(DAG, 0).await, "read").is_empty());
    assert!(must(store.runs("unknown", 10).await, "read").is_empty());
}

pub async fn runs_before_pages_newest_first<B: Backend>(backend: &B) {
    let store = backend.create().await;
    must(store.write(vec![put_dag(DAG)]).await, "put dag");
    let runs = vec![
        run_row(DAG, "scheduled__1", RunType::Scheduled, 60),
        run_row(DAG, "scheduled__2", RunType::Scheduled, 120),
        run_row(DAG, "manual__2", RunType::Manual, 120),
        run_row(DAG, "scheduled__3", RunType::Scheduled, 180),
        run_row("other", "scheduled__0", RunType::Scheduled, 0),
    ];
    must(store.write(vec![put_dag("other")]).await, "put other dag");
    must(
        store
            .write(runs.into_iter().map(Write::CreateRun).collect())
            .await,
        "create runs",
    );
    let first = must(store.runs_before(DAG, None, 2).await, "first page");
    assert_eq!(run_ids(&first), vec!["scheduled__3", "scheduled__2"]);
    let cursor = first.last().map(|run| run.logical_date);
    let second = must(store.runs_before(DAG, cursor, 10).await, "second page");
    assert_eq!(run_ids(&second), vec!["scheduled__1"]);
    assert!(must(store.runs_before(DAG, Some(at(60)), 10).await, "end").is_empty());
}

pub async fn users_and_api_tokens_put_read_delete<B: Backend>(backend: &B) {
    let store = backend.create().await;
    let user = |name: &str, role: &str| UserRow {
        username: name.to_string(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_string(),
        role: role.to_string(),
        dag_grants: vec!["etl".to_string()],
        disabled: false,
        created_at: at(1),
        session_epoch: 3,
    };
    let token = ApiTokenRow {
        id: "t1".to_string(),
        name: "ci".to_string(),
        username: "bo".to_string(),
        secret_hash: "ab12".to_string(),
        created_at: at(2),
        expires_at: Some(at(3600)),
    };
    let writes = vec![
        Write::PutUser(user("bo", "viewer")),
        Write::PutUser(user("al", "admin")),
        Write::PutApiToken(token.clone()),
    ];
    must(store.write(writes).await, "put users and token");
    let names: Vec<String> = must(store.users().await, "users")
        .into_iter()
        .map(|user| user.username)
        .collect();
    assert_eq!(names, vec!["al", "bo"]);
    // Replacing a user changes it in place.
    let mut changed = user("bo", "op");
    changed.disabled = true;
    must(
        store.write(vec![Write::PutUser(changed.clone())]).await,
        "replace",
    );
    assert_eq!(must(store.user("bo").await, "user"), Some(changed));
    assert_eq!(must(store.user("nobody").await, "user"), None);
    assert_eq!(
        must(store.api_token("t1").await, "token"),
        Some(token.clone())
    );
    assert_eq!(must(store.api_tokens().await, "tokens"), vec![token]);
    let delete = |id: &str| Write::DeleteApiToken { id: id.to_string() };
    must(
        store.write(vec![delete("t1"), delete("missing")]).await,
        "delete",
    );
    assert_eq!(must(store.api_token("t1").await, "token"), None);
    assert!(must(store.api_tokens().await, "tokens").is_empty());
}

pub async fn secrets_put_reseal_and_delete<B: Backend>(backend: &B) {
    let store = backend.create().await;
    let row = |kind: SecretKind, id: &str, sealed: &str| SecretRow {
        kind,
        id: id.to_string(),
        description: format!("{} {id}", kind.as_str()),
        sealed: sealed.to_string(),
        updated_at: at(5),
    };
    let put = |row: SecretRow| Write::PutSecret {
        row,
        guard: SecretGuard::Any,
    };
    let writes = vec![
        put(row(SecretKind::Variable, "b", "weft1:k:b1")),
        put(row(SecretKind::Variable, "a", "weft1:k:a1")),
        put(row(SecretKind::Connection, "a", "weft1:k:c1")),
    ];
    must(store.write(writes).await, "put secrets");
    let ids = |rows: Vec<SecretRow>| rows.into_iter().map(|row| row.id).collect::<Vec<_>>();
    let variables = must(store.secrets(SecretKind::Variable).await, "variables");
    assert_eq!(ids(variables), vec!["a", "b"]);
    assert_eq!(
        must(
            store.secret(SecretKind::Connection, "a").await,
            "connection"
        ),
        Some(row(SecretKind::Connection, "a", "weft1:k:c1"))
    );
    assert_eq!(
        must(store.secret(SecretKind::Connection, "b").await, "none"),
        None
    );
    // An unguarded put replaces; a guarded one needs the exact stored value.
    let replaced = row(SecretKind::Variable, "a", "weft1:k:a2");
    must(store.write(vec![put(replaced.clone())]).await, "replace");
    let stale = Write::PutSecret {
        row: row(SecretKind::Variable, "a", "weft1:k:a3"),
        guard: SecretGuard::Sealed("weft1:k:a1".to_string()),
    };
    let refused = store
        .write(vec![Write::Audit(audit_entry("reseal")), stale])
        .await;
    assert!(
        matches!(refused, Err(Error::Conflict { .. })),
        "a re-seal guarded by a value no longer stored: {refused:?}"
    );
    assert_eq!(
        must(store.secret(SecretKind::Variable, "a").await, "kept"),
        Some(replaced)
    );
    assert!(
        must(store.audit(10).await, "audit").is_empty(),
        "the batch left no trace"
    );
    let missing = Write::PutSecret {
        row: row(SecretKind::Variable, "zz", "weft1:k:z"),
        guard: SecretGuard::Sealed("weft1:k:z0".to_string()),
    };
    assert!(matches!(
        store.write(vec![missing]).await,
        Err(Error::Conflict { .. })
    ));
    assert_eq!(
        must(store.secret(SecretKind::Variable, "zz").await, "none"),
        None
    );
    // A create refuses a row that exists, and creates one that does not.
    let create = |row: SecretRow| Write::PutSecret {
        row,
        guard: SecretGuard::Absent,
    };
    let taken = store
        .write(vec![create(row(SecretKind::Variable, "a", "weft1:k:a9"))])
        .await;
    assert!(
        matches!(taken, Err(Error::Conflict { .. })),
        "a create of a row that exists: {taken:?}"
    );
    let fresh = row(SecretKind::Connection, "new", "weft1:k:n1");
    must(store.write(vec![create(fresh.clone())]).await, "create");
    assert_eq!(
        must(store.secret(SecretKind::Connection, "new").await, "created"),
        Some(fresh)
    );
    must(
        store
            .write(vec![Write::DeleteSecret {
                kind: SecretKind::Connection,
                id: "new".to_string(),
            }])
            .await,
        "delete the created row",
    );
    let resealed = row(SecretKind::Variable, "a", "weft1:k2:a4");
    let reseal = Write::PutSecret {
        row: resealed.clone(),
        guard: SecretGuard::Sealed("weft1:k:a2".to_string()),
    };
    must(store.write(vec![reseal]).await, "re-seal");
    assert_eq!(
        must(store.secret(SecretKind::Variable, "a").await, "resealed"),
        Some(resealed)
    );
    let delete = |kind: SecretKind, id: &str| Write::DeleteSecret {
        kind,
        id: id.to_string(),
    };
    let deletes = vec![
        delete(SecretKind::Variable, "a"),
        delete(SecretKind::Variable, "missing"),
    ];
    must(store.write(deletes).await, "delete");
    let variables = must(store.secrets(SecretKind::Variable).await, "variables");
    assert_eq!(ids(variables), vec!["b"]);
    let connections = must(store.secrets(SecretKind::Connection).await, "connections");
    assert_eq!(
        ids(connections),
        vec!["a"],
        "the connection `a` is another row"
    );
    // Limits: an id and a sealed value at their limits are stored; one over is refused.
    let long_id = "i".repeat(SECRET_ID_CHARS_MAX);
    let big = row(
        SecretKind::Variable,
        &long_id,
        &"s".repeat(SECRET_SEALED_BYTES_MAX),
    );
    must(store.write(vec![put(big.clone())]).await, "at the limits");
    assert_eq!(
        must(store.secret(SecretKind::Variable, &long_id).await, "big"),
        Some(big.clone())
    );
    let mut over = big.clone();
    over.sealed.push('s');
    assert!(matches!(
        store.write(vec![put(over)]).await,
        Err(Error::TooLarge { .. })
    ));
    let mut over = big;
    over.id.push('i');
    assert!(matches!(
        store.write(vec![put(over)]).await,
        Err(Error::TooLarge { .. })
    ));
}

pub async fn oversize_batch_refused<B: Backend>(backend: &B) {
    let store = backend.create().await;
    let batch = vec![Write::Audit(audit_entry("flood")); BATCH_WRITES_MAX + 1];
    match store.write(batch).await {
        Err(Error::TooMany { count, max, .. }) => {
            assert_eq!((count, max), (BATCH_WRITES_MAX + 1, BATCH_WRITES_MAX))
        }
        other => panic!("a batch over the limit: expected too many, got {other:?}"),
    }
    assert!(must(store.audit(1).await, "read").is_empty());
    assert!(must(
        store.write(Vec::new()).await.map(|_| true),
        "an empty batch"
    ));
}

pub async fn durable_writes_survive_reopen<B: DurableBackend>(backend: &B) {
    let store = backend.create().await;
    let record = store_with_task(&store).await;
    let run = RunKey {
        dag_id: DAG.into(),
        run_id: "scheduled__1".into(),
    };
    let queued_record = queued(&record, 1);
    let writes = vec![
        update(record.version(), &queued_record),
        Write::PutAttempt(attempt(&record.key, 1, TaskState::Running)),
        Write::PutXcom(XcomRow {
            key: record.key.clone(),
            name: "return_value".into(),
            value: serde_json::json!({"k": [1]}),
        }),
        Write::PutLog(LogRow {
            key: record.key.clone(),
            try_number: 1,
            path: "a.log".into(),
            bytes: 5,
            truncated: false,
        }),
        Write::PutImportError(ImportErrorRow {
            fileloc: "bad.py".into(),
            line: None,
            message: "boom".into(),
            at: at(2),
        }),
        Write::PutPool(PoolRow {
            name: "etl".into(),
            slots: 3,
            description: String::new(),
        }),
        Write::Audit(audit_entry("before restart")),
    ];
    must(store.write(writes).await, "write everything");
    let before = Snapshot::read(&store, &run, &record.key).await;

    let store = backend.reopen(store).await;
    let after = Snapshot::read(&store, &run, &record.key).await;
    assert_eq!(
        after, before,
        "everything acknowledged is read back after a restart"
    );

    // The reopened store keeps enforcing guards and numbering.
    assert_conflict(
        store
            .write(vec![update(record.version(), &queued_record)])
            .await,
        "stale after reopen",
    );
    let running = TaskInstanceRecord {
        state: TaskState::Running,
        ..queued_record.clone()
    };
    must(
        store
            .write(vec![
                update(queued_record.version(), &running),
                Write::Audit(audit_entry("after restart")),
            ])
            .await,
        "write after reopen",
    );
    let audit = must(store.audit(10).await, "read");
    assert_eq!(audit.len(), 2);
    assert!(audit[0].id > audit[1].id);
}

/// Everything one case wrote, read back for comparison.
#[derive(Debug, PartialEq)]
struct Snapshot {
    dags: Vec<crate::DagRow>,
    versions: Vec<DagVersionRow>,
    runs: Vec<RunRow>,
    task_instances: Vec<TaskInstanceRecord>,
    attempts: Vec<AttemptRow>,
    xcoms: Vec<XcomRow>,
    log: Option<LogRow>,
    import_errors: Vec<ImportErrorRow>,
    pools: Vec<PoolRow>,
    audit: Vec<AuditRow>,
}

impl Snapshot {
    async fn read<S: Store>(store: &S, run: &RunKey, key: &TaskInstanceKey) -> Snapshot {
        Snapshot {
            dags: must(store.dags().await, "read"),
            versions: must(store.dag_versions(&run.dag_id).await, "read"),
            runs: must(store.runs(&run.dag_id, 100).await, "read"),
            task_instances: must(store.task_instances(run).await, "read"),
            attempts: must(store.attempts(key).await, "read"),
            xcoms: must(store.xcoms(run).await, "read"),
            log: must(store.log_entry(key, 1).await, "read"),
            import_errors: must(store.import_errors().await, "read"),
            pools: must(store.pools().await, "read"),
            audit: must(store.audit(100).await, "read"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cells: shard leases, heartbeats, run fences

/// Shards the conformance cases read.
const SHARDS: u32 = 64;

fn lease(shard: u32, owner: Option<&str>, epoch: u64, version: u64) -> LeaseRow {
    LeaseRow {
        shard,
        owner: owner.map(str::to_string),
        epoch,
        version,
    }
}

pub async fn leases_compare_and_set_on_epoch_and_version<B: Backend>(backend: &B) {
    let store = backend.create().await;
    assert!(must(store.leases(SHARDS).await, "read leases").is_empty());

    let first = lease(3, Some("cell-a"), 1, 1);
    // A row that does not exist is only created with no expectation.
    assert_eq!(
        must(store.write_lease(Some((0, 0)), &first, at(1)).await, "take"),
        LeaseWrite::Refused(None)
    );
    assert_eq!(
        must(store.write_lease(None, &first, at(1)).await, "take"),
        LeaseWrite::Applied
    );
    // A second creation finds the row.
    assert_eq!(
        must(
            store
                .write_lease(None, &lease(3, Some("cell-b"), 1, 1), at(2))
                .await,
            "take"
        ),
        LeaseWrite::Refused(Some(first.clone()))
    );
    // A renewal from the row as it is applies; one from a stale version does not.
    let renewed = lease(3, Some("cell-a"), 1, 2);
    assert_eq!(
        must(
            store.write_lease(Some((1, 1)), &renewed, at(3)).await,
            "renew"
        ),
        LeaseWrite::Applied
    );
    assert_eq!(
        must(
            store
                .write_lease(Some((1, 1)), &lease(3, Some("cell-a"), 1, 2), at(4))
                .await,
            "renew"
        ),
        LeaseWrite::Refused(Some(renewed.clone()))
    );
    // All 64 bits of epochs and versions survive, and other shards are their own rows.
    let big = lease(0, None, u64::MAX - 1, u64::MAX - 2);
    assert_eq!(
        must(store.write_lease(None, &big, at(5)).await, "create"),
        LeaseWrite::Applied
    );
    let rows = must(store.leases(SHARDS).await, "read leases");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].lease, big);
    assert_eq!(rows[0].written_at, at(5));
    assert_eq!(rows[1].lease, renewed);
    assert_eq!(rows[1].written_at, at(3));
}

pub async fn racing_takers_exactly_one_leases_a_shard<B: Backend>(backend: &B) {
    let store = Arc::new(backend.create().await);
    for round in 0..RACE_ROUNDS as u32 {
        let expect = if round == 0 {
            None
        } else {
            Some((round as u64, 1))
        };
        if round > 0 {
            // The row as the last round's winner left it, handed over to nobody.
            let rows = must(store.leases(SHARDS).await, "read");
            let current = rows.iter().find(|row| row.lease.shard == 7).expect("row");
            let freed = lease(7, None, round as u64, 1);
            let from = (current.lease.epoch, current.lease.version);
            assert_eq!(
                must(store.write_lease(Some(from), &freed, at(0)).await, "free"),
                LeaseWrite::Applied
            );
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(RACE_WRITERS));
        let tasks: Vec<_> = (0..RACE_WRITERS)
            .map(|writer| {
                let (store, barrier) = (store.clone(), barrier.clone());
                let row = lease(7, Some(&format!("cell-{writer}")), round as u64 + 1, 1);
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.write_lease(expect, &row, at(1)).await
                })
            })
            .collect();
        let mut applied = Vec::new();
        for (writer, task) in tasks.into_iter().enumerate() {
            if must(task.await.expect("taker panicked"), "take") == LeaseWrite::Applied {
                applied.push(writer);
            }
        }
        assert_eq!(
            applied.len(),
            1,
            "round {round}: exactly one taker wins: {applied:?}"
        );
        let rows = must(store.leases(SHARDS).await, "read");
        let row = rows.iter().find(|row| row.lease.shard == 7).expect("row");
        assert_eq!(
            row.lease.owner.as_deref(),
            Some(format!("cell-{}", applied[0]).as_str())
        );
    }
}

pub async fn cells_beat_list_and_leave<B: Backend>(backend: &B) {
    let store = backend.create().await;
    let cell = |name: &str, version: u64| CellRow {
        name: name.to_string(),
        region: "eu".to_string(),
        address: "127.0.0.2:7100".to_string(),
        api: "http://127.0.0.2:8080".to_string(),
        version,
        beat_at: at(version as i64),
        started_at: at(0),
    };
    must(store.put_cell(&cell("b", 1)).await, "beat");
    must(store.put_cell(&cell("a", 1)).await, "beat");
    must(store.put_cell(&cell("a", u64::MAX)).await, "beat again");
    let cells = must(store.cells().await, "list");
    assert_eq!(cells, vec![cell("a", u64::MAX), cell("b", 1)]);
    must(store.delete_cell("a").await, "leave");
    must(store.delete_cell("nobody").await, "leave twice");
    assert_eq!(must(store.cells().await, "list"), vec![cell("b", 1)]);
}

pub async fn fence_refuses_a_deposed_owner<B: Backend>(backend: &B) {
    let store = backend.create().await;
    let fence = |run: &RunKey, epoch| Write::Fence {
        run: run.clone(),
        epoch,
    };
    // A run created under epoch 2 is stamped with it.
    let run = run_row(DAG, "manual__fenced", RunType::Manual, 0);
    let key = run.key.clone();
    must(
        store
            .write(vec![put_dag(DAG), Write::CreateRun(run), fence(&key, 2)])
            .await,
        "create a fenced run",
    );
    assert_eq!(must(store.run_epoch(&key).await, "epoch"), Some(2));
    let record = task_record(&key, "extract", -1);
    must(
        store.write(vec![fence(&key, 2), create(&record)]).await,
        "the owner writes",
    );
    // A new owner adopts the run with a batch of only its fence.
    must(store.write(vec![fence(&key, 3)]).await, "adopt");
    assert_eq!(must(store.run_epoch(&key).await, "epoch"), Some(3));
    // The deposed owner's late write is refused whole, and says why.
    let late = store
        .write(vec![
            update(record.version(), &queued(&record, 50)),
            fence(&key, 2),
        ])
        .await;
    match late {
        Err(Error::Fenced { epoch, current, .. }) => {
            assert_eq!((epoch, current), (2, 3));
        }
        other => panic!("a deposed owner's write: expected fenced, got {other:?}"),
    }
    let stored = must(store.task_instance(&record.key).await, "read").expect("exists");
    assert_eq!(stored, record, "nothing of the refused batch was written");
    // The new owner's write passes; a fence on a run that does not exist is not found.
    must(
        store
            .write(vec![
                fence(&key, 3),
                update(record.version(), &queued(&record, 51)),
            ])
            .await,
        "the new owner writes",
    );
    // A late batch whose other guards no longer hold either is refused for its epoch first.
    let stale = store
        .write(vec![
            fence(&key, 2),
            update(record.version(), &queued(&record, 52)),
        ])
        .await;
    assert!(
        matches!(
            stale,
            Err(Error::Fenced {
                epoch: 2,
                current: 3,
                ..
            })
        ),
        "a deposed owner's stale write: {stale:?}"
    );
    // A run never fenced has no epoch, and any owner may adopt it.
    let plain = store_with_run(&store).await;
    assert_eq!(must(store.run_epoch(&plain).await, "epoch"), None);
    must(
        store.write(vec![fence(&plain, 1)]).await,
        "adopt an unfenced run",
    );
    assert_eq!(must(store.run_epoch(&plain).await, "epoch"), Some(1));
    let missing = RunKey {
        dag_id: DAG.into(),
        run_id: "nope".into(),
    };
    assert_not_found(
        store.write(vec![fence(&missing, 1)]).await,
        "fence a missing run",
    );
}

//! A quick measurement of SQLite group commit: batches and writes per second with 1 and with 64
//! concurrent writers, each batch one task-instance compare-and-set plus one attempt row.
//!
//! `cargo run --release -p weft-storage --example store_throughput [-- normal]`
//! (default `synchronous=FULL`). Numbers depend on the disk's fsync latency; nothing asserts them.

use std::sync::Arc;
use std::time::Instant;
use weft_core::dag_run::TaskInstanceRecord;
use weft_core::ids::{AttemptId, RunKey, TaskInstanceKey};
use weft_core::state::{DagRunState, RunType, TaskState};
use weft_core::timetable::DataInterval;
use weft_storage::sqlite::{SqliteOptions, SqliteStore, Synchronous};
use weft_storage::{AttemptRow, DagVersionRow, RunRow, Store, Write};

/// Batches per measurement, split across the writers, but at least
/// `BATCHES_PER_WRITER_MIN` per writer so the 64-writer run lasts long enough to measure.
const BATCHES_TOTAL: usize = 2_000;
const BATCHES_PER_WRITER_MIN: usize = 100;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let synchronous = match std::env::args().nth(1).as_deref() {
        Some("normal") => Synchronous::Normal,
        _ => Synchronous::Full,
    };
    for writers in [1, 64] {
        let directory = tempfile::tempdir()?;
        let options = SqliteOptions {
            synchronous,
            ..SqliteOptions::default()
        };
        let store = Arc::new(SqliteStore::open(
            directory.path().join("weft.db"),
            options,
        )?);
        let run = set_up(&store, writers).await?;
        let batches_per_writer = (BATCHES_TOTAL / writers).max(BATCHES_PER_WRITER_MIN);
        let started = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|writer| {
                let (store, run) = (store.clone(), run.clone());
                tokio::spawn(
                    async move { write_loop(store, run, writer, batches_per_writer).await },
                )
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        let seconds = started.elapsed().as_secs_f64();
        let batches = (batches_per_writer * writers) as f64;
        let counts = store.counts();
        println!(
            "synchronous={synchronous:?} writers={writers:>2}: {:>8.0} batches/s {:>8.0} writes/s \
             ({} batches in {} transactions, {seconds:.2}s)",
            batches / seconds,
            2.0 * batches / seconds,
            counts.batches_committed,
            counts.transactions_committed,
        );
    }
    Ok(())
}

fn at(seconds: i64) -> weft_core::Timestamp {
    weft_core::Timestamp::from_timestamp(1_704_067_200 + seconds, 0).expect("in range")
}

async fn set_up(store: &SqliteStore, writers: usize) -> weft_storage::Result<RunKey> {
    let version = DagVersionRow {
        dag_id: "bench".into(),
        version_hash: "v1".into(),
        spec_json: "{}".into(),
        created_at: at(0),
    };
    let key = RunKey {
        dag_id: "bench".into(),
        run_id: "manual__1".into(),
    };
    let run = RunRow {
        key: key.clone(),
        run_type: RunType::Manual,
        state: DagRunState::Running,
        logical_date: at(0),
        data_interval: DataInterval {
            start: at(0),
            end: at(0),
        },
        version_hash: "v1".into(),
        conf: serde_json::json!({}),
        seed: 1,
        created_at: at(0),
        started_at: None,
        ended_at: None,
    };
    let mut batch = vec![
        Write::PutDag {
            version,
            fileloc: None,
            paused_if_new: false,
        },
        Write::CreateRun(run),
    ];
    batch.extend((0..writers).map(|writer| Write::PutTaskInstance {
        expected: None,
        record: record(&key, writer, 0),
    }));
    store.write(batch).await?;
    Ok(key)
}

fn record(run: &RunKey, writer: usize, token: u64) -> TaskInstanceRecord {
    TaskInstanceRecord {
        key: TaskInstanceKey::new(&run.dag_id, &run.run_id, &format!("task_{writer}"), -1),
        state: if token == 0 {
            TaskState::None
        } else {
            TaskState::Queued
        },
        try_number: token as u32,
        token,
        max_tries: u32::MAX,
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

async fn write_loop(
    store: Arc<SqliteStore>,
    run: RunKey,
    writer: usize,
    batches: usize,
) -> weft_storage::Result<()> {
    for step in 0..batches as u64 {
        let current = record(&run, writer, step);
        let next = record(&run, writer, step + 1);
        let attempt = AttemptRow {
            attempt: AttemptId::new(next.key.clone(), next.try_number, next.token),
            state: TaskState::Running,
            started_at: at(1),
            ended_at: None,
            worker: "bench".into(),
            note: None,
        };
        store
            .write(vec![
                Write::PutTaskInstance {
                    expected: Some(current.version()),
                    record: next,
                },
                Write::PutAttempt(attempt),
            ])
            .await?;
    }
    Ok(())
}

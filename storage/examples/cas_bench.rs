//! Compare-and-set transitions per second and their latency, SQLite beside CQL.
//!
//!     cargo run --release -p weft-storage --example cas_bench -- [transitions] [json-path]
//!
//! Each writer moves its own task instance through `transitions` compare-and-set updates
//! (a new try and fencing token each time), as a worker's result would. CQL is measured when
//! `WEFT_TEST_CQL=host:port` is set (deploy/cql-test-cluster.sh up 1), in a fresh keyspace.

use std::time::{Duration, Instant};

/// Errors of the benchmark, erased: it only reports them.
type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
use weft_core::dag_run::TaskInstanceRecord;
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::state::{DagRunState, RunType, TaskState};
use weft_core::timetable::DataInterval;
use weft_storage::conformance::at;
use weft_storage::cql::{CqlOptions, CqlStore};
use weft_storage::sqlite::{SqliteOptions, SqliteStore};
use weft_storage::{DagVersionRow, RunRow, Store, Write, DEFAULT_POOL_NAME};

/// Writers running at once, each on its own task instance.
const WRITERS: [usize; 2] = [1, 8];
const TRANSITIONS_DEFAULT: usize = 500;

#[derive(Debug)]
struct Measurement {
    backend: &'static str,
    writers: usize,
    transitions: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> BenchResult<()> {
    let mut arguments = std::env::args().skip(1);
    let transitions: usize = arguments
        .next()
        .map(|text| text.parse())
        .transpose()?
        .unwrap_or(TRANSITIONS_DEFAULT);
    let json_path = arguments
        .next()
        .unwrap_or_else(|| "cas_bench.json".to_string());
    let mut measurements = Vec::new();

    let directory = tempfile::tempdir()?;
    let sqlite = SqliteStore::open(directory.path().join("weft.db"), SqliteOptions::default())?;
    for writers in WRITERS {
        measurements.push(measure("sqlite", &sqlite, writers, transitions).await?);
    }
    match std::env::var("WEFT_TEST_CQL") {
        Ok(address) => {
            let keyspace = format!("weft_bench_{}", std::process::id());
            let options = CqlOptions {
                contact_points: vec![address],
                keyspace,
                ..CqlOptions::default()
            };
            let cql = CqlStore::connect(options).await?;
            for writers in WRITERS {
                measurements.push(measure("cql", &cql, writers, transitions).await?);
            }
            cql.drop_keyspace().await?;
        }
        Err(_) => println!("WEFT_TEST_CQL is not set: measuring SQLite only"),
    }

    println!(
        "{:<8} {:>7} {:>11} {:>12} {:>9} {:>9} {:>9}",
        "backend", "writers", "transitions", "per second", "p50 ms", "p99 ms", "max ms"
    );
    for m in &measurements {
        println!(
            "{:<8} {:>7} {:>11} {:>12.0} {:>9.2} {:>9.2} {:>9.2}",
            m.backend, m.writers, m.transitions, m.per_second, m.p50_ms, m.p99_ms, m.max_ms
        );
    }
    let json: Vec<serde_json::Value> = measurements
        .iter()
        .map(|m| {
            serde_json::json!({
                "backend": m.backend, "writers": m.writers, "transitions": m.transitions,
                "per_second": m.per_second, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms,
                "max_ms": m.max_ms,
            })
        })
        .collect();
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {json_path}");
    Ok(())
}

/// `writers` tasks each make `transitions / writers` compare-and-set updates.
async fn measure<S: Store + Clone>(
    backend: &'static str,
    store: &S,
    writers: usize,
    transitions: usize,
) -> BenchResult<Measurement> {
    let run = RunKey {
        dag_id: format!("bench_{writers}").into(),
        run_id: "manual__1".into(),
    };
    let version = DagVersionRow {
        dag_id: run.dag_id.to_string(),
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
            end: at(60),
        },
        version_hash: "v1".into(),
        conf: serde_json::json!({}),
        seed: 1,
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
        .await?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let (store, run) = (store.clone(), run.clone());
            let count = transitions / writers;
            tokio::spawn(async move { transitions_of(store, run, writer, count).await })
        })
        .collect();
    let mut latencies = Vec::with_capacity(transitions);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile =
        |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0;
    Ok(Measurement {
        backend,
        writers,
        transitions: latencies.len(),
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        max_ms: percentile(1.0),
    })
}

async fn transitions_of<S: Store>(
    store: S,
    run: RunKey,
    writer: usize,
    count: usize,
) -> BenchResult<Vec<Duration>> {
    let mut record = TaskInstanceRecord {
        key: TaskInstanceKey::new(&run.dag_id, &run.run_id, &format!("task_{writer}"), -1),
        state: TaskState::Queued,
        try_number: 0,
        token: 0,
        max_tries: u32::MAX,
        priority_weight: 1,
        pool: DEFAULT_POOL_NAME.into(),
        pool_slots: 1,
        queued_at: None,
        started_at: None,
        ended_at: None,
        next_retry_at: None,
        note: None,
    };
    store
        .write(vec![Write::PutTaskInstance {
            expected: None,
            record: record.clone(),
        }])
        .await?;
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let next = TaskInstanceRecord {
            try_number: record.try_number + 1,
            token: record.token + 1,
            ..record.clone()
        };
        let started = Instant::now();
        store
            .write(vec![Write::PutTaskInstance {
                expected: Some(record.version()),
                record: next.clone(),
            }])
            .await?;
        latencies.push(started.elapsed());
        record = next;
    }
    Ok(latencies)
}

//! Benchmark of the two endpoints that Airflow users find slow (not a timed test): the grid of
//! a DAG with 10,000 runs × 20 tasks, and the DAG list with 5,000 DAGs. Fills a SQLite store in
//! a temporary directory, serves the API over real HTTP on 127.0.0.1, and prints p50/p95/max
//! latencies over N requests per endpoint.
//!
//! `cargo run --release -p weft-web --example api_bench [-- --requests 200]`

use anyhow::Context;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_actors::{Engine, EngineConfig};
use weft_core::dag_run::TaskInstanceRecord;
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::spec::{DagSpec, ScheduleSpec, TaskKind, TaskSpec};
use weft_core::state::{DagRunState, RunType, TaskState};
use weft_core::timetable::DataInterval;
use weft_storage::{DagVersionRow, RunRow, Store, Write};

const GRID_RUNS: usize = 10_000;
const GRID_TASKS: usize = 20;
const LIST_DAGS: usize = 5_000;
/// Runs of each listed DAG, for its recent-runs column.
const LIST_DAG_RUNS: usize = 3;
/// Writes per batch while filling the store (under the store's batch limit).
const FILL_BATCH_WRITES: usize = 5_000;

fn chain_spec(dag_id: &str, tasks: usize) -> DagSpec {
    let mut spec = DagSpec::new(
        dag_id,
        (0..tasks)
            .map(|index| {
                let mut task = TaskSpec::new(&format!("task_{index:02}"), TaskKind::Empty);
                if index > 0 {
                    task.upstream = vec![format!("task_{:02}", index - 1)];
                }
                task
            })
            .collect(),
    );
    spec.schedule = ScheduleSpec::Cron {
        expression: "@hourly".to_string(),
        data_intervals: false,
    };
    spec.owner = Some(format!("team{}", dag_id.len() % 7));
    spec.tags = vec!["bench".to_string()];
    spec.is_paused_upon_creation = Some(true);
    spec
}

fn put_dag(spec: &DagSpec, at: weft_core::Timestamp) -> Write {
    Write::PutDag {
        version: DagVersionRow {
            dag_id: spec.dag_id.clone(),
            version_hash: spec.version_hash(),
            spec_json: serde_json::to_string(spec).unwrap(),
            created_at: at,
        },
        fileloc: None,
        paused_if_new: true,
    }
}

/// A finished run with every task instance successful.
fn finished_run(spec: &DagSpec, logical: weft_core::Timestamp) -> Vec<Write> {
    let key = RunKey {
        dag_id: spec.dag_id.as_str().into(),
        run_id: weft_core::ids::run_id_for(RunType::Scheduled, logical).into(),
    };
    let started = logical + chrono::Duration::seconds(1);
    let ended = started + chrono::Duration::seconds(30);
    let mut writes = vec![Write::CreateRun(RunRow {
        key: key.clone(),
        run_type: RunType::Scheduled,
        state: DagRunState::Success,
        logical_date: logical,
        data_interval: DataInterval::exact(logical),
        version_hash: spec.version_hash(),
        conf: serde_json::json!({}),
        seed: 0,
        created_at: logical,
        started_at: Some(started),
        ended_at: Some(ended),
    })];
    for task in &spec.tasks {
        writes.push(Write::PutTaskInstance {
            expected: None,
            record: TaskInstanceRecord {
                key: TaskInstanceKey::new(&key.dag_id, &key.run_id, &task.task_id, -1),
                state: TaskState::Success,
                try_number: 1,
                token: 1,
                max_tries: 1,
                priority_weight: 1,
                pool: "default_pool".into(),
                pool_slots: 1,
                queued_at: Some(started),
                started_at: Some(started),
                ended_at: Some(ended),
                next_retry_at: None,
                note: None,
            },
        });
    }
    writes
}

async fn fill(store: &dyn Store) -> anyhow::Result<()> {
    let origin = chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z")?.to_utc();
    let mut batch = Vec::new();
    let flush = |batch: &mut Vec<Write>| {
        let writes = std::mem::take(batch);
        async move { store.write(writes).await }
    };
    let grid = chain_spec("grid_dag", GRID_TASKS);
    store.write(vec![put_dag(&grid, origin)]).await?;
    for index in 0..GRID_RUNS {
        batch.extend(finished_run(
            &grid,
            origin + chrono::Duration::hours(index as i64),
        ));
        if batch.len() >= FILL_BATCH_WRITES {
            flush(&mut batch).await?;
        }
    }
    flush(&mut batch).await?;
    for index in 0..LIST_DAGS {
        let spec = chain_spec(&format!("dag_{index:05}"), 3);
        store.write(vec![put_dag(&spec, origin)]).await?;
        for run in 0..LIST_DAG_RUNS {
            batch.extend(finished_run(
                &spec,
                origin + chrono::Duration::hours(run as i64),
            ));
        }
        if batch.len() >= FILL_BATCH_WRITES {
            flush(&mut batch).await?;
        }
    }
    flush(&mut batch).await?;
    Ok(())
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn measure(
    client: &reqwest::Client,
    label: &str,
    url: &str,
    token: &str,
    requests: usize,
) -> anyhow::Result<()> {
    let mut times = Vec::with_capacity(requests);
    let mut bytes = 0;
    for _ in 0..requests {
        let started = Instant::now();
        let response = client.get(url).bearer_auth(token).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{label}: {}",
            response.status()
        );
        bytes = response.bytes().await?.len();
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "{label:<44} n={requests:<4} p50={:>7.1} ms  p95={:>7.1} ms  max={:>7.1} ms  ({bytes} bytes)",
        percentile(&times, 0.50).as_secs_f64() * 1e3,
        percentile(&times, 0.95).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let requests = args
        .iter()
        .position(|arg| arg == "--requests")
        .and_then(|index| args.get(index + 1))
        .map(|text| text.parse::<usize>())
        .transpose()
        .context("--requests takes a number")?
        .unwrap_or(200);

    let dir = tempfile::tempdir()?;
    let options = weft_storage::sqlite::SqliteOptions {
        synchronous: weft_storage::sqlite::Synchronous::Normal,
        ..Default::default()
    };
    let store: Arc<dyn Store> = Arc::new(weft_storage::sqlite::SqliteStore::open(
        dir.path().join("weft.db"),
        options,
    )?);
    let filling = Instant::now();
    fill(store.as_ref()).await?;
    println!(
        "filled: 1 DAG × {GRID_RUNS} runs × {GRID_TASKS} tasks, {LIST_DAGS} DAGs × {LIST_DAG_RUNS} runs in {:.1} s",
        filling.elapsed().as_secs_f64()
    );

    let engine = Engine::start(store.clone(), EngineConfig::new(dir.path())).await?;
    weft_web::auth::create_user(
        store.as_ref(),
        "bench",
        "bench password",
        weft_api_types::Role::Viewer,
    )
    .await
    .map_err(|error| anyhow::anyhow!("{error}"))?;
    let mut config = weft_web::WebConfig::new(vec![7; 32]);
    config.api_requests_per_minute = u32::MAX;
    let state = weft_web::AppState::new(engine.clone(), config, None)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(weft_web::serve(
        listener,
        weft_web::api_router(state),
        std::future::pending(),
    ));
    let client = reqwest::Client::new();
    let login: serde_json::Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"username": "bench", "password": "bench password"}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["access_token"]
        .as_str()
        .context("login failed")?
        .to_string();

    // A cursor deep in the history: the grid reads a bounded page wherever it starts.
    let deep: serde_json::Value = client
        .get(format!("{base}/api/v1/dags/grid_dag/grid?limit=200"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let cursor = deep["next_before"]
        .as_str()
        .context("a second page")?
        .to_string();

    let cases = [
        (
            "grid, newest 25 runs",
            format!("{base}/api/v1/dags/grid_dag/grid"),
        ),
        (
            "grid, newest 100 runs",
            format!("{base}/api/v1/dags/grid_dag/grid?limit=100"),
        ),
        (
            "grid, 25 runs after 200",
            format!("{base}/api/v1/dags/grid_dag/grid?before={cursor}"),
        ),
        ("dag list, first 50 of 5,001", format!("{base}/api/v1/dags")),
        (
            "dag list, search, 50 of matches",
            format!("{base}/api/v1/dags?search=dag_04&offset=20"),
        ),
    ];
    for (label, url) in &cases {
        // One warm-up request fills the parsed-DAG cache, as a running server has.
        client.get(url).bearer_auth(&token).send().await?;
        measure(&client, label, url, &token, requests).await?;
    }
    engine.shutdown().await;
    Ok(())
}

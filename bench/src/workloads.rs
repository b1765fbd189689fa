//! The workloads that run DAGs through a real engine on a durable SQLite store
//! (`synchronous=FULL`: every state change is on disk before anything depends on it):
//! chain100 (shell, in-process, Python), light40, fanout1000, many_dags and inproc, and the
//! chain, the fan-out and a worker killed mid-attempt on remote workers (`remote.rs`).

use crate::measure::{self, millis, CpuSplit, Summary, Usage};
use crate::remote::Cluster;
use crate::report::{Throughput, WorkloadResult};
use anyhow::Context as _;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_actors::executor::sandbox::{SandboxSpec, TaskIdentity};
use weft_actors::{Engine, EngineConfig, RustDag};
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::spec::{DagSpec, TaskKind, TaskSpec};
use weft_core::state::DagRunState;
use weft_storage::sqlite::{SqliteOptions, SqliteStore};
use weft_storage::Store;

/// Sizes of one suite run (full or smoke).
#[derive(Debug, Clone)]
pub struct Sizes {
    pub runs: usize,
    pub chain_length: usize,
    /// The chain and the fan-out on remote workers.
    pub remote_chain_length: usize,
    pub remote_fanout_width: usize,
    /// Trials of kill9_retry_remote.
    pub kill_trials: usize,
    pub light_length: usize,
    pub fanout_width: usize,
    pub many_dags: usize,
    pub many_dags_tasks: usize,
    pub inproc_runs: usize,
    pub inproc_width: usize,
}

/// Worker slots of the in-process throughput workload: in-process no-op tasks hold a slot
/// only for a moment, so more slots keep more runs' batches in each group commit.
const INPROC_WORKER_SLOTS: usize = 64;

pub struct Workspace {
    pub root: PathBuf,
    pub sdk: PathBuf,
}

impl Workspace {
    pub(crate) fn fresh_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.root.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

async fn durable_engine(dir: &Path, worker_slots: Option<usize>) -> anyhow::Result<Engine> {
    Ok(durable_engine_and_store(dir, worker_slots, None).await?.0)
}

/// `durable_engine`, and its store for the commit counts.
async fn durable_engine_and_store(
    dir: &Path,
    worker_slots: Option<usize>,
    sandbox: Option<SandboxSpec>,
) -> anyhow::Result<(Engine, Arc<SqliteStore>)> {
    engine_with(dir, |config| {
        if let Some(slots) = worker_slots {
            config.worker_slots = slots;
        }
        config.sandbox = sandbox;
    })
    .await
}

/// A durable engine whose own slots serve only a queue no task uses: every attempt runs on a
/// remote worker.
async fn remote_engine_and_store(dir: &Path) -> anyhow::Result<(Engine, Arc<SqliteStore>)> {
    engine_with(dir, |config| {
        config.worker_queues = vec![NODE_ONLY_QUEUE.to_string()];
    })
    .await
}

/// The queue the engine's own slots serve in the remote workloads.
const NODE_ONLY_QUEUE: &str = "bench-node-only";

async fn engine_with(
    dir: &Path,
    configure: impl FnOnce(&mut EngineConfig),
) -> anyhow::Result<(Engine, Arc<SqliteStore>)> {
    let sqlite = Arc::new(SqliteStore::open(
        dir.join("weft.db"),
        SqliteOptions::default(),
    )?);
    let store: Arc<dyn Store> = sqlite.clone();
    let mut config = EngineConfig::new(dir);
    configure(&mut config);
    Ok((Engine::start(store, config).await?, sqlite))
}

fn shell_task(task_id: &str, upstream: &[String]) -> TaskSpec {
    shell_task_running(task_id, upstream, "true")
}

fn shell_task_running(task_id: &str, upstream: &[String], command: &str) -> TaskSpec {
    let kind = TaskKind::Shell {
        command: command.to_string(),
        env: Default::default(),
        append_env: false,
        cwd: None,
        skip_exit_code: Some(99),
        templated: false,
    };
    let mut task = TaskSpec::new(task_id, kind);
    task.operator = "BashOperator".to_string();
    task.upstream = upstream.to_vec();
    task
}

fn chain_ids(length: usize) -> Vec<String> {
    (0..length).map(|index| format!("t{index:04}")).collect()
}

fn shell_chain(dag_id: &str, length: usize) -> DagSpec {
    let ids = chain_ids(length);
    let tasks = ids
        .iter()
        .enumerate()
        .map(|(index, id)| {
            shell_task(
                id,
                if index == 0 {
                    &[]
                } else {
                    &ids[index - 1..index]
                },
            )
        })
        .collect();
    let mut spec = DagSpec::new(dag_id, tasks);
    spec.max_active_runs = 1_000;
    spec
}

/// Parses a generated Python DAG file with the SDK's processor (what the DAG processor runs).
async fn python_dag(
    workspace: &Workspace,
    dir: &Path,
    file_name: &str,
    source: &str,
) -> anyhow::Result<DagSpec> {
    let path = dir.join(file_name);
    std::fs::write(&path, source)?;
    let output = tokio::process::Command::new("python3")
        .args(["-m", "weft.processor"])
        .arg(&path)
        .env("PYTHONPATH", &workspace.sdk)
        .output()
        .await?;
    let line = String::from_utf8(output.stdout)?;
    let answer: serde_json::Value =
        serde_json::from_str(line.trim()).context("reading the processor's answer")?;
    if !answer["error"].is_null() {
        anyhow::bail!("{file_name} did not load: {}", answer["error"]);
    }
    Ok(serde_json::from_value(answer["dags"][0].clone())?)
}

/// Triggers `dag_id` `runs` times one after the other (after one warm-up run that is not
/// counted), returning each run's key and end-to-end seconds.
async fn sequential_runs(
    engine: &Engine,
    dag_id: &str,
    runs: usize,
) -> anyhow::Result<Vec<(RunKey, f64)>> {
    let warm_up = engine.trigger(dag_id, json!({})).await?;
    expect_success(
        wait_for_run_within(engine, &warm_up, RUN_WAIT).await?,
        dag_id,
    )?;
    let mut measured = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let run = engine.trigger(dag_id, json!({})).await?;
        expect_success(wait_for_run_within(engine, &run, RUN_WAIT).await?, dag_id)?;
        measured.push((run, started.elapsed().as_secs_f64()));
    }
    Ok(measured)
}

/// The longest a run of a chain or a fan-out may take before the bench fails.
const RUN_WAIT: Duration = Duration::from_secs(300);

/// `Engine::wait_for_run`, failing after `wait`.
async fn wait_for_run_within(
    engine: &Engine,
    run: &RunKey,
    wait: Duration,
) -> anyhow::Result<DagRunState> {
    tokio::time::timeout(wait, engine.wait_for_run(run))
        .await
        .map_err(|_| anyhow::anyhow!("run {run} did not finish within {wait:?}"))?
        .map_err(Into::into)
}

fn expect_success(state: DagRunState, dag_id: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        state == DagRunState::Success,
        "a run of {dag_id} ended {state:?}"
    );
    Ok(())
}

/// Downstream attempt start minus upstream attempt end along a chain, from the attempt rows.
async fn chain_gaps_ms(
    store: &Arc<dyn Store>,
    run: &RunKey,
    ids: &[String],
) -> anyhow::Result<Vec<f64>> {
    let mut bounds = Vec::with_capacity(ids.len());
    for id in ids {
        let key = TaskInstanceKey::new(&run.dag_id, &run.run_id, id, -1);
        let attempt = store
            .attempts(&key)
            .await?
            .pop()
            .with_context(|| format!("no attempt of {id}"))?;
        bounds.push((
            attempt.started_at,
            attempt.ended_at.unwrap_or(attempt.started_at),
        ));
    }
    Ok(bounds
        .windows(2)
        .map(|pair| (pair[1].0 - pair[0].1).num_microseconds().unwrap_or(0) as f64 / 1_000.0)
        .collect())
}

/// chain100 for one kind of task: sequential runs, end to end and task-to-task latency.
async fn chain_result(
    name: &str,
    description: &str,
    engine: &Engine,
    spec: DagSpec,
    runs: usize,
    usage: Usage,
) -> anyhow::Result<WorkloadResult> {
    let dag_id = spec.dag_id.clone();
    let ids: Vec<String> = spec.tasks.iter().map(|task| task.task_id.clone()).collect();
    engine.upsert_dag(spec).await?;
    let measured = sequential_runs(engine, &dag_id, runs).await?;
    let mut gaps = Vec::new();
    for (run, _) in &measured {
        gaps.extend(chain_gaps_ms(engine.store(), run, &ids).await?);
    }
    let seconds: Vec<f64> = measured.iter().map(|(_, seconds)| *seconds).collect();
    let end_to_end = Summary::of(&seconds);
    Ok(WorkloadResult::new(name, description, end_to_end, usage)
        .with_task_to_task(Summary::of(&gaps))
        .with_throughput(Throughput::new(
            ids.len() as f64 / end_to_end.p50,
            "tasks/s",
        )))
}

/// How shell tasks are isolated in a chain workload (see `sandbox.isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    None,
    /// A user of the task's own (needs root).
    User,
    /// The full sandbox: also bubblewrap namespaces and a cgroup.
    Full,
}

pub async fn chain_shell(
    workspace: &Workspace,
    sizes: &Sizes,
    isolation: Isolation,
) -> anyhow::Result<WorkloadResult> {
    let (name, what) = match isolation {
        Isolation::None => ("chain100_shell", ""),
        Isolation::User => ("chain100_shell_user", ", each as a user of its own"),
        Isolation::Full => ("chain100_shell_full", ", each in the full sandbox"),
    };
    let dir = workspace.fresh_dir(name)?;
    let identity = TaskIdentity {
        uid: 61_000,
        gid: 61_000,
    };
    // Outside the data directory, which may sit under a folder only root can enter (a
    // `mktemp -d`): the task user must reach its working directory.
    let task_root = std::env::temp_dir().join(format!("weft-bench-tasks-{}", std::process::id()));
    let task_dirs = Some(task_root.clone());
    let sandbox = match isolation {
        Isolation::None => None,
        Isolation::User => Some(SandboxSpec {
            run_as: Some(identity),
            task_dirs,
            ..SandboxSpec::default()
        }),
        Isolation::Full => Some(SandboxSpec {
            namespaces: true,
            run_as: Some(identity),
            hidden_paths: vec![dir.clone()],
            task_dirs,
            ..SandboxSpec::default()
        }),
    };
    let usage = Usage::start();
    let engine = durable_engine_and_store(&dir, None, sandbox).await?.0;
    let spec = shell_chain("bench_chain_shell", sizes.chain_length);
    let description = format!("{} sequential shell `true` tasks{what}", sizes.chain_length);
    let result = chain_result(name, &description, &engine, spec, sizes.runs, usage).await;
    engine.shutdown().await;
    // Each attempt removed its own directory.
    let _ = std::fs::remove_dir(&task_root);
    result
}

pub async fn chain_inproc(workspace: &Workspace, sizes: &Sizes) -> anyhow::Result<WorkloadResult> {
    let dir = workspace.fresh_dir("chain_inproc")?;
    let usage = Usage::start();
    let engine = durable_engine(&dir, None).await?;
    let ids = chain_ids(sizes.chain_length);
    let mut dag = RustDag::new("bench_chain_inproc");
    for (index, id) in ids.iter().enumerate() {
        let upstream: Vec<&str> = if index == 0 {
            Vec::new()
        } else {
            vec![ids[index - 1].as_str()]
        };
        dag = dag.task(id, &upstream, |_| async { Ok(None) });
    }
    let dag = dag.settings(|spec| spec.max_active_runs = 1_000);
    let spec = dag.spec().clone();
    engine.register(dag).await?;
    let description = format!(
        "{} sequential in-process no-op tasks (embedding API)",
        sizes.chain_length
    );
    let result = chain_result(
        "chain100_inproc",
        &description,
        &engine,
        spec,
        sizes.runs,
        usage,
    )
    .await;
    engine.shutdown().await;
    result
}

pub async fn chain_python(workspace: &Workspace, sizes: &Sizes) -> anyhow::Result<WorkloadResult> {
    let dir = workspace.fresh_dir("chain_python")?;
    let source = python_chain_source("bench_chain_python", sizes.chain_length, "return None");
    let spec = python_dag(workspace, &dir, "bench_chain_python.py", &source).await?;
    let usage = Usage::start();
    let engine = durable_engine(&dir, None).await?;
    let description = format!(
        "{} sequential Python no-op @task tasks (warm runner)",
        sizes.chain_length
    );
    let result = chain_result(
        "chain100_python",
        &description,
        &engine,
        spec,
        sizes.runs,
        usage,
    )
    .await;
    engine.shutdown().await;
    result
}

pub async fn light(workspace: &Workspace, sizes: &Sizes) -> anyhow::Result<WorkloadResult> {
    let dir = workspace.fresh_dir("light40")?;
    let source = python_chain_source("bench_light40", sizes.light_length, "return fib(10)");
    let spec = python_dag(workspace, &dir, "bench_light40.py", &source).await?;
    let usage = Usage::start();
    let engine = durable_engine(&dir, None).await?;
    let description = format!(
        "{} sequential Python tasks computing fib(10)",
        sizes.light_length
    );
    let result = chain_result("light40", &description, &engine, spec, sizes.runs, usage).await;
    engine.shutdown().await;
    result
}

fn python_chain_source(dag_id: &str, length: usize, body: &str) -> String {
    format!(
        r#"# Generated by weft-bench: a chain of Python tasks.
from datetime import datetime
from weft import DAG, task


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


with DAG(dag_id="{dag_id}", schedule=None, start_date=datetime(2024, 1, 1), max_active_runs=1000) as dag:

    @task
    def step():
        {body}

    previous = None
    for index in range({length}):
        current = step.override(task_id=f"t{{index:04}}")()
        if previous is not None:
            previous >> current
        previous = current
"#
    )
}

pub async fn fanout(
    workspace: &Workspace,
    sizes: &Sizes,
    fork_exec_per_s: f64,
) -> anyhow::Result<WorkloadResult> {
    let dir = workspace.fresh_dir("fanout")?;
    let mut usage = Usage::start();
    let (engine, sqlite) = durable_engine_and_store(&dir, None, None).await?;
    let width = sizes.fanout_width;
    let description = format!("1 -> {width} parallel shell `true` -> 1");
    let result = fanout_runs(
        "fanout1000",
        &description,
        &engine,
        &sqlite,
        sizes,
        fork_exec_per_s,
        &mut usage,
        None,
    )
    .await;
    engine.shutdown().await;
    result
}

/// The fan-out's measured runs on `engine` (whose CPU `usage` counts from before its start),
/// with the floor measured around each; `workers_cpu_s`, for remote workers, reads the CPU
/// their processes (and their tasks) have used so far.
#[allow(clippy::too_many_arguments)]
async fn fanout_runs(
    name: &str,
    description: &str,
    engine: &Engine,
    sqlite: &SqliteStore,
    sizes: &Sizes,
    fork_exec_per_s: f64,
    usage: &mut Usage,
    workers_cpu_s: Option<&dyn Fn() -> f64>,
) -> anyhow::Result<WorkloadResult> {
    let width = sizes.fanout_width;
    let middle: Vec<String> = (0..width).map(|index| format!("t{index:05}")).collect();
    let mut tasks = vec![shell_task("start", &[])];
    tasks.extend(
        middle
            .iter()
            .map(|id| shell_task(id, &["start".to_string()])),
    );
    tasks.push(shell_task("end", &middle));
    let mut spec = DagSpec::new("bench_fanout", tasks);
    spec.max_active_tasks = width as u32 + 2;
    spec.max_active_runs = 1_000;
    engine.upsert_dag(spec).await?;
    let before = sqlite.counts();
    // The floor again, right before each run and after the last, at the size of one run (its
    // CPU not counted as the workload's): the host's speed drifts within minutes, and the
    // floor measured at the start of the suite can be minutes away from this workload.
    let tasks = width + 2;
    let warm_up = engine.trigger("bench_fanout", json!({})).await?;
    expect_success(
        wait_for_run_within(engine, &warm_up, RUN_WAIT).await?,
        "bench_fanout",
    )?;
    // CPU of the measured runs and of the floors, the engine's own apart from its children's.
    let (mut runs_cpu, mut floors_cpu) = (CpuSplit::default(), CpuSplit::default());
    let mut floor = |usage: &mut Usage| {
        usage.excluding(|| {
            let started = CpuSplit::now();
            let rate = measure::fork_exec_parallel_per_s(tasks);
            floors_cpu.add_since(started);
            rate
        })
    };
    let mut floors = vec![floor(usage)];
    let mut measured = Vec::new();
    let mut workers_cpu = 0.0;
    let read_workers_cpu = || workers_cpu_s.map_or(0.0, |read| read());
    for _ in 0..sizes.runs.min(3) {
        let (started, cpu, workers) = (Instant::now(), CpuSplit::now(), read_workers_cpu());
        let run = engine.trigger("bench_fanout", json!({})).await?;
        expect_success(
            wait_for_run_within(engine, &run, RUN_WAIT).await?,
            "bench_fanout",
        )?;
        measured.push((run, started.elapsed().as_secs_f64()));
        runs_cpu.add_since(cpu);
        workers_cpu += read_workers_cpu() - workers;
        floors.push(floor(usage));
    }
    let after = sqlite.counts();
    // Each run's rate against the mean of the floors just before and just after it.
    let adjacent_shares: Vec<f64> = measured
        .iter()
        .zip(floors.windows(2))
        .map(|((_, seconds), pair)| (tasks as f64 / seconds) / ((pair[0] + pair[1]) / 2.0))
        .collect();
    let seconds: Vec<f64> = measured.iter().map(|(_, seconds)| *seconds).collect();
    let end_to_end = Summary::of(&seconds);
    let rate = tasks as f64 / end_to_end.p50;
    let per_task_us = |seconds: f64, count: usize| seconds * 1e6 / count.max(1) as f64;
    let mut cpu_us = json!({
        "engine_per_task": per_task_us(runs_cpu.own, measured.len() * tasks),
        "store_writer_per_task": per_task_us(runs_cpu.store_writer, measured.len() * tasks),
        "task_process_per_task": per_task_us(runs_cpu.children, measured.len() * tasks),
        "floor_loop_per_process": per_task_us(floors_cpu.own, floors.len() * tasks),
        "floor_process_per_process": per_task_us(floors_cpu.children, floors.len() * tasks),
    });
    if workers_cpu_s.is_some() {
        // The tasks run under the workers: their processes are not this one's children.
        cpu_us["task_process_per_task"] = json!(null);
        cpu_us["workers_and_task_processes_per_task"] =
            json!(per_task_us(workers_cpu, measured.len() * tasks));
    }
    let result = WorkloadResult::new(name, description, end_to_end, *usage)
        .with_throughput(Throughput::new(rate, "tasks/s"))
        .with_note(
            "share_of_parallel_fork_exec_floor",
            json!(rate / fork_exec_per_s),
        )
        .with_note(
            "share_of_adjacent_fork_exec_floor",
            json!({
                "p50": Summary::of(&adjacent_shares).p50,
                "runs": adjacent_shares,
                "floors_per_s": floors,
            }),
        )
        // What a task costs the engine (of which the store's writer thread) and its process,
        // against what a process costs the floor's loop and the process itself.
        .with_note("cpu_us", cpu_us)
        .with_note(
            "store_commits_per_task",
            // The warm-up run is counted too.
            json!(
                (after.transactions_committed - before.transactions_committed) as f64
                    / ((seconds.len() + 1) * tasks) as f64
            ),
        );
    // Read after the workload's CPU is taken: these reads are not the workload's.
    let phases = match measured.last() {
        Some((run, _)) => fanout_phases(engine.store(), run, &middle).await?,
        None => json!(null),
    };
    Ok(result.with_note("phases_of_the_last_run_ms", phases))
}

/// Where a fan-out run's time goes, from its run row and attempt rows: from the run's creation
/// to the start and to the end of `start`, from there to the first and to the last middle attempt's start, the
/// middle attempts' span, and from the last middle attempt's end to the run's end.
async fn fanout_phases(
    store: &Arc<dyn Store>,
    run: &RunKey,
    middle: &[String],
) -> anyhow::Result<serde_json::Value> {
    let attempt = |task_id: String| async move {
        let key = TaskInstanceKey::new(&run.dag_id, &run.run_id, &task_id, -1);
        store
            .attempts(&key)
            .await?
            .pop()
            .with_context(|| format!("no attempt of {task_id}"))
    };
    let row = store.run(run).await?.context("the run is stored")?;
    let start = attempt("start".to_string()).await?;
    let start_end = start.ended_at.unwrap_or(start.started_at);
    let (mut first_start, mut last_start, mut last_end) = (None, None, None);
    for task_id in middle {
        let middle = attempt(task_id.clone()).await?;
        let end = middle.ended_at.unwrap_or(middle.started_at);
        first_start = first_start
            .min(Some(middle.started_at))
            .or(Some(middle.started_at));
        last_start = last_start.max(Some(middle.started_at));
        last_end = last_end.max(Some(end));
    }
    let (Some(first_start), Some(last_start), Some(last_end)) = (first_start, last_start, last_end)
    else {
        return Ok(json!(null));
    };
    let ms = |from: weft_core::Timestamp, to: weft_core::Timestamp| {
        (to - from).num_microseconds().unwrap_or(0) as f64 / 1_000.0
    };
    Ok(json!({
        "created_to_start_started": ms(row.created_at, start.started_at),
        "created_to_start_ended": ms(row.created_at, start_end),
        "start_ended_to_first_middle_started": ms(start_end, first_start),
        "start_ended_to_last_middle_started": ms(start_end, last_start),
        "middle_span": ms(first_start, last_end),
        "last_middle_ended_to_run_ended": row.ended_at.map(|end| ms(last_end, end)),
    }))
}

pub async fn many_dags(workspace: &Workspace, sizes: &Sizes) -> anyhow::Result<WorkloadResult> {
    let dir = workspace.fresh_dir("many_dags")?;
    let usage = Usage::start();
    let engine = durable_engine(&dir, None).await?;
    let dag_ids: Vec<String> = (0..sizes.many_dags)
        .map(|index| format!("bench_many_{index:04}"))
        .collect();
    for dag_id in &dag_ids {
        engine
            .upsert_dag(shell_chain(dag_id, sizes.many_dags_tasks))
            .await?;
    }
    let mut makespans = Vec::new();
    for _ in 0..sizes.runs.min(3) {
        let started = Instant::now();
        let triggers = dag_ids
            .iter()
            .map(|dag_id| engine.trigger(dag_id, json!({})));
        let runs = futures::future::try_join_all(triggers).await?;
        let waits = runs.iter().map(|run| engine.wait_for_run(run));
        for (state, dag_id) in futures::future::try_join_all(waits)
            .await?
            .into_iter()
            .zip(&dag_ids)
        {
            expect_success(state, dag_id)?;
        }
        makespans.push(started.elapsed().as_secs_f64());
    }
    engine.shutdown().await;
    let end_to_end = Summary::of(&makespans);
    let tasks = (sizes.many_dags * sizes.many_dags_tasks) as f64;
    let description = format!(
        "{} DAGs of {} chained shell `true` tasks triggered at once (makespan)",
        sizes.many_dags, sizes.many_dags_tasks
    );
    Ok(
        WorkloadResult::new("many_dags", &description, end_to_end, usage)
            .with_throughput(Throughput::new(tasks / end_to_end.p50, "tasks/s")),
    )
}

pub async fn inproc(workspace: &Workspace, sizes: &Sizes) -> anyhow::Result<WorkloadResult> {
    let dir = workspace.fresh_dir("inproc")?;
    let usage = Usage::start();
    let engine = durable_engine(&dir, Some(INPROC_WORKER_SLOTS)).await?;
    let width = sizes.inproc_width;
    let mut dag = RustDag::new("bench_inproc");
    for index in 0..width {
        dag = dag.task(&format!("t{index:05}"), &[], |_| async { Ok(None) });
    }
    let dag = dag.settings(|spec| {
        spec.max_active_tasks = width as u32;
        spec.max_active_runs = 10_000;
    });
    engine.register(dag).await?;
    // One run first, so that the measured runs find everything warm.
    let warm_up = engine.trigger("bench_inproc", json!({})).await?;
    expect_success(engine.wait_for_run(&warm_up).await?, "bench_inproc")?;
    let mut rates = Vec::new();
    let mut seconds = Vec::new();
    for _ in 0..sizes.runs.min(3) {
        let started = Instant::now();
        let triggers = (0..sizes.inproc_runs).map(|_| engine.trigger("bench_inproc", json!({})));
        let runs = futures::future::try_join_all(triggers).await?;
        for run in &runs {
            expect_success(engine.wait_for_run(run).await?, "bench_inproc")?;
        }
        let elapsed = started.elapsed();
        seconds.push(elapsed.as_secs_f64());
        rates.push((sizes.inproc_runs * width) as f64 / elapsed.as_secs_f64());
    }
    engine.shutdown().await;
    let description = format!(
        "{} concurrent runs x {width} in-process no-op tasks, durable SQLite, {INPROC_WORKER_SLOTS} slots",
        sizes.inproc_runs
    );
    let rate = Summary::of(&rates);
    Ok(
        WorkloadResult::new("inproc", &description, Summary::of(&seconds), usage)
            .with_throughput(Throughput::new(rate.p50, "tasks/s"))
            .with_note(
                "tasks_per_s_min",
                json!(rates.iter().copied().fold(f64::INFINITY, f64::min)),
            )
            .with_note(
                "first_trigger_to_last_end_ms",
                json!(millis(std::time::Duration::from_secs_f64(
                    Summary::of(&seconds).max
                ))),
            ),
    )
}

/// Remote workers' goals (the remote workers' issue).
const REMOTE_GAP_P50_MS_MAX: f64 = 1.5;
const REMOTE_GAP_P99_MS_MAX: f64 = 5.0;
const REMOTE_FANOUT_SHARE_MIN: f64 = 0.70;
const KILL_TO_RETRY_S_MAX: f64 = 5.0;
/// The longest wait for a killed attempt's retry to start.
const RETRY_WAIT: Duration = Duration::from_secs(60);

/// Stops `cluster`'s workers and adds their CPU (and their tasks', reaped with them) to the
/// result's.
async fn stop_cluster(
    cluster: Cluster,
    measured: anyhow::Result<WorkloadResult>,
) -> anyhow::Result<WorkloadResult> {
    let before = measure::cpu_seconds();
    let stopped = cluster.stop().await;
    let mut result = measured?;
    stopped?;
    result.cpu_s += measure::cpu_seconds() - before;
    Ok(result)
}

/// The chain of shell tasks (no isolation) with every attempt on one remote worker.
pub async fn chain_shell_remote(
    workspace: &Workspace,
    sizes: &Sizes,
) -> anyhow::Result<WorkloadResult> {
    let name = "chain100_shell_remote";
    let dir = workspace.fresh_dir(name)?;
    let usage = Usage::start();
    let (engine, _) = remote_engine_and_store(&dir).await?;
    let result = async {
        let mut cluster = Cluster::start(&dir, &engine).await?;
        let measured = async {
            let cores = std::thread::available_parallelism().map_or(1, |count| count.get());
            cluster.spawn_worker("w1", cores as u32)?;
            cluster.wait_joined(&engine, &["w1"], &[]).await?;
            let spec = shell_chain("bench_chain_shell_remote", sizes.remote_chain_length);
            let description = format!(
                "{} sequential shell `true` tasks on one remote worker (QUIC, mutual TLS, 127.0.0.1)",
                sizes.remote_chain_length
            );
            chain_result(name, &description, &engine, spec, sizes.runs, usage).await
        }
        .await;
        stop_cluster(cluster, measured).await
    }
    .await;
    engine.shutdown().await;
    let result = result?;
    let gaps = result.task_to_task_ms.unwrap_or_default();
    Ok(result.with_note(
        "goals",
        json!({
            "task_to_task_p50_ms_max": REMOTE_GAP_P50_MS_MAX,
            "p50_met": gaps.p50 <= REMOTE_GAP_P50_MS_MAX,
            "task_to_task_p99_ms_max": REMOTE_GAP_P99_MS_MAX,
            "p99_met": gaps.p99 <= REMOTE_GAP_P99_MS_MAX,
        }),
    ))
}

/// The fan-out over three remote workers, each with the slots a `weft worker` has by default
/// (the local fan-out's: four per core), against the fork+exec floor measured around each run.
/// A remote slot is busy for longer per attempt than a local one (the assignment and the
/// report cross the link), so the same throughput needs more of them in flight.
pub async fn fanout_remote(
    workspace: &Workspace,
    sizes: &Sizes,
    fork_exec_per_s: f64,
) -> anyhow::Result<WorkloadResult> {
    let name = "fanout1000_remote3";
    let dir = workspace.fresh_dir(name)?;
    let mut usage = Usage::start();
    let (engine, sqlite) = remote_engine_and_store(&dir).await?;
    let local_slots = EngineConfig::new(&dir).worker_slots;
    let slots = local_slots.max(1);
    let names = ["w1", "w2", "w3"];
    let width = sizes.remote_fanout_width;
    let result = async {
        let mut cluster = Cluster::start(&dir, &engine).await?;
        let measured = async {
            for name in names {
                cluster.spawn_worker(name, slots as u32)?;
            }
            cluster.wait_joined(&engine, &names, &[]).await?;
            let description = format!(
                "1 -> {width} parallel shell `true` -> 1 on 3 remote workers of {slots} slots"
            );
            let sized = Sizes {
                fanout_width: width,
                ..sizes.clone()
            };
            let workers_cpu = || cluster.workers_cpu_s();
            fanout_runs(
                name,
                &description,
                &engine,
                &sqlite,
                &sized,
                fork_exec_per_s,
                &mut usage,
                Some(&workers_cpu),
            )
            .await
        }
        .await;
        stop_cluster(cluster, measured).await
    }
    .await;
    engine.shutdown().await;
    let result = result?;
    let share = result.notes["share_of_adjacent_fork_exec_floor"]["p50"]
        .as_f64()
        .unwrap_or(0.0);
    Ok(result
        .with_note(
            "workers",
            json!({
                "count": names.len(),
                "slots_each": slots,
                "local_fanout_slots": local_slots,
            }),
        )
        .with_note(
            "goals",
            json!({
                "share_of_adjacent_fork_exec_floor_min": REMOTE_FANOUT_SHARE_MIN,
                "met": share >= REMOTE_FANOUT_SHARE_MIN,
            }),
        ))
}

/// A worker killed with SIGKILL while its attempt runs, another worker up: the time from the
/// kill to the start of the retry (try 2) on the other worker, over `kill_trials` trials.
pub async fn kill9_retry_remote(
    workspace: &Workspace,
    sizes: &Sizes,
) -> anyhow::Result<WorkloadResult> {
    let name = "kill9_retry_remote";
    let dir = workspace.fresh_dir(name)?;
    let usage = Usage::start();
    let (engine, _) = remote_engine_and_store(&dir).await?;
    let result = async {
        let mut cluster = Cluster::start(&dir, &engine).await?;
        let measured = kill9_trials(name, &dir, &engine, &mut cluster, sizes, usage).await;
        stop_cluster(cluster, measured).await
    }
    .await;
    engine.shutdown().await;
    result
}

async fn kill9_trials(
    name: &str,
    dir: &Path,
    engine: &Engine,
    cluster: &mut Cluster,
    sizes: &Sizes,
    usage: Usage,
) -> anyhow::Result<WorkloadResult> {
    let names = ["w1", "w2"];
    for worker in names {
        cluster.spawn_worker(worker, 1)?;
    }
    cluster.wait_joined(engine, &names, &[]).await?;
    // The first try marks that it started and sleeps until it is killed with its worker; the
    // retry finds the mark and succeeds at once.
    let mark = dir.join("first-try-started");
    let command = format!(
        "if [ -e '{mark}' ]; then echo retried; exit 0; fi; touch '{mark}'; exec sleep 120",
        mark = mark.display()
    );
    let mut task = shell_task_running("victim", &[], &command);
    task.retries = 1;
    task.retry_delay_ms = 0;
    let dag_id = "bench_kill9";
    let mut spec = DagSpec::new(dag_id, vec![task]);
    spec.max_active_runs = 1_000;
    engine.upsert_dag(spec).await?;
    let mut stale = Vec::new();
    let (mut to_retry, mut to_lost, mut trials) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..sizes.kill_trials.max(1) {
        let _ = std::fs::remove_file(&mark);
        let run = engine.trigger(dag_id, json!({})).await?;
        let key = TaskInstanceKey::new(&run.dag_id, &run.run_id, "victim", -1);
        // Which worker runs the first try, once its process has started.
        let deadline = Instant::now() + RETRY_WAIT;
        let victim = loop {
            let remote = engine.workers().await?.remote;
            let running = remote
                .into_iter()
                .find(|worker| worker.running.iter().any(|attempt| attempt.key == key));
            if let (Some(worker), true) = (running, mark.exists()) {
                break worker;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the first try of {run} did not start on a remote worker within {RETRY_WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let killed_at = chrono::Utc::now();
        cluster.kill(&victim.name).await?;
        let deadline = Instant::now() + RETRY_WAIT;
        let (lost, retry) = loop {
            let attempts = engine.store().attempts(&key).await?;
            let first = attempts.iter().find(|row| row.attempt.try_number == 1);
            let second = attempts.iter().find(|row| row.attempt.try_number == 2);
            if let (Some(first), Some(second)) = (first, second) {
                break (first.ended_at, second.clone());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the retry of {run} did not start within {RETRY_WAIT:?} of killing worker {}",
                victim.name
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        expect_success(wait_for_run_within(engine, &run, RUN_WAIT).await?, dag_id)?;
        let seconds = |at: weft_core::Timestamp| {
            (at - killed_at).num_microseconds().unwrap_or(0) as f64 / 1e6
        };
        to_retry.push(seconds(retry.started_at));
        let lost = lost.map(seconds);
        if let Some(lost) = lost {
            to_lost.push(lost);
        }
        // Where the retry ran: the worker whose directory holds its log.
        let retried_on = names.iter().find(|worker| {
            cluster
                .home(worker)
                .join(weft_actors::log_relative_path(&key, 2))
                .exists()
        });
        trials.push(json!({
            "killed": victim.name,
            "kill_to_try1_lost_s": lost,
            "kill_to_try2_started_s": seconds(retry.started_at),
            "try2_ran_on": retried_on,
        }));
        // The killed worker comes back for the next trial, in a session of its own.
        stale.push(victim.session);
        cluster.spawn_worker(&victim.name, 1)?;
        cluster.wait_joined(engine, &names, &stale).await?;
    }
    let kill_to_retry = Summary::of(&to_retry);
    let description = format!(
        "{} trials: a worker killed (SIGKILL) mid-attempt, the retry on another; seconds from the kill to the retry's start",
        to_retry.len()
    );
    Ok(
        WorkloadResult::new(name, &description, kill_to_retry, usage)
            .with_note("kill_to_try1_lost_s", json!(Summary::of(&to_lost)))
            .with_note("trials", json!(trials))
            .with_note(
                "settings_ms",
                json!({
                    "link_idle_timeout": crate::remote::IDLE_TIMEOUT.as_millis() as u64,
                    "link_keep_alive": crate::remote::KEEP_ALIVE.as_millis() as u64,
                    "worker_lease": crate::remote::LEASE.as_millis() as u64,
                    "worker_heartbeat": crate::remote::HEARTBEAT.as_millis() as u64,
                }),
            )
            .with_note(
                "goals",
                json!({
                    "kill_to_retry_s_max": KILL_TO_RETRY_S_MAX,
                    "met_by_max": kill_to_retry.max <= KILL_TO_RETRY_S_MAX,
                }),
            ),
    )
}

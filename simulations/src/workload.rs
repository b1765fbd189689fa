//! The workload generator: random DAGs (shapes, trigger rules, branching, mapping, retries,
//! timeouts, pools, priorities, schedules in random time zones with catchup) built as
//! `weft_core::spec::DagSpec` and validated with `Dag::from_spec`, plus the operator actions
//! (manual triggers, backfills) a seed performs.

use crate::rng::SimRng;
use chrono::TimeZone;
use weft_core::dag::Dag;
use weft_core::spec::{DagSpec, FlowControl, MappingSpec, ScheduleSpec, TaskKind, TaskSpec};
use weft_core::state::{TriggerRule, WeightRule};
use weft_core::timetable::Timetable;
use weft_core::Timestamp;

/// DAGs per seed.
pub const DAGS_MAX: u64 = 4;
/// Tasks per DAG: small DAGs keep a seed fast; shapes matter more than size.
pub const TASKS_MAX: u64 = 7;
/// The width of a wide literal mapping: from as many instances as hold back a run's commits
/// (`weft_actors::run_pipeline::COMMIT_SIBLINGS_MIN`) to more than open in one chunk
/// (`DISPATCH_SPLIT_MIN`).
pub const WIDE_MAP_MIN: u64 = weft_actors::run_pipeline::COMMIT_SIBLINGS_MIN as u64;
pub const WIDE_MAP_MAX: u64 = 2 * weft_actors::run_pipeline::DISPATCH_SPLIT_MIN as u64;
/// Scheduled runs a DAG may be due for over a seed (catch-up included), to bound a seed's work.
pub const TICKS_PER_DAG_MAX: u64 = 30;
/// The handler name every in-process task uses; the simulated workers decide outcomes.
pub const SIMULATED_HANDLER: &str = "simulated";

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;

/// Time zones with DST gaps and overlaps, half-hour and 45-minute offsets.
const TIME_ZONES: &[&str] = &[
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "America/Sao_Paulo",
    "Pacific/Chatham",
    "Asia/Kathmandu",
];

/// Schedules and their nominal period (to bound the number of ticks).
fn schedules() -> Vec<(ScheduleSpec, u64)> {
    let cron = |expression: &str, data_intervals: bool| ScheduleSpec::Cron {
        expression: expression.to_string(),
        data_intervals,
    };
    vec![
        (cron("*/15 * * * *", true), 15 * MINUTE_MS),
        (cron("0 * * * *", false), HOUR_MS),
        (cron("30 2 * * *", true), DAY_MS),
        (cron("0 0 * * *", true), DAY_MS),
        (cron("0 */6 * * *", false), 6 * HOUR_MS),
        (cron("0 9 * * 1-5", true), DAY_MS),
        (cron("0 0 1 * *", true), 31 * DAY_MS),
        (cron("@daily", false), DAY_MS),
        (
            ScheduleSpec::Interval {
                every_ms: 20 * MINUTE_MS,
                data_intervals: true,
            },
            20 * MINUTE_MS,
        ),
        (
            ScheduleSpec::Interval {
                every_ms: 90 * MINUTE_MS,
                data_intervals: false,
            },
            90 * MINUTE_MS,
        ),
    ]
}

/// Instants just before DST changes, where cron schedules in local time are most fragile.
const DST_STARTS: &[&str] = &[
    "2024-03-10T05:00:00Z",
    "2024-03-31T00:00:00Z",
    "2024-11-03T04:00:00Z",
    "2024-10-27T00:00:00Z",
    "2024-04-07T00:00:00Z",
];

#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    Trigger {
        dag_id: String,
    },
    Backfill {
        dag_id: String,
        from: Timestamp,
        to: Timestamp,
    },
}

#[derive(Debug, Clone)]
pub struct Workload {
    /// Simulated time at which the node first starts.
    pub start: Timestamp,
    /// How long faults are injected, from `start`.
    pub fault_window_ms: u64,
    pub dags: Vec<DagSpec>,
    /// Pools besides the default one: (name, slots).
    pub pools: Vec<(String, u32)>,
    pub worker_slots: u32,
    pub operations: Vec<(Timestamp, Operation)>,
}

pub fn after_ms(at: Timestamp, ms: u64) -> Timestamp {
    at + chrono::TimeDelta::milliseconds(ms as i64)
}

fn before_ms(at: Timestamp, ms: u64) -> Timestamp {
    at - chrono::TimeDelta::milliseconds(ms as i64)
}

pub fn generate(rng: &mut SimRng) -> Workload {
    let start = if rng.chance(300) {
        rng.pick(DST_STARTS)
            .parse()
            .expect("a valid literal instant")
    } else {
        let base = chrono::Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        after_ms(
            base,
            rng.below(365) * DAY_MS + rng.below(DAY_MS / 1000) * 1000,
        )
    };
    let fault_window_ms = rng.between(6, 48) * HOUR_MS;
    let pools: Vec<(String, u32)> = (0..rng.below(3))
        .map(|index| (format!("pool_{index}"), rng.between(1, 4) as u32))
        .collect();
    let mut dags = Vec::new();
    let mut operations = Vec::new();
    for index in 0..rng.between(1, DAGS_MAX) {
        let dag = generate_dag(rng, &format!("dag_{index}"), start, fault_window_ms, &pools);
        operations.extend(generate_operations(rng, &dag, start, fault_window_ms));
        dags.push(dag);
    }
    operations.sort_by_key(|(at, _)| *at);
    Workload {
        start,
        fault_window_ms,
        dags,
        pools,
        worker_slots: rng.between(2, 8) as u32,
        operations,
    }
}

fn generate_dag(
    rng: &mut SimRng,
    dag_id: &str,
    start: Timestamp,
    fault_window_ms: u64,
    pools: &[(String, u32)],
) -> DagSpec {
    let tasks = generate_tasks(rng, pools);
    let mut spec = DagSpec::new(dag_id, tasks);
    spec.timezone = rng.pick(TIME_ZONES).to_string();
    spec.max_active_runs = rng.between(1, 4) as u32;
    spec.max_active_tasks = rng.between(1, 8) as u32;
    spec.catchup = rng.chance(500);
    if rng.chance(100) {
        spec.dagrun_timeout_ms = Some(rng.between(1, 6) * HOUR_MS);
    }
    if !rng.chance(150) {
        let all = schedules();
        let (schedule, period_ms) = rng.pick(&all).clone();
        spec.schedule = schedule;
        // Catch-up from a few periods back; ticks stop at `end_date` so a seed's work is bounded.
        let back = rng.below(TICKS_PER_DAG_MAX / 2) * period_ms;
        spec.start_date = Some(before_ms(start, back));
        let ahead = fault_window_ms.min(period_ms * (TICKS_PER_DAG_MAX / 2));
        spec.end_date = Some(after_ms(start, ahead));
    }
    if Dag::from_spec(spec.clone()).is_err() {
        // Flow control and mapping are where random shapes can break validation: drop them.
        for task in &mut spec.tasks {
            task.flow = FlowControl::Normal;
            task.mapping = None;
        }
    }
    if let Err(error) = Dag::from_spec(spec.clone()) {
        panic!("the workload generator built an invalid dag: {error}");
    }
    spec
}

fn generate_tasks(rng: &mut SimRng, pools: &[(String, u32)]) -> Vec<TaskSpec> {
    let count = rng.between(1, TASKS_MAX) as usize;
    let rules: Vec<TriggerRule> = TriggerRule::ALL
        .iter()
        .copied()
        .filter(|rule| *rule != TriggerRule::AllDoneSetupSuccess)
        .collect();
    let mut tasks: Vec<TaskSpec> = Vec::with_capacity(count);
    for index in 0..count {
        let kind = if rng.chance(150) {
            TaskKind::Empty
        } else {
            TaskKind::InProcess {
                handler: SIMULATED_HANDLER.to_string(),
            }
        };
        let mut task = TaskSpec::new(&format!("t{index}"), kind);
        if index > 0 {
            if rng.chance(400) {
                task.upstream.push(format!("t{}", index - 1));
            } else {
                for _ in 0..rng.between(1, 3.min(index as u64)) {
                    let up = format!("t{}", rng.below(index as u64));
                    if !task.upstream.contains(&up) {
                        task.upstream.push(up);
                    }
                }
            }
        }
        task.trigger_rule = if rng.chance(550) {
            TriggerRule::AllSuccess
        } else {
            *rng.pick(&rules)
        };
        if rng.chance(500) {
            task.retries = rng.between(1, 3) as u32;
            task.retry_delay_ms = rng.between(1, 600) * 1000;
            task.retry_exponential_backoff = rng.chance(300);
            if rng.chance(300) {
                task.max_retry_delay_ms = Some(rng.between(1, 30) * MINUTE_MS);
            }
        }
        if rng.chance(400) {
            task.execution_timeout_ms = Some(rng.between(1, 20) * MINUTE_MS);
        }
        if !pools.is_empty() && rng.chance(300) {
            let (name, slots) = rng.pick(pools);
            task.pool = name.clone();
            task.pool_slots = rng.between(1, u64::from(*slots)) as u32;
        }
        task.priority_weight = rng.between(1, 10) as i64;
        task.weight_rule = *rng.pick(WeightRule::ALL);
        let single_upstream = (task.upstream.len() == 1).then(|| task.upstream[0].clone());
        if rng.chance(60) {
            // Now and then a wide one: its instances open together (a dispatch the run
            // commits in chunks) and their ends share commits (the run's group commit).
            let length = if rng.chance(250) {
                rng.between(WIDE_MAP_MIN, WIDE_MAP_MAX)
            } else {
                rng.below(4)
            };
            task.mapping = Some(MappingSpec::Literal {
                length: length as usize,
            });
        } else if let Some(up) = single_upstream.filter(|_| rng.chance(80)) {
            task.mapping = Some(MappingSpec::Upstream { task_id: up });
        }
        tasks.push(task);
    }
    // Flow control only makes sense for tasks with downstream tasks that a worker runs.
    for index in 0..count {
        let id = tasks[index].task_id.clone();
        let has_downstream = tasks.iter().any(|task| task.upstream.contains(&id));
        let runs_on_worker = matches!(tasks[index].kind, TaskKind::InProcess { .. });
        if has_downstream && runs_on_worker && tasks[index].mapping.is_none() {
            if rng.chance(120) {
                tasks[index].flow = FlowControl::Branch;
            } else if rng.chance(60) {
                tasks[index].flow = FlowControl::ShortCircuit;
            }
        }
    }
    tasks
}

fn generate_operations(
    rng: &mut SimRng,
    dag: &DagSpec,
    start: Timestamp,
    fault_window_ms: u64,
) -> Vec<(Timestamp, Operation)> {
    let dag_id = dag.dag_id.clone();
    let mut operations = Vec::new();
    for _ in 0..rng.below(4) {
        let at = after_ms(start, rng.below(fault_window_ms));
        operations.push((
            at,
            Operation::Trigger {
                dag_id: dag_id.clone(),
            },
        ));
    }
    let Some(start_date) = dag.start_date.filter(|_| rng.chance(300)) else {
        return operations;
    };
    // Backfill a range that starts before the schedule and may overlap its catch-up runs:
    // the store and the scheduler must give every logical date one run between them.
    let timetable =
        Timetable::new(&dag.schedule, &dag.timezone, None, None, true).expect("the dag validated");
    // The smallest window with a few runs in it: `runs_between` keeps the first runs of a
    // window, so a window too wide for the schedule would start the backfill weeks early
    // (thousands of runs, more than the quiet period can finish; seed 671).
    let mut earlier = Vec::new();
    for window_ms in [HOUR_MS, DAY_MS, 40 * DAY_MS] {
        earlier = timetable.runs_between(before_ms(start_date, window_ms), start_date, 400);
        if earlier.len() >= 6 {
            break;
        }
    }
    let from_index = earlier.len().saturating_sub(rng.between(1, 6) as usize);
    if let Some(first) = earlier.get(from_index) {
        let to = after_ms(start_date, rng.below(3) * HOUR_MS);
        let at = after_ms(start, rng.below(fault_window_ms));
        operations.push((
            at,
            Operation::Backfill {
                dag_id,
                from: first.logical_date,
                to,
            },
        ));
    }
    operations
}

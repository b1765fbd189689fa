//! idle_scale: many registered scheduled DAGs. The cost to find the next due DAGs is measured
//! on the core `Scheduler` itself as the count grows; idle CPU and memory on a real engine.

use crate::measure::{cpu_seconds, rss_mib, Summary, Usage};
use crate::report::WorkloadResult;
use chrono::{TimeDelta, TimeZone, Utc};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_actors::{Engine, EngineConfig};
use weft_core::dag::Dag;
use weft_core::scheduler::{Scheduler, SchedulerEffect, SchedulerInput};
use weft_core::spec::{DagSpec, ScheduleSpec, TaskKind, TaskSpec};
use weft_core::Timestamp;
use weft_storage::memory::MemoryStore;

/// DAGs made due by each measured tick.
const DUE_PER_TICK: usize = 100;
/// Ticks measured per DAG count.
const TICKS_MEASURED: usize = 20;
/// Spacing of the DAGs' first due times.
const DUE_SPACING_MS: i64 = 100;
const DAY_MS: u64 = 86_400_000;

fn scheduled_dag(dag_id: &str, start: Timestamp) -> Arc<Dag> {
    let mut spec = DagSpec::new(dag_id, vec![TaskSpec::new("only", TaskKind::Empty)]);
    spec.schedule = ScheduleSpec::Interval {
        every_ms: DAY_MS,
        data_intervals: false,
    };
    spec.start_date = Some(start);
    Arc::new(Dag::from_spec(spec).expect("a one-task interval DAG is valid"))
}

/// Per due DAG, the cost of one `Tick` that finds `DUE_PER_TICK` due DAGs among `count`.
fn core_tick_cost(count: usize) -> (Summary, u64, f64) {
    let registered_at = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let first_due = registered_at + TimeDelta::hours(1);
    let mut scheduler = Scheduler::new();
    for index in 0..count {
        let start = first_due + TimeDelta::milliseconds(index as i64 * DUE_SPACING_MS);
        let dag = scheduled_dag(&format!("dag_{index:06}"), start);
        scheduler.handle(
            registered_at,
            SchedulerInput::DagUpserted {
                dag,
                paused: false,
                last_automated: None,
            },
        );
    }
    let mut per_due_us = Vec::new();
    let examined_before = scheduler.dags_examined();
    let ticks = TICKS_MEASURED.min(count / DUE_PER_TICK).max(1);
    for tick in 0..ticks {
        let now = first_due
            + TimeDelta::milliseconds(((tick + 1) * DUE_PER_TICK) as i64 * DUE_SPACING_MS - 1);
        let started = Instant::now();
        let effects = scheduler.handle(now, SchedulerInput::Tick);
        let elapsed = started.elapsed();
        let created = effects
            .iter()
            .filter(|effect| matches!(effect, SchedulerEffect::CreateRun { .. }))
            .count();
        per_due_us.push(elapsed.as_secs_f64() * 1e6 / created.max(1) as f64);
    }
    let examined = scheduler.dags_examined() - examined_before;
    // A tick with nothing due: the idle case.
    let quiet =
        first_due + TimeDelta::milliseconds((ticks * DUE_PER_TICK) as i64 * DUE_SPACING_MS - 1);
    let started = Instant::now();
    scheduler.handle(quiet, SchedulerInput::Tick);
    (
        Summary::of(&per_due_us),
        examined / ticks as u64,
        started.elapsed().as_secs_f64() * 1e6,
    )
}

pub async fn idle_scale(
    counts: &[usize],
    idle_window: Duration,
    data_dir: &std::path::Path,
) -> anyhow::Result<WorkloadResult> {
    let usage = Usage::start();
    let mut scaling = serde_json::Map::new();
    for &count in counts {
        let (per_due, examined_per_tick, quiet_tick_us) = core_tick_cost(count);
        scaling.insert(
            count.to_string(),
            json!({
                "tick_cost_per_due_dag_us_p50": per_due.p50,
                "tick_cost_per_due_dag_us_p99": per_due.p99,
                "dags_examined_per_tick": examined_per_tick,
                "quiet_tick_us": quiet_tick_us,
            }),
        );
    }

    // A real engine with the largest count registered, nothing due for decades: its CPU while
    // idle. The in-memory store keeps registration quick; the idle loop never touches the store.
    let largest = counts.iter().copied().max().unwrap_or(0);
    let engine = Engine::start(Arc::new(MemoryStore::new()), EngineConfig::new(data_dir)).await?;
    let far = Utc.with_ymd_and_hms(2099, 1, 1, 0, 0, 0).unwrap();
    let registering = Instant::now();
    for index in 0..largest {
        let mut spec = DagSpec::new(
            &format!("idle_{index:06}"),
            vec![TaskSpec::new("only", TaskKind::Empty)],
        );
        spec.schedule = ScheduleSpec::Interval {
            every_ms: DAY_MS,
            data_intervals: false,
        };
        spec.start_date = Some(far + TimeDelta::seconds(index as i64));
        engine.upsert_dag(spec).await?;
    }
    let registration_s = registering.elapsed().as_secs_f64();
    let cpu_before = cpu_seconds();
    let idle_started = Instant::now();
    tokio::time::sleep(idle_window).await;
    let idle_cpu_percent =
        (cpu_seconds() - cpu_before) / idle_started.elapsed().as_secs_f64() * 100.0;
    let rss = rss_mib();
    engine.shutdown().await;

    let description =
        format!("{largest} scheduled DAGs registered; core Tick cost per due DAG at each count");
    let end_to_end = Summary::of(&[registration_s]);
    Ok(
        WorkloadResult::new("idle_scale", &description, end_to_end, usage)
            .with_note("idle_cpu_percent", json!(idle_cpu_percent))
            .with_note("idle_window_s", json!(idle_window.as_secs_f64()))
            .with_note("rss_mib_with_all_dags", json!(rss))
            .with_note("registration_s (in-memory store)", json!(registration_s))
            .with_note("scaling", serde_json::Value::Object(scaling)),
    )
}

//! Scheduler decisions as fixtures: a sequence of inputs in, a readable trace of effects out.

use chrono::{TimeZone, Utc};
use expect_test::{expect, Expect};
use std::sync::Arc;
use weft_core::dag::Dag;
use weft_core::scheduler::{Scheduler, SchedulerEffect, SchedulerInput};
use weft_core::spec::{DagSpec, ScheduleSpec, TaskKind, TaskSpec};
use weft_core::state::{DagRunState, RunType};
use weft_core::timetable::DataInterval;
use weft_core::Timestamp;

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Timestamp {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

struct DagOptions {
    schedule: &'static str,
    data_intervals: bool,
    timezone: &'static str,
    catchup: bool,
    max_active_runs: u32,
}

fn daily() -> DagOptions {
    DagOptions {
        schedule: "@daily",
        data_intervals: true,
        timezone: "UTC",
        catchup: true,
        max_active_runs: 16,
    }
}

fn dag(dag_id: &str, options: DagOptions) -> Arc<Dag> {
    let mut spec = DagSpec::new(dag_id, vec![TaskSpec::new("t", TaskKind::Empty)]);
    spec.schedule = ScheduleSpec::Cron {
        expression: options.schedule.to_string(),
        data_intervals: options.data_intervals,
    };
    spec.timezone = options.timezone.to_string();
    spec.start_date = Some(at(2024, 1, 1, 0, 0));
    spec.catchup = options.catchup;
    spec.max_active_runs = options.max_active_runs;
    Arc::new(Dag::from_spec(spec).unwrap())
}

fn upsert(dag: Arc<Dag>) -> SchedulerInput {
    SchedulerInput::DagUpserted {
        dag,
        paused: false,
        last_automated: None,
    }
}

fn finished(run_id: &str) -> SchedulerInput {
    SchedulerInput::RunFinished {
        dag_id: "d".into(),
        run_id: run_id.into(),
        state: DagRunState::Success,
    }
}

fn short(time: &Timestamp) -> String {
    time.format("%m-%dT%H:%M").to_string()
}

/// Runs the inputs and renders one line per effect, grouped by input.
fn trace(scheduler: &mut Scheduler, inputs: Vec<(Timestamp, SchedulerInput)>) -> String {
    let mut out = String::new();
    for (now, input) in inputs {
        let label = match &input {
            SchedulerInput::DagUpserted { dag, .. } => format!("upsert {}", dag.dag_id()),
            SchedulerInput::DagRemoved { dag_id } => format!("remove {dag_id}"),
            SchedulerInput::Paused { dag_id, paused } => format!("paused {dag_id} {paused}"),
            SchedulerInput::RunRecovered { run_id, state, .. } => {
                format!("recovered {run_id} {state}")
            }
            SchedulerInput::Tick => "tick".to_string(),
            SchedulerInput::Trigger { dag_id, .. } => format!("trigger {dag_id}"),
            SchedulerInput::Backfill { dag_id, from, to } => {
                format!("backfill {dag_id} {}..{}", short(from), short(to))
            }
            SchedulerInput::RunFinished { run_id, .. } => format!("finished {run_id}"),
            SchedulerInput::StartRefused { run_id, stored, .. } => {
                format!("start refused {run_id} stored {stored:?}")
            }
            SchedulerInput::Reopen { run_id, .. } => format!("reopen {run_id}"),
        };
        out.push_str(&format!("{} {label}\n", short(&now)));
        for effect in scheduler.handle(now, input) {
            let line = match effect {
                SchedulerEffect::CreateRun {
                    dag_id,
                    run_id,
                    data_interval,
                    ..
                } => format!(
                    "create {dag_id} {run_id} [{}, {})",
                    short(&data_interval.start),
                    short(&data_interval.end)
                ),
                SchedulerEffect::StartRun { dag_id, run_id } => format!("start {dag_id} {run_id}"),
                SchedulerEffect::ReopenRun { dag_id, run_id } => {
                    format!("reopen {dag_id} {run_id}")
                }
                SchedulerEffect::WakeAt(time) => format!("wake {}", short(&time)),
                SchedulerEffect::Rejected { dag_id, reason } => {
                    format!("rejected {dag_id}: {reason}")
                }
            };
            out.push_str(&format!("    {line}\n"));
        }
    }
    out
}

fn check(inputs: Vec<(Timestamp, SchedulerInput)>, expected: Expect) {
    expected.assert_eq(&trace(&mut Scheduler::new(), inputs));
}

#[test]
fn daily_with_catchup_creates_every_missed_run_once_after_downtime() {
    check(
        vec![
            (at(2024, 1, 1, 0, 0), upsert(dag("d", daily()))),
            (at(2024, 1, 4, 12, 0), SchedulerInput::Tick),
            (at(2024, 1, 4, 12, 1), SchedulerInput::Tick),
        ],
        expect![[r#"
            01-01T00:00 upsert d
                wake 01-02T00:00
            01-04T12:00 tick
                create d scheduled__2024-01-01T00:00:00+00:00 [01-01T00:00, 01-02T00:00)
                create d scheduled__2024-01-02T00:00:00+00:00 [01-02T00:00, 01-03T00:00)
                create d scheduled__2024-01-03T00:00:00+00:00 [01-03T00:00, 01-04T00:00)
                start d scheduled__2024-01-01T00:00:00+00:00
                start d scheduled__2024-01-02T00:00:00+00:00
                start d scheduled__2024-01-03T00:00:00+00:00
                wake 01-05T00:00
            01-04T12:01 tick
        "#]],
    );
}

#[test]
fn daily_without_catchup_creates_only_the_latest_run_after_downtime() {
    let options = DagOptions {
        catchup: false,
        ..daily()
    };
    check(
        vec![
            (at(2024, 1, 1, 0, 0), upsert(dag("d", options))),
            (at(2024, 1, 2, 0, 0), SchedulerInput::Tick),
            (at(2024, 1, 6, 12, 0), SchedulerInput::Tick),
        ],
        expect![[r#"
            01-01T00:00 upsert d
                wake 01-02T00:00
            01-02T00:00 tick
                create d scheduled__2024-01-01T00:00:00+00:00 [01-01T00:00, 01-02T00:00)
                start d scheduled__2024-01-01T00:00:00+00:00
                wake 01-03T00:00
            01-06T12:00 tick
                create d scheduled__2024-01-05T00:00:00+00:00 [01-05T00:00, 01-06T00:00)
                start d scheduled__2024-01-05T00:00:00+00:00
                wake 01-07T00:00
        "#]],
    );
}

#[test]
fn max_active_runs_one_holds_back_runs_until_one_finishes() {
    let options = DagOptions {
        max_active_runs: 1,
        ..daily()
    };
    check(
        vec![
            (at(2024, 1, 1, 0, 0), upsert(dag("d", options))),
            (at(2024, 1, 3, 12, 0), SchedulerInput::Tick),
            (at(2024, 1, 3, 13, 0), SchedulerInput::Tick),
            (
                at(2024, 1, 3, 14, 0),
                finished("scheduled__2024-01-01T00:00:00+00:00"),
            ),
            (
                at(2024, 1, 3, 15, 0),
                finished("scheduled__2024-01-02T00:00:00+00:00"),
            ),
        ],
        expect![[r#"
            01-01T00:00 upsert d
                wake 01-02T00:00
            01-03T12:00 tick
                create d scheduled__2024-01-01T00:00:00+00:00 [01-01T00:00, 01-02T00:00)
                start d scheduled__2024-01-01T00:00:00+00:00
            01-03T13:00 tick
            01-03T14:00 finished scheduled__2024-01-01T00:00:00+00:00
                create d scheduled__2024-01-02T00:00:00+00:00 [01-02T00:00, 01-03T00:00)
                start d scheduled__2024-01-02T00:00:00+00:00
            01-03T15:00 finished scheduled__2024-01-02T00:00:00+00:00
                wake 01-04T00:00
        "#]],
    );
}

/// A finished run that an operator re-opens (a clear or a mark) holds a `max_active_runs`
/// place until it finishes again: the next scheduled run waits for it.
#[test]
fn a_reopened_run_counts_toward_max_active_runs() {
    let options = DagOptions {
        max_active_runs: 1,
        ..daily()
    };
    let first = "scheduled__2024-01-01T00:00:00+00:00";
    check(
        vec![
            (at(2024, 1, 1, 0, 0), upsert(dag("d", options))),
            (at(2024, 1, 2, 12, 0), SchedulerInput::Tick),
            (at(2024, 1, 2, 13, 0), finished(first)),
            (
                at(2024, 1, 2, 14, 0),
                SchedulerInput::Reopen {
                    dag_id: "d".into(),
                    run_id: first.into(),
                    run_type: RunType::Scheduled,
                    logical_date: at(2024, 1, 1, 0, 0),
                },
            ),
            (at(2024, 1, 3, 1, 0), SchedulerInput::Tick),
            (at(2024, 1, 3, 2, 0), finished(first)),
        ],
        expect![[r#"
            01-01T00:00 upsert d
                wake 01-02T00:00
            01-02T12:00 tick
                create d scheduled__2024-01-01T00:00:00+00:00 [01-01T00:00, 01-02T00:00)
                start d scheduled__2024-01-01T00:00:00+00:00
            01-02T13:00 finished scheduled__2024-01-01T00:00:00+00:00
                wake 01-03T00:00
            01-02T14:00 reopen scheduled__2024-01-01T00:00:00+00:00
                reopen d scheduled__2024-01-01T00:00:00+00:00
            01-03T01:00 tick
            01-03T02:00 finished scheduled__2024-01-01T00:00:00+00:00
                create d scheduled__2024-01-02T00:00:00+00:00 [01-02T00:00, 01-03T00:00)
                start d scheduled__2024-01-02T00:00:00+00:00
        "#]],
    );
}

#[test]
fn paused_dags_get_no_scheduled_runs_but_can_be_triggered() {
    check(
        vec![
            (
                at(2024, 1, 1, 0, 0),
                upsert(dag(
                    "d",
                    DagOptions {
                        catchup: false,
                        ..daily()
                    },
                )),
            ),
            (
                at(2024, 1, 1, 0, 1),
                SchedulerInput::Paused {
                    dag_id: "d".into(),
                    paused: true,
                },
            ),
            (at(2024, 1, 3, 0, 0), SchedulerInput::Tick),
            (
                at(2024, 1, 3, 1, 0),
                SchedulerInput::Trigger {
                    dag_id: "d".into(),
                    run_id: None,
                    logical_date: None,
                    conf: serde_json::json!({"a": 1}),
                },
            ),
            (
                at(2024, 1, 3, 1, 1),
                SchedulerInput::Trigger {
                    dag_id: "d".into(),
                    run_id: None,
                    logical_date: Some(at(2024, 1, 3, 1, 0)),
                    conf: serde_json::Value::Null,
                },
            ),
            (
                at(2024, 1, 3, 1, 2),
                SchedulerInput::Trigger {
                    dag_id: "nope".into(),
                    run_id: None,
                    logical_date: None,
                    conf: serde_json::Value::Null,
                },
            ),
            (
                at(2024, 1, 5, 6, 0),
                SchedulerInput::Paused {
                    dag_id: "d".into(),
                    paused: false,
                },
            ),
            (at(2024, 1, 5, 6, 0), SchedulerInput::Tick),
        ],
        expect![[r#"
            01-01T00:00 upsert d
                wake 01-02T00:00
            01-01T00:01 paused d true
            01-03T00:00 tick
            01-03T01:00 trigger d
                create d manual__2024-01-03T01:00:00+00:00 [01-02T00:00, 01-03T00:00)
                start d manual__2024-01-03T01:00:00+00:00
            01-03T01:01 trigger d
                rejected d: a run at logical date 2024-01-03T01:00:00+00:00 exists already: pick another logical date
            01-03T01:02 trigger nope
                rejected nope: unknown dag `nope`: register it before using it
            01-05T06:00 paused d false
                wake 01-02T00:00
            01-05T06:00 tick
                create d scheduled__2024-01-04T00:00:00+00:00 [01-04T00:00, 01-05T00:00)
                start d scheduled__2024-01-04T00:00:00+00:00
                wake 01-06T00:00
        "#]],
    );
}

#[test]
fn backfill_runs_start_after_fresh_runs_oldest_first() {
    let options = DagOptions {
        max_active_runs: 2,
        catchup: false,
        ..daily()
    };
    check(
        vec![
            (at(2024, 2, 1, 0, 0), upsert(dag("d", options))),
            (at(2024, 2, 1, 0, 0), SchedulerInput::Tick),
            (
                at(2024, 2, 1, 1, 0),
                SchedulerInput::Backfill {
                    dag_id: "d".into(),
                    from: at(2024, 1, 10, 0, 0),
                    to: at(2024, 1, 13, 0, 0),
                },
            ),
            (
                at(2024, 2, 1, 2, 0),
                finished("scheduled__2024-01-31T00:00:00+00:00"),
            ),
            (at(2024, 2, 2, 0, 0), SchedulerInput::Tick),
            (
                at(2024, 2, 2, 1, 0),
                finished("backfill__2024-01-10T00:00:00+00:00"),
            ),
            (
                at(2024, 2, 2, 2, 0),
                finished("scheduled__2024-02-01T00:00:00+00:00"),
            ),
            (
                at(2024, 2, 2, 3, 0),
                SchedulerInput::Backfill {
                    dag_id: "d".into(),
                    from: at(2024, 1, 12, 0, 0),
                    to: at(2024, 1, 14, 0, 0),
                },
            ),
            (
                at(2024, 2, 2, 3, 0),
                SchedulerInput::Backfill {
                    dag_id: "d".into(),
                    from: at(2024, 1, 14, 0, 0),
                    to: at(2024, 1, 12, 0, 0),
                },
            ),
        ],
        expect![[r#"
            02-01T00:00 upsert d
                wake 02-01T00:00
            02-01T00:00 tick
                create d scheduled__2024-01-31T00:00:00+00:00 [01-31T00:00, 02-01T00:00)
                start d scheduled__2024-01-31T00:00:00+00:00
                wake 02-02T00:00
            02-01T01:00 backfill d 01-10T00:00..01-13T00:00
                create d backfill__2024-01-10T00:00:00+00:00 [01-10T00:00, 01-11T00:00)
                create d backfill__2024-01-11T00:00:00+00:00 [01-11T00:00, 01-12T00:00)
                create d backfill__2024-01-12T00:00:00+00:00 [01-12T00:00, 01-13T00:00)
                create d backfill__2024-01-13T00:00:00+00:00 [01-13T00:00, 01-14T00:00)
                start d backfill__2024-01-10T00:00:00+00:00
            02-01T02:00 finished scheduled__2024-01-31T00:00:00+00:00
                start d backfill__2024-01-11T00:00:00+00:00
            02-02T00:00 tick
                create d scheduled__2024-02-01T00:00:00+00:00 [02-01T00:00, 02-02T00:00)
                wake 02-03T00:00
            02-02T01:00 finished backfill__2024-01-10T00:00:00+00:00
                start d scheduled__2024-02-01T00:00:00+00:00
            02-02T02:00 finished scheduled__2024-02-01T00:00:00+00:00
                start d backfill__2024-01-12T00:00:00+00:00
            02-02T03:00 backfill d 01-12T00:00..01-14T00:00
                create d backfill__2024-01-14T00:00:00+00:00 [01-14T00:00, 01-15T00:00)
            02-02T03:00 backfill d 01-14T00:00..01-12T00:00
                rejected d: backfill range starts at 2024-01-14T00:00:00+00:00 after it ends at 2024-01-12T00:00:00+00:00: swap the dates
        "#]],
    );
}

#[test]
fn recovery_rebuilds_active_runs_and_the_next_run() {
    let scheduled = |day: u32, state| SchedulerInput::RunRecovered {
        dag_id: "d".into(),
        run_id: format!("scheduled__2024-01-{day:02}T00:00:00+00:00"),
        run_type: RunType::Scheduled,
        logical_date: at(2024, 1, day, 0, 0),
        data_interval: DataInterval {
            start: at(2024, 1, day, 0, 0),
            end: at(2024, 1, day + 1, 0, 0),
        },
        state,
    };
    let options = DagOptions {
        max_active_runs: 2,
        ..daily()
    };
    check(
        vec![
            (
                at(2024, 1, 5, 12, 0),
                SchedulerInput::DagUpserted {
                    dag: dag("d", options),
                    paused: false,
                    last_automated: Some(DataInterval {
                        start: at(2024, 1, 2, 0, 0),
                        end: at(2024, 1, 3, 0, 0),
                    }),
                },
            ),
            (at(2024, 1, 5, 12, 0), scheduled(1, DagRunState::Success)),
            (at(2024, 1, 5, 12, 0), scheduled(2, DagRunState::Running)),
            (at(2024, 1, 5, 12, 0), scheduled(3, DagRunState::Queued)),
            (at(2024, 1, 5, 12, 0), SchedulerInput::Tick),
            (
                at(2024, 1, 5, 12, 5),
                finished("scheduled__2024-01-02T00:00:00+00:00"),
            ),
            (
                at(2024, 1, 5, 12, 6),
                SchedulerInput::RunRecovered {
                    dag_id: "ghost".into(),
                    run_id: "r".into(),
                    run_type: RunType::Manual,
                    logical_date: at(2024, 1, 1, 0, 0),
                    data_interval: DataInterval::exact(at(2024, 1, 1, 0, 0)),
                    state: DagRunState::Queued,
                },
            ),
        ],
        expect![[r#"
            01-05T12:00 upsert d
                wake 01-04T00:00
            01-05T12:00 recovered scheduled__2024-01-01T00:00:00+00:00 success
            01-05T12:00 recovered scheduled__2024-01-02T00:00:00+00:00 running
            01-05T12:00 recovered scheduled__2024-01-03T00:00:00+00:00 queued
            01-05T12:00 tick
                start d scheduled__2024-01-03T00:00:00+00:00
            01-05T12:05 finished scheduled__2024-01-02T00:00:00+00:00
                create d scheduled__2024-01-04T00:00:00+00:00 [01-04T00:00, 01-05T00:00)
                start d scheduled__2024-01-04T00:00:00+00:00
            01-05T12:06 recovered r queued
                rejected ghost: unknown dag `ghost`: register it before using it
        "#]],
    );
}

/// Found by the simulator (seed 11): after a restart the store listed a queued backfill run
/// before a running scheduled run of the same DAG; starting the queued run as soon as it was
/// recovered put two runs over `max_active_runs = 1`. Queued runs now start at the `Tick` that
/// ends recovery, when every running run is known.
#[test]
fn seed_11_recovered_queued_run_waits_for_running_runs() {
    let recovered = |run_id: &str, run_type, day: u32, state| SchedulerInput::RunRecovered {
        dag_id: "d".into(),
        run_id: run_id.into(),
        run_type,
        logical_date: at(2024, 1, day, 0, 0),
        data_interval: DataInterval {
            start: at(2024, 1, day, 0, 0),
            end: at(2024, 1, day + 1, 0, 0),
        },
        state,
    };
    let options = DagOptions {
        max_active_runs: 1,
        ..daily()
    };
    let backfill = "backfill__2024-01-01T00:00:00+00:00";
    let scheduled = "scheduled__2024-01-04T00:00:00+00:00";
    check(
        vec![
            (
                at(2024, 1, 5, 12, 0),
                SchedulerInput::DagUpserted {
                    dag: dag("d", options),
                    paused: false,
                    last_automated: Some(DataInterval {
                        start: at(2024, 1, 4, 0, 0),
                        end: at(2024, 1, 5, 0, 0),
                    }),
                },
            ),
            (
                at(2024, 1, 5, 12, 0),
                recovered(backfill, RunType::Backfill, 1, DagRunState::Queued),
            ),
            (
                at(2024, 1, 5, 12, 0),
                recovered(scheduled, RunType::Scheduled, 4, DagRunState::Running),
            ),
            (at(2024, 1, 5, 12, 0), SchedulerInput::Tick),
            (at(2024, 1, 5, 12, 5), finished(scheduled)),
        ],
        expect![[r#"
            01-05T12:00 upsert d
                wake 01-06T00:00
            01-05T12:00 recovered backfill__2024-01-01T00:00:00+00:00 queued
            01-05T12:00 recovered scheduled__2024-01-04T00:00:00+00:00 running
            01-05T12:00 tick
            01-05T12:05 finished scheduled__2024-01-04T00:00:00+00:00
                start d backfill__2024-01-01T00:00:00+00:00
                wake 01-06T00:00
        "#]],
    );
}

/// Found by the simulator (seed 503): after a restart the scheduler knows only unfinished runs,
/// so a backfill over a date that already had a finished run asked to create and start a run
/// the store refused (another run holds that logical date). The refused start kept its place
/// under `max_active_runs = 1` forever and no scheduled run started again. A refused start now
/// frees the place when the store holds no such run.
#[test]
fn seed_503_a_refused_start_frees_its_place() {
    let options = DagOptions {
        max_active_runs: 1,
        ..daily()
    };
    let backfill = "backfill__2024-01-03T00:00:00+00:00";
    check(
        vec![
            (
                at(2024, 1, 5, 12, 0),
                SchedulerInput::DagUpserted {
                    dag: dag("d", options),
                    paused: false,
                    last_automated: Some(DataInterval {
                        start: at(2024, 1, 4, 0, 0),
                        end: at(2024, 1, 5, 0, 0),
                    }),
                },
            ),
            (
                at(2024, 1, 5, 12, 0),
                SchedulerInput::Backfill {
                    dag_id: "d".into(),
                    from: at(2024, 1, 3, 0, 0),
                    to: at(2024, 1, 3, 0, 0),
                },
            ),
            (
                at(2024, 1, 5, 12, 0),
                SchedulerInput::StartRefused {
                    dag_id: "d".into(),
                    run_id: backfill.into(),
                    stored: None,
                },
            ),
            (at(2024, 1, 6, 0, 0), SchedulerInput::Tick),
        ],
        expect![[r#"
            01-05T12:00 upsert d
                wake 01-06T00:00
            01-05T12:00 backfill d 01-03T00:00..01-03T00:00
                create d backfill__2024-01-03T00:00:00+00:00 [01-03T00:00, 01-04T00:00)
                start d backfill__2024-01-03T00:00:00+00:00
            01-05T12:00 start refused backfill__2024-01-03T00:00:00+00:00 stored None
            01-06T00:00 tick
                create d scheduled__2024-01-05T00:00:00+00:00 [01-05T00:00, 01-06T00:00)
                start d scheduled__2024-01-05T00:00:00+00:00
        "#]],
    );
}

#[test]
fn hourly_trigger_schedule_across_london_fall_back() {
    let options = DagOptions {
        schedule: "30 * * * *",
        data_intervals: false,
        timezone: "Europe/London",
        catchup: true,
        max_active_runs: 16,
    };
    let mut spec = dag("d", options).spec().clone();
    spec.start_date = Some(at(2024, 10, 26, 23, 45));
    let dag = Arc::new(Dag::from_spec(spec).unwrap());
    check(
        vec![
            (at(2024, 10, 26, 23, 45), upsert(dag)),
            (at(2024, 10, 27, 2, 45), SchedulerInput::Tick),
        ],
        expect![[r#"
            10-26T23:45 upsert d
                wake 10-27T00:30
            10-27T02:45 tick
                create d scheduled__2024-10-27T00:30:00+00:00 [10-27T00:30, 10-27T00:30)
                create d scheduled__2024-10-27T01:30:00+00:00 [10-27T01:30, 10-27T01:30)
                create d scheduled__2024-10-27T02:30:00+00:00 [10-27T02:30, 10-27T02:30)
                start d scheduled__2024-10-27T00:30:00+00:00
                start d scheduled__2024-10-27T01:30:00+00:00
                start d scheduled__2024-10-27T02:30:00+00:00
                wake 10-27T03:30
        "#]],
    );
}

#[test]
fn changed_definition_recomputes_the_next_run() {
    let options = DagOptions {
        catchup: false,
        ..daily()
    };
    let hourly = DagOptions {
        schedule: "@hourly",
        catchup: false,
        ..daily()
    };
    check(
        vec![
            (at(2024, 1, 1, 0, 0), upsert(dag("d", options))),
            (at(2024, 1, 1, 10, 30), upsert(dag("d", hourly))),
            (
                at(2024, 1, 1, 10, 30),
                SchedulerInput::DagRemoved { dag_id: "d".into() },
            ),
            (at(2024, 1, 1, 10, 31), SchedulerInput::Tick),
        ],
        expect![[r#"
            01-01T00:00 upsert d
                wake 01-02T00:00
            01-01T10:30 upsert d
                wake 01-01T10:00
            01-01T10:30 remove d
            01-01T10:31 tick
        "#]],
    );
}

#[test]
fn a_tick_examines_only_due_dags_among_ten_thousand_idle_ones() {
    let mut scheduler = Scheduler::new();
    let now = at(2024, 1, 1, 0, 0);
    let yearly = DagOptions {
        schedule: "@yearly",
        catchup: false,
        ..daily()
    };
    let idle = dag("idle", yearly);
    for index in 0..10_000 {
        let mut spec = idle.spec().clone();
        spec.dag_id = format!("idle_{index}");
        let dag = Arc::new(Dag::from_spec(spec).unwrap());
        scheduler.handle(now, upsert(dag));
    }
    // Three DAGs that fire every hour.
    let hourly = dag(
        "busy",
        DagOptions {
            schedule: "@hourly",
            catchup: false,
            ..daily()
        },
    );
    for index in 0..3 {
        let mut spec = hourly.spec().clone();
        spec.dag_id = format!("busy_{index}");
        scheduler.handle(now, upsert(Arc::new(Dag::from_spec(spec).unwrap())));
    }
    let before = scheduler.dags_examined();
    let effects = scheduler.handle(at(2024, 1, 1, 1, 0), SchedulerInput::Tick);
    assert_eq!(scheduler.dags_examined() - before, 3);
    let created = effects
        .iter()
        .filter(|effect| matches!(effect, SchedulerEffect::CreateRun { .. }))
        .count();
    assert_eq!(created, 3);
    assert!(effects.contains(&SchedulerEffect::WakeAt(at(2024, 1, 1, 2, 0))));
    let quiet = scheduler.handle(at(2024, 1, 1, 1, 30), SchedulerInput::Tick);
    assert!(quiet.is_empty());
    assert_eq!(scheduler.dags_examined() - before, 3);
}

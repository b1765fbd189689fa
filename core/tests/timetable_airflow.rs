//! weft's timetables against Apache Airflow's: replays every case of
//! `fixtures/airflow_timetables.json` (written by `scripts/airflow_timetable_fixtures.py` from
//! Airflow's own timetable classes) and requires the same runs, step by step.

use serde::Deserialize;
use weft_core::spec::ScheduleSpec;
use weft_core::timetable::{DagRunInfo, DataInterval, Timetable};
use weft_core::Timestamp;

#[derive(Deserialize)]
struct Fixture {
    airflow_version: String,
    cases: Vec<Case>,
    backfills: Vec<Backfill>,
}

#[derive(Deserialize)]
struct Case {
    schedule: ScheduleSpec,
    timezone: String,
    start_date: Option<Timestamp>,
    end_date: Option<Timestamp>,
    catchup: bool,
    steps: Vec<Step>,
    manual: Vec<Manual>,
}

#[derive(Deserialize)]
struct Step {
    now: Timestamp,
    /// Absent when Airflow raised instead of answering.
    #[serde(default)]
    expected: Option<Expected>,
    #[serde(default)]
    airflow_error: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Debug)]
struct Expected {
    logical_date: Timestamp,
    start: Timestamp,
    end: Timestamp,
    run_after: Timestamp,
}

impl From<DagRunInfo> for Expected {
    fn from(info: DagRunInfo) -> Expected {
        Expected {
            logical_date: info.logical_date,
            start: info.data_interval.start,
            end: info.data_interval.end,
            run_after: info.run_after,
        }
    }
}

#[derive(Deserialize)]
struct Manual {
    run_after: Timestamp,
    start: Timestamp,
    end: Timestamp,
}

#[derive(Deserialize)]
struct Backfill {
    schedule: ScheduleSpec,
    timezone: String,
    from: Timestamp,
    to: Timestamp,
    expected: Vec<Expected>,
    airflow_error: Option<String>,
}

fn load() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/airflow_timetables.json"
    );
    let text = std::fs::read_to_string(path).expect("the Airflow fixture is checked in");
    serde_json::from_str(&text).expect("the Airflow fixture parses")
}

fn describe(case: &Case) -> String {
    format!(
        "{:?} in {} start={:?} end={:?} catchup={}",
        case.schedule, case.timezone, case.start_date, case.end_date, case.catchup
    )
}

#[test]
fn scheduled_runs_match_airflow() {
    let fixture = load();
    assert_eq!(fixture.airflow_version, "3.3.2");
    let mut compared = 0;
    let mut airflow_errors = 0;
    let mut mismatches = Vec::new();
    for case in &fixture.cases {
        let timetable = Timetable::new(
            &case.schedule,
            &case.timezone,
            case.start_date,
            case.end_date,
            case.catchup,
        )
        .expect("every fixture schedule is valid");
        let mut last: Option<DataInterval> = None;
        for step in &case.steps {
            let actual = timetable.next_dagrun_info(last.as_ref(), step.now);
            if let Some(error) = &step.airflow_error {
                // Airflow raises here (a wall time inside Lord Howe's 30-minute DST gap);
                // weft must keep scheduling past the last run instead.
                airflow_errors += 1;
                let previous = last.expect("Airflow only fails after a first run");
                let next = actual.unwrap_or_else(|| {
                    panic!(
                        "{}: weft stalls where Airflow fails with {error}",
                        describe(case)
                    )
                });
                assert!(
                    next.data_interval.start > previous.start,
                    "{}: {next:?}",
                    describe(case)
                );
                break;
            }
            compared += 1;
            let actual = actual.map(Expected::from);
            if actual != step.expected {
                mismatches.push(format!(
                    "{} now={} last={last:?}\n  airflow: {:?}\n  weft:    {actual:?}",
                    describe(case),
                    step.now,
                    step.expected
                ));
            }
            last = step.expected.map(|expected| DataInterval {
                start: expected.start,
                end: expected.end,
            });
        }
        for manual in &case.manual {
            compared += 1;
            let actual = timetable.infer_manual_data_interval(manual.run_after);
            let expected = DataInterval {
                start: manual.start,
                end: manual.end,
            };
            if actual != expected {
                mismatches.push(format!(
                    "{} manual at {}\n  airflow: {expected:?}\n  weft:    {actual:?}",
                    describe(case),
                    manual.run_after
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {compared} answers differ from Airflow; first ones:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(compared > 10_000, "the fixture covers {compared} answers");
    assert!(
        airflow_errors > 0,
        "the fixture records where Airflow itself fails"
    );
}

#[test]
fn backfill_ranges_match_airflow() {
    let fixture = load();
    assert!(!fixture.backfills.is_empty());
    for backfill in &fixture.backfills {
        let timetable = Timetable::new(&backfill.schedule, &backfill.timezone, None, None, true)
            .expect("every fixture schedule is valid");
        let actual: Vec<Expected> = timetable
            .runs_between(backfill.from, backfill.to, 1_000)
            .into_iter()
            .map(Expected::from)
            .collect();
        let context = format!(
            "{:?} in {} from {} to {}",
            backfill.schedule, backfill.timezone, backfill.from, backfill.to
        );
        if backfill.airflow_error.is_some() {
            // Airflow stops at its DST failure; weft gives the same runs up to it, then more.
            assert!(actual.len() > backfill.expected.len(), "{context}");
            assert_eq!(
                actual[..backfill.expected.len()],
                backfill.expected[..],
                "{context}"
            );
        } else {
            assert_eq!(actual, backfill.expected, "{context}");
        }
    }
}

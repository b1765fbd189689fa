//! Timetable behaviour checked by hand: DST in non-UTC zones, catchup, end dates, `@once`,
//! fixed intervals, and the errors a bad schedule gets.

use chrono::{TimeZone, Utc};
use weft_core::spec::ScheduleSpec;
use weft_core::timetable::{DataInterval, Timetable, TimetableError};
use weft_core::Timestamp;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Timestamp {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

fn cron(expression: &str, data_intervals: bool) -> ScheduleSpec {
    ScheduleSpec::Cron {
        expression: expression.to_string(),
        data_intervals,
    }
}

/// The logical dates (UTC, `HH:MM` on day `DD`) of the first `count` runs with catchup on.
fn logical_dates(timetable: &Timetable, now: Timestamp, count: usize) -> Vec<String> {
    let mut last: Option<DataInterval> = None;
    let mut out = Vec::new();
    for _ in 0..count {
        let Some(info) = timetable.next_dagrun_info(last.as_ref(), now) else {
            break;
        };
        out.push(info.logical_date.format("%d %H:%M").to_string());
        last = Some(info.data_interval);
    }
    out
}

#[test]
fn daily_cron_across_new_york_spring_forward_keeps_local_midnight() {
    let timetable = Timetable::new(
        &cron("0 0 * * *", true),
        "America/New_York",
        Some(utc(2024, 3, 9, 5, 0)),
        None,
        true,
    )
    .unwrap();
    // Midnight EST is 05:00 UTC, midnight EDT 04:00 UTC.
    assert_eq!(
        logical_dates(&timetable, utc(2024, 3, 9, 6, 0), 3),
        ["09 05:00", "10 05:00", "11 04:00"]
    );
    let first = timetable
        .next_dagrun_info(None, utc(2024, 3, 9, 6, 0))
        .unwrap();
    // The day of the change is 23 hours long.
    assert_eq!(
        first.data_interval.end - first.data_interval.start,
        chrono::Duration::hours(24)
    );
    let second = timetable
        .next_dagrun_info(Some(&first.data_interval), utc(2024, 3, 9, 6, 0))
        .unwrap();
    assert_eq!(
        second.data_interval.end - second.data_interval.start,
        chrono::Duration::hours(23)
    );
    assert_eq!(second.run_after, second.data_interval.end);
}

#[test]
fn wall_time_skipped_by_spring_forward_moves_forward_by_the_gap() {
    // 02:30 does not exist in New York on 2024-03-10; Airflow runs at 03:30 EDT (07:30 UTC).
    let timetable = Timetable::new(
        &cron("30 2 * * *", false),
        "America/New_York",
        Some(utc(2024, 3, 9, 5, 0)),
        None,
        true,
    )
    .unwrap();
    assert_eq!(
        logical_dates(&timetable, utc(2024, 3, 9, 6, 0), 3),
        ["09 07:30", "10 07:30", "11 06:30"]
    );
}

#[test]
fn wall_time_repeated_by_fall_back_runs_once_at_its_second_occurrence() {
    // 01:30 happens twice in New York on 2024-11-03; Airflow picks the second (EST, 06:30 UTC).
    let timetable = Timetable::new(
        &cron("30 1 * * *", false),
        "America/New_York",
        Some(utc(2024, 11, 2, 4, 0)),
        None,
        true,
    )
    .unwrap();
    assert_eq!(
        logical_dates(&timetable, utc(2024, 11, 2, 6, 0), 3),
        ["02 05:30", "03 06:30", "04 06:30"]
    );
}

#[test]
fn hourly_cron_steps_in_absolute_time_across_both_changes() {
    let timetable = Timetable::new(
        &cron("0 * * * *", false),
        "Europe/London",
        Some(utc(2024, 10, 26, 23, 0)),
        None,
        true,
    )
    .unwrap();
    // London falls back at 02:00 BST (01:00 UTC): the hour 01:00-02:00 is run twice on the wall
    // clock, so every UTC hour still gets exactly one run.
    assert_eq!(
        logical_dates(&timetable, utc(2024, 10, 27, 0, 0), 4),
        ["26 23:00", "27 00:00", "27 01:00", "27 02:00"]
    );
    let spring = Timetable::new(
        &cron("0 * * * *", false),
        "Europe/London",
        Some(utc(2024, 3, 31, 0, 0)),
        None,
        true,
    )
    .unwrap();
    assert_eq!(
        logical_dates(&spring, utc(2024, 3, 31, 0, 0), 3),
        ["31 00:00", "31 01:00", "31 02:00"]
    );
}

#[test]
fn catchup_off_starts_from_the_latest_due_interval() {
    let start = utc(2024, 1, 1, 0, 0);
    let now = utc(2024, 1, 10, 12, 0);
    let data = Timetable::new(&cron("@daily", true), "UTC", Some(start), None, false).unwrap();
    let info = data.next_dagrun_info(None, now).unwrap();
    // The interval [9th, 10th) is the latest complete one; it is due already.
    assert_eq!(
        info.data_interval,
        DataInterval {
            start: utc(2024, 1, 9, 0, 0),
            end: utc(2024, 1, 10, 0, 0)
        }
    );
    let trigger = Timetable::new(&cron("@daily", false), "UTC", Some(start), None, false).unwrap();
    assert_eq!(
        trigger.next_dagrun_info(None, now).unwrap().logical_date,
        utc(2024, 1, 10, 0, 0)
    );
    let caught_up = Timetable::new(&cron("@daily", true), "UTC", Some(start), None, true).unwrap();
    assert_eq!(
        caught_up.next_dagrun_info(None, now).unwrap().logical_date,
        start
    );
}

#[test]
fn end_date_stops_runs() {
    let timetable = Timetable::new(
        &cron("@daily", true),
        "UTC",
        Some(utc(2024, 1, 1, 0, 0)),
        Some(utc(2024, 1, 2, 0, 0)),
        true,
    )
    .unwrap();
    assert_eq!(
        logical_dates(&timetable, utc(2024, 2, 1, 0, 0), 10),
        ["01 00:00", "02 00:00"]
    );
}

#[test]
fn once_runs_at_the_start_date_and_never_again() {
    let timetable = Timetable::new(
        &cron("@once", false),
        "UTC",
        Some(utc(2024, 1, 1, 3, 0)),
        None,
        false,
    )
    .unwrap();
    let info = timetable
        .next_dagrun_info(None, utc(2024, 5, 1, 0, 0))
        .unwrap();
    assert_eq!(info.logical_date, utc(2024, 1, 1, 3, 0));
    assert_eq!(
        timetable.next_dagrun_info(Some(&info.data_interval), utc(2024, 5, 1, 0, 0)),
        None
    );
    assert!(!timetable.is_manual_only());
    let manual = Timetable::new(&ScheduleSpec::None, "UTC", None, None, false).unwrap();
    assert!(manual.is_manual_only());
    assert_eq!(manual.next_dagrun_info(None, utc(2024, 5, 1, 0, 0)), None);
    assert_eq!(
        manual.infer_manual_data_interval(utc(2024, 5, 1, 0, 0)),
        DataInterval::exact(utc(2024, 5, 1, 0, 0))
    );
}

#[test]
fn fixed_interval_with_and_without_data_intervals() {
    let every = ScheduleSpec::Interval {
        every_ms: 6 * 3_600_000,
        data_intervals: true,
    };
    let timetable = Timetable::new(
        &every,
        "America/New_York",
        Some(utc(2024, 3, 10, 0, 0)),
        None,
        true,
    )
    .unwrap();
    assert_eq!(
        logical_dates(&timetable, utc(2024, 3, 12, 0, 0), 3),
        ["10 00:00", "10 06:00", "10 12:00"]
    );
    let first = timetable
        .next_dagrun_info(None, utc(2024, 3, 12, 0, 0))
        .unwrap();
    assert_eq!(first.run_after, utc(2024, 3, 10, 6, 0));
    let manual = timetable.infer_manual_data_interval(utc(2024, 3, 11, 1, 0));
    assert_eq!(
        manual,
        DataInterval {
            start: utc(2024, 3, 10, 19, 0),
            end: utc(2024, 3, 11, 1, 0)
        }
    );
    let trigger = ScheduleSpec::Interval {
        every_ms: 6 * 3_600_000,
        data_intervals: false,
    };
    let timetable =
        Timetable::new(&trigger, "UTC", Some(utc(2024, 3, 10, 0, 0)), None, true).unwrap();
    let first = timetable
        .next_dagrun_info(None, utc(2024, 3, 12, 0, 0))
        .unwrap();
    assert_eq!(first.run_after, first.logical_date);
}

#[test]
fn manual_data_interval_of_a_daily_data_interval_schedule_is_the_previous_day() {
    let timetable = Timetable::new(&cron("@daily", true), "UTC", None, None, false).unwrap();
    let interval = timetable.infer_manual_data_interval(utc(2024, 1, 25, 1, 0));
    assert_eq!(
        interval,
        DataInterval {
            start: utc(2024, 1, 24, 0, 0),
            end: utc(2024, 1, 25, 0, 0)
        }
    );
}

#[test]
fn runs_between_is_bounded_and_inclusive() {
    let timetable = Timetable::new(&cron("0 0 * * *", false), "UTC", None, None, false).unwrap();
    let runs = timetable.runs_between(utc(2024, 1, 1, 0, 0), utc(2024, 1, 5, 0, 0), 100);
    assert_eq!(runs.len(), 5);
    assert_eq!(
        timetable
            .runs_between(utc(2024, 1, 1, 0, 0), utc(2024, 1, 5, 0, 0), 2)
            .len(),
        2
    );
    assert!(timetable
        .runs_between(utc(2024, 1, 5, 0, 0), utc(2024, 1, 1, 0, 0), 100)
        .is_empty());
}

#[test]
fn vixie_day_of_month_or_day_of_week() {
    // Friday the 13th style: the 13th of any month OR any Friday.
    let timetable = Timetable::new(&cron("0 0 13 * FRI", false), "UTC", None, None, false).unwrap();
    let runs = timetable.runs_between(utc(2024, 9, 1, 0, 0), utc(2024, 9, 30, 0, 0), 100);
    let days: Vec<u32> = runs
        .iter()
        .map(|run| chrono::Datelike::day(&run.logical_date))
        .collect();
    assert_eq!(days, [6, 13, 20, 27]);
    let sunday_as_seven =
        Timetable::new(&cron("0 0 * * 7", false), "UTC", None, None, false).unwrap();
    let sunday_as_name =
        Timetable::new(&cron("0 0 * * sun", false), "UTC", None, None, false).unwrap();
    let range = (utc(2024, 9, 1, 0, 0), utc(2024, 9, 30, 0, 0));
    assert_eq!(
        sunday_as_seven.runs_between(range.0, range.1, 10),
        sunday_as_name.runs_between(range.0, range.1, 10)
    );
    let stepped = Timetable::new(
        &cron("1-10/3 */6 * JAN-MAR *", false),
        "UTC",
        None,
        None,
        false,
    )
    .unwrap();
    let runs = stepped.runs_between(utc(2024, 1, 1, 0, 0), utc(2024, 1, 1, 6, 59), 100);
    let times: Vec<String> = runs
        .iter()
        .map(|run| run.logical_date.format("%H:%M").to_string())
        .collect();
    assert_eq!(
        times,
        ["00:01", "00:04", "00:07", "00:10", "06:01", "06:04", "06:07", "06:10"]
    );
}

fn error_of(expression: &str) -> String {
    Timetable::new(&cron(expression, false), "UTC", None, None, false)
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_cron_expressions_get_precise_errors() {
    assert_eq!(
        error_of("61 * * * *"),
        "invalid cron expression \"61 * * * *\": minute 61 is out of range 0-59"
    );
    assert_eq!(
        error_of("* 24 * * *"),
        "invalid cron expression \"* 24 * * *\": hour 24 is out of range 0-23"
    );
    assert_eq!(
        error_of("* * 0 * *"),
        "invalid cron expression \"* * 0 * *\": day-of-month 0 is out of range 1-31"
    );
    assert_eq!(
        error_of("* * * 13 *"),
        "invalid cron expression \"* * * 13 *\": month 13 is out of range 1-12"
    );
    assert_eq!(
        error_of("* * * * 8"),
        "invalid cron expression \"* * * * 8\": day-of-week 8 is out of range 0-7"
    );
    assert_eq!(
        error_of("* * * *"),
        "invalid cron expression \"* * * *\": expected 5 fields (minute hour day-of-month month day-of-week), found 4"
    );
    assert_eq!(
        error_of("*/0 * * * *"),
        "invalid cron expression \"*/0 * * * *\": minute step must be at least 1, found 0"
    );
    assert_eq!(
        error_of("5-1 * * * *"),
        "invalid cron expression \"5-1 * * * *\": minute range 5-1 runs backwards: write the smaller value first"
    );
    assert_eq!(
        error_of("0 0 * JANX *"),
        "invalid cron expression \"0 0 * JANX *\": month `JANX` is not a number or a name (JAN, FEB, MAR, APR, MAY, JUN, JUL, AUG, SEP, OCT, NOV, DEC)"
    );
    assert_eq!(
        error_of("0 0 30 2 *"),
        "invalid cron expression \"0 0 30 2 *\": it never matches: no chosen month has the chosen day-of-month"
    );
    assert!(error_of("@fortnightly")
        .contains("unknown preset `@fortnightly`: use one of @once, @hourly"));
    assert_eq!(
        error_of("1,,2 * * * *"),
        "invalid cron expression \"1,,2 * * * *\": minute field `1,,2` has an empty list item"
    );
}

#[test]
fn unknown_time_zone_and_bad_interval_are_refused() {
    let error =
        Timetable::new(&cron("@daily", false), "Mars/Olympus", None, None, false).unwrap_err();
    assert_eq!(
        error,
        TimetableError::UnknownTimezone("Mars/Olympus".to_string())
    );
    assert_eq!(
        error.to_string(),
        "unknown time zone `Mars/Olympus`: use an IANA name such as `Europe/Paris` or `UTC`"
    );
    let zero = ScheduleSpec::Interval {
        every_ms: 0,
        data_intervals: false,
    };
    let error = Timetable::new(&zero, "UTC", None, None, false).unwrap_err();
    assert!(error
        .to_string()
        .starts_with("invalid schedule interval of 0 ms: use a positive interval"));
}

#[test]
fn schedule_json_without_the_flag_gets_airflow_3_defaults() {
    let spec: ScheduleSpec =
        serde_json::from_str(r#"{"kind": "cron", "expression": "@daily"}"#).unwrap();
    assert_eq!(spec, cron("@daily", false));
    let spec: ScheduleSpec =
        serde_json::from_str(r#"{"kind": "interval", "every_ms": 1000}"#).unwrap();
    assert_eq!(
        spec,
        ScheduleSpec::Interval {
            every_ms: 1000,
            data_intervals: false
        }
    );
}

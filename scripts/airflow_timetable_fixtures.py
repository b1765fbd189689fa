"""Write core/tests/fixtures/airflow_timetables.json from Apache Airflow's own timetable classes.

weft's timetables must give the same logical dates, data intervals and due times as Airflow 3
for the same DAG. This script asks Airflow for those values over a grid of schedules, time
zones (including DST changes and Lord Howe's 30-minute one), start and end dates, catchup and
manual triggers, and stores them so that `core/tests/timetable_airflow.rs` can compare without
Airflow installed.

    python3 -m venv /var/tmp/airflow-venv
    /var/tmp/airflow-venv/bin/pip install apache-airflow==3.3.2
    /var/tmp/airflow-venv/bin/python scripts/airflow_timetable_fixtures.py

Each step records the inputs weft gets (`now`, the last automated data interval) and what
Airflow answered, so the Rust test replays every step on its own.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import sys

import airflow
import pendulum
from airflow._shared.timezones import timezone as airflow_timezone
from airflow.timetables import interval as interval_module
from airflow.timetables import trigger as trigger_module
from airflow.timetables.base import DataInterval, TimeRestriction
from airflow.timetables.interval import CronDataIntervalTimetable, DeltaDataIntervalTimetable
from airflow.timetables.simple import NullTimetable, OnceTimetable
from airflow.timetables.trigger import CronTriggerTimetable, DeltaTriggerTimetable

OUTPUT = pathlib.Path(__file__).resolve().parent.parent / "core/tests/fixtures/airflow_timetables.json"
UTC = pendulum.timezone("UTC")

# The timetables read the clock through `utcnow`; pin it to the step's `now`.
_now: list[pendulum.DateTime] = [pendulum.datetime(2024, 1, 1, tz="UTC")]


def _fake_utcnow() -> pendulum.DateTime:
    return _now[0]


interval_module.utcnow = _fake_utcnow
trigger_module.utcnow = _fake_utcnow
airflow_timezone.utcnow = _fake_utcnow


def stamp(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return pendulum.instance(value).in_timezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_timetable(schedule: dict, zone: str):
    kind = schedule["kind"]
    if kind == "none":
        return NullTimetable()
    if kind == "once":
        return OnceTimetable()
    if kind == "cron":
        if schedule["data_intervals"]:
            return CronDataIntervalTimetable(schedule["expression"], zone)
        return CronTriggerTimetable(schedule["expression"], timezone=zone)
    delta = dt.timedelta(milliseconds=schedule["every_ms"])
    if schedule["data_intervals"]:
        return DeltaDataIntervalTimetable(delta)
    return DeltaTriggerTimetable(delta)


def spec_json(schedule: dict) -> dict:
    """The weft `ScheduleSpec` JSON of a schedule."""
    kind = schedule["kind"]
    if kind == "none":
        return {"kind": "none"}
    if kind == "once":
        return {"kind": "cron", "expression": "@once"}
    if kind == "cron":
        return {"kind": "cron", "expression": schedule["expression"], "data_intervals": schedule["data_intervals"]}
    return {"kind": "interval", "every_ms": schedule["every_ms"], "data_intervals": schedule["data_intervals"]}


def info_json(info) -> dict | None:
    if info is None:
        return None
    return {
        "logical_date": stamp(info.logical_date),
        "start": stamp(info.data_interval.start),
        "end": stamp(info.data_interval.end),
        "run_after": stamp(info.run_after),
    }


def scheduled_steps(timetable, restriction: TimeRestriction, now: pendulum.DateTime, steps: int) -> list[dict]:
    """Runs as a scheduler would create them: each one at its due time (or at `now` when
    that is later), asking for the next right after."""
    out = []
    last = None
    for _ in range(steps):
        _now[0] = now
        # The last automated interval of a step is the one the step before it produced.
        step = {"now": stamp(now)}
        try:
            info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        except (ValueError, AssertionError) as error:
            # Airflow gives up on some wall times inside a DST gap; record it and stop.
            step["airflow_error"] = str(error)
            out.append(step)
            break
        step["expected"] = info_json(info)
        out.append(step)
        if info is None:
            break
        last = DataInterval(info.data_interval.start, info.data_interval.end)
        now = max(now, pendulum.instance(info.run_after))
    return out


def utc(*args) -> pendulum.DateTime:
    return pendulum.datetime(*args, tz="UTC")


def local(zone: str, *args) -> pendulum.DateTime:
    return pendulum.datetime(*args, tz=zone).in_timezone(UTC)


# (zone, spring-forward date, fall-back date) in 2024.
DST = [
    ("America/New_York", (2024, 3, 10), (2024, 11, 3)),
    ("Europe/London", (2024, 3, 31), (2024, 10, 27)),
    # Lord Howe moves by 30 minutes: back at 02:00 to 01:30 in April, forward at 02:00 to 02:30 in October.
    ("Australia/Lord_Howe", (2024, 10, 6), (2024, 4, 7)),
    ("UTC", (2024, 3, 10), (2024, 11, 3)),
]

CRONS = [
    ("0 0 * * *", 6),
    ("0 * * * *", 32),
    ("30 * * * *", 32),
    ("*/20 * * * *", 80),
    ("30 2 * * *", 6),
    ("30 1 * * *", 6),
    ("15 2,3 * * *", 8),
    ("0 */2 * * *", 16),
    ("0 9 * * MON-FRI", 8),
    ("0 0 13 * 5", 6),
    ("@weekly", 4),
    ("@monthly", 4),
]

INTERVALS_MS = [3_600_000, 86_400_000, 7 * 86_400_000 + 300_000]


def cases() -> list[dict]:
    out = []
    for zone, spring, fall in DST:
        for date in (spring, fall):
            # Start a little before the change, off the schedule's grid, so alignment matters.
            start = local(zone, *date).subtract(days=1).add(minutes=7)
            schedules = [
                {"kind": "cron", "expression": expression, "data_intervals": data_intervals, "steps": steps}
                for expression, steps in CRONS
                for data_intervals in (True, False)
            ]
            if zone in ("UTC", "America/New_York"):
                schedules += [
                    {"kind": "interval", "every_ms": every_ms, "data_intervals": data_intervals, "steps": 8}
                    for every_ms in INTERVALS_MS
                    for data_intervals in (True, False)
                ]
                schedules += [{"kind": "once", "steps": 2}, {"kind": "none", "steps": 1}]
            for schedule in schedules:
                for catchup in (True, False):
                    for end_offset_hours in (None, 25):
                        end = None if end_offset_hours is None else start.add(hours=end_offset_hours)
                        # With catchup off, `now` is later than the start date, so Airflow skips.
                        now = start.add(hours=1) if catchup else start.add(hours=20, minutes=3)
                        out.append(make_case(zone, schedule, start, end, catchup, now))
            # No start date at all (allowed in Airflow 3).
            for expression, _ in CRONS[:4]:
                for data_intervals in (True, False):
                    schedule = {"kind": "cron", "expression": expression, "data_intervals": data_intervals, "steps": 4}
                    for minutes in (2, 40):
                        now = local(zone, *date).add(minutes=minutes)
                        out.append(make_case(zone, schedule, None, None, False, now))
    return out


def make_case(zone, schedule, start, end, catchup, now) -> dict:
    timetable = make_timetable(schedule, zone)
    restriction = TimeRestriction(earliest=start, latest=end, catchup=catchup)
    steps = scheduled_steps(timetable, restriction, now, schedule["steps"])
    # Manual triggers: on and off the grid, around the DST change.
    manual = []
    base = start or now
    for offset_minutes in (0, 7, 60 * 24 + 30, 60 * 25 + 53, 60 * 26 + 23):
        run_after = base.add(minutes=offset_minutes)
        interval = timetable.infer_manual_data_interval(run_after=run_after)
        manual.append({"run_after": stamp(run_after), "start": stamp(interval.start), "end": stamp(interval.end)})
    return {
        "schedule": spec_json(schedule),
        "timezone": zone,
        "start_date": stamp(start),
        "end_date": stamp(end),
        "catchup": catchup,
        "steps": steps,
        "manual": manual,
    }


def backfills() -> list[dict]:
    """Backfill ranges, as `iter_dagrun_infos_between` walks them."""
    out = []
    for zone, spring, fall in DST[:3]:
        for expression in ("0 0 * * *", "0 * * * *", "30 2 * * *"):
            for data_intervals in (True, False):
                schedule = {"kind": "cron", "expression": expression, "data_intervals": data_intervals}
                timetable = make_timetable(schedule, zone)
                for date in (spring, fall):
                    earliest = local(zone, *date).subtract(days=1).add(minutes=11)
                    latest = earliest.add(days=2)
                    restriction = TimeRestriction(earliest, latest, catchup=True)
                    infos, last, error = [], None, None
                    while len(infos) < 200:
                        try:
                            info = timetable.next_dagrun_info(
                                last_automated_data_interval=last, restriction=restriction
                            )
                        except (ValueError, AssertionError) as exception:
                            error = str(exception)
                            break
                        if info is None:
                            break
                        infos.append(info_json(info))
                        last = info.data_interval
                    out.append(
                        {
                            "schedule": spec_json(schedule),
                            "timezone": zone,
                            "from": stamp(earliest),
                            "to": stamp(latest),
                            "expected": infos,
                            "airflow_error": error,
                        }
                    )
    return out


def main() -> None:
    fixture = {
        "generated_by": "scripts/airflow_timetable_fixtures.py",
        "airflow_version": airflow.__version__,
        "cases": cases(),
        "backfills": backfills(),
    }
    # One case per line keeps the file small and its diffs readable.
    lines = ",\n".join(json.dumps(case, separators=(",", ":")) for case in fixture["cases"])
    backfill_lines = ",\n".join(json.dumps(case, separators=(",", ":")) for case in fixture["backfills"])
    OUTPUT.write_text(
        "{"
        f'"generated_by":{json.dumps(fixture["generated_by"])},'
        f'"airflow_version":{json.dumps(fixture["airflow_version"])},\n'
        f'"cases":[\n{lines}\n],\n"backfills":[\n{backfill_lines}\n]}}\n'
    )
    steps = sum(len(case["steps"]) + len(case["manual"]) for case in fixture["cases"])
    print(f"wrote {len(fixture['cases'])} cases ({steps} steps) to {OUTPUT}", file=sys.stderr)


if __name__ == "__main__":
    main()

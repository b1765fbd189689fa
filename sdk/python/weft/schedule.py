"""Schedules, time zones and time values as the serialized DAG form wants them: cron checks
that catch typos while the file is imported, IANA zone names, UTC timestamps and milliseconds.

The Rust core validates schedules again precisely; these checks exist so that an author sees
the error with the line of the offending statement."""

import datetime as _dt
import re
import zoneinfo

from .exceptions import BadArgumentError, BadScheduleError, UnknownTimezoneError

PRESETS = frozenset(
    ["@once", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly", "@annually",
     "@midnight"]
)

_MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

# (name, lowest, highest, names usable instead of numbers and the number of the first name)
_CRON_FIELDS = [
    ("minute", 0, 59, None, 0),
    ("hour", 0, 23, None, 0),
    ("day of month", 1, 31, None, 0),
    ("month", 1, 12, _MONTH_NAMES, 1),
    ("day of week", 0, 7, _DAY_NAMES, 0),
]

_ATOM = re.compile(r"^(\*|\?|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/([0-9]+))?$")


def validate_cron(expression):
    """Raise BadScheduleError unless `expression` is a preset or a plausible 5-field cron."""
    text = expression.strip()
    if text.startswith("@"):
        if text not in PRESETS:
            raise BadScheduleError(
                f"unknown schedule preset `{text}`; use one of {', '.join(sorted(PRESETS))}"
            )
        return
    fields = text.split()
    if len(fields) != 5:
        raise BadScheduleError(
            f"cron expression `{expression}` has {len(fields)} fields; write 5 fields "
            "(minute hour day-of-month month day-of-week) or a preset such as @daily"
        )
    for field, (name, low, high, names, first) in zip(fields, _CRON_FIELDS):
        for part in field.lower().split(","):
            _validate_cron_part(expression, part, name, low, high, names, first)


def _validate_cron_part(expression, part, name, low, high, names, first):
    # Quartz-style day modifiers (L, W, #) are left to the core's parser.
    if name in ("day of month", "day of week") and re.fullmatch(r"[0-9a-z]*[lw#][0-9a-z#]*", part):
        return
    match = _ATOM.match(part)
    if not match:
        raise BadScheduleError(f"cron expression `{expression}`: cannot read {name} `{part}`")
    base, step = match.group(1), match.group(2)
    if step is not None and int(step) == 0:
        raise BadScheduleError(f"cron expression `{expression}`: {name} step must not be 0")
    if base in ("*", "?"):
        return
    for value in base.split("-"):
        if value.isdigit():
            number = int(value)
        elif names and value in names:
            number = names.index(value) + first
        else:
            raise BadScheduleError(f"cron expression `{expression}`: cannot read {name} `{value}`")
        if not low <= number <= high:
            raise BadScheduleError(
                f"cron expression `{expression}`: {name} {number} is outside {low}-{high}"
            )


def schedule_to_json(schedule, data_intervals=None):
    """The `ScheduleSpec` JSON of a DAG's `schedule` argument. `data_intervals` (None: the
    core's default) picks Airflow's data-interval timetables over trigger timetables."""
    spec = _schedule_to_json(schedule)
    if data_intervals is not None and spec["kind"] != "none":
        spec["data_intervals"] = bool(data_intervals)
    return spec


def _schedule_to_json(schedule):
    if schedule is None:
        return {"kind": "none"}
    if isinstance(schedule, str):
        validate_cron(schedule)
        return {"kind": "cron", "expression": schedule.strip()}
    if isinstance(schedule, _dt.timedelta):
        every_ms = timedelta_ms(schedule)
        if every_ms <= 0:
            raise BadScheduleError(f"schedule interval {schedule} must be longer than zero")
        return {"kind": "interval", "every_ms": every_ms}
    raise BadScheduleError(
        f"unsupported schedule {schedule!r}; use None, a cron string, a preset such as "
        "'@daily' or a datetime.timedelta"
    )


def timedelta_ms(value, *, what="duration"):
    """Milliseconds of a timedelta (or of a number of seconds, as Airflow also accepts)."""
    if value is None:
        return None
    if isinstance(value, _dt.timedelta):
        return int(round(value.total_seconds() * 1000))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(round(value * 1000))
    raise BadArgumentError(f"{what} must be a datetime.timedelta, got {value!r}")


def resolve_timezone(value):
    """The IANA name of a time zone given as a name, a ZoneInfo or a fixed-offset tzinfo."""
    if value is None:
        return None
    if isinstance(value, str):
        name = value.strip()
        if name.upper() in ("UTC", "Z", "ETC/UTC"):
            return "UTC"
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            raise UnknownTimezoneError(
                f"unknown time zone `{name}`; use an IANA name such as `Europe/Paris` or `UTC`"
            ) from None
        return name
    if isinstance(value, zoneinfo.ZoneInfo):
        return resolve_timezone(value.key)
    if isinstance(value, _dt.tzinfo):
        # pendulum and friends expose an IANA `name`; a fixed offset maps onto Etc/GMT±N.
        name = getattr(value, "name", None) or getattr(value, "zone", None)
        if isinstance(name, str) and "/" in name or name in ("UTC",):
            return resolve_timezone(name)
        offset = value.utcoffset(None)
        if offset is None or offset == _dt.timedelta(0):
            return "UTC"
        hours, remainder = divmod(int(offset.total_seconds()), 3600)
        if remainder:
            raise UnknownTimezoneError(
                f"time zone offset {offset} has no IANA name; give `timezone=` an IANA name"
            )
        # POSIX sign convention: Etc/GMT-2 is two hours ahead of UTC.
        return f"Etc/GMT{-hours:+d}"
    raise UnknownTimezoneError(f"cannot read time zone {value!r}; give an IANA name")


def to_utc(value, *, what="date"):
    """An aware UTC datetime from a datetime (naive means UTC) or a date."""
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            return value.replace(tzinfo=_dt.timezone.utc)
        return value.astimezone(_dt.timezone.utc)
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day, tzinfo=_dt.timezone.utc)
    raise BadArgumentError(f"{what} must be a datetime, got {value!r}")


def timestamp_json(value, *, what="date"):
    """RFC 3339 UTC text (`2024-01-01T00:00:00Z`), the form the core's Timestamp reads."""
    moment = to_utc(value, what=what)
    if moment is None:
        return None
    text = moment.replace(tzinfo=None).isoformat()
    return text + "Z"

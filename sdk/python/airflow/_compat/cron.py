"""The next fire time of a cron schedule, for LatestOnlyOperator's "is this the latest run"
test at run time (the scheduler's own cron lives in the Rust core)."""

import datetime as _dt
import zoneinfo

_PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_NAMES = {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9,
    "oct": 10, "nov": 11, "dec": 12, "sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5,
    "sat": 6,
}
# Minutes searched before giving up (a little over four years).
SEARCH_MINUTES_MAX = 4 * 366 * 24 * 60


def _number(text):
    return _NAMES[text] if text in _NAMES else int(text)


def _field(text, low, high):
    values = set()
    for part in text.lower().split(","):
        base, _, step = part.partition("/")
        if base in ("*", "?"):
            start, end = low, high
        elif "-" in base:
            first, last = base.split("-", 1)
            start, end = _number(first), _number(last)
        else:
            start = end = _number(base)
            if step:
                end = high
        values.update(range(start, end + 1, int(step) if step else 1))
    return values


def next_fire(expression, after, timezone="UTC"):
    """The first fire time strictly after `after` (aware), or None when there is none soon."""
    text = _PRESETS.get(expression.strip(), expression.strip())
    if text.startswith("@"):
        return None
    fields = text.split()
    if len(fields) != 5:
        return None
    minutes, hours, days, months, weekdays = (
        _field(fields[0], 0, 59), _field(fields[1], 0, 23), _field(fields[2], 1, 31),
        _field(fields[3], 1, 12), {day % 7 for day in _field(fields[4], 0, 7)},
    )
    day_restricted = fields[2] not in ("*", "?")
    weekday_restricted = fields[4] not in ("*", "?")
    zone = zoneinfo.ZoneInfo(timezone)
    moment = after.astimezone(zone).replace(second=0, microsecond=0) + _dt.timedelta(minutes=1)
    for _ in range(SEARCH_MINUTES_MAX):
        weekday = (moment.isoweekday()) % 7
        if day_restricted and weekday_restricted:
            day_ok = moment.day in days or weekday in weekdays
        else:
            day_ok = moment.day in days and weekday in weekdays
        if moment.month not in months or not day_ok:
            moment = (moment + _dt.timedelta(days=1)).replace(hour=0, minute=0)
            continue
        if moment.hour not in hours:
            moment = (moment + _dt.timedelta(hours=1)).replace(minute=0)
            continue
        if moment.minute in minutes:
            return moment.astimezone(_dt.timezone.utc)
        moment += _dt.timedelta(minutes=1)
    return None

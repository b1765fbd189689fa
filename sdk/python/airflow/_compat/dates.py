"""`airflow.utils.dates`: the helpers Airflow 1.x and 2.x DAG files still call."""

import datetime as _dt

from .timezone import utcnow

cron_presets = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
}


def days_ago(n, hour=0, minute=0, second=0, microsecond=0):
    """Midnight UTC today minus `n` days (Airflow's definition)."""
    today = utcnow().replace(hour=hour, minute=minute, second=second, microsecond=microsecond)
    return today - _dt.timedelta(days=n)


def date_range(start_date, end_date=None, num=None, delta=None):
    if delta is None or not isinstance(delta, _dt.timedelta):
        raise TypeError("weft's date_range needs a timedelta delta")
    dates = []
    current = start_date
    while (end_date is None or current <= end_date) and (num is None or len(dates) < num):
        dates.append(current)
        current += delta
    return dates


def infer_time_unit(time_seconds_arr):
    largest = max(time_seconds_arr, default=0)
    if largest <= 180:
        return "seconds"
    if largest <= 10800:
        return "minutes"
    if largest <= 86400 * 3:
        return "hours"
    return "days"


def scale_time_units(time_seconds_arr, unit):
    factor = {"minutes": 60, "hours": 3600, "days": 86400}.get(unit, 1)
    return [seconds / factor for seconds in time_seconds_arr]

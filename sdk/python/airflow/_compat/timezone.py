"""`airflow.utils.timezone` / `airflow.sdk.timezone`: aware datetimes, pendulum when present."""

import datetime as _dt

utc = _dt.timezone.utc


def _pendulum():
    try:
        import pendulum
    except ImportError:
        return None
    return pendulum


def utcnow():
    pendulum = _pendulum()
    now = _dt.datetime.now(_dt.timezone.utc)
    return pendulum.instance(now) if pendulum else now


def datetime(*args, **kwargs):
    """An aware datetime; UTC unless `tzinfo` says otherwise."""
    kwargs.setdefault("tzinfo", _dt.timezone.utc)
    moment = _dt.datetime(*args, **kwargs)
    pendulum = _pendulum()
    return pendulum.instance(moment) if pendulum else moment


def is_localized(value):
    return value.utcoffset() is not None


def is_naive(value):
    return value.utcoffset() is None


def make_aware(value, timezone=None):
    if value is None:
        return None
    zone = _zone(timezone)
    if value.tzinfo is not None and value.utcoffset() is not None:
        raise ValueError(f"make_aware expects a naive datetime, got {value}")
    return value.replace(tzinfo=zone)


def make_naive(value, timezone=None):
    zone = _zone(timezone)
    return value.astimezone(zone).replace(tzinfo=None)


def convert_to_utc(value):
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    return value.astimezone(_dt.timezone.utc)


def coerce_datetime(value, tz=None):
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=_zone(tz))
    pendulum = _pendulum()
    return pendulum.instance(value) if pendulum else value


def parse(text, timezone=None):
    pendulum = _pendulum()
    if pendulum:
        return pendulum.parse(text, tz=timezone or "UTC")
    return coerce_datetime(_dt.datetime.fromisoformat(text), timezone)


def _zone(timezone):
    if timezone is None:
        return _dt.timezone.utc
    if isinstance(timezone, str):
        import zoneinfo

        return zoneinfo.ZoneInfo(timezone)
    return timezone

"""Airflow 3's timezone helpers. Part of weft's Airflow compatibility layer."""

from airflow._compat.timezone import utc, utcnow, datetime, is_localized, is_naive, make_aware, make_naive, convert_to_utc, coerce_datetime, parse  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['utc', 'utcnow', 'datetime', 'is_localized', 'is_naive', 'make_aware', 'make_naive', 'convert_to_utc', 'coerce_datetime', 'parse']
__getattr__ = module_getattr(__name__)

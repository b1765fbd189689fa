"""`airflow.utils.dates`. Part of weft's Airflow compatibility layer."""

from airflow._compat.dates import days_ago, date_range, cron_presets, infer_time_unit, scale_time_units  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['days_ago', 'date_range', 'cron_presets', 'infer_time_unit', 'scale_time_units']
__getattr__ = module_getattr(__name__)

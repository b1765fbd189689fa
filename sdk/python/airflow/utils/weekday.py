"""`airflow.utils.weekday`. Part of weft's Airflow compatibility layer."""

from airflow._compat.models import WeekDay  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['WeekDay']
__getattr__ = module_getattr(__name__)

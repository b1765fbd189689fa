"""Airflow 3's TaskGroup. Part of weft's Airflow compatibility layer."""

from airflow._compat.models import TaskGroup  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['TaskGroup']
__getattr__ = module_getattr(__name__)

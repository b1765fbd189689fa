"""Airflow 3's DAG. Part of weft's Airflow compatibility layer."""

from airflow._compat.models import DAG, dag  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['DAG', 'dag']
__getattr__ = module_getattr(__name__)

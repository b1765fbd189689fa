"""Airflow 3's edge labels. Part of weft's Airflow compatibility layer."""

from airflow._compat.models import Label  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['Label']
__getattr__ = module_getattr(__name__)

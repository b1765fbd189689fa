"""Airflow 3's base classes. Part of weft's Airflow compatibility layer."""

from airflow._compat.secrets import BaseHook  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['BaseHook']
__getattr__ = module_getattr(__name__)

"""Airflow 3's XComArg. Part of weft's Airflow compatibility layer."""

from airflow._compat.models import XComArg  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['XComArg']
__getattr__ = module_getattr(__name__)

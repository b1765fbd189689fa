"""Airflow 3's Param. Part of weft's Airflow compatibility layer."""

from airflow._compat.models import Param, ParamsDict  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['Param', 'ParamsDict']
__getattr__ = module_getattr(__name__)

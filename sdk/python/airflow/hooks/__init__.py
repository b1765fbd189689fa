"""Airflow's hooks package. Part of weft's Airflow compatibility layer."""

from airflow._compat.unsupported import module_getattr

__all__ = []
__getattr__ = module_getattr(__name__)

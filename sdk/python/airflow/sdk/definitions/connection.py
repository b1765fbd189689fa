"""Airflow 3's `airflow.sdk.definitions.connection`. Part of weft's Airflow compatibility layer."""

from airflow._compat.secrets import Connection  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['Connection']
__getattr__ = module_getattr(__name__)

"""LatestOnlyOperator (Airflow 1.x). Part of weft's Airflow compatibility layer."""

from airflow._compat.operators import LatestOnlyOperator  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['LatestOnlyOperator']
__getattr__ = module_getattr(__name__)

"""EmptyOperator. Part of weft's Airflow compatibility layer."""

from airflow._compat.operators import EmptyOperator  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['EmptyOperator']
__getattr__ = module_getattr(__name__)

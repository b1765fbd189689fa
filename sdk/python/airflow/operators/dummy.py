"""DummyOperator (Airflow 2.0-2.3). Part of weft's Airflow compatibility layer."""

from airflow._compat.operators import DummyOperator, EmptyOperator  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['DummyOperator', 'EmptyOperator']
__getattr__ = module_getattr(__name__)

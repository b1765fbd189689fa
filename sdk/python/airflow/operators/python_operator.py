"""Python operators (Airflow 1.x). Part of weft's Airflow compatibility layer."""

from airflow._compat.operators import PythonOperator, BranchPythonOperator, ShortCircuitOperator, PythonVirtualenvOperator  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['PythonOperator', 'BranchPythonOperator', 'ShortCircuitOperator', 'PythonVirtualenvOperator']
__getattr__ = module_getattr(__name__)

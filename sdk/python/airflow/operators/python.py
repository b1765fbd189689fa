"""Python operators (Airflow 2). Part of weft's Airflow compatibility layer."""

from airflow._compat.operators import PythonOperator, BranchPythonOperator, ShortCircuitOperator, PythonVirtualenvOperator, ExternalPythonOperator, BranchPythonVirtualenvOperator, BranchExternalPythonOperator  # noqa: F401
from airflow._compat.context import get_current_context  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['PythonOperator', 'BranchPythonOperator', 'ShortCircuitOperator', 'PythonVirtualenvOperator', 'ExternalPythonOperator', 'BranchPythonVirtualenvOperator', 'BranchExternalPythonOperator', 'get_current_context']
__getattr__ = module_getattr(__name__)

"""BranchDateTimeOperator (Airflow 2). Part of weft's Airflow compatibility layer."""

from airflow._compat.operators import BranchDateTimeOperator  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['BranchDateTimeOperator']
__getattr__ = module_getattr(__name__)

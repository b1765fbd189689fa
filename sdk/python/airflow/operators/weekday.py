"""BranchDayOfWeekOperator (Airflow 2). Part of weft's Airflow compatibility layer."""

from airflow._compat.operators import BranchDayOfWeekOperator  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['BranchDayOfWeekOperator']
__getattr__ = module_getattr(__name__)

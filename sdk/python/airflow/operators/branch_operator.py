"""BaseBranchOperator (Airflow 1.x). Part of weft's Airflow compatibility layer."""

from airflow._compat.operators import BaseBranchOperator  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['BaseBranchOperator']
__getattr__ = module_getattr(__name__)

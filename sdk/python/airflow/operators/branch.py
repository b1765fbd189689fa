"""BaseBranchOperator (Airflow 2). Part of weft's Airflow compatibility layer."""

from airflow._compat.operators import BaseBranchOperator, BranchMixIn  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['BaseBranchOperator', 'BranchMixIn']
__getattr__ = module_getattr(__name__)

"""`airflow.models.baseoperator`. Part of weft's Airflow compatibility layer."""

from airflow._compat.models import BaseOperator, chain, chain_linear, cross_downstream  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['BaseOperator', 'chain', 'chain_linear', 'cross_downstream']
__getattr__ = module_getattr(__name__)

"""`airflow.utils.helpers`. Part of weft's Airflow compatibility layer."""

from airflow._compat.models import chain, cross_downstream  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['chain', 'cross_downstream']
__getattr__ = module_getattr(__name__)

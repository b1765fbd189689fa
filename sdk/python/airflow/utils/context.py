"""`airflow.utils.context`. Part of weft's Airflow compatibility layer."""

from airflow._compat.context import Context  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['Context']
__getattr__ = module_getattr(__name__)

"""`airflow.models.variable`. Part of weft's Airflow compatibility layer."""

from airflow._compat.secrets import Variable  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['Variable']
__getattr__ = module_getattr(__name__)

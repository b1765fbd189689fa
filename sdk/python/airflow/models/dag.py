"""`airflow.models.dag`. Part of weft's Airflow compatibility layer."""

from airflow._compat.models import DAG  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['DAG']
__getattr__ = module_getattr(__name__)

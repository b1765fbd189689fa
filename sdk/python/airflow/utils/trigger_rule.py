"""`airflow.utils.trigger_rule`. Part of weft's Airflow compatibility layer."""

from airflow._compat.models import TriggerRule  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['TriggerRule']
__getattr__ = module_getattr(__name__)

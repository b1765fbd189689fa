"""`airflow.utils.state`. Part of weft's Airflow compatibility layer."""

from airflow._compat.state import State, TaskInstanceState, DagRunState  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['State', 'TaskInstanceState', 'DagRunState']
__getattr__ = module_getattr(__name__)

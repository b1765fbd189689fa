"""TaskFlow decorators (Airflow 2). Part of weft's Airflow compatibility layer."""

from airflow._compat.decorators import task, task_group, setup, teardown  # noqa: F401
from airflow._compat.models import dag  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['task', 'task_group', 'setup', 'teardown', 'dag']
__getattr__ = module_getattr(__name__)

"""Names the compat provider forwards across Airflow versions. Part of weft's Airflow compatibility layer."""

from airflow._compat.models import TriggerRule, BaseOperator, DAG, Param, XComArg, AirflowException, AirflowSkipException, AirflowFailException  # noqa: F401
from airflow._compat.context import Context, get_current_context  # noqa: F401
from airflow._compat import timezone  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['TriggerRule', 'BaseOperator', 'DAG', 'Param', 'XComArg', 'AirflowException', 'AirflowSkipException', 'AirflowFailException', 'Context', 'get_current_context', 'timezone']
__getattr__ = module_getattr(__name__)

"""Airflow's exceptions. Part of weft's Airflow compatibility layer."""

from airflow._compat.models import AirflowException, AirflowSkipException, AirflowFailException, AirflowTaskTimeout, AirflowSensorTimeout, AirflowNotFoundException, AirflowBadRequest, AirflowConfigException, ParamValidationError, DuplicateTaskIdFound, TaskDeferred  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['AirflowException', 'AirflowSkipException', 'AirflowFailException', 'AirflowTaskTimeout', 'AirflowSensorTimeout', 'AirflowNotFoundException', 'AirflowBadRequest', 'AirflowConfigException', 'ParamValidationError', 'DuplicateTaskIdFound', 'TaskDeferred']
__getattr__ = module_getattr(__name__)

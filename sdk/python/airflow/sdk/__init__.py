"""Airflow 3's authoring interface (`from airflow.sdk import DAG, task`). Part of weft's Airflow compatibility layer."""

from airflow._compat.models import DAG, dag, BaseOperator, Param, ParamsDict, Label, chain, chain_linear, cross_downstream, XComArg, TriggerRule, TaskGroup, AirflowException  # noqa: F401
from airflow._compat.decorators import task, task_group, setup, teardown  # noqa: F401
from airflow._compat.context import get_current_context, Context, macros  # noqa: F401
from airflow._compat.secrets import BaseHook, Connection, Variable  # noqa: F401
from airflow._compat.operators import BaseBranchOperator  # noqa: F401
from airflow._compat import timezone  # noqa: F401
from airflow._compat.sensors import PokeReturnValue, BaseSensorOperator  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['PokeReturnValue', 'BaseSensorOperator', 'DAG', 'dag', 'BaseOperator', 'Param', 'ParamsDict', 'Label', 'chain', 'chain_linear', 'cross_downstream', 'XComArg', 'TriggerRule', 'TaskGroup', 'AirflowException', 'task', 'task_group', 'setup', 'teardown', 'get_current_context', 'Context', 'Variable', 'macros', 'BaseBranchOperator', 'timezone', 'BaseHook', 'Connection']
__getattr__ = module_getattr(__name__)

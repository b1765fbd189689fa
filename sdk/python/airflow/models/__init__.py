"""Airflow's models package (`from airflow.models import DAG, BaseOperator`). Part of weft's Airflow compatibility layer."""

from airflow._compat.models import DAG, BaseOperator, Param, ParamsDict, XComArg  # noqa: F401
from airflow._compat.secrets import Connection, Variable  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ['DAG', 'BaseOperator', 'Param', 'ParamsDict', 'XComArg', 'Connection', 'Variable']
__getattr__ = module_getattr(__name__)

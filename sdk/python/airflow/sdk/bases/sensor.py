"""BaseSensorOperator. Part of weft's Airflow compatibility layer."""

from airflow._compat.sensors import BaseSensorOperator, PokeReturnValue  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ["BaseSensorOperator", "PokeReturnValue"]
__getattr__ = module_getattr(__name__)

"""BashSensor. Part of weft's Airflow compatibility layer."""

from airflow._compat.sensors import BashSensor  # noqa: F401
from airflow._compat.unsupported import module_getattr

__all__ = ["BashSensor"]
__getattr__ = module_getattr(__name__)

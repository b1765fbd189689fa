"""`airflow.macros`: the helpers templates reach as `macros`. Part of weft's Airflow compatibility layer."""

from airflow._compat.context import macros as _macros

ds_add = _macros.ds_add
ds_format = _macros.ds_format
datetime = _macros.datetime
timedelta = _macros.timedelta
json = _macros.json
time = _macros.time
uuid = _macros.uuid
random = _macros.random
from airflow._compat.unsupported import module_getattr

__all__ = ['ds_add', 'ds_format', 'datetime', 'timedelta', 'json', 'time', 'uuid', 'random']
__getattr__ = module_getattr(__name__)

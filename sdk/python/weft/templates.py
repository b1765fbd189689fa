"""The template context of a task run (Airflow's `ds`, `ti`, `params`, `dag_run`, ...) built
from the scheduler's TaskContext JSON, and Jinja rendering of templated fields with it.

jinja2 is imported only here, so parsing DAG files does not pay for it."""

import datetime as _dt
import json

from . import secrets
from .operators import XComArg

_environment = None


# A task that pushes results under other keys than `return_value` (`ti.xcom_push`) stores one
# JSON object `{XCOM_KEYS_MARKER: {key: value, ...}}` as its result; readers unpack it here.
XCOM_KEYS_MARKER = "__weft_xcoms__"
# Keys one task may push besides its return value.
XCOM_KEYS_MAX = 64

_MISSING = object()


def xcom_value(stored, key):
    """The value under `key` of a stored result, or _MISSING."""
    if isinstance(stored, dict) and len(stored) == 1 and XCOM_KEYS_MARKER in stored:
        return stored[XCOM_KEYS_MARKER].get(key, _MISSING)
    if key == "return_value":
        return stored
    return _MISSING


class TaskInstance:
    """The `ti` / `task_instance` of the context; `xcom_pull` reads results of the run's
    finished tasks that the scheduler sent along with the task."""

    def __init__(self, task_context, task=None):
        self.dag_id = task_context["dag_id"]
        self.task_id = task_context["task_id"]
        self.run_id = task_context["run_id"]
        self.map_index = task_context.get("map_index", -1)
        self.try_number = task_context.get("try_number", 1)
        self.max_tries = task_context.get("max_tries", 0)
        self.task = task
        self.state = "running"
        self._xcoms = task_context.get("xcoms") or {}
        # Values pushed under other keys during this attempt, sent back with the result.
        self.pushed = {}

    def _is_mapped(self, task_id):
        dag = getattr(self.task, "dag", None)
        task = dag.task_dict.get(task_id) if dag is not None else None
        return task is not None and getattr(task, "mapping", None) is not None

    def xcom_pull(self, task_ids=None, key="return_value", dag_id=None, map_indexes=None,
                  include_prior_dates=False, default=None):
        if key is None:
            key = "return_value"
        if task_ids is None:
            return default
        if isinstance(task_ids, str):
            return self._pull_one(task_ids, key, map_indexes, default)
        # Several tasks: one flat list, by task then by map index, as Airflow's task SDK
        # returns (the product of `task_ids` and `map_indexes`); a mapped task pulled without
        # map indexes gives all its values in that list.
        pulled = []
        for task_id in task_ids:
            value = self._pull_one(task_id, key, map_indexes, default)
            several = map_indexes is not None and not isinstance(map_indexes, int)
            every = map_indexes is None and self._is_mapped(task_id)
            if (several or every) and isinstance(value, list):
                pulled.extend(value)
            else:
                pulled.append(value)
        return pulled

    def _pull_one(self, task_id, key, map_indexes, default):
        if task_id == self.task_id and key in self.pushed:
            return self.pushed[key]
        stored = self._xcoms.get(task_id, _MISSING)
        if stored is _MISSING:
            return default
        if self._is_mapped(task_id) and isinstance(stored, list):
            values = [xcom_value(item, key) for item in stored]
            values = [None if value is _MISSING else value for value in values]
            if map_indexes is None:
                return values
            if isinstance(map_indexes, int):
                return values[map_indexes] if 0 <= map_indexes < len(values) else default
            return [values[index] if 0 <= index < len(values) else default
                    for index in map_indexes]
        value = xcom_value(stored, key)
        if value is _MISSING:
            return default
        if map_indexes is not None and isinstance(value, list) and key == "return_value":
            if isinstance(map_indexes, int):
                return value[map_indexes] if 0 <= map_indexes < len(value) else default
            return [value[index] for index in map_indexes if 0 <= index < len(value)]
        return value

    def xcom_push(self, key, value):
        """Keep `value` under `key` for later tasks of the run (sent back with the result)."""
        if not isinstance(key, str) or not key:
            raise ValueError("an XCom key is a non-empty string")
        if key not in self.pushed and len(self.pushed) >= XCOM_KEYS_MAX:
            raise ValueError(f"a task may push at most {XCOM_KEYS_MAX} XCom keys")
        self.pushed[key] = value
        return ""

    def __repr__(self):
        return f"<TaskInstance {self.dag_id}.{self.task_id} {self.run_id} [{self.map_index}]>"


class DagRun:
    def __init__(self, task_context, logical_date, interval_start, interval_end):
        self.dag_id = task_context["dag_id"]
        self.run_id = task_context["run_id"]
        self.run_type = task_context.get("run_type", "manual")
        self.conf = task_context.get("conf") or {}
        self.logical_date = logical_date
        self.execution_date = logical_date
        self.data_interval_start = interval_start
        self.data_interval_end = interval_end

    def __repr__(self):
        return f"<DagRun {self.dag_id} @ {self.logical_date}: {self.run_id}>"


class _Macros:
    datetime = _dt.datetime
    timedelta = _dt.timedelta
    json = json

    @staticmethod
    def ds_add(ds, days):
        return (_dt.date.fromisoformat(ds) + _dt.timedelta(days=days)).isoformat()

    @staticmethod
    def ds_format(ds, input_format, output_format):
        return _dt.datetime.strptime(ds, input_format).strftime(output_format)


def _parse_time(text):
    if not text:
        return None
    moment = _dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.astimezone(_dt.timezone.utc)


def build_context(task_context, dag=None, task=None):
    """Airflow's template context from the `TaskContext` JSON."""
    logical_date = _parse_time(task_context.get("logical_date"))
    interval_start = _parse_time(task_context.get("data_interval_start")) or logical_date
    interval_end = _parse_time(task_context.get("data_interval_end")) or logical_date
    ds = logical_date.strftime("%Y-%m-%d") if logical_date else None
    ds_nodash = ds.replace("-", "") if ds else None
    ti = TaskInstance(task_context, task)
    context = {
        "dag": dag,
        "task": task,
        "ti": ti,
        "task_instance": ti,
        "run_id": task_context["run_id"],
        "dag_run": DagRun(task_context, logical_date, interval_start, interval_end),
        "params": dict(task_context.get("params") or {}),
        "logical_date": logical_date,
        "execution_date": logical_date,
        "data_interval_start": interval_start,
        "data_interval_end": interval_end,
        "ds": ds,
        "ds_nodash": ds_nodash,
        "ts": logical_date.isoformat() if logical_date else None,
        "ts_nodash": logical_date.strftime("%Y%m%dT%H%M%S") if logical_date else None,
        "ts_nodash_with_tz": (
            logical_date.strftime("%Y%m%dT%H%M%S") + "+0000" if logical_date else None
        ),
        "task_instance_key_str": f"{task_context['dag_id']}__{task_context['task_id']}__{ds_nodash}",
        "map_index": task_context.get("map_index", -1),
        "try_number": task_context.get("try_number", 1),
        "macros": _Macros,
        "timezone": task_context.get("timezone", "UTC"),
        # Variables and connections, fetched only when a template reads them.
        "var": secrets.VarAccessor(),
        "conn": secrets.ConnectionAccessor(),
    }
    if dag is not None:
        context.update(dag.user_defined_macros)
    return context


def environment():
    global _environment
    if _environment is None:
        import jinja2

        # StrictUndefined: a misspelt variable is an error that names it, not an empty string.
        _environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return _environment


def dag_environment(dag):
    """The Jinja environment of `dag`: the shared one, or the DAG's own when it brings
    filters, a search path or other environment options (`jinja_environment`)."""
    env = environment()
    make = getattr(dag, "jinja_environment", None)
    if make is not None:
        return make(env)
    if dag is not None and dag.user_defined_filters:
        env = env.overlay()
        env.filters.update(dag.user_defined_filters)
    return env


def render_string(text, context):
    if "{{" not in text and "{%" not in text:
        return text
    return dag_environment(context.get("dag")).from_string(text).render(**context)


def render_value(value, context):
    """Render every string inside `value` (dicts, lists and tuples are walked)."""
    if isinstance(value, str):
        return render_string(value, context)
    if isinstance(value, dict):
        return {key: render_value(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    if isinstance(value, tuple):
        return tuple(render_value(item, context) for item in value)
    return value


def resolve_arguments(value, context):
    """Replace XComArgs inside `value` with the upstream results they stand for."""
    if isinstance(value, XComArg):
        return value.resolve(context)
    if isinstance(value, dict):
        return {key: resolve_arguments(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_arguments(item, context) for item in value]
    if isinstance(value, tuple):
        return tuple(resolve_arguments(item, context) for item in value)
    return value

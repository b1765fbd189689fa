"""One attempt of an Airflow-style task in weft's Python runner: Airflow's template context
(`ds`, `ti`, `params`, `macros`, `dag_run`, ...), Jinja rendering of `template_fields`
(template files by extension included), callbacks, `multiple_outputs` and
`get_current_context()`."""

import datetime as _dt
import json
import logging
import os
import random
import time
import traceback
import uuid

from weft import _context
from weft.exceptions import TaskFailException, TaskSkipException
from weft.operators import XComArg as WeftXComArg

from .models import AirflowException, MappedArgument, Param, ParamsDict, _DagParamRef
from .secrets import Variable, template_accessors  # noqa: F401 - Variable is imported from here

log = logging.getLogger("airflow.task")

# Nested operators or values rendered deeper than this are left as they are.
RENDER_DEPTH_MAX = 32


def _pendulum(moment):
    if moment is None:
        return None
    try:
        import pendulum
    except ImportError:
        return moment
    return pendulum.instance(moment)


def _ds_add(ds, days):
    if not days:
        return str(ds)
    return (_dt.date.fromisoformat(str(ds)) + _dt.timedelta(days=days)).isoformat()


def _ds_format(ds, input_format, output_format):
    return _dt.datetime.strptime(str(ds), input_format).strftime(output_format)


def _datetime_diff_for_humans(dt, since=None):
    import pendulum

    return pendulum.instance(dt).diff_for_humans(since and pendulum.instance(since))


class _Macros:
    """`macros` in templates: Airflow's helpers and the modules it exposes."""

    datetime = _dt.datetime
    timedelta = _dt.timedelta
    json = json
    time = time
    uuid = uuid
    random = random
    ds_add = staticmethod(_ds_add)
    ds_format = staticmethod(_ds_format)
    datetime_diff_for_humans = staticmethod(_datetime_diff_for_humans)

    def __getattr__(self, name):
        if name == "dateutil":
            import dateutil  # noqa: F401 - Airflow exposes the module

            return dateutil
        raise AttributeError(f"macros has no `{name}`")


macros = _Macros()


class Context(dict):
    """The template context; a dict, as in Airflow."""


def _task_params(task, conf):
    params = ParamsDict()
    source = task.params if isinstance(task.params, ParamsDict) else ParamsDict(task.params or {})
    for name in source:
        params[name] = source._params.get(name, source[name])
    if isinstance(conf, dict):
        for name, value in conf.items():
            if name in params._params:
                params._params[name] = Param(value, **params._params[name].schema)
            dict.__setitem__(params, name, value)
    params.validate()
    return params


def airflow_context(context, task):
    """Airflow's context from weft's: same keys plus what Airflow 3 adds, with pendulum dates."""
    result = Context(context)
    ti = context["ti"]
    ti.task = task
    ti.operator = type(task).__name__
    ti.hostname = os.uname().nodename
    ti.log = log
    ti.xcom_push = _xcom_push(ti)
    dag_run = context["dag_run"]
    for name in ("logical_date", "data_interval_start", "data_interval_end"):
        result[name] = _pendulum(context[name])
    dag_run.logical_date = result["logical_date"]
    dag_run.data_interval_start = result["data_interval_start"]
    dag_run.data_interval_end = result["data_interval_end"]
    dag_run.run_after = result["logical_date"]
    dag_run.start_date = _pendulum(_dt.datetime.now(_dt.timezone.utc))
    dag_run.state = "running"
    dag_run.triggered_by = "test" if dag_run.run_type == "manual" else dag_run.run_type
    result["execution_date"] = result["logical_date"]
    _add_legacy_dates(result)
    result["params"] = _task_params(task, dag_run.conf)
    result["macros"] = macros
    result["var"], result["conn"] = template_accessors()
    result["task"] = task
    result["inlets"] = []
    result["outlets"] = []
    result["expanded_ti_count"] = None
    result["prev_data_interval_start_success"] = None
    result["prev_data_interval_end_success"] = None
    result["prev_start_date_success"] = None
    result["prev_end_date_success"] = None
    result["test_mode"] = False
    result["templates_dict"] = None
    user_macros = getattr(task.dag, "user_defined_macros", None) or {}
    result.update(user_macros)
    return result


def _add_legacy_dates(context):
    """Airflow 1.x/2.x template names that Airflow 3 dropped and older files still use."""
    logical = context["logical_date"]
    if logical is None:
        return
    for name, moment in (("yesterday", logical - _dt.timedelta(days=1)),
                         ("tomorrow", logical + _dt.timedelta(days=1)),
                         ("next", context["data_interval_end"] or logical)):
        context[f"{name}_ds"] = moment.strftime("%Y-%m-%d")
        context[f"{name}_ds_nodash"] = moment.strftime("%Y%m%d")
    context["next_execution_date"] = context["data_interval_end"]


def _xcom_push(ti):
    push = type(ti).xcom_push

    def xcom_push(key, value, **_ignored):
        push(ti, key, value)
        # Used inside templates (`{{ ti.xcom_push(...) }}`), where it must print nothing.
        return ""

    return xcom_push


def get_current_context():
    """The context of the task running now (Airflow's `get_current_context`)."""
    if not _context._current_task_context:
        raise AirflowException(
            "Current context was requested but no context was found! Are you running within a "
            "task?"
        )
    return _context._current_task_context[-1]


# ---- rendering -----------------------------------------------------------------------------


def _environment(task):
    from weft.templates import dag_environment

    return dag_environment(task.dag)


def render_template(task, content, context, depth=0):
    """Render `content` as Airflow does: strings as Jinja (a string ending in one of the
    operator's `template_ext` names a template file), containers item by item, XComArgs and
    mapped arguments replaced by their values, nested objects by their own template_fields."""
    if depth > RENDER_DEPTH_MAX:
        return content
    if isinstance(content, str):
        env = _environment(task)
        extensions = tuple(getattr(task, "template_ext", ()) or ())
        if extensions and content.strip().endswith(extensions):
            return env.get_template(content.strip()).render(**context)
        if "{{" not in content and "{%" not in content:
            return content
        return env.from_string(content).render(**context)
    if isinstance(content, (WeftXComArg, MappedArgument, _DagParamRef)):
        return content.resolve(context)
    if isinstance(content, tuple):
        if type(content) is not tuple:  # a namedtuple keeps its type
            return type(content)(*(render_template(task, item, context, depth + 1) for item in content))
        return tuple(render_template(task, item, context, depth + 1) for item in content)
    if isinstance(content, list):
        return [render_template(task, item, context, depth + 1) for item in content]
    if isinstance(content, dict):
        return {key: render_template(task, item, context, depth + 1) for key, item in content.items()}
    if isinstance(content, (set, frozenset)):
        return {render_template(task, item, context, depth + 1) for item in content}
    fields = getattr(type(content), "template_fields", None)
    if fields and not isinstance(content, type) and not hasattr(content, "task_id"):
        for name in fields:
            setattr(content, name, render_template(task, getattr(content, name, None), context, depth + 1))
    return content


# ---- one attempt ---------------------------------------------------------------------------


def _call_callbacks(callbacks, context, what):
    for callback in callbacks or []:
        try:
            callback(context)
        except Exception:  # Airflow logs a failing callback and carries on
            log.error("%s callback failed:\n%s", what, traceback.format_exc())


def _push_multiple_outputs(task, result, context):
    if not getattr(task, "multiple_outputs", False) or result is None:
        return
    if not isinstance(result, dict):
        raise TypeError(f"Returned output was type {type(result)} expected dictionary for multiple_outputs")
    for key, value in result.items():
        if not isinstance(key, str):
            raise TypeError(
                "Returned dictionary keys must be strings when using multiple_outputs, found "
                f"{key} ({type(key)}) instead"
            )
        context["ti"].xcom_push(key=key, value=value)


def run_operator(task, weft_context):
    """Run one attempt of `task` (the operator in the DAG) and return its result."""
    if getattr(task, "is_mapped", False) and hasattr(task, "build_instance"):
        probe = airflow_context(weft_context, task)
        operator = task.build_instance(probe)
    else:
        operator = task
    operator = operator.prepare_for_execution()
    context = airflow_context(weft_context, operator)
    _context._current_task_context.append(context)
    try:
        try:
            operator.render_template_fields(context)
            _call_callbacks(operator.on_execute_callback, context, "on_execute")
            operator.pre_execute(context)
            result = operator.execute(context)
            operator.post_execute(context, result)
            _push_multiple_outputs(operator, result, context)
            result = operator.normalize_result(result, context) if hasattr(operator, "normalize_result") else result
        except TaskSkipException:
            context["ti"].state = "skipped"
            _call_callbacks(operator.on_skipped_callback, context, "on_skipped")
            raise
        except BaseException as error:
            context["exception"] = error
            ti = context["ti"]
            retrying = not isinstance(error, TaskFailException) and ti.try_number < ti.max_tries
            if retrying:
                ti.state = "up_for_retry"
                _call_callbacks(operator.on_retry_callback, context, "on_retry")
            else:
                ti.state = "failed"
                _call_callbacks(operator.on_failure_callback, context, "on_failure")
            raise
        context["ti"].state = "success"
        _call_callbacks(operator.on_success_callback, context, "on_success")
        return result
    finally:
        _context._current_task_context.pop()

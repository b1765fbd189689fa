"""The DAG objects in their serialized form (`DagSpec` JSON, schema version 1, as
`core/src/spec.rs` defines it)."""

import datetime as _dt
import json

from .exceptions import BadArgumentError
from .schedule import timedelta_ms, timestamp_json


def json_value(value, *, what):
    """`value` if it is plain JSON (tuples become lists); a clear error otherwise."""
    try:
        return json.loads(json.dumps(value, allow_nan=False, default=_json_default))
    except (TypeError, ValueError) as error:
        raise BadArgumentError(f"{what} is not JSON: {error}") from None


def _json_default(value):
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON-serializable")


def _display_name(value):
    if value is None:
        return None
    return getattr(value, "__qualname__", None) or type(value).__name__


# What `executor_config={"isolation": ...}` may ask for: the node's default, or the full
# sandbox. A task cannot lower the node's isolation.
TASK_ISOLATIONS = ("user", "full")


def _isolation(task):
    config = getattr(task, "executor_config", None)
    if not isinstance(config, dict) or "isolation" not in config:
        return None
    isolation = config["isolation"]
    if isolation not in TASK_ISOLATIONS:
        raise BadArgumentError(
            f"task `{task.task_id}`: executor_config isolation is {isolation!r}: use \"full\" "
            f"for the full sandbox or \"user\" for the node's default; a task cannot lower "
            f"the node's isolation"
        )
    return isolation


def task_to_json(task):
    extra = {}
    for name in ("task_display_name", "max_active_tis_per_dag", "run_as_user", "email"):
        value = getattr(task, name, None)
        if value is not None:
            extra[name] = json_value(value, what=f"`{name}` of task `{task.task_id}`")
    for name in ("on_failure_callback", "on_success_callback", "on_retry_callback",
                 "on_execute_callback", "on_skipped_callback"):
        callback = getattr(task, name, None)
        if callback is not None:
            extra[name] = _display_name(callback)
    isolation = _isolation(task)
    if isolation is not None:
        extra["isolation"] = isolation
    extra.update(json_value(task.extra_json(), what=f"extra of task `{task.task_id}`"))
    owner = task.owner
    spec = {
        "task_id": task.task_id,
        "operator": getattr(task, "operator_name", type(task).__name__),
        "kind": task.task_kind(),
        "upstream": list(task.upstream_task_ids),
        "trigger_rule": task.trigger_rule,
        "retries": int(task.retries or 0),
        "retry_delay_ms": timedelta_ms(task.retry_delay, what="retry_delay"),
        "retry_exponential_backoff": bool(task.retry_exponential_backoff),
        "max_retry_delay_ms": timedelta_ms(task.max_retry_delay, what="max_retry_delay"),
        "execution_timeout_ms": timedelta_ms(task.execution_timeout, what="execution_timeout"),
        "priority_weight": int(task.priority_weight),
        "weight_rule": task.weight_rule,
        "pool": str(task.pool or "default_pool"),
        "pool_slots": int(task.pool_slots),
        "depends_on_past": bool(task.depends_on_past),
        "wait_for_downstream": bool(task.wait_for_downstream),
        "task_group": task.task_group.group_id if task.task_group is not None else None,
        "owner": None if owner is None else str(owner),
        "doc_md": task.doc_md or task.doc,
        "flow": task.flow,
        "role": getattr(task, "role", "normal"),
        "template_fields": task.template_field_names(),
        "mapping": task.mapping,
        "extra": extra,
    }
    # The worker queue (Airflow's `queue=`): only a worker serving it runs the task. Left out
    # when unset, so that a DAG without queues keeps its version.
    queue = getattr(task, "queue", None)
    if queue is not None:
        if not isinstance(queue, str) or not queue:
            raise ValueError(f"task `{task.task_id}`: queue must be a non-empty string")
        spec["queue"] = queue
    return spec


def dag_to_json(dag):
    owner = dag.default_args.get("owner")
    return {
        "schema_version": 1,
        "dag_id": dag.dag_id,
        "fileloc": dag.fileloc,
        "description": dag.description,
        "doc_md": dag.doc_md,
        "display_name": dag.dag_display_name,
        "owner": None if owner is None else str(owner),
        "tags": list(dag.tags),
        "schedule": dag._schedule_json,
        "timezone": dag.timezone,
        "start_date": timestamp_json(dag.start_date, what="start_date"),
        "end_date": timestamp_json(dag.end_date, what="end_date"),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "max_active_tasks": dag.max_active_tasks,
        "dagrun_timeout_ms": timedelta_ms(dag.dagrun_timeout, what="dagrun_timeout"),
        "is_paused_upon_creation": dag.is_paused_upon_creation,
        "params": dag.params_json(),
        "task_groups": [group.to_json() for group in dag.task_groups.values()],
        "tasks": [task_to_json(task) for task in dag.task_dict.values()],
    }

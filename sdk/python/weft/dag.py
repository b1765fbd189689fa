"""The DAG: a named set of tasks with a schedule, usable as a context manager, a plain object
or through the `@dag` decorator, and its serialized form (`DagSpec` JSON, schema version 1)."""

import datetime as _dt
import functools
import inspect
import re

from . import _context
from .exceptions import BadArgumentError, CycleError, DuplicateTaskIdError
from .params import Param, params_to_json
from .schedule import resolve_timezone, schedule_to_json, timedelta_ms, timestamp_json

SCHEMA_VERSION = 1

# Airflow's rule for DAG, task and group ids.
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+$")
ID_LENGTH_MAX = 250

_UNSET = object()


def validate_id(value, what):
    if not isinstance(value, str) or not value:
        raise BadArgumentError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > ID_LENGTH_MAX:
        raise BadArgumentError(f"{what} `{value[:40]}...` is longer than {ID_LENGTH_MAX} characters")
    if not ID_PATTERN.match(value):
        raise BadArgumentError(
            f"{what} `{value}` may only contain letters, digits, dashes, dots and underscores"
        )


class DAG:
    """A workflow: `with DAG("etl", schedule="@daily", start_date=datetime(2024, 1, 1)):`."""

    def __init__(
        self,
        dag_id,
        description=None,
        schedule=_UNSET,
        *,
        schedule_interval=_UNSET,
        start_date=None,
        end_date=None,
        timezone=None,
        catchup=False,
        default_args=None,
        tags=None,
        max_active_runs=16,
        max_active_tasks=16,
        concurrency=None,
        dagrun_timeout=None,
        doc_md=None,
        params=None,
        is_paused_upon_creation=None,
        dag_display_name=None,
        user_defined_macros=None,
        user_defined_filters=None,
        template_searchpath=None,
        data_intervals=None,
        **other_arguments,
    ):
        validate_id(dag_id, "dag_id")
        self.dag_id = dag_id
        self.description = description
        self.default_args = dict(default_args or {})
        if schedule is _UNSET:
            schedule = None if schedule_interval is _UNSET else schedule_interval
        self.schedule = schedule
        self._schedule_json = schedule_to_json(schedule, data_intervals)
        self.start_date = start_date if start_date is not None else self.default_args.get("start_date")
        self.end_date = end_date if end_date is not None else self.default_args.get("end_date")
        timestamp_json(self.start_date, what="start_date")
        timestamp_json(self.end_date, what="end_date")
        self.timezone = self._resolve_timezone(timezone)
        self.catchup = bool(catchup)
        self.tags = [str(tag) for tag in (tags or [])]
        self.max_active_runs = int(max_active_runs)
        self.max_active_tasks = int(concurrency if concurrency is not None else max_active_tasks)
        self.dagrun_timeout = dagrun_timeout
        timedelta_ms(dagrun_timeout, what="dagrun_timeout")
        self.doc_md = doc_md
        self.params = dict(params or {})
        self.is_paused_upon_creation = is_paused_upon_creation
        self.dag_display_name = dag_display_name
        self.user_defined_macros = dict(user_defined_macros or {})
        self.user_defined_filters = dict(user_defined_filters or {})
        self.template_searchpath = template_searchpath
        # Airflow arguments weft accepts but does not act on yet (callbacks, access control).
        self.other_arguments = other_arguments
        self.task_dict = {}
        self.task_groups = {}
        # (upstream_id, downstream_id) -> line of the DAG file that added the edge, so a cycle
        # is reported at the statement that closed it.
        self.edge_lines = {}
        self.fileloc = None
        self.creation_line = _context.caller_line()
        _context.record_dag(self)

    def _resolve_timezone(self, timezone):
        if timezone is not None:
            return resolve_timezone(timezone)
        start = self.start_date
        if isinstance(start, _dt.datetime) and start.tzinfo is not None:
            return resolve_timezone(start.tzinfo)
        return "UTC"

    def __repr__(self):
        return f"<DAG {self.dag_id}>"

    def __enter__(self):
        _context.push(self)
        return self

    def __exit__(self, *exc_info):
        _context.pop(self)
        return False

    @property
    def tasks(self):
        return list(self.task_dict.values())

    @property
    def task_ids(self):
        return list(self.task_dict)

    def get_task(self, task_id):
        try:
            return self.task_dict[task_id]
        except KeyError:
            raise KeyError(f"dag `{self.dag_id}` has no task `{task_id}`") from None

    def has_task(self, task_id):
        return task_id in self.task_dict

    def add_task(self, task):
        if task.task_id in self.task_dict:
            raise DuplicateTaskIdError(
                f"task id `{task.task_id}` is already used in dag `{self.dag_id}`; give each "
                "task a unique task_id"
            )
        self.task_dict[task.task_id] = task

    def add_task_group(self, group):
        if group.group_id in self.task_groups:
            raise DuplicateTaskIdError(
                f"task group `{group.group_id}` is already used in dag `{self.dag_id}`"
            )
        self.task_groups[group.group_id] = group

    def record_edge(self, upstream_id, downstream_id, line):
        self.edge_lines.setdefault((upstream_id, downstream_id), line)

    def find_cycle(self):
        """The task ids of one cycle (first id repeated at the end), or None."""
        white, grey, black = 0, 1, 2
        color = {task_id: white for task_id in self.task_dict}
        for root in self.task_dict:
            if color[root] != white:
                continue
            path = [root]
            iterators = [iter(self.task_dict[root].downstream_task_ids)]
            color[root] = grey
            while iterators:
                child = next(iterators[-1], None)
                if child is None:
                    color[path.pop()] = black
                    iterators.pop()
                    continue
                if child not in color:
                    continue
                if color[child] == grey:
                    return path[path.index(child):] + [child]
                if color[child] == white:
                    color[child] = grey
                    path.append(child)
                    iterators.append(iter(self.task_dict[child].downstream_task_ids))
        return None

    def check_cycle(self):
        cycle = self.find_cycle()
        if cycle is None:
            return
        lines = [self.edge_lines.get(edge) for edge in zip(cycle, cycle[1:])]
        known = [line for line in lines if line is not None]
        raise CycleError(
            f"dag `{self.dag_id}` has a cycle: {' -> '.join(cycle)}; remove one of these "
            "dependencies",
            line=max(known) if known else self.creation_line,
        )

    def to_json(self):
        """The serialized DAG (`DagSpec`)."""
        from .serialize import dag_to_json

        return dag_to_json(self)

    def params_json(self):
        return params_to_json(self.params)

    def __hash__(self):
        return id(self)


def dag(dag_id=None, **dag_arguments):
    """Decorate a function that defines tasks; calling it builds and returns the DAG. The
    function's parameters become DAG params (their defaults are the params' defaults)."""
    if callable(dag_id) and not dag_arguments:
        return dag()(dag_id)

    def decorate(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def build(*args, **kwargs):
            arguments = dict(dag_arguments)
            params = dict(arguments.pop("params", None) or {})
            bound = signature.bind_partial(*args, **kwargs)
            bound.apply_defaults()
            for name, value in bound.arguments.items():
                params.setdefault(name, value if isinstance(value, Param) else Param(value))
            arguments.setdefault("doc_md", inspect.getdoc(function))
            with DAG(dag_id or function.__name__, params=params, **arguments) as built:
                function(*args, **kwargs)
            return built

        return build

    return decorate

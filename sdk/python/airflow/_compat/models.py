"""Airflow's DAG, BaseOperator, XComArg, TaskGroup, Param and edge helpers on top of weft's
classes: what a DAG file builds while it is imported, and how one task attempt runs in the
Python task runner (template rendering, callbacks, XCom pushes, mapped arguments)."""

import copy
import datetime as _dt
import enum
import functools
import inspect
import itertools
import logging
import os

from weft import _context
from weft import operators as weft_operators
from weft.dag import DAG as WeftDAG
from weft.exceptions import BadArgumentError, TaskFailException, TaskSkipException
from weft.operators import XComArg as WeftXComArg
from weft.params import Param as WeftParam
from weft.task_group import TaskGroup as WeftTaskGroup

from .unsupported import unsupported

_UNSET = object()

# Largest number of instances a mapped task may expand into from literal lists.
MAPPED_LENGTH_MAX = 10_000


# ---- exceptions ---------------------------------------------------------------------------


class AirflowException(Exception):
    """Base of Airflow's exceptions; a task raising it fails (and may retry)."""

    status_code = 500


class AirflowSkipException(AirflowException, TaskSkipException):
    """Raise from a task to mark it skipped."""


class AirflowFailException(AirflowException, TaskFailException):
    """Raise from a task to fail it at once, without retries."""


class AirflowTaskTimeout(AirflowException):
    pass


class AirflowSensorTimeout(AirflowException):
    pass


class AirflowNotFoundException(AirflowException):
    pass


class AirflowBadRequest(AirflowException):
    pass


class AirflowConfigException(AirflowException):
    pass


class ParamValidationError(AirflowException):
    pass


class DuplicateTaskIdFound(AirflowException):
    pass


class TaskDeferred(BaseException):
    """Deferring to a trigger: weft has no triggerer, so raising this fails the task."""


# ---- trigger rules and weekdays ----------------------------------------------------------


class TriggerRule(str, enum.Enum):
    ALL_SUCCESS = "all_success"
    ALL_FAILED = "all_failed"
    ALL_DONE = "all_done"
    ALL_DONE_MIN_ONE_SUCCESS = "all_done_min_one_success"
    ALL_DONE_SETUP_SUCCESS = "all_done_setup_success"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    ONE_DONE = "one_done"
    NONE_FAILED = "none_failed"
    NONE_SKIPPED = "none_skipped"
    ALWAYS = "always"
    NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"
    ALL_SKIPPED = "all_skipped"
    # Airflow 2 spellings, kept by the files that still use them.
    NONE_FAILED_OR_SKIPPED = "none_failed_or_skipped"
    DUMMY = "dummy"

    def __str__(self):
        return self.value

    @classmethod
    def is_valid(cls, value):
        return value in {member.value for member in cls}

    @classmethod
    def all_triggers(cls):
        return {member.value for member in cls}


# Old names of trigger rules and the rule they mean now.
_TRIGGER_RULE_ALIASES = {"none_failed_or_skipped": "none_failed_min_one_success", "dummy": "always"}


def trigger_rule_value(rule):
    value = str(getattr(rule, "value", rule))
    value = _TRIGGER_RULE_ALIASES.get(value, value)
    if value == "all_done_min_one_success":
        raise unsupported("trigger_rule `all_done_min_one_success`")
    return value


class WeekDay(enum.IntEnum):
    MONDAY = 1
    TUESDAY = 2
    WEDNESDAY = 3
    THURSDAY = 4
    FRIDAY = 5
    SATURDAY = 6
    SUNDAY = 7

    @classmethod
    def get_weekday_number(cls, week_day_str):
        sanitized = week_day_str.upper()
        if sanitized not in cls.__members__:
            raise AttributeError(f'Invalid Week Day passed: "{week_day_str}"')
        return cls[sanitized]

    @classmethod
    def convert(cls, day):
        if isinstance(day, WeekDay):
            return {day}
        if isinstance(day, str):
            return {cls.get_weekday_number(day)}
        days = set()
        for item in day:
            days |= cls.convert(item)
        return days


# ---- params --------------------------------------------------------------------------------


class Param(WeftParam):
    """A run parameter with a JSON-schema; any schema keyword Airflow accepts is kept."""

    def __init__(self, default=_UNSET, description=None, **schema):
        super().__init__(description=description)
        self.value = None if default is _UNSET else default
        self.has_default = default is not _UNSET
        self.schema = dict(schema)

    def resolve(self, value=_UNSET, suppress_exception=False):
        final = self.value if value is _UNSET else value
        if value is _UNSET and not self.has_default:
            if suppress_exception:
                return None
            raise ParamValidationError("No value passed and Param has no default value")
        validate_param(final, self.schema, suppress_exception)
        return final

    def dump(self):
        return {"value": self.value, "description": self.description, "schema": self.schema}

    def serialize(self):
        return self.dump()


def validate_param(value, schema, suppress_exception=False):
    """Check `value` against a JSON schema, as Airflow does (jsonschema, with formats)."""
    if not schema:
        return
    try:
        import jsonschema
    except ImportError:  # the schema is then only checked by the UI form
        return
    try:
        jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())
    except (jsonschema.ValidationError, jsonschema.SchemaError) as error:
        if not suppress_exception:
            raise ParamValidationError(f"Invalid input for param: {error.message}") from None


class ParamsDict(dict):
    """`params` as Airflow hands it out: values on read, `Param` objects kept for validation."""

    def __init__(self, values=None, suppress_exception=False):
        super().__init__()
        self._params = {}
        for name, value in (values or {}).items():
            self[name] = value

    def __setitem__(self, name, value):
        if isinstance(value, WeftParam):
            self._params[name] = value
            value = value.value
        super().__setitem__(name, value)

    def get_param(self, name):
        return self._params.get(name) or Param(self[name])

    def validate(self):
        """Every param's value checked against its schema; a Param without a default that
        nothing set is an error, as in Airflow."""
        for name, param in self._params.items():
            if isinstance(param, Param):
                try:
                    param.resolve(self[name] if param.has_default else _UNSET)
                except ParamValidationError as error:
                    raise ParamValidationError(f"Invalid input for param {name}: {error}") from None
        return dict(self)

    def dump(self):
        return dict(self)

    def update(self, other=(), **more):
        for name, value in dict(other, **more).items():
            self[name] = value


# ---- DAG -----------------------------------------------------------------------------------

# DAG arguments Airflow accepts that change nothing about how a run goes.
_DAG_DISPLAY_ARGUMENTS = frozenset(
    [
        "access_control", "owner_links", "auto_register", "default_view", "orientation",
        "max_consecutive_failed_dag_runs", "disable_bundle_versioning", "allowed_run_types",
        "dag_display_name", "is_paused_upon_creation", "doc_md", "description", "tags",
        "fileloc", "full_filepath", "safe_dag_id",
    ]
)


class DAG(WeftDAG):
    """Airflow's DAG (`airflow.sdk.DAG`, `airflow.models.DAG`, `from airflow import DAG`)."""

    def __init__(
        self,
        dag_id=None,
        description=None,
        schedule=_UNSET,
        *,
        schedule_interval=_UNSET,
        timetable=None,
        start_date=None,
        end_date=None,
        template_searchpath=None,
        template_undefined=None,
        user_defined_macros=None,
        user_defined_filters=None,
        default_args=None,
        max_active_tasks=16,
        max_active_runs=16,
        concurrency=None,
        dagrun_timeout=None,
        sla_miss_callback=None,
        catchup=False,
        on_success_callback=None,
        on_failure_callback=None,
        doc_md=None,
        params=None,
        jinja_environment_kwargs=None,
        render_template_as_native_obj=False,
        tags=None,
        dag_display_name=None,
        fail_fast=False,
        deadline=None,
        timezone=None,
        **other_arguments,
    ):
        unknown = sorted(set(other_arguments) - _DAG_DISPLAY_ARGUMENTS)
        if unknown:
            raise TypeError(f"DAG.__init__() got unexpected keyword argument(s) {', '.join(unknown)}")
        if dag_id is None:
            raise TypeError("DAG.__init__() missing required argument: 'dag_id'")
        if timetable is not None:
            raise unsupported("timetable objects (`timetable=`)", "use a cron string or timedelta")
        if on_success_callback or on_failure_callback:
            raise unsupported("DAG-level on_success_callback / on_failure_callback",
                              "put the callback on the tasks instead")
        if sla_miss_callback is not None:
            raise unsupported("sla_miss_callback")
        if deadline is not None:
            raise unsupported("deadline alerts (`deadline=`)")
        if fail_fast:
            raise unsupported("fail_fast=True")
        data_intervals = None
        if schedule is _UNSET and schedule_interval is not _UNSET:
            # Files that still say `schedule_interval` were written for Airflow 2, whose runs
            # cover a data interval that ends when the run is due.
            schedule = schedule_interval
            data_intervals = True
        if schedule is _UNSET:
            schedule = None
        schedule = _schedule_value(schedule)
        default_args = dict(default_args or {})
        self.template_undefined = template_undefined
        self.jinja_environment_kwargs = dict(jinja_environment_kwargs or {})
        self.render_template_as_native_obj = bool(render_template_as_native_obj)
        self._jinja_environment = None
        display = {key: other_arguments.get(key) for key in ("is_paused_upon_creation",)}
        super().__init__(
            dag_id,
            description,
            schedule,
            start_date=start_date,
            end_date=end_date,
            timezone=timezone,
            catchup=catchup,
            default_args=default_args,
            tags=tags,
            max_active_runs=max_active_runs,
            max_active_tasks=max_active_tasks,
            concurrency=concurrency,
            dagrun_timeout=dagrun_timeout,
            doc_md=doc_md,
            params=ParamsDict(params or {}),
            dag_display_name=dag_display_name,
            user_defined_macros=user_defined_macros,
            user_defined_filters=user_defined_filters,
            template_searchpath=template_searchpath,
            data_intervals=data_intervals,
            **display,
        )
        self.params = ParamsDict(params or {})
        if schedule is not None:
            try:
                self.params.validate()
            except ParamValidationError:
                raise BadArgumentError(
                    f"Dag {dag_id!r} is not allowed to define a Schedule, as there are required "
                    "params without default values, or the default values are not valid."
                ) from None
        self.owner_links = other_arguments.get("owner_links")
        self.access_control = other_arguments.get("access_control")

    def params_json(self):
        from weft.params import params_to_json

        return params_to_json(
            {name: self.params._params.get(name, value) for name, value in self.params.items()}
        )

    # What Airflow's DAG objects answer that DAG files read.

    @property
    def folder(self):
        return os.path.dirname(self.fileloc) if self.fileloc else os.getcwd()

    @property
    def owner(self):
        return ", ".join(sorted({str(task.owner) for task in self.tasks if task.owner}))

    @property
    def task_count(self):
        return len(self.task_dict)

    @property
    def timetable_summary(self):
        return str(self.schedule)

    @property
    def roots(self):
        return [task for task in self.tasks if not task.upstream_task_ids]

    @property
    def leaves(self):
        return [task for task in self.tasks if not task.downstream_task_ids]

    def test(self, *args, **kwargs):
        raise AirflowException("DAG.test() runs under Airflow only; use `weft dags test DAG_ID`")

    def jinja_environment(self, shared):
        """The Jinja environment of this DAG's templates (Airflow's `get_template_env`)."""
        if self._jinja_environment is not None:
            return self._jinja_environment
        import jinja2
        import jinja2.nativetypes

        searchpath = [self.folder]
        extra = self.template_searchpath
        if isinstance(extra, str):
            extra = [extra]
        searchpath.extend(extra or [])
        options = {
            "loader": jinja2.FileSystemLoader(searchpath),
            "undefined": self.template_undefined or jinja2.StrictUndefined,
            "extensions": ["jinja2.ext.do"],
            "cache_size": 0,
        }
        options.update(self.jinja_environment_kwargs)
        kind = jinja2.nativetypes.NativeEnvironment if self.render_template_as_native_obj else jinja2.Environment
        env = kind(**options)
        env.filters.update(_AIRFLOW_FILTERS)
        env.filters.update(self.user_defined_filters)
        self._jinja_environment = env
        return env


def _schedule_value(schedule):
    if isinstance(schedule, str) and schedule.strip() == "@continuous":
        raise unsupported("schedule `@continuous`")
    if schedule is None or isinstance(schedule, (str, _dt.timedelta)):
        return schedule
    try:
        from dateutil.relativedelta import relativedelta
    except ImportError:
        relativedelta = ()
    if relativedelta and isinstance(schedule, relativedelta):
        raise unsupported("relativedelta schedules", "use a cron string")
    kind = type(schedule).__name__
    raise unsupported(f"schedule of type `{kind}`", "use None, a cron string, a preset or a timedelta")


def _ds_filter(value):
    return value.strftime("%Y-%m-%d") if value is not None else None


def _ts_filter(value):
    return value.isoformat() if value is not None else None


_AIRFLOW_FILTERS = {
    "ds": _ds_filter,
    "ds_nodash": lambda value: value.strftime("%Y%m%d") if value is not None else None,
    "ts": _ts_filter,
    "ts_nodash": lambda value: value.strftime("%Y%m%dT%H%M%S") if value is not None else None,
    "ts_nodash_with_tz": lambda value: (
        value.isoformat().replace("-", "").replace(":", "") if value is not None else None
    ),
}


def dag(dag_id="", __dag_function=None, **dag_arguments):
    """`@dag` / `@dag(...)`: calling the decorated function builds and returns the DAG; its
    parameters become DAG params."""
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
                if isinstance(value, WeftParam):
                    params[name] = value
                else:
                    params.setdefault(name, value)
            if function.__doc__ and "doc_md" not in arguments:
                arguments["doc_md"] = inspect.cleandoc(function.__doc__)
            with DAG(dag_id or function.__name__, params=params, **arguments) as built:
                call_args = {name: _DagParamRef(built, name) for name in bound.arguments}
                function(**call_args)
            return built

        return build

    return decorate


class _DagParamRef:
    """A `@dag` function's parameter: a template for the param's value when used in a task."""

    def __init__(self, dag, name):
        self.dag = dag
        self.name = name

    def resolve(self, context):
        return context["params"].get(self.name)

    def __str__(self):
        return "{{ params['%s'] }}" % self.name


# ---- dependencies: XComArg, Label, chain ---------------------------------------------------


class XComArg(WeftXComArg):
    """The future result of a task (Airflow's `XComArg`, `task.output`)."""

    def __init__(self, operator, key="return_value"):
        super().__init__(operator, key or "return_value")

    def __getitem__(self, key):
        return XComArg(self.operator, key)

    def __str__(self):
        key = f", key='{self.key}'" if self.key else ""
        return (
            f"{{{{ task_instance.xcom_pull(task_ids='{self.operator.task_id}', "
            f"dag_id='{self.operator.dag.dag_id}'{key}) }}}}"
        )

    def __iter__(self):
        raise TypeError("'XComArg' object is not iterable")

    def __eq__(self, other):
        return isinstance(other, XComArg) and (self.operator, self.key) == (other.operator, other.key)

    def __hash__(self):
        return hash((id(self.operator), self.key))

    @property
    def output(self):
        return self

    def map(self, function):
        return MapXComArg(self, function)

    def zip(self, *others, fillvalue=None):
        raise unsupported("XComArg.zip()")

    def concat(self, *others):
        raise unsupported("XComArg.concat()")

    def resolve(self, context):
        consumer = context.get("task")
        mapped_group = _mapped_group(self.operator)
        if mapped_group is not None and consumer is not None and _mapped_group(consumer) is mapped_group:
            # Inside a mapped task group each instance reads its own sibling's result.
            return context["ti"].xcom_pull(
                task_ids=self.operator.task_id, key=self.key, map_indexes=context["ti"].map_index
            )
        return context["ti"].xcom_pull(task_ids=self.operator.task_id, key=self.key)

    # Setup/teardown on TaskFlow results.

    def as_setup(self):
        self.operator.as_setup()
        return self

    def as_teardown(self, *, setups=None, on_failure_fail_dagrun=None):
        self.operator.as_teardown(setups=setups, on_failure_fail_dagrun=on_failure_fail_dagrun)
        return self

    def __enter__(self):
        return self.operator.__enter__()

    def __exit__(self, *exc_info):
        return self.operator.__exit__(*exc_info)

    @property
    def is_setup(self):
        return self.operator.is_setup

    @property
    def is_teardown(self):
        return self.operator.is_teardown


class MapXComArg(XComArg):
    """`xcom_arg.map(function)`: each element passed through `function` when read."""

    def __init__(self, source, function):
        super().__init__(source.operator, source.key)
        self.source = source
        self.function = function

    def resolve(self, context):
        values = self.source.resolve(context)
        if values is None:
            return None
        if isinstance(values, dict):
            values = list(values.items())
        return [self.function(value) for value in values]

    def map(self, function):
        return MapXComArg(self, function)


class Label(weft_operators.DependencyMixin):
    """Airflow's edge label: `a >> Label("why") >> b` links a to b (the label is display only)."""

    def __init__(self, label):
        self.label = label
        self._upstream = []

    def absorb_upstream(self, tasks):
        self._upstream.extend(tasks)

    def set_upstream(self, other):
        for item in weft_operators._flatten(other):
            self._upstream.extend(item.leaves())

    def roots(self):
        raise BadArgumentError("a Label needs a task on its left: `a >> Label('x') >> b`")

    def leaves(self):
        return list(self._upstream)


def chain(*tasks):
    """`chain(a, [b, c], d)`: Airflow's chain, for tasks, XComArgs, groups and labels."""
    for upstream, downstream in zip(tasks, tasks[1:]):
        if isinstance(upstream, (list, tuple)) and isinstance(downstream, (list, tuple)):
            if len(upstream) != len(downstream):
                raise AirflowException(
                    f"Chain not supported for different length Iterable. Got {len(upstream)} "
                    f"and {len(downstream)}."
                )
            for left, right in zip(upstream, downstream):
                left.set_downstream(right)
        elif isinstance(upstream, (list, tuple)):
            for left in upstream:
                left.set_downstream(downstream)
        elif isinstance(downstream, (list, tuple)):
            for right in downstream:
                upstream.set_downstream(right)
        else:
            upstream.set_downstream(downstream)


def cross_downstream(from_tasks, to_tasks):
    for task in from_tasks:
        task.set_downstream(to_tasks)


def chain_linear(*elements):
    """Each element's tasks all run before every task of the next element."""
    for upstream, downstream in zip(elements, elements[1:]):
        ups = upstream if isinstance(upstream, (list, tuple)) else [upstream]
        for task in ups:
            task.set_downstream(downstream)


# ---- task groups ---------------------------------------------------------------------------


class TaskGroup(WeftTaskGroup):
    """Airflow's TaskGroup; a decorated `@task_group` may also be mapped (`expand`)."""

    def __init__(self, group_id, prefix_group_id=True, parent_group=None, dag=None,
                 default_args=None, tooltip="", ui_color="CornflowerBlue", ui_fgcolor="#000",
                 add_suffix_on_collision=False, group_display_name=None):
        dag = dag if dag is not None else (parent_group.dag if parent_group else _context.current_dag())
        if add_suffix_on_collision and dag is not None:
            group_id = _unique_group_id(dag, group_id, parent_group)
        super().__init__(group_id, tooltip=tooltip, prefix_group_id=prefix_group_id,
                         parent_group=parent_group, dag=dag, default_args=default_args,
                         ui_color=ui_color, ui_fgcolor=ui_fgcolor)
        self.group_display_name = group_display_name
        self.expand_input = None
        self.mapping_spec = None

    @property
    def label(self):
        return self.group_id.rsplit(".", 1)[-1]

    @property
    def upstream_task_ids(self):
        return {up for task in self.roots() for up in task.upstream_task_ids}

    @property
    def downstream_task_ids(self):
        return {down for task in self.leaves() for down in task.downstream_task_ids}

    def get_child_by_label(self, label):
        return self.children[self.child_id(label)]


def _unique_group_id(dag, group_id, parent_group):
    parent = parent_group if parent_group is not None else _context.current_group(dag)
    full = parent.child_id(group_id) if parent is not None else group_id
    if full not in dag.task_groups:
        return group_id
    for counter in itertools.count(1):
        candidate = f"{group_id}__{counter}"
        full = parent.child_id(candidate) if parent is not None else candidate
        if full not in dag.task_groups:
            return candidate
    raise AssertionError("unreachable")


def _mapped_group(task):
    group = getattr(task, "task_group", None)
    while group is not None:
        if getattr(group, "mapping_spec", None) is not None:
            return group
        group = group.parent_group
    return None


# ---- mapping -------------------------------------------------------------------------------


class MappedArgument:
    """A mapped task group's argument inside the group: the element of this instance."""

    def __init__(self, group, name):
        self.group = group
        self.name = name

    def resolve(self, context):
        values = resolve_expand_input(self.group.expand_input, context)
        index = context["ti"].map_index
        return values[index][self.name]


def mapping_spec(expand_input, what):
    """The weft `mapping` of a task expanded over `expand_input` (name -> list or XComArg),
    and the upstream tasks the expansion depends on."""
    if not expand_input:
        raise BadArgumentError(f"{what}: expand() needs at least one argument")
    upstream = []
    length = 1
    for name, value in expand_input.items():
        if isinstance(value, XComArg):
            upstream.append(value)
        elif isinstance(value, MappedArgument):
            raise unsupported("mapping over a mapped task group's argument")
        elif isinstance(value, (list, tuple, dict, set)):
            length *= len(value)
        else:
            raise TypeError(f"{what}: expand({name}=...) needs a list, a dict or a task's output")
    if not upstream:
        if length > MAPPED_LENGTH_MAX:
            raise BadArgumentError(f"{what} expands into {length} instances, more than {MAPPED_LENGTH_MAX}")
        return {"source": "literal", "length": length}, []
    if len(expand_input) > 1:
        raise unsupported(
            "expand() over several arguments when one of them is a task's output",
            "map over one task output and pass the rest with partial()",
        )
    return {"source": "upstream", "task_id": upstream[0].operator.task_id}, [upstream[0].operator]


def resolve_expand_input(expand_input, context):
    """Every instance's keyword arguments, in map-index order (the last argument varies
    fastest, as Airflow's cross product does)."""
    names = list(expand_input)
    columns = []
    for name in names:
        value = expand_input[name]
        if isinstance(value, WeftXComArg):
            value = value.resolve(context)
        if isinstance(value, dict):
            value = list(value.items())
        if value is None:
            value = []
        columns.append(list(value))
    return [dict(zip(names, combination)) for combination in itertools.product(*columns)]


def resolve_expand_kwargs(source, context):
    values = source.resolve(context) if isinstance(source, WeftXComArg) else source
    return [dict(item) for item in (values or [])]


# ---- operators -----------------------------------------------------------------------------

# Arguments of Airflow's BaseOperator that weft keeps without acting on them (display, executor
# hints, Airflow-internal switches).
_ACCEPTED_ARGUMENTS = frozenset(
    [
        "executor", "map_index_template", "max_active_tis_per_dagrun", "logger_name",
        "allow_nested_operators", "wait_for_past_depends_before_skipping",
        "ignore_first_depends_on_past", "pre_execute", "post_execute", "doc_rst", "doc_json",
        "doc_yaml", "owner_links", "render_template_as_native_obj",
    ]
)


def _apply_defaults(init):
    """Wrap an operator's `__init__` as Airflow's metaclass does: arguments the caller left
    out are taken from `default_args` (the DAG's, its groups', the call's own)."""
    signature = inspect.signature(init)
    names = [
        p.name for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    ]

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        depth = getattr(self, "_init_depth", 0)
        self._init_depth = depth + 1
        try:
            defaults = _effective_default_args(kwargs)
            bound = signature.bind_partial(self, *args, **kwargs).arguments
            for name in names:
                if name not in bound and name in defaults and name not in ("task_id", "dag"):
                    kwargs[name] = defaults[name]
            init(self, *args, **kwargs)
        finally:
            self._init_depth = depth
        if depth == 0 and isinstance(self, BaseOperator):
            self._after_init()

    wrapper._weft_wrapped = True
    return wrapper


def _effective_default_args(kwargs):
    dag = kwargs.get("dag") or _context.current_dag()
    merged = dict(getattr(dag, "default_args", None) or {})
    group = kwargs.get("task_group")
    if group is None and dag is not None:
        group = _context.current_group(dag)
    if group is not None:
        merged.update(group.inherited_default_args())
    merged.update(kwargs.get("default_args") or {})
    return merged


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


class BaseOperator(weft_operators.BaseOperator):
    """Airflow's BaseOperator: subclass it, set `template_fields`, write `execute(context)`."""

    template_fields = ()
    template_ext = ()
    template_fields_renderers = {}
    ui_color = "#fff"
    ui_fgcolor = "#000"
    operator_extra_links = ()
    shallow_copy_attrs = ()
    supports_lineage = False
    # Set by the TaskFlow decorators and `.partial().expand()`.
    is_mapped = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_weft_wrapped", False):
            cls.__init__ = _apply_defaults(init)
        if "operator_name" not in cls.__dict__:
            cls.operator_name = cls.__name__

    def __init__(self, task_id=None, *, dag=None, task_group=None, default_args=None, params=None,
                 **kwargs):
        if task_id is None:
            raise TypeError(f"{type(self).__name__} needs a task_id")
        defaults = _effective_default_args({"dag": dag, "task_group": task_group,
                                            "default_args": default_args})
        self.kwargs_seen = set(kwargs)
        for name in weft_operators.BASE_DEFAULTS:
            if name not in kwargs and name in defaults:
                kwargs[name] = defaults[name]
        self.accepted_arguments = {}
        for name in list(kwargs):
            if name in _ACCEPTED_ARGUMENTS:
                self.accepted_arguments[name] = kwargs.pop(name)
        if kwargs.get("retry_policy") is not None:
            raise unsupported("retry policies (`retry_policy=`)")
        kwargs.pop("retry_policy", None)
        weight_rule = kwargs.get("weight_rule")
        if weight_rule is not None and not isinstance(weight_rule, str):
            raise unsupported("custom priority weight strategies", f"task `{task_id}`")
        if isinstance(weight_rule, str) and weight_rule not in weft_operators.WEIGHT_RULES:
            raise unsupported(f"weight_rule `{weight_rule}`", f"task `{task_id}`")
        if "trigger_rule" in kwargs:
            kwargs["trigger_rule"] = trigger_rule_value(kwargs["trigger_rule"])
        for name in ("on_failure_callback", "on_success_callback", "on_retry_callback",
                     "on_execute_callback", "on_skipped_callback"):
            if kwargs.get(name) is not None:
                kwargs[name] = _as_list(kwargs[name])
        email = kwargs.get("email", defaults.get("email"))
        on_failure = kwargs.get("email_on_failure", defaults.get("email_on_failure"))
        on_retry = kwargs.get("email_on_retry", defaults.get("email_on_retry"))
        # Airflow mails failures and retries whenever `email` is set, unless told not to.
        if email and (on_failure is not False or on_retry is not False):
            raise unsupported("sending email on failure or retry",
                              f"task `{task_id}`: set email_on_failure=False and email_on_retry=False")
        if kwargs.get("run_as_user") or defaults.get("run_as_user"):
            raise unsupported("run_as_user", f"task `{task_id}`")
        if kwargs.get("deferrable"):
            raise unsupported("deferrable operators", f"task `{task_id}`")
        kwargs.pop("deferrable", None)
        super().__init__(task_id=task_id, dag=dag, task_group=task_group, **kwargs)
        merged_params = ParamsDict()
        for source in (self.dag.params, defaults.get("params"), params):
            if source:
                if isinstance(source, ParamsDict):
                    for name in source:
                        merged_params[name] = source._params.get(name, source[name])
                else:
                    merged_params.update(source)
        self.params = merged_params
        self.role = "normal"
        self.on_failure_fail_dagrun = False
        self.expand_input = None
        self.log = logging.getLogger(f"airflow.task.operators.{type(self).__module__}.{type(self).__name__}")

    def _after_init(self):
        """After the outermost `__init__`: XComArgs in templated fields are dependencies, as in
        Airflow."""
        if _context.is_detached():
            return
        for name in self.template_fields:
            for value in _walk(getattr(self, name, None)):
                if isinstance(value, WeftXComArg) and value.operator is not self:
                    value.operator.set_downstream(self)

    # Identity, as DAG files read it.

    @property
    def dag_id(self):
        return self.dag.dag_id

    @property
    def label(self):
        if self.task_group is not None and self.task_group.prefix_group_id:
            return self.task_id[len(self.task_group.group_id) + 1:]
        return self.task_id

    @property
    def task_type(self):
        return type(self).__name__

    @property
    def output(self):
        return XComArg(self)

    @property
    def is_setup(self):
        return self.role == "setup"

    @property
    def is_teardown(self):
        return self.role == "teardown"

    @property
    def inherits_from_empty_operator(self):
        return False

    def get_direct_relative_ids(self, upstream=False):
        return set(self.upstream_task_ids if upstream else self.downstream_task_ids)

    def get_direct_relatives(self, upstream=False):
        return self.upstream_list if upstream else self.downstream_list

    def has_dag(self):
        return self.dag is not None

    # Setup and teardown.

    def as_setup(self):
        self.role = "setup"
        return self

    def as_teardown(self, *, setups=None, on_failure_fail_dagrun=None):
        self.role = "teardown"
        self.trigger_rule = "all_done_setup_success"
        if on_failure_fail_dagrun:
            raise unsupported("teardowns that fail the run (`on_failure_fail_dagrun=True`)")
        for setup in _as_list(setups):
            setup = setup.operator if isinstance(setup, WeftXComArg) else setup
            setup.as_setup()
            setup.set_downstream(self)
        return self

    def __enter__(self):
        if not self.is_teardown:
            raise AirflowException("only a teardown task can open a `with` block")
        self._block_start = set(self.dag.task_dict)
        _context.push(_SetupTeardownBlock(self))
        return self

    def __exit__(self, *exc_info):
        block = next((item for item in reversed(_context._stack)
                      if isinstance(item, _SetupTeardownBlock) and item.teardown is self), None)
        if block is not None:
            _context.pop(block)
        if exc_info[0] is not None:
            return False
        new = [task for task_id, task in self.dag.task_dict.items() if task_id not in self._block_start
               and task is not self]
        inside = {task.task_id for task in new}
        setups = [self.dag.task_dict[up] for up in self.upstream_task_ids
                  if self.dag.task_dict[up].is_setup]
        roots = [task for task in new if not any(up in inside for up in task.upstream_task_ids)
                 and not task.is_setup]
        leaves = [task for task in new if not any(down in inside for down in task.downstream_task_ids)
                  and not task.is_teardown]
        for setup in setups:
            for root in roots:
                if root.task_id != setup.task_id:
                    setup.set_downstream(root)
        for leaf in leaves:
            leaf.set_downstream(self)
        return False

    # Classic operator mapping: `Operator.partial(task_id=...).expand(arg=[...])`.

    @classmethod
    def partial(cls, **kwargs):
        if "task_id" not in kwargs:
            raise TypeError("partial() needs a task_id")
        return _PartialOperator(cls, kwargs)

    # Serialization.

    def task_kind(self):
        return {"type": "python", "callable": type(self).__qualname__}

    # Running one attempt (in the Python task runner).

    def run_attempt(self, context):
        from .context import run_operator

        return run_operator(self, context)

    def prepare_for_execution(self):
        return copy.copy(self)

    def render_template_fields(self, context, jinja_env=None):
        from .context import render_template

        for name in self.template_fields:
            value = getattr(self, name, None)
            setattr(self, name, render_template(self, value, context))

    def render_template(self, content, context, jinja_env=None, seen_oids=None):
        from .context import render_template

        return render_template(self, content, context)

    def pre_execute(self, context):
        hook = self.accepted_arguments.get("pre_execute")
        if hook is not None:
            hook(context)

    def post_execute(self, context, result=None):
        hook = self.accepted_arguments.get("post_execute")
        if hook is not None:
            hook(context, result)

    def execute(self, context):
        raise NotImplementedError(f"{type(self).__name__} does not define execute(context)")

    def on_kill(self):
        pass

    def xcom_push(self, context, key, value):
        context["ti"].xcom_push(key=key, value=value)

    def xcom_pull(self, context, task_ids=None, key="return_value", **kwargs):
        return context["ti"].xcom_pull(task_ids=task_ids, key=key, **kwargs)

    def defer(self, *args, **kwargs):
        raise unsupported("deferring to a trigger (`self.defer`)")


class _SetupTeardownBlock:
    """An open `with teardown_task:` block on the definition stack (not a DAG or group)."""

    def __init__(self, teardown):
        self.teardown = teardown
        self.dag = None


def _walk(value, depth=0):
    """Every value nested in lists, tuples, sets and dicts (bounded depth)."""
    yield value
    if depth > 20:
        return
    if isinstance(value, dict):
        for item in value.values():
            yield from _walk(item, depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from _walk(item, depth + 1)


class _PartialOperator:
    """`Operator.partial(...)`: waits for `.expand()` / `.expand_kwargs()`."""

    def __init__(self, operator_class, kwargs):
        self.operator_class = operator_class
        self.kwargs = kwargs

    def expand(self, **expand_input):
        return MappedOperator(self.operator_class, self.kwargs, expand_input=expand_input)

    def expand_kwargs(self, source):
        return MappedOperator(self.operator_class, self.kwargs, expand_kwargs=source)


class MappedOperator(BaseOperator):
    """A classic operator expanded over lists: one task in the DAG; each instance builds the
    real operator with its own arguments when it runs."""

    def __init__(self, operator_class, partial_kwargs, expand_input=None, expand_kwargs=None):
        self.operator_class = operator_class
        self.partial_kwargs = dict(partial_kwargs)
        self.operator_name = operator_class.__name__
        self.template_fields = ()
        self.flow = getattr(operator_class, "flow", "normal")
        base = {k: v for k, v in self.partial_kwargs.items()
                if k in weft_operators.BASE_DEFAULTS or k in ("task_id", "dag", "task_group",
                                                               "default_args", "params")}
        super().__init__(**base)
        if expand_kwargs is not None:
            self.expand_kwargs = expand_kwargs
            if isinstance(expand_kwargs, WeftXComArg):
                self.mapping = {"source": "upstream", "task_id": expand_kwargs.operator.task_id}
                expand_kwargs.operator.set_downstream(self)
            else:
                self.mapping = {"source": "literal", "length": len(expand_kwargs)}
        else:
            self.expand_kwargs = None
            self.expand_input = dict(expand_input)
            self.mapping, upstream = mapping_spec(self.expand_input, f"task `{self.task_id}`")
            for task in upstream:
                task.set_downstream(self)
        for value in _walk(list(self.partial_kwargs.values())):
            if isinstance(value, WeftXComArg):
                value.operator.set_downstream(self)

    @property
    def is_mapped(self):
        return True

    def task_kind(self):
        if self.operator_class.__dict__.get("_is_empty") or getattr(self.operator_class, "_is_empty", False):
            return {"type": "empty"}
        return {"type": "python", "callable": self.operator_class.__qualname__}

    def prepare_for_execution(self):
        return self

    def instance_arguments(self, context):
        index = context["ti"].map_index
        if self.expand_kwargs is not None:
            rows = resolve_expand_kwargs(self.expand_kwargs, context)
        else:
            rows = resolve_expand_input(self.expand_input, context)
        if not 0 <= index < len(rows):
            raise AirflowException(f"mapped task `{self.task_id}` has no element {index}")
        return rows[index]

    def build_instance(self, context):
        arguments = {**self.partial_kwargs, **self.instance_arguments(context)}
        arguments["task_id"] = self.label
        arguments["dag"] = self.dag
        arguments["task_group"] = self.task_group
        with _context.detached():
            instance = self.operator_class(**arguments)
        instance.task_id = self.task_id
        instance.upstream_task_ids = self.upstream_task_ids
        instance.downstream_task_ids = self.downstream_task_ids
        instance.mapping = self.mapping
        return instance

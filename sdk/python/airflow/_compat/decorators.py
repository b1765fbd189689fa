"""TaskFlow as Airflow has it: `@task` (and `.python`, `.bash`, `.branch`, `.short_circuit`),
`@setup` / `@teardown`, `@task_group`, with `.override()`, `.partial()`, `.expand()` and
`.expand_kwargs()`, mapped task groups included."""

import functools
import inspect
import typing

from weft import _context
from weft.operators import XComArg as WeftXComArg
from weft.operators import call_with_context

from .models import (
    AirflowException,
    MappedArgument,
    TaskGroup,
    XComArg,
    mapping_spec,
    resolve_expand_input,
    resolve_expand_kwargs,
)
from .operators import (
    BashOperator,
    BranchMixIn,
    PythonOperator,
    ShortCircuitOperator,
    refuse_unsupported_context,
)
from .sensors import BaseSensorOperator
from .unsupported import unsupported


def _infer_multiple_outputs(function):
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # unresolvable annotations: Airflow falls back to False too
        return False
    annotation = hints.get("return")
    origin = typing.get_origin(annotation) or annotation
    try:
        return isinstance(origin, type) and issubclass(origin, dict)
    except TypeError:
        return False


class _DecoratedMixin:
    """What TaskFlow operators share: arguments bound at call time, mapped arguments resolved
    per instance, the function's name and doc for display."""

    operator_name = "@task"

    def _init_decorated(self, python_callable, expand_input, expand_kwargs):
        self.expand_input = expand_input
        self.expand_kwargs = expand_kwargs
        if expand_kwargs is not None:
            if isinstance(expand_kwargs, WeftXComArg):
                self.mapping = {"source": "upstream", "task_id": expand_kwargs.operator.task_id}
                expand_kwargs.operator.set_downstream(self)
            else:
                self.mapping = {"source": "literal", "length": len(expand_kwargs)}
        elif expand_input:
            self.mapping, upstream = mapping_spec(expand_input, f"task `{self.task_id}`")
            for task in upstream:
                task.set_downstream(self)
        if python_callable.__doc__ and self.doc_md is None:
            self.doc_md = inspect.cleandoc(python_callable.__doc__)

    @property
    def is_mapped(self):
        return bool(self.expand_input) or self.expand_kwargs is not None

    def mapped_kwargs(self, context):
        if not self.is_mapped:
            return {}
        if self.expand_kwargs is not None:
            rows = resolve_expand_kwargs(self.expand_kwargs, context)
        else:
            rows = resolve_expand_input(self.expand_input, context)
        index = context["ti"].map_index
        if not 0 <= index < len(rows):
            raise AirflowException(f"mapped task `{self.task_id}` has no element {index}")
        return rows[index]

    def call_function(self, context):
        kwargs = {**self.op_kwargs, **self.mapped_kwargs(context)}
        return call_with_context(self.python_callable, self.op_args, kwargs, context)


class DecoratedPythonOperator(_DecoratedMixin, PythonOperator):
    def __init__(self, *, python_callable, op_args=None, op_kwargs=None, expand_input=None,
                 expand_kwargs=None, **kwargs):
        super().__init__(python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, **kwargs)
        self._init_decorated(python_callable, expand_input, expand_kwargs)

    def execute_callable(self, context):
        return self.call_function(context)


class DecoratedBranchOperator(BranchMixIn, DecoratedPythonOperator):
    operator_name = "@task.branch"


class DecoratedShortCircuitOperator(_DecoratedMixin, ShortCircuitOperator):
    operator_name = "@task.short_circuit"

    def __init__(self, *, python_callable, op_args=None, op_kwargs=None, expand_input=None,
                 expand_kwargs=None, **kwargs):
        super().__init__(python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, **kwargs)
        self._init_decorated(python_callable, expand_input, expand_kwargs)

    def execute_callable(self, context):
        return self.call_function(context)


class DecoratedBashOperator(_DecoratedMixin, BashOperator):
    """`@task.bash`: the function returns the command, which is rendered and run."""

    operator_name = "@task.bash"
    template_fields = ("env", "cwd", "op_args", "op_kwargs")

    def __init__(self, *, python_callable, op_args=None, op_kwargs=None, expand_input=None,
                 expand_kwargs=None, **kwargs):
        kwargs.pop("multiple_outputs", None)
        super().__init__(bash_command="", **kwargs)
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        self.multiple_outputs = False
        self._init_decorated(python_callable, expand_input, expand_kwargs)

    def execute(self, context):
        from .context import render_template

        command = self.call_function(context)
        if not isinstance(command, str) or not command.strip():
            raise TypeError("The returned value from the TaskFlow callable must be a non-empty string.")
        self.bash_command = render_template(self, command, context)
        context["ti"].task = self
        return super().execute(context)


class DecoratedSensorOperator(_DecoratedMixin, BaseSensorOperator):
    """`@task.sensor`: the function is the poke; a PokeReturnValue's value is the result."""

    operator_name = "@task.sensor"
    template_fields = ("op_args", "op_kwargs")

    def __init__(self, *, python_callable, op_args=None, op_kwargs=None, expand_input=None,
                 expand_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        refuse_unsupported_context(python_callable)
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        self._init_decorated(python_callable, expand_input, expand_kwargs)

    def poke(self, context):
        return self.call_function(context)


class TaskDecorator:
    """What `@task` returns: call it to add a task to the DAG being defined."""

    def __init__(self, function, operator_class, arguments=None, partial_kwargs=None, role="normal"):
        functools.update_wrapper(self, function)
        self.function = function
        self.operator_class = operator_class
        self.arguments = dict(arguments or {})
        self.partial_kwargs = dict(partial_kwargs or {})
        self.role = role
        self.on_failure_fail_dagrun = False

    def _task_id(self, dag):
        task_id = self.arguments.get("task_id") or self.function.__name__
        group = self.arguments.get("task_group") or _context.current_group(dag)
        full = group.child_id(task_id) if group is not None else task_id
        if full not in dag.task_dict:
            return task_id
        core = full.split("__")[0] if "__" in full else full
        suffixes = [
            int(existing.rsplit("__", 1)[1])
            for existing in dag.task_dict
            if existing.startswith(core + "__") and existing.rsplit("__", 1)[1].isdigit()
        ]
        label = task_id.split("__")[0] if "__" in task_id else task_id
        return f"{label}__{max(suffixes, default=0) + 1}"

    def _create(self, args, kwargs, expand_input=None, expand_kwargs=None):
        dag = self.arguments.get("dag") or _context.current_dag()
        if dag is None:
            raise AirflowException(
                f"@task `{self.function.__name__}` was called outside a DAG; call it inside "
                "`with DAG(...)` or a `@dag` function"
            )
        arguments = {key: value for key, value in self.arguments.items() if key != "task_id"}
        if "multiple_outputs" not in arguments and self.operator_class is DecoratedPythonOperator:
            arguments["multiple_outputs"] = _infer_multiple_outputs(self.function)
        operator = self.operator_class(
            task_id=self._task_id(dag),
            python_callable=self.function,
            op_args=list(args),
            op_kwargs={**self.partial_kwargs, **kwargs},
            expand_input=expand_input,
            expand_kwargs=expand_kwargs,
            **arguments,
        )
        if self.role == "setup":
            operator.as_setup()
        elif self.role == "teardown":
            operator.as_teardown(on_failure_fail_dagrun=self.on_failure_fail_dagrun)
        return XComArg(operator)

    def __call__(self, *args, **kwargs):
        return self._create(args, kwargs)

    def override(self, **arguments):
        return self._copy(arguments={**self.arguments, **arguments})

    def partial(self, **kwargs):
        return self._copy(partial_kwargs={**self.partial_kwargs, **kwargs})

    def expand(self, **expand_input):
        if not expand_input:
            raise TypeError("no arguments to expand against")
        return self._create((), {}, expand_input=expand_input)

    def expand_kwargs(self, source):
        return self._create((), {}, expand_kwargs=source)

    def _copy(self, arguments=None, partial_kwargs=None):
        copy = TaskDecorator(self.function, self.operator_class,
                             self.arguments if arguments is None else arguments,
                             self.partial_kwargs if partial_kwargs is None else partial_kwargs,
                             self.role)
        copy.on_failure_fail_dagrun = self.on_failure_fail_dagrun
        return copy


def _decorator(operator_class):
    def decorate(python_callable=None, multiple_outputs=None, **arguments):
        if multiple_outputs is not None:
            arguments["multiple_outputs"] = multiple_outputs
        if python_callable is not None and callable(python_callable):
            return TaskDecorator(python_callable, operator_class, arguments)

        def wrap(function):
            return TaskDecorator(function, operator_class, arguments)

        return wrap

    return decorate


# `@task.<name>` variants that need something weft does not run.
_UNSUPPORTED_VARIANTS = {
    "virtualenv": "@task.virtualenv (run-time virtualenvs)",
    "external_python": "@task.external_python",
    "branch_virtualenv": "@task.branch_virtualenv (run-time virtualenvs)",
    "branch_external_python": "@task.branch_external_python",
    "docker": "@task.docker",
    "kubernetes": "@task.kubernetes",
    "kubernetes_cmd": "@task.kubernetes_cmd",
    "pyspark": "@task.pyspark",
    "sql": "@task.sql",
    "run_if": "@task.run_if",
    "skip_if": "@task.skip_if",
    "stub": "@task.stub",
}


class _TaskNamespace:
    """`task`, `task.python`, `task.bash`, `task.branch`, `task.short_circuit`."""

    def __init__(self):
        self.python = _decorator(DecoratedPythonOperator)
        self.bash = _decorator(DecoratedBashOperator)
        self.branch = _decorator(DecoratedBranchOperator)
        self.short_circuit = _decorator(DecoratedShortCircuitOperator)
        self.sensor = _decorator(DecoratedSensorOperator)

    def __call__(self, python_callable=None, multiple_outputs=None, **arguments):
        return self.python(python_callable, multiple_outputs, **arguments)

    def __getattr__(self, name):
        if name in _UNSUPPORTED_VARIANTS:
            raise unsupported(_UNSUPPORTED_VARIANTS[name])
        raise AttributeError(f"task has no decorator `{name}`")


task = _TaskNamespace()


def _as_decorator(function_or_decorator):
    if isinstance(function_or_decorator, TaskDecorator):
        return function_or_decorator
    return TaskDecorator(function_or_decorator, DecoratedPythonOperator)


def setup(function=None):
    """`@setup`: the task is a setup task (its teardown runs whatever happens in between)."""

    def wrap(inner):
        decorator = _as_decorator(inner)._copy()
        decorator.role = "setup"
        return decorator

    return wrap(function) if function is not None else wrap


def teardown(function=None, *, on_failure_fail_dagrun=False):
    """`@teardown`: runs after its setups' work, whatever its outcome."""

    def wrap(inner):
        decorator = _as_decorator(inner)._copy()
        decorator.role = "teardown"
        decorator.on_failure_fail_dagrun = on_failure_fail_dagrun
        return decorator

    return wrap(function) if function is not None else wrap


class TaskGroupFactory:
    """What `@task_group` returns: call it to add the group; `.expand()` maps it."""

    def __init__(self, function, group_arguments=None, partial_kwargs=None):
        functools.update_wrapper(self, function)
        self.function = function
        self.group_arguments = dict(group_arguments or {})
        self.partial_kwargs = dict(partial_kwargs or {})

    def _group(self):
        arguments = dict(self.group_arguments)
        group_id = arguments.pop("group_id", None) or self.function.__name__
        arguments.setdefault("add_suffix_on_collision", True)
        group = TaskGroup(group_id, **arguments)
        if self.function.__doc__ and not group.tooltip:
            group.tooltip = inspect.cleandoc(self.function.__doc__)
        return group

    def __call__(self, *args, **kwargs):
        group = self._group()
        with group:
            result = self.function(*args, **{**self.partial_kwargs, **kwargs})
        return result if result is not None else group

    def override(self, **arguments):
        return TaskGroupFactory(self.function, {**self.group_arguments, **arguments}, self.partial_kwargs)

    def partial(self, **kwargs):
        return TaskGroupFactory(self.function, self.group_arguments, {**self.partial_kwargs, **kwargs})

    def expand(self, **expand_input):
        group = self._group()
        group.expand_input = dict(expand_input)
        spec, upstream = mapping_spec(group.expand_input, f"task group `{group.group_id}`")
        group.mapping_spec = spec
        with group:
            arguments = {name: MappedArgument(group, name) for name in expand_input}
            result = self.function(**self.partial_kwargs, **arguments)
        for member in group.all_tasks():
            if member.mapping is not None:
                raise unsupported("a mapped task inside a mapped task group")
            member.mapping = dict(spec)
            for source in upstream:
                # The core expands a task once the task it maps over has finished.
                source.set_downstream(member)
        return result if result is not None else group

    def expand_kwargs(self, source):
        raise unsupported("expand_kwargs() on a task group")


def task_group(python_callable=None, **group_arguments):
    """`@task_group` / `@task_group(group_id=..., tooltip=...)`."""
    if python_callable is not None and callable(python_callable):
        return TaskGroupFactory(python_callable, group_arguments)

    def wrap(function):
        return TaskGroupFactory(function, group_arguments)

    return wrap


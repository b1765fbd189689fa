"""Tasks: the operator base class with Airflow's arguments and dependency operators, and the
operators weft runs natively (Empty, Bash, Python, BranchPython, ShortCircuit)."""

import inspect

from . import _context
from .dag import validate_id
from .exceptions import BadArgumentError

TRIGGER_RULES = frozenset(
    [
        "all_success", "all_failed", "all_done", "all_done_setup_success", "all_skipped",
        "one_success", "one_failed", "one_done", "none_failed", "none_failed_min_one_success",
        "none_skipped", "always",
    ]
)
WEIGHT_RULES = frozenset(["absolute", "downstream", "upstream"])

# Arguments of every operator, with the value a task gets when neither the operator call nor
# default_args sets it (Airflow's defaults).
BASE_DEFAULTS = {
    "owner": None,
    "retries": 0,
    "retry_delay": 300.0,
    "retry_exponential_backoff": False,
    "max_retry_delay": None,
    "execution_timeout": None,
    "depends_on_past": False,
    "wait_for_downstream": False,
    "pool": "default_pool",
    "pool_slots": 1,
    "priority_weight": 1,
    "weight_rule": "downstream",
    "trigger_rule": "all_success",
    "doc_md": None,
    "queue": None,
    "task_display_name": None,
    "max_active_tis_per_dag": None,
    "run_as_user": None,
    "email": None,
    "email_on_failure": None,
    "email_on_retry": None,
    "do_xcom_push": True,
    "multiple_outputs": False,
    "on_failure_callback": None,
    "on_success_callback": None,
    "on_retry_callback": None,
    "on_execute_callback": None,
    "on_skipped_callback": None,
    "sla": None,
    "executor_config": None,
    "start_date": None,
    "end_date": None,
    "params": None,
    "doc": None,
    "task_concurrency": None,
    "resources": None,
    "inlets": None,
    "outlets": None,
}

# Base arguments carried to the runner and UI in the task's `extra` map when set.
EXTRA_ARGUMENTS = ("queue", "task_display_name", "max_active_tis_per_dag", "run_as_user", "email")


def _flatten(other):
    if isinstance(other, (list, tuple, set, frozenset)):
        items = []
        for item in other:
            items.extend(_flatten(item))
        return items
    return [other]


class DependencyMixin:
    """`>>`, `<<` and lists on either side, for tasks, XCom references and task groups."""

    def roots(self):
        raise NotImplementedError

    def leaves(self):
        raise NotImplementedError

    def set_downstream(self, other):
        line = _context.caller_line()
        for target in _flatten(other):
            target = _as_dependency(target)
            # An edge modifier (Airflow's `Label`) stands between tasks: it takes this side's
            # leaves and links them onwards when it is itself linked.
            absorb = getattr(target, "absorb_upstream", None)
            if absorb is not None:
                absorb(self.leaves())
                continue
            for leaf in self.leaves():
                for root in target.roots():
                    leaf._add_edge(root, line)

    def set_upstream(self, other):
        line = _context.caller_line()
        for source in _flatten(other):
            for leaf in _as_dependency(source).leaves():
                for root in self.roots():
                    leaf._add_edge(root, line)

    def __rshift__(self, other):
        self.set_downstream(other)
        return other

    def __lshift__(self, other):
        self.set_upstream(other)
        return other

    def __rrshift__(self, other):
        # `[a, b] >> self`
        self.set_upstream(other)
        return self

    def __rlshift__(self, other):
        # `[a, b] << self`
        self.set_downstream(other)
        return self


def _as_dependency(value):
    if isinstance(value, DependencyMixin):
        return value
    raise BadArgumentError(
        f"cannot make a dependency with {value!r}; use a task, a task group or a list of them"
    )


class XComArg(DependencyMixin):
    """The future result of a task: pass it to another task to depend on it; the runner
    replaces it with the upstream task's result."""

    def __init__(self, operator, key="return_value"):
        self.operator = operator
        self.key = key

    def roots(self):
        return [self.operator]

    def leaves(self):
        return [self.operator]

    def __repr__(self):
        return f"XComArg({self.operator.task_id!r})"

    def __iter__(self):
        raise TypeError("an XComArg is only known at run time; pass it to a task instead")

    def resolve(self, context):
        return context["ti"].xcom_pull(task_ids=self.operator.task_id, key=self.key)


class BaseOperator(DependencyMixin):
    """Everything a task has whatever it runs. Subclasses say how it runs (`task_kind`)."""

    operator_name = "BaseOperator"
    template_fields = ()
    flow = "normal"

    def __init__(self, *, task_id, dag=None, task_group=None, **arguments):
        unknown = sorted(set(arguments) - set(BASE_DEFAULTS))
        if unknown:
            raise BadArgumentError(
                f"{type(self).__name__} got unknown argument(s) {', '.join(unknown)}"
            )
        dag = dag if dag is not None else _context.current_dag()
        if dag is None:
            raise BadArgumentError(
                f"task `{task_id}` is not in a DAG; create it inside `with DAG(...)` or pass dag="
            )
        group = task_group if task_group is not None else _context.current_group(dag)
        validate_id(task_id, "task_id")
        self.dag = dag
        self.task_group = group
        self.task_id = group.child_id(task_id) if group is not None else task_id
        defaults = dict(dag.default_args)
        if group is not None:
            defaults.update(group.inherited_default_args())
        for name, fallback in BASE_DEFAULTS.items():
            value = arguments[name] if name in arguments else defaults.get(name, fallback)
            setattr(self, name, value)
        self._validate_base()
        self.upstream_task_ids = {}
        self.downstream_task_ids = {}
        self.mapping = None
        self.creation_line = _context.caller_line()
        if _context.is_detached():
            # Built at run time from a mapped task's arguments: the DAG already has its task.
            return
        dag.add_task(self)
        if group is not None:
            group.add_child(self)

    def _validate_base(self):
        rule = str(getattr(self.trigger_rule, "value", self.trigger_rule))
        if rule not in TRIGGER_RULES:
            raise BadArgumentError(
                f"task `{self.task_id}` has unknown trigger_rule `{rule}`; use one of "
                f"{', '.join(sorted(TRIGGER_RULES))}"
            )
        self.trigger_rule = rule
        weight_rule = str(getattr(self.weight_rule, "value", self.weight_rule))
        if weight_rule not in WEIGHT_RULES:
            raise BadArgumentError(
                f"task `{self.task_id}` has unknown weight_rule `{weight_rule}`; use absolute, "
                "downstream or upstream"
            )
        self.weight_rule = weight_rule
        if int(self.retries or 0) < 0:
            raise BadArgumentError(f"task `{self.task_id}` has negative retries")

    def __repr__(self):
        return f"<Task({type(self).__name__}): {self.task_id}>"

    # Dependencies -----------------------------------------------------------------------

    def roots(self):
        return [self]

    def leaves(self):
        return [self]

    def _add_edge(self, downstream, line):
        if downstream.dag is not self.dag:
            raise BadArgumentError(
                f"cannot link `{self.task_id}` to `{downstream.task_id}`: they are in "
                "different DAGs"
            )
        self.downstream_task_ids[downstream.task_id] = None
        downstream.upstream_task_ids[self.task_id] = None
        self.dag.record_edge(self.task_id, downstream.task_id, line)

    @property
    def output(self):
        return XComArg(self)

    @property
    def upstream_list(self):
        return [self.dag.task_dict[task_id] for task_id in self.upstream_task_ids]

    @property
    def downstream_list(self):
        return [self.dag.task_dict[task_id] for task_id in self.downstream_task_ids]

    # Serialization ------------------------------------------------------------------------

    def task_kind(self):
        """The `TaskKind` JSON."""
        return {"type": "python", "callable": type(self).__qualname__}

    def extra_json(self):
        """Operator-specific values for the `extra` map."""
        return {}

    def template_field_names(self):
        return list(self.template_fields)

    # Execution (in the Python task runner) -------------------------------------------------

    def execute(self, context):
        raise NotImplementedError(f"{type(self).__name__} does not run in the Python runner")

    def run_attempt(self, context):
        """What the Python runner calls for one attempt; layers that add steps around
        `execute` (rendering, callbacks) override this, not `execute`."""
        return self.execute(context)


class EmptyOperator(BaseOperator):
    """Does nothing; the scheduler marks it done without a worker."""

    operator_name = "EmptyOperator"

    def __init__(self, *, task_id, **arguments):
        super().__init__(task_id=task_id, **arguments)

    def task_kind(self):
        return {"type": "empty"}

    def execute(self, context):
        return None


def _has_template(value):
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(_has_template(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_template(item) for item in value)
    return False


class BashOperator(BaseOperator):
    """A shell command run with `bash -c` by the shell executor (no Python in the path unless
    the command or env is a template)."""

    operator_name = "BashOperator"
    template_fields = ("bash_command", "env", "cwd")

    def __init__(
        self,
        *,
        task_id,
        bash_command,
        env=None,
        append_env=False,
        cwd=None,
        skip_on_exit_code=99,
        output_encoding="utf-8",
        **arguments,
    ):
        super().__init__(task_id=task_id, **arguments)
        if not isinstance(bash_command, str):
            raise BadArgumentError(f"task `{self.task_id}`: bash_command must be a string")
        self.bash_command = bash_command
        self.env = {str(key): str(value) for key, value in (env or {}).items()}
        self.append_env = bool(append_env)
        self.cwd = cwd
        if isinstance(skip_on_exit_code, (list, tuple)):
            skip_on_exit_code = skip_on_exit_code[0] if skip_on_exit_code else None
        self.skip_on_exit_code = skip_on_exit_code
        self.output_encoding = output_encoding

    def is_templated(self):
        return _has_template([self.bash_command, self.env, self.cwd])

    def task_kind(self):
        return {
            "type": "shell",
            "command": self.bash_command,
            "env": dict(self.env),
            "append_env": self.append_env,
            "cwd": self.cwd,
            "skip_exit_code": self.skip_on_exit_code,
            "templated": self.is_templated(),
        }

    def template_field_names(self):
        return [name for name in self.template_fields if _has_template(getattr(self, name))]


def callable_name(function):
    """How a Python task's callable is named in its task kind: `module.qualname`, or the plain
    qualname for one defined in the DAG file (imported under a generated module name)."""
    module = getattr(function, "__module__", None) or ""
    name = getattr(function, "__qualname__", None) or type(function).__name__
    if module.startswith("weft_dag_") or module == "__main__":
        return name
    return f"{module}.{name}" if module else name


def call_with_context(function, args, kwargs, context):
    """Call `function` with `args`/`kwargs`, adding context values its signature asks for by
    name, or all of them when it takes `**kwargs` (Airflow's rule)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return function(*args, **kwargs)
    parameters = list(signature.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        merged = {key: value for key, value in context.items() if key not in kwargs}
        positional = {p.name for p in parameters[: len(args)]}
        merged = {key: value for key, value in merged.items() if key not in positional}
        merged.update(kwargs)
        return function(*args, **merged)
    filled = {p.name for p in parameters[: len(args)]
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)}
    extra = {
        p.name: context[p.name]
        for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name in context
        and p.name not in kwargs
        and p.name not in filled
    }
    return function(*args, **kwargs, **extra)


class PythonOperator(BaseOperator):
    """Calls a Python function in the Python task runner; its return value is the result."""

    operator_name = "PythonOperator"
    template_fields = ("op_args", "op_kwargs", "templates_dict")

    def __init__(
        self,
        *,
        task_id,
        python_callable,
        op_args=None,
        op_kwargs=None,
        templates_dict=None,
        show_return_value_in_logs=True,
        **arguments,
    ):
        super().__init__(task_id=task_id, **arguments)
        if not callable(python_callable):
            raise BadArgumentError(f"task `{self.task_id}`: python_callable must be callable")
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        self.templates_dict = templates_dict
        self.show_return_value_in_logs = show_return_value_in_logs
        for value in [*self.op_args, *self.op_kwargs.values()]:
            if isinstance(value, XComArg):
                value.operator.set_downstream(self)

    def callable_name(self):
        return callable_name(self.python_callable)

    def task_kind(self):
        return {"type": "python", "callable": self.callable_name()}

    def execute(self, context):
        return self.call_callable(context, {})

    def call_callable(self, context, extra_kwargs):
        from .templates import render_value, resolve_arguments

        args = resolve_arguments(self.op_args, context)
        kwargs = resolve_arguments({**self.op_kwargs, **extra_kwargs}, context)
        args = render_value(args, context)
        kwargs = render_value(kwargs, context)
        if self.templates_dict is not None:
            context["templates_dict"] = render_value(self.templates_dict, context)
        return call_with_context(self.python_callable, args, kwargs, context)


class BranchPythonOperator(PythonOperator):
    """Returns the task id (or ids) to follow; other direct downstream tasks are skipped."""

    operator_name = "BranchPythonOperator"
    flow = "branch"


class ShortCircuitOperator(PythonOperator):
    """Returns a truth value; when false, every downstream task is skipped."""

    operator_name = "ShortCircuitOperator"
    flow = "short_circuit"


def chain(*tasks):
    """`chain(a, [b, c], d)`: each element runs after the one before it."""
    for upstream, downstream in zip(tasks, tasks[1:]):
        if isinstance(upstream, (list, tuple)) and isinstance(downstream, (list, tuple)):
            if len(upstream) != len(downstream):
                raise BadArgumentError("chain() of two lists needs lists of the same length")
            for left, right in zip(upstream, downstream):
                left.set_downstream(right)
        elif isinstance(upstream, (list, tuple)):
            for left in upstream:
                left.set_downstream(downstream)
        else:
            upstream.set_downstream(downstream)

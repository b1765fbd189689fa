"""TaskFlow: `@task` turns a function into a task whose return value is its result; calling
it inside a DAG returns an XComArg that other tasks take as an argument (and so depend on)."""

import functools

from . import _context
from .exceptions import BadArgumentError
from .operators import PythonOperator, XComArg


class TaskFlowOperator(PythonOperator):
    operator_name = "@task"

    def __init__(self, *, flow="normal", expand_arguments=None, **arguments):
        super().__init__(**arguments)
        self.flow = flow
        self.expand_arguments = dict(expand_arguments or {})
        for value in self.expand_arguments.values():
            if isinstance(value, XComArg):
                value.operator.set_downstream(self)
        if len(self.expand_arguments) > 1:
            raise BadArgumentError(
                f"task `{self.task_id}` expands over {len(self.expand_arguments)} arguments; "
                "weft maps over one argument, combine the others with partial()"
            )
        for name, value in self.expand_arguments.items():
            if isinstance(value, XComArg):
                self.mapping = {"source": "upstream", "task_id": value.operator.task_id}
            elif isinstance(value, (list, tuple, dict)):
                self.mapping = {"source": "literal", "length": len(value)}
            else:
                raise BadArgumentError(
                    f"task `{self.task_id}`: expand({name}=...) needs a list or a task result"
                )

    def extra_json(self):
        if not self.expand_arguments:
            return {}
        [(name, value)] = self.expand_arguments.items()
        return {"expand_argument": name}

    def execute(self, context):
        from .templates import resolve_arguments

        if self.expand_arguments:
            [(name, source)] = self.expand_arguments.items()
            values = resolve_arguments(source, context)
            if isinstance(values, dict):
                values = list(values.items())
            index = context["ti"].map_index
            if not isinstance(values, list) or not 0 <= index < len(values):
                raise RuntimeError(
                    f"mapped task `{self.task_id}` has no element {index} to run with"
                )
            return self.call_callable(context, {name: values[index]})
        return self.call_callable(context, {})


_FLOW_OPERATOR_NAMES = {"normal": "@task", "branch": "@task.branch", "short_circuit": "@task.short_circuit"}


class TaskDecorator:
    """What `@task` returns: call it to add a task, or `.expand()` / `.partial()` / `.override()`."""

    def __init__(self, function, flow="normal", arguments=None, partial_kwargs=None):
        functools.update_wrapper(self, function)
        self.function = function
        self.flow = flow
        self.arguments = dict(arguments or {})
        self.partial_kwargs = dict(partial_kwargs or {})

    def _unique_task_id(self, dag):
        task_id = self.arguments.get("task_id") or self.function.__name__
        group = _context.current_group(dag)
        full = group.child_id(task_id) if group is not None else task_id
        if full not in dag.task_dict:
            return task_id
        counter = 1
        while f"{full}__{counter}" in dag.task_dict:
            counter += 1
        return f"{task_id}__{counter}"

    def _create(self, args, kwargs, expand_arguments=None):
        dag = self.arguments.get("dag") or _context.current_dag()
        if dag is None:
            raise BadArgumentError(
                f"@task `{self.function.__name__}` was called outside a DAG; call it inside "
                "`with DAG(...)` or a `@dag` function"
            )
        arguments = {key: value for key, value in self.arguments.items() if key != "task_id"}
        operator = TaskFlowOperator(
            task_id=self._unique_task_id(dag),
            python_callable=self.function,
            op_args=list(args),
            op_kwargs={**self.partial_kwargs, **kwargs},
            flow=self.flow,
            expand_arguments=expand_arguments,
            **arguments,
        )
        operator.operator_name = _FLOW_OPERATOR_NAMES[self.flow]
        if self.function.__doc__ and operator.doc_md is None:
            operator.doc_md = self.function.__doc__
        return XComArg(operator)

    def __call__(self, *args, **kwargs):
        return self._create(args, kwargs)

    def override(self, **arguments):
        return TaskDecorator(self.function, self.flow, {**self.arguments, **arguments}, self.partial_kwargs)

    def partial(self, **kwargs):
        return TaskDecorator(self.function, self.flow, self.arguments, {**self.partial_kwargs, **kwargs})

    def expand(self, **expand_arguments):
        return self._create((), {}, expand_arguments)


def _decorator(flow):
    def decorate(function=None, **arguments):
        if function is not None and callable(function) and not arguments:
            return TaskDecorator(function, flow)

        def wrap(inner):
            return TaskDecorator(inner, flow, arguments)

        return wrap

    return decorate


class _TaskNamespace:
    """`task`, `task.python`, `task.branch`, `task.short_circuit`."""

    def __init__(self):
        self._normal = _decorator("normal")
        self.python = self._normal
        self.branch = _decorator("branch")
        self.short_circuit = _decorator("short_circuit")

    def __call__(self, function=None, **arguments):
        return self._normal(function, **arguments)


task = _TaskNamespace()

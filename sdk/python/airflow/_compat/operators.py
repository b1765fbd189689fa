"""Airflow's standard operators with Airflow's run-time behaviour: Bash (env, append_env, exit
code 99 = skipped, last line as XCom, output_processor), Python (op_args/op_kwargs, context by
name or **kwargs, templates_dict and template files), the branching family, ShortCircuit,
Empty, LatestOnly, BranchDateTime and BranchDayOfWeek."""

import datetime as _dt
import inspect
import os
import signal
import subprocess
import tempfile

from weft.operators import call_with_context, callable_name

from .models import (
    AirflowException,
    AirflowSkipException,
    BaseOperator,
    WeekDay,
)
from .unsupported import unsupported

# Lines of a bash command's output kept in memory: only the last one is the result.
BASH_LINE_BYTES_MAX = 1024 * 1024


class EmptyOperator(BaseOperator):
    """Does nothing; weft marks it done without running anything, as Airflow does."""

    ui_color = "#e8f7e4"
    _is_empty = True

    def task_kind(self):
        return {"type": "empty"}

    @property
    def inherits_from_empty_operator(self):
        return True

    def execute(self, context):
        return None


DummyOperator = EmptyOperator


class BashOperator(BaseOperator):
    """Runs `bash -c bash_command` in a temporary folder (or `cwd`); the last line of output is
    the result; exit code 99 (`skip_on_exit_code`) marks the task skipped."""

    template_fields = ("bash_command", "env", "cwd")
    template_fields_renderers = {"bash_command": "bash", "env": "json"}
    template_ext = (".sh", ".bash")
    ui_color = "#f0ede4"

    def __init__(self, *, bash_command, env=None, append_env=False, output_encoding="utf-8",
                 skip_exit_code=None, skip_on_exit_code=99, cwd=None, output_processor=lambda x: x,
                 **kwargs):
        super().__init__(**kwargs)
        self.bash_command = bash_command
        self.env = env
        self.append_env = append_env
        self.output_encoding = output_encoding
        if skip_exit_code is not None:
            skip_on_exit_code = skip_exit_code
        if skip_on_exit_code is None:
            skip_on_exit_code = []
        elif isinstance(skip_on_exit_code, int):
            skip_on_exit_code = [skip_on_exit_code]
        self.skip_on_exit_code = list(skip_on_exit_code)
        self.cwd = cwd
        self.output_processor = output_processor

    def _environment(self, context):
        env = self.env
        if env is None:
            env = dict(os.environ)
        elif self.append_env:
            env = {**os.environ, **env}
        env = {str(key): str(value) for key, value in env.items()}
        env.update(airflow_context_env(context))
        return env

    def execute(self, context):
        command = self.bash_command
        if callable(command):
            command = command()
        if not isinstance(command, str) or not command.strip():
            raise AirflowException("bash_command must be a non-empty string")
        if self.cwd is not None:
            if not os.path.exists(self.cwd):
                raise AirflowException(f"Can not find the cwd: {self.cwd}")
            if not os.path.isdir(self.cwd):
                raise AirflowException(f"The cwd {self.cwd} must be a directory")
        code, last_line = run_bash(command, self._environment(context), self.cwd, self.output_encoding)
        if code in self.skip_on_exit_code:
            raise AirflowSkipException(f"Bash command returned exit code {code}. Skipping.")
        if code != 0:
            raise AirflowException(
                f"Bash command failed. The command returned a non-zero exit code {code}."
            )
        return self.output_processor(last_line)


def airflow_context_env(context):
    """The AIRFLOW_CTX_* variables Airflow gives to subprocesses."""
    ti = context["ti"]
    env = {
        "AIRFLOW_CTX_DAG_ID": ti.dag_id,
        "AIRFLOW_CTX_TASK_ID": ti.task_id,
        "AIRFLOW_CTX_DAG_RUN_ID": ti.run_id,
        "AIRFLOW_CTX_TRY_NUMBER": str(ti.try_number),
    }
    if context.get("logical_date") is not None:
        env["AIRFLOW_CTX_LOGICAL_DATE"] = context["logical_date"].isoformat()
    owner = getattr(context.get("task"), "owner", None)
    if owner:
        env["AIRFLOW_CTX_DAG_OWNER"] = str(owner)
    return env


def run_bash(command, env, cwd, encoding):
    """(exit code, last line of output) of `bash -c command`; output goes to the task log."""
    with tempfile.TemporaryDirectory(prefix="airflowtmp") as scratch:
        process = subprocess.Popen(
            ["bash", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd or scratch,
            env=env,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGPIPE, signal.SIG_DFL),
        )
        last_line = ""
        try:
            for raw in iter(lambda: process.stdout.readline(BASH_LINE_BYTES_MAX), b""):
                line = raw.decode(encoding, errors="backslashreplace").rstrip("\n")
                print(line, flush=True)
                last_line = line
            code = process.wait()
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    return code, last_line


class PythonOperator(BaseOperator):
    """Calls `python_callable(*op_args, **op_kwargs)`, adding context values it asks for."""

    template_fields = ("templates_dict", "op_args", "op_kwargs")
    template_fields_renderers = {"templates_dict": "json", "op_args": "py", "op_kwargs": "py"}
    ui_color = "#ffefeb"

    def __init__(self, *, python_callable, op_args=None, op_kwargs=None, templates_dict=None,
                 templates_exts=None, show_return_value_in_logs=True, **kwargs):
        if kwargs.get("provide_context") is not None:
            kwargs.pop("provide_context")  # Airflow 1.x; the context is always offered now
        super().__init__(**kwargs)
        if not callable(python_callable):
            raise AirflowException("`python_callable` param must be callable")
        refuse_unsupported_context(python_callable)
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        self.templates_dict = templates_dict
        if templates_exts:
            self.template_ext = tuple(templates_exts)
        self.show_return_value_in_logs = show_return_value_in_logs

    def callable_name(self):
        return callable_name(self.python_callable)

    def task_kind(self):
        return {"type": "python", "callable": self.callable_name()}

    def execute(self, context):
        context["templates_dict"] = self.templates_dict
        value = self.execute_callable(context)
        if self.show_return_value_in_logs:
            print(f"Done. Returned value was: {value}", flush=True)
        return value

    def execute_callable(self, context):
        return call_with_context(self.python_callable, self.op_args, self.op_kwargs, context)


# Context values Airflow offers that weft has no counterpart for yet: a callable that asks for
# one by name is refused when the DAG file is imported, not handed None at run time.
UNSUPPORTED_CONTEXT = {
    "task_state_store": "the task state store",
    "asset_state_store": "the asset state store",
    "triggering_asset_events": "asset events (data-aware scheduling)",
    "inlet_events": "asset events (data-aware scheduling)",
    "outlet_events": "asset events (data-aware scheduling)",
    "conn": "connections",
}


def refuse_unsupported_context(function):
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return
    for name in parameters:
        if name in UNSUPPORTED_CONTEXT:
            raise unsupported(
                f"the `{name}` context value ({UNSUPPORTED_CONTEXT[name]})",
                f"asked for by `{getattr(function, '__name__', function)}`",
            )


class BranchMixIn:
    """A branch task's result names the task ids (or group ids) to follow."""

    flow = "branch"

    def normalize_result(self, result, context):
        return expand_branch_ids(self, result)


def expand_branch_ids(task, result):
    if result is None:
        return []
    ids = [result] if isinstance(result, str) else list(result)
    expanded = []
    for task_id in ids:
        group = task.dag.task_groups.get(task_id)
        if group is not None and task_id not in task.dag.task_dict:
            expanded.extend(root.task_id for root in group.roots())
        else:
            if task_id not in task.dag.task_dict:
                raise AirflowException(
                    f"'branch_task_ids' must contain only valid task_ids. Invalid tasks found: {{'{task_id}'}}."
                )
            expanded.append(task_id)
    return expanded


class BranchPythonOperator(BranchMixIn, PythonOperator):
    pass


class BaseBranchOperator(BranchMixIn, BaseOperator):
    """Subclass it and write `choose_branch(context)`."""

    def choose_branch(self, context):
        raise NotImplementedError

    def execute(self, context):
        return self.choose_branch(context)


class ShortCircuitOperator(PythonOperator):
    """Skips everything downstream when the callable returns a falsy value; with
    `ignore_downstream_trigger_rules=False` only the direct downstream tasks are skipped and
    the rest follow their trigger rules (run as a branch that names none of them)."""

    ui_color = "#e8f7e4"

    def __init__(self, *, ignore_downstream_trigger_rules=True, **kwargs):
        super().__init__(**kwargs)
        self.ignore_downstream_trigger_rules = ignore_downstream_trigger_rules
        self.flow = "short_circuit" if ignore_downstream_trigger_rules else "branch"

    def normalize_result(self, result, context):
        if self.flow == "branch":
            return list(self.downstream_task_ids) if result else []
        return result

    def execute(self, context):
        value = super().execute(context)
        if not value:
            print("Condition result is falsy; skipping downstream tasks", flush=True)
        return value


class LatestOnlyOperator(BaseBranchOperator):
    """Lets downstream tasks run only in the run of the latest schedule interval (and in
    manual runs); other runs skip them."""

    ui_color = "#e9ffdb"

    def choose_branch(self, context):
        dag_run = context["dag_run"]
        downstream = list(self.downstream_task_ids)
        if dag_run.run_type == "manual":
            print("Manually triggered DAG_Run: allowing execution to proceed.", flush=True)
            return downstream
        left = context["data_interval_end"]
        right = next_interval_end(self.dag, left)
        now = _dt.datetime.now(_dt.timezone.utc)
        if right is None or not left < now <= right:
            print("Not latest execution, skipping downstream.", flush=True)
            return []
        return downstream


def next_interval_end(dag, after):
    """When the interval after the one ending at `after` ends, for a timedelta or cron schedule."""
    schedule = dag.schedule
    if isinstance(schedule, _dt.timedelta):
        return after + schedule
    if isinstance(schedule, str):
        from .cron import next_fire

        return next_fire(schedule, after, dag.timezone)
    return None


def _now_for(context, use_logical_date, timezone):
    if use_logical_date:
        now = context.get("logical_date") or context["dag_run"].run_after
    else:
        now = _dt.datetime.now(_dt.timezone.utc)
    return now


class BranchDateTimeOperator(BaseBranchOperator):
    """Follows one branch when now (or the logical date) is between two targets."""

    def __init__(self, *, follow_task_ids_if_true, follow_task_ids_if_false, target_lower=None,
                 target_upper=None, use_task_logical_date=False, **kwargs):
        super().__init__(**kwargs)
        if target_lower is None and target_upper is None:
            raise AirflowException("Both target_upper and target_lower are None. At least one must be defined.")
        self.follow_task_ids_if_true = follow_task_ids_if_true
        self.follow_task_ids_if_false = follow_task_ids_if_false
        self.target_lower = target_lower
        self.target_upper = target_upper
        self.use_task_logical_date = use_task_logical_date

    def choose_branch(self, context):
        import zoneinfo

        now = _now_for(context, self.use_task_logical_date, self.dag.timezone)
        lower, upper = _target_times_as_dates(now, self.target_lower, self.target_upper)
        zone = zoneinfo.ZoneInfo(self.dag.timezone)
        lower = _coerce(lower, zone)
        upper = _coerce(upper, zone)
        if upper is not None and upper < now:
            return self.follow_task_ids_if_false
        if lower is not None and lower > now:
            return self.follow_task_ids_if_false
        return self.follow_task_ids_if_true


def _coerce(moment, zone):
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=zone)
    return moment


def _target_times_as_dates(base, lower, upper):
    if isinstance(lower, _dt.datetime) and isinstance(upper, _dt.datetime):
        return lower, upper
    if lower is not None and isinstance(lower, _dt.time):
        lower = _dt.datetime.combine(base, lower)
    if upper is not None and isinstance(upper, _dt.time):
        upper = _dt.datetime.combine(base, upper)
    if lower is None or upper is None:
        return lower, upper
    if upper < lower:
        upper += _dt.timedelta(days=1)
    return lower, upper


class BranchDayOfWeekOperator(BaseBranchOperator):
    """Follows one branch on the given days of the week (in the DAG's time zone)."""

    def __init__(self, *, follow_task_ids_if_true, follow_task_ids_if_false, week_day,
                 use_task_logical_date=False, **kwargs):
        super().__init__(**kwargs)
        self.follow_task_ids_if_true = follow_task_ids_if_true
        self.follow_task_ids_if_false = follow_task_ids_if_false
        self.week_day = week_day
        self.use_task_logical_date = use_task_logical_date
        self._week_day_num = WeekDay.convert(week_day)

    def choose_branch(self, context):
        import zoneinfo

        if self.use_task_logical_date:
            now = context.get("logical_date") or context["dag_run"].run_after
        else:
            now = _dt.datetime.now(zoneinfo.ZoneInfo(self.dag.timezone)).replace(tzinfo=None)
        if now.isoweekday() in self._week_day_num:
            return self.follow_task_ids_if_true
        return self.follow_task_ids_if_false


def _refuse(name, feature):
    class Refused(BaseOperator):
        def __init__(self, *args, **kwargs):
            raise unsupported(feature)

    Refused.__name__ = Refused.__qualname__ = name
    return Refused


PythonVirtualenvOperator = _refuse("PythonVirtualenvOperator", "PythonVirtualenvOperator (run-time virtualenvs)")
ExternalPythonOperator = _refuse("ExternalPythonOperator", "ExternalPythonOperator")
BranchPythonVirtualenvOperator = _refuse("BranchPythonVirtualenvOperator", "BranchPythonVirtualenvOperator")
BranchExternalPythonOperator = _refuse("BranchExternalPythonOperator", "BranchExternalPythonOperator")


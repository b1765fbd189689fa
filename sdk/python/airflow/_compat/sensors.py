"""Sensors in poke mode: `BaseSensorOperator` (write `poke(context)`), `@task.sensor` and
`PokeReturnValue`. weft has no triggerer, so a sensor pokes in its runner until it is done or
times out; `mode="reschedule"` pokes the same way and so holds its worker slot meanwhile (the
final states are Airflow's). Deferrable sensors are refused."""

import time

from .models import AirflowSensorTimeout, AirflowSkipException, BaseOperator
from .unsupported import unsupported

# Longest sleep between two pokes, whatever poke_interval and backoff say.
POKE_SLEEP_MAX_S = 3600.0


class PokeReturnValue:
    """What a poke returns when it also has a value to push as the task's result."""

    def __init__(self, is_done, xcom_value=None):
        self.is_done = is_done
        self.xcom_value = xcom_value

    def __bool__(self):
        return bool(self.is_done)


class BaseSensorOperator(BaseOperator):
    ui_color = "#e6f1f2"

    def __init__(self, *, poke_interval=60, timeout=7 * 24 * 60 * 60, soft_fail=False,
                 mode="poke", exponential_backoff=False, max_wait=None, silent_fail=False,
                 never_fail=False, deferrable=False, **kwargs):
        if deferrable:
            raise unsupported("deferrable sensors", f"task `{kwargs.get('task_id')}`")
        if mode not in ("poke", "reschedule"):
            raise ValueError(f"The mode must be one of ('poke', 'reschedule'),'{kwargs.get('task_id')}' got {mode}.")
        super().__init__(**kwargs)
        self.poke_interval = poke_interval.total_seconds() if hasattr(poke_interval, "total_seconds") else float(poke_interval)
        self.timeout = timeout.total_seconds() if hasattr(timeout, "total_seconds") else float(timeout)
        self.soft_fail = soft_fail
        self.never_fail = never_fail
        self.silent_fail = silent_fail
        self.mode = mode
        self.exponential_backoff = exponential_backoff
        self.max_wait = max_wait.total_seconds() if hasattr(max_wait, "total_seconds") else max_wait

    def poke(self, context):
        raise NotImplementedError(f"{type(self).__name__} does not define poke(context)")

    def execute(self, context):
        started = time.monotonic()
        pokes = 0
        while True:
            outcome = self.poke(context)
            pokes += 1
            if outcome:
                return outcome.xcom_value if isinstance(outcome, PokeReturnValue) else None
            if time.monotonic() - started > self.timeout:
                message = f"Sensor has timed out; run duration of {time.monotonic() - started} seconds exceeds the specified timeout of {self.timeout}."
                if self.soft_fail or self.never_fail:
                    raise AirflowSkipException(message)
                raise AirflowSensorTimeout(message)
            interval = self.poke_interval
            if self.exponential_backoff:
                interval = min(interval * (2 ** pokes), self.max_wait or POKE_SLEEP_MAX_S)
            time.sleep(min(interval, POKE_SLEEP_MAX_S))


class PythonSensor(BaseSensorOperator):
    template_fields = ("templates_dict", "op_args", "op_kwargs")

    def __init__(self, *, python_callable, op_args=None, op_kwargs=None, templates_dict=None, **kwargs):
        super().__init__(**kwargs)
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        self.templates_dict = templates_dict

    def poke(self, context):
        from weft.operators import call_with_context

        context["templates_dict"] = self.templates_dict
        return call_with_context(self.python_callable, self.op_args, self.op_kwargs, context)


class BashSensor(BaseSensorOperator):
    """Done when the command exits 0 (or with `retry_exit_code` it keeps poking only on that
    code and fails on others)."""

    template_fields = ("bash_command", "env")

    def __init__(self, *, bash_command, env=None, output_encoding="utf-8", retry_exit_code=None, **kwargs):
        super().__init__(**kwargs)
        self.bash_command = bash_command
        self.env = env
        self.output_encoding = output_encoding
        self.retry_exit_code = retry_exit_code

    def poke(self, context):
        import os

        from .operators import run_bash

        env = None if self.env is None else {str(k): str(v) for k, v in self.env.items()}
        code, _ = run_bash(self.bash_command, env if env is not None else dict(os.environ), None,
                           self.output_encoding)
        if self.retry_exit_code is None:
            return code == 0
        if code == 0:
            return True
        if code == self.retry_exit_code:
            return False
        from .models import AirflowFailException

        raise AirflowFailException(f"Command exited with return code {code}")

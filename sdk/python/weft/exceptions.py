"""Errors a DAG file can raise while it is defined, and the exceptions task code raises to
skip or fail a task on purpose."""


class DagDefinitionError(Exception):
    """A DAG file defines something weft cannot run. `kind` names the problem for the
    import-error report (`cycle`, `bad_schedule`, ...)."""

    kind = "invalid_dag"

    def __init__(self, message, *, line=None):
        super().__init__(message)
        self.message = message
        # The line of the DAG file that caused the problem, when it is known better than the
        # traceback does (a cycle is found after the file ran).
        self.line = line


class CycleError(DagDefinitionError):
    kind = "cycle"


class DuplicateTaskIdError(DagDefinitionError):
    kind = "duplicate_task_id"


class DuplicateDagIdError(DagDefinitionError):
    kind = "duplicate_dag_id"


class BadScheduleError(DagDefinitionError):
    kind = "bad_schedule"


class UnknownTimezoneError(DagDefinitionError):
    kind = "unknown_timezone"


class BadArgumentError(DagDefinitionError):
    kind = "bad_argument"


class UnsupportedFeatureError(DagDefinitionError):
    """The DAG file uses something weft does not run yet; refusing it is better than a run
    that silently differs from what the author wrote."""

    kind = "unsupported"


class TaskSkipException(Exception):
    """Raise from task code to mark the task skipped (Airflow's AirflowSkipException)."""


class TaskFailException(Exception):
    """Raise from task code to fail the task at once, without retries (AirflowFailException)."""

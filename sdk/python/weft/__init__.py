"""weft: write DAGs in Python. `from weft import DAG, task, BashOperator`."""

from .dag import DAG, dag
from .decorators import task
from .exceptions import (
    BadScheduleError,
    CycleError,
    DagDefinitionError,
    DuplicateDagIdError,
    DuplicateTaskIdError,
    TaskFailException,
    TaskSkipException,
    UnknownTimezoneError,
)
from .operators import (
    BaseOperator,
    BashOperator,
    BranchPythonOperator,
    EmptyOperator,
    PythonOperator,
    ShortCircuitOperator,
    XComArg,
    chain,
)
from .params import Param
from .task_group import TaskGroup

__version__ = "0.1.0"

__all__ = [
    "DAG", "dag", "task", "Param", "TaskGroup", "BaseOperator", "BashOperator",
    "BranchPythonOperator", "EmptyOperator", "PythonOperator", "ShortCircuitOperator", "XComArg",
    "chain", "BadScheduleError", "CycleError", "DagDefinitionError", "DuplicateDagIdError",
    "DuplicateTaskIdError", "TaskFailException", "TaskSkipException", "UnknownTimezoneError",
]

"""What is being defined right now: the stack of open DAG and TaskGroup contexts, the DAGs a
file created while it was imported, and the line of the DAG file that is running."""

import os
import sys

_WEFT_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# The Airflow compatibility layer sits next to the package; its frames are not the DAG file's.
_AIRFLOW_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "airflow") + os.sep

# Open `with DAG(...)` / `with TaskGroup(...)` blocks, innermost last.
_stack = []

# DAG objects created since the loader started collecting, in creation order. The loader reads
# it after the import, so DAGs built inside functions (`@dag`) are found without globals.
_collected = None


def push(item):
    _stack.append(item)


def pop(item):
    if _stack and _stack[-1] is item:
        _stack.pop()
    elif item in _stack:
        _stack.remove(item)


def current_dag():
    from .dag import DAG

    for item in reversed(_stack):
        if isinstance(item, DAG):
            return item
        group_dag = getattr(item, "dag", None)
        if group_dag is not None:
            return group_dag
    return None


def current_group(dag):
    from .task_group import TaskGroup

    for item in reversed(_stack):
        if isinstance(item, TaskGroup) and item.dag is dag:
            return item
    return None


# Set while a task object is built only to run it (a mapped task's instance for one map
# index): it must not be added to its DAG, which already holds the mapped task.
_detached_depth = 0

# The template context of the task the runner is executing (`get_current_context()`).
_current_task_context = []


class detached:
    def __enter__(self):
        global _detached_depth
        _detached_depth += 1

    def __exit__(self, *exc_info):
        global _detached_depth
        _detached_depth -= 1
        return False


def is_detached():
    return _detached_depth > 0


def start_collecting():
    global _collected
    _collected = []
    _stack.clear()


def stop_collecting():
    global _collected
    dags, _collected = _collected or [], None
    _stack.clear()
    return dags


def record_dag(dag):
    if _collected is not None:
        _collected.append(dag)


def caller_line():
    """The line of the first frame outside the weft package: the DAG file's statement."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith((_WEFT_DIR, _AIRFLOW_DIR)) and "contextlib" not in filename:
            return frame.f_lineno
        frame = frame.f_back
    return None

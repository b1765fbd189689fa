"""Imports one DAG file in isolation (a fresh module name, the file's folder on sys.path) and
returns its DAGs, or the import error with its kind and the line of the DAG file to blame."""

import hashlib
import itertools
import os
import sys
import traceback
import types

from . import _context
from .exceptions import DagDefinitionError, DuplicateDagIdError

# A message longer than this is cut: it travels in one JSON line and is shown in the UI.
ERROR_MESSAGE_CHARS_MAX = 8_000

_module_counter = itertools.count()


class LoadResult:
    def __init__(self, path, dags, error):
        self.path = path
        self.dags = dags
        self.error = error

    @property
    def dags_by_id(self):
        return {dag.dag_id: dag for dag in self.dags}


def _error(kind, message, line, trace=None):
    if len(message) > ERROR_MESSAGE_CHARS_MAX:
        message = message[:ERROR_MESSAGE_CHARS_MAX] + " ... (cut)"
    error = {"kind": kind, "message": message, "line": line}
    if trace:
        error["traceback"] = trace[-ERROR_MESSAGE_CHARS_MAX:]
    return error


def _line_in_file(error, path):
    """The line of the last traceback frame that lies in the DAG file."""
    line = None
    for frame, lineno in traceback.walk_tb(error.__traceback__):
        if os.path.abspath(frame.f_code.co_filename) == path:
            line = lineno
    return line


def _module_name(path):
    digest = hashlib.sha1(path.encode()).hexdigest()[:12]
    return f"weft_dag_{digest}_{next(_module_counter)}"


def load_file(path):
    """Import the DAG file at `path`. Output of the file goes wherever stdout points; the
    processor and the runner point it away from their protocol channel first."""
    path = os.path.abspath(path)
    try:
        with open(path, "rb") as handle:
            source = handle.read()
    except OSError as error:
        return LoadResult(path, [], _error("unreadable", f"cannot read the file: {error}", None))
    try:
        code = compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as error:
        message = f"syntax error: {error.msg}"
        return LoadResult(path, [], _error("syntax", message, error.lineno))
    except ValueError as error:  # null bytes
        return LoadResult(path, [], _error("syntax", f"syntax error: {error}", None))

    module = types.ModuleType(_module_name(path))
    module.__file__ = path
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[module.__name__] = module
    _context.start_collecting()
    try:
        exec(code, module.__dict__)
        dags = _context.stop_collecting()
        for dag in dags:
            dag.fileloc = path
            dag.module = module
        _check(dags)
    except BaseException as error:  # noqa: B036 - a DAG file may even call sys.exit
        _context.stop_collecting()
        sys.modules.pop(module.__name__, None)
        if isinstance(error, KeyboardInterrupt):
            raise
        return LoadResult(path, [], _classify(error, path))
    return LoadResult(path, dags, None)


def _check(dags):
    seen = {}
    for dag in dags:
        if dag.dag_id in seen:
            raise DuplicateDagIdError(
                f"dag id `{dag.dag_id}` is defined twice in this file (lines "
                f"{seen[dag.dag_id].creation_line} and {dag.creation_line}); rename one",
                line=dag.creation_line,
            )
        seen[dag.dag_id] = dag
    for dag in dags:
        dag.check_cycle()


def _classify(error, path):
    trace = "".join(traceback.format_exception(error))
    line = _line_in_file(error, path)
    if isinstance(error, DagDefinitionError):
        return _error(error.kind, error.message, error.line or line, trace)
    if isinstance(error, SystemExit):
        return _error("exception", f"the file called sys.exit({error.code})", line, trace)
    message = f"{type(error).__name__}: {error}"
    return _error("exception", message, line, trace)


def load_specs(path):
    """The processor's answer for one file: `{"file", "dags", "error"}`."""
    result = load_file(path)
    if result.error is not None:
        return {"file": result.path, "dags": [], "error": result.error}
    try:
        specs = [dag.to_json() for dag in result.dags]
    except DagDefinitionError as error:
        return {"file": result.path, "dags": [], "error": _classify(error, result.path)}
    return {"file": result.path, "dags": specs, "error": None}

"""The Python task runner: `python -m weft.runner`, a warm worker process that runs Python
tasks one at a time for the Rust executor, speaking JSON lines on stdin/stdout.

Protocol (version 2). On start the runner writes one hello line:
    {"hello": "weft.runner", "protocol": 2, "pid": 123, "python": "3.11.7"}
then answers each request line with exactly one response line carrying the request's `id`:
    {"id": 1, "op": "run", "fileloc": "/dags/etl.py", "dag_id": "etl", "task_id": "load",
     "map_index": -1, "context": {TaskContext}, "log_path": "/logs/..", "log_bytes_max": 1048576}
    -> {"id": 1, "ok": true, "outcome": AttemptOutcome, "result": JSON | null,
        "log_bytes": 12, "log_truncated": false}
    {"id": 2, "op": "render", "context": {TaskContext}, "fields": {"bash_command": "echo {{ ds }}"}}
    -> {"id": 2, "ok": true, "fields": {"bash_command": "echo 2024-01-01"}}
    {"id": 3, "op": "ping"}      -> {"id": 3, "ok": true}
    {"id": 4, "op": "shutdown"}  -> {"id": 4, "ok": true}, then the runner exits
A request the runner cannot serve gets {"id": .., "ok": false, "error": "..."}.

Call-backs. While serving a `run` or `render` request, the runner may ask the node for what
only the node can read (a runner may run as another user, in a sandbox): it writes one call
line, which has a `call` member and no `id`, and reads the node's one-line reply from stdin
before it goes on; the response with the request's `id` still ends the request.
    {"call": "variable_get", "key": "x"}            -> {"reply": {"key", "value",
                                                         "description"} | null}
    {"call": "variable_set", "key": "x", "value": "v", "description": ""}
                                                     -> {"reply": {}}
    {"call": "variable_delete", "key": "x"}         -> {"reply": {"deleted": true}}
    {"call": "connection_get", "conn_id": "db"}     -> {"reply": {"conn_id", "conn_type",
        "description", "host", "schema", "login", "password", "port", "extra"} | null}
A call the node refuses (unknown, malformed, over the per-request budget, a store error) is
answered {"reply_error": "..."}; the task sees it as an exception. A task that uses no
variable or connection makes no call. `AIRFLOW_VAR_<KEY>` and `AIRFLOW_CONN_<ID>` environment
variables are read first, without a call (see `weft.secrets`).

Masking. Secret values a task fetched (variables with a sensitive key, connection passwords,
sensitive keys of connection extras) are written as `***` in its log (line by line, so a value
split across writes is still caught) and in its failure reason. A `render` response that used
such values carries them as `"mask": ["..."]`, for the node to mask the shell task's output;
the rendered fields themselves stay real, they are what runs.
A task that pushed XComs under other keys (`ti.xcom_push`, `multiple_outputs`) returns them
with its result as `{"__weft_xcoms__": {"return_value": .., "key": ..}}`; the outcome's
`branch`, `proceed` and `output_len` are still read from the return value alone.

DAG modules stay loaded between tasks (keyed by path, mtime and size): that is the point of a
warm runner. During a task, fd 1 and fd 2 lead into the task's log through a pipe, so output
of child processes is captured too and the byte limit holds for everything."""

import json
import logging
import os
import socket
import sys
import threading
import traceback

from . import secrets
from .exceptions import TaskFailException, TaskSkipException
from .loader import load_file
from .processor import protect_stdout
from .templates import XCOM_KEYS_MARKER, build_context, render_value

PROTOCOL_VERSION = 2
# Largest request line read; the context carries upstream results, so it may be large.
REQUEST_BYTES_MAX = 64 * 1024 * 1024
# Largest task result (JSON bytes); results are meant to be small (XCom).
RESULT_BYTES_MAX = 1024 * 1024
# Longest failure reason sent back (the traceback's end is kept).
REASON_CHARS_MAX = 32 * 1024
# DAG modules kept loaded; the least recently used is dropped first.
MODULES_CACHED_MAX = 64
# How long to wait for background children of a task to close the log pipe.
LOG_DRAIN_TIMEOUT_S = 1.0
# While secrets are masked the log is written line by line; a longer line without a newline
# is masked and written in pieces of this size.
LOG_LINE_BYTES_MAX = 64 * 1024

_modules = {}


# The environment variable naming the socket over which the node hands each task its log
# file, opened: a confined runner runs as a user that cannot reach the node's log directory.
LOG_SOCKET_VARIABLE = "WEFT_LOG_SOCKET_FD"
_log_socket = None


def receive_log_file():
    """The log file descriptor the node sent with this request."""
    global _log_socket
    if _log_socket is None:
        _log_socket = socket.socket(fileno=int(os.environ[LOG_SOCKET_VARIABLE]))
    _message, fds, _flags, _address = socket.recv_fds(_log_socket, 1, 1)
    if len(fds) != 1:
        raise OSError("the node sent no log file")
    return fds[0]


class LogCapture:
    """Sends fd 1 and fd 2 into the task's log file, counting bytes and stopping at a limit."""

    def __init__(self, path, bytes_max, fd=None):
        self.path = path
        self.fd = fd
        self.bytes_max = max(0, int(bytes_max))
        self.bytes_written = 0
        self.truncated = False
        self._closed = False
        self._lock = threading.Lock()
        # The end of the output after its last newline, held back while secrets are masked.
        self._pending = b""

    def __enter__(self):
        if self.fd is not None:
            self._file = os.fdopen(self.fd, "ab", buffering=0)
        else:
            folder = os.path.dirname(self.path)
            if folder:
                os.makedirs(folder, exist_ok=True)
            self._file = open(self.path, "ab", buffering=0)
        sys.stdout.flush()
        sys.stderr.flush()
        read_end, write_end = os.pipe()
        self._saved = (os.dup(1), os.dup(2))
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(write_end)
        self._thread = threading.Thread(target=self._drain, args=(read_end,), daemon=True)
        self._thread.start()
        return self

    def _drain(self, read_end):
        try:
            while True:
                data = os.read(read_end, 65536)
                if not data:
                    break
                self._write(data)
        finally:
            os.close(read_end)

    def _write(self, data):
        with self._lock:
            if self._closed:
                return
            if self._pending or secrets.has_masks():
                # Whole lines only, so that a secret split across two writes is still masked.
                data = self._pending + data
                cut = data.rfind(b"\n") + 1
                if not cut and len(data) < LOG_LINE_BYTES_MAX:
                    self._pending = data
                    return
                cut = cut or len(data)
                data, self._pending = _mask_bytes(data[:cut]), data[cut:]
            self._emit(data)

    def _emit(self, data):
        """Writes `data` (under the lock), up to the byte limit."""
        room = self.bytes_max - self.bytes_written
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
        if data:
            self._file.write(data)
            self.bytes_written += len(data)

    def __exit__(self, *exc_info):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        os.close(self._saved[0])
        os.close(self._saved[1])
        # A child the task left running may keep the pipe open; stop logging it after a while.
        self._thread.join(LOG_DRAIN_TIMEOUT_S)
        with self._lock:
            if self._pending:
                self._emit(_mask_bytes(self._pending))
                self._pending = b""
            self._closed = True
            self._file.close()
        return False


def _mask_bytes(data):
    for value in secrets.masks():
        data = data.replace(value.encode("utf-8", "surrogateescape"), secrets.MASK.encode())
    return data


def load_dag_module(path):
    stat = os.stat(path)
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _modules.pop(path, None)
    if cached is not None and cached[0] == key:
        _modules[path] = cached
        return cached[1]
    result = load_file(path)
    _modules[path] = (key, result)
    while len(_modules) > MODULES_CACHED_MAX:
        _modules.pop(next(iter(_modules)))
    return result


def _failed(reason, retryable=True):
    reason = secrets.mask_text(reason)
    if len(reason) > REASON_CHARS_MAX:
        reason = "..." + reason[-REASON_CHARS_MAX:]
    return {"Failed": {"reason": reason, "retryable": retryable}}


def _find_task(request):
    """(task, dag) for the request, or raise LookupError with what to fix."""
    path = request.get("fileloc") or request["context"].get("fileloc")
    if not path:
        raise LookupError("the task has no DAG file (fileloc); only DAG-file tasks run in Python")
    loaded = load_dag_module(path)
    if loaded.error is not None:
        error = loaded.error
        raise LookupError(
            f"cannot import DAG file {path} (line {error.get('line')}): {error['message']}"
        )
    dag = loaded.dags_by_id.get(request["dag_id"])
    if dag is None:
        raise LookupError(f"DAG file {path} defines no dag `{request['dag_id']}`")
    task = dag.task_dict.get(request["task_id"])
    if task is None:
        raise LookupError(f"dag `{dag.dag_id}` has no task `{request['task_id']}`")
    return task, dag


def _success(task, value, pushed=None):
    """The outcome and result JSON of a task that returned `value` and pushed `pushed`
    (other XCom keys) on the way."""
    if not task.do_xcom_push and task.flow == "normal" and not pushed:
        return {"Success": {"branch": None, "proceed": None, "output_len": None}}, None
    try:
        text = json.dumps(value, allow_nan=False)
        pushed_text = json.dumps(pushed or {}, allow_nan=False)
    except (TypeError, ValueError) as error:
        return _failed(
            f"the task returned a value that is not JSON-serializable ({error}); return "
            "plain dicts, lists, strings, numbers, booleans or None"
        ), None
    if len(text) + len(pushed_text) > RESULT_BYTES_MAX:
        return _failed(
            f"the task returned {len(text) + len(pushed_text)} bytes of JSON, more than the "
            f"{RESULT_BYTES_MAX} byte limit; store large data elsewhere and return a reference"
        ), None
    result = json.loads(text)
    branch = proceed = None
    if task.flow == "branch":
        branch = [] if result is None else [result] if isinstance(result, str) else result
        if not isinstance(branch, list) or not all(isinstance(item, str) for item in branch):
            return _failed("a branch task must return a task id or a list of task ids", False), None
    elif task.flow == "short_circuit":
        proceed = bool(value)
    output_len = len(result) if isinstance(result, list) else None
    success = {"Success": {"branch": branch, "proceed": proceed, "output_len": output_len}}
    stored = result if task.do_xcom_push else None
    if pushed:
        keys = json.loads(pushed_text)
        if task.do_xcom_push:
            keys["return_value"] = result
        stored = {XCOM_KEYS_MARKER: keys}
    return success, stored


def _execute(request):
    """(outcome, result) of running the requested task."""
    try:
        task, dag = _find_task(request)
    except (LookupError, OSError) as error:
        print(f"weft: {error}", file=sys.stderr)
        return _failed(str(error)), None
    context = build_context(request["context"], dag=dag, task=task)
    try:
        value = task.run_attempt(context)
    except TaskSkipException as error:
        print(f"weft: task skipped: {error}", file=sys.stderr)
        return "Skipped", None
    except TaskFailException as error:
        traceback.print_exc()
        return _failed(f"{type(error).__name__}: {error}", retryable=False), None
    except BaseException as error:  # noqa: B036 - the task's code may even call sys.exit
        if isinstance(error, KeyboardInterrupt):
            raise
        trace = traceback.format_exc()
        sys.stderr.write(trace)
        return _failed(trace), None
    return _success(task, value, context["ti"].pushed)


def handle_run(request):
    fd = receive_log_file() if request.get("log_fd") else None
    capture = LogCapture(
        request.get("log_path"), request.get("log_bytes_max", 16 * 1024 * 1024), fd=fd
    )
    with capture:
        outcome, result = _execute(request)
    return {
        "ok": True,
        "outcome": outcome,
        "result": result,
        "log_bytes": capture.bytes_written,
        "log_truncated": capture.truncated,
    }


def handle_render(request):
    task_context = request["context"]
    dag = task = None
    path = task_context.get("fileloc")
    if path and os.path.exists(path):
        # User-defined macros and filters live in the DAG; render without them if it is broken.
        loaded = load_dag_module(path)
        dag = loaded.dags_by_id.get(task_context.get("dag_id"))
        task = dag.task_dict.get(task_context.get("task_id")) if dag is not None else None
    context = build_context(task_context, dag=dag, task=task)
    try:
        fields = render_value(request.get("fields"), context)
    except Exception as error:  # a template error is the author's; say which and why
        message = f"cannot render template: {type(error).__name__}: {error}"
        return {"ok": False, "error": secrets.mask_text(message)}
    answer = {"ok": True, "fields": fields}
    if secrets.has_masks():
        answer["mask"] = secrets.masks()
    return answer


def handle(request, stdin=None, channel=None):
    operation = request.get("op")
    if operation in ("run", "render"):
        # Each attempt masks what it fetched itself; calls reach the node only meanwhile.
        secrets.reset_masks()
        if channel is not None:
            secrets.attach(stdin, channel)
        try:
            return handle_run(request) if operation == "run" else handle_render(request)
        finally:
            secrets.detach()
    if operation in ("ping", "shutdown"):
        return {"ok": True}
    return {"ok": False, "error": f"unknown op `{operation}`; use run, render, ping or shutdown"}


def serve(stdin, channel):
    channel.write(
        json.dumps(
            {
                "hello": "weft.runner",
                "protocol": PROTOCOL_VERSION,
                "pid": os.getpid(),
                "python": sys.version.split()[0],
            }
        )
        + "\n"
    )
    channel.flush()
    while True:
        line = stdin.readline(REQUEST_BYTES_MAX + 1)
        if not line:
            return 0
        if len(line) > REQUEST_BYTES_MAX:
            answer = {"id": None, "ok": False, "error": f"request longer than {REQUEST_BYTES_MAX} bytes"}
            channel.write(json.dumps(answer) + "\n")
            channel.flush()
            return 1
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
        except ValueError as error:
            answer = {"id": None, "ok": False, "error": f"request is not JSON: {error}"}
        else:
            try:
                answer = handle(request, stdin, channel)
            except Exception as error:  # a malformed request must not kill a warm runner
                answer = {"ok": False, "error": f"bad request: {type(error).__name__}: {error}"}
            answer["id"] = request.get("id")
        channel.write(json.dumps(answer, allow_nan=False) + "\n")
        channel.flush()
        if isinstance(request, dict) and request.get("op") == "shutdown":
            return 0


def main():
    channel = protect_stdout()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="[%(asctime)s] {%(filename)s:%(lineno)d} %(levelname)s - %(message)s",
    )
    return serve(sys.stdin.buffer, channel)


if __name__ == "__main__":
    sys.exit(main())

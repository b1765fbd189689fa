"""The task runner end to end: a real `python -m weft.runner` process and its protocol."""

import json
import os
import subprocess
import sys

import pytest

from conftest import SDK

DAG_TEXT = '''
from weft import DAG, task, PythonOperator, TaskSkipException

def greet(name, ds=None, **context):
    print("hello", name, ds, context["params"]["who"])
    return {"name": name, "run": context["run_id"]}

with DAG("r", user_defined_macros={"answer": 42}):
    @task
    def source():
        return [1, 2, 3]

    @task
    def total(values, ti=None):
        return sum(values) + ti.xcom_pull(task_ids="source")[0]

    @task.branch
    def pick():
        return "total"

    @task
    def double(x):
        return 2 * x

    @task
    def skipper():
        raise TaskSkipException("later")

    @task
    def bad_result():
        return {1, 2}

    total(source()) << pick()
    double.expand(x=source.override(task_id="numbers")())
    skipper()
    bad_result()
    PythonOperator(task_id="greet", python_callable=greet, op_args=["{{ params.who }}"])
'''


def context(fileloc, task_id, xcoms=None, map_index=-1):
    return {
        "dag_id": "r", "task_id": task_id, "run_id": "manual__1", "map_index": map_index,
        "try_number": 1, "max_tries": 1, "run_type": "manual",
        "logical_date": "2024-03-05T00:00:00Z", "data_interval_start": "2024-03-04T00:00:00Z",
        "data_interval_end": "2024-03-05T00:00:00Z", "params": {"who": "world"},
        "conf": {"k": "v"}, "xcoms": xcoms or {}, "fileloc": fileloc, "timezone": "UTC",
    }


class Runner:
    def __init__(self):
        env = {**os.environ, "PYTHONPATH": SDK}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "weft.runner"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, text=True,
        )
        self.hello = json.loads(self.process.stdout.readline())
        self.next_id = 0

    def request(self, **request):
        self.next_id += 1
        request["id"] = self.next_id
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        assert answer["id"] == self.next_id
        return answer

    def run(self, fileloc, task_id, log_path, xcoms=None, map_index=-1, log_bytes_max=1 << 20):
        return self.request(op="run", fileloc=fileloc, dag_id="r", task_id=task_id,
                            map_index=map_index, context=context(fileloc, task_id, xcoms, map_index),
                            log_path=str(log_path), log_bytes_max=log_bytes_max)

    def close(self):
        self.request(op="shutdown")
        assert self.process.wait(timeout=10) == 0


@pytest.fixture
def runner():
    started = Runner()
    yield started
    started.close()


SUCCESS = {"Success": {"branch": None, "proceed": None, "output_len": None}}


def test_hello_names_the_protocol(runner):
    assert runner.hello["hello"] == "weft.runner" and runner.hello["protocol"] == 2


def test_taskflow_result_from_upstream_results(runner, dag_file, tmp_path):
    path = dag_file(DAG_TEXT)
    answer = runner.run(path, "source", tmp_path / "source.log")
    assert answer["outcome"] == {"Success": {"branch": None, "proceed": None, "output_len": 3}}
    assert answer["result"] == [1, 2, 3]
    answer = runner.run(path, "total", tmp_path / "total.log", xcoms={"source": [1, 2, 3]})
    assert (answer["outcome"], answer["result"]) == (SUCCESS, 7)


def test_branch_and_mapped_tasks(runner, dag_file, tmp_path):
    path = dag_file(DAG_TEXT)
    answer = runner.run(path, "pick", tmp_path / "pick.log")
    assert answer["outcome"]["Success"]["branch"] == ["total"]
    answer = runner.run(path, "double", tmp_path / "d.log", xcoms={"numbers": [5, 6]}, map_index=1)
    assert answer["result"] == 12


def test_python_operator_gets_context_and_rendered_arguments(runner, dag_file, tmp_path):
    path = dag_file(DAG_TEXT)
    log = tmp_path / "logs" / "greet.log"
    answer = runner.run(path, "greet", log)
    assert answer["result"] == {"name": "world", "run": "manual__1"}
    assert log.read_text() == "hello world 2024-03-05 world\n"
    assert answer["log_bytes"] == len("hello world 2024-03-05 world\n")


def test_log_limit_truncates(runner, dag_file, tmp_path):
    path = dag_file(DAG_TEXT)
    log = tmp_path / "greet.log"
    answer = runner.run(path, "greet", log, log_bytes_max=5)
    assert (answer["log_bytes"], answer["log_truncated"]) == (5, True)
    assert log.read_text() == "hello"


def test_skip_and_unserializable_result(runner, dag_file, tmp_path):
    path = dag_file(DAG_TEXT)
    assert runner.run(path, "skipper", tmp_path / "s.log")["outcome"] == "Skipped"
    failed = runner.run(path, "bad_result", tmp_path / "b.log")["outcome"]["Failed"]
    assert "not JSON-serializable" in failed["reason"]


def test_render_uses_the_template_context(runner, dag_file):
    path = dag_file(DAG_TEXT)
    fields = {
        "bash_command": "echo {{ ds }} {{ ds_nodash }} {{ ts }} {{ params.who }} {{ answer }}",
        "env": {"CONF": "{{ dag_run.conf.k }}", "KEY": "{{ task_instance_key_str }}",
                "START": "{{ data_interval_start }}", "LOGICAL": "{{ logical_date }}",
                "RUN": "{{ run_id }}"},
    }
    answer = runner.request(op="render", context=context(path, "greet"), fields=fields)
    assert answer["ok"], answer
    assert answer["fields"] == {
        "bash_command": "echo 2024-03-05 20240305 2024-03-05T00:00:00+00:00 world 42",
        "env": {"CONF": "v", "KEY": "r__greet__20240305", "START": "2024-03-04 00:00:00+00:00",
                "LOGICAL": "2024-03-05 00:00:00+00:00", "RUN": "manual__1"},
    }
    answer = runner.request(op="render", context=context(path, "greet"), fields="{{ nope }}")
    assert not answer["ok"] and "nope" in answer["error"]


def test_module_stays_loaded_until_the_file_changes(runner, dag_file, tmp_path):
    path = dag_file("import itertools\nfrom weft import DAG, task\nCOUNT = itertools.count()\n"
                    "with DAG('r'):\n    @task\n    def n():\n        return next(COUNT)\n    n()\n")
    results = [runner.run(path, "n", tmp_path / "n.log")["result"] for _ in range(3)]
    assert results == [0, 1, 2]
    with open(path, "a") as handle:
        handle.write("# changed\n")
    assert runner.run(path, "n", tmp_path / "n.log")["result"] == 0


def test_bad_requests_keep_the_runner_alive(runner):
    assert runner.request(op="fly")["ok"] is False
    assert runner.request(op="run")["ok"] is False
    assert runner.request(op="ping") == {"ok": True, "id": runner.next_id}

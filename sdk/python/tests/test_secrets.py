"""Variables and Connections: Airflow's API over environment variables and the node's store,
the runner's call-back channel (with a fake node answering calls), templates and masking."""

import json
import os
import subprocess
import sys

import pytest

from conftest import SDK

from airflow.exceptions import AirflowException, AirflowNotFoundException
from weft import secrets
from weft.templates import build_context, render_value

TOKEN = "tok-5ecr3t-value"
PASSWORD = "pg-pa55word"

DAG_TEXT = '''
import os, sys, time
from airflow.sdk import DAG, task, Variable, BaseHook
from airflow.hooks.base import BaseHook as Airflow2Hook
from airflow.models.connection import Connection

with DAG("s"):
    @task
    def use_secrets():
        token = Variable.get("api_token")
        print("token is", token)
        Variable.set("written", {"n": 1}, description="by a task", serialize_json=True)
        connection = BaseHook.get_connection("db")
        assert Airflow2Hook.get_connection("db").host == connection.host
        print("password is", connection.password)
        print("extra key is", connection.extra_dejson["api_key"])
        return {"deleted": Variable.delete("gone"), "host": connection.host,
                "port": connection.port, "json": Variable.get("config", deserialize_json=True),
                "missing": Variable.get("nope", default="fallback"),
                "uri": Connection.get("db").get_uri()}

    @task
    def missing():
        try:
            Variable.get("nope")
        except KeyError as error:
            print("key error", error)
        try:
            BaseHook.get_connection("nope")
        except Exception as error:
            return type(error).__name__

    @task
    def split_write():
        token = Variable.get("api_token")
        half = len(token) // 2
        os.write(1, ("pw=" + token[:half]).encode())
        time.sleep(0.1)
        os.write(2, (token[half:] + " end\\n").encode())
        os.write(1, b"tail without newline " + token.encode())

    @task
    def fail_with_secret():
        raise ValueError("cannot log in with " + BaseHook.get_connection("db").password)

    @task
    def plain():
        print("no secrets here")
        return 1

    @task
    def refused():
        try:
            Variable.set("x", "y")
        except Exception as error:
            return f"{type(error).__name__}: {error}"

    for make in (use_secrets, missing, split_write, fail_with_secret, plain, refused):
        make()
'''


def context(fileloc, task_id):
    return {
        "dag_id": "s", "task_id": task_id, "run_id": "manual__1", "map_index": -1,
        "try_number": 1, "max_tries": 1, "run_type": "manual",
        "logical_date": "2024-03-05T00:00:00Z", "data_interval_start": "2024-03-04T00:00:00Z",
        "data_interval_end": "2024-03-05T00:00:00Z", "params": {}, "conf": {}, "xcoms": {},
        "fileloc": fileloc, "timezone": "UTC",
    }


class FakeNode:
    """A runner process and the node's side of its channel: answers calls from dicts."""

    def __init__(self, env=None):
        self.variables = {"api_token": TOKEN, "gone": "soon", "config": '{"a": [1, 2]}'}
        self.connections = {"db": {
            "conn_id": "db", "conn_type": "postgres", "description": "", "host": "db.example.com",
            "schema": "warehouse", "login": "etl", "password": PASSWORD, "port": 5432,
            "extra": json.dumps({"api_key": "extra-k3y-value", "region": "eu"}),
        }}
        self.calls = []
        self.refuse = None
        environment = {key: value for key, value in os.environ.items()
                       if not key.startswith(("AIRFLOW_VAR_", "AIRFLOW_CONN_"))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "weft.runner"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**environment, "PYTHONPATH": SDK, **(env or {})}, text=True,
        )
        self.hello = json.loads(self.process.stdout.readline())
        self.next_id = 0

    def answer(self, call):
        if self.refuse:
            return {"reply_error": self.refuse}
        name = call["call"]
        if name == "variable_get":
            value = self.variables.get(call["key"])
            return {"reply": None if value is None else
                    {"key": call["key"], "value": value, "description": ""}}
        if name == "variable_set":
            self.variables[call["key"]] = call["value"]
            return {"reply": {}}
        if name == "variable_delete":
            return {"reply": {"deleted": self.variables.pop(call["key"], None) is not None}}
        if name == "connection_get":
            return {"reply": self.connections.get(call["conn_id"])}
        return {"reply_error": f"unknown call `{name}`"}

    def request(self, **request):
        self.next_id += 1
        request["id"] = self.next_id
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        while True:
            line = json.loads(self.process.stdout.readline())
            if "call" not in line:
                assert line["id"] == self.next_id
                return line
            self.calls.append(line)
            self.process.stdin.write(json.dumps(self.answer(line)) + "\n")
            self.process.stdin.flush()

    def run(self, fileloc, task_id, log_path):
        return self.request(op="run", fileloc=fileloc, dag_id="s", task_id=task_id, map_index=-1,
                            context=context(fileloc, task_id), log_path=str(log_path),
                            log_bytes_max=1 << 20)

    def close(self):
        self.request(op="shutdown")
        assert self.process.wait(timeout=10) == 0


@pytest.fixture
def node():
    started = FakeNode()
    yield started
    started.close()


def test_hello_names_protocol_2(node):
    assert node.hello["protocol"] == 2


def test_a_task_reads_writes_and_deletes_through_the_node(node, dag_file, tmp_path):
    path = dag_file(DAG_TEXT)
    log = tmp_path / "use.log"
    answer = node.run(path, "use_secrets", log)
    assert answer["outcome"] == {"Success": {"branch": None, "proceed": None, "output_len": None}}, \
        log.read_text()
    result = answer["result"]
    assert result["deleted"] == 1 and result["host"] == "db.example.com" and result["port"] == 5432
    assert result["json"] == {"a": [1, 2]} and result["missing"] == "fallback"
    assert result["uri"].startswith(f"postgres://etl:{PASSWORD}@db.example.com:5432/warehouse?")
    assert node.variables["written"] == '{\n  "n": 1\n}' and "gone" not in node.variables
    names = [call["call"] for call in node.calls]
    assert names == ["variable_get", "variable_set", "connection_get", "connection_get",
                     "variable_delete", "variable_get", "variable_get", "connection_get"]
    assert node.calls[1] == {"call": "variable_set", "key": "written", "value": '{\n  "n": 1\n}',
                             "description": "by a task"}
    text = log.read_text()
    assert "token is ***\n" in text and "password is ***\n" in text, text
    assert "extra key is ***\n" in text, text
    assert TOKEN not in text and PASSWORD not in text and "extra-k3y-value" not in text


def test_missing_variable_and_connection_raise_as_in_airflow(node, dag_file, tmp_path):
    path = dag_file(DAG_TEXT)
    log = tmp_path / "missing.log"
    answer = node.run(path, "missing", log)
    assert answer["result"] == "AirflowNotFoundException"
    assert "key error 'Variable nope does not exist'" in log.read_text()


def test_environment_variables_come_first_and_make_no_call(dag_file, tmp_path):
    conn = json.dumps({"conn_type": "postgres", "host": "env-host", "password": "env-pa55",
                       "port": "6543", "extra": {"api_key": "env-extra-key"}})
    node = FakeNode(env={"AIRFLOW_VAR_API_TOKEN": "env-t0ken-value", "AIRFLOW_CONN_DB": conn,
                         "AIRFLOW_VAR_CONFIG": "[3]"})
    try:
        path = dag_file(DAG_TEXT)
        log = tmp_path / "env.log"
        answer = node.run(path, "use_secrets", log)
        assert answer["result"]["host"] == "env-host" and answer["result"]["port"] == 6543
        assert answer["result"]["json"] == [3]
        names = [call["call"] for call in node.calls]
        assert "connection_get" not in names
        assert [call.get("key") for call in node.calls if call["call"] == "variable_get"] == ["nope"]
        text = log.read_text()
        assert "token is ***" in text and "password is ***" in text and "env-t0ken" not in text
    finally:
        node.close()


def test_a_task_without_secrets_makes_no_call(node, dag_file, tmp_path):
    path = dag_file(DAG_TEXT)
    assert node.run(path, "plain", tmp_path / "plain.log")["result"] == 1
    answer = node.request(op="render", context=context(path, "plain"), fields={"c": "echo {{ ds }}"})
    assert answer == {"ok": True, "fields": {"c": "echo 2024-03-05"}, "id": node.next_id}
    assert node.calls == []


def test_a_secret_split_across_two_writes_is_masked(node, dag_file, tmp_path):
    path = dag_file(DAG_TEXT)
    log = tmp_path / "split.log"
    node.run(path, "split_write", log)
    text = log.read_text()
    assert text.startswith("pw=*** end\ntail without newline ***"), text
    assert "tok-" not in text and "value" not in text.replace("Returned value", ""), text


def test_a_failure_reason_is_masked(node, dag_file, tmp_path):
    path = dag_file(DAG_TEXT)
    log = tmp_path / "fail.log"
    reason = node.run(path, "fail_with_secret", log)["outcome"]["Failed"]["reason"]
    assert "cannot log in with ***" in reason and PASSWORD not in reason
    assert PASSWORD not in log.read_text()


def test_masks_do_not_leak_into_the_next_task(node, dag_file, tmp_path):
    path = dag_file(DAG_TEXT)
    node.run(path, "use_secrets", tmp_path / "one.log")
    answer = node.request(op="render", context=context(path, "plain"), fields=f"{TOKEN}")
    assert answer["fields"] == TOKEN and "mask" not in answer


def test_a_refused_call_is_an_error_of_the_task(node, dag_file, tmp_path):
    path = dag_file(DAG_TEXT)
    node.refuse = "the store is down"
    answer = node.run(path, "refused", tmp_path / "refused.log")
    assert answer["result"] == "AirflowException: cannot set variable x: the store is down"
    assert node.request(op="ping")["ok"] is True


def test_render_fetches_lazily_and_returns_what_to_mask(node, dag_file):
    path = dag_file(DAG_TEXT)
    fields = {
        "bash_command": "echo {{ var.value.api_token }} {{ conn.db.host }} {{ var.json.config.a[1] }}",
        "env": {"PW": "{{ conn.db.password }}", "D": "{{ var.value.get('nope', 'fallback') }}",
                "C": "{{ conn.get('nope') }}", "L": "{{ conn.get('db').login }}"},
    }
    answer = node.request(op="render", context=context(path, "plain"), fields=fields)
    assert answer["ok"], answer
    assert answer["fields"] == {
        "bash_command": f"echo {TOKEN} db.example.com 2",
        "env": {"PW": PASSWORD, "D": "fallback", "C": "None", "L": "etl"},
    }
    assert sorted(answer["mask"]) == sorted([TOKEN, PASSWORD, "extra-k3y-value"])
    answer = node.request(op="render", context=context(path, "plain"),
                          fields="{{ var.value.nope }}")
    assert not answer["ok"] and "Variable nope does not exist" in answer["error"]


# ---- in-process: the API outside a runner ---------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith(("AIRFLOW_VAR_", "AIRFLOW_CONN_")):
            monkeypatch.delenv(key)
    secrets.reset_masks()
    yield monkeypatch
    secrets.reset_masks()


def test_variable_get_follows_airflow_outside_a_runner(clean_env):
    from airflow.models import Variable
    from airflow.models.variable import Variable as ByModule
    from airflow.sdk import Variable as Sdk

    assert Variable is ByModule is Sdk
    clean_env.setenv("AIRFLOW_VAR_COLOR", "blue")
    clean_env.setenv("AIRFLOW_VAR_SETTINGS", '{"n": 3}')
    assert Variable.get("color") == "blue"
    assert Variable.get("settings", deserialize_json=True) == {"n": 3}
    assert Variable.get("absent", "d1") == "d1"
    assert Variable.get("absent", default_var=None) is None
    assert Variable.get("absent", default="d3") == "d3"
    with pytest.raises(KeyError) as raised:
        Variable.get("absent")
    assert raised.value.args == ("Variable absent does not exist",)
    with pytest.raises(AirflowException, match="AIRFLOW_VAR_<KEY>"):
        Variable.set("color", "red")
    with pytest.raises(AirflowException, match="only a task run"):
        Variable.delete("color")


def test_connections_from_uris_and_json(clean_env):
    from airflow.hooks.base import BaseHook
    from airflow.models import Connection
    from airflow.models.connection import Connection as ByModule
    from airflow.sdk import BaseHook as SdkHook, Connection as Sdk

    assert Connection is ByModule is Sdk and BaseHook is SdkHook
    clean_env.setenv("AIRFLOW_CONN_PG",
                     "postgres-sql://us%40er:p%2Fss+w@db.example.com:5432/wh?sslmode=require&x=a+b")
    connection = BaseHook.get_connection("pg")
    assert (connection.conn_type, connection.login, connection.password) == ("postgres_sql", "us@er", "p/ss+w")
    assert (connection.host, connection.port, connection.schema) == ("db.example.com", 5432, "wh")
    assert connection.extra_dejson == {"sslmode": "require", "x": "a b"}
    again = Connection(conn_id="pg", uri=connection.get_uri())
    assert again.get_uri() == connection.get_uri() and again.password == "p/ss+w"
    assert again.extra_dejson == connection.extra_dejson
    clean_env.setenv("AIRFLOW_CONN_API", json.dumps({
        "conn_type": "http", "host": "api.example.com", "login": "me", "password": "pw-12345",
        "extra": {"token": "t0k3n-xyz", "timeout": 5}}))
    api = Connection.get("api")
    assert (api.conn_type, api.host, api.port) == ("http", "api.example.com", None)
    assert api.extra_dejson == {"token": "t0k3n-xyz", "timeout": 5}
    assert set(secrets.masks()) == {"p/ss+w", "pw-12345", "t0k3n-xyz"}
    bare = Connection(conn_id="x", uri="aws://")
    assert (bare.conn_type, bare.host, bare.login, bare.extra_dejson) == ("aws", None, None, {})
    with pytest.raises(AirflowException, match="not both"):
        Connection(conn_id="x", uri="http://h", host="h")
    with pytest.raises(ValueError, match="port"):
        secrets.parse_uri("x", "http://h:99999")
    with pytest.raises(AirflowNotFoundException, match="AIRFLOW_CONN_ABSENT"):
        BaseHook.get_connection("absent")


def test_templates_read_var_and_conn_lazily(clean_env):
    clean_env.setenv("AIRFLOW_VAR_BUCKET", "my-bucket")
    clean_env.setenv("AIRFLOW_VAR_DB_PASSWORD", "hunter2-long")
    clean_env.setenv("AIRFLOW_CONN_WH", "mysql://root:r00t-pass@wh.internal:3306/sales")
    template_context = build_context(context("/nonexistent.py", "t"))
    assert not secrets.has_masks()
    rendered = render_value({
        "a": "{{ var.value.bucket }}/{{ var.value.get('absent', 'x') }}",
        "b": "{{ conn.wh.host }}:{{ conn.wh.port }} {{ conn.get('absent') }}",
    }, template_context)
    assert rendered == {"a": "my-bucket/x", "b": "wh.internal:3306 None"}
    # A non-sensitive variable is not masked; a connection's password is, once fetched.
    assert secrets.masks() == ["r00t-pass"]
    assert render_value("{{ var.value.db_password }}", template_context) == "hunter2-long"
    assert secrets.mask_text("pw hunter2-long r00t-pass") == "pw *** ***"
    with pytest.raises(KeyError, match="Variable absent does not exist"):
        render_value("{{ var.value.absent }}", template_context)


def test_short_and_multi_line_secrets(clean_env):
    secrets.remember_secret("abc")
    assert secrets.masks() == []
    secrets.remember_secret("line-one\nline-two")
    assert secrets.mask_text("x line-one\nline-two y") == "x *** y"
    assert secrets.mask_text("x line-one y") == "x *** y"
    assert secrets.mask_text("line-two") == "***"

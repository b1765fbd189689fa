"""The Airflow compatibility layer: DAG files written for Airflow 1.x, 2.x and 3 parse into the
right serialized DAG, unsupported features are refused with the feature and the line, and
tasks run with Airflow's semantics in a real `python -m weft.runner` process."""

import pytest

from conftest import run_processor
from test_runner import Runner


def parse_one(dag_file, text):
    [answer] = run_processor(dag_file(text))
    assert answer["error"] is None, answer["error"]
    return answer["dags"]


def tasks_by_id(spec):
    return {task["task_id"]: task for task in spec["tasks"]}


# ---- parsing -------------------------------------------------------------------------------

THREE_WAYS = '''
import datetime
import pendulum
from airflow import DAG as TopLevelDAG
from airflow.models import DAG as ModelsDAG
from airflow.sdk import DAG, dag, task
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.operators.bash_operator import BashOperator

with DAG("with_block", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="Europe/Paris"),
         tags=["a"], catchup=True, doc_md="docs", dag_display_name="With block"):
    EmptyOperator(task_id="e")

@dag(schedule=datetime.timedelta(hours=2), start_date=datetime.datetime(2024, 1, 1))
def decorated(rows=5):
    @task
    def t(rows):
        return rows
    t(rows)

decorated()

legacy = ModelsDAG("plain_object", schedule_interval="0 3 * * 1",
                   start_date=datetime.datetime(2024, 1, 1),
                   default_args={"owner": "ops", "retries": 3,
                                 "retry_delay": datetime.timedelta(seconds=30),
                                 "retry_exponential_backoff": True,
                                 "max_retry_delay": datetime.timedelta(minutes=10),
                                 "depends_on_past": True,
                                 "execution_timeout": datetime.timedelta(minutes=1)},
                   dagrun_timeout=datetime.timedelta(hours=1))
BashOperator(task_id="b", bash_command="echo hi", dag=legacy)
TopLevelDAG("manual", schedule=None)
'''


def test_three_ways_to_define_dags_and_several_per_file(dag_file):
    specs = {spec["dag_id"]: spec for spec in parse_one(dag_file, THREE_WAYS)}
    assert set(specs) == {"with_block", "decorated", "plain_object", "manual"}
    with_block = specs["with_block"]
    assert with_block["schedule"] == {"kind": "cron", "expression": "@daily"}
    assert (with_block["timezone"], with_block["catchup"], with_block["tags"]) == ("Europe/Paris", True, ["a"])
    assert (with_block["doc_md"], with_block["display_name"]) == ("docs", "With block")
    assert with_block["tasks"][0]["kind"] == {"type": "empty"}
    decorated = specs["decorated"]
    assert decorated["schedule"] == {"kind": "interval", "every_ms": 7_200_000}
    assert decorated["params"]["rows"]["default"] == 5
    plain = specs["plain_object"]
    # `schedule_interval` is the Airflow 2 spelling: runs cover a data interval.
    assert plain["schedule"] == {"kind": "cron", "expression": "0 3 * * 1", "data_intervals": True}
    assert plain["dagrun_timeout_ms"] == 3_600_000
    task = plain["tasks"][0]
    assert (task["owner"], task["retries"], task["retry_delay_ms"]) == ("ops", 3, 30_000)
    assert (task["retry_exponential_backoff"], task["max_retry_delay_ms"]) == (True, 600_000)
    assert (task["depends_on_past"], task["execution_timeout_ms"]) == (True, 60_000)
    assert specs["manual"]["schedule"] == {"kind": "none"}


def test_params_with_schema_and_task_options(dag_file):
    [spec] = parse_one(dag_file, '''
from airflow.sdk import DAG, Param, TriggerRule, Label, chain, TaskGroup
from airflow.providers.standard.operators.empty import EmptyOperator
with DAG("p", params={"n": Param(3, type="integer", minimum=1, title="N"), "plain": "x"}):
    a = EmptyOperator(task_id="a", priority_weight=5, pool="small", weight_rule="absolute")
    with TaskGroup("g", tooltip="group"):
        b = EmptyOperator(task_id="b", trigger_rule=TriggerRule.ONE_FAILED)
    c = EmptyOperator(task_id="c")
    d = EmptyOperator(task_id="d")
    a >> Label("why") >> b
    chain(b, [c, d])
''')
    assert spec["params"]["n"] == {"default": 3, "description": None,
                                   "schema": {"type": "integer", "minimum": 1, "title": "N"}}
    assert spec["params"]["plain"]["default"] == "x"
    tasks = tasks_by_id(spec)
    assert (tasks["a"]["priority_weight"], tasks["a"]["pool"], tasks["a"]["weight_rule"]) == (5, "small", "absolute")
    assert tasks["g.b"]["upstream"] == ["a"] and tasks["g.b"]["trigger_rule"] == "one_failed"
    assert tasks["g.b"]["task_group"] == "g"
    assert tasks["c"]["upstream"] == ["g.b"] and tasks["d"]["upstream"] == ["g.b"]


def test_taskflow_mapping_setup_teardown_and_groups(dag_file):
    [spec] = parse_one(dag_file, '''
from airflow.sdk import DAG, task, task_group, setup, teardown
with DAG("m"):
    @task
    def nums():
        return [1, 2]
    @task
    def add(x, y):
        return x + y
    @setup
    def create():
        return "id"
    @teardown
    def delete(cluster):
        pass
    @task_group
    def group(value):
        @task
        def inner(v):
            return v
        inner(value)
    @task
    def work():
        pass
    add.partial(y=1).expand(x=nums())
    add.expand(x=[1, 2], y=[10, 20, 30])
    group.expand(value=[1, 2, 3])
    with delete(create()):
        work()
''')
    tasks = tasks_by_id(spec)
    assert tasks["add"]["mapping"] == {"source": "upstream", "task_id": "nums"}
    assert tasks["add__1"]["mapping"] == {"source": "literal", "length": 6}
    assert tasks["group.inner"]["mapping"] == {"source": "literal", "length": 3}
    assert tasks["create"]["role"] == "setup"
    assert tasks["delete"]["role"] == "teardown"
    assert tasks["delete"]["trigger_rule"] == "all_done_setup_success"
    assert tasks["work"]["upstream"] == ["create"] and "work" in tasks["delete"]["upstream"]


UNSUPPORTED = [
    (3, "assets", "from airflow.sdk import DAG\nimport os\nfrom airflow.sdk import Asset\n"),
    (2, "sensors", "import os\nfrom airflow.sensors.filesystem import FileSensor\n"),
    (2, "this provider package", "\nfrom airflow.providers.amazon.aws.operators.s3 import S3CreateBucketOperator\n"),
    (3, "run-time virtualenvs", "from airflow.sdk import DAG, task\nwith DAG('v'):\n    @task.virtualenv(requirements=['x'])\n"
                                "    def f():\n        pass\n"),
    (2, "DAG-level on_success_callback", "from airflow.sdk import DAG\nDAG('d', on_success_callback=print)\n"),
    (4, "custom priority weight strategies", "from airflow.sdk import DAG\nfrom airflow.providers.standard.operators.empty import EmptyOperator\n"
                                             "with DAG('w'):\n    EmptyOperator(task_id='e', weight_rule=object())\n"),
    (6, "task state store", "from airflow.sdk import DAG, task\nwith DAG('s'):\n    @task\n"
                            "    def f(task_state_store=None):\n        pass\n    f()\n"),
    (2, "timetable objects", "from airflow.sdk import DAG\nDAG('t', timetable=object())\n"),
    (4, "sending email", "from airflow.sdk import DAG\nfrom airflow.operators.bash import BashOperator\n"
                         "with DAG('m', default_args={'email': ['a@b.c']}):\n    BashOperator(task_id='b', bash_command='true')\n"),
]


@pytest.mark.parametrize("line,feature,text", UNSUPPORTED)
def test_unsupported_features_are_import_errors_with_feature_and_line(dag_file, line, feature, text):
    [answer] = run_processor(dag_file(text))
    assert answer["dags"] == []
    error = answer["error"]
    assert error["kind"] == "unsupported", error
    assert feature in error["message"] and "not supported" in error["message"]
    assert error["line"] == line, error


def test_import_fallbacks_still_work(dag_file):
    [spec] = parse_one(dag_file, '''
try:
    from airflow.sdk import Asset
except ImportError:
    Asset = None
from airflow.sdk import DAG
DAG("fallback")
''')
    assert spec["dag_id"] == "fallback"


# ---- running tasks -------------------------------------------------------------------------

RUN_DAG = '''
import json
from airflow.sdk import DAG, task, get_current_context, BaseOperator
from airflow.exceptions import AirflowSkipException, AirflowFailException
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import PythonOperator, ShortCircuitOperator

CALLS = []

class Upper(BaseOperator):
    template_fields = ("text",)
    template_ext = (".txt",)
    def __init__(self, text, **kwargs):
        super().__init__(**kwargs)
        self.text = text
    def execute(self, context):
        return self.text.upper()

with DAG("r", params={"who": "world"}, user_defined_macros={"answer": 42}):
    BashOperator(task_id="bash_legacy_names", bash_command="echo {{ yesterday_ds }} {{ tomorrow_ds_nodash }}")
    BashOperator(task_id="bash", bash_command="echo one; echo {{ params.who }}-{{ ds }}-{{ answer }}",
                 env={"X": "1"}, append_env=True)
    BashOperator(task_id="bash_env", bash_command='echo "$X|${HOME:-none}"', env={"X": "2"})
    BashOperator(task_id="bash_skip", bash_command="exit 99")
    BashOperator(task_id="bash_fail", bash_command="exit 4")
    BashOperator(task_id="bash_json", bash_command='echo \\'{"a": 1}\\'', output_processor=json.loads)

    @task(multiple_outputs=True)
    def outputs():
        return {"a": 1, "b": [2]}

    @task
    def current():
        context = get_current_context()
        context["ti"].xcom_push(key="extra", value=context["run_id"])
        return context["ds_nodash"]

    @task
    def skip():
        raise AirflowSkipException("not today")

    @task(retries=3)
    def fail_now():
        raise AirflowFailException("no retries")

    def callable_with_context(a, b=0, *, ds, ti, **kwargs):
        return [a, b, ds, ti.task_id, sorted(k for k in ("params", "dag_run") if k in kwargs)]

    outputs(); current(); skip(); fail_now()
    PythonOperator(task_id="py", python_callable=callable_with_context, op_args=["{{ params.who }}"],
                   op_kwargs={"b": 2})
    ShortCircuitOperator(task_id="short", python_callable=lambda: 0)
    Upper(task_id="upper", text="template.txt")
'''


def run_context(task_id, xcoms=None):
    return {
        "dag_id": "r", "task_id": task_id, "run_id": "manual__1", "map_index": -1,
        "try_number": 1, "max_tries": 4, "run_type": "manual",
        "logical_date": "2024-03-05T00:00:00Z", "data_interval_start": "2024-03-05T00:00:00Z",
        "data_interval_end": "2024-03-05T00:00:00Z", "params": {"who": "world"},
        "conf": {}, "xcoms": xcoms or {}, "fileloc": None, "timezone": "UTC",
    }


@pytest.fixture
def run(dag_file, tmp_path):
    path = dag_file(RUN_DAG)
    (tmp_path / "template.txt").write_text("hello {{ params.who }}")
    runner = Runner()

    def run_task(task_id, xcoms=None):
        context = run_context(task_id, xcoms)
        context["fileloc"] = path
        answer = runner.request(op="run", fileloc=path, dag_id="r", task_id=task_id, map_index=-1,
                                context=context, log_path=str(tmp_path / f"{task_id}.log"),
                                log_bytes_max=1 << 20)
        assert answer["ok"], answer
        answer["log"] = (tmp_path / f"{task_id}.log").read_text()
        return answer

    yield run_task
    runner.close()


def test_bash_operator_result_env_skip_and_failure(run):
    answer = run("bash")
    assert answer["result"] == "world-2024-03-05-42"
    assert "one\n" in answer["log"]
    # env without append_env replaces the environment.
    assert run("bash_env")["result"] == "2|none"
    assert run("bash_skip")["outcome"] == "Skipped"
    failed = run("bash_fail")["outcome"]["Failed"]
    assert "non-zero exit code 4" in failed["reason"] and failed["retryable"]
    assert run("bash_json")["result"] == {"a": 1}
    assert run("bash_legacy_names")["result"] == "2024-03-04 20240306"


def test_xcom_keys_multiple_outputs_and_current_context(run):
    from weft.templates import XCOM_KEYS_MARKER

    answer = run("outputs")
    assert answer["result"] == {XCOM_KEYS_MARKER: {"a": 1, "b": [2], "return_value": {"a": 1, "b": [2]}}}
    answer = run("current")
    assert answer["result"] == {XCOM_KEYS_MARKER: {"extra": "manual__1", "return_value": "20240305"}}


def test_skip_and_fail_exceptions(run):
    assert run("skip")["outcome"] == "Skipped"
    failed = run("fail_now")["outcome"]["Failed"]
    assert failed["retryable"] is False and "no retries" in failed["reason"]


def test_python_operator_context_by_name_and_kwargs(run):
    answer = run("py")
    assert answer["result"] == ["world", 2, "2024-03-05", "py", ["dag_run", "params"]]


def test_short_circuit_and_template_files(run):
    assert run("short")["outcome"]["Success"]["proceed"] is False
    assert run("upper")["result"] == "HELLO WORLD"


def test_xcom_pull_by_key_from_a_pushed_result(dag_file, tmp_path):
    from weft.templates import XCOM_KEYS_MARKER

    path = dag_file('''
from airflow.sdk import DAG, task
with DAG("r"):
    @task
    def pull(ti=None):
        return [ti.xcom_pull(task_ids="current", key="extra"), ti.xcom_pull(task_ids="current")]
    pull()
''')
    runner = Runner()
    try:
        context = run_context("pull", {"current": {XCOM_KEYS_MARKER: {"extra": "e", "return_value": "r"}}})
        context["fileloc"] = path
        answer = runner.request(op="run", fileloc=path, dag_id="r", task_id="pull", map_index=-1,
                                context=context, log_path=str(tmp_path / "l.log"), log_bytes_max=1 << 20)
        assert answer["result"] == ["e", "r"]
    finally:
        runner.close()


def test_xcom_pull_of_several_mapped_tasks_is_one_flat_list_by_task_then_index(dag_file, tmp_path):
    path = dag_file('''
from airflow.sdk import DAG, task
with DAG("flat"):
    @task
    def m(x):
        return x
    @task
    def n(x):
        return x
    @task
    def pull(ti=None):
        return [
            ti.xcom_pull(task_ids=["m", "n"], map_indexes=[0, 2]),
            ti.xcom_pull(task_ids=["m", "n"], map_indexes=1),
            ti.xcom_pull(task_ids=["m", "n"]),
            ti.xcom_pull(task_ids=["m"], map_indexes=[2, 9], default="none"),
            ti.xcom_pull(task_ids="m", map_indexes=[0, 1]),
        ]
    [m.expand(x=[1, 2, 3]), n.expand(x=[4, 5, 6])] >> pull()
''')
    runner = Runner()
    try:
        context = run_context("pull", {"m": [1, 2, 3], "n": [4, 5, 6]})
        context["fileloc"] = path
        answer = runner.request(op="run", fileloc=path, dag_id="flat", task_id="pull", map_index=-1,
                                context=context, log_path=str(tmp_path / "l.log"), log_bytes_max=1 << 20)
        assert answer.get("result") == [
            [1, 3, 4, 6],
            [2, 5],
            [1, 2, 3, 4, 5, 6],
            [3, "none"],
            [1, 2],
        ], answer
    finally:
        runner.close()


def test_cycle_and_duplicate_errors_point_at_the_dag_file(dag_file):
    [answer] = run_processor(dag_file('''from airflow.sdk import DAG, task
with DAG("c"):
    @task
    def a():
        pass
    @task
    def b():
        pass
    first, second = a(), b()
    first >> second
    second >> first
'''))
    assert (answer["error"]["kind"], answer["error"]["line"]) == ("cycle", 11)
    [answer] = run_processor(dag_file('''from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
with DAG("d"):
    EmptyOperator(task_id="x")
    EmptyOperator(task_id="x")
'''))
    assert (answer["error"]["kind"], answer["error"]["line"]) == ("duplicate_task_id", 5)


BRANCH_DAG = '''
import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.latest_only import LatestOnlyOperator
from airflow.providers.standard.operators.weekday import BranchDayOfWeekOperator
from airflow.providers.standard.operators.datetime import BranchDateTimeOperator
from airflow.providers.standard.utils.weekday import WeekDay

with DAG("r", schedule="@daily", start_date=datetime.datetime(2024, 1, 1)):
    latest = LatestOnlyOperator(task_id="latest")
    latest >> EmptyOperator(task_id="after_latest")
    weekday = BranchDayOfWeekOperator(task_id="weekday", follow_task_ids_if_true="yes",
                                      follow_task_ids_if_false="no",
                                      week_day={WeekDay.TUESDAY, "friday"},
                                      use_task_logical_date=True)
    when = BranchDateTimeOperator(task_id="when", follow_task_ids_if_true="yes",
                                  follow_task_ids_if_false="no",
                                  target_lower=datetime.time(0, 0), target_upper=datetime.time(1, 0),
                                  use_task_logical_date=True)
    [weekday, when] >> EmptyOperator(task_id="yes")
    [weekday, when] >> EmptyOperator(task_id="no")
'''


@pytest.mark.parametrize("task_id,run_type,branch", [
    ("latest", "manual", ["after_latest"]),
    # A scheduled run of a long-past interval is not the latest: downstream tasks are skipped.
    ("latest", "scheduled", []),
    ("weekday", "manual", ["yes"]),   # 2024-03-05 is a Tuesday
    ("when", "manual", ["yes"]),      # 00:00 is inside [00:00, 01:00]
])
def test_date_and_latest_only_branches(dag_file, tmp_path, task_id, run_type, branch):
    path = dag_file(BRANCH_DAG)
    runner = Runner()
    try:
        context = run_context(task_id)
        context.update(fileloc=path, run_type=run_type)
        answer = runner.request(op="run", fileloc=path, dag_id="r", task_id=task_id, map_index=-1,
                                context=context, log_path=str(tmp_path / "l.log"), log_bytes_max=1 << 20)
        assert answer["outcome"]["Success"]["branch"] == branch, answer
    finally:
        runner.close()


# ---- importing submodules -----------------------------------------------------------------


def _layer_modules():
    """Every module the layer provides, as `airflow.a.b`."""
    import os

    from conftest import SDK

    root = os.path.join(SDK, "airflow")
    names = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
        package = os.path.relpath(folder, SDK).replace(os.sep, ".")
        for file in files:
            if file.endswith(".py") and not file.startswith("_"):
                names.append(f"{package}.{file[:-3]}")
        if folder != root:
            names.append(package)
    return sorted(set(names))


@pytest.mark.parametrize("module", _layer_modules())
def test_every_module_imports_in_every_form_as_the_first_import(module):
    # `from package import submodule` as a file's first import: Python looks the name up on
    # the package before importing the submodule, so the package's `__getattr__` must let it
    # (it once refused `from airflow import models` unless a neighbour had imported it).
    import subprocess
    import sys

    from conftest import SDK

    parent, child = module.rsplit(".", 1)
    for statement in (f"from {parent} import {child}", f"import {module}"):
        completed = subprocess.run(
            [sys.executable, "-c", statement],
            capture_output=True, text=True, env={"PYTHONPATH": SDK}, timeout=60,
        )
        assert completed.returncode == 0, f"{statement}:\n{completed.stderr}"

"""DAG files to the serialized DAG form, one construct at a time."""

from weft.loader import load_specs

HEADER = "from datetime import datetime, timedelta, timezone\nfrom zoneinfo import ZoneInfo\nfrom weft import *\n"


def only_dag(dag_file, body):
    answer = load_specs(dag_file(HEADER + body))
    assert answer["error"] is None, answer["error"]
    [dag] = answer["dags"]
    return dag


def tasks(dag):
    return {task["task_id"]: task for task in dag["tasks"]}


def test_dag_arguments_map_to_the_spec(dag_file):
    dag = only_dag(dag_file, """
with DAG("etl", description="d", schedule="0 3 * * *", catchup=True, tags=["a"],
         start_date=datetime(2024, 1, 1, tzinfo=ZoneInfo("Europe/Paris")),
         end_date=datetime(2024, 6, 1), max_active_runs=2, max_active_tasks=3,
         dagrun_timeout=timedelta(hours=1), doc_md="# doc",
         default_args={"owner": "ana", "retries": 2, "retry_delay": timedelta(seconds=30)},
         params={"n": Param(5, type="integer", minimum=0, description="how many"), "s": "x"}):
    EmptyOperator(task_id="t")
""")
    assert dag["dag_id"] == "etl" and dag["description"] == "d" and dag["doc_md"] == "# doc"
    assert dag["schedule"] == {"kind": "cron", "expression": "0 3 * * *"}
    assert dag["timezone"] == "Europe/Paris"
    assert dag["start_date"] == "2023-12-31T23:00:00Z"
    assert dag["end_date"] == "2024-06-01T00:00:00Z"
    assert (dag["catchup"], dag["max_active_runs"], dag["max_active_tasks"]) == (True, 2, 3)
    assert dag["dagrun_timeout_ms"] == 3_600_000
    assert dag["owner"] == "ana" and dag["tags"] == ["a"]
    assert dag["params"] == {
        "n": {"default": 5, "description": "how many", "schema": {"type": "integer", "minimum": 0}},
        "s": {"default": "x", "description": None, "schema": {}},
    }
    task = dag["tasks"][0]
    assert task["kind"] == {"type": "empty"}
    assert (task["retries"], task["retry_delay_ms"], task["owner"]) == (2, 30_000, "ana")


def test_schedules_intervals_and_explicit_timezone(dag_file):
    dag = only_dag(dag_file, 'DAG("a", schedule=timedelta(minutes=5), timezone="America/New_York")\n')
    assert dag["schedule"] == {"kind": "interval", "every_ms": 300_000}
    assert dag["timezone"] == "America/New_York"
    assert only_dag(dag_file, 'DAG("b")\n')["schedule"] == {"kind": "none"}
    assert only_dag(dag_file, 'DAG("c", schedule="@daily")\n')["schedule"]["expression"] == "@daily"
    fixed = only_dag(dag_file, 'DAG("d", start_date=datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=2))))\n')
    assert fixed["timezone"] == "Etc/GMT-2"


def test_task_arguments(dag_file):
    dag = only_dag(dag_file, """
with DAG("t", default_args={"pool": "p", "trigger_rule": "all_done"}):
    BashOperator(task_id="b", bash_command="echo hi", env={"A": "1"}, append_env=True, cwd="/tmp",
                 retries=3, retry_exponential_backoff=True, max_retry_delay=timedelta(minutes=10),
                 execution_timeout=timedelta(seconds=90), depends_on_past=True, priority_weight=7,
                 weight_rule="absolute", pool_slots=2, queue="q", trigger_rule="one_failed")
    EmptyOperator(task_id="e")
""")
    bash, empty = dag["tasks"]
    assert bash["kind"] == {"type": "shell", "command": "echo hi", "env": {"A": "1"},
                            "append_env": True, "cwd": "/tmp", "skip_exit_code": 99,
                            "templated": False}
    assert bash["template_fields"] == []
    assert (bash["retries"], bash["retry_exponential_backoff"]) == (3, True)
    assert (bash["max_retry_delay_ms"], bash["execution_timeout_ms"]) == (600_000, 90_000)
    assert (bash["depends_on_past"], bash["priority_weight"], bash["weight_rule"]) == (True, 7, "absolute")
    assert (bash["pool"], bash["pool_slots"], bash["trigger_rule"]) == ("p", 2, "one_failed")
    assert bash["extra"] == {}
    assert bash["queue"] == "q"
    assert "queue" not in empty, "a task without a queue keeps its spec as before"
    assert (empty["pool"], empty["trigger_rule"]) == ("p", "all_done")


def test_templated_bash_is_marked(dag_file):
    dag = only_dag(dag_file, """
with DAG("t"):
    BashOperator(task_id="b", bash_command="echo {{ ds }}", env={"X": "{{ params.x }}"})
""")
    task = dag["tasks"][0]
    assert task["kind"]["templated"] is True
    assert task["template_fields"] == ["bash_command", "env"]


def test_dependencies_with_lists_and_both_directions(dag_file):
    dag = only_dag(dag_file, """
with DAG("deps"):
    a, b, c, d, e = [EmptyOperator(task_id=n) for n in "abcde"]
    a >> [b, c] >> d
    e << d
    [a] >> e
    d.set_upstream(a)
    chain(a, e)
""")
    by_id = tasks(dag)
    assert by_id["b"]["upstream"] == ["a"] and by_id["c"]["upstream"] == ["a"]
    assert by_id["d"]["upstream"] == ["b", "c", "a"]
    assert by_id["e"]["upstream"] == ["d", "a"]


def test_task_groups_prefix_ids_and_link_roots_and_leaves(dag_file):
    dag = only_dag(dag_file, """
with DAG("g"):
    start = EmptyOperator(task_id="start")
    with TaskGroup("outer", tooltip="tip") as outer:
        with TaskGroup("inner"):
            x = EmptyOperator(task_id="x")
        y = EmptyOperator(task_id="y")
        x >> y
    end = EmptyOperator(task_id="end")
    start >> outer >> end
""")
    assert dag["task_groups"] == [
        {"group_id": "outer", "parent_group": None, "tooltip": "tip"},
        {"group_id": "outer.inner", "parent_group": "outer", "tooltip": None},
    ]
    by_id = tasks(dag)
    assert by_id["outer.inner.x"]["upstream"] == ["start"]
    assert by_id["outer.y"]["upstream"] == ["outer.inner.x"]
    assert by_id["end"]["upstream"] == ["outer.y"]
    assert by_id["outer.y"]["task_group"] == "outer"


def test_taskflow_arguments_make_dependencies(dag_file):
    dag = only_dag(dag_file, """
@dag(schedule=None, start_date=datetime(2024, 1, 1))
def flow(limit=3):
    @task(retries=1)
    def extract():
        return [1, 2]

    @task
    def load(rows):
        return len(rows)

    @task.branch
    def choose():
        return "load"

    @task.short_circuit
    def gate():
        return True

    load(extract()) << choose()
    gate()
    extract()

flow()
""")
    assert dag["dag_id"] == "flow"
    assert dag["params"]["limit"]["default"] == 3
    by_id = tasks(dag)
    assert by_id["extract"]["kind"] == {"type": "python", "callable": "flow.<locals>.extract"}
    assert by_id["extract"]["retries"] == 1 and by_id["extract"]["operator"] == "@task"
    assert by_id["load"]["upstream"] == ["extract", "choose"]
    assert (by_id["choose"]["flow"], by_id["gate"]["flow"]) == ("branch", "short_circuit")
    assert "extract__1" in by_id


def test_python_operator_and_mapping(dag_file):
    dag = only_dag(dag_file, """
def f(x, ds=None):
    return x

with DAG("p"):
    a = PythonOperator(task_id="a", python_callable=f, op_args=[1])
    BranchPythonOperator(task_id="b", python_callable=f, op_args=["a"])

    @task
    def double(x):
        return 2 * x

    double.expand(x=[1, 2, 3])
    double.partial().expand(x=a.output)
""")
    by_id = tasks(dag)
    assert by_id["a"]["kind"] == {"type": "python", "callable": "f"}
    assert by_id["a"]["operator"] == "PythonOperator" and by_id["b"]["flow"] == "branch"
    assert by_id["double"]["mapping"] == {"source": "literal", "length": 3}
    assert by_id["double__1"]["mapping"] == {"source": "upstream", "task_id": "a"}
    assert by_id["double__1"]["upstream"] == ["a"]


def test_a_task_asks_for_the_full_sandbox_through_executor_config(dag_file):
    dag = only_dag(dag_file, """
with DAG("t"):
    BashOperator(task_id="sandboxed", bash_command="true", executor_config={"isolation": "full"})
    BashOperator(task_id="plain", bash_command="true", executor_config={"other": 1})
""")
    sandboxed, plain = dag["tasks"]
    assert sandboxed["extra"] == {"isolation": "full"}
    assert plain["extra"] == {}
    answer = load_specs(dag_file(HEADER + """
with DAG("t"):
    BashOperator(task_id="lower", bash_command="true", executor_config={"isolation": "none"})
"""))
    assert answer["error"] is not None
    assert "cannot lower" in answer["error"]["message"], answer["error"]

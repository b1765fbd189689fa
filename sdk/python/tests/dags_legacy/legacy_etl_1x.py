"""An Airflow 1.x-style DAG file: `DAG(...)` with `dag=` on every operator, the 1.x module
paths, `provide_context`, `days_ago`, `schedule_interval`, `set_upstream`/`set_downstream`,
a branch, XCom push/pull by key and a bash task that exits 99 (skipped)."""

from datetime import timedelta

from airflow import DAG
from airflow.operators.bash_operator import BashOperator
from airflow.operators.dummy_operator import DummyOperator
from airflow.operators.python_operator import BranchPythonOperator, PythonOperator
from airflow.utils.dates import days_ago
from airflow.utils.trigger_rule import TriggerRule

default_args = {
    "owner": "data",
    "depends_on_past": False,
    "start_date": days_ago(2),
    "retries": 1,
    "retry_delay": timedelta(seconds=1),
    "execution_timeout": timedelta(minutes=5),
}

dag = DAG(
    "legacy_etl_1x",
    default_args=default_args,
    description="a DAG as Airflow 1.10 users wrote them",
    schedule_interval=timedelta(days=1),
    catchup=False,
)


def push_rows(**context):
    context["ti"].xcom_push(key="rows", value=3)
    return "pushed"


def choose(**context):
    rows = context["task_instance"].xcom_pull(task_ids="push_rows", key="rows")
    return "small_load" if rows < 5 else "big_load"


def check_render(ti, ds, **kwargs):
    line = ti.xcom_pull(task_ids="small_load")
    expected = f"small {ds} {ds.replace('-', '')} analyst"
    if line != expected:
        raise ValueError(f"bash printed {line!r}, expected {expected!r}")
    if ti.xcom_pull(task_ids="push_rows") != "pushed":
        raise ValueError("the return value of push_rows was not kept")


start = DummyOperator(task_id="start", dag=dag)
push = PythonOperator(task_id="push_rows", python_callable=push_rows, provide_context=True, dag=dag)
branch = BranchPythonOperator(task_id="choose", python_callable=choose, provide_context=True, dag=dag)
big = BashOperator(task_id="big_load", bash_command="echo big", dag=dag)
small = BashOperator(
    task_id="small_load",
    bash_command="echo small {{ ds }} {{ ds_nodash }} {{ params.who }}",
    params={"who": "analyst"},
    dag=dag,
)
check = PythonOperator(task_id="check_render", python_callable=check_render, dag=dag)
join = DummyOperator(task_id="join", trigger_rule=TriggerRule.NONE_FAILED_OR_SKIPPED, dag=dag)
skip_me = BashOperator(task_id="skip_me", bash_command="exit 99", dag=dag)
after_skip = BashOperator(task_id="after_skip", bash_command="echo never", dag=dag)

start.set_downstream(push)
branch.set_upstream(push)
branch >> [big, small]
small >> check
[big, check] >> join
start >> skip_me >> after_skip

"""A custom operator as Airflow 1.x/2.x files define them (`apply_defaults`, template_fields,
template_ext with a template file next to the DAG), callbacks, a mapped classic operator and
a legacy `airflow.models.DAG` with params."""

import os
from datetime import datetime

from airflow.models import DAG, BaseOperator
from airflow.models.param import Param
from airflow.operators.bash import BashOperator
from airflow.operators.python import PythonOperator
from airflow.utils.decorators import apply_defaults

MARKERS = os.environ.get("WEFT_TEST_MARKERS", "/tmp")


def write_marker(name):
    def callback(context):
        with open(os.path.join(MARKERS, f"{name}-{context['ti'].task_id}"), "w") as handle:
            handle.write(context["ds"])

    return callback


class QueryOperator(BaseOperator):
    template_fields = ("sql", "tag_name")
    template_ext = (".sql",)

    @apply_defaults
    def __init__(self, sql, tag_name="query", *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sql = sql
        self.tag_name = tag_name

    def execute(self, context):
        text = self.sql.strip()
        if "2025-03-04" not in text or "limit 7" not in text:
            raise ValueError(f"the template file was not rendered: {text!r}")
        self.log.info("running %s", text)
        return text


with DAG(
    dag_id="legacy_custom_operator",
    start_date=datetime(2021, 1, 1),
    schedule_interval=None,
    default_args={"tag_name": "from-default-args", "on_success_callback": write_marker("success")},
    params={"limit": Param(7, type="integer", minimum=1)},
) as dag:
    query = QueryOperator(task_id="query", sql="query.sql")

    def check_label(ti):
        task = ti.task.dag.get_task("query")
        if task.tag_name != "from-default-args":
            raise ValueError(f"default_args did not reach the operator: {task.tag_name}")

    label = PythonOperator(task_id="check_label", python_callable=check_label)
    echo = BashOperator.partial(task_id="echo").expand(bash_command=["echo 1", "echo 2"])
    failing = BashOperator(
        task_id="failing",
        bash_command="exit 3",
        on_failure_callback=write_marker("failure"),
        on_success_callback=None,
    )
    query >> label >> echo

"""An Airflow 2.x-style DAG file: `airflow.decorators`, `@dag` with `schedule_interval`,
`multiple_outputs`, `.expand()`, `@task_group`, `chain`, a task that fails once and passes on
its retry, AirflowSkipException, `Label`, `get_current_context` and `default_args`."""

from datetime import timedelta

import pendulum
from airflow.decorators import dag, task, task_group
from airflow.exceptions import AirflowSkipException
from airflow.models.baseoperator import chain
from airflow.operators.empty import EmptyOperator
from airflow.operators.python import get_current_context
from airflow.utils.edgemodifier import Label


@dag(
    schedule_interval="@daily",
    start_date=pendulum.datetime(2021, 1, 1, tz="UTC"),
    catchup=False,
    tags=["legacy"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=1), "owner": "legacy"},
)
def legacy_taskflow_2x():
    @task(multiple_outputs=True)
    def extract():
        return {"a": 1, "b": 2}

    @task
    def add(a, b):
        return a + b

    @task
    def double(x):
        return x * 2

    @task
    def total(values, added):
        if sorted(values) != [2, 4, 6] or added != 3:
            raise ValueError(f"unexpected inputs {values} {added}")
        return sum(values) + added

    @task_group
    def enrich(value):
        @task
        def plus_one(x):
            return x + 1

        @task
        def check(x):
            if x != 16:
                raise ValueError(f"expected 16, got {x}")

        return check(plus_one(value))

    @task
    def flaky():
        context = get_current_context()
        if context["ti"].try_number < 2:
            raise RuntimeError("the first try fails on purpose")
        return context["ti"].try_number

    @task
    def skipper():
        raise AirflowSkipException("nothing to do")

    @task(trigger_rule="none_failed")
    def after_skipper():
        return "ran"

    parts = extract()
    added = add(parts["a"], parts["b"])
    result = total(double.expand(x=[1, 2, 3]), added)
    enrich(result)
    begin = EmptyOperator(task_id="begin")
    chain(begin, flaky(), skipper())
    begin >> Label("independent") >> after_skipper()


legacy_taskflow_2x()

"""Branching: pick a path by the day of the logical date; the other path is skipped and the
join still runs (trigger rule none_failed_min_one_success)."""

from datetime import datetime

from weft import DAG, BashOperator, EmptyOperator, task

with DAG(dag_id="branching", schedule=None, start_date=datetime(2024, 1, 1), tags=["example"]) as dag:

    @task.branch
    def choose(**context):
        day = context["logical_date"].day
        return "even_day" if day % 2 == 0 else "odd_day"

    even = BashOperator(task_id="even_day", bash_command="echo even day")
    odd = BashOperator(task_id="odd_day", bash_command="echo odd day")
    join = EmptyOperator(task_id="join", trigger_rule="none_failed_min_one_success")

    choose() >> [even, odd] >> join

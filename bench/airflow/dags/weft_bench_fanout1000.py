# Benchmark DAG: one task, 1000 parallel BashOperator `true` tasks, one task (weft's `fanout1000`).
from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(dag_id="weft_bench_fanout1000", schedule=None, start_date=datetime(2024, 1, 1), catchup=False,
         max_active_tasks=1000):
    start = BashOperator(task_id="start", bash_command="true")
    end = BashOperator(task_id="end", bash_command="true")
    start >> [BashOperator(task_id=f"t{index:04}", bash_command="true") for index in range(1000)] >> end

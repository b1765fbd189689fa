# Benchmark DAG: 100 sequential BashOperator tasks running `true` (weft's `chain100` shell).
from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, chain

with DAG(dag_id="weft_bench_chain100", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
    chain(*[BashOperator(task_id=f"t{index:03}", bash_command="true") for index in range(100)])

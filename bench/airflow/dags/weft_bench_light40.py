# Benchmark DAG: 40 sequential Python tasks each computing fib(10) (weft's `light40`).
from datetime import datetime

from airflow.sdk import DAG, chain, task


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


with DAG(dag_id="weft_bench_light40", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):

    @task
    def light():
        return fib(10)

    chain(*[light.override(task_id=f"t{index:02}")() for index in range(40)])

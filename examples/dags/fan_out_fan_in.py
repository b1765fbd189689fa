"""Fan-out and fan-in: one task starts ten parallel shell tasks whose results one task joins."""

from datetime import datetime

from weft import DAG, BashOperator, EmptyOperator

with DAG(
    dag_id="fan_out_fan_in",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    tags=["example"],
    max_active_tasks=8,
) as dag:
    start = EmptyOperator(task_id="start")
    join = BashOperator(task_id="join", bash_command="echo all shards done")
    for shard in range(10):
        work = BashOperator(task_id=f"shard_{shard}", bash_command=f"echo shard {shard}; sleep 0.1")
        start >> work >> join

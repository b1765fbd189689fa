"""An ETL pipeline: extract, transform and load, with retries and templated shell commands."""

from datetime import datetime, timedelta

from weft import DAG, BashOperator, task

default_args = {
    "owner": "data-eng",
    "retries": 2,
    "retry_delay": timedelta(seconds=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(seconds=10),
    "execution_timeout": timedelta(minutes=5),
}

with DAG(
    dag_id="etl_with_retries",
    schedule="@daily",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["example", "etl"],
    default_args=default_args,
    params={"rows": 3},
) as dag:
    prepare = BashOperator(
        task_id="prepare",
        bash_command="echo preparing the load for {{ ds }} && mkdir -p /tmp/weft-etl",
    )

    @task
    def extract(**context):
        rows = int(context["params"]["rows"])
        return [{"id": i, "amount": i * 10} for i in range(rows)]

    @task
    def transform(records):
        return {"count": len(records), "total": sum(r["amount"] for r in records)}

    @task
    def load(summary):
        print(f"loaded {summary['count']} rows, total {summary['total']}")
        return summary["count"]

    report = BashOperator(task_id="report", bash_command="echo load finished for run {{ run_id }}")

    extracted = extract()
    prepare >> extracted
    load(transform(extracted)) >> report

"""A cron schedule in a non-UTC time zone: 06:30 on weekdays in Paris, across daylight saving."""

from datetime import datetime
from zoneinfo import ZoneInfo

from weft import DAG, BashOperator

with DAG(
    dag_id="paris_weekday_report",
    schedule="30 6 * * 1-5",
    start_date=datetime(2024, 1, 1, tzinfo=ZoneInfo("Europe/Paris")),
    catchup=False,
    tags=["example", "cron"],
) as dag:
    BashOperator(
        task_id="report",
        bash_command="echo report for {{ data_interval_start }} to {{ data_interval_end }}",
    )

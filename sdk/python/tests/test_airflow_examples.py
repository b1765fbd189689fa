"""The weft side of the Airflow example comparison: every example DAG shipped with Airflow
3.3.2 that needs no outside system runs with `weft dags test`, and its run and task states are
compared with the states Airflow 3.3.2 produced (stored in fixtures/, so no Airflow install is
needed). A DAG recorded as matching Airflow must still match. The example files are fetched
from PyPI (`pip download`) into a cache folder, not committed."""

import json
import os
import subprocess
import sys

from conftest import ROOT, SDK, weft_binary

EXPECTED = os.path.join(SDK, "tests", "fixtures", "airflow_examples_expected.json")


def test_stored_table_covers_the_examples_and_says_why_rows_differ():
    with open(EXPECTED) as handle:
        table = json.load(handle)
    assert table["airflow_version"] == "3.3.2"
    assert len(table["dags"]) >= 90
    assert all(row["reason"] for row in table["dags"] if not row["match"])
    matching = {row["dag_id"] for row in table["dags"] if row["match"]}
    # The examples that use only what weft runs all match; see the table for the others.
    assert {"example_xcom", "example_bash_operator", "example_setup_teardown_taskflow",
            "example_dynamic_task_mapping", "example_task_group_mapping", "tutorial",
            "example_short_circuit_operator", "example_skip_dag"} <= matching
    assert len(matching) >= 40


def test_weft_matches_the_stored_airflow_results():
    completed = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "airflow_examples.py"), "--weft-only"],
        capture_output=True, text=True, timeout=3600,
        env={**os.environ, "WEFT_BIN": weft_binary()},
    )
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-3000:]
    assert "REGRESSION" not in completed.stdout


def _comparison_script():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "airflow_examples", os.path.join(ROOT, "scripts", "airflow_examples.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_wall_clock_branch_is_compared_with_the_branch_of_the_time_weft_ran():
    import datetime
    script = _comparison_script()
    key = ("example_branch_datetime_operator.py", "example_branch_datetime_operator_2")
    at = lambda hour, minute=0: datetime.datetime(2026, 12, 3, hour, minute, tzinfo=datetime.timezone.utc)
    # 15:00 to midnight UTC is in the example's range, as Airflow reads two times of day.
    assert [script.wall_clock_in_range(at(h), (15, 0, 0), (0, 0, 0)) for h in (1, 14, 15, 23)] \
        == [False, False, True, True]
    stored = {"run_state": "success", "tasks": {
        "datetime_branch": "success", "date_in_range": "success", "date_outside_range": "skipped"}}
    [morning] = script.expected_for_wall_clock(key, stored, [at(9), at(9, 5)])
    assert morning["tasks"]["date_in_range"] == "skipped"
    assert morning["tasks"]["date_outside_range"] == "success"
    [evening] = script.expected_for_wall_clock(key, stored, [at(20), at(20, 5)])
    assert evening["tasks"] == stored["tasks"]
    # The edge passed during the run: either branch is right.
    assert len(script.expected_for_wall_clock(key, stored, [at(14, 59), at(15, 1)])) == 2

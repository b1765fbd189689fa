"""Hand-written DAG files in the Airflow 1.x and 2.x style (`dags_legacy/`) run end to end
with `weft dags test`; each file checks its own rendered values and XComs in its tasks, so a
wrong value fails a task and shows in the states below."""

import os

from conftest import dags_test, run_processor

LEGACY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dags_legacy")


def test_legacy_files_parse_without_errors():
    answers = run_processor(*sorted(
        os.path.join(LEGACY, name) for name in os.listdir(LEGACY) if name.endswith(".py")
    ))
    assert [answer["error"] for answer in answers] == [None] * len(answers)
    ids = sorted(spec["dag_id"] for answer in answers for spec in answer["dags"])
    assert ids == ["legacy_custom_operator", "legacy_etl_1x", "legacy_taskflow_2x"]


def test_airflow_1x_file_branches_pushes_and_skips(tmp_path):
    state, tasks = dags_test(LEGACY, "legacy_etl_1x", tmp_path)
    assert tasks == {
        "start": "success", "push_rows": "success", "choose": "success",
        "small_load": "success", "big_load": "skipped", "check_render": "success",
        "join": "success", "skip_me": "skipped", "after_skip": "skipped",
    }
    assert state == "success"


def test_airflow_2x_taskflow_file_maps_retries_and_groups(tmp_path):
    state, tasks = dags_test(LEGACY, "legacy_taskflow_2x", tmp_path)
    assert tasks == {
        "extract": "success", "add": "success", "double[0]": "success", "double[1]": "success",
        "double[2]": "success", "total": "success", "enrich.plus_one": "success",
        "enrich.check": "success", "begin": "success", "flaky": "success", "skipper": "skipped",
        "after_skipper": "success",
    }
    assert state == "success"


def test_custom_operator_template_file_callbacks_and_mapping(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    state, tasks = dags_test(LEGACY, "legacy_custom_operator", tmp_path,
                             env={"WEFT_TEST_MARKERS": str(markers)})
    assert tasks == {
        "query": "success", "check_label": "success", "echo[0]": "success",
        "echo[1]": "success", "failing": "failed",
    }
    assert state == "failed"
    # default_args carried on_success_callback to every task; `failing` replaced it.
    assert sorted(os.listdir(markers)) == [
        "failure-failing", "success-check_label", "success-echo", "success-query",
    ]
    assert (markers / "failure-failing").read_text() == "2025-03-04"

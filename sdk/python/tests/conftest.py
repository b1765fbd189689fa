"""Shared helpers of the SDK tests: write a DAG file, load it, start a runner."""

import json
import os
import subprocess
import sys

import pytest

SDK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, SDK)


@pytest.fixture
def dag_file(tmp_path):
    def write(text, name="example_dag.py"):
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


def run_processor(*paths):
    env = {**os.environ, "PYTHONPATH": SDK}
    completed = subprocess.run(
        [sys.executable, "-m", "weft.processor", *paths],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )
    return [json.loads(line) for line in completed.stdout.splitlines()]


ROOT = os.path.dirname(os.path.dirname(SDK))


def weft_binary():
    """The `weft` binary the Rust build made (`cargo build -p weft` when there is none)."""
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    path = os.environ.get("WEFT_BIN") or os.path.join(target, "debug", "weft")
    if not os.path.exists(path):
        subprocess.run(["cargo", "build", "-q", "-p", "weft"], cwd=ROOT, check=True)
    return path


def dags_test(dags_folder, dag_id, tmp_path, logical_date="2025-03-04", env=None):
    """`weft --json dags test DAG_ID` on a throwaway home: (run state, {task: state})."""
    home = tmp_path / f"home-{dag_id}"
    home.mkdir()
    completed = subprocess.run(
        [weft_binary(), "--json", "dags", "test", dag_id, logical_date],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "WEFT_HOME": str(home), "WEFT_DAGS_FOLDER": str(dags_folder),
             "WEFT_PYTHON_PATH": SDK, **(env or {})},
    )
    try:
        answer = json.loads(completed.stdout)
    except ValueError:
        raise AssertionError(f"weft dags test {dag_id} printed no JSON: {completed.stderr[-2000:]}")
    return answer["run_state"], {name: value["state"] for name, value in answer["tasks"].items()}

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

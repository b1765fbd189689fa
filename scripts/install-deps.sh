#!/usr/bin/env bash
# Installs what weft's tests and standalone node need on a fresh machine, idempotently:
# the Python SDK's dependencies (jinja2, pytest; pendulum and jsonschema for the Airflow
# compatibility layer) and bubblewrap for the task sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -c 'import jinja2' 2>/dev/null || python3 -m pip install --quiet 'jinja2>=3.1'
python3 -c 'import pytest' 2>/dev/null || python3 -m pip install --quiet 'pytest>=7'
python3 -c 'import pendulum' 2>/dev/null || python3 -m pip install --quiet 'pendulum>=3,<4'
python3 -c 'import jsonschema' 2>/dev/null || python3 -m pip install --quiet 'jsonschema>=4'
bash deploy/install-sandbox-deps.sh >/dev/null

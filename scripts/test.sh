#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test of the workspace and
# of the Python SDK. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo test --workspace --all-targets --no-fail-fast "$@"
python3 -m pytest -q sdk/python/tests

#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test of the workspace and
# of the Python SDK. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo test --workspace --all-targets --no-fail-fast "$@"
# The ractor_cluster session over a link: a feature of weft-cells that nothing in the workspace
# turns on (cells/README.md says why), so it is tested in a build of its own.
cargo test -p weft-cells --features cluster --all-targets --no-fail-fast "$@"
python3 -m pytest -q sdk/python/tests

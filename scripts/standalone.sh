#!/usr/bin/env bash
# The run command: installs what weft needs, builds it and starts `weft standalone` with the
# example DAGs (embedded SQLite store in $WEFT_HOME, ~/.weft by default). Extra arguments go to
# `weft standalone`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
exec cargo run --release -p weft -- --dags-folder examples/dags standalone --trigger-new-dags "$@"

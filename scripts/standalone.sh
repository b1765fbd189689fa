#!/usr/bin/env bash
# The run command: installs what weft needs, builds it and the web UI's bundle, and starts
# `weft standalone` with the example DAGs (embedded SQLite store in $WEFT_HOME, ~/.weft by
# default; the UI on http://127.0.0.1:8080 unless --bind says otherwise). Extra arguments go
# to `weft standalone`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
# The UI's WASM bundle, written to target/site/pkg (the default of `web.pkg_dir`).
cargo run --release -q -p weft-ui-build
exec cargo run --release -p weft -- --dags-folder examples/dags standalone --trigger-new-dags "$@"

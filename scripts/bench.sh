#!/usr/bin/env bash
# The benchmark suite: builds `weft-bench` (release) and runs every workload, printing a table
# and writing JSON (default target/bench/results.json).
#
#   scripts/bench.sh [--smoke] [--airflow] [--airflow-fanout] [--out PATH] [--runs N]
#
# --smoke           small sizes, seconds not minutes (CI runs this so the suite never rots)
# --airflow         also run the same workloads on Apache Airflow 3.3.2 (LocalExecutor,
#                   PostgreSQL, parallelism 4) and print weft / Airflow ratios; installs and
#                   starts what it needs, and stops what it started
# --airflow-fanout  include Airflow's fanout1000 (about 20 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weft-target}"
AIRFLOW_VERSION=3.3.2
AIRFLOW_VENV="${WEFT_BENCH_AIRFLOW_VENV:-/var/tmp/airflow-venv}"
AIRFLOW_HOME_DIR="${WEFT_BENCH_AIRFLOW_HOME:-/var/tmp/weft-bench-airflow}"
PG_DB=weft_bench_airflow
PG_USER=weft_bench
PG_PASSWORD=weft_bench

airflow=0
airflow_fanout=0
bench_args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --airflow) airflow=1 ;;
        --airflow-fanout) airflow=1; airflow_fanout=1 ;;
        *) bench_args+=("$1") ;;
    esac
    shift
done

# The SDK's dependencies (the Python tasks import `weft`).
python3 -c 'import jinja2' 2>/dev/null || bash scripts/install-deps.sh

cargo build --release -p weft-bench
bench_bin="$CARGO_TARGET_DIR/release/weft-bench"

pg_started=0
stop_postgres() {
    if [[ $pg_started == 1 ]]; then
        echo "stopping the PostgreSQL cluster this script started" >&2
        pg_ctlcluster "$pg_version" main stop || true
    fi
}
trap stop_postgres EXIT

airflow_json=""
if [[ $airflow == 1 ]]; then
    # Airflow in its own virtualenv, at the pinned version (reused when it is already there).
    if ! "$AIRFLOW_VENV/bin/python" -c "import airflow, sys; sys.exit(airflow.__version__ != '$AIRFLOW_VERSION')" 2>/dev/null; then
        python3 -m venv "$AIRFLOW_VENV"
        # Pinned by a constraints file kept in the repository (the versions PyPI resolved for
        # this Airflow), since only package registries can be reached from these machines.
        "$AIRFLOW_VENV/bin/pip" install -q "apache-airflow==$AIRFLOW_VERSION" \
            --constraint "$repo/bench/airflow/constraints-$AIRFLOW_VERSION-py3.11.txt"
    fi
    "$AIRFLOW_VENV/bin/python" -c 'import psycopg2, asyncpg' 2>/dev/null \
        || "$AIRFLOW_VENV/bin/pip" install -q psycopg2-binary asyncpg

    # PostgreSQL from Debian, started here if it is not running.
    command -v pg_ctlcluster >/dev/null || { apt-get update -q && apt-get install -y -q postgresql; }
    pg_version=$(pg_lsclusters -h | awk '$2 == "main" { print $1; exit }')
    if ! pg_lsclusters -h | awk '$2 == "main" { print $4 }' | grep -q online; then
        pg_ctlcluster "$pg_version" main start
        pg_started=1
    fi
    psql_admin() { runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qtA "$@"; }
    if [[ -z $(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'") ]]; then
        psql_admin -c "CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD'"
    fi
    if [[ -z $(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'") ]]; then
        psql_admin -c "CREATE DATABASE $PG_DB OWNER $PG_USER"
    fi

    workloads=chain100_shell,light40
    [[ $airflow_fanout == 1 ]] && workloads+=",fanout1000"
    mkdir -p target/bench
    airflow_json="$repo/target/bench/airflow.json"
    PATH="$AIRFLOW_VENV/bin:$PATH" "$AIRFLOW_VENV/bin/python" bench/airflow/run_airflow.py \
        --home "$AIRFLOW_HOME_DIR" --dags "$repo/bench/airflow/dags" \
        --db-url "postgresql+psycopg2://$PG_USER:$PG_PASSWORD@127.0.0.1:5432/$PG_DB" \
        --workloads "$workloads" --out "$airflow_json"
    stop_postgres
    pg_started=0
    # Let the disk settle before weft's side: Airflow's database and log writes are still being
    # written back, and its deleted temporary files slow file creation for about a minute on
    # ext4 without a journal (see docs/performance.md).
    sync
    sleep "${WEFT_BENCH_SETTLE_S:-60}"
    bench_args+=(--airflow-results "$airflow_json")
fi

"$bench_bin" "${bench_args[@]}"

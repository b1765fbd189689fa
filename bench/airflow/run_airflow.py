"""The Airflow side of the benchmark suite: starts Apache Airflow (LocalExecutor on PostgreSQL),
runs the benchmark DAGs of `bench/airflow/dags` once each, and writes what it measured as JSON
for `weft-bench --airflow-results` to print next to weft's figures.

Run by `scripts/bench.sh --airflow` with the Airflow virtualenv's interpreter; PostgreSQL must be
running and the database must exist (the script sees to both). Every process started here is
stopped before it returns, also on failure.

End to end is measured as Airflow's own database records it: from the run's `queued_at` (the
moment the trigger created it) to its `end_date`. Task-to-task latency is a downstream task's
`start_date` minus its upstream's `end_date`."""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone

import psycopg2

# Workload name (as weft-bench names it) -> (dag id, chain order of task ids or None).
WORKLOADS = {
    "chain100_shell": ("weft_bench_chain100", [f"t{index:03}" for index in range(100)]),
    "light40": ("weft_bench_light40", [f"t{index:02}" for index in range(40)]),
    "fanout1000": ("weft_bench_fanout1000", None),
}
# How long one run may take before it is reported as not finished.
RUN_TIMEOUT_S = {"chain100_shell": 900, "light40": 600, "fanout1000": 3600}
# How long the components get to start and parse the DAG files.
STARTUP_TIMEOUT_S = 300
# Between two looks at the database while waiting.
POLL_INTERVAL_S = 0.5
# After SIGTERM, how long a component gets before SIGKILL.
STOP_GRACE_S = 20


def log(message):
    print(f"[airflow] {message}", file=sys.stderr, flush=True)


def airflow_env(args):
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": args.home,
        "AIRFLOW__CORE__DAGS_FOLDER": args.dags,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": args.db_url,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{args.port}/execution/",
        "AIRFLOW__API__PORT": str(args.port),
        "AIRFLOW__API_AUTH__JWT_SECRET": "weft-bench-local-secret",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    })
    return env


def start(name, command, env, home):
    out = open(os.path.join(home, f"{name}.log"), "ab")
    log(f"starting {name}")
    return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(processes):
    for name, process in processes:
        if process.poll() is None:
            log(f"stopping {name}")
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.time() + STOP_GRACE_S
    for name, process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for_dags(connection, dag_ids):
    deadline = time.time() + STARTUP_TIMEOUT_S
    while time.time() < deadline:
        with connection.cursor() as cursor:
            cursor.execute("SELECT dag_id FROM dag WHERE dag_id = ANY(%s) AND NOT is_paused", (list(dag_ids),))
            found = {row[0] for row in cursor.fetchall()}
        if found >= set(dag_ids):
            return
        time.sleep(1)
    raise RuntimeError(f"airflow did not load the benchmark dags {sorted(dag_ids)} in {STARTUP_TIMEOUT_S} s")


def wait_for_api_server(port):
    """Task processes report to the API server: a task started before it listens fails."""
    deadline = time.time() + STARTUP_TIMEOUT_S
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"the airflow api-server did not listen on port {port} in {STARTUP_TIMEOUT_S} s")


def percentile(values, fraction):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def run_workload(name, args, env, connection):
    dag_id, chain_order = WORKLOADS[name]
    run_id = f"weft_bench_{name}_{int(time.time())}"
    triggered = datetime.now(timezone.utc)
    log(f"{name}: triggering {dag_id}")
    subprocess.run(["airflow", "dags", "trigger", dag_id, "--run-id", run_id], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    deadline = time.time() + RUN_TIMEOUT_S[name]
    while True:
        with connection.cursor() as cursor:
            cursor.execute("SELECT state, queued_at, start_date, end_date FROM dag_run WHERE dag_id=%s AND run_id=%s",
                           (dag_id, run_id))
            row = cursor.fetchone()
        if row and row[0] in ("success", "failed"):
            break
        if time.time() > deadline:
            return {"workload": name, "state": "timeout", "run_id": run_id}
        time.sleep(POLL_INTERVAL_S)
    state, queued_at, started_at, ended_at = row
    result = {
        "workload": name,
        "state": state,
        "run_id": run_id,
        "end_to_end_s": (ended_at - queued_at).total_seconds(),
        "from_cli_s": (ended_at - triggered).total_seconds(),
        "from_run_start_s": (ended_at - started_at).total_seconds() if started_at else None,
    }
    with connection.cursor() as cursor:
        cursor.execute("SELECT task_id, start_date, end_date FROM task_instance WHERE dag_id=%s AND run_id=%s",
                       (dag_id, run_id))
        tasks = {task_id: (start_date, end_date) for task_id, start_date, end_date in cursor.fetchall()}
    result["tasks"] = len(tasks)
    if chain_order:
        gaps = []
        for upstream, downstream in zip(chain_order, chain_order[1:]):
            if upstream in tasks and downstream in tasks and tasks[upstream][1] and tasks[downstream][0]:
                gaps.append((tasks[downstream][0] - tasks[upstream][1]).total_seconds())
        result["task_to_task_s"] = {"p50": percentile(gaps, 0.5), "p99": percentile(gaps, 0.99),
                                    "max": max(gaps) if gaps else None, "count": len(gaps)}
    else:
        result["tasks_per_s"] = len(tasks) / result["end_to_end_s"]
    log(f"{name}: {state} in {result['end_to_end_s']:.1f} s")
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True)
    parser.add_argument("--dags", required=True)
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--port", type=int, default=28793)
    parser.add_argument("--workloads", default="chain100_shell,light40")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.home, exist_ok=True)
    env = airflow_env(args)
    workloads = [name for name in args.workloads.split(",") if name]
    version = subprocess.run(["airflow", "version"], env=env, capture_output=True, text=True).stdout.strip()
    log(f"airflow {version}: migrating the database")
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    processes = []
    results = {"airflow_version": version, "executor": "LocalExecutor", "parallelism": 4,
               "database": "postgresql", "workloads": {}}
    try:
        processes.append(("api-server", start("api-server", ["airflow", "api-server", "--port", str(args.port)], env, args.home)))
        processes.append(("scheduler", start("scheduler", ["airflow", "scheduler"], env, args.home)))
        processes.append(("dag-processor", start("dag-processor", ["airflow", "dag-processor"], env, args.home)))
        connection = psycopg2.connect(args.db_url.replace("postgresql+psycopg2://", "postgresql://"))
        connection.autocommit = True
        wait_for_dags(connection, [WORKLOADS[name][0] for name in workloads])
        wait_for_api_server(args.port)
        for name in workloads:
            results["workloads"][name] = run_workload(name, args, env, connection)
            with open(args.out, "w") as out:
                json.dump(results, out, indent=2)
    finally:
        stop(processes)
    with open(args.out, "w") as out:
        json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Runs the example DAGs that ship with Apache Airflow 3.3.2 on weft and on Airflow itself and
compares the outcome: the run's final state and every task's final state.

    scripts/airflow_examples.py               # both sides (creates the Airflow virtualenv if needed)
    scripts/airflow_examples.py --weft-only   # weft against the stored expected table (CI)
    scripts/airflow_examples.py --record      # both sides, then rewrite the stored table

The example files are downloaded from PyPI at run time (the `apache-airflow-core` and
`apache-airflow-providers-standard` wheels, `pip download --no-deps`) into a cache folder
outside the repository; they are never committed. Examples that need an outside system
(network, cloud, run-time pip installs, a human) are listed with the reason and not run.
Both sides run each DAG once with the same logical date, as `dags test` does."""

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPECTED = os.path.join(ROOT, "sdk", "python", "tests", "fixtures", "airflow_examples_expected.json")
AIRFLOW_VERSION = "3.3.2"
PROVIDERS_STANDARD_VERSION = "1.21.0"
WHEELS = [f"apache-airflow-core=={AIRFLOW_VERSION}",
          f"apache-airflow-providers-standard=={PROVIDERS_STANDARD_VERSION}"]
LOGICAL_DATE = "2025-03-04T05:06:00+00:00"
# One `dags test` may take this long on either side before it counts as hung.
RUN_TIMEOUT_S = 300

# Examples that are not self-contained, and why.
NOT_SELF_CONTAINED = {
    "example_dag_decorator.py": "network (httpx call to an outside service)",
    "tutorial_objectstorage.py": "network and object storage",
    "example_retry_policy.py": "network (requests to an outside API)",
    "example_kubernetes_executor.py": "Kubernetes cluster",
    "example_local_kubernetes_executor.py": "Kubernetes cluster",
    "example_branch_operator.py": "run-time pip (virtualenv tasks)",
    "example_branch_operator_decorator.py": "run-time pip (virtualenv tasks)",
    "example_python_decorator.py": "run-time pip (virtualenv tasks)",
    "example_python_operator.py": "run-time pip (virtualenv tasks)",
    "tutorial_taskflow_api_virtualenv.py": "run-time pip (virtualenv tasks)",
    "example_hitl_operator.py": "human input",
    "example_asset_with_watchers.py": "waits for a file to appear (outside event)",
    "example_external_task_marker_dag.py": "waits for another DAG's run",
    "example_external_task_parent_deferrable.py": "waits for another DAG's run",
    "example_time_delta_sensor_async.py": "needs Airflow's triggerer process",
    "example_sensors.py": "needs Airflow's triggerer process (deferrable sensors)",
}

# Example DAGs whose branch depends on the wall clock when they run, not on their logical
# date: (file, dag_id) -> (lower, upper) UTC times of day of the range, and the task followed
# inside and outside it. Airflow's stored result is from the time Airflow ran; weft's is
# compared with what the operator chooses at the time weft ran it.
WALL_CLOCK_BRANCHES = {
    ("example_branch_datetime_operator.py", "example_branch_datetime_operator_2"):
        ((15, 0, 0), (0, 0, 0), "date_in_range", "date_outside_range"),
}


def wall_clock_in_range(at, lower, upper):
    """Whether the UTC datetime `at` is in the daily range [lower, upper] as Airflow's
    BranchDateTimeOperator reads two times of day (an upper bound before the lower one is on
    the next day)."""
    import datetime
    day = at.date()
    low = datetime.datetime.combine(day, datetime.time(*lower), tzinfo=datetime.timezone.utc)
    high = datetime.datetime.combine(day, datetime.time(*upper), tzinfo=datetime.timezone.utc)
    if high < low:
        high += datetime.timedelta(days=1)
    return low <= at <= high


def expected_for_wall_clock(key, airflow, run_between):
    """Airflow's stored result of a wall-clock branch DAG as it would be at the times weft ran
    it: one expectation, or two when the range's edge passed during weft's run."""
    lower, upper, inside, outside = WALL_CLOCK_BRANCHES[key]
    if "tasks" not in airflow:
        return [airflow]
    expectations = []
    for in_range in sorted({wall_clock_in_range(at, lower, upper) for at in run_between}):
        tasks = dict(airflow["tasks"])
        tasks[inside], tasks[outside] = ("success", "skipped") if in_range else ("skipped", "success")
        expectations.append({**airflow, "tasks": tasks})
    return expectations



# Example DAGs whose branch depends on the weekday (UTC) when they run: Airflow's
# BranchDayOfWeekOperator reads the wall clock unless `use_task_logical_date`. The stored result
# is from the day Airflow ran; weft's is compared with what the operators choose on the days
# weft ran it.
WEEKDAY_BRANCHES = {("example_branch_day_of_week_operator.py", "example_weekday_branch_operator")}


def expected_for_weekday(airflow, run_between):
    """Airflow's stored result of example_weekday_branch_operator as it would be on the days
    weft ran it: `make_choice` follows `branch_true` on Mondays, then `make_weekend_choice`
    follows `branch_weekend` on Saturdays and Sundays."""
    if "tasks" not in airflow:
        return [airflow]
    expectations = []
    for weekday in sorted({at.weekday() for at in run_between}):
        tasks = dict(airflow["tasks"])
        monday, weekend = weekday == 0, weekday >= 5
        tasks["branch_true"], tasks["branch_false"] = (
            ("success", "skipped") if monday else ("skipped", "success"))
        if monday:
            for task_id in ("make_weekend_choice", "branch_weekend", "branch_mid_week"):
                tasks[task_id] = "skipped"
        else:
            tasks["make_weekend_choice"] = "success"
            tasks["branch_weekend"], tasks["branch_mid_week"] = (
                ("success", "skipped") if weekend else ("skipped", "success"))
        expectations.append({**airflow, "tasks": tasks})
    return expectations


def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME")
    return os.path.join(base, "weft-airflow-examples") if base else "/var/tmp/weft-airflow-examples"


def log(message):
    print(message, file=sys.stderr, flush=True)


# ---- example files -------------------------------------------------------------------------


def fetch_examples(cache):
    """The example DAG files, extracted from the wheels into `cache/examples` (flat)."""
    wheels = os.path.join(cache, "wheels")
    examples = os.path.join(cache, "examples")
    marker = os.path.join(examples, ".complete-2")
    if os.path.exists(marker):
        return examples
    os.makedirs(wheels, exist_ok=True)
    for requirement in WHEELS:
        name = requirement.split("==")[0].replace("-", "_")
        version = requirement.split("==")[1]
        if not any(f.startswith(f"{name}-{version}-") for f in os.listdir(wheels)):
            log(f"downloading {requirement} from PyPI")
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            requirement, "-d", wheels], check=True)
    shutil.rmtree(examples, ignore_errors=True)
    os.makedirs(examples)
    for wheel in sorted(os.listdir(wheels)):
        if not wheel.endswith(".whl"):
            continue
        with zipfile.ZipFile(os.path.join(wheels, wheel)) as archive:
            for member in archive.namelist():
                folder, _, filename = member.rpartition("/")
                if folder.endswith("example_dags") and filename.endswith(".py") and filename != "__init__.py":
                    target_path = os.path.join(examples, filename)
                elif folder.endswith("example_dags/sql") and filename.endswith(".sql"):
                    # Template files the examples read (`templates_exts=[".sql"]`).
                    os.makedirs(os.path.join(examples, "sql"), exist_ok=True)
                    target_path = os.path.join(examples, "sql", filename)
                else:
                    continue
                with archive.open(member) as source, open(target_path, "wb") as target:
                    shutil.copyfileobj(source, target)
    open(marker, "w").close()
    return examples


def example_files(examples):
    return sorted(f for f in os.listdir(examples) if f.endswith(".py"))


def single_file_folder(work, examples, filename):
    """A DAG folder holding only `filename`, so each side parses one file per run."""
    folder = os.path.join(work, "dags", filename[:-3])
    os.makedirs(folder, exist_ok=True)
    shutil.copy(os.path.join(examples, filename), folder)
    templates = os.path.join(examples, "sql")
    if os.path.isdir(templates) and not os.path.exists(os.path.join(folder, "sql")):
        shutil.copytree(templates, os.path.join(folder, "sql"))
    return folder


# ---- weft side -----------------------------------------------------------------------------


def weft_binary():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    path = os.environ.get("WEFT_BIN") or os.path.join(target, "debug", "weft")
    if not os.path.exists(path):
        log("building the weft binary (cargo build -p weft)")
        subprocess.run(["cargo", "build", "-q", "-p", "weft"], cwd=ROOT, check=True)
    return path


def weft_parse(folder, filename):
    """(dag ids, import error or None) of one file, as weft's DAG processor sees it."""
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "sdk", "python")}
    completed = subprocess.run([sys.executable, "-m", "weft.processor", os.path.join(folder, filename)],
                               capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT_S)
    answer = json.loads(completed.stdout.splitlines()[0])
    error = answer["error"]
    if error:
        return [], f"import error (line {error.get('line')}): {error['message']}"
    return [spec["dag_id"] for spec in answer["dags"]], None


def weft_run(binary, folder, dag_id, work):
    home = tempfile.mkdtemp(prefix="home-", dir=work)
    env = {**os.environ, "WEFT_HOME": home, "WEFT_DAGS_FOLDER": folder,
           "WEFT_PYTHON_PATH": os.path.join(ROOT, "sdk", "python")}
    try:
        completed = subprocess.run([binary, "--json", "dags", "test", dag_id, LOGICAL_DATE],
                                   capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"weft dags test took longer than {RUN_TIMEOUT_S} s"}
    try:
        answer = json.loads(completed.stdout)
    except ValueError:
        return {"error": "weft dags test failed: " + (completed.stderr.strip().splitlines() or ["?"])[-1]}
    tasks = {name: value["state"] for name, value in answer["tasks"].items()}
    return {"run_state": answer["run_state"], "tasks": normalize_tasks(tasks)}


def normalize_tasks(tasks):
    """Drop the placeholder of an expanded mapped task (Airflow reuses it as index 0)."""
    result = {}
    for name, state in tasks.items():
        if "[" not in name and state == "removed" and f"{name}[0]" in tasks:
            continue
        result[name] = "none" if state is None else state
    return result


def weft_side(examples, files, work, dag_files=None):
    binary = weft_binary()
    results = {}
    for filename in files:
        folder = single_file_folder(work, examples, filename)
        dag_ids, error = weft_parse(folder, filename)
        expected_ids = (dag_files or {}).get(filename) or dag_ids
        for dag_id in expected_ids:
            if error:
                results[(filename, dag_id)] = {"error": error}
            elif dag_id not in dag_ids:
                results[(filename, dag_id)] = {"error": "weft found no such DAG in the file"}
            else:
                log(f"weft: {dag_id}")
                results[(filename, dag_id)] = weft_run(binary, folder, dag_id, work)
    return results


# ---- Airflow side --------------------------------------------------------------------------


def airflow_venv(cache):
    """The Airflow virtualenv: $AIRFLOW_VENV, /var/tmp/airflow-venv, or one made in the cache."""
    for candidate in (os.environ.get("AIRFLOW_VENV"), "/var/tmp/airflow-venv",
                      os.path.join(cache, "airflow-venv")):
        if candidate and os.path.exists(os.path.join(candidate, "bin", "airflow")):
            version = subprocess.run([os.path.join(candidate, "bin", "airflow"), "version"],
                                     capture_output=True, text=True).stdout.strip()
            if version.endswith(AIRFLOW_VERSION):
                return candidate
    venv = os.path.join(cache, "airflow-venv")
    log(f"creating the Airflow {AIRFLOW_VERSION} virtualenv in {venv}")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--quiet",
                    f"apache-airflow=={AIRFLOW_VERSION}",
                    f"apache-airflow-providers-standard=={PROVIDERS_STANDARD_VERSION}"], check=True)
    return venv


def airflow_env(home, folder):
    return {**os.environ, "AIRFLOW_HOME": home, "AIRFLOW__CORE__DAGS_FOLDER": folder,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "PYTHONPATH": ""}


_LIST_DAGS = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
print(json.dumps({"dags": sorted(bag.dags), "errors": {k: str(v)[-300:] for k, v in bag.import_errors.items()}}))
"""


class AirflowWorker:
    """One Airflow metadata database (SQLite in its own AIRFLOW_HOME) that runs `dags test`
    for one example file at a time; several workers run files side by side."""

    def __init__(self, venv, work, number):
        self.airflow = os.path.join(venv, "bin", "airflow")
        self.python = os.path.join(venv, "bin", "python")
        self.work = work
        self.home = os.path.join(work, f"airflow-home-{number}")
        os.makedirs(self.home, exist_ok=True)
        empty = os.path.join(work, f"empty-{number}")
        os.makedirs(empty, exist_ok=True)
        log(f"airflow db migrate ({self.home})")
        subprocess.run([self.airflow, "db", "migrate"], env=airflow_env(self.home, empty), check=True,
                       capture_output=True)
        self.database = os.path.join(self.home, "airflow.db")

    def run_file(self, examples, filename):
        """{"dags": [...], "results": {dag_id: result}} of one example file."""
        folder = single_file_folder(self.work, examples, filename)
        listed = subprocess.run([self.python, "-c", _LIST_DAGS, folder], capture_output=True, text=True,
                                env=airflow_env(self.home, folder), timeout=RUN_TIMEOUT_S)
        try:
            bag = json.loads(listed.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            bag = {"dags": [], "errors": {filename: listed.stderr[-300:]}}
        if bag["errors"] and not bag["dags"]:
            return {"dags": [], "results": {"-": {"error": "import error: " + next(iter(bag["errors"].values()))}}}
        results = {}
        for dag_id in bag["dags"]:
            log(f"airflow: {dag_id}")
            try:
                subprocess.run([self.airflow, "dags", "test", dag_id, LOGICAL_DATE], capture_output=True,
                               env=airflow_env(self.home, folder), timeout=RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                results[dag_id] = {"error": f"airflow dags test took longer than {RUN_TIMEOUT_S} s"}
                continue
            results[dag_id] = airflow_states(self.database, dag_id)
        return {"dags": bag["dags"], "results": results}


def airflow_states(database, dag_id):
    with sqlite3.connect(database) as connection:
        row = connection.execute(
            "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()
        if row is None:
            return {"error": "airflow dags test created no run"}
        run_id, state = row
        tasks = {}
        for task_id, map_index, task_state in connection.execute(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
            (dag_id, run_id),
        ):
            name = f"{task_id}[{map_index}]" if map_index >= 0 else task_id
            tasks[name] = task_state or "none"
    return {"run_state": state, "tasks": tasks}


def cached_airflow_side(examples, files, work, arguments):
    """The Airflow side's results. Airflow takes about a minute per DAG, so results are kept
    in the cache file by example file as soon as each is done, and `--airflow-jobs` files run
    side by side."""
    path = os.path.join(arguments.cache, f"airflow-results-{AIRFLOW_VERSION}.json")
    stored = {}
    if os.path.exists(path) and not arguments.fresh_airflow:
        with open(path) as handle:
            stored = json.load(handle)
    missing = [f for f in files if f not in stored]
    if missing:
        venv = airflow_venv(arguments.cache)
        lock = threading.Lock()
        pending = list(missing)

        def work_through(number):
            worker = AirflowWorker(venv, work, number)
            while True:
                with lock:
                    if not pending:
                        return
                    filename = pending.pop(0)
                result = worker.run_file(examples, filename)
                with lock:
                    stored[filename] = result
                    with open(path + ".tmp", "w") as handle:
                        json.dump(stored, handle, indent=1)
                    os.replace(path + ".tmp", path)

        threads = [threading.Thread(target=work_through, args=(n,))
                   for n in range(max(1, min(arguments.airflow_jobs, len(missing))))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    airflow = {}
    dag_files = {}
    for filename in files:
        dag_files[filename] = stored[filename]["dags"]
        for dag_id, result in stored[filename]["results"].items():
            airflow[(filename, dag_id)] = result
    return airflow, dag_files


# ---- comparison ----------------------------------------------------------------------------


def compare(weft, airflow):
    """(matches, reason when not)."""
    if "error" in weft:
        return False, f"weft: {weft['error']}"
    if "error" in airflow:
        return False, f"airflow: {airflow['error']}"
    reasons = []
    if weft["run_state"] != airflow["run_state"]:
        reasons.append(f"run {weft['run_state']} vs {airflow['run_state']}")
    for name in sorted(set(weft["tasks"]) | set(airflow["tasks"])):
        left, right = weft["tasks"].get(name, "absent"), airflow["tasks"].get(name, "absent")
        if left != right:
            reasons.append(f"{name}: {left} vs {right}")
    return not reasons, "; ".join(reasons)


def print_table(rows):
    header = ("dag_id", "weft run", "airflow run", "task states match", "reason when not")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(4)]
    line = lambda row: "  ".join(str(value).ljust(width) for value, width in zip(row, widths)) + "  " + row[4]
    print(line(header))
    for row in rows:
        print(line(row))


def table_rows(weft, airflow, skipped, run_between):
    rows = []
    matched = 0
    outcome = {}
    reasons = {}
    for key in sorted(airflow):
        filename, dag_id = key
        weft_result = weft.get(key, {"error": "not run"})
        expected = airflow[key]
        if key in WALL_CLOCK_BRANCHES:
            candidates = expected_for_wall_clock(key, expected, run_between)
            expected = next((c for c in candidates if compare(weft_result, c)[0]), candidates[0])
        if key in WEEKDAY_BRANCHES:
            candidates = expected_for_weekday(expected, run_between)
            expected = next((c for c in candidates if compare(weft_result, c)[0]), candidates[0])
        ok, reason = compare(weft_result, expected)
        matched += ok
        outcome[key] = ok
        reasons[key] = reason
        tasks_match = "tasks" in weft_result and weft_result["tasks"] == expected.get("tasks")
        rows.append((dag_id if dag_id != "-" else filename, weft_result.get("run_state", "error"),
                     airflow[key].get("run_state", "error"), "yes" if tasks_match else "no",
                     reason[:200]))
    for filename, reason in sorted(skipped.items()):
        rows.append((filename, "-", "-", "-", f"not self-contained: {reason}"))
    return rows, matched, outcome, reasons


def load_expected():
    with open(EXPECTED) as handle:
        return json.load(handle)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weft-only", action="store_true",
                        help="run weft only and compare with the stored expected table")
    parser.add_argument("--record", action="store_true", help="rewrite the stored expected table")
    parser.add_argument("--only", nargs="*", help="example files to run (default: all self-contained)")
    parser.add_argument("--cache", default=cache_dir())
    parser.add_argument("--airflow-jobs", type=int, default=3,
                        help="example files Airflow runs side by side (each with its own database)")
    parser.add_argument("--fresh-airflow", action="store_true",
                        help="run the Airflow side again even when the cache holds its results")
    arguments = parser.parse_args()

    examples = fetch_examples(arguments.cache)
    all_files = example_files(examples)
    skipped = {f: NOT_SELF_CONTAINED[f] for f in all_files if f in NOT_SELF_CONTAINED}
    files = [f for f in all_files if f not in NOT_SELF_CONTAINED]
    if arguments.only:
        files = [f for f in files if f in arguments.only or f[:-3] in arguments.only]
        skipped = {}
    work = tempfile.mkdtemp(prefix="weft-airflow-examples-")
    try:
        if arguments.weft_only:
            expected = load_expected()
            airflow = {(row["file"], row["dag_id"]): row["airflow"] for row in expected["dags"]
                       if row["file"] in files}
            dag_files = {}
            for filename, dag_id in airflow:
                dag_files.setdefault(filename, []).append(dag_id)
            recorded = {(row["file"], row["dag_id"]): row["match"] for row in expected["dags"]}
        else:
            airflow, dag_files = cached_airflow_side(examples, files, work, arguments)
            recorded = None
        import datetime
        weft_started = datetime.datetime.now(datetime.timezone.utc)
        weft = weft_side(examples, files, work, {f: [d for d in ids] for f, ids in dag_files.items()})
        run_between = [weft_started, datetime.datetime.now(datetime.timezone.utc)]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows, matched, outcome, reasons = table_rows(weft, airflow, skipped, run_between)
    print_table(rows)
    print(f"\n{matched} of {len(airflow)} self-contained example DAGs match Airflow {AIRFLOW_VERSION} "
          f"({len(skipped)} example files need an outside system and are not run)")

    if arguments.record:
        os.makedirs(os.path.dirname(EXPECTED), exist_ok=True)
        table = {
            "airflow_version": AIRFLOW_VERSION,
            "providers_standard_version": PROVIDERS_STANDARD_VERSION,
            "logical_date": LOGICAL_DATE,
            "dags": [
                {"file": f, "dag_id": d, "airflow": airflow[(f, d)], "match": outcome[(f, d)],
                 "reason": reasons[(f, d)]}
                for f, d in sorted(airflow)
            ],
        }
        with open(EXPECTED, "w") as handle:
            json.dump(table, handle, indent=1, sort_keys=True)
            handle.write("\n")
        log(f"wrote {EXPECTED}")
    if recorded is not None:
        regressions = [key for key, ok in outcome.items() if recorded.get(key) and not ok]
        improved = [key for key, ok in outcome.items() if ok and not recorded.get(key)]
        for filename, dag_id in improved:
            print(f"now matches (update the table with --record): {dag_id}")
        for filename, dag_id in regressions:
            print(f"REGRESSION: {dag_id} ({filename}) matched Airflow before and does not now")
        return 1 if regressions else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

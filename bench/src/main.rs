//! weft-bench: runs weft's benchmark workloads, prints a table (p50 / p99 / max over several
//! runs, throughput, CPU seconds, peak memory) and writes it as JSON; with the results of the
//! Airflow side (`--airflow-results`), adds weft / Airflow ratios. `scripts/bench.sh` drives it.
//!
//!     weft-bench [--smoke] [--out PATH] [--runs N] [--only NAME,..] [--airflow-results PATH]

mod cells;
mod idle;
mod measure;
// Compiles in the runtime's DAG processor, whose own tests belong to the runtime: a test build
// of this binary leaves it out instead of running them twice.
#[cfg(not(test))]
mod parse;
mod remote;
mod report;
mod workloads;

use anyhow::Context as _;
use report::{Report, WorkloadResult};
use std::path::PathBuf;
use std::time::Duration;
use workloads::{Sizes, Workspace};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Repetitions of each floor measurement.
const FLOOR_REPETITIONS: usize = 500;

struct Options {
    smoke: bool,
    out: PathBuf,
    runs: Option<usize>,
    only: Option<Vec<String>>,
    /// Results of the Airflow side; several files (e.g. a separate fanout1000 run) merge.
    airflow_results: Vec<PathBuf>,
    data_dir: PathBuf,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut options = Options {
        smoke: false,
        out: PathBuf::from("target/bench/results.json"),
        runs: None,
        only: None,
        airflow_results: Vec::new(),
        data_dir: default_data_dir(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--smoke" => options.smoke = true,
            "--out" => options.out = PathBuf::from(value()?),
            "--runs" => options.runs = Some(value()?.parse().context("--runs takes a number")?),
            "--only" => options.only = Some(value()?.split(',').map(str::to_string).collect()),
            "--airflow-results" => options.airflow_results.push(PathBuf::from(value()?)),
            "--data-dir" => options.data_dir = PathBuf::from(value()?),
            other => anyhow::bail!(
                "unknown argument `{other}`; usage: weft-bench [--smoke] [--out PATH] [--runs N] [--only NAME,..] [--airflow-results PATH] [--data-dir DIR]"
            ),
        }
    }
    Ok(options)
}

fn sizes(smoke: bool, runs: Option<usize>) -> Sizes {
    if smoke {
        Sizes {
            runs: runs.unwrap_or(2),
            chain_length: 20,
            remote_chain_length: 5,
            remote_fanout_width: 20,
            kill_trials: 1,
            light_length: 10,
            fanout_width: 50,
            many_dags: 10,
            many_dags_tasks: 5,
            inproc_runs: 4,
            inproc_width: 100,
        }
    } else {
        Sizes {
            runs: runs.unwrap_or(5),
            chain_length: 100,
            remote_chain_length: 100,
            remote_fanout_width: 1_000,
            kill_trials: 10,
            light_length: 40,
            fanout_width: 1_000,
            many_dags: 200,
            many_dags_tasks: 5,
            inproc_runs: 20,
            inproc_width: 1_000,
        }
    }
}

/// One Airflow result document from several files: the first file's settings, every file's
/// workloads (a later file wins a name), and the list of files.
fn merge_airflow_results(paths: &[PathBuf]) -> anyhow::Result<Option<serde_json::Value>> {
    let mut merged: Option<serde_json::Value> = None;
    for path in paths {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let document: serde_json::Value = serde_json::from_slice(&text)?;
        let target = merged.get_or_insert_with(|| {
            let mut first = document.clone();
            first["workloads"] = serde_json::json!({});
            first["sources"] = serde_json::json!([]);
            first
        });
        if let (Some(workloads), Some(into)) = (
            document["workloads"].as_object(),
            target["workloads"].as_object_mut(),
        ) {
            for (name, result) in workloads {
                into.insert(name.clone(), result.clone());
            }
        }
        if let Some(sources) = target["sources"].as_array_mut() {
            sources.push(serde_json::json!(path.display().to_string()));
        }
    }
    Ok(merged)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // This binary run again as a remote worker of a remote workload (`remote.rs`).
    if let Ok(spec) = std::env::var(remote::WORKER_ENV) {
        return remote::worker_main(&spec).await;
    }
    let options = parse_options()?;
    let sizes = sizes(options.smoke, options.runs);
    // A directory of this invocation's own, removed only once everything is measured: on a
    // file system without a journal, ext4 skips inodes deleted in the last one to six minutes
    // when it allocates new ones, scanning past each of them, and deleting a previous run's
    // thousands of log files just before a workload made every file creation of that workload
    // pay for the scan (40 % of the engine's CPU in fanout1000 on the machine of
    // docs/performance.md).
    remove_stale_invocations(&options.data_dir);
    let workspace = Workspace {
        root: options
            .data_dir
            .join(format!("{INVOCATION_PREFIX}{}", std::process::id())),
        sdk: std::env::var_os("WEFT_PYTHON_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk/python"))
            }),
    };
    std::fs::create_dir_all(&workspace.root)?;
    let wanted = |name: &str| {
        options
            .only
            .as_ref()
            .is_none_or(|only| only.iter().any(|item| item == name))
    };

    eprintln!("measuring the machine's floor");
    let floor = measure::measure_floor(&workspace.root, FLOOR_REPETITIONS)?;
    let mut results: Vec<WorkloadResult> = Vec::new();
    let mut record = |result: anyhow::Result<WorkloadResult>, name: &str| match result {
        Ok(result) => {
            eprintln!("{name}: p50 {:.4} s", result.end_to_end_s.p50);
            results.push(result);
            Ok(())
        }
        Err(error) => Err(error.context(format!("workload {name} failed"))),
    };
    // The isolation's cost, beside no isolation: only root can give tasks a user of their own.
    for (name, isolation) in [
        ("chain100_shell", workloads::Isolation::None),
        ("chain100_shell_user", workloads::Isolation::User),
        ("chain100_shell_full", workloads::Isolation::Full),
    ] {
        let possible =
            isolation == workloads::Isolation::None || weft_actors::executor::sandbox::is_root();
        if wanted(name) && possible {
            eprintln!("running {name}");
            record(
                workloads::chain_shell(&workspace, &sizes, isolation).await,
                name,
            )?;
        }
    }
    if wanted("chain100_shell_remote") {
        eprintln!("running chain100_shell_remote");
        record(
            workloads::chain_shell_remote(&workspace, &sizes).await,
            "chain100_shell_remote",
        )?;
    }
    if wanted("chain100_inproc") {
        eprintln!("running chain100_inproc");
        record(
            workloads::chain_inproc(&workspace, &sizes).await,
            "chain100_inproc",
        )?;
    }
    if wanted("chain100_python") {
        eprintln!("running chain100_python");
        record(
            workloads::chain_python(&workspace, &sizes).await,
            "chain100_python",
        )?;
    }
    if wanted("light40") {
        eprintln!("running light40");
        record(workloads::light(&workspace, &sizes).await, "light40")?;
    }
    if wanted("fanout1000") {
        eprintln!("running fanout1000");
        record(
            workloads::fanout(&workspace, &sizes, floor.fork_exec_parallel_per_s).await,
            "fanout1000",
        )?;
    }
    if wanted("fanout1000_remote3") {
        eprintln!("running fanout1000_remote3");
        record(
            workloads::fanout_remote(&workspace, &sizes, floor.fork_exec_parallel_per_s).await,
            "fanout1000_remote3",
        )?;
    }
    if wanted("kill9_retry_remote") {
        eprintln!("running kill9_retry_remote");
        record(
            workloads::kill9_retry_remote(&workspace, &sizes).await,
            "kill9_retry_remote",
        )?;
    }
    if wanted("failover_cells") {
        match (cells::cql_address(), cells::weft_binary()) {
            (Some(address), Some(weft)) => {
                eprintln!("running failover_cells");
                record(
                    cells::failover_cells(&workspace, &sizes, &address, &weft).await,
                    "failover_cells",
                )?;
            }
            _ => eprintln!(
                "skipping failover_cells: it needs a CQL server (WEFT_BENCH_CQL=host:port) and \
                 the weft binary beside weft-bench (cargo build [--release] -p weft)"
            ),
        }
    }
    if wanted("events_cells") {
        eprintln!("running events_cells");
        record(
            cells::events_cells(&workspace, cells::event_runs(options.smoke)).await,
            "events_cells",
        )?;
    }
    if wanted("many_dags") {
        eprintln!("running many_dags");
        record(workloads::many_dags(&workspace, &sizes).await, "many_dags")?;
    }
    if wanted("inproc") {
        eprintln!("running inproc");
        record(workloads::inproc(&workspace, &sizes).await, "inproc")?;
    }
    if wanted("idle_scale") {
        eprintln!("running idle_scale");
        let (counts, window): (&[usize], _) = if options.smoke {
            (&[100, 1_000], Duration::from_secs(1))
        } else {
            (&[1_000, 10_000, 100_000], Duration::from_secs(10))
        };
        record(
            idle::idle_scale(counts, window, &workspace.root.join("idle")).await,
            "idle_scale",
        )?;
    }
    #[cfg(not(test))]
    if wanted("parse1000") {
        eprintln!("running parse1000");
        let files = if options.smoke { 20 } else { 1_000 };
        record(
            parse::parse(&workspace.root.join("parse_dags"), files).await,
            "parse1000",
        )?;
    }

    side_by_side_with_local(&mut results);

    let airflow = merge_airflow_results(&options.airflow_results)?;
    let mut report = Report {
        machine: report::machine(&workspace.root),
        smoke: options.smoke,
        floor,
        workloads: results,
        airflow,
        comparisons: Vec::new(),
    };
    report.compare();
    print!("{}", report.table());
    if let Some(parent) = options.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&options.out, serde_json::to_vec_pretty(&report)?)?;
    eprintln!("results written to {}", options.out.display());
    if let Err(error) = std::fs::remove_dir_all(&workspace.root) {
        eprintln!("cannot remove {}: {error}", workspace.root.display());
    }
    // Written back now, the deleted inodes stop slowing file creation after about a minute
    // instead of six (ext4 without a journal counts a dirty inode table block as recent).
    let _ = std::process::Command::new("sync").status();
    Ok(())
}

/// `/var/tmp/weft-bench` where there is a `/var/tmp`, else under the temporary directory. Not
/// `/tmp` by default: on a machine that also runs test suites, `/tmp` sees a constant churn of
/// temporary directories, and on ext4 without a journal every file created near recently
/// deleted ones pays a scan past them (2.5 ms instead of 0.08 ms to create a log directory and
/// file, measured on the machine of docs/performance.md).
fn default_data_dir() -> PathBuf {
    let var_tmp = std::path::Path::new("/var/tmp");
    if var_tmp.is_dir() {
        var_tmp.join("weft-bench")
    } else {
        std::env::temp_dir().join("weft-bench")
    }
}

/// Names of the per-invocation directories under `--data-dir`.
const INVOCATION_PREFIX: &str = "invocation-";

/// Removes what an interrupted earlier invocation left behind (a finished one removes its own).
fn remove_stale_invocations(data_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(INVOCATION_PREFIX)
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The local figures of the same invocation beside each remote workload's, when both ran.
fn side_by_side_with_local(results: &mut [WorkloadResult]) {
    for (remote, local) in [
        ("chain100_shell_remote", "chain100_shell"),
        ("fanout1000_remote3", "fanout1000"),
    ] {
        let Some(local) = results.iter().find(|result| result.name == local).cloned() else {
            continue;
        };
        let Some(remote) = results.iter_mut().find(|result| result.name == remote) else {
            continue;
        };
        let mut beside = serde_json::json!({
            "workload": local.name,
            "end_to_end_s_p50": local.end_to_end_s.p50,
        });
        if let Some(gaps) = local.task_to_task_ms {
            beside["task_to_task_ms_p50"] = serde_json::json!(gaps.p50);
            beside["task_to_task_ms_p99"] = serde_json::json!(gaps.p99);
        }
        if let Some(share) = local.notes.get("share_of_adjacent_fork_exec_floor") {
            beside["share_of_adjacent_fork_exec_floor_p50"] = share["p50"].clone();
        }
        remote
            .notes
            .insert("local_same_invocation".to_string(), beside);
    }
}

//! What a workload reports, the printed table, the JSON file, and the side-by-side ratios
//! with the Airflow results that `bench/airflow/run_airflow.py` wrote.

use crate::measure::{peak_rss_mib, Floor, Summary, Usage};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub value: f64,
    pub unit: &'static str,
}

impl Throughput {
    pub fn new(value: f64, unit: &'static str) -> Throughput {
        Throughput { value, unit }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadResult {
    pub name: String,
    pub description: String,
    /// Wall time of one run (or of the measured step, see `description`), seconds.
    pub end_to_end_s: Summary,
    /// Downstream attempt start minus upstream attempt end, milliseconds.
    pub task_to_task_ms: Option<Summary>,
    pub throughput: Option<Throughput>,
    /// CPU (user + system) of the bench process and its reaped children during the workload.
    pub cpu_s: f64,
    /// Peak resident memory of the bench process during the workload.
    pub peak_rss_mib: f64,
    pub notes: BTreeMap<String, serde_json::Value>,
}

impl WorkloadResult {
    pub fn new(
        name: &str,
        description: &str,
        end_to_end_s: Summary,
        usage: Usage,
    ) -> WorkloadResult {
        WorkloadResult {
            name: name.to_string(),
            description: description.to_string(),
            end_to_end_s,
            task_to_task_ms: None,
            throughput: None,
            cpu_s: usage.cpu_since(),
            peak_rss_mib: peak_rss_mib(),
            notes: BTreeMap::new(),
        }
    }

    pub fn with_task_to_task(mut self, summary: Summary) -> WorkloadResult {
        self.task_to_task_ms = Some(summary);
        self
    }

    pub fn with_throughput(mut self, throughput: Throughput) -> WorkloadResult {
        self.throughput = Some(throughput);
        self
    }

    pub fn with_note(mut self, name: &str, value: serde_json::Value) -> WorkloadResult {
        self.notes.insert(name.to_string(), value);
        self
    }
}

/// One comparison with Airflow: weft's figure, Airflow's, and weft / Airflow.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub workload: String,
    pub figure: String,
    pub weft: f64,
    pub airflow: f64,
    pub ratio: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: serde_json::Value,
    pub smoke: bool,
    pub floor: Floor,
    pub workloads: Vec<WorkloadResult>,
    pub airflow: Option<serde_json::Value>,
    pub comparisons: Vec<Comparison>,
}

impl Report {
    /// Pairs weft's figures with Airflow's (same workload names).
    pub fn compare(&mut self) {
        let Some(airflow) = &self.airflow else { return };
        let mut comparisons = Vec::new();
        for result in &self.workloads {
            let theirs = &airflow["workloads"][&result.name];
            if theirs["state"] != "success" {
                continue;
            }
            let mut push = |figure: &str, weft: f64, airflow: Option<f64>| {
                if let Some(airflow) = airflow.filter(|value| *value > 0.0) {
                    comparisons.push(Comparison {
                        workload: result.name.clone(),
                        figure: figure.to_string(),
                        weft,
                        airflow,
                        ratio: weft / airflow,
                    });
                }
            };
            push(
                "end to end (s)",
                result.end_to_end_s.p50,
                theirs["end_to_end_s"].as_f64(),
            );
            if let Some(gaps) = &result.task_to_task_ms {
                let seconds =
                    |name: &str| theirs["task_to_task_s"][name].as_f64().map(|s| s * 1_000.0);
                push("task-to-task p50 (ms)", gaps.p50, seconds("p50"));
                push("task-to-task p99 (ms)", gaps.p99, seconds("p99"));
            }
            if let (Some(throughput), Some(theirs)) =
                (&result.throughput, theirs["tasks_per_s"].as_f64())
            {
                push("tasks/s", throughput.value, Some(theirs));
            }
        }
        self.comparisons = comparisons;
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let floor = &self.floor;
        let _ = writeln!(
            out,
            "floor: fork+exec /bin/true p50 {:.3} ms (p99 {:.3}), {:.0}/s on all cores; 4 KiB append+fsync p50 {:.3} ms (p99 {:.3})",
            floor.fork_exec_ms.p50,
            floor.fork_exec_ms.p99,
            floor.fork_exec_parallel_per_s,
            floor.append_fsync_4k_ms.p50,
            floor.append_fsync_4k_ms.p99
        );
        let _ = writeln!(
            out,
            "{:<22} {:>5} {:>10} {:>10} {:>10} {:>22} {:>14} {:>8} {:>9}",
            "workload",
            "runs",
            "p50 s",
            "p99 s",
            "max s",
            "task-to-task p50/p99 ms",
            "throughput",
            "cpu s",
            "peak MiB"
        );
        for result in &self.workloads {
            let gaps = result
                .task_to_task_ms
                .map(|gaps| format!("{:.3} / {:.3}", gaps.p50, gaps.p99))
                .unwrap_or_else(|| "-".to_string());
            let throughput = result
                .throughput
                .as_ref()
                .map(|throughput| format!("{:.0} {}", throughput.value, throughput.unit))
                .unwrap_or_else(|| "-".to_string());
            let _ = writeln!(
                out,
                "{:<22} {:>5} {:>10.4} {:>10.4} {:>10.4} {:>22} {:>14} {:>8.2} {:>9.1}",
                result.name,
                result.end_to_end_s.count,
                result.end_to_end_s.p50,
                result.end_to_end_s.p99,
                result.end_to_end_s.max,
                gaps,
                throughput,
                result.cpu_s,
                result.peak_rss_mib
            );
            for (name, value) in &result.notes {
                let _ = writeln!(out, "{:<22}   {name}: {value}", "");
            }
        }
        if !self.comparisons.is_empty() {
            let _ = writeln!(out, "\nside by side with Airflow (same run):");
            let _ = writeln!(
                out,
                "{:<16} {:<24} {:>12} {:>12} {:>14}",
                "workload", "figure", "weft", "airflow", "weft/airflow"
            );
            for comparison in &self.comparisons {
                let _ = writeln!(
                    out,
                    "{:<16} {:<24} {:>12.4} {:>12.4} {:>14.6}",
                    comparison.workload,
                    comparison.figure,
                    comparison.weft,
                    comparison.airflow,
                    comparison.ratio
                );
            }
        }
        out
    }
}

/// Cores, CPU model and the disk the data directory is on, for the record.
pub fn machine(data_dir: &std::path::Path) -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|count| count.get())
        .unwrap_or(1);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    serde_json::json!({
        "cores": cores,
        "cpu_model": model,
        "data_dir": data_dir.display().to_string(),
        "load_average_at_start": load.trim(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    })
}

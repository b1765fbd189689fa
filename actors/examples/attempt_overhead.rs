//! What one shell attempt costs beyond starting its process: `run_shell` (log file, output
//! pipe, process group, reaping) against bare spawns of `/bin/true`, and log-file creation
//! through `tokio::fs` against `std::fs`. Prints p50 / p90 / p99 in milliseconds; then, with
//! eight attempts in flight as in a fan-out, the CPU this process spends per attempt (its own
//! user + system time) and the child's, which is what bounds a fan-out's rate.
//!
//!     cargo run --release -p weft-actors --example attempt_overhead [REPETITIONS]

use std::path::Path;
use std::time::Instant;
use weft_actors::executor::subprocess::{run_shell, ShellCommand};
use weft_actors::executor::{AttemptLimits, LogTarget};
use weft_core::ids::TaskInstanceKey;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::io::Result<()> {
    let repetitions: usize = std::env::args()
        .nth(1)
        .and_then(|text| text.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir()?;
    let mut samples = Vec::with_capacity(repetitions);

    for _ in 0..repetitions {
        let started = Instant::now();
        std::process::Command::new("/bin/true").status()?;
        samples.push(started.elapsed());
    }
    report("std::process spawn + wait", &mut samples);

    for _ in 0..repetitions {
        let started = Instant::now();
        tokio::process::Command::new("/bin/true")
            .stdin(std::process::Stdio::null())
            .output()
            .await?;
        samples.push(started.elapsed());
    }
    report("tokio::process with pipes", &mut samples);

    let limits = AttemptLimits {
        timeout_ms: None,
        log_bytes_max: 1 << 20,
        sandbox: None,
    };
    for index in 0..repetitions {
        let task_id = format!("t{index}");
        let log = LogTarget {
            key: TaskInstanceKey::new("d", "r", &task_id, -1),
            try_number: 1,
            path: dir.path().join(format!("attempts/{task_id}/1.log")),
        };
        let started = Instant::now();
        run_shell(&ShellCommand::new("true"), &log, &limits, &[]).await;
        samples.push(started.elapsed());
    }
    report("run_shell(\"true\")", &mut samples);

    for index in 0..repetitions {
        let path = dir.path().join(format!("tokio_fs/t{index}/1.log"));
        let started = Instant::now();
        tokio::fs::create_dir_all(parent(&path)).await?;
        tokio::fs::File::create(&path).await?;
        samples.push(started.elapsed());
    }
    report("tokio::fs mkdir + create", &mut samples);

    for index in 0..repetitions {
        let path = dir.path().join(format!("std_fs/t{index}/1.log"));
        let started = Instant::now();
        std::fs::create_dir_all(parent(&path))?;
        std::fs::File::create(&path)?;
        samples.push(started.elapsed());
    }
    report("std::fs mkdir + create", &mut samples);

    let in_flight = 8;
    let per_flight = repetitions.max(in_flight) / in_flight;
    let attempts = per_flight * in_flight;
    let cpu = cpu_seconds();
    let mut flights = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        flights.spawn_blocking(move || {
            for _ in 0..per_flight {
                let _ = std::process::Command::new("/bin/true").status();
            }
        });
    }
    while flights.join_next().await.is_some() {}
    report_cpu("std::process spawn + wait", cpu, attempts);

    let cpu = cpu_seconds();
    let mut flights = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        flights.spawn(async move {
            for _ in 0..per_flight {
                let mut command = tokio::process::Command::new("/bin/true");
                command.env("WEFT_CTX_TASK_ID", "t");
                let _ = command.status().await;
            }
        });
    }
    while flights.join_next().await.is_some() {}
    report_cpu("tokio::process, one env var", cpu, attempts);

    let cpu = cpu_seconds();
    let mut flights = tokio::task::JoinSet::new();
    for flight in 0..in_flight {
        let (dir, limits) = (dir.path().to_path_buf(), limits.clone());
        flights.spawn(async move {
            let extra_env: &[(&str, &str)] = &[("WEFT_CTX_TASK_ID", "t")];
            for index in 0..per_flight {
                let task_id = format!("f{flight}_{index}");
                let log = LogTarget {
                    key: TaskInstanceKey::new("d", "r", &task_id, -1),
                    try_number: 1,
                    path: dir.join(format!("flights/{task_id}/1.log")),
                };
                run_shell(&ShellCommand::new("true"), &log, &limits, extra_env).await;
            }
        });
    }
    while flights.join_next().await.is_some() {}
    report_cpu("run_shell(\"true\")", cpu, attempts);
    Ok(())
}

/// User + system CPU seconds of this process so far (its threads, not its children), from
/// `/proc/self/stat` (in clock ticks of 10 ms: use enough repetitions).
/// (this process's, its reaped children's) user + system CPU seconds so far.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) start at field 3.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime, stime, cutime and cstime are fields 14 to 17 of the whole line.
    (
        (ticks(11) + ticks(12)) / 100.0,
        (ticks(13) + ticks(14)) / 100.0,
    )
}

/// The CPU spent per attempt since `before` (from `cpu_seconds`): this process's own, and its
/// children's (the processes the attempts ran).
fn report_cpu(name: &str, before: (f64, f64), attempts: usize) {
    let now = cpu_seconds();
    let per_attempt_us = |seconds: f64| seconds / attempts as f64 * 1e6;
    println!(
        "{name:28} {:.1} us of this process's CPU and {:.1} us of the child's per attempt, 8 in flight",
        per_attempt_us(now.0 - before.0),
        per_attempt_us(now.1 - before.1),
    );
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(path)
}

fn report(name: &str, samples: &mut Vec<std::time::Duration>) {
    samples.sort();
    let at = |quantile: f64| {
        let index = ((samples.len() as f64 * quantile) as usize).min(samples.len() - 1);
        samples[index].as_secs_f64() * 1e3
    };
    println!(
        "{name:28} p50 {:.3} ms  p90 {:.3}  p99 {:.3}",
        at(0.5),
        at(0.9),
        at(0.99)
    );
    samples.clear();
}

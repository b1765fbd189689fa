//! What one shell attempt costs beyond starting its process: `run_shell` (log file, output
//! pipe, process group, reaping) against bare spawns of `/bin/true`, and log-file creation
//! through `tokio::fs` against `std::fs`. Prints p50 / p90 / p99 in milliseconds.
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
        run_shell(
            &ShellCommand::new("true"),
            &log,
            &limits,
            &Default::default(),
        )
        .await;
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
    Ok(())
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

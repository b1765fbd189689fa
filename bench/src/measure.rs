//! Measuring: percentiles of samples, the CPU and peak memory a workload used (from `/proc`,
//! the same numbers `getrusage` gives for self + waited-for children), and the machine's floor
//! (fork+exec of `/bin/true`, a 4 KiB append + fsync).

use serde::Serialize;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/<pid>/stat` times. Linux fixes `USER_HZ` at 100 for user
/// space on every architecture we run on.
const USER_HZ: f64 = 100.0;

/// p50 / p99 / max of a set of samples, in the unit the field name says.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Summary {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
    pub count: usize,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |fraction: f64| {
            sorted[((fraction * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
        };
        Summary {
            p50: rank(0.5),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            count: sorted.len(),
        }
    }
}

/// CPU seconds (user + system, of this process and its reaped children) and the process's
/// peak resident memory, read at the start and the end of a workload.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    cpu_s: f64,
}

impl Usage {
    /// Starts a measurement; also resets the peak-memory mark so that the peak is this
    /// workload's own.
    pub fn start() -> Usage {
        // "5" resets VmHWM (see proc(5), clear_refs); harmless if the kernel refuses.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        Usage {
            cpu_s: cpu_seconds(),
        }
    }

    /// Runs `work` without counting its CPU (and its children's) in this measurement.
    pub fn excluding<T>(&mut self, work: impl FnOnce() -> T) -> T {
        let before = cpu_seconds();
        let result = work();
        self.cpu_s += cpu_seconds() - before;
        result
    }

    pub fn cpu_since(&self) -> f64 {
        cpu_seconds() - self.cpu_s
    }
}

/// CPU seconds of this process's own threads and of its reaped children, apart.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSplit {
    pub own: f64,
    pub children: f64,
}

impl CpuSplit {
    pub fn now() -> CpuSplit {
        let fields = stat_cpu_fields();
        CpuSplit {
            own: (fields[0] + fields[1]) / USER_HZ,
            children: (fields[2] + fields[3]) / USER_HZ,
        }
    }

    /// The CPU spent since `earlier`, added to `self`.
    pub fn add_since(&mut self, earlier: CpuSplit) {
        let now = CpuSplit::now();
        self.own += now.own - earlier.own;
        self.children += now.children - earlier.children;
    }
}

/// utime, stime, cutime and cstime of this process, in clock ticks.
fn stat_cpu_fields() -> [f64; 4] {
    let mut fields = [0.0; 4];
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return fields;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return fields;
    };
    // rest[0] is field 3 (state); utime is field 14, so index 11.
    for (slot, field) in fields.iter_mut().zip(rest.split_whitespace().skip(11)) {
        *slot = field.parse::<f64>().unwrap_or(0.0);
    }
    fields
}

/// utime + stime + cutime + cstime of this process, in seconds.
pub fn cpu_seconds() -> f64 {
    stat_cpu_fields().iter().sum::<f64>() / USER_HZ
}

/// Peak resident memory of this process since the last reset, in MiB (`VmHWM`).
pub fn peak_rss_mib() -> f64 {
    status_kib("VmHWM:") / 1024.0
}

/// Resident memory now, in MiB (`VmRSS`).
pub fn rss_mib() -> f64 {
    status_kib("VmRSS:") / 1024.0
}

fn status_kib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| {
                    line.split_whitespace()
                        .nth(1)
                        .and_then(|kib| kib.parse::<f64>().ok())
                })
        })
        .unwrap_or(0.0)
}

/// The machine's floor, measured in the same run as the workloads.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    /// One fork+exec+wait of `/bin/true`, milliseconds.
    pub fork_exec_ms: Summary,
    /// fork+exec+wait of `/bin/true` per second with one process per core at once.
    pub fork_exec_parallel_per_s: f64,
    /// One 4 KiB append followed by fsync, milliseconds.
    pub append_fsync_4k_ms: Summary,
}

pub fn measure_floor(dir: &Path, repetitions: usize) -> anyhow::Result<Floor> {
    let mut fork_exec = Vec::with_capacity(repetitions);
    for _ in 0..repetitions {
        let started = Instant::now();
        std::process::Command::new("/bin/true").status()?;
        fork_exec.push(millis(started.elapsed()));
    }
    let fork_exec_parallel_per_s = fork_exec_parallel_per_s(repetitions);

    std::fs::create_dir_all(dir)?;
    let path = dir.join("floor-fsync.bin");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let block = vec![0x5a_u8; 4096];
    let mut fsync = Vec::with_capacity(repetitions);
    for _ in 0..repetitions {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_all()?;
        fsync.push(millis(started.elapsed()));
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(Floor {
        fork_exec_ms: Summary::of(&fork_exec),
        fork_exec_parallel_per_s,
        append_fsync_4k_ms: Summary::of(&fsync),
    })
}

/// fork+exec+wait of `/bin/true` per second, with one process per core at once, over about
/// `processes` processes.
pub fn fork_exec_parallel_per_s(processes: usize) -> f64 {
    let cores = std::thread::available_parallelism()
        .map(|count| count.get())
        .unwrap_or(1);
    let per_thread = processes.max(cores) / cores;
    let started = Instant::now();
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    let _ = std::process::Command::new("/bin/true").status();
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    (per_thread * cores) as f64 / started.elapsed().as_secs_f64()
}

pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

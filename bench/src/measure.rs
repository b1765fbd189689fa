//! Measuring: percentiles of samples, the CPU (this process's clock and `getrusage` for its
//! waited-for children) and peak memory a workload used, and the machine's floor
//! (fork+exec of `/bin/true`, a 4 KiB append + fsync).

use serde::Serialize;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

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

/// CPU seconds of this process's own threads and of its reaped children, apart, and of the
/// SQLite store's writer thread among the former.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSplit {
    pub own: f64,
    pub children: f64,
    pub store_writer: f64,
}

/// The name the SQLite store gives its writer thread, as `/proc` shows it (15 bytes at most).
const STORE_WRITER_THREAD: &str = "weft-store-writ";

impl CpuSplit {
    pub fn now() -> CpuSplit {
        CpuSplit {
            own: process_cpu_seconds(),
            children: children_cpu_seconds(),
            store_writer: threads_cpu_seconds(STORE_WRITER_THREAD),
        }
    }

    /// The CPU spent since `earlier`, added to `self`.
    pub fn add_since(&mut self, earlier: CpuSplit) {
        let now = CpuSplit::now();
        self.own += now.own - earlier.own;
        self.children += now.children - earlier.children;
        self.store_writer += now.store_writer - earlier.store_writer;
    }
}

/// User + system CPU of this process's threads, exited ones included, to the nanosecond
/// (`/proc/self/stat` counts clock ticks of 10 ms, too coarse to compare builds run by run).
#[allow(unsafe_code)]
fn process_cpu_seconds() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` into `now`, which lives for the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } != 0 {
        return 0.0;
    }
    now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
}

/// User + system CPU of this process's reaped children, to the microsecond.
#[allow(unsafe_code)]
fn children_cpu_seconds() -> f64 {
    // SAFETY: all-zero is a valid `rusage`; `getrusage` fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid `rusage` for the call to write into.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// CPU of this process's live threads whose name starts with `name`, to the nanosecond (the
/// first field of each thread's `schedstat`).
fn threads_cpu_seconds(name: &str) -> f64 {
    let Ok(threads) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    threads
        .flatten()
        .filter(|thread| {
            std::fs::read_to_string(thread.path().join("comm"))
                .is_ok_and(|comm| comm.starts_with(name))
        })
        .filter_map(|thread| {
            let schedstat = std::fs::read_to_string(thread.path().join("schedstat")).ok()?;
            schedstat.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum::<f64>()
        / 1e9
}

/// CPU seconds of this process and its reaped children (user + system).
pub fn cpu_seconds() -> f64 {
    process_cpu_seconds() + children_cpu_seconds()
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

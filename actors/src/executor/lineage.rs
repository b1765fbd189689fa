//! Which node started a task process, so that a restarted node can kill what its predecessor
//! left running before it retries those attempts.
//!
//! Every process a node starts for a task carries `WEFT_NODE=<home id>/<instance>` in its
//! environment (inherited by everything the task starts in turn): the home id names the node's
//! data directory, the instance this run of the node. Only one node runs per home at a time
//! (`node.lock`), so on start every process marked with the same home id and another instance
//! belongs to a node that is gone. `PR_SET_PDEATHSIG` already kills each task's first process
//! with the node; this finds the rest (background children, daemons that left the process
//! group), which would otherwise run on while the restarted node runs the same attempt again.

use std::sync::OnceLock;

use super::sandbox::{self, CgroupSupport};
use super::subprocess::{send_sigkill, ProcStat};

/// The environment variable that marks a node's task processes.
pub const MARKER_VARIABLE: &str = "WEFT_NODE";

/// Rounds of "scan /proc, kill what is marked" (a process may fork while it is being killed).
const REAP_ROUNDS_MAX: u32 = 20;

static MARKER: OnceLock<String> = OnceLock::new();

/// The marker this process gives its task processes, if `mark_task_processes` was called.
pub fn marker() -> Option<&'static str> {
    MARKER.get().map(String::as_str)
}

/// Marks every task process this node starts from now on as its own (`home_id`: a name of the
/// node's home, the same across restarts; `instance`: different on each start). Once per
/// process; a second call keeps the first marker and returns false.
pub fn mark_task_processes(home_id: &str, instance: &str) -> bool {
    MARKER.set(format!("{home_id}/{instance}")).is_ok()
}

/// A stable name for a home directory: a hash of its canonical path.
pub fn home_id(home: &std::path::Path) -> String {
    use std::hash::{Hash, Hasher};
    let canonical = home.canonicalize().unwrap_or_else(|_| home.to_path_buf());
    // FNV-1a: stable across builds and Rust versions, unlike `DefaultHasher`.
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for byte in bytes {
                self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    let mut hasher = Fnv(0xcbf2_9ce4_8422_2325);
    canonical.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// What `reap_predecessors` found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// Processes killed.
    pub processes: usize,
    /// Attempt cgroups of dead nodes removed.
    pub cgroups: usize,
    /// Working directories of attempts of dead nodes removed.
    pub task_dirs: usize,
}

/// Kills every process marked with `home_id` but not with this node's marker, and removes the
/// attempt cgroups and the attempts' working directories (under `task_dirs`) of nodes that are
/// no longer running. Blocking (reads /proc); call it before the engine recovers runs.
pub fn reap_predecessors(home_id: &str, task_dirs: Option<&std::path::Path>) -> Reaped {
    let own = marker().map(str::to_string);
    let prefix = format!("{MARKER_VARIABLE}={home_id}/");
    let mut reaped = Reaped::default();
    for _round in 0..REAP_ROUNDS_MAX {
        let left = marked_processes(&prefix, own.as_deref());
        if left.is_empty() {
            break;
        }
        for pid in left {
            send_sigkill(pid);
            reaped.processes += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    reaped.cgroups = remove_orphan_cgroups();
    reaped.task_dirs = task_dirs.map(remove_orphan_task_dirs).unwrap_or(0);
    reaped
}

/// The node pid in an `attempt-<pid>-<n>` name (attempt cgroups and working directories), if
/// that node is not running.
fn dead_owner(name: &std::ffi::OsStr) -> Option<u32> {
    let owner = name
        .to_str()?
        .strip_prefix("attempt-")?
        .split('-')
        .next()?
        .parse::<u32>()
        .ok()?;
    let alive =
        owner == std::process::id() || std::path::Path::new(&format!("/proc/{owner}")).exists();
    (!alive).then_some(owner)
}

/// Removes the working directories left under `root` by attempts of nodes that died.
fn remove_orphan_task_dirs(root: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| dead_owner(&entry.file_name()).is_some())
        .filter(|entry| std::fs::remove_dir_all(entry.path()).is_ok())
        .count()
}

/// Live processes whose environment has `prefix` and is not `own`'s marker.
fn marked_processes(prefix: &str, own: Option<&str>) -> Vec<i32> {
    let own_entry = own.map(|own| format!("{MARKER_VARIABLE}={own}"));
    let self_pid = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != self_pid && !is_zombie(pid))
        .filter(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            environ.split(|byte| *byte == 0).any(|entry| {
                entry.starts_with(prefix.as_bytes())
                    && own_entry
                        .as_deref()
                        .is_none_or(|own| entry != own.as_bytes())
            })
        })
        .collect()
}

fn is_zombie(pid: i32) -> bool {
    ProcStat::read(pid).is_none_or(|stat| stat.state == 'Z' || stat.state == 'X')
}

/// Removes `attempt-<pid>-<n>` cgroups whose node (`pid`) is not running, killing what is left
/// in them. Returns how many were removed.
fn remove_orphan_cgroups() -> usize {
    let parents: Vec<std::path::PathBuf> = match &sandbox::support().cgroup {
        CgroupSupport::V2 { parent, .. } => vec![parent.clone()],
        CgroupSupport::V1 { parents } => parents.iter().map(|(_, dir)| dir.clone()).collect(),
        CgroupSupport::None => Vec::new(),
    };
    let mut removed = 0;
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            if dead_owner(&entry.file_name()).is_none() {
                continue;
            }
            if sandbox::remove_cgroup_dir(&entry.path()) {
                removed += 1;
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_ids_are_stable_and_distinct() {
        let a = home_id(std::path::Path::new("/nonexistent/a"));
        assert_eq!(a, home_id(std::path::Path::new("/nonexistent/a")));
        assert_ne!(a, home_id(std::path::Path::new("/nonexistent/b")));
        assert_eq!(a.len(), 16);
    }
}

//! Confinement of task processes: a user of their own (the default when the node runs as
//! root), bubblewrap namespaces with a read-only root and the node's files hidden (the full
//! sandbox), and resource limits through a per-attempt cgroup (v2 or v1, detected at run time)
//! or, where no cgroup works, rlimits.
//!
//! Nothing here runs user code: `prepare` turns a `SandboxSpec` into an argv prefix, a cgroup
//! that the subprocess executor owns for the attempt's lifetime, and what the child does to
//! itself before it execs (`spawn::Confinement`: join the cgroup, rlimits, become the task's
//! user), so the task's first instruction already runs confined.

use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::spawn::Confinement;
use super::subprocess::send_sigkill;

/// A user and group a task runs as: not the node's, so that it can neither read the node's
/// files (`$WEFT_HOME` is 0700) nor signal the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskIdentity {
    pub uid: u32,
    pub gid: u32,
}

/// How to confine an attempt's processes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Run inside bubblewrap namespaces (user, pid, ipc, uts, network unless shared) with a
    /// read-only root, every capability dropped and `hidden_paths` hidden: the full sandbox.
    pub namespaces: bool,
    /// The user the task's processes become before they exec; `None`: the node's.
    #[serde(default)]
    pub run_as: Option<TaskIdentity>,
    /// Host paths the full sandbox covers with an empty tmpfs (the node's home: its store,
    /// secrets, logs and control socket).
    #[serde(default)]
    pub hidden_paths: Vec<PathBuf>,
    /// Host paths the full sandbox shows read-only even where a tmpfs covers them (the DAG
    /// folder, which Python tasks import, may sit under `/tmp`).
    #[serde(default)]
    pub readable_paths: Vec<PathBuf>,
    /// Where an attempt without a `cwd` gets a fresh working directory of its own, owned by
    /// `run_as` and removed at its end (Airflow's BashOperator runs in a temporary directory
    /// too); `None`: such attempts run in the worker's directory.
    #[serde(default)]
    pub task_dirs: Option<PathBuf>,
    pub memory_bytes_max: Option<u64>,
    /// CPU quota in thousandths of a core.
    pub cpu_millis_max: Option<u64>,
    pub pids_max: Option<u64>,
    /// Largest file the task may write (RLIMIT_FSIZE); cgroups have no equivalent.
    #[serde(default)]
    pub file_bytes_max: Option<u64>,
    /// Keep the host's network inside the namespaces (otherwise only a private loopback).
    #[serde(default)]
    pub share_network: bool,
    /// Host paths the task may write besides its private `/tmp` and its working directory.
    #[serde(default)]
    pub writable_paths: Vec<PathBuf>,
    /// Which mechanism enforces the resource limits.
    #[serde(default)]
    pub resource_control: ResourceControl,
}

/// Which mechanism enforces memory, cpu and pids limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ResourceControl {
    /// A cgroup (v2, else v1) when one works here, else rlimits.
    #[default]
    Auto,
    /// rlimits only, even when a cgroup would work (weaker: per process, no pids limit for root).
    Rlimits,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "sandbox requested but bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
    )]
    BwrapMissing,
    #[error("{0} has a NUL byte")]
    NulInPath(PathBuf),
    #[error("cannot set up the attempt's cgroup at {path}: {source}")]
    Cgroup { path: PathBuf, source: io::Error },
}

/// A resource controller weft uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Controller {
    Memory,
    Cpu,
    Pids,
}

impl Controller {
    const ALL: [Controller; 3] = [Controller::Memory, Controller::Cpu, Controller::Pids];

    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
        }
    }
}

/// The cgroup hierarchy weft can create attempt cgroups in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupSupport {
    /// Unified hierarchy; `parent` is the `weft` cgroup under this process's own cgroup, with
    /// `controllers` enabled for its children.
    V2 {
        parent: PathBuf,
        controllers: Vec<Controller>,
    },
    /// Legacy hierarchies: the `weft` cgroup in each controller's hierarchy.
    V1 {
        parents: Vec<(Controller, PathBuf)>,
    },
    None,
}

impl CgroupSupport {
    fn controllers(&self) -> Vec<Controller> {
        match self {
            CgroupSupport::V2 { controllers, .. } => controllers.clone(),
            CgroupSupport::V1 { parents } => parents.iter().map(|(c, _)| *c).collect(),
            CgroupSupport::None => Vec::new(),
        }
    }
}

/// What this machine offers for sandboxing, found at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSupport {
    pub bwrap: Option<PathBuf>,
    pub cgroup: CgroupSupport,
}

impl fmt::Display for SandboxSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.bwrap {
            Some(path) => write!(f, "namespaces: bwrap ({})", path.display())?,
            None => write!(f, "namespaces: unavailable (apt-get install bubblewrap)")?,
        }
        let names =
            |cs: Vec<Controller>| cs.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ");
        match &self.cgroup {
            CgroupSupport::V2 { .. } => {
                write!(
                    f,
                    "; limits: cgroup v2 ({})",
                    names(self.cgroup.controllers())
                )
            }
            CgroupSupport::V1 { .. } => {
                write!(
                    f,
                    "; limits: cgroup v1 ({})",
                    names(self.cgroup.controllers())
                )
            }
            CgroupSupport::None => write!(f, "; limits: rlimits (as, cpu, fsize)"),
        }
    }
}

/// What `detect` found, found once per process: the machine does not change under a node.
pub fn support() -> &'static SandboxSupport {
    static SUPPORT: std::sync::OnceLock<SandboxSupport> = std::sync::OnceLock::new();
    SUPPORT.get_or_init(detect)
}

/// Finds bubblewrap and a usable cgroup hierarchy. Creates the `weft` parent cgroup(s) as a
/// side effect, because whether that works is the real test of support.
pub fn detect() -> SandboxSupport {
    SandboxSupport {
        bwrap: find_program("bwrap"),
        cgroup: detect_cgroup(),
    }
}

/// The executable `name` on this process's PATH, so a task's replaced environment cannot
/// change which binary weft itself starts; every lookup of a program weft starts goes here.
pub fn find_program(name: impl AsRef<Path>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name.as_ref()))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

fn detect_cgroup() -> CgroupSupport {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let v2 = detect_v2(&mountinfo, &own);
    let v1 = detect_v1(&mountinfo, &own);
    // Prefer v2 unless v1 offers more of the controllers weft needs (hybrid machines).
    if !v2.controllers().is_empty() && v2.controllers().len() >= v1.controllers().len() {
        v2
    } else if !v1.controllers().is_empty() {
        v1
    } else {
        CgroupSupport::None
    }
}

/// A cgroup filesystem mount from /proc/self/mountinfo.
struct CgroupMount {
    /// The path inside the hierarchy that is mounted (not "/" inside a cgroup namespace).
    root: String,
    mount_point: PathBuf,
    fs_type: String,
    super_options: Vec<String>,
}

fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let fs_type = right.first()?.to_string();
            if fs_type != "cgroup" && fs_type != "cgroup2" {
                return None;
            }
            Some(CgroupMount {
                root: left.get(3)?.to_string(),
                mount_point: PathBuf::from(left.get(4)?),
                fs_type,
                super_options: right.get(2)?.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// This process's cgroup in the hierarchy whose /proc/self/cgroup controller list matches.
fn own_cgroup_path(own: &str, matches: impl Fn(&str) -> bool) -> Option<String> {
    own.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        matches(controllers).then(|| path.to_string())
    })
}

/// Joins a mount point and a cgroup path, taking the mount's root into account.
fn cgroup_dir(mount: &CgroupMount, path: &str) -> PathBuf {
    let relative = path.strip_prefix(mount.root.as_str()).unwrap_or(path);
    mount.mount_point.join(relative.trim_start_matches('/'))
}

fn detect_v1(mountinfo: &str, own: &str) -> CgroupSupport {
    let mounts = cgroup_mounts(mountinfo);
    let mut parents = Vec::new();
    for controller in Controller::ALL {
        let name = controller.name();
        let Some(mount) = mounts
            .iter()
            .find(|m| m.fs_type == "cgroup" && m.super_options.iter().any(|o| o == name))
        else {
            continue;
        };
        let Some(path) = own_cgroup_path(own, |cs| cs.split(',').any(|c| c == name)) else {
            continue;
        };
        // Nest under our own cgroup so the attempt stays inside whatever limits the worker has.
        let parent = cgroup_dir(mount, &path).join("weft");
        if std::fs::create_dir_all(&parent).is_ok() && parent.join("cgroup.procs").exists() {
            parents.push((controller, parent));
        }
    }
    if parents.is_empty() {
        CgroupSupport::None
    } else {
        CgroupSupport::V1 { parents }
    }
}

fn detect_v2(mountinfo: &str, own: &str) -> CgroupSupport {
    let mounts = cgroup_mounts(mountinfo);
    let Some(mount) = mounts.iter().find(|m| m.fs_type == "cgroup2") else {
        return CgroupSupport::None;
    };
    let Some(path) = own_cgroup_path(own, |cs| cs.is_empty()) else {
        return CgroupSupport::None;
    };
    let own_dir = cgroup_dir(mount, &path);
    let available = read_words(&own_dir.join("cgroup.controllers"));
    let wanted: Vec<Controller> = Controller::ALL
        .into_iter()
        .filter(|c| available.iter().any(|a| a == c.name()))
        .collect();
    if wanted.is_empty() {
        return CgroupSupport::None;
    }
    // Enabling controllers for children fails (EBUSY) in a non-root cgroup that holds
    // processes (the "no internal processes" rule); then v2 is not usable from here.
    let enable = wanted
        .iter()
        .map(|c| format!("+{}", c.name()))
        .collect::<Vec<_>>()
        .join(" ");
    let parent = own_dir.join("weft");
    let usable = std::fs::write(own_dir.join("cgroup.subtree_control"), &enable).is_ok()
        && std::fs::create_dir_all(&parent).is_ok()
        && std::fs::write(parent.join("cgroup.subtree_control"), &enable).is_ok();
    if !usable {
        return CgroupSupport::None;
    }
    let enabled = read_words(&parent.join("cgroup.subtree_control"));
    let controllers: Vec<Controller> = wanted
        .into_iter()
        .filter(|c| enabled.iter().any(|e| e == c.name()))
        .collect();
    if controllers.is_empty() {
        CgroupSupport::None
    } else {
        CgroupSupport::V2 {
            parent,
            controllers,
        }
    }
}

fn read_words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// CFS period used for cpu quotas: 100 ms, the kernel default.
const CPU_PERIOD_US: u64 = 100_000;
/// The kernel's smallest accepted cfs quota.
const CPU_QUOTA_US_MIN: u64 = 1_000;
/// How long removing a cgroup waits for killed processes to leave it.
const CGROUP_REMOVE_WAIT_MS: u64 = 5_000;
/// Rounds of "read pids, kill them" before giving up on a cgroup that keeps forking.
const CGROUP_KILL_ROUNDS_MAX: u32 = 50;

/// Cgroup versions, for the attempt's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CgroupVersion {
    V1,
    V2,
}

/// One attempt's cgroup: a directory per v1 hierarchy, or one v2 directory.
#[derive(Debug, Clone)]
pub struct AttemptCgroup {
    version: CgroupVersion,
    /// (controller, directory); v2 has one entry per enabled controller, all the same dir.
    dirs: Vec<(Controller, PathBuf)>,
    /// Controllers a limit was written for, for the log's first line.
    limited: Vec<Controller>,
}

/// What the cgroup saw by the end of the attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupEvents {
    pub oom_kills: u64,
    pub pids_max_hits: u64,
}

static ATTEMPT_SEQUENCE: AtomicU64 = AtomicU64::new(0);

impl AttemptCgroup {
    /// A cgroup that only tracks the attempt's processes, in one hierarchy (v1: preferably
    /// `pids`, the cheapest to create): whatever leaves the process group, even into a
    /// session of its own, is still found and killed at the attempt's end.
    fn tracking(support: &CgroupSupport) -> Result<AttemptCgroup, Error> {
        let support = match support {
            CgroupSupport::V1 { parents } => {
                let parent = parents
                    .iter()
                    .find(|(c, _)| *c == Controller::Pids)
                    .or(parents.first())
                    .cloned();
                CgroupSupport::V1 {
                    parents: parent.into_iter().collect(),
                }
            }
            CgroupSupport::V2 { parent, .. } => CgroupSupport::V2 {
                parent: parent.clone(),
                controllers: vec![Controller::Pids],
            },
            CgroupSupport::None => CgroupSupport::None,
        };
        AttemptCgroup::create(&support, &SandboxSpec::default())
    }

    /// Whether no limit was written: the cgroup only tracks.
    pub fn is_tracking_only(&self) -> bool {
        self.limited.is_empty()
    }

    /// Removes the cgroup at once if it is empty (the usual end of an attempt): false if it
    /// still holds processes or could not be removed, for `remove` to deal with.
    pub fn remove_if_empty(&self) -> bool {
        if !self.pids().is_empty() {
            return false;
        }
        self.unique_dirs()
            .iter()
            .all(|dir| std::fs::remove_dir(dir).is_ok() || !dir.exists())
    }

    fn create(support: &CgroupSupport, spec: &SandboxSpec) -> Result<AttemptCgroup, Error> {
        // Unique across workers on one host (pid) and attempts in one worker (sequence).
        let name = format!(
            "attempt-{}-{}",
            std::process::id(),
            ATTEMPT_SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let (version, dirs) = match support {
            CgroupSupport::V1 { parents } => (
                CgroupVersion::V1,
                parents
                    .iter()
                    .map(|(c, parent)| (*c, parent.join(&name)))
                    .collect::<Vec<_>>(),
            ),
            CgroupSupport::V2 {
                parent,
                controllers,
            } => (
                CgroupVersion::V2,
                controllers
                    .iter()
                    .map(|c| (*c, parent.join(&name)))
                    .collect(),
            ),
            CgroupSupport::None => (CgroupVersion::V2, Vec::new()),
        };
        let mut cgroup = AttemptCgroup {
            version,
            dirs,
            limited: Vec::new(),
        };
        if let Err(e) = cgroup.create_dirs_and_limits(spec) {
            cgroup.remove();
            return Err(e);
        }
        Ok(cgroup)
    }

    fn create_dirs_and_limits(&mut self, spec: &SandboxSpec) -> Result<(), Error> {
        for dir in self.unique_dirs() {
            std::fs::create_dir_all(&dir).map_err(|source| Error::Cgroup { path: dir, source })?;
        }
        for (controller, dir) in self.dirs.clone() {
            let writes = limit_files(self.version, controller, spec);
            for (file, value, required) in &writes {
                let path = dir.join(file);
                match std::fs::write(&path, value) {
                    Ok(()) => {}
                    Err(source) if *required => return Err(Error::Cgroup { path, source }),
                    Err(_) => {}
                }
            }
            if !writes.is_empty() {
                self.limited.push(controller);
            }
        }
        Ok(())
    }

    fn unique_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.dirs.iter().map(|(_, d)| d.clone()).collect();
        dirs.dedup();
        dirs
    }

    /// The `cgroup.procs` files a process writes its pid to, to join this cgroup.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.unique_dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Pids currently in the cgroup (any of its hierarchies).
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .procs_files()
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|s| {
                s.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs every process in the cgroup, including ones that left the process group.
    pub fn kill_all(&self) {
        if self.version == CgroupVersion::V2 {
            for dir in self.unique_dirs() {
                // cgroup.kill (Linux 5.14+) kills atomically; older kernels use the loop below.
                let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            }
        }
        for _round in 0..CGROUP_KILL_ROUNDS_MAX {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                send_sigkill(pid);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// OOM kills and refused forks, read before the cgroup is removed.
    pub fn events(&self) -> CgroupEvents {
        let mut events = CgroupEvents::default();
        for (controller, dir) in &self.dirs {
            match (self.version, controller) {
                (CgroupVersion::V1, Controller::Memory) => {
                    events.oom_kills = read_counter(&dir.join("memory.oom_control"), "oom_kill");
                }
                (CgroupVersion::V2, Controller::Memory) => {
                    events.oom_kills = read_counter(&dir.join("memory.events"), "oom_kill");
                }
                (_, Controller::Pids) => {
                    events.pids_max_hits = read_counter(&dir.join("pids.events"), "max");
                }
                (_, Controller::Cpu) => {}
            }
        }
        events
    }

    /// Kills what is left and removes the cgroup directories. Blocks for up to
    /// `CGROUP_REMOVE_WAIT_MS` while killed processes exit.
    pub fn remove(&self) {
        self.kill_all();
        let deadline = std::time::Instant::now() + Duration::from_millis(CGROUP_REMOVE_WAIT_MS);
        for dir in self.unique_dirs() {
            while dir.exists() {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) => {
                        if std::time::Instant::now() >= deadline {
                            tracing::warn!(path = %dir.display(), error = %e, "cannot remove attempt cgroup");
                            break;
                        }
                        self.kill_all();
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
    }

    fn describe(&self) -> String {
        let version = match self.version {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        };
        if self.limited.is_empty() {
            format!("cgroup {version} (tracking only)")
        } else {
            let names: Vec<&str> = self.limited.iter().map(|c| c.name()).collect();
            format!("cgroup {version} ({})", names.join(", "))
        }
    }
}

/// Kills what is in the cgroup directory `dir` (one hierarchy) and removes it; false if it
/// could not be removed within `CGROUP_REMOVE_WAIT_MS`. For cgroups left by a node that died.
pub(crate) fn remove_cgroup_dir(dir: &Path) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_millis(CGROUP_REMOVE_WAIT_MS);
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    loop {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs
            .lines()
            .filter_map(|line| line.trim().parse::<i32>().ok())
        {
            send_sigkill(pid);
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
            Err(_) if std::time::Instant::now() >= deadline => return false,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// (file, value, required) writes that put `spec`'s limit for `controller` in place.
fn limit_files(
    version: CgroupVersion,
    controller: Controller,
    spec: &SandboxSpec,
) -> Vec<(&'static str, String, bool)> {
    match (version, controller) {
        (CgroupVersion::V1, Controller::Memory) => spec
            .memory_bytes_max
            .map(|bytes| {
                vec![
                    ("memory.limit_in_bytes", bytes.to_string(), true),
                    // Without swap accounting the file is absent; with it, swap must not
                    // become a way around the limit.
                    ("memory.memsw.limit_in_bytes", bytes.to_string(), false),
                ]
            })
            .unwrap_or_default(),
        (CgroupVersion::V2, Controller::Memory) => spec
            .memory_bytes_max
            .map(|bytes| {
                vec![
                    ("memory.max", bytes.to_string(), true),
                    ("memory.swap.max", "0".into(), false),
                ]
            })
            .unwrap_or_default(),
        (CgroupVersion::V1, Controller::Cpu) => spec
            .cpu_millis_max
            .map(|millis| {
                vec![
                    ("cpu.cfs_period_us", CPU_PERIOD_US.to_string(), true),
                    ("cpu.cfs_quota_us", cpu_quota_us(millis).to_string(), true),
                ]
            })
            .unwrap_or_default(),
        (CgroupVersion::V2, Controller::Cpu) => spec
            .cpu_millis_max
            .map(|millis| {
                vec![(
                    "cpu.max",
                    format!("{} {CPU_PERIOD_US}", cpu_quota_us(millis)),
                    true,
                )]
            })
            .unwrap_or_default(),
        (_, Controller::Pids) => spec
            .pids_max
            .map(|max| vec![("pids.max", max.to_string(), true)])
            .unwrap_or_default(),
    }
}

fn cpu_quota_us(cpu_millis_max: u64) -> u64 {
    (cpu_millis_max.saturating_mul(CPU_PERIOD_US) / 1000).max(CPU_QUOTA_US_MIN)
}

/// The number after `key` in a "key value" per line file (memory.events, pids.events, ...).
fn read_counter(path: &Path, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|line| {
                let (k, v) = line.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        })
        .unwrap_or(0)
}

/// A sandbox ready to start: the argv to run instead of the bare `bash -c`, the cgroup the
/// executor must clean up, and what the child does to itself before it execs.
#[derive(Debug)]
pub struct PreparedSandbox {
    /// Full argv (program first), ending with the task's own command.
    pub argv: Vec<OsString>,
    /// For the log's first line, e.g. `user 61000:61000, bwrap, cgroup v1 (memory, cpu, pids)`.
    pub description: String,
    pub cgroup: Option<AttemptCgroup>,
    pub(crate) confinement: Confinement,
}

/// What `prepare` needs to know about the attempt besides the spec.
#[derive(Debug, Clone)]
pub struct SandboxedCommand<'a> {
    /// The task's own argv, e.g. `[/usr/bin/bash, -c, <command>]`.
    pub argv: Vec<OsString>,
    /// The working directory, bound writable inside the namespaces.
    pub cwd: Option<&'a Path>,
    /// Used to turn a cpu quota into an RLIMIT_CPU when no cgroup works.
    pub timeout_ms: Option<u64>,
}

/// Builds the sandbox for one attempt: creates its cgroup (if one works here and a limit asks
/// for it), the rlimits no cgroup covers, the user to become, and the bubblewrap argv.
pub fn prepare(
    spec: &SandboxSpec,
    support: &SandboxSupport,
    command: SandboxedCommand<'_>,
) -> Result<PreparedSandbox, Error> {
    let bwrap = match (spec.namespaces, &support.bwrap) {
        (false, _) => None,
        (true, Some(path)) => Some(path.clone()),
        (true, None) => return Err(Error::BwrapMissing),
    };
    let limited =
        spec.memory_bytes_max.is_some() || spec.cpu_millis_max.is_some() || spec.pids_max.is_some();
    let cgroup = match (spec.resource_control, &support.cgroup) {
        (ResourceControl::Rlimits, _) | (_, CgroupSupport::None) => None,
        (ResourceControl::Auto, cgroups) if limited => Some(AttemptCgroup::create(cgroups, spec)?),
        // An isolated task's processes are tracked, so that none outlives the attempt.
        (ResourceControl::Auto, cgroups) if spec.run_as.is_some() || spec.namespaces => {
            Some(AttemptCgroup::tracking(cgroups)?)
        }
        (ResourceControl::Auto, _) => None,
    };
    let rlimits = rlimits(spec, cgroup.as_ref(), command.timeout_ms);

    let mut parts = Vec::new();
    if let Some(identity) = spec.run_as {
        parts.push(format!("user {}:{}", identity.uid, identity.gid));
    }
    let mut argv: Vec<OsString> = Vec::new();
    if let Some(bwrap) = &bwrap {
        parts.push(if spec.share_network {
            "bwrap (host network)".to_string()
        } else {
            "bwrap".to_string()
        });
        argv.push(bwrap.clone().into());
        argv.extend(bwrap_args(spec, command.cwd));
        argv.push("--".into());
    }
    argv.extend(command.argv);
    if let Some(cgroup) = &cgroup {
        parts.push(cgroup.describe());
    }
    if !rlimits.described.is_empty() {
        parts.push(format!("rlimits ({})", rlimits.described.join(", ")));
    }
    parts.extend(
        rlimits
            .unenforced
            .iter()
            .map(|what| format!("{what} not enforced")),
    );
    let cgroup_procs = cgroup
        .as_ref()
        .map(AttemptCgroup::procs_files)
        .unwrap_or_default()
        .iter()
        .map(|path| {
            Confinement::cgroup_procs_file(path).map_err(|_| Error::NulInPath(path.clone()))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let confinement = Confinement {
        cgroup_procs,
        rlimits: rlimits.limits,
        identity: spec.run_as.map(|identity| (identity.uid, identity.gid)),
    };
    let description = if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    };
    Ok(PreparedSandbox {
        argv,
        description,
        cgroup,
        confinement,
    })
}

/// This process's effective user.
pub fn effective_uid() -> u32 {
    #[allow(unsafe_code)]
    // SAFETY: `geteuid` takes nothing, cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    euid
}

/// Whether this process may give tasks another user (it runs as root).
pub fn is_root() -> bool {
    effective_uid() == 0
}

fn bwrap_args(spec: &SandboxSpec, cwd: Option<&Path>) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    // bubblewrap started by root without a user to become would map the sandbox's user to
    // root; a task user (or a node that is not root) gets an unprivileged user namespace.
    if spec.run_as.is_some() || !is_root() {
        args.push("--unshare-user".into());
    }
    args.extend(
        [
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
        ]
        .map(OsString::from),
    );
    if !spec.share_network {
        args.push("--unshare-net".into());
    }
    args.extend(
        [
            "--die-with-parent",
            // No controlling terminal to push input into (TIOCSTI).
            "--new-session",
            "--cap-drop",
            "ALL",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
        ]
        .map(OsString::from),
    );
    for hidden in spec.hidden_paths.iter().filter(|path| path.is_dir()) {
        args.extend(["--tmpfs".into(), hidden.into()]);
    }
    // Binds come after the tmpfs mounts so a directory under /tmp is not hidden by them.
    for path in spec.readable_paths.iter().filter(|path| path.exists()) {
        args.extend(["--ro-bind".into(), path.into(), path.into()]);
    }
    for path in spec.writable_paths.iter().map(PathBuf::as_path).chain(cwd) {
        args.extend(["--bind".into(), path.into(), path.into()]);
    }
    if let Some(cwd) = cwd {
        args.extend(["--chdir".into(), cwd.into()]);
    }
    args
}

/// rlimits for the child, and what they cover.
struct RlimitPlan {
    /// (`libc::RLIMIT_*`, limit) in the resource's unit (bytes, seconds).
    limits: Vec<(u32, u64)>,
    described: Vec<&'static str>,
    unenforced: Vec<&'static str>,
}

fn rlimits(
    spec: &SandboxSpec,
    cgroup: Option<&AttemptCgroup>,
    timeout_ms: Option<u64>,
) -> RlimitPlan {
    let covered = |c: Controller| cgroup.map(|cg| cg.limited.contains(&c)).unwrap_or(false);
    let mut plan = RlimitPlan {
        limits: Vec::new(),
        described: Vec::new(),
        unenforced: Vec::new(),
    };
    if let Some(bytes) = spec
        .memory_bytes_max
        .filter(|_| !covered(Controller::Memory))
    {
        plan.limits.push((libc::RLIMIT_AS, bytes.max(1)));
        plan.described.push("as");
    }
    if let Some(millis) = spec.cpu_millis_max.filter(|_| !covered(Controller::Cpu)) {
        // RLIMIT_CPU caps total cpu time, not a rate: allow the quota over the whole timeout.
        match timeout_ms {
            Some(timeout_ms) => {
                let seconds = (timeout_ms.saturating_mul(millis) / 1_000_000).max(1);
                plan.limits.push((libc::RLIMIT_CPU, seconds));
                plan.described.push("cpu");
            }
            None => plan
                .unenforced
                .push("cpu quota (no timeout to derive RLIMIT_CPU from)"),
        }
    }
    if let Some(bytes) = spec.file_bytes_max {
        plan.limits.push((libc::RLIMIT_FSIZE, bytes.max(1)));
        plan.described.push("fsize");
    }
    if spec.pids_max.is_some() && !covered(Controller::Pids) {
        // RLIMIT_NPROC counts per user, shared by every attempt of the task user: no honest
        // per-attempt fallback.
        plan.unenforced.push("pids limit");
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_parses_cgroup_mounts() {
        let info = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                    22 1 0:21 / /proc rw - proc proc rw\n";
        let mounts = cgroup_mounts(info);
        assert_eq!(mounts.len(), 2);
        assert_eq!(
            mounts[0].mount_point,
            PathBuf::from("/sys/fs/cgroup/memory")
        );
        assert!(mounts[0].super_options.contains(&"memory".to_string()));
        assert_eq!(mounts[1].fs_type, "cgroup2");
    }

    #[test]
    fn own_cgroup_path_matches_controller_lists() {
        let own = "4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/user.slice\n";
        let memory = own_cgroup_path(own, |cs| cs.split(',').any(|c| c == "memory"));
        assert_eq!(memory.as_deref(), Some("/process_api/abc"));
        let cpu = own_cgroup_path(own, |cs| cs.split(',').any(|c| c == "cpu"));
        assert_eq!(cpu.as_deref(), Some("/"));
        assert_eq!(
            own_cgroup_path(own, str::is_empty).as_deref(),
            Some("/user.slice")
        );
    }

    #[test]
    fn cpu_quota_is_a_share_of_the_period_with_a_floor() {
        assert_eq!(cpu_quota_us(500), 50_000);
        assert_eq!(cpu_quota_us(2_000), 200_000);
        assert_eq!(cpu_quota_us(1), CPU_QUOTA_US_MIN);
    }

    #[test]
    fn rlimits_cover_what_no_cgroup_does() {
        let spec = SandboxSpec {
            memory_bytes_max: Some(100 * 1024 * 1024),
            cpu_millis_max: Some(500),
            pids_max: Some(10),
            file_bytes_max: Some(4096),
            ..SandboxSpec::default()
        };
        let plan = rlimits(&spec, None, Some(10_000));
        assert_eq!(
            plan.limits,
            [
                (libc::RLIMIT_AS, 100 * 1024 * 1024),
                (libc::RLIMIT_CPU, 5),
                (libc::RLIMIT_FSIZE, 4096)
            ]
        );
        assert_eq!(plan.unenforced, ["pids limit"]);
    }
}

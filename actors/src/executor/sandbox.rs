//! Sandboxing of task processes: bubblewrap namespaces with a read-only root, and resource
//! limits through a per-attempt cgroup (v2 or v1, detected at run time) or, where no cgroup
//! works, rlimits set by a wrapper shell.
//!
//! Nothing here runs user code: `prepare` turns a `SandboxSpec` into an argv prefix plus a
//! cgroup that the subprocess executor owns for the attempt's lifetime.

use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::subprocess::send_sigkill;

/// How to confine an attempt's processes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Run inside bubblewrap namespaces with a read-only root.
    pub namespaces: bool,
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
    #[error("sandbox requested but bash is not installed")]
    BashMissing,
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

/// Finds bubblewrap and a usable cgroup hierarchy. Creates the `weft` parent cgroup(s) as a
/// side effect, because whether that works is the real test of support.
pub fn detect() -> SandboxSupport {
    SandboxSupport {
        bwrap: find_program("bwrap"),
        cgroup: detect_cgroup(),
    }
}

/// `name` resolved against this process's PATH, so a task's replaced environment cannot
/// change which binary weft itself starts.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| m.is_file())
                .unwrap_or(false)
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

/// A sandbox ready to start: the argv to run instead of the bare `bash -c`, and the cgroup the
/// executor must clean up.
#[derive(Debug)]
pub struct PreparedSandbox {
    /// Full argv (program first), ending with the task's own command.
    pub argv: Vec<OsString>,
    /// For the log's first line, e.g. `bwrap, cgroup v1 (memory, cpu, pids)`.
    pub description: String,
    pub cgroup: Option<AttemptCgroup>,
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

/// Builds the sandbox for one attempt: creates its cgroup (if one works here) and the argv that
/// enters the cgroup, sets rlimits and starts bubblewrap before the task's code runs.
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
    let cgroup = match (spec.resource_control, &support.cgroup) {
        (ResourceControl::Rlimits, _) | (_, CgroupSupport::None) => None,
        (ResourceControl::Auto, cgroups) => Some(AttemptCgroup::create(cgroups, spec)?),
    };
    let rlimits = rlimit_commands(spec, cgroup.as_ref(), command.timeout_ms);

    let mut parts = Vec::new();
    let mut argv: Vec<OsString> = Vec::new();
    if let Some(bwrap) = &bwrap {
        parts.push("bwrap".to_string());
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
    let procs_files = cgroup
        .as_ref()
        .map(AttemptCgroup::procs_files)
        .unwrap_or_default();
    if !procs_files.is_empty() || !rlimits.shell.is_empty() {
        argv = wrap_in_entry_shell(&procs_files, &rlimits.shell, argv)?;
    }
    let description = if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    };
    Ok(PreparedSandbox {
        argv,
        description,
        cgroup,
    })
}

fn bwrap_args(spec: &SandboxSpec, cwd: Option<&Path>) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        .map(OsString::from)
        .to_vec();
    if !spec.share_network {
        args.push("--unshare-net".into());
    }
    args.extend(
        [
            "--die-with-parent",
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
    // Binds come after the /tmp tmpfs so a directory under /tmp is not hidden by it.
    for path in spec.writable_paths.iter().map(PathBuf::as_path).chain(cwd) {
        args.extend(["--bind".into(), path.into(), path.into()]);
    }
    if let Some(cwd) = cwd {
        args.extend(["--chdir".into(), cwd.into()]);
    }
    args
}

/// rlimits for the wrapper shell, and what they cover.
struct RlimitPlan {
    /// `ulimit` commands (bash: -v in KiB, -t in seconds, -f in 1024-byte blocks).
    shell: Vec<String>,
    described: Vec<&'static str>,
    unenforced: Vec<&'static str>,
}

fn rlimit_commands(
    spec: &SandboxSpec,
    cgroup: Option<&AttemptCgroup>,
    timeout_ms: Option<u64>,
) -> RlimitPlan {
    let covered = |c: Controller| cgroup.map(|cg| cg.limited.contains(&c)).unwrap_or(false);
    let mut plan = RlimitPlan {
        shell: Vec::new(),
        described: Vec::new(),
        unenforced: Vec::new(),
    };
    if let Some(bytes) = spec
        .memory_bytes_max
        .filter(|_| !covered(Controller::Memory))
    {
        plan.shell
            .push(format!("ulimit -v {}", (bytes / 1024).max(1)));
        plan.described.push("as");
    }
    if let Some(millis) = spec.cpu_millis_max.filter(|_| !covered(Controller::Cpu)) {
        // RLIMIT_CPU caps total cpu time, not a rate: allow the quota over the whole timeout.
        match timeout_ms {
            Some(timeout_ms) => {
                let seconds = (timeout_ms.saturating_mul(millis) / 1_000_000).max(1);
                plan.shell.push(format!("ulimit -t {seconds}"));
                plan.described.push("cpu");
            }
            None => plan
                .unenforced
                .push("cpu quota (no timeout to derive RLIMIT_CPU from)"),
        }
    }
    if let Some(bytes) = spec.file_bytes_max {
        plan.shell
            .push(format!("ulimit -f {}", (bytes / 1024).max(1)));
        plan.described.push("fsize");
    }
    if spec.pids_max.is_some() && !covered(Controller::Pids) {
        // RLIMIT_NPROC counts per user and is ignored for root: no honest fallback.
        plan.unenforced.push("pids limit");
    }
    plan
}

/// Wraps `argv` in a bash that moves itself into the cgroup and sets rlimits, then execs
/// `argv`: the task's code starts inside its limits, with no window where it runs unconfined.
fn wrap_in_entry_shell(
    procs_files: &[PathBuf],
    ulimits: &[String],
    argv: Vec<OsString>,
) -> Result<Vec<OsString>, Error> {
    let bash = find_program("bash").ok_or(Error::BashMissing)?;
    // The cgroup.procs paths come as arguments, never spliced into the script; the ulimit
    // lines are built from numbers only.
    let mut script = String::from(
        "n=$1; shift; while [ \"$n\" -gt 0 ]; do \
         echo $$ > \"$1\" || { echo \"[weft] sandbox: cannot enter cgroup $1\" >&2; exit 125; }; \
         shift; n=$((n-1)); done; ",
    );
    for ulimit in ulimits {
        script.push_str(ulimit);
        script.push_str(" || exit 125; ");
    }
    script.push_str("exec \"$@\"");
    let mut wrapped: Vec<OsString> = vec![
        bash.into(),
        "-c".into(),
        script.into(),
        "weft-sandbox".into(),
    ];
    wrapped.push(procs_files.len().to_string().into());
    wrapped.extend(procs_files.iter().map(|p| p.clone().into_os_string()));
    wrapped.extend(argv);
    Ok(wrapped)
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
        let plan = rlimit_commands(&spec, None, Some(10_000));
        assert_eq!(
            plan.shell,
            ["ulimit -v 102400", "ulimit -t 5", "ulimit -f 4"]
        );
        assert_eq!(plan.unenforced, ["pids limit"]);
    }
}

//! Starting and reaping task processes without `std::process::Command`.
//!
//! `Command` rebuilds the child's whole environment on every spawn that sets a variable: it
//! copies the worker's environment into a map, merges the variables set, and allocates a C
//! string for each. Every shell task sets its context variables (`WEFT_CTX_*`), so that copy
//! was the largest cost of starting a task beyond the process start itself (about 40 µs of
//! the worker's CPU per task, more than everything else on the path together). Here the
//! worker's environment is turned into C strings once, and a spawn lists pointers to them
//! plus the few variables it sets. weft never changes its own environment after start, so
//! the copy stays true.
//!
//! Processes start as `Command` starts them with `posix_spawn` (vfork and exec, stdin, stdout
//! and stderr duplicated in, `SIGPIPE` back to its default, an empty signal mask, optionally
//! a process group of their own), with `clone(CLONE_VM | CLONE_VFORK)` on a stack kept per
//! thread, which is what glibc's `posix_spawn` does on a stack it maps and unmaps on every
//! call: in a multi-threaded worker the unmap flushes the TLB on every core running one of its
//! threads, and the map and unmap were about a sixth of the worker's own CPU per task in a
//! fan-out of `true`. A program without a `/` is looked up on PATH first. Between `clone` and
//! `execve` the child also asks to be killed with the node (`PR_SET_PDEATHSIG`) and, when
//! confined, joins its cgroup, sets its rlimits and becomes the task's user (`Confinement`).
//! Waiting needs no registration when the process has exited
//! by the time it is waited for (a short task's output pipe closes as it exits); otherwise a
//! pidfd wakes the waiter, or, on kernels without pidfds, a short poll.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::LazyLock;
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// Longest pause between two polls of a process on a kernel without pidfds.
const POLL_PAUSE_MAX: Duration = Duration::from_millis(50);

/// The worker's environment, as `NAME=value` C strings, read once.
static WORKER_ENV: LazyLock<Vec<(OsString, CString)>> = LazyLock::new(|| {
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.clone(), entry(&name, &value).ok()?)))
        .collect()
});

/// The environment of one child: the worker's (unless cleared) with some variables set.
#[derive(Debug, Default)]
pub(crate) struct ChildEnv {
    clear: bool,
    /// Set variables as `NAME=value`, at most one per name (a later `set` replaces an earlier
    /// one). Only the C strings are kept: a name is the part before the first `=` (a name
    /// with `=` is refused, as the C library cannot look it up either).
    set: Vec<CString>,
}

/// Whether `entry` (`NAME=value`) sets `name`.
fn sets(entry: &CString, name: &[u8]) -> bool {
    let bytes = entry.as_bytes();
    bytes.len() > name.len() && bytes[name.len()] == b'=' && bytes.starts_with(name)
}

impl ChildEnv {
    /// The worker's environment.
    pub fn inherit() -> ChildEnv {
        ChildEnv::default()
    }

    /// No inherited variable: only those `set`.
    pub fn cleared() -> ChildEnv {
        ChildEnv {
            clear: true,
            set: Vec::new(),
        }
    }

    /// Sets `name`; a name or value with a NUL byte, or a name with `=`, is refused.
    pub fn set(&mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> io::Result<()> {
        let (name, value) = (name.as_ref(), value.as_ref());
        let entry = entry(name, value)?;
        match self.set.iter_mut().find(|set| sets(set, name.as_bytes())) {
            Some(slot) => *slot = entry,
            None => self.set.push(entry),
        }
        Ok(())
    }

    /// The value `name` has in this environment.
    pub fn get(&self, name: &str) -> Option<&OsStr> {
        fn value<'a>(entry: &'a CString, name: &str) -> &'a OsStr {
            OsStr::from_bytes(&entry.as_bytes()[name.len() + 1..])
        }
        if let Some(entry) = self.set.iter().find(|set| sets(set, name.as_bytes())) {
            return Some(value(entry, name));
        }
        if self.clear {
            return None;
        }
        WORKER_ENV
            .iter()
            .find(|(inherited, _)| inherited == name)
            .map(|(_, entry)| value(entry, name))
    }

    /// The `envp` array: pointers into the worker's environment and into `self`, valid while
    /// both live, ending with a null pointer.
    fn pointers(&self) -> Vec<*const libc::c_char> {
        let mut pointers = Vec::with_capacity(WORKER_ENV.len() + self.set.len() + 1);
        if !self.clear {
            pointers.extend(
                WORKER_ENV
                    .iter()
                    .filter(|(name, _)| !self.set.iter().any(|set| sets(set, name.as_bytes())))
                    .map(|(_, entry)| entry.as_ptr()),
            );
        }
        pointers.extend(self.set.iter().map(|entry| entry.as_ptr()));
        pointers.push(std::ptr::null());
        pointers
    }
}

fn entry(name: &OsStr, value: &OsStr) -> io::Result<CString> {
    if name.as_bytes().contains(&b'=') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "environment variable name {} has a `=`",
                name.to_string_lossy()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(name.len() + value.len() + 2);
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(b'=');
    bytes.extend_from_slice(value.as_bytes());
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "environment variable {} has a NUL byte",
                name.to_string_lossy()
            ),
        )
    })
}

/// How to start one process.
pub(crate) struct SpawnRequest<'a> {
    /// The program and its arguments; a program without a `/` is looked up on the worker's
    /// PATH.
    pub argv: &'a [OsString],
    pub env: &'a ChildEnv,
    pub cwd: Option<&'a std::path::Path>,
    pub stdin: BorrowedFd<'a>,
    pub stdout: BorrowedFd<'a>,
    pub stderr: BorrowedFd<'a>,
    /// Start a process group of its own (its id is the process's).
    pub process_group: bool,
    /// What the child takes on before it execs: its cgroup, rlimits, its own user.
    pub confinement: Option<&'a Confinement>,
}

/// What a child does to itself between `clone` and `execve`, as root where it needs to: join
/// its cgroup (so that the first instruction of the task runs inside its limits), set its
/// rlimits, and drop to the task's own user. In every case it is killed with the node
/// (`PR_SET_PDEATHSIG`) and can gain no privilege by exec (`PR_SET_NO_NEW_PRIVS`).
#[derive(Debug, Default, Clone)]
pub(crate) struct Confinement {
    /// `cgroup.procs` files to write `0` (the writer itself) to.
    pub cgroup_procs: Vec<CString>,
    /// (resource, limit): `libc::RLIMIT_*` and the soft and hard limit.
    pub rlimits: Vec<(u32, u64)>,
    /// The user and group to become; supplementary groups are dropped.
    pub identity: Option<(u32, u32)>,
}

impl Confinement {
    /// `path` as a C string for `cgroup_procs`.
    pub fn cgroup_procs_file(path: &std::path::Path) -> io::Result<CString> {
        CString::new(path.as_os_str().as_bytes()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has a NUL byte", path.display()),
            )
        })
    }
}

/// A started process, reaped by `wait` (or in the background if dropped before).
#[derive(Debug)]
pub(crate) struct Process {
    pid: libc::pid_t,
    status: Option<ExitStatus>,
}

pub(crate) fn spawn(request: &SpawnRequest<'_>) -> io::Result<Process> {
    let c_string = |text: &OsStr| {
        CString::new(text.as_bytes()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has a NUL byte", text.to_string_lossy()),
            )
        })
    };
    let Some(program) = request.argv.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no program"));
    };
    let argv = request
        .argv
        .iter()
        .map(|arg| c_string(arg))
        .collect::<io::Result<Vec<CString>>>()?;
    let mut argv_pointers: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_pointers.push(std::ptr::null());
    let envp = request.env.pointers();
    let cwd = request
        .cwd
        .map(|cwd| c_string(cwd.as_os_str()))
        .transpose()?;
    let stdio = [request.stdin, request.stdout, request.stderr];
    let empty = Confinement::default();
    let confinement = request.confinement.unwrap_or(&empty);
    let mut cgroup_procs: Vec<*const libc::c_char> = confinement
        .cgroup_procs
        .iter()
        .map(|path| path.as_ptr())
        .collect();
    cgroup_procs.push(std::ptr::null());
    let rlimits: Vec<(libc::__rlimit_resource_t, libc::rlimit)> = confinement
        .rlimits
        .iter()
        .map(|&(resource, limit)| {
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            (resource as libc::__rlimit_resource_t, limit)
        })
        .collect();
    // Looked up here rather than by `posix_spawnp`, which could not set up the child.
    let resolved = if program.as_bytes().contains(&b'/') {
        None
    } else {
        let found = super::sandbox::find_program(program)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        Some(c_string(found.as_os_str())?)
    };
    let pid = clone_spawn(ChildPlan {
        program: resolved.as_deref().unwrap_or(&argv[0]).as_ptr(),
        argv: argv_pointers.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_deref().map_or(std::ptr::null(), CStr::as_ptr),
        stdio: stdio.map(|fd| fd.as_raw_fd()),
        process_group: request.process_group,
        parent: node_pid(),
        cgroup_procs: cgroup_procs.as_ptr(),
        rlimits: &rlimits[..],
        identity: confinement.identity,
        no_new_privs: request.confinement.is_some(),
        error: std::sync::atomic::AtomicI32::new(0),
    })?;
    Ok(Process { pid, status: None })
}

/// This process's id, which a child compares with its parent's after asking to die with it.
fn node_pid() -> libc::pid_t {
    static PID: std::sync::OnceLock<libc::pid_t> = std::sync::OnceLock::new();
    *PID.get_or_init(|| std::process::id() as libc::pid_t)
}

/// Size of the stack a child runs on between `clone` and `execve`, where it makes a few
/// system calls and nothing else (glibc's `posix_spawn` gives its children 32 KiB and the
/// argument vector).
const CHILD_STACK_BYTES: usize = 64 * 1024;

thread_local! {
    /// The stack this thread's children start on. `CLONE_VFORK` suspends the thread until its
    /// child has exec'd or exited, so one stack serves every spawn of the thread. `u128`s keep
    /// it 16-byte aligned, as the ABI wants a stack.
    static CHILD_STACK: std::cell::RefCell<Box<[u128]>> =
        std::cell::RefCell::new(vec![0; CHILD_STACK_BYTES / 16].into_boxed_slice());
}

/// Everything the child of `clone_spawn` needs, prepared by the parent: between `clone` and
/// `execve` the child shares the parent's memory and must not allocate or take locks.
struct ChildPlan {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// Null: the worker's directory.
    cwd: *const libc::c_char,
    stdio: [libc::c_int; 3],
    process_group: bool,
    /// The node's pid: a child whose parent is no longer it after `PR_SET_PDEATHSIG` has
    /// outlived the node already, and exits instead of running unwatched.
    parent: libc::pid_t,
    /// Null-terminated array of `cgroup.procs` paths to join.
    cgroup_procs: *const *const libc::c_char,
    rlimits: *const [(libc::__rlimit_resource_t, libc::rlimit)],
    /// (uid, gid) to become.
    identity: Option<(u32, u32)>,
    /// Set `PR_SET_NO_NEW_PRIVS` (a confined child; an unconfined one may still use sudo).
    no_new_privs: bool,
    /// The errno of the step that failed, set by the child before it exits; 0 if it exec'd.
    error: std::sync::atomic::AtomicI32,
}

/// Starts `plan.program` as `posix_spawn` would with the same settings, on this thread's
/// child stack instead of a freshly mapped one.
#[allow(unsafe_code)]
fn clone_spawn(plan: ChildPlan) -> io::Result<libc::pid_t> {
    // SAFETY: signal sets are plain data initialised by `sigfillset`/`pthread_sigmask`. All
    // signals stay blocked in this thread while the child runs on shared memory, so that no
    // handler runs in the child before it has reset them (the child inherits the mask).
    // `clone` gets the top of a stack that nothing else uses while the child runs (the thread
    // is suspended by `CLONE_VFORK` until the child has exec'd or exited, and the `RefCell`
    // borrow is held across the call), `child_main` as entry point and a pointer to `plan`,
    // which outlives the child's use of it for the same reason.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let blocked = libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
        if blocked != 0 {
            return Err(io::Error::from_raw_os_error(blocked));
        }
        let pid = CHILD_STACK.with(|stack| {
            let mut stack = stack.borrow_mut();
            let top = stack.as_mut_ptr().add(stack.len()) as *mut libc::c_void;
            libc::clone(
                child_main,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                &plan as *const ChildPlan as *mut libc::c_void,
            )
        });
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
        if pid == -1 {
            return Err(clone_error);
        }
        let error = plan.error.load(std::sync::atomic::Ordering::SeqCst);
        if error != 0 {
            // It exited without exec'ing: collect it.
            let _ = reap(pid, true);
            return Err(io::Error::from_raw_os_error(error));
        }
        Ok(pid)
    }
}

/// The child of `clone_spawn`, on the parent's memory until `execve`: resets signal handlers
/// (a handler of the parent's must not run here), sets up the standard streams, directory and
/// process group, unblocks signals and execs. Only async-signal-safe calls; on failure it
/// leaves the errno in the plan and exits with 127.
#[allow(unsafe_code)]
extern "C" fn child_main(plan: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `plan` points to the parent's `ChildPlan`, alive while the parent is suspended;
    // every pointer in it is valid (see `clone_spawn`), and the calls below are the system
    // calls `posix_spawn`'s child makes.
    unsafe {
        let plan = &*(plan as *const ChildPlan);
        let fail = || -> libc::c_int {
            let errno = *libc::__errno_location();
            plan.error
                .store(errno.max(1), std::sync::atomic::Ordering::SeqCst);
            libc::_exit(127)
        };
        // As `posix_spawn`: every caught signal back to its default, and, as `Command`,
        // SIGPIPE too (Rust programs ignore it). glibc's internal signals cannot be changed
        // through `sigaction`; they are never sent to another process.
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for signal in 1..libc::SIGRTMAX() + 1 {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut current) != 0 {
                continue;
            }
            let caught =
                current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN;
            if caught || signal == libc::SIGPIPE {
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        for (target, &fd) in plan.stdio.iter().enumerate() {
            let target = target as libc::c_int;
            let duplicated = if fd == target {
                // dup2 onto itself keeps close-on-exec: clear it instead.
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if duplicated == -1 {
                return fail();
            }
        }
        if !plan.cwd.is_null() && libc::chdir(plan.cwd) == -1 {
            return fail();
        }
        if plan.process_group && libc::setpgid(0, 0) == -1 {
            return fail();
        }
        if confine(plan) == -1 {
            return fail();
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(plan.program, plan.argv, plan.envp);
        fail()
    }
}

/// The child's confinement (see `Confinement`), in an order that needs no privilege it has
/// already given up: join the cgroup and set rlimits as the node's user, become the task's
/// user, then ask to die with the node (a change of user clears that request, so it comes
/// after) and refuse new privileges. The death signal follows the thread that spawned the
/// child, not the process: spawns happen on the runtime's worker threads, which live as long
/// as the node. Returns -1 with errno set on
/// failure. Raw system calls for the user change: glibc's `setresuid` would signal every
/// thread of the process it believes it is in (the node's, whose memory the child shares).
///
/// # Safety
/// Called only from `child_main`, with a plan whose pointers are valid (see `clone_spawn`).
#[allow(unsafe_code)]
unsafe fn confine(plan: &ChildPlan) -> libc::c_int {
    // SAFETY: plain system calls on integers and on the NUL-terminated strings and arrays the
    // parent prepared, which outlive the child's use of them.
    unsafe {
        let mut procs = plan.cgroup_procs;
        while !(*procs).is_null() {
            let fd = libc::open(*procs, libc::O_WRONLY | libc::O_CLOEXEC);
            if fd == -1 {
                return -1;
            }
            let written = libc::write(fd, b"0".as_ptr() as *const libc::c_void, 1);
            libc::close(fd);
            if written != 1 {
                return -1;
            }
            procs = procs.add(1);
        }
        for (resource, limit) in &*plan.rlimits {
            if libc::setrlimit(*resource, limit) == -1 {
                return -1;
            }
        }
        if let Some((uid, gid)) = plan.identity {
            let no_groups: *const libc::gid_t = std::ptr::null();
            if libc::syscall(libc::SYS_setgroups, 0, no_groups) == -1
                || libc::syscall(libc::SYS_setresgid, gid, gid, gid) == -1
                || libc::syscall(libc::SYS_setresuid, uid, uid, uid) == -1
            {
                return -1;
            }
        }
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) == -1
        {
            return -1;
        }
        if libc::getppid() != plan.parent {
            libc::_exit(137);
        }
        if plan.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 {
            return -1;
        }
        0
    }
}

impl Process {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the process to exit and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        match pidfd_open(self.pid) {
            Ok(pidfd) => {
                let pidfd = register(pidfd)?;
                loop {
                    if let Some(status) = self.try_wait()? {
                        return Ok(status);
                    }
                    // Readable once the process has exited.
                    pidfd.readable().await?.clear_ready();
                }
            }
            Err(_) => {
                // No pidfds (Linux before 5.3): poll, quickly at first.
                let mut pause = Duration::from_micros(200);
                loop {
                    if let Some(status) = self.try_wait()? {
                        return Ok(status);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(POLL_PAUSE_MAX);
                }
            }
        }
    }

    /// Reaps the process if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let status = reap(self.pid, false)?;
        self.status = status;
        Ok(status)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status.is_some() || matches!(self.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        // Dropped while running (a cancelled attempt: its tree guard kills the group). Reap it
        // when it dies so that it does not stay a zombie.
        let pid = self.pid;
        if let Err(error) = std::thread::Builder::new()
            .name("weft-attempt-reap".into())
            .spawn(move || {
                let _ = reap(pid, true);
            })
        {
            tracing::warn!(pid, %error, "cannot start the thread that reaps a cancelled attempt");
        }
    }
}

#[allow(unsafe_code)]
fn register(pidfd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `AsyncFd` owns the descriptor from here until it is dropped, and an
    // `OwnedFd` always answers the same `as_raw_fd`.
    Ok(unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }?)
}

/// `waitpid` for one child: its status once it has exited, `None` while it runs (unless
/// `block`).
#[allow(unsafe_code)]
fn reap(pid: libc::pid_t, block: bool) -> io::Result<Option<ExitStatus>> {
    let options = if block { 0 } else { libc::WNOHANG };
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes the status of our own child into a local.
        let reaped = unsafe { libc::waitpid(pid, &mut status, options) };
        match reaped {
            0 => return Ok(None),
            -1 => {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            _ => return Ok(Some(ExitStatus::from_raw(status))),
        }
    }
}

#[allow(unsafe_code)]
fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes plain integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and nothing else owns it. pidfds are created
    // close-on-exec.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn run(argv: &[&str], env: &ChildEnv, cwd: Option<&std::path::Path>) -> (String, i32) {
        let (mut reader, writer) = std::io::pipe().unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let request = SpawnRequest {
            argv: &argv,
            env,
            cwd,
            stdin: std::os::fd::AsFd::as_fd(&null),
            stdout: std::os::fd::AsFd::as_fd(&writer),
            stderr: std::os::fd::AsFd::as_fd(&writer),
            process_group: true,
            confinement: None,
        };
        let mut process = spawn(&request).unwrap();
        drop(writer);
        let mut output = String::new();
        reader.read_to_string(&mut output).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let status = runtime.block_on(process.wait()).unwrap();
        (output, status.code().unwrap_or(-1))
    }

    #[test]
    fn the_child_sees_the_worker_environment_with_its_own_variables_on_top() {
        let mut env = ChildEnv::inherit();
        env.set("WEFT_SPAWN_TEST", "first").unwrap();
        env.set("WEFT_SPAWN_TEST", "second").unwrap();
        env.set("HOME", "/nowhere").unwrap();
        let (output, code) = run(&["/usr/bin/env"], &env, None);
        assert_eq!(code, 0);
        let lines: Vec<&str> = output.lines().collect();
        assert!(lines.contains(&"WEFT_SPAWN_TEST=second"), "{output}");
        assert!(lines.contains(&"HOME=/nowhere"), "{output}");
        assert_eq!(lines.iter().filter(|l| l.starts_with("HOME=")).count(), 1);
        // Everything else is the worker's, once each.
        for (name, value) in std::env::vars_os() {
            if name == "HOME" {
                continue;
            }
            use std::os::unix::ffi::OsStringExt;
            let line = [name.into_vec(), b"=".to_vec(), value.into_vec()].concat();
            let line = String::from_utf8_lossy(&line).to_string();
            assert_eq!(lines.iter().filter(|l| **l == line).count(), 1, "{line}");
        }
        assert_eq!(env.get("HOME"), Some(OsStr::new("/nowhere")));
        assert_eq!(env.get("PATH"), std::env::var_os("PATH").as_deref());
    }

    #[test]
    #[allow(unsafe_code)]
    fn children_start_with_no_blocked_signal_and_sigpipe_at_its_default() {
        let status_field = |status: &str, name: &str| -> u64 {
            let line = status
                .lines()
                .find(|line| line.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in {status}"));
            u64::from_str_radix(line[name.len()..].trim(), 16).unwrap()
        };
        let bit = |signal: libc::c_int| 1u64 << (signal - 1);
        // This process ignores SIGPIPE (every Rust program does) and this thread blocks
        // SIGUSR2 while it spawns: neither reaches the child.
        let own = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        assert_ne!(status_field(&own, "SigIgn:") & bit(libc::SIGPIPE), 0);
        // SAFETY: signal sets are plain data; the mask is restored before the test ends.
        let previous = unsafe {
            let mut blocked: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut blocked);
            libc::sigaddset(&mut blocked, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_BLOCK, &blocked, &mut previous);
            previous
        };
        let (output, code) = run(
            &["/bin/cat", "/proc/self/status"],
            &ChildEnv::inherit(),
            None,
        );
        // SAFETY: restores the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) };
        assert_eq!(code, 0);
        assert_eq!(status_field(&output, "SigBlk:"), 0, "{output}");
        assert_eq!(status_field(&output, "SigIgn:") & bit(libc::SIGPIPE), 0);
    }

    #[test]
    fn a_missing_working_directory_fails_the_spawn() {
        let null = std::fs::File::open("/dev/null").unwrap();
        let argv = [OsString::from("/bin/true")];
        let env = ChildEnv::inherit();
        let missing = std::path::Path::new("/nonexistent/directory");
        let request = SpawnRequest {
            cwd: Some(missing),
            ..silent(&argv, &env, &null)
        };
        let error = spawn(&request).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound, "{error}");
    }

    #[test]
    fn a_cleared_environment_has_only_what_was_set() {
        let mut env = ChildEnv::cleared();
        env.set("ONLY", "this").unwrap();
        let (output, _) = run(&["/usr/bin/env"], &env, None);
        assert_eq!(output, "ONLY=this\n");
        assert_eq!(env.get("PATH"), None);
    }

    #[test]
    fn programs_are_found_on_the_path_and_run_in_their_directory_and_group() {
        let dir = tempfile::tempdir().unwrap();
        let (output, code) = run(
            &["sh", "-c", "pwd; ps -o pgid= -p $$; echo $$; exit 3"],
            &ChildEnv::inherit(),
            Some(dir.path()),
        );
        assert_eq!(code, 3);
        let lines: Vec<&str> = output.lines().map(str::trim).collect();
        assert_eq!(
            std::path::Path::new(lines[0]).canonicalize().unwrap(),
            dir.path().canonicalize().unwrap()
        );
        assert_eq!(lines[1], lines[2], "its own process group: {output}");
    }

    /// A request with every standard stream on `null`.
    fn silent<'a>(
        argv: &'a [OsString],
        env: &'a ChildEnv,
        null: &'a std::fs::File,
    ) -> SpawnRequest<'a> {
        let fd = std::os::fd::AsFd::as_fd(null);
        SpawnRequest {
            argv,
            env,
            cwd: None,
            stdin: fd,
            stdout: fd,
            stderr: fd,
            process_group: false,
            confinement: None,
        }
    }

    #[test]
    fn bad_requests_are_errors_not_panics() {
        let mut env = ChildEnv::inherit();
        assert!(env.set("BAD", "nul\0byte").is_err());
        let null = std::fs::File::open("/dev/null").unwrap();
        let missing = [OsString::from("/nonexistent/program")];
        let request = silent(&missing, &env, &null);
        let error = spawn(&request).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound, "{error}");
        let request = SpawnRequest {
            argv: &[],
            ..request
        };
        assert!(spawn(&request).is_err());
    }

    #[test]
    fn a_running_process_is_waited_for_and_a_dropped_one_is_reaped() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let argv = [
            OsString::from("/bin/sh"),
            OsString::from("-c"),
            OsString::from("sleep 0.2; exit 7"),
        ];
        let env = ChildEnv::inherit();
        let request = silent(&argv, &env, &null);
        let mut process = spawn(&request).unwrap();
        assert!(process.try_wait().unwrap().is_none());
        let status = runtime.block_on(process.wait()).unwrap();
        assert_eq!(status.code(), Some(7));

        let process = spawn(&request).unwrap();
        let pid = process.id() as i32;
        drop(process);
        // The reaper thread collects it once it exits: then its pid is no child of ours.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(std::time::Instant::now() < deadline, "pid {pid} not reaped");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

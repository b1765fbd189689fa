//! Runs shell tasks (`TaskKind::Shell`) as real `bash -c` subprocesses: environment handling as
//! Airflow's BashOperator, output into a bounded log file, a timeout that kills the whole
//! process tree, and an optional sandbox (see `sandbox`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use std::io::Write as _;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;
use weft_core::dag_run::AttemptOutcome;
use weft_core::limits::XCOM_BYTES_MAX;
use weft_core::spec::TaskKind;

use super::sandbox::{self, AttemptCgroup, CgroupEvents, SandboxedCommand};
use super::spawn::{self, ChildEnv, Confinement, Process};
use super::{AttemptLimits, AttemptReport, LogTarget};

/// A shell task ready to run: `TaskKind::Shell` without the templating flag (rendering happens
/// before the command gets here).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShellCommand {
    pub command: String,
    /// Environment for the command. Empty: inherit the worker's. Set: replaces it, unless
    /// `append_env`.
    pub env: BTreeMap<String, String>,
    pub append_env: bool,
    pub cwd: Option<PathBuf>,
    /// Exit code that means "skipped" (Airflow's 99 by default).
    pub skip_exit_code: Option<i32>,
    /// Secret values the command's templates used: written as `***` in the log. Empty for
    /// most tasks, which then pay nothing for masking.
    pub masks: Vec<String>,
}

impl ShellCommand {
    /// A command with an inherited environment and Airflow's skip exit code (99).
    pub fn new(command: impl Into<String>) -> ShellCommand {
        ShellCommand {
            command: command.into(),
            skip_exit_code: Some(99),
            ..ShellCommand::default()
        }
    }

    /// The shell command of a `TaskKind::Shell`; `None` for any other kind.
    pub fn from_kind(kind: &TaskKind) -> Option<ShellCommand> {
        match kind {
            TaskKind::Shell {
                command,
                env,
                append_env,
                cwd,
                skip_exit_code,
                templated: _,
            } => Some(ShellCommand {
                command: command.clone(),
                env: env.clone(),
                append_env: *append_env,
                cwd: cwd.as_ref().map(PathBuf::from),
                skip_exit_code: *skip_exit_code,
                masks: Vec::new(),
            }),
            _ => None,
        }
    }
}

/// Size of one read from the child's pipes.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Size of the first read, into a buffer on the stack (see `pump_output`).
const FIRST_READ_BYTES: usize = 1024;
/// After a kill, how long to wait for the pipes to close and the child to be reaped before
/// reporting anyway (a process we could not find may still hold a pipe).
const KILL_GRACE_MS: u64 = 5_000;
/// Exit codes that shells use for "a child died of signal (code - 128)".
const SIGNAL_EXIT_CODE_MIN: i32 = 129;
const SIGNAL_EXIT_CODE_MAX: i32 = 128 + 64;
/// Rounds of "scan /proc, kill what belongs to the attempt" on timeout or cancellation.
const TREE_KILL_ROUNDS_MAX: u32 = 20;

/// Runs `command` once and reports how it ended. Never panics on the command's behaviour:
/// every failure, including failure to start, is an `AttemptOutcome`.
pub async fn run_shell(
    command: &ShellCommand,
    log: &LogTarget,
    limits: &AttemptLimits,
    extra_env: &[(&str, &str)],
) -> AttemptReport {
    let report = run_attempt(command, log, limits, extra_env).await;
    let outcome = match &report.outcome {
        AttemptOutcome::Success { .. } => "success",
        AttemptOutcome::Failed { .. } => "failed",
        AttemptOutcome::Skipped => "skipped",
        AttemptOutcome::TimedOut => "timed_out",
        AttemptOutcome::Lost { .. } => "lost",
    };
    metrics::counter!("weft_task_attempts_total", "outcome" => outcome).increment(1);
    report
}

async fn run_attempt(
    command: &ShellCommand,
    log: &LogTarget,
    limits: &AttemptLimits,
    extra_env: &[(&str, &str)],
) -> AttemptReport {
    let mut log_file = LogFile::new(&log.path, limits.log_bytes_max);
    log_file.mask = Masker::new(&command.masks);
    if let Some(cwd) = &command.cwd {
        if !cwd.is_dir() {
            let reason = format!("working directory {} does not exist", cwd.display());
            return failed_before_start(reason, log_file);
        }
    }
    let mut launch = match build_launch(command, limits) {
        Ok(launch) => launch,
        Err(reason) => return failed_before_start(reason, log_file),
    };

    let (mut child, output, mut guard) = match start(&mut launch, command, extra_env) {
        Ok(started) => started,
        Err(reason) => return failed_before_start(reason, log_file),
    };
    // Written only now that the guard owns the cgroup: a cancellation at this await cleans up.
    if let Some(description) = &launch.sandbox_description {
        log_file.note(&format!("sandbox: {description}"));
    }

    let mut last_line = LastLine::default();
    let ending = supervise(
        &mut child,
        output,
        &mut log_file,
        &mut last_line,
        &guard,
        limits,
    )
    .await;
    let events = guard.release().await;
    if let Ending::TimedOut { timeout_ms } = ending {
        log_file.note(&format!(
            "timed out after {timeout_ms} ms: killed the process tree"
        ));
    }
    let (log_bytes, log_truncated) = log_file.finish();

    let (outcome, result, exit_code) = match ending {
        Ending::TimedOut { .. } => (AttemptOutcome::TimedOut, None, None),
        Ending::Exited(status) => {
            let sandbox = launch.sandbox_spec.as_ref();
            let (outcome, result) = outcome_of(status, command, events, sandbox, &last_line);
            (outcome, result, status.code())
        }
    };
    AttemptReport {
        outcome,
        result,
        log_bytes,
        log_truncated,
        exit_code,
    }
}

/// Spawns the child and puts its process tree under a guard at once, so that from here on a
/// cancelled attempt leaves nothing behind.
fn start(
    launch: &mut Launch,
    command: &ShellCommand,
    extra_env: &[(&str, &str)],
) -> Result<(Process, pipe::Receiver, TreeGuard), String> {
    let spawn_started = Instant::now();
    let cgroup = launch.cgroup.take();
    let spawned = spawn(launch, command, extra_env);
    metrics::histogram!("weft_task_spawn_seconds").record(spawn_started.elapsed().as_secs_f64());
    let (child, output) = match spawned {
        Ok(started) => started,
        Err(e) => {
            if let Some(cgroup) = cgroup {
                // Nothing entered it; removal is quick, but keep /sys writes off this thread.
                std::thread::spawn(move || cgroup.remove());
            }
            return Err(format!("cannot start bash command: {e}"));
        }
    };
    let pid = child.id();
    let tree = ProcessTree {
        // process_group(0): the child's pid is its process group id.
        process_group: pid as i32,
        pipe_inodes: pipe_inode(&output).into_iter().collect(),
        cgroup,
    };
    Ok((child, output, TreeGuard(Some(tree))))
}

/// The argv to spawn, and the sandbox that goes with it.
struct Launch {
    argv: Vec<OsString>,
    /// `argv` is the command's own program, exec'd without bash (see `direct_argv`).
    direct: bool,
    sandbox_description: Option<String>,
    sandbox_spec: Option<sandbox::SandboxSpec>,
    cgroup: Option<AttemptCgroup>,
    confinement: Option<Confinement>,
    /// The attempt's own working directory (see `SandboxSpec::task_dirs`).
    task_dir: Option<TaskDir>,
}

fn build_launch(command: &ShellCommand, limits: &AttemptLimits) -> Result<Launch, String> {
    let namespaces = limits.sandbox.as_ref().is_some_and(|spec| spec.namespaces);
    let direct = if namespaces {
        None
    } else {
        direct_argv(command)
    };
    let (argv, is_direct) = match direct {
        Some(argv) => (argv, true),
        None => {
            // Resolved against the worker's PATH: a task's replaced env must not pick weft's
            // shell.
            let bash = sandbox::find_program("bash").unwrap_or_else(|| PathBuf::from("/bin/bash"));
            let argv: Vec<OsString> =
                vec![bash.into(), "-c".into(), command.command.clone().into()];
            (argv, false)
        }
    };
    let Some(spec) = &limits.sandbox else {
        return Ok(Launch {
            argv,
            direct: is_direct,
            sandbox_description: None,
            sandbox_spec: None,
            cgroup: None,
            confinement: None,
            task_dir: None,
        });
    };
    let task_dir = match (&command.cwd, &spec.task_dirs) {
        (None, Some(root)) => Some(TaskDir::create(root, spec.run_as)?),
        _ => None,
    };
    let cwd = command
        .cwd
        .as_deref()
        .or(task_dir.as_ref().map(|dir| dir.path.as_path()));
    let sandboxed = SandboxedCommand {
        argv,
        cwd,
        timeout_ms: limits.timeout_ms,
    };
    let prepared =
        sandbox::prepare(spec, sandbox::support(), sandboxed).map_err(|e| e.to_string())?;
    Ok(Launch {
        argv: prepared.argv,
        direct: is_direct,
        // The default isolation is on the node's start-up line; a line in every attempt's log
        // would create a log file for every silent task.
        sandbox_description: (spec.namespaces
            || !prepared.confinement.rlimits.is_empty()
            || prepared
                .cgroup
                .as_ref()
                .is_some_and(|c| !c.is_tracking_only()))
        .then_some(prepared.description),
        sandbox_spec: Some(spec.clone()),
        cgroup: prepared.cgroup,
        confinement: Some(prepared.confinement),
        task_dir,
    })
}

/// A working directory of one attempt, owned by the task's user; removed with what the task
/// left in it when dropped.
#[derive(Debug)]
struct TaskDir {
    path: PathBuf,
}

static TASK_DIR_SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl TaskDir {
    fn create(root: &Path, owner: Option<sandbox::TaskIdentity>) -> Result<TaskDir, String> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let fail = |what: &str, path: &Path, e: std::io::Error| {
            format!(
                "cannot {what} the task's working directory {}: {e}",
                path.display()
            )
        };
        if !root.is_dir() {
            std::fs::create_dir_all(root).map_err(|e| fail("create", root, e))?;
            // Every task user must reach its own directory; none may list the others'.
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| fail("create", root, e))?;
        }
        let path = root.join(format!(
            "attempt-{}-{}",
            std::process::id(),
            TASK_DIR_SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| fail("create", &path, e))?;
        let dir = TaskDir { path };
        if let Some(owner) = owner {
            std::os::unix::fs::chown(&dir.path, Some(owner.uid), Some(owner.gid))
                .map_err(|e| fail("hand over", &dir.path, e))?;
        }
        Ok(dir)
    }
}

impl Drop for TaskDir {
    fn drop(&mut self) {
        // Usually empty: one rmdir. What a task left is removed off the runtime's threads.
        if std::fs::remove_dir(&self.path).is_ok() {
            return;
        }
        let path = std::mem::take(&mut self.path);
        let _ = std::thread::Builder::new()
            .name("weft-task-dir".into())
            .spawn(move || {
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a task's working directory");
                }
            });
    }
}

/// Bash builtins and keywords: a command starting with one of these needs bash itself.
const BASH_BUILTINS: &[&str] = &[
    "!",
    ".",
    ":",
    "[",
    "[[",
    "]]",
    "alias",
    "bg",
    "bind",
    "break",
    "builtin",
    "caller",
    "case",
    "cd",
    "command",
    "compgen",
    "complete",
    "compopt",
    "continue",
    "coproc",
    "declare",
    "dirs",
    "disown",
    "do",
    "done",
    "echo",
    "elif",
    "else",
    "enable",
    "esac",
    "eval",
    "exec",
    "exit",
    "export",
    "false",
    "fc",
    "fg",
    "fi",
    "for",
    "function",
    "getopts",
    "hash",
    "help",
    "history",
    "if",
    "in",
    "jobs",
    "kill",
    "let",
    "local",
    "logout",
    "mapfile",
    "popd",
    "printf",
    "pushd",
    "pwd",
    "read",
    "readarray",
    "readonly",
    "return",
    "select",
    "set",
    "shift",
    "shopt",
    "source",
    "suspend",
    "test",
    "then",
    "time",
    "times",
    "trap",
    "true",
    "type",
    "typeset",
    "ulimit",
    "umask",
    "unalias",
    "unset",
    "until",
    "wait",
    "while",
];

/// The argv to exec directly when `bash -c` would do nothing but exec it: a command of plain
/// words (no quoting, expansion, redirection, globbing or operators), whose first word is a
/// program found on the PATH the command sees, not a builtin. bash runs such a command by
/// exec'ing it in place (same process, group, pipes and exit status), so skipping bash saves
/// its start-up (about 2 ms of CPU) and nothing else changes; the variables bash would add to
/// the environment are added in `spawn`. `true` and `false` without arguments are builtins
/// that behave exactly as their programs do. Anything else runs under bash, as before.
fn direct_argv(command: &ShellCommand) -> Option<Vec<OsString>> {
    const PLAIN: &str = "_./,:=+@%-";
    let words: Vec<&str> = command
        .command
        .split([' ', '\t'])
        .filter(|word| !word.is_empty())
        .collect();
    let (&program, arguments) = words.split_first()?;
    let plain = |word: &str| {
        word.chars()
            .all(|c| c.is_ascii_alphanumeric() || PLAIN.contains(c))
    };
    if !words.iter().all(|word| plain(word)) || program.contains('=') || program.starts_with('-') {
        return None;
    }
    let builtin_program = matches!(program, "true" | "false") && arguments.is_empty();
    if BASH_BUILTINS.contains(&program) && !builtin_program {
        return None;
    }
    let path = if program.contains('/') {
        // Relative paths depend on the working directory; bash reports those errors itself.
        let path = PathBuf::from(program);
        (path.is_absolute() && is_executable(&path)).then_some(path)?
    } else {
        let replaced = !command.env.is_empty() && !command.append_env;
        let search = match command.env.get("PATH") {
            Some(path) => OsString::from(path),
            None if replaced => return None,
            None => std::env::var_os("PATH")?,
        };
        find_on_path(&search, program)?
    };
    let mut argv = vec![path.into_os_string()];
    argv.extend(arguments.iter().map(OsString::from));
    Some(argv)
}

/// How long a PATH lookup is reused: bash hashes a command's location for the whole session;
/// weft keeps it a second, so a program installed meanwhile is found soon after.
const PATH_LOOKUP_TTL: Duration = Duration::from_secs(1);
/// Distinct (PATH, program) lookups kept; the table is emptied when it is full.
const PATH_LOOKUPS_MAX: usize = 256;

/// Recent lookups: (PATH, program, when, what was found). A handful of distinct programs is
/// the usual case, so a list scanned in place: a hit allocates nothing.
type PathLookups = Vec<(OsString, String, Instant, Option<PathBuf>)>;

/// The first executable `program` in the absolute directories of `search`. Probing every
/// directory of PATH was several `stat`s per shell task, so answers are reused briefly.
fn find_on_path(search: &std::ffi::OsStr, program: &str) -> Option<PathBuf> {
    static LOOKUPS: std::sync::Mutex<PathLookups> = std::sync::Mutex::new(Vec::new());
    if let Ok(lookups) = LOOKUPS.lock() {
        let hit = lookups.iter().find(|(path, name, at, _)| {
            name == program && path == search && at.elapsed() < PATH_LOOKUP_TTL
        });
        if let Some((_, _, _, found)) = hit {
            return found.clone();
        }
    }
    let found = std::env::split_paths(search)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate));
    if let Ok(mut lookups) = LOOKUPS.lock() {
        lookups.retain(|(path, name, at, _)| {
            !(name == program && path == search) && at.elapsed() < PATH_LOOKUP_TTL
        });
        if lookups.len() >= PATH_LOOKUPS_MAX {
            lookups.clear();
        }
        lookups.push((
            search.to_os_string(),
            program.to_string(),
            Instant::now(),
            found.clone(),
        ));
    }
    found
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Starts the child with stdout and stderr on one pipe, as Airflow's BashOperator runs its
/// command (`stderr=STDOUT`): the log interleaves them as written, and the last line of
/// either is the result. One pipe also costs one read loop instead of two per task.
fn spawn(
    launch: &Launch,
    command: &ShellCommand,
    extra_env: &[(&str, &str)],
) -> std::io::Result<(Process, pipe::Receiver)> {
    let (argv, direct) = (&launch.argv, launch.direct);
    let task_dir = launch.task_dir.as_ref().map(|dir| dir.path.as_path());
    let cwd = command.cwd.as_deref().or(task_dir);
    // Airflow's BashOperator: a given env replaces the worker's, unless appended to it.
    let mut env = if !command.env.is_empty() && !command.append_env {
        ChildEnv::cleared()
    } else {
        ChildEnv::inherit()
    };
    for (name, value) in &command.env {
        env.set(name, value)?;
    }
    if let Some(dir) = task_dir {
        // The node's home directory is not the task user's to read.
        if !command.env.contains_key("HOME") {
            env.set("HOME", dir)?;
        }
    }
    for (name, value) in extra_env {
        env.set(name, value)?;
    }
    if let Some(marker) = super::lineage::marker() {
        env.set(super::lineage::MARKER_VARIABLE, marker)?;
    }
    if direct {
        // Exec'd directly (see `direct_argv`): the variables bash would have exported.
        let level = env
            .get("SHLVL")
            .and_then(|level| level.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
            + 1;
        env.set("SHLVL", level.to_string())?;
        env.set("_", &argv[0])?;
        let pwd = cwd.or(worker_dir().as_deref());
        if let Some(pwd) = pwd {
            env.set("PWD", pwd)?;
        }
    }
    let (reader, writer) = output_pipe()?;
    let stdin = dev_null()?;
    let request = spawn::SpawnRequest {
        argv,
        env: &env,
        cwd,
        stdin: stdin.as_fd(),
        stdout: writer.as_fd(),
        stderr: writer.as_fd(),
        // Its own process group, so a timeout can kill the command and all its children.
        process_group: true,
        confinement: launch.confinement.as_ref(),
    };
    let child = spawn::spawn(&request)?;
    // The write end closes here, so the read end sees EOF once every process of the attempt
    // has closed it.
    drop(writer);
    // Known to be a pipe's read end, already non-blocking: no checks (two system calls).
    let output = pipe::Receiver::from_owned_fd_unchecked(reader)?;
    Ok((child, output))
}

/// A pipe for the child's output: (read end, non-blocking, for the worker; write end,
/// blocking, for the child). Both close on exec (the child gets the write end duplicated).
#[allow(unsafe_code)]
fn output_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: `pipe2` writes two descriptors into `fds`, which it owns from here on; `fcntl`
    // is called on the read end, open until `OwnedFd` closes it.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) == -1 {
            return Err(std::io::Error::last_os_error());
        }
        let (reader, writer) = (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]));
        if libc::fcntl(reader.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((reader, writer))
    }
}

/// The worker's working directory, which tasks without a `cwd` inherit. Read once: weft never
/// changes it, and a `getcwd` per task showed in profiles of short tasks.
fn worker_dir() -> &'static Option<PathBuf> {
    static DIR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| std::env::current_dir().ok())
}

/// The child's stdin: one `/dev/null` opened once and duplicated into each child (opening the
/// path on every spawn was a lookup that showed in profiles of short tasks).
fn dev_null() -> std::io::Result<&'static std::fs::File> {
    static DEV_NULL: std::sync::OnceLock<std::io::Result<std::fs::File>> =
        std::sync::OnceLock::new();
    match DEV_NULL.get_or_init(|| std::fs::File::open("/dev/null")) {
        Ok(file) => Ok(file),
        Err(error) => Err(std::io::Error::new(error.kind(), error.to_string())),
    }
}

/// How the child's run ended.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Exited(ExitStatus),
    TimedOut { timeout_ms: u64 },
}

/// Copies output into the log until the pipes close and the child exits, or kills the tree at
/// the timeout.
async fn supervise(
    child: &mut Process,
    output: impl AsyncRead + Unpin,
    log_file: &mut LogFile,
    last_line: &mut LastLine,
    guard: &TreeGuard,
    limits: &AttemptLimits,
) -> Ending {
    // Output first, then the exit: a short task's pipe closes as it exits, so it is usually
    // reaped at once, without registering to be told of its exit.
    let work = async {
        pump_output(output, log_file, last_line).await;
        child.wait().await
    };
    tokio::pin!(work);
    let Some(timeout_ms) = limits.timeout_ms else {
        return exited(work.await);
    };
    tokio::select! {
        status = &mut work => exited(status),
        () = tokio::time::sleep(Duration::from_millis(timeout_ms)) => {
            guard.kill_tree().await;
            // Drain what the killed processes left in the pipes and reap the child.
            let _ = tokio::time::timeout(Duration::from_millis(KILL_GRACE_MS), &mut work).await;
            Ending::TimedOut { timeout_ms }
        }
    }
}

fn exited(status: std::io::Result<ExitStatus>) -> Ending {
    // wait() only fails if the child was already reaped, which nothing else does: treat as
    // killed so the attempt still ends.
    Ending::Exited(status.unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL)))
}

async fn pump_output(
    mut output: impl AsyncRead + Unpin,
    log_file: &mut LogFile,
    last_line: &mut LastLine,
) {
    // Most short tasks print little or nothing: the first read goes to a small buffer on the
    // stack, and only output beyond it gets the large one (not zeroed: `read_buf` fills the
    // spare capacity; a zeroed 64 KiB per attempt showed in profiles of short tasks).
    let mut first = [0_u8; FIRST_READ_BYTES];
    match output.read(&mut first).await {
        Ok(0) | Err(_) => return,
        Ok(read) => {
            last_line.push(&first[..read]);
            log_file.write(&first[..read]);
        }
    }
    let mut buffer = Vec::with_capacity(READ_CHUNK_BYTES);
    loop {
        buffer.clear();
        match output.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                last_line.push(&buffer);
                log_file.write(&buffer);
            }
        }
    }
}

fn outcome_of(
    status: ExitStatus,
    command: &ShellCommand,
    events: CgroupEvents,
    sandbox: Option<&sandbox::SandboxSpec>,
    last_line: &LastLine,
) -> (AttemptOutcome, Option<serde_json::Value>) {
    if status.success() {
        let success = AttemptOutcome::Success {
            branch: None,
            proceed: None,
            output_len: None,
        };
        return (success, Some(serde_json::Value::String(last_line.result())));
    }
    if status.code().is_some() && status.code() == command.skip_exit_code {
        return (AttemptOutcome::Skipped, None);
    }
    let mut reason = match (status.code(), status.signal()) {
        // bash and bwrap turn a child's death by signal N into exit code 128 + N.
        (Some(code), _) if (SIGNAL_EXIT_CODE_MIN..=SIGNAL_EXIT_CODE_MAX).contains(&code) => {
            format!(
                "bash command exited with code {code} (128 + {})",
                describe_signal(code - 128)
            )
        }
        (Some(code), _) => format!("bash command exited with code {code}"),
        (None, Some(signal)) => format!("bash command was killed by {}", describe_signal(signal)),
        (None, None) => format!("bash command ended with status {status}"),
    };
    let memory_bytes_max = sandbox.and_then(|s| s.memory_bytes_max);
    if events.oom_kills > 0 {
        let limit = memory_bytes_max
            .map(|b| format!(" of {b} bytes"))
            .unwrap_or_default();
        reason.push_str(&format!(
            ": out of memory, the sandbox's memory limit{limit} was exceeded ({} oom kills)",
            events.oom_kills
        ));
    }
    if events.pids_max_hits > 0 {
        let limit = sandbox
            .and_then(|s| s.pids_max)
            .map(|m| format!(" of {m}"))
            .unwrap_or_default();
        reason.push_str(&format!(
            ": the sandbox's pids limit{limit} refused {} forks",
            events.pids_max_hits
        ));
    }
    (
        AttemptOutcome::Failed {
            reason,
            retryable: true,
        },
        None,
    )
}

/// `signal 9: SIGKILL`, with a hint for the signals limits send.
fn describe_signal(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU, cpu time limit exceeded",
        libc::SIGXFSZ => "SIGXFSZ, file size limit exceeded",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => return format!("signal {signal}"),
    };
    format!("signal {signal}: {name}")
}

/// A report for an attempt that never ran user code.
fn failed_before_start(reason: String, mut log_file: LogFile) -> AttemptReport {
    log_file.note(&reason);
    let (log_bytes, log_truncated) = log_file.finish();
    AttemptReport {
        outcome: AttemptOutcome::Failed {
            reason,
            retryable: true,
        },
        result: None,
        log_bytes,
        log_truncated,
        exit_code: None,
    }
}

/// The attempt's log file: task output up to `log_bytes_max`, plus weft's own `[weft]` lines.
///
/// Created on the first byte to write, so an attempt that prints nothing (most `true`-like
/// tasks) creates no directory and no file: readers treat a missing log as an empty one. On
/// this machine's ext4 the two inodes per attempt were a fifth of the engine's CPU in a fan-out
/// of 1,000 shell tasks. Plain `std::fs` calls on the runtime's thread, not `tokio::fs`:
/// creating the file and appending one read's worth of output (at most `READ_CHUNK_BYTES`) to
/// the page cache take microseconds, while each `tokio::fs` call is a round trip through the
/// blocking pool that cost about 0.25 ms here, paid by every shell task.
struct LogFile {
    path: PathBuf,
    /// `None` until the first write.
    file: Option<std::fs::File>,
    log_bytes_max: u64,
    /// Task output bytes seen (written or not), to say where truncation happened.
    output_bytes: u64,
    /// Bytes in the file, weft's lines included.
    written_bytes: u64,
    truncated: bool,
    /// Creating or writing the file failed (disk full, no permission): stop writing, keep
    /// draining, and report the log as truncated.
    broken: bool,
    /// Secrets to mask in the output; `None` (the usual case) writes output as it comes.
    mask: Option<Masker>,
}

impl LogFile {
    fn new(path: &Path, log_bytes_max: u64) -> LogFile {
        LogFile {
            path: path.to_path_buf(),
            file: None,
            log_bytes_max,
            output_bytes: 0,
            written_bytes: 0,
            truncated: false,
            broken: false,
            mask: None,
        }
    }

    fn open(&mut self) -> std::io::Result<&mut std::fs::File> {
        let file = match self.file.take() {
            Some(file) => file,
            None => {
                if let Some(parent) = self.path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::File::create(&self.path)?
            }
        };
        Ok(self.file.insert(file))
    }

    /// Appends task output, masked, dropping what goes beyond `log_bytes_max`.
    fn write(&mut self, bytes: &[u8]) {
        match self.mask.as_mut() {
            None => self.write_output(bytes),
            Some(mask) => {
                let masked = mask.push(bytes);
                self.write_output(&masked);
            }
        }
    }

    /// Writes what the masker still holds back (the output ended, or weft writes a line).
    fn flush_masked(&mut self) {
        if let Some(held) = self.mask.as_mut().map(Masker::finish) {
            self.write_output(&held);
        }
    }

    fn write_output(&mut self, bytes: &[u8]) {
        let room = self.log_bytes_max.saturating_sub(self.output_bytes);
        self.output_bytes += bytes.len() as u64;
        let kept = &bytes[..bytes.len().min(room as usize)];
        if kept.len() < bytes.len() && !self.truncated {
            self.truncated = true;
        }
        self.write_raw(kept);
    }

    /// Appends a line of weft's own, outside the output limit.
    fn note(&mut self, message: &str) {
        self.flush_masked();
        self.write_raw(format!("[weft] {message}\n").as_bytes());
    }

    fn write_raw(&mut self, bytes: &[u8]) {
        if self.broken || bytes.is_empty() {
            return;
        }
        // Unbuffered, so that a reader tailing the log (the UI's live tail) sees output as the
        // task writes it.
        match self.open().and_then(|file| file.write_all(bytes)) {
            Ok(()) => self.written_bytes += bytes.len() as u64,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    path = %self.path.display(),
                    "cannot write attempt log; output is dropped"
                );
                // The attempt is reported with a truncated log (its row says so); the counter
                // lets an alert see a full disk before a person opens a log.
                metrics::counter!("weft_task_log_write_errors_total").increment(1);
                self.broken = true;
            }
        }
    }

    /// Adds the truncation line if needed and flushes. Returns (bytes in the file, truncated).
    fn finish(mut self) -> (u64, bool) {
        self.flush_masked();
        if self.truncated {
            let message = format!(
                "\n[weft] log truncated at {} bytes ({} bytes of output dropped)\n",
                self.log_bytes_max,
                self.output_bytes - self.log_bytes_max
            );
            self.write_raw(message.as_bytes());
        }
        (self.written_bytes, self.truncated || self.broken)
    }
}

/// Replaces whole occurrences of secret values in a stream of output by `***`, also when a
/// value is split across two reads: the end of a read that may be the start of a value is
/// held back until the next read (or the end of the output); the rest is written at once.
struct Masker {
    /// The values, longest first (a value containing another is masked whole).
    values: Vec<Vec<u8>>,
    /// Which bytes start a value: most positions are passed over with one lookup.
    first_bytes: [bool; 256],
    /// Bytes of the longest value: only a rest shorter than this may be an unfinished value.
    longest: usize,
    held: Vec<u8>,
}

impl Masker {
    /// A masker of the non-empty `values`; `None` when there is none.
    fn new(values: &[String]) -> Option<Masker> {
        let mut values: Vec<Vec<u8>> = values
            .iter()
            .filter(|value| !value.is_empty())
            .map(|value| value.as_bytes().to_vec())
            .collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by_key(|value| std::cmp::Reverse(value.len()));
        values.dedup();
        let mut first_bytes = [false; 256];
        for value in &values {
            first_bytes[value[0] as usize] = true;
        }
        Some(Masker {
            longest: values[0].len(),
            values,
            first_bytes,
            held: Vec::new(),
        })
    }

    /// The output that can be written now, masked.
    fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut input = std::mem::take(&mut self.held);
        input.extend_from_slice(bytes);
        let (masked, rest) = self.mask(&input, false);
        self.held = input[rest..].to_vec();
        masked
    }

    /// What is held back, masked: the output ended.
    fn finish(&mut self) -> Vec<u8> {
        let input = std::mem::take(&mut self.held);
        self.mask(&input, true).0
    }

    /// Masks `input` up to the first place where a value may start but is not complete yet
    /// (all of it at the end); returns the masked bytes and where the unread rest starts.
    fn mask(&self, input: &[u8], at_end: bool) -> (Vec<u8>, usize) {
        let mut masked = Vec::with_capacity(input.len());
        let mut at = 0;
        while at < input.len() {
            let byte = input[at];
            if self.first_bytes[byte as usize] {
                let rest = &input[at..];
                let incomplete =
                    |value: &Vec<u8>| value.len() > rest.len() && value.starts_with(rest);
                if !at_end && rest.len() < self.longest && self.values.iter().any(incomplete) {
                    break;
                }
                if let Some(value) = self.values.iter().find(|value| rest.starts_with(value)) {
                    masked.extend_from_slice(weft_storage::vault::MASK.as_bytes());
                    at += value.len();
                    continue;
                }
            }
            masked.push(byte);
            at += 1;
        }
        (masked, at)
    }
}

/// The last line of the output (stdout and stderr share one pipe), as Airflow's BashOperator
/// pushes it to XCom. Bounded: holds at
/// most `XCOM_BYTES_MAX` bytes of each of two lines whatever the output's size.
#[derive(Default)]
struct LastLine {
    current: Vec<u8>,
    previous: Vec<u8>,
}

impl LastLine {
    fn push(&mut self, bytes: &[u8]) {
        let mut pieces = bytes.split(|b| *b == b'\n').peekable();
        while let Some(piece) = pieces.next() {
            let room = XCOM_BYTES_MAX.saturating_sub(self.current.len());
            self.current
                .extend_from_slice(&piece[..piece.len().min(room)]);
            if pieces.peek().is_some() {
                // A newline ended this line: swap buffers instead of allocating per line.
                std::mem::swap(&mut self.current, &mut self.previous);
                self.current.clear();
            }
        }
    }

    /// Airflow's rule: the last line read, trailing whitespace stripped; a final newline does
    /// not start a new line. Cut so the JSON string fits in `XCOM_BYTES_MAX`.
    fn result(&self) -> String {
        let line = if self.current.is_empty() {
            &self.previous
        } else {
            &self.current
        };
        let text = String::from_utf8_lossy(line).trim_end().to_string();
        let json_len = |t: &str| {
            serde_json::to_string(t)
                .map(|j| j.len())
                .unwrap_or(usize::MAX)
        };
        if json_len(&text) <= XCOM_BYTES_MAX {
            return text;
        }
        // Escaping can grow a character up to six bytes: keep the longest prefix that fits.
        let mut json_bytes = 2; // the quotes
        let mut end = 0;
        for (index, character) in text.char_indices() {
            json_bytes += json_len(character.encode_utf8(&mut [0; 4])) - 2;
            if json_bytes > XCOM_BYTES_MAX {
                break;
            }
            end = index + character.len_utf8();
        }
        text[..end].to_string()
    }
}

/// The inode of a pipe, to find processes that still hold it. `fstat` on the descriptor: a
/// `stat` of `/proc/self/fd/N` walks procfs and showed in profiles of short tasks.
#[allow(unsafe_code)]
fn pipe_inode(pipe: &impl std::os::fd::AsRawFd) -> Option<u64> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fstat` writes a `stat` for a descriptor we hold open, or fails without writing.
    let status = unsafe { libc::fstat(pipe.as_raw_fd(), stat.as_mut_ptr()) };
    // SAFETY: initialised by the successful call above.
    (status == 0).then(|| unsafe { stat.assume_init() }.st_ino)
}

/// Everything that belongs to one attempt: its process group, its output pipes (held by any
/// process it started, even one that escaped the group with setsid) and its cgroup.
#[derive(Debug, Clone)]
struct ProcessTree {
    process_group: i32,
    pipe_inodes: Vec<u64>,
    cgroup: Option<AttemptCgroup>,
}

impl ProcessTree {
    /// Kills the group, the cgroup, and every process found in /proc that is in the group,
    /// holds an output pipe, or descends from one of those. Blocking (reads /proc).
    fn kill_everything(&self) {
        send_sigkill(-self.process_group);
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all();
        }
        for _round in 0..TREE_KILL_ROUNDS_MAX {
            let pids = self.find_members();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                send_sigkill(pid);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Live (not zombie) processes of the attempt, by scanning /proc.
    fn find_members(&self) -> Vec<i32> {
        let own_pid = std::process::id() as i32;
        let pipe_links: Vec<String> = self
            .pipe_inodes
            .iter()
            .map(|ino| format!("pipe:[{ino}]"))
            .collect();
        let mut processes = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if pid == own_pid {
                continue;
            }
            let Some(stat) = ProcStat::read(pid) else {
                continue;
            };
            if stat.state == 'Z' {
                continue;
            }
            let member = stat.process_group == self.process_group || holds_any(pid, &pipe_links);
            processes.push((pid, stat.parent, member));
        }
        // Descendants of members are members: a child that closed its stdout still belongs.
        let mut members: Vec<i32> = processes
            .iter()
            .filter(|(_, _, m)| *m)
            .map(|(pid, _, _)| *pid)
            .collect();
        loop {
            let before = members.len();
            for (pid, parent, _) in &processes {
                if members.contains(parent) && !members.contains(pid) {
                    members.push(*pid);
                }
            }
            if members.len() == before {
                return members;
            }
        }
    }
}

/// Fields of /proc/<pid>/stat that decide membership.
pub(crate) struct ProcStat {
    pub(crate) state: char,
    parent: i32,
    process_group: i32,
}

impl ProcStat {
    pub(crate) fn read(pid: i32) -> Option<ProcStat> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may contain spaces and parentheses: fields start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let mut fields = rest.split(' ');
        let state = fields.next()?.chars().next()?;
        let parent = fields.next()?.parse().ok()?;
        let process_group = fields.next()?.parse().ok()?;
        Some(ProcStat {
            state,
            parent,
            process_group,
        })
    }
}

fn holds_any(pid: i32, pipe_links: &[String]) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|target| {
                pipe_links
                    .iter()
                    .any(|link| target.as_os_str() == link.as_str())
            })
            .unwrap_or(false)
    })
}

/// Owns the attempt's processes: dropping it (the attempt's future was cancelled) kills them.
struct TreeGuard(Option<ProcessTree>);

impl TreeGuard {
    /// Kills the whole tree (timeout).
    async fn kill_tree(&self) {
        if let Some(tree) = self.0.clone() {
            let _ = tokio::task::spawn_blocking(move || tree.kill_everything()).await;
        }
    }

    /// Normal end: kills stragglers left in the group or cgroup (as Airflow reaps the process
    /// group when a task ends), reads the cgroup's events, removes the cgroup.
    async fn release(&mut self) -> CgroupEvents {
        let Some(tree) = self.0.take() else {
            return CgroupEvents::default();
        };
        send_sigkill(-tree.process_group);
        let Some(cgroup) = tree.cgroup else {
            return CgroupEvents::default();
        };
        // A tracking cgroup left empty is removed here: a round trip through the blocking
        // pool would cost more than the removal.
        if cgroup.is_tracking_only() && cgroup.remove_if_empty() {
            return CgroupEvents::default();
        }
        tokio::task::spawn_blocking(move || {
            let events = cgroup.events();
            cgroup.remove();
            events
        })
        .await
        .unwrap_or_default()
    }
}

impl Drop for TreeGuard {
    fn drop(&mut self) {
        let Some(tree) = self.0.take() else { return };
        // Kill the group at once; the /proc scan and cgroup removal may take a while, so they
        // run on their own thread instead of blocking whoever dropped the future.
        send_sigkill(-tree.process_group);
        let cleanup = move || {
            tree.kill_everything();
            if let Some(cgroup) = &tree.cgroup {
                cgroup.remove();
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("weft-attempt-kill".into())
            .spawn(cleanup)
        {
            tracing::warn!(error = %e, "cannot start the thread that cleans up a cancelled attempt");
        }
    }
}

/// Sends SIGKILL to `pid` (a process group when negative). Errors (already gone) are ignored:
/// every caller is cleaning up and re-checks what is left.
pub(crate) fn send_sigkill(pid: i32) {
    // pid 0 and -1 would signal our own group or every process we may signal.
    if pid == 0 || pid == -1 {
        return;
    }
    kill(pid, libc::SIGKILL);
}

#[allow(unsafe_code)]
fn kill(pid: i32, signal: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; pid 0 and -1 are
    // excluded by the caller.
    unsafe {
        libc::kill(pid, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_line_of(chunks: &[&str]) -> String {
        let mut last_line = LastLine::default();
        for chunk in chunks {
            last_line.push(chunk.as_bytes());
        }
        last_line.result()
    }

    #[test]
    fn last_line_follows_airflow() {
        assert_eq!(last_line_of(&["a\nb\n"]), "b");
        assert_eq!(last_line_of(&["a\nb"]), "b");
        assert_eq!(last_line_of(&["a\n", "\n"]), "");
        assert_eq!(last_line_of(&["hel", "lo  \r\n"]), "hello");
        assert_eq!(last_line_of(&[]), "");
    }

    fn masked(values: &[&str], chunks: &[&str]) -> String {
        let values: Vec<String> = values.iter().map(|value| value.to_string()).collect();
        let mut masker = Masker::new(&values).expect("values to mask");
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(masker.push(chunk.as_bytes()));
        }
        out.extend(masker.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn masking_replaces_whole_values_also_across_reads() {
        assert!(Masker::new(&[]).is_none());
        assert!(Masker::new(&[String::new()]).is_none());
        assert_eq!(masked(&["hunter2"], &["pw=hunter2\n"]), "pw=***\n");
        // Split across two reads, and across three.
        assert_eq!(
            masked(&["hunter2"], &["pw=hun", "ter2 ok\n"]),
            "pw=*** ok\n"
        );
        assert_eq!(masked(&["hunter2"], &["h", "unt", "er2"]), "***");
        // The longest value wins where values overlap; a near miss is kept.
        assert_eq!(
            masked(&["abc", "abcdef"], &["xabcdefy abc abcde"]),
            "x***y *** ***de"
        );
        assert_eq!(masked(&["hunter2"], &["hunter", "3"]), "hunter3");
        // Nothing is held back beyond what could still become a value.
        let mut masker = Masker::new(&["secret".to_string()]).unwrap();
        assert_eq!(masker.push(b"one line\nsec"), b"one line\n");
        assert_eq!(masker.push(b"ret\n"), b"***\n");
        assert!(masker.finish().is_empty());
    }

    #[test]
    fn last_line_fits_the_xcom_limit() {
        let long = "\"".repeat(XCOM_BYTES_MAX * 2);
        let result = last_line_of(&[&long]);
        assert!(serde_json::to_string(&result).unwrap().len() <= XCOM_BYTES_MAX);
        assert!(!result.is_empty());
    }

    #[test]
    fn shell_command_comes_from_shell_kind_only() {
        let kind = TaskKind::Shell {
            command: "echo hi".into(),
            env: BTreeMap::from([("A".into(), "1".into())]),
            append_env: true,
            cwd: Some("/tmp".into()),
            skip_exit_code: Some(99),
            templated: false,
        };
        let command = ShellCommand::from_kind(&kind).unwrap();
        assert_eq!(command.command, "echo hi");
        assert_eq!(command.cwd, Some(PathBuf::from("/tmp")));
        assert!(command.append_env);
        assert_eq!(ShellCommand::from_kind(&TaskKind::Empty), None);
    }

    #[test]
    fn signals_are_named() {
        assert_eq!(describe_signal(libc::SIGKILL), "signal 9: SIGKILL");
        assert_eq!(describe_signal(64), "signal 64");
    }
}

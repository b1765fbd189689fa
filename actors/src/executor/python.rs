//! The Python executor: a pool of warm `python -m weft.runner` processes that run Python
//! callables from DAG files and render templated fields, one request at a time per process.
//!
//! The runner keeps DAG modules loaded between tasks, so a Python task costs a JSON round trip
//! instead of an interpreter start and a DAG import. Each process leads its own process group:
//! a timeout kills the whole group (the task's children too) and a fresh process replaces it.
//! The protocol is described in `sdk/python/weft/runner.py`.
//!
//! While it serves a request, a runner may call back: ask for a variable or a connection, or
//! set or delete a variable, which only the node can do (a runner may run as another user in
//! a sandbox, without access to the node's store). [`RunnerProcess::request`] answers such
//! calls from the node's [`Vault`] until the response arrives.

use super::{AttemptLimits, AttemptReport, LogTarget, TaskContext};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use weft_core::dag_run::AttemptOutcome;
use weft_storage::vault::{self, Vault};
use weft_storage::{AuditRow, Store, Write};

/// The runner protocol version this executor speaks (the runner's hello line must match).
pub const PROTOCOL_VERSION: u64 = 2;
/// Largest response line accepted from a runner: a result (at most 1 MiB in the runner) plus
/// a failure reason and framing.
pub const RESPONSE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Requests allowed to wait for a free runner before new ones are turned away.
pub const QUEUE_MAX_DEFAULT: usize = 1024;
/// How long a fresh runner may take to say hello (interpreter start and `import weft`).
pub const HELLO_TIMEOUT_MS: u64 = 30_000;
/// How long rendering templated fields may take.
pub const RENDER_TIMEOUT_MS: u64 = 30_000;
/// How long a runner asked to shut down may take to exit before it is killed.
pub const SHUTDOWN_GRACE_MS: u64 = 2_000;
/// Lines of a runner's own stderr kept to explain why it died.
pub const STDERR_LINES_KEPT: usize = 20;
/// Calls one request may make (variables and connections read or written); more are answered
/// with an error. A task fetching a few secrets makes a few calls.
pub const CALLS_PER_REQUEST_MAX: usize = 1_000;
/// Secret values one rendering may ask to mask in the shell task's log; more are dropped.
pub const MASKS_MAX: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot start the python runner with `{python}`: {source}; set WEFT_PYTHON to a python \
         3.11+ interpreter"
    )]
    Spawn {
        python: String,
        source: std::io::Error,
    },
    #[error("python runner broke the protocol: {0}")]
    Protocol(String),
    #[error("python runner exited: {0}")]
    Exited(String),
    #[error("python runner did not answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error(
        "python runner queue is full ({queue_max} requests waiting); add runner processes or \
         raise queue_max"
    )]
    QueueFull { queue_max: usize },
    #[error("python runner pool is shut down")]
    ShutDown,
    #[error("{0}")]
    Render(String),
    #[error("cannot talk to the python runner: {0}")]
    Io(#[from] std::io::Error),
}

/// How to start runner processes and how many.
#[derive(Debug, Clone)]
pub struct PythonRunnerConfig {
    /// The interpreter (`WEFT_PYTHON`, default `python3`).
    pub python: String,
    /// Folder holding the `weft` package, prepended to `PYTHONPATH` (`WEFT_PYTHON_PATH`).
    pub python_path: PathBuf,
    /// Warm processes, at most.
    pub processes: usize,
    /// Requests allowed to wait for a process.
    pub queue_max: usize,
    /// The confinement of runner processes: the same user and namespaces as shell tasks. Each
    /// runner is confined once, at its start, and stays warm; resource limits are its own
    /// rlimits (a runner serves one attempt at a time).
    pub sandbox: Option<super::sandbox::SandboxSpec>,
}

impl PythonRunnerConfig {
    /// The configuration from `WEFT_PYTHON` and `WEFT_PYTHON_PATH`, one process per core.
    pub fn from_env() -> PythonRunnerConfig {
        let cores = std::thread::available_parallelism()
            .map(|count| count.get())
            .unwrap_or(1);
        PythonRunnerConfig {
            python: std::env::var("WEFT_PYTHON").unwrap_or_else(|_| "python3".to_string()),
            python_path: std::env::var_os("WEFT_PYTHON_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(default_python_path),
            processes: cores,
            queue_max: QUEUE_MAX_DEFAULT,
            sandbox: None,
        }
    }
}

/// What answers runners' calls: the node's vault, and the store its audit entries go to.
#[derive(Clone)]
pub struct NodeSecrets {
    pub vault: Arc<Vault>,
    /// Where a task's change of a variable is recorded (`Write::Audit`).
    pub audit: Arc<dyn Store>,
}

impl std::fmt::Debug for NodeSecrets {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NodeSecrets")
            .finish_non_exhaustive()
    }
}

/// Who is asking, for the calls of one request: the task (for the audit entry) and what
/// answers.
struct Caller<'a> {
    secrets: Option<&'a NodeSecrets>,
    /// `task:<dag_id>/<run_id>/<task_id>` (with `[map index]` for a mapped task).
    actor: String,
}

impl Caller<'_> {
    /// A request that makes no calls (ping, shutdown).
    fn nobody() -> Caller<'static> {
        Caller {
            secrets: None,
            actor: String::new(),
        }
    }

    fn of<'a>(secrets: Option<&'a NodeSecrets>, ctx: &TaskContext) -> Caller<'a> {
        let mut actor = format!("task:{}/{}/{}", ctx.dag_id, ctx.run_id, ctx.task_id);
        if ctx.map_index >= 0 {
            actor.push_str(&format!("[{}]", ctx.map_index));
        }
        Caller { secrets, actor }
    }

    /// The reply to one call line: its value, or why it is refused.
    async fn answer(&self, call: &Value) -> Result<Value, String> {
        let name = call
            .get("call")
            .and_then(Value::as_str)
            .ok_or("a call line has a string `call` member naming the call")?;
        let Some(secrets) = self.secrets else {
            return Err(format!(
                "this node answers no `{name}` call: the runner pool was started without \
                 access to the node's variables and connections"
            ));
        };
        let text = |field: &str| {
            call.get(field).and_then(Value::as_str).ok_or_else(|| {
                format!("call `{name}` needs a string `{field}`; see weft/runner.py")
            })
        };
        let vault = &secrets.vault;
        match name {
            "variable_get" => {
                let variable = vault
                    .variable(text("key")?)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(json!(variable))
            }
            "variable_set" => {
                let description = match call.get("description") {
                    None | Some(Value::Null) => "",
                    Some(_) => text("description")?,
                };
                let variable = vault::Variable {
                    key: text("key")?.to_string(),
                    value: text("value")?.to_string(),
                    description: description.to_string(),
                };
                let at = crate::clock::now();
                vault
                    .set_variable(&variable, at)
                    .await
                    .map_err(|e| e.to_string())?;
                self.audit(secrets, "variable.set", &variable.key, at)
                    .await?;
                Ok(json!({}))
            }
            "variable_delete" => {
                let key = text("key")?;
                let deleted = vault
                    .delete_variable(key)
                    .await
                    .map_err(|e| e.to_string())?;
                self.audit(secrets, "variable.delete", key, crate::clock::now())
                    .await?;
                Ok(json!({ "deleted": deleted }))
            }
            "connection_get" => {
                let connection = vault
                    .connection(text("conn_id")?)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(json!(connection))
            }
            other => Err(format!(
                "unknown call `{other}`; the node answers variable_get, variable_set, \
                 variable_delete and connection_get"
            )),
        }
    }

    /// Records a task's change of a variable: who, what and which key, never the value.
    async fn audit(
        &self,
        secrets: &NodeSecrets,
        action: &str,
        key: &str,
        at: weft_core::Timestamp,
    ) -> Result<(), String> {
        let entry = AuditRow {
            id: 0,
            at,
            actor: self.actor.clone(),
            action: action.to_string(),
            target: key.to_string(),
            detail: json!({ "from": "python runner" }).to_string(),
        };
        secrets
            .audit
            .write(vec![Write::Audit(entry)])
            .await
            .map_err(|error| {
                format!(
                    "the change of variable `{key}` is made, but its audit entry could not be \
                     written: {error}"
                )
            })
    }
}

/// The SDK folder in this source tree, for development and tests.
pub fn default_python_path() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk/python"))
}

/// Sends SIGKILL to every process of the group led by `pgid`.
#[allow(unsafe_code)]
pub fn kill_process_group(pgid: u32) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of this process; a negative
    // pid addresses the process group, and the guard above never lets it be 0 or -1 (which
    // would signal our own group or every process).
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// `python -m weft.runner`, confined as `config.sandbox` says.
fn runner_command(config: &PythonRunnerConfig) -> Result<Command, super::sandbox::Error> {
    let runner: Vec<std::ffi::OsString> = vec![
        config.python.clone().into(),
        "-m".into(),
        "weft.runner".into(),
    ];
    confined_python(runner, config.sandbox.as_ref())
}

/// A command for a Python process that runs DAG authors' code (a task runner, the DAG
/// parser), confined as `sandbox` says: in bubblewrap for the full sandbox, as the task user,
/// with the spec's limits as rlimits (such a process outlives any one attempt, so no attempt
/// cgroup), killed with the node, marked as the node's. Without a sandbox it still dies with
/// the node and carries the node's mark.
pub fn confined_python(
    argv: Vec<std::ffi::OsString>,
    sandbox: Option<&super::sandbox::SandboxSpec>,
) -> Result<Command, super::sandbox::Error> {
    use super::sandbox;
    let Some(spec) = sandbox else {
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        die_with_node(&mut command, false);
        mark(&mut command);
        return Ok(command);
    };
    let spec = sandbox::SandboxSpec {
        resource_control: sandbox::ResourceControl::Rlimits,
        ..spec.clone()
    };
    let prepared = sandbox::prepare(
        &spec,
        sandbox::support(),
        sandbox::SandboxedCommand {
            argv,
            cwd: None,
            timeout_ms: None,
        },
    )?;
    let mut command = Command::new(&prepared.argv[0]);
    // The node's directory may not be the task user's to enter; /tmp is private in the full
    // sandbox.
    command.args(&prepared.argv[1..]).current_dir("/tmp");
    if let Some((uid, gid)) = prepared.confinement.identity {
        // std drops supplementary groups when root changes user.
        command.uid(uid).gid(gid);
    }
    let rlimits = prepared.confinement.rlimits.clone();
    set_rlimits(&mut command, rlimits);
    die_with_node(&mut command, true);
    mark(&mut command);
    Ok(command)
}

fn mark(command: &mut Command) {
    if let Some(marker) = super::lineage::marker() {
        command.env(super::lineage::MARKER_VARIABLE, marker);
    }
}

/// The child sets its rlimits before it execs.
#[allow(unsafe_code)]
fn set_rlimits(command: &mut Command, rlimits: Vec<(u32, u64)>) {
    if rlimits.is_empty() {
        return;
    }
    // SAFETY: the closure runs in the forked child before exec and makes only `setrlimit`
    // calls on values prepared before the fork (no allocation, no lock).
    unsafe {
        command.pre_exec(move || {
            for (resource, limit) in &rlimits {
                let limit = libc::rlimit {
                    rlim_cur: *limit,
                    rlim_max: *limit,
                };
                if libc::setrlimit(*resource as libc::__rlimit_resource_t, &limit) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The runner dies with the node (`PR_SET_PDEATHSIG`, set after std changed the user, which
/// would clear it) and, when confined, can gain no privilege by exec.
#[allow(unsafe_code)]
fn die_with_node(command: &mut Command, no_new_privs: bool) {
    let node = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and makes only `prctl`,
    // `getppid` and `_exit` calls on integers.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) == -1
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != node {
                libc::_exit(137);
            }
            if no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The runner's descriptor of the socket its log files come over (see `send_log_file`).
const LOG_SOCKET_FD: i32 = 3;

/// Puts `socket` at `LOG_SOCKET_FD` in the child.
#[allow(unsafe_code)]
fn pass_log_socket(command: &mut Command, socket: &std::os::unix::net::UnixStream) {
    use std::os::fd::AsRawFd;
    let raw = socket.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and makes only `dup2` and
    // `fcntl` calls on a descriptor open in the child (inherited with the fork).
    unsafe {
        command.pre_exec(move || {
            let result = if raw == LOG_SOCKET_FD {
                // dup2 onto itself would keep close-on-exec: clear it instead.
                libc::fcntl(raw, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, LOG_SOCKET_FD)
            };
            if result == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sends the open descriptor `fd` over `socket` (`SCM_RIGHTS`, with one byte of payload).
#[allow(unsafe_code)]
fn send_fd(
    socket: &std::os::unix::net::UnixStream,
    fd: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let payload = [0_u8; 1];
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // Room for one descriptor's control message, aligned as `cmsghdr` wants.
    let mut control = [0_u64; 4];
    // SAFETY: `msghdr` is plain data; every pointer in it (payload, control buffer) is valid
    // for the call, the control buffer is large and aligned enough for the one message
    // `CMSG_FIRSTHDR` returns (checked non-null), and `sendmsg` only reads them.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as usize;
        debug_assert!(space <= std::mem::size_of_val(&control));
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        message.msg_controllen = space as _;
        let header = libc::CMSG_FIRSTHDR(&message);
        if header.is_null() {
            return Err(std::io::Error::other("no room for a control message"));
        }
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(header) as *mut libc::c_int, fd.as_raw_fd());
        if libc::sendmsg(socket.as_raw_fd(), &message, libc::MSG_NOSIGNAL) == -1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// One runner process and its pipes.
struct RunnerProcess {
    child: Child,
    pid: u32,
    /// The node's end of the socket each attempt's log file is handed over on: the runner
    /// writes the log through a descriptor the node opened, so a runner confined to a user
    /// that cannot reach the node's home still writes where every reader looks.
    log_socket: std::os::unix::net::UnixStream,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_request_id: u64,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl RunnerProcess {
    async fn spawn(config: &PythonRunnerConfig) -> Result<RunnerProcess, Error> {
        let spawn_error = |source| Error::Spawn {
            python: config.python.clone(),
            source,
        };
        let mut python_path = config.python_path.clone().into_os_string();
        if let Some(existing) = std::env::var_os("PYTHONPATH") {
            python_path.push(":");
            python_path.push(existing);
        }
        let mut command = runner_command(config).map_err(|e| Error::Spawn {
            python: config.python.clone(),
            source: std::io::Error::other(e),
        })?;
        let (log_socket, runner_log_socket) =
            std::os::unix::net::UnixStream::pair().map_err(spawn_error)?;
        pass_log_socket(&mut command, &runner_log_socket);
        command
            .env("PYTHONPATH", python_path)
            .env("WEFT_LOG_SOCKET_FD", LOG_SOCKET_FD.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so a timeout can kill the task's children too.
            .process_group(0);
        let mut child = command.spawn().map_err(spawn_error)?;
        drop(runner_log_socket);
        let pid = child
            .id()
            .ok_or_else(|| Error::Exited("exited at start".to_string()))?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        tokio::spawn(forward_stderr(stderr, pid, stderr_tail.clone()));
        let mut process = RunnerProcess {
            child,
            pid,
            log_socket,
            stdin,
            stdout,
            next_request_id: 1,
            stderr_tail,
        };
        let hello =
            tokio::time::timeout(Duration::from_millis(HELLO_TIMEOUT_MS), process.read_line())
                .await
                .map_err(|_| Error::Timeout {
                    timeout_ms: HELLO_TIMEOUT_MS,
                })??;
        let protocol = hello.get("protocol").and_then(Value::as_u64);
        if hello.get("hello").and_then(Value::as_str) != Some("weft.runner")
            || protocol != Some(PROTOCOL_VERSION)
        {
            process.kill().await;
            return Err(Error::Protocol(format!(
                "expected a hello for protocol {PROTOCOL_VERSION}, got {hello}; install the \
                 weft SDK that matches this build"
            )));
        }
        metrics::counter!("weft_python_runner_spawned_total").increment(1);
        Ok(process)
    }

    /// Opens (creates) the attempt's log file and hands it to the runner for the next `run`.
    fn send_log_file(&self, path: &Path) -> std::io::Result<()> {
        use std::os::fd::AsFd;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        send_fd(&self.log_socket, file.as_fd())
    }

    /// Sends one request and reads its response, answering the runner's calls meanwhile (at
    /// most [`CALLS_PER_REQUEST_MAX`]), waiting at most `timeout` for the whole exchange.
    async fn request(
        &mut self,
        mut request: Value,
        timeout: Option<Duration>,
        caller: &Caller<'_>,
    ) -> Result<Value, Error> {
        let id = self.next_request_id;
        self.next_request_id += 1;
        request["id"] = json!(id);
        let mut line = serde_json::to_vec(&request).expect("a JSON value always serializes");
        line.push(b'\n');
        let exchange = async {
            let written = match self.stdin.write_all(&line).await {
                Ok(()) => self.stdin.flush().await,
                Err(error) => Err(error),
            };
            if let Err(error) = written {
                return Err(self.write_error(error).await);
            }
            let mut calls = 0_usize;
            loop {
                let line = self.read_line().await?;
                // A call has no id; the response (or a protocol breach) ends the request.
                if line.get("call").is_none() || line.get("id").is_some() {
                    return Ok(line);
                }
                calls += 1;
                let reply = if calls > CALLS_PER_REQUEST_MAX {
                    Err(format!(
                        "more than {CALLS_PER_REQUEST_MAX} calls in one task attempt; fetch \
                         what the task needs once and keep it"
                    ))
                } else {
                    caller.answer(&line).await
                };
                metrics::counter!("weft_python_runner_calls_total").increment(1);
                let reply = match reply {
                    Ok(value) => json!({ "reply": value }),
                    Err(error) => json!({ "reply_error": error }),
                };
                let mut reply = serde_json::to_vec(&reply).expect("a JSON value serializes");
                reply.push(b'\n');
                let written = match self.stdin.write_all(&reply).await {
                    Ok(()) => self.stdin.flush().await,
                    Err(error) => Err(error),
                };
                if let Err(error) = written {
                    return Err(self.write_error(error).await);
                }
            }
        };
        let response = match timeout {
            Some(limit) => {
                tokio::time::timeout(limit, exchange)
                    .await
                    .map_err(|_| Error::Timeout {
                        timeout_ms: limit.as_millis() as u64,
                    })??
            }
            None => exchange.await?,
        };
        if response.get("id").and_then(Value::as_u64) != Some(id) {
            return Err(Error::Protocol(format!(
                "response {response} does not answer request {id}"
            )));
        }
        Ok(response)
    }

    /// A failed write to the runner: a runner that died mid-task shows up first as a broken
    /// pipe.
    async fn write_error(&mut self, error: std::io::Error) -> Error {
        match error.kind() {
            std::io::ErrorKind::BrokenPipe => Error::Exited(self.exit_description().await),
            _ => error.into(),
        }
    }

    async fn read_line(&mut self) -> Result<Value, Error> {
        let mut line = Vec::new();
        let read = (&mut self.stdout)
            .take(RESPONSE_BYTES_MAX)
            .read_until(b'\n', &mut line)
            .await;
        let read = match read {
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => 0,
            Err(error) => return Err(error.into()),
        };
        if read == 0 {
            return Err(Error::Exited(self.exit_description().await));
        }
        if line.last() != Some(&b'\n') {
            return Err(Error::Protocol(format!(
                "response line longer than {RESPONSE_BYTES_MAX} bytes or cut short"
            )));
        }
        serde_json::from_slice(&line).map_err(|error| {
            let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
            Error::Protocol(format!("response line is not JSON ({error}): {shown:?}"))
        })
    }

    /// Why the runner went away: its exit status and the end of its stderr.
    async fn exit_description(&mut self) -> String {
        let status = tokio::time::timeout(Duration::from_millis(500), self.child.wait()).await;
        // Give the stderr forwarder a moment to collect the last words.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let status = match status {
            Ok(Ok(status)) => status.to_string(),
            _ => "still running".to_string(),
        };
        let tail = self.stderr_tail();
        if tail.is_empty() {
            format!("runner process {} ended ({status})", self.pid)
        } else {
            format!(
                "runner process {} ended ({status}); its stderr ended with:\n{tail}",
                self.pid
            )
        }
    }

    fn stderr_tail(&self) -> String {
        let tail = self.stderr_tail.lock().expect("stderr tail lock");
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    async fn kill(&mut self) {
        kill_process_group(self.pid);
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Asks the runner to exit, and kills it if it does not in time.
    async fn shut_down(mut self) {
        let grace = Some(Duration::from_millis(SHUTDOWN_GRACE_MS));
        let nobody = Caller::nobody();
        if self
            .request(json!({"op": "shutdown"}), grace, &nobody)
            .await
            .is_ok()
        {
            let waited =
                tokio::time::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), self.child.wait());
            if waited.await.is_ok() {
                return;
            }
        }
        self.kill().await;
    }
}

async fn forward_stderr(
    stderr: tokio::process::ChildStderr,
    pid: u32,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(pid, "python runner: {line}");
        let mut tail = tail.lock().expect("stderr tail lock");
        if tail.len() == STDERR_LINES_KEPT {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// The response to a `run` request.
#[derive(Debug, Deserialize)]
struct RunResponse {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    outcome: Option<AttemptOutcome>,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    log_bytes: u64,
    #[serde(default)]
    log_truncated: bool,
}

struct PoolInner {
    config: PythonRunnerConfig,
    /// What answers runners' calls; `None`: every call is refused.
    secrets: Option<NodeSecrets>,
    idle: Mutex<Vec<RunnerProcess>>,
    /// One permit per process that may exist; a request holds one while it uses a process.
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    shut_down: AtomicBool,
}

/// N warm Python runner processes shared by every Python task of a worker. Cheap to clone.
#[derive(Clone)]
pub struct PythonRunnerPool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for PythonRunnerPool {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PythonRunnerPool")
            .field("config", &self.inner.config)
            .field("waiting", &self.inner.waiting.load(Ordering::Relaxed))
            .finish()
    }
}

/// A process lent to one request, with the permit that accounts for it.
struct Lease {
    process: RunnerProcess,
    permit: OwnedSemaphorePermit,
}

impl PythonRunnerPool {
    /// A pool that starts processes on first use (see [`PythonRunnerPool::warm_up`]), whose
    /// runners' calls for variables and connections are refused.
    pub fn new(config: PythonRunnerConfig) -> PythonRunnerPool {
        PythonRunnerPool::build(config, None)
    }

    /// A pool whose runners' calls are answered from `secrets`.
    pub fn with_secrets(config: PythonRunnerConfig, secrets: NodeSecrets) -> PythonRunnerPool {
        PythonRunnerPool::build(config, Some(secrets))
    }

    fn build(config: PythonRunnerConfig, secrets: Option<NodeSecrets>) -> PythonRunnerPool {
        assert!(
            config.processes > 0,
            "a python runner pool needs at least one process"
        );
        let slots = Arc::new(Semaphore::new(config.processes));
        let inner = PoolInner {
            config,
            secrets,
            idle: Mutex::new(Vec::new()),
            slots,
            waiting: AtomicUsize::new(0),
            shut_down: AtomicBool::new(false),
        };
        PythonRunnerPool {
            inner: Arc::new(inner),
        }
    }

    /// Starts every process now, so the first tasks do not pay for interpreter start.
    pub async fn warm_up(&self) -> Result<(), Error> {
        let mut leases = Vec::new();
        for _ in 0..self.inner.config.processes {
            leases.push(self.acquire().await?);
        }
        for lease in leases {
            self.release(lease);
        }
        Ok(())
    }

    /// Runs the Python callable of `ctx`'s task and reports how it went. Never fails: every
    /// problem (runner death, timeout, garbled answer) is an outcome.
    pub async fn run_callable(
        &self,
        ctx: &TaskContext,
        log: &LogTarget,
        limits: &AttemptLimits,
    ) -> AttemptReport {
        let Some(fileloc) = ctx.fileloc.as_deref() else {
            let reason = format!(
                "task `{}` of dag `{}` has no DAG file; only tasks from Python DAG files run in \
                 the python runner",
                ctx.task_id, ctx.dag_id
            );
            return report(AttemptOutcome::Failed {
                reason,
                retryable: false,
            });
        };
        let request = json!({
            "op": "run",
            "fileloc": fileloc,
            "dag_id": ctx.dag_id,
            "task_id": ctx.task_id,
            "map_index": ctx.map_index,
            "context": ctx,
            "log_path": log.path,
            "log_fd": true,
            "log_bytes_max": limits.log_bytes_max,
        });
        let mut lease = match self.acquire().await {
            Ok(lease) => lease,
            Err(error @ Error::Spawn { .. }) | Err(error @ Error::Exited(_)) => {
                return report(AttemptOutcome::Lost {
                    reason: error.to_string(),
                });
            }
            Err(error) => {
                let reason = error.to_string();
                return report(AttemptOutcome::Failed {
                    reason,
                    retryable: true,
                });
            }
        };
        if let Err(error) = lease.process.send_log_file(&log.path) {
            self.discard(lease).await;
            return report(AttemptOutcome::Failed {
                reason: format!("cannot open the log file {}: {error}", log.path.display()),
                retryable: true,
            });
        }
        let timeout = limits.timeout_ms.map(Duration::from_millis);
        let caller = Caller::of(self.inner.secrets.as_ref(), ctx);
        match lease.process.request(request, timeout, &caller).await {
            Ok(response) => {
                self.release(lease);
                run_report(response)
            }
            Err(error) => {
                let timed_out = matches!(error, Error::Timeout { .. });
                self.discard(lease).await;
                let log_bytes = std::fs::metadata(&log.path)
                    .map(|meta| meta.len())
                    .unwrap_or(0);
                let outcome = if timed_out {
                    metrics::counter!("weft_python_runner_timeouts_total").increment(1);
                    AttemptOutcome::TimedOut
                } else {
                    metrics::counter!("weft_python_runner_lost_total").increment(1);
                    AttemptOutcome::Lost {
                        reason: error.to_string(),
                    }
                };
                AttemptReport {
                    outcome,
                    result: None,
                    log_bytes: log_bytes.min(limits.log_bytes_max),
                    log_truncated: log_bytes > limits.log_bytes_max,
                    exit_code: None,
                }
            }
        }
    }

    /// Renders the strings inside `fields` (an object or any JSON value) as Jinja templates
    /// with `ctx`'s template context. The rendered fields are real (they are what runs); the
    /// secret values they used come with them, for the task's log to mask.
    pub async fn render(&self, ctx: &TaskContext, fields: Value) -> Result<Rendered, Error> {
        let request = json!({"op": "render", "context": ctx, "fields": fields});
        let mut lease = self.acquire().await?;
        let timeout = Some(Duration::from_millis(RENDER_TIMEOUT_MS));
        let caller = Caller::of(self.inner.secrets.as_ref(), ctx);
        let response = match lease.process.request(request, timeout, &caller).await {
            Ok(response) => response,
            Err(error) => {
                self.discard(lease).await;
                return Err(error);
            }
        };
        self.release(lease);
        if response.get("ok").and_then(Value::as_bool) == Some(true) {
            let masks = match response.get("mask") {
                Some(Value::Array(values)) => values
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|value| !value.is_empty())
                    .take(MASKS_MAX)
                    .map(str::to_string)
                    .collect(),
                _ => Vec::new(),
            };
            let fields = response.get("fields").cloned().unwrap_or(Value::Null);
            return Ok(Rendered { fields, masks });
        }
        let message = response
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("rendering failed");
        Err(Error::Render(message.to_string()))
    }

    /// Stops every process; requests after this fail with [`Error::ShutDown`].
    pub async fn shutdown(&self) {
        self.inner.shut_down.store(true, Ordering::SeqCst);
        self.inner.slots.close();
        let idle: Vec<RunnerProcess> =
            std::mem::take(&mut *self.inner.idle.lock().expect("idle lock"));
        futures::future::join_all(idle.into_iter().map(RunnerProcess::shut_down)).await;
    }

    async fn acquire(&self) -> Result<Lease, Error> {
        let inner = &self.inner;
        if inner.shut_down.load(Ordering::SeqCst) {
            return Err(Error::ShutDown);
        }
        let waiting = inner.waiting.fetch_add(1, Ordering::SeqCst);
        if waiting >= inner.config.queue_max {
            inner.waiting.fetch_sub(1, Ordering::SeqCst);
            metrics::counter!("weft_python_runner_queue_full_total").increment(1);
            return Err(Error::QueueFull {
                queue_max: inner.config.queue_max,
            });
        }
        let permit = inner.slots.clone().acquire_owned().await;
        inner.waiting.fetch_sub(1, Ordering::SeqCst);
        let permit = permit.map_err(|_| Error::ShutDown)?;
        let idle = inner.idle.lock().expect("idle lock").pop();
        let process = match idle {
            Some(process) => process,
            None => RunnerProcess::spawn(&inner.config).await?,
        };
        Ok(Lease { process, permit })
    }

    fn release(&self, lease: Lease) {
        if self.inner.shut_down.load(Ordering::SeqCst) {
            tokio::spawn(lease.process.shut_down());
            return;
        }
        self.inner
            .idle
            .lock()
            .expect("idle lock")
            .push(lease.process);
        drop(lease.permit);
    }

    /// Kills a process that can no longer be trusted and starts its replacement in the
    /// background; the replacement holds the permit until it is ready.
    async fn discard(&self, lease: Lease) {
        let Lease {
            mut process,
            permit,
        } = lease;
        process.kill().await;
        if self.inner.shut_down.load(Ordering::SeqCst) {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            match RunnerProcess::spawn(&pool.inner.config).await {
                Ok(fresh) => pool.release(Lease {
                    process: fresh,
                    permit,
                }),
                Err(error) => tracing::warn!("cannot replace a python runner: {error}"),
            }
        });
    }
}

/// Templated fields rendered by a runner.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The fields, rendered: what runs.
    pub fields: Value,
    /// Secret values the templates used, to be written as `***` in the task's log.
    pub masks: Vec<String>,
}

fn report(outcome: AttemptOutcome) -> AttemptReport {
    AttemptReport {
        outcome,
        result: None,
        log_bytes: 0,
        log_truncated: false,
        exit_code: None,
    }
}

fn run_report(response: Value) -> AttemptReport {
    let parsed: RunResponse = match serde_json::from_value(response.clone()) {
        Ok(parsed) => parsed,
        Err(error) => {
            let reason =
                format!("python runner sent an unreadable run response ({error}): {response}");
            return report(AttemptOutcome::Lost { reason });
        }
    };
    match (parsed.ok, parsed.outcome) {
        (true, Some(outcome)) => AttemptReport {
            outcome,
            result: parsed.result.filter(|value| !value.is_null()),
            log_bytes: parsed.log_bytes,
            log_truncated: parsed.log_truncated,
            exit_code: None,
        },
        _ => {
            let error = parsed
                .error
                .unwrap_or_else(|| "no outcome in the response".to_string());
            let reason = format!("python runner refused the task: {error}");
            report(AttemptOutcome::Failed {
                reason,
                retryable: true,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use weft_core::ids::TaskInstanceKey;

    const DAG_FILE: &str = r#"
import os, subprocess, sys, time
from weft import DAG, task, TaskSkipException

with DAG("pool_test"):
    @task
    def source():
        return 41

    @task
    def add(x):
        print("adding", x)
        return x + 1

    add(source())

    @task
    def noop():
        pass

    @task
    def noisy():
        print("x" * 5000)
        return "done"

    @task
    def sleepy():
        child = subprocess.Popen(["sleep", "60"])
        print("child", child.pid, flush=True)
        time.sleep(60)

    @task
    def die():
        os._exit(3)

    @task
    def unserializable():
        return object()

    @task
    def skip():
        raise TaskSkipException("nothing to do")

    @task
    def fail():
        raise ValueError("bad input")

    @task
    def secrets():
        from airflow.sdk import BaseHook, Variable
        token = Variable.get("api_token")
        print("token is", token)
        Variable.set("written", "w-" + token, description="by a task")
        password = BaseHook.get_connection("db").password
        print("password is", password, flush=True)
        return {"deleted": Variable.delete("gone"), "again": Variable.delete("gone"),
                "missing": Variable.get("nope", default_var="fallback")}

    @task
    def bad_calls():
        from weft import secrets as node
        errors = []
        for name, arguments in (("no_such_call", {}), ("variable_get", {}),
                                ("variable_get", {"key": 7}), ("variable_set", {"key": ""})):
            try:
                node.call(name, **arguments)
            except node.CallError as error:
                errors.append(str(error))
        return errors

    @task
    def greedy():
        from weft import secrets as node
        calls = 0
        try:
            while True:
                node.call("variable_get", key="api_token")
                calls += 1
        except node.CallError as error:
            return [calls, str(error)]

    for make in (noop, noisy, sleepy, die, unserializable, skip, fail, secrets, bad_calls,
                 greedy):
        make()
"#;

    struct Fixture {
        dir: tempfile::TempDir,
        dag_file: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let dag_file = dir.path().join("pool_test.py");
        std::fs::write(&dag_file, DAG_FILE).unwrap();
        Fixture { dir, dag_file }
    }

    fn config(processes: usize) -> PythonRunnerConfig {
        PythonRunnerConfig {
            processes,
            ..PythonRunnerConfig::from_env()
        }
    }

    fn context(fixture: &Fixture, task_id: &str, xcoms: BTreeMap<String, Value>) -> TaskContext {
        TaskContext {
            dag_id: "pool_test".to_string(),
            task_id: task_id.to_string(),
            run_id: "manual__2024-01-01".to_string(),
            map_index: -1,
            try_number: 1,
            max_tries: 1,
            run_type: "manual".to_string(),
            logical_date: "2024-01-01T00:00:00Z".to_string(),
            data_interval_start: "2024-01-01T00:00:00Z".to_string(),
            data_interval_end: "2024-01-02T00:00:00Z".to_string(),
            params: serde_json::Map::from_iter([("who".to_string(), json!("world"))]),
            conf: json!({}),
            xcoms,
            fileloc: Some(fixture.dag_file.display().to_string()),
            timezone: "UTC".to_string(),
        }
    }

    fn log_target(dir: &Path, task_id: &str) -> LogTarget {
        LogTarget {
            key: TaskInstanceKey::new("pool_test", "manual__2024-01-01", task_id, -1),
            try_number: 1,
            path: dir.join("logs").join(format!("{task_id}.log")),
        }
    }

    fn limits(timeout_ms: Option<u64>, log_bytes_max: u64) -> AttemptLimits {
        AttemptLimits {
            timeout_ms,
            log_bytes_max,
            sandbox: None,
        }
    }

    async fn run(pool: &PythonRunnerPool, fixture: &Fixture, task_id: &str) -> AttemptReport {
        let ctx = context(fixture, task_id, BTreeMap::new());
        let log = log_target(fixture.dir.path(), task_id);
        pool.run_callable(&ctx, &log, &limits(Some(20_000), 1 << 20))
            .await
    }

    fn success() -> AttemptOutcome {
        AttemptOutcome::Success {
            branch: None,
            proceed: None,
            output_len: None,
        }
    }

    #[tokio::test]
    async fn callable_gets_its_upstream_result_and_returns_its_own() {
        let fixture = fixture();
        let pool = PythonRunnerPool::new(config(1));
        let ctx = context(
            &fixture,
            "add",
            BTreeMap::from([("source".to_string(), json!(41))]),
        );
        let log = log_target(fixture.dir.path(), "add");
        let report = pool
            .run_callable(&ctx, &log, &limits(Some(20_000), 1 << 20))
            .await;
        assert_eq!(report.outcome, success());
        assert_eq!(report.result, Some(json!(42)));
        let text = std::fs::read_to_string(&log.path).unwrap();
        assert!(text.contains("adding 41"), "log was {text:?}");
        assert_eq!(report.log_bytes, text.len() as u64);
        assert!(!report.log_truncated);
        pool.shutdown().await;
    }

    #[tokio::test]
    async fn log_stops_at_its_byte_limit() {
        let fixture = fixture();
        let pool = PythonRunnerPool::new(config(1));
        let ctx = context(&fixture, "noisy", BTreeMap::new());
        let log = log_target(fixture.dir.path(), "noisy");
        let report = pool
            .run_callable(&ctx, &log, &limits(Some(20_000), 100))
            .await;
        assert_eq!(report.outcome, success());
        assert_eq!(report.result, Some(json!("done")));
        assert_eq!(report.log_bytes, 100);
        assert!(report.log_truncated);
        assert_eq!(std::fs::metadata(&log.path).unwrap().len(), 100);
        pool.shutdown().await;
    }

    #[tokio::test]
    async fn skip_fail_and_unserializable_results_are_outcomes() {
        let fixture = fixture();
        let pool = PythonRunnerPool::new(config(1));
        assert_eq!(
            run(&pool, &fixture, "skip").await.outcome,
            AttemptOutcome::Skipped
        );
        match run(&pool, &fixture, "fail").await.outcome {
            AttemptOutcome::Failed { reason, retryable } => {
                assert!(
                    reason.contains("ValueError: bad input"),
                    "reason was {reason}"
                );
                assert!(retryable);
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        match run(&pool, &fixture, "unserializable").await.outcome {
            AttemptOutcome::Failed { reason, .. } => {
                assert!(
                    reason.contains("not JSON-serializable"),
                    "reason was {reason}"
                )
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        match run(&pool, &fixture, "no_such_task").await.outcome {
            AttemptOutcome::Failed { reason, .. } => {
                assert!(
                    reason.contains("has no task `no_such_task`"),
                    "reason was {reason}"
                )
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        pool.shutdown().await;
    }

    fn process_is_gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // A zombie waits only for its reaper; it runs no more.
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    #[tokio::test]
    async fn timeout_kills_the_process_group_and_the_pool_recovers() {
        let fixture = fixture();
        let pool = PythonRunnerPool::new(config(1));
        let ctx = context(&fixture, "sleepy", BTreeMap::new());
        let log = log_target(fixture.dir.path(), "sleepy");
        let started = std::time::Instant::now();
        let report = pool
            .run_callable(&ctx, &log, &limits(Some(1_000), 1 << 20))
            .await;
        assert_eq!(report.outcome, AttemptOutcome::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(10));
        let text = std::fs::read_to_string(&log.path).unwrap();
        let child_pid: u32 = text
            .lines()
            .find_map(|line| line.strip_prefix("child "))
            .expect("the task printed its child's pid")
            .trim()
            .parse()
            .unwrap();
        let mut gone = false;
        for _ in 0..50 {
            gone = process_is_gone(child_pid);
            if gone {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            gone,
            "the task's child process {child_pid} outlived the timeout"
        );
        assert_eq!(run(&pool, &fixture, "noop").await.outcome, success());
        pool.shutdown().await;
    }

    #[tokio::test]
    async fn runner_death_is_lost_and_the_pool_recovers() {
        let fixture = fixture();
        let pool = PythonRunnerPool::new(config(1));
        match run(&pool, &fixture, "die").await.outcome {
            AttemptOutcome::Lost { reason } => {
                assert!(reason.contains("exit status: 3"), "reason was {reason}")
            }
            other => panic!("expected lost, got {other:?}"),
        }
        assert_eq!(run(&pool, &fixture, "noop").await.outcome, success());
        pool.shutdown().await;
    }

    #[tokio::test]
    async fn garbled_response_is_lost_with_the_line_shown() {
        let fixture = fixture();
        // A stand-in interpreter that greets properly, then answers with garbage.
        let fake_python = fixture.dir.path().join("fake-python");
        std::fs::write(
            &fake_python,
            "#!/bin/sh\necho '{\"hello\": \"weft.runner\", \"protocol\": 2}'\nread line\necho 'not json at all'\nsleep 5\n",
        )
        .unwrap();
        let status = std::process::Command::new("chmod")
            .arg("+x")
            .arg(&fake_python)
            .status();
        assert!(status.unwrap().success());
        let pool = PythonRunnerPool::new(PythonRunnerConfig {
            python: fake_python.display().to_string(),
            ..config(1)
        });
        match run(&pool, &fixture, "noop").await.outcome {
            AttemptOutcome::Lost { reason } => {
                assert!(reason.contains("not JSON"), "reason was {reason}");
                assert!(reason.contains("not json at all"), "reason was {reason}");
            }
            other => panic!("expected lost, got {other:?}"),
        }
        pool.shutdown().await;
    }

    #[tokio::test]
    async fn render_fills_templates_from_the_context() {
        let fixture = fixture();
        let pool = PythonRunnerPool::new(config(1));
        let ctx = context(&fixture, "noop", BTreeMap::new());
        let fields = json!({
            "bash_command": "echo {{ ds }} {{ params.who }} {{ task_instance_key_str }}",
            "env": {"RUN": "{{ run_id }}"},
        });
        let rendered = pool.render(&ctx, fields).await.unwrap();
        assert!(rendered.masks.is_empty(), "{:?}", rendered.masks);
        assert_eq!(
            rendered.fields,
            json!({
                "bash_command": "echo 2024-01-01 world pool_test__noop__20240101",
                "env": {"RUN": "manual__2024-01-01"},
            })
        );
        let error = pool
            .render(&ctx, json!("{{ no_such_thing }}"))
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("no_such_thing"),
            "error was {error}"
        );
        pool.shutdown().await;
        assert!(matches!(
            pool.render(&ctx, json!("x")).await,
            Err(Error::ShutDown)
        ));
    }

    #[tokio::test]
    async fn full_queue_turns_requests_away() {
        let fixture = fixture();
        let pool = PythonRunnerPool::new(PythonRunnerConfig {
            queue_max: 1,
            ..config(1)
        });
        let busy = {
            let (pool, ctx) = (pool.clone(), context(&fixture, "sleepy", BTreeMap::new()));
            let log = log_target(fixture.dir.path(), "sleepy");
            tokio::spawn(async move {
                pool.run_callable(&ctx, &log, &limits(Some(1_500), 1 << 20))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let waiting = {
            let (pool, ctx) = (pool.clone(), context(&fixture, "noop", BTreeMap::new()));
            let log = log_target(fixture.dir.path(), "noop");
            tokio::spawn(async move {
                pool.run_callable(&ctx, &log, &limits(Some(20_000), 1 << 20))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        match run(&pool, &fixture, "noop").await.outcome {
            AttemptOutcome::Failed {
                reason,
                retryable: true,
            } => {
                assert!(reason.contains("queue is full"), "reason was {reason}")
            }
            other => panic!("expected a queue-full failure, got {other:?}"),
        }
        assert_eq!(busy.await.unwrap().outcome, AttemptOutcome::TimedOut);
        assert_eq!(waiting.await.unwrap().outcome, success());
        pool.shutdown().await;
    }

    const TOKEN: &str = "tok-5ecr3t-value";
    const PASSWORD: &str = "pg-pa55word";

    fn at() -> weft_core::Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("a valid time")
    }

    /// A vault over a memory store holding a token, a connection and a variable to delete.
    async fn node_secrets() -> (NodeSecrets, Arc<weft_storage::memory::MemoryStore>) {
        let store = Arc::new(weft_storage::memory::MemoryStore::new());
        let vault = Arc::new(Vault::new(store.clone(), vault::Keyring::generate()));
        for (key, value) in [("api_token", TOKEN), ("gone", "soon")] {
            let variable = vault::Variable {
                key: key.into(),
                value: value.into(),
                description: String::new(),
            };
            vault.set_variable(&variable, at()).await.unwrap();
        }
        let uri = format!("postgres://etl:{PASSWORD}@db.example.com:5432/warehouse");
        let connection = vault::Connection::from_uri("db", &uri).unwrap();
        vault.set_connection(&connection, at()).await.unwrap();
        let secrets = NodeSecrets {
            vault,
            audit: store.clone(),
        };
        (secrets, store)
    }

    #[tokio::test]
    async fn calls_are_answered_from_the_vault_and_secrets_are_masked_in_the_log() {
        let fixture = fixture();
        let (secrets, store) = node_secrets().await;
        let vault = secrets.vault.clone();
        let pool = PythonRunnerPool::with_secrets(config(1), secrets);
        let report = run(&pool, &fixture, "secrets").await;
        let log = std::fs::read_to_string(log_target(fixture.dir.path(), "secrets").path).unwrap();
        assert_eq!(report.outcome, success(), "log: {log}");
        assert_eq!(
            report.result,
            Some(json!({"deleted": 1, "again": 0, "missing": "fallback"}))
        );
        assert!(log.contains("token is ***"), "log: {log}");
        assert!(log.contains("password is ***"), "log: {log}");
        assert!(
            !log.contains(TOKEN) && !log.contains(PASSWORD),
            "log: {log}"
        );
        let written = vault
            .variable("written")
            .await
            .unwrap()
            .expect("set by the task");
        assert_eq!(written.value, format!("w-{TOKEN}"));
        assert_eq!(written.description, "by a task");
        assert_eq!(vault.variable("gone").await.unwrap(), None);
        let audit = store.audit(10).await.unwrap();
        let actions: Vec<(&str, &str, &str)> = audit
            .iter()
            .map(|row| (row.actor.as_str(), row.action.as_str(), row.target.as_str()))
            .collect();
        let actor = "task:pool_test/manual__2024-01-01/secrets";
        for expected in [
            (actor, "variable.set", "written"),
            (actor, "variable.delete", "gone"),
        ] {
            assert!(actions.contains(&expected), "audit: {actions:?}");
        }
        assert!(
            audit.iter().all(|row| !row.detail.contains(TOKEN)),
            "{audit:?}"
        );
        pool.shutdown().await;
    }

    #[tokio::test]
    async fn malformed_calls_get_an_error_and_the_runner_lives_on() {
        let fixture = fixture();
        let (secrets, _store) = node_secrets().await;
        let pool = PythonRunnerPool::with_secrets(config(1), secrets);
        let report = run(&pool, &fixture, "bad_calls").await;
        assert!(
            matches!(report.outcome, AttemptOutcome::Success { .. }),
            "{report:?}"
        );
        let errors: Vec<String> = serde_json::from_value(report.result.unwrap()).unwrap();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            errors[0].contains("unknown call `no_such_call`"),
            "{errors:?}"
        );
        assert!(errors[1].contains("needs a string `key`"), "{errors:?}");
        assert!(errors[2].contains("needs a string `key`"), "{errors:?}");
        assert!(errors[3].contains("needs a string `value`"), "{errors:?}");
        assert_eq!(run(&pool, &fixture, "noop").await.outcome, success());
        pool.shutdown().await;

        // A pool started without the node's secrets refuses every call, saying why.
        let pool = PythonRunnerPool::new(config(1));
        match run(&pool, &fixture, "secrets").await.outcome {
            AttemptOutcome::Failed { reason, .. } => {
                assert!(
                    reason.contains("answers no `variable_get` call"),
                    "{reason}"
                )
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        pool.shutdown().await;
    }

    #[tokio::test]
    async fn calls_beyond_the_budget_are_refused() {
        let fixture = fixture();
        let (secrets, _store) = node_secrets().await;
        let pool = PythonRunnerPool::with_secrets(config(1), secrets);
        let report = run(&pool, &fixture, "greedy").await;
        assert!(
            matches!(report.outcome, AttemptOutcome::Success { .. }),
            "{report:?}"
        );
        let result = report.result.unwrap();
        assert_eq!(result[0], json!(CALLS_PER_REQUEST_MAX), "{result}");
        let message = result[1].as_str().unwrap();
        assert!(message.contains("more than 1000 calls"), "{message}");
        // The budget is per request: the next task starts afresh.
        let again = run(&pool, &fixture, "greedy").await.result.unwrap();
        assert_eq!(again[0], json!(CALLS_PER_REQUEST_MAX));
        pool.shutdown().await;
    }

    #[tokio::test]
    async fn render_reads_variables_and_connections_and_names_what_to_mask() {
        let fixture = fixture();
        let (secrets, _store) = node_secrets().await;
        let pool = PythonRunnerPool::with_secrets(config(1), secrets);
        let ctx = context(&fixture, "noop", BTreeMap::new());
        let fields = json!({
            "command": "curl -H 'token: {{ var.value.api_token }}' {{ conn.db.host }}",
            "env": {"PW": "{{ conn.db.password }}", "X": "{{ var.value.get('nope', 'dflt') }}"},
        });
        let rendered = pool.render(&ctx, fields).await.unwrap();
        assert_eq!(
            rendered.fields,
            json!({
                "command": format!("curl -H 'token: {TOKEN}' db.example.com"),
                "env": {"PW": PASSWORD, "X": "dflt"},
            })
        );
        let mut masks = rendered.masks.clone();
        masks.sort();
        assert_eq!(masks, vec![PASSWORD.to_string(), TOKEN.to_string()]);
        // A template without secrets asks nothing to be masked (the masks are per request).
        let plain = pool.render(&ctx, json!("{{ ds }}")).await.unwrap();
        assert_eq!(plain.fields, json!("2024-01-01"));
        assert!(plain.masks.is_empty(), "{:?}", plain.masks);
        let error = pool
            .render(&ctx, json!("{{ var.value.nope }}"))
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("Variable nope does not exist"),
            "{error}"
        );
        pool.shutdown().await;
    }

    /// Not a benchmark: prints the warm round trip of a no-op task for the curious.
    #[tokio::test]
    async fn warm_noop_round_trip() {
        let fixture = fixture();
        let pool = PythonRunnerPool::new(config(1));
        pool.warm_up().await.unwrap();
        assert_eq!(run(&pool, &fixture, "noop").await.outcome, success());
        let rounds = 50;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            assert_eq!(run(&pool, &fixture, "noop").await.outcome, success());
        }
        eprintln!(
            "warm no-op run_callable: {:?} each",
            started.elapsed() / rounds
        );
        pool.shutdown().await;
    }
}

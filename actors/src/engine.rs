//! The embedding API: an [`Engine`] handle a Rust program uses to register DAGs (with Rust
//! closures as tasks), trigger runs, subscribe to state changes and shut down.

use crate::command::{Command, CommandOutcome, Forwarder};
use crate::error::EngineError;
use crate::events::Event;
use crate::executor::sandbox::SandboxSpec;
use crate::executor::{python::PythonRunnerConfig, TaskContext, LOG_BYTES_MAX_DEFAULT};
use crate::messages::{DispatcherMsg, SchedulerArgs, SchedulerMsg};
use crate::shared::Shared;
use futures::future::BoxFuture;
use ractor::ActorRef;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::broadcast;
use weft_core::ids::RunKey;
use weft_core::spec::{DagSpec, TaskKind, TaskSpec};
use weft_core::state::{DagRunState, TaskState};
use weft_core::Timestamp;
use weft_storage::vault::{Keyring, Vault};
use weft_storage::Store;

/// How an in-process task fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskError {
    /// Fail this try; `retryable: false` fails the task at once.
    Fail { reason: String, retryable: bool },
    /// Mark the task skipped.
    Skip,
}

impl TaskError {
    pub fn retryable(reason: impl Into<String>) -> TaskError {
        TaskError::Fail {
            reason: reason.into(),
            retryable: true,
        }
    }
}

/// A Rust closure run as a task. It receives the task's context (run, dates, params, upstream
/// results) and returns its result (stored as the task's XCom `return_value`).
pub type TaskFn = Arc<
    dyn Fn(TaskContext) -> BoxFuture<'static, Result<Option<serde_json::Value>, TaskError>>
        + Send
        + Sync,
>;

/// The workers the dispatcher knows (see `Engine::workers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkersView {
    pub workers: Vec<weft_core::dispatch::WorkerInfo>,
    /// Requests waiting for a queue that no worker serves.
    pub waiting_unserved_queue: u64,
    /// The remote workers (`weft worker`) with a session now, by name.
    pub remote: Vec<RemoteWorkerView>,
}

/// A remote worker as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteWorkerView {
    /// From its certificate.
    pub name: String,
    pub session: u64,
    pub address: String,
    pub version: String,
    pub queues: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub slots: u32,
    pub busy: u32,
    /// It accepts nothing new (SIGTERM) and leaves once what runs is done.
    pub draining: bool,
    pub joined_at: weft_core::Timestamp,
    /// When a slot of it last answered a poll.
    pub last_heartbeat: Option<weft_core::Timestamp>,
    pub running: Vec<weft_core::ids::AttemptId>,
    /// Reports refused since it joined (about an attempt not placed on the slot that sent it).
    pub reports_refused: u64,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where logs (and, for the embedded store, the database) live.
    pub data_dir: PathBuf,
    /// Attempts that may run at once on this node.
    pub worker_slots: usize,
    /// The queues this node's slots serve (Airflow's `queue=` on a task); empty: every queue.
    pub worker_queues: Vec<String>,
    /// Size limit of one attempt's log.
    pub log_bytes_max: u64,
    /// Sandbox applied to task processes, if any.
    pub sandbox: Option<SandboxSpec>,
    /// The full sandbox, for shell tasks that ask for it (`executor_config={"isolation":
    /// "full"}`, the task's `isolation` extra); `None`: such tasks fail with a clear reason.
    pub sandbox_full: Option<SandboxSpec>,
    pub python: PythonRunnerConfig,
    /// The first wait before a store write that failed is tried again; each failure doubles
    /// it, up to `store_retry_backoff_ms_max`.
    pub store_retry_backoff_ms_first: u64,
    /// The longest wait between two tries of a failed store write (`STORE_RETRY_BACKOFF_MS_MAX`
    /// by default); also the longest wait before a failed run actor is rebuilt again.
    pub store_retry_backoff_ms_max: u64,
    /// The keys that seal and open Variables and Connections. `EngineConfig::new` makes a
    /// fresh one, which opens nothing after a restart: a node passes the keys it keeps.
    pub secret_keys: Keyring,
    /// The shards this engine decides for, when it is a cell (`None`: every DAG, unfenced).
    pub ownership: Option<Arc<crate::Ownership>>,
}

/// The first wait before a failed store write is tried again (see `EngineConfig`).
pub const STORE_RETRY_BACKOFF_MS_FIRST: u64 = 10;
/// The longest wait between two tries of a failed store write (see `EngineConfig`).
pub const STORE_RETRY_BACKOFF_MS_MAX: u64 = 2_000;

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            worker_slots: std::thread::available_parallelism()
                .map(|n| n.get() * 4)
                .unwrap_or(8),
            worker_queues: Vec::new(),
            log_bytes_max: LOG_BYTES_MAX_DEFAULT,
            sandbox: None,
            sandbox_full: None,
            python: PythonRunnerConfig::from_env(),
            store_retry_backoff_ms_first: STORE_RETRY_BACKOFF_MS_FIRST,
            store_retry_backoff_ms_max: STORE_RETRY_BACKOFF_MS_MAX,
            secret_keys: Keyring::generate(),
            ownership: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertOutcome {
    Created,
    Updated,
    Unchanged,
}

/// A DAG whose tasks are Rust closures, built in code.
pub struct RustDag {
    spec: DagSpec,
    handlers: BTreeMap<String, TaskFn>,
}

impl RustDag {
    pub fn new(dag_id: &str) -> RustDag {
        RustDag {
            spec: DagSpec::new(dag_id, Vec::new()),
            handlers: BTreeMap::new(),
        }
    }

    /// Add a task running `function`; `upstream` are the task ids it waits for.
    pub fn task<F, Fut>(mut self, task_id: &str, upstream: &[&str], function: F) -> RustDag
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Option<serde_json::Value>, TaskError>>
            + Send
            + 'static,
    {
        let handler = format!("{}.{}", self.spec.dag_id, task_id);
        let mut task = TaskSpec::new(
            task_id,
            TaskKind::InProcess {
                handler: handler.clone(),
            },
        );
        task.operator = "rust".to_string();
        task.upstream = upstream.iter().map(|id| id.to_string()).collect();
        self.spec.tasks.push(task);
        let function = Arc::new(function);
        self.handlers.insert(
            handler,
            Arc::new(move |context| {
                let function = function.clone();
                Box::pin(async move { function(context).await })
            }),
        );
        self
    }

    /// Change the last added task (retries, timeouts, trigger rule, ...).
    pub fn configure(mut self, change: impl FnOnce(&mut TaskSpec)) -> RustDag {
        if let Some(task) = self.spec.tasks.last_mut() {
            change(task);
        }
        self
    }

    /// Change DAG-level settings (schedule, time zone, limits, ...).
    pub fn settings(mut self, change: impl FnOnce(&mut DagSpec)) -> RustDag {
        change(&mut self.spec);
        self
    }

    pub fn spec(&self) -> &DagSpec {
        &self.spec
    }
}

/// A running weft engine on one node. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    scheduler: ActorRef<SchedulerMsg>,
    dispatcher: ActorRef<DispatcherMsg>,
}

/// A forwarded command answered with an outcome of the wrong kind (another version's cell).
fn unexpected(verb: &str, outcome: &CommandOutcome) -> EngineError {
    EngineError::Unavailable(format!("a {verb} was answered with {outcome:?}"))
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("data_dir", &self.shared.config.data_dir)
            .finish()
    }
}

impl Engine {
    /// Start the actors on `store`, rebuilding every active run from it.
    pub async fn start(store: Arc<dyn Store>, config: EngineConfig) -> Result<Engine, EngineError> {
        let shared = Arc::new(Shared::new(store, config));
        let dispatcher = crate::tree::spawn_dispatcher(shared.clone()).await?;
        let args = SchedulerArgs {
            shared: shared.clone(),
            dispatcher: dispatcher.clone(),
        };
        let scheduler = crate::tree::spawn_scheduler(args).await?;
        Ok(Engine {
            shared,
            scheduler,
            dispatcher,
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// The Variables and Connections of this engine's store, sealed with its keys.
    pub fn vault(&self) -> &Arc<Vault> {
        &self.shared.vault
    }

    /// Where the log of one try of a task instance is written.
    pub fn log_path(
        &self,
        key: &weft_core::ids::TaskInstanceKey,
        try_number: u32,
    ) -> std::path::PathBuf {
        self.shared
            .config
            .data_dir
            .join(crate::attempt::log_relative_path(key, try_number))
    }

    /// Attempts this node may run at once.
    pub fn worker_slots(&self) -> usize {
        self.shared.config.worker_slots
    }

    /// Ask the scheduler, and wait for its answer.
    async fn ask<T: Send + 'static>(
        &self,
        message: impl FnOnce(ractor::RpcReplyPort<Result<T, EngineError>>) -> SchedulerMsg,
    ) -> Result<T, EngineError> {
        self.scheduler.call(message, None).await?.into_result()
    }

    /// Register (or update) a DAG from its serialized form.
    pub async fn upsert_dag(&self, spec: DagSpec) -> Result<UpsertOutcome, EngineError> {
        let spec = Box::new(spec);
        self.ask(|reply| SchedulerMsg::UpsertDag { spec, reply })
            .await
    }

    /// Register a DAG whose tasks are Rust closures.
    pub async fn register(&self, dag: RustDag) -> Result<UpsertOutcome, EngineError> {
        self.shared.worker().handlers().extend(dag.handlers);
        self.upsert_dag(dag.spec).await
    }

    pub async fn set_paused(&self, dag_id: &str, paused: bool) -> Result<(), EngineError> {
        let command = Command::SetPaused {
            dag_id: dag_id.to_string(),
            paused,
        };
        self.execute(command).await.map(|_| ())
    }

    /// Trigger a manual run now.
    pub async fn trigger(
        &self,
        dag_id: &str,
        conf: serde_json::Value,
    ) -> Result<RunKey, EngineError> {
        self.trigger_at(dag_id, None, conf).await
    }

    /// Trigger a manual run with a given logical date.
    pub async fn trigger_at(
        &self,
        dag_id: &str,
        logical_date: Option<Timestamp>,
        conf: serde_json::Value,
    ) -> Result<RunKey, EngineError> {
        let command = Command::Trigger {
            dag_id: dag_id.to_string(),
            logical_date,
            conf,
        };
        match self.execute(command).await? {
            CommandOutcome::Run(run) => Ok(run),
            other => Err(unexpected("trigger", &other)),
        }
    }

    /// Create the runs of a date range (inclusive), run below fresh runs in priority.
    pub async fn backfill(
        &self,
        dag_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<RunKey>, EngineError> {
        let command = Command::Backfill {
            dag_id: dag_id.to_string(),
            from,
            to,
        };
        match self.execute(command).await? {
            CommandOutcome::Runs(runs) => Ok(runs),
            other => Err(unexpected("backfill", &other)),
        }
    }

    /// Clear task instances of a run so that they run again.
    pub async fn clear(
        &self,
        run: &RunKey,
        task_ids: &[&str],
        downstream: bool,
        upstream: bool,
    ) -> Result<(), EngineError> {
        let command = Command::Clear {
            run: run.clone(),
            task_ids: task_ids.iter().map(|id| id.to_string()).collect(),
            downstream,
            upstream,
        };
        self.execute(command).await.map(|_| ())
    }

    /// Set a task instance's state by hand (success, failed, skipped).
    pub async fn mark(
        &self,
        run: &RunKey,
        task_id: &str,
        map_index: i32,
        state: TaskState,
    ) -> Result<(), EngineError> {
        let command = Command::Mark {
            run: run.clone(),
            task_id: task_id.to_string(),
            map_index,
            state,
        };
        self.execute(command).await.map(|_| ())
    }

    /// Execute `command` here, or, when another cell owns its DAG and this engine has a
    /// forwarder, on that cell (its answer is this call's).
    pub async fn execute(&self, command: Command) -> Result<CommandOutcome, EngineError> {
        let Some(forwarder) = self.shared.forwarder.get() else {
            return self.execute_here(command).await;
        };
        match self.execute_here(command.clone()).await {
            Err(EngineError::NotOwner { shard, .. }) => forwarder.forward(shard, command).await,
            result => result,
        }
    }

    /// Execute `command` on this engine only: a command for a DAG another cell owns is refused
    /// with `EngineError::NotOwner` (a forwarded command lands here).
    pub async fn execute_here(&self, command: Command) -> Result<CommandOutcome, EngineError> {
        match command {
            Command::Trigger {
                dag_id,
                logical_date,
                conf,
            } => self
                .ask(|reply| SchedulerMsg::Trigger {
                    dag_id,
                    logical_date,
                    conf,
                    reply,
                })
                .await
                .map(CommandOutcome::Run),
            Command::SetPaused { dag_id, paused } => self
                .ask(|reply| SchedulerMsg::SetPaused {
                    dag_id,
                    paused,
                    reply,
                })
                .await
                .map(|()| CommandOutcome::Done),
            Command::Backfill { dag_id, from, to } => self
                .ask(|reply| SchedulerMsg::Backfill {
                    dag_id,
                    from,
                    to,
                    reply,
                })
                .await
                .map(CommandOutcome::Runs),
            Command::Clear {
                run,
                task_ids,
                downstream,
                upstream,
            } => self
                .ask(|reply| SchedulerMsg::Clear {
                    run,
                    task_ids,
                    downstream,
                    upstream,
                    reply,
                })
                .await
                .map(|()| CommandOutcome::Done),
            Command::Mark {
                run,
                task_id,
                map_index,
                state,
            } => self
                .ask(|reply| SchedulerMsg::MarkTask {
                    run,
                    task_id,
                    map_index,
                    state,
                    reply,
                })
                .await
                .map(|()| CommandOutcome::Done),
        }
    }

    /// Commands for DAGs another cell owns go through `forwarder` from now on (set once, by
    /// the cell's peer links).
    pub fn set_forwarder(&self, forwarder: std::sync::Arc<dyn Forwarder>) {
        let _ = self.shared.forwarder.set(forwarder);
    }

    /// Publish an event another cell's engine published (for a run it owns), so that this
    /// engine's subscribers (the UI's live stream) see every run of the deployment.
    pub fn publish_foreign(&self, event: Event) {
        self.shared.publish(event);
    }

    /// This cell took `shard` under `epoch` (from its lease keeper): its run writes are fenced
    /// with the epoch from now on, and the scheduler adopts the shard's runs.
    pub fn shard_gained(&self, shard: weft_core::lease::ShardId, epoch: u64) {
        if let Some(ownership) = &self.shared.config.ownership {
            ownership.gain(shard, epoch);
            let _ = self
                .scheduler
                .cast(SchedulerMsg::ShardGained { shard, epoch });
        }
    }

    /// This cell must stop deciding for `shard` (its lease is over or handed over): its writes
    /// for the shard are refused from now on, and its runs stand down.
    pub fn shard_lost(&self, shard: weft_core::lease::ShardId, epoch: u64) {
        if let Some(ownership) = &self.shared.config.ownership {
            if ownership.lose(shard, epoch) {
                let _ = self.scheduler.cast(SchedulerMsg::ShardLost { shard });
            }
        }
    }

    /// The shards this engine decides for, when it is a cell.
    pub fn ownership(&self) -> Option<&Arc<crate::Ownership>> {
        self.shared.config.ownership.as_ref()
    }

    /// Create or resize a pool.
    pub async fn set_pool(
        &self,
        name: &str,
        slots: u32,
        description: &str,
    ) -> Result<(), EngineError> {
        let row = weft_storage::PoolRow {
            name: name.to_string(),
            slots,
            description: description.to_string(),
        };
        self.shared
            .write(vec![weft_storage::Write::PutPool(row)])
            .await?;
        self.dispatcher.cast(DispatcherMsg::SetPool {
            name: name.to_string(),
            slots,
        })?;
        Ok(())
    }

    /// Sets the queues this node's own slots serve (empty: every queue); attempts waiting for
    /// a queue the slots now serve start.
    pub fn set_worker_queues(&self, queues: Vec<String>) -> Result<(), EngineError> {
        self.dispatcher
            .cast(DispatcherMsg::SetLocalQueues { queues })?;
        Ok(())
    }

    /// State changes, published once durable.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// Wait until a run reaches a final state.
    pub async fn wait_for_run(&self, run: &RunKey) -> Result<DagRunState, EngineError> {
        // Runs' changes only: a waiter woken by every task's change costs the engine a
        // context switch per change.
        let mut events = self.shared.run_events.subscribe();
        loop {
            let row = self
                .shared
                .store
                .run(run)
                .await?
                .ok_or_else(|| EngineError::UnknownRun(run.to_string()))?;
            if row.state.is_finished() {
                return Ok(row.state);
            }
            // Wake on any change of this run, or re-read after a while in case an event was
            // missed (a lagging subscriber loses events).
            let wait = async {
                loop {
                    match events.recv().await {
                        Ok(Event::RunChanged { run: changed, .. }) if changed == *run => return,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_millis(500), wait).await;
        }
    }

    /// Stop every actor and the Python runners. Attempts still running are killed; they are
    /// recovered (retried) on the next start from the store.
    pub async fn shutdown(self) {
        self.scheduler.stop(None);
        self.dispatcher.stop(None);
        self.shared.worker().shutdown().await;
    }

    /// The workers the dispatcher places attempts on (this node's own slots are the worker
    /// `weft_core::dispatch::LOCAL_WORKER`), and how many requests wait for a queue no worker
    /// serves.
    pub async fn workers(&self) -> Result<WorkersView, EngineError> {
        // The dispatcher answers from memory; a bound keeps a wedged one from hanging a page.
        let timeout = Some(std::time::Duration::from_secs(5));
        let answer = self
            .dispatcher
            .call(|reply| DispatcherMsg::Workers { reply }, timeout)
            .await?;
        answer.map(Ok).into_result()
    }

    /// A remote worker's session is ready: the dispatcher places attempts on its slots from
    /// now on.
    pub fn remote_worker_joined(&self, worker: crate::RemoteWorker) -> Result<(), EngineError> {
        self.dispatcher
            .cast(DispatcherMsg::RemoteJoined { worker })?;
        Ok(())
    }

    /// A remote worker's session ended: its attempts are lost (and retried as their policy
    /// allows).
    pub fn remote_worker_left(&self, name: &str, session: u64) -> Result<(), EngineError> {
        let left = DispatcherMsg::RemoteLeft {
            name: name.to_string(),
            session,
        };
        self.dispatcher.cast(left)?;
        Ok(())
    }

    /// Where the log of `attempt`, sent by the remote worker `worker`, goes: `None` when the
    /// attempt was not placed on that worker (lately), so the log is refused.
    pub async fn remote_log_path(
        &self,
        worker: &str,
        attempt: &weft_core::ids::AttemptId,
    ) -> Option<std::path::PathBuf> {
        let ask = |reply| DispatcherMsg::RemoteAttemptPlaced {
            worker: worker.to_string(),
            attempt: attempt.clone(),
            reply,
        };
        let timeout = Some(std::time::Duration::from_secs(5));
        match self.dispatcher.call(ask, timeout).await {
            Ok(ractor::rpc::CallResult::Success(true)) => {
                Some(self.log_path(&attempt.key, attempt.try_number))
            }
            _ => None,
        }
    }

    /// The size limit of one attempt's log.
    pub fn log_bytes_max(&self) -> u64 {
        self.shared.config.log_bytes_max
    }

    /// How many attempts a rebuilt task actor took up where they waited or ran (instead of
    /// counting them lost) since the engine started.
    pub fn attempts_adopted(&self) -> u64 {
        self.shared
            .attempts_adopted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    #[cfg(any(test, feature = "fault-injection"))]
    /// Test hook: crash a worker slot (its attempt is lost; the slot is replaced).
    pub fn crash_worker_slot(&self, index: usize) {
        let _ = self.dispatcher.cast(DispatcherMsg::CrashSlot { index });
    }

    #[cfg(any(test, feature = "fault-injection"))]
    /// Test hook: crash the task actor of a task instance's current attempt (its run rebuilds
    /// it, and the new one adopts the attempt).
    pub fn crash_task_actor(&self, key: &weft_core::ids::TaskInstanceKey) {
        let _ = self
            .scheduler
            .cast(SchedulerMsg::CrashTask { key: key.clone() });
    }

    #[cfg(any(test, feature = "fault-injection"))]
    /// Test hook: crash the actor of an active run (the scheduler rebuilds it from the store).
    pub fn crash_run_actor(&self, run: &RunKey) {
        let _ = self
            .scheduler
            .cast(SchedulerMsg::CrashRun { run: run.clone() });
    }
}

trait IntoResult<T> {
    fn into_result(self) -> Result<T, EngineError>;
}

impl<T> IntoResult<T> for ractor::rpc::CallResult<Result<T, EngineError>> {
    fn into_result(self) -> Result<T, EngineError> {
        match self {
            ractor::rpc::CallResult::Success(result) => result,
            ractor::rpc::CallResult::Timeout => {
                Err(EngineError::Unavailable("call timed out".to_string()))
            }
            ractor::rpc::CallResult::SenderError => {
                Err(EngineError::Unavailable("actor stopped".to_string()))
            }
        }
    }
}

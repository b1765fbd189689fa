//! WorkerSlot actors: each runs one attempt at a time. Their messages carry serializable
//! assignments, so that a later transport can place slots in other processes and cells.

use crate::attempt::RUNNING_REPORT_GRACE;
use crate::dag_run_actor::DagRunMsg;
use crate::dispatcher_actor::DispatcherMsg;
use crate::executor::{self, AttemptLimits, AttemptReport, LogTarget, TaskContext};
use crate::shared::Shared;
use futures::FutureExt as _;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use weft_core::dag_run::{AttemptOutcome, DispatchRequest};
use weft_core::spec::{TaskKind, TaskSpec};

/// One attempt, as handed to a worker slot. Plain data: it crosses process boundaries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptAssignment {
    pub request: DispatchRequest,
    pub task: TaskSpec,
    pub context: TaskContext,
    pub limits: AttemptLimits,
    pub log: LogTarget,
}

pub(crate) enum WorkerSlotMsg {
    /// Run this attempt and report to `reply`, the run it belongs to.
    Run {
        assignment: Box<AttemptAssignment>,
        reply: ActorRef<DagRunMsg>,
    },
    /// Stop the attempt with this token if it is the one running.
    Kill { token: u64 },
    /// The running attempt ended (sent by the slot's own execution task).
    Done {
        token: u64,
        report: Box<AttemptReport>,
    },
    /// Test hook: fail the actor as a crash would.
    #[cfg(any(test, feature = "fault-injection"))]
    Crash,
}

pub(crate) struct WorkerSlot;

pub(crate) struct WorkerSlotArgs {
    pub shared: Arc<Shared>,
    pub index: usize,
    pub dispatcher: ActorRef<DispatcherMsg>,
}

pub(crate) struct WorkerSlotState {
    shared: Arc<Shared>,
    index: usize,
    dispatcher: ActorRef<DispatcherMsg>,
    running: Option<Running>,
}

struct Running {
    assignment: Arc<AttemptAssignment>,
    reply: ActorRef<DagRunMsg>,
    execution: tokio::task::JoinHandle<()>,
    started: Instant,
    started_at: weft_core::Timestamp,
    /// Set by the execution once it has told the run that the attempt started (after
    /// `RUNNING_REPORT_GRACE`); until then the end carries the start.
    start_reported: Arc<AtomicBool>,
}

impl Actor for WorkerSlot {
    type Msg = WorkerSlotMsg;
    type State = WorkerSlotState;
    type Arguments = WorkerSlotArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<WorkerSlotMsg>,
        args: WorkerSlotArgs,
    ) -> Result<WorkerSlotState, ActorProcessingErr> {
        Ok(WorkerSlotState {
            shared: args.shared,
            index: args.index,
            dispatcher: args.dispatcher,
            running: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerSlotMsg>,
        message: WorkerSlotMsg,
        state: &mut WorkerSlotState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerSlotMsg::Run { assignment, reply } => state.start(myself, assignment, reply),
            WorkerSlotMsg::Kill { token } => {
                let current = state
                    .running
                    .as_ref()
                    .map(|running| running.assignment.request.token);
                if current == Some(token) {
                    let report = AttemptReport {
                        outcome: AttemptOutcome::Failed {
                            reason: "attempt killed".to_string(),
                            retryable: true,
                        },
                        result: None,
                        log_bytes: 0,
                        log_truncated: false,
                        exit_code: None,
                    };
                    state.finish(report);
                }
            }
            #[cfg(any(test, feature = "fault-injection"))]
            WorkerSlotMsg::Crash => return Err("injected worker slot crash".into()),
            WorkerSlotMsg::Done { token, report } => {
                let current = state
                    .running
                    .as_ref()
                    .map(|running| running.assignment.request.token);
                if current == Some(token) {
                    state.finish(*report);
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<WorkerSlotMsg>,
        state: &mut WorkerSlotState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(running) = state.running.take() {
            running.execution.abort();
        }
        Ok(())
    }
}

impl WorkerSlotState {
    fn start(
        &mut self,
        myself: ActorRef<WorkerSlotMsg>,
        assignment: Box<AttemptAssignment>,
        reply: ActorRef<DagRunMsg>,
    ) {
        if let Some(running) = &self.running {
            // The dispatcher only assigns idle slots; a second assignment is a bug upstream.
            tracing::error!(
                slot = self.index,
                busy_with = %running.assignment.request.key,
                "worker slot got a second attempt while busy"
            );
            metrics::counter!("weft_invariant_violations_total", "name" => "slot_double_booked")
                .increment(1);
        }
        let shared = self.shared.clone();
        let assignment: Arc<AttemptAssignment> = Arc::from(assignment);
        let start_reported = Arc::new(AtomicBool::new(false));
        let (work, run, reported) = (assignment.clone(), reply.clone(), start_reported.clone());
        let execution = tokio::spawn(async move {
            let attempt = execute(&shared, &work);
            tokio::pin!(attempt);
            let request = &work.request;
            // An attempt still running after the grace period has its start reported on its
            // own (see `RUNNING_REPORT_GRACE`); a shorter one reports it with its end.
            let report = tokio::select! {
                report = &mut attempt => report,
                () = tokio::time::sleep(RUNNING_REPORT_GRACE) => {
                    reported.store(true, Ordering::Release);
                    let _ = run.cast(DagRunMsg::AttemptStarted {
                        task_id: request.key.task_id.clone(),
                        map_index: request.key.map_index,
                        try_number: request.try_number,
                        token: request.token,
                    });
                    attempt.await
                }
            };
            let _ = myself.cast(WorkerSlotMsg::Done {
                token: request.token,
                report: Box::new(report),
            });
        });
        self.running = Some(Running {
            assignment,
            reply,
            execution,
            started: Instant::now(),
            started_at: crate::shared::now(),
            start_reported,
        });
    }

    fn finish(&mut self, report: AttemptReport) {
        let Some(running) = self.running.take() else {
            return;
        };
        // Dropping the execution kills its process tree (the executors hold kill guards).
        running.execution.abort();
        let request = &running.assignment.request;
        metrics::histogram!("weft_attempt_seconds").record(running.started.elapsed().as_secs_f64());
        let _ = running.reply.cast(DagRunMsg::AttemptFinished {
            task_id: request.key.task_id.clone(),
            map_index: request.key.map_index,
            try_number: request.try_number,
            token: request.token,
            report: Box::new(report),
            started_at: Some(running.started_at),
            start_unreported: !running.start_reported.load(Ordering::Acquire),
        });
        let _ = self.dispatcher.cast(DispatcherMsg::SlotFree {
            slot: self.index,
            key: request.key.clone(),
            try_number: request.try_number,
            token: request.token,
        });
    }
}

/// Run one attempt with the executor its task kind needs, then read the result as the task's
/// flow control asks (branch targets, short-circuit, mapped length).
async fn execute(shared: &Shared, assignment: &AttemptAssignment) -> AttemptReport {
    let report = execute_kind(shared, assignment).await;
    interpret_result(&assignment.task, report)
}

fn interpret_result(task: &TaskSpec, mut report: AttemptReport) -> AttemptReport {
    report
        .outcome
        .read_result(task.flow, report.result.as_ref());
    report
}

/// The shell and Python executors' futures are boxed: they are large, and every attempt's
/// future (moved into its tokio task) is as large as its largest branch, which made moving an
/// in-process attempt's future a visible share of the engine's CPU.
async fn execute_kind(shared: &Shared, assignment: &AttemptAssignment) -> AttemptReport {
    match &assignment.task.kind {
        TaskKind::Empty => success(None),
        TaskKind::InProcess { handler } => run_in_process(shared, handler, assignment).await,
        TaskKind::Shell { templated, .. } => {
            Box::pin(run_shell_kind(shared, assignment, *templated)).await
        }
        TaskKind::Python { .. } => {
            Box::pin(async {
                shared
                    .python()
                    .await
                    .run_callable(&assignment.context, &assignment.log, &assignment.limits)
                    .await
            })
            .await
        }
    }
}

async fn run_shell_kind(
    shared: &Shared,
    assignment: &AttemptAssignment,
    templated: bool,
) -> AttemptReport {
    let rendered;
    let kind = if templated {
        match render_shell(shared, assignment).await {
            Ok(kind) => rendered = kind,
            Err(reason) => return failed(reason, false),
        }
        &rendered
    } else {
        &assignment.task.kind
    };
    let Some(command) = executor::subprocess::ShellCommand::from_kind(kind) else {
        return failed("not a shell task".to_string(), false);
    };
    let extra_env = context_env(&assignment.context);
    executor::subprocess::run_shell(&command, &assignment.log, &assignment.limits, &extra_env).await
}

async fn render_shell(shared: &Shared, assignment: &AttemptAssignment) -> Result<TaskKind, String> {
    let TaskKind::Shell {
        command,
        env,
        append_env,
        cwd,
        skip_exit_code,
        ..
    } = &assignment.task.kind
    else {
        return Err("not a shell task".to_string());
    };
    let fields = serde_json::json!({ "command": command, "env": env });
    let rendered = shared
        .python()
        .await
        .render(&assignment.context, fields)
        .await
        .map_err(|error| format!("template rendering failed: {error}"))?;
    let command = rendered["command"].as_str().unwrap_or(command).to_string();
    let env: BTreeMap<String, String> =
        serde_json::from_value(rendered["env"].clone()).unwrap_or_else(|_| env.clone());
    Ok(TaskKind::Shell {
        command,
        env,
        append_env: *append_env,
        cwd: cwd.clone(),
        skip_exit_code: *skip_exit_code,
        templated: false,
    })
}

async fn run_in_process(
    shared: &Shared,
    handler: &str,
    assignment: &AttemptAssignment,
) -> AttemptReport {
    let Some(function) = shared.handler(handler) else {
        return failed(
            format!("no in-process handler named `{handler}` is registered"),
            false,
        );
    };
    // A panic in the handler fails the attempt, not the worker slot; polled in place rather
    // than in a task of its own (a spawn per attempt), and dropped at the timeout.
    let call = std::panic::AssertUnwindSafe(function(assignment.context.clone())).catch_unwind();
    let outcome = match assignment.limits.timeout_ms {
        Some(timeout_ms) => {
            match tokio::time::timeout(std::time::Duration::from_millis(timeout_ms), call).await {
                Ok(joined) => joined,
                Err(_) => return timed_out(),
            }
        }
        None => call.await,
    };
    match outcome {
        Ok(Ok(result)) => success(result),
        Ok(Err(crate::engine::TaskError::Skip)) => AttemptReport {
            outcome: AttemptOutcome::Skipped,
            ..success(None)
        },
        Ok(Err(crate::engine::TaskError::Fail { reason, retryable })) => failed(reason, retryable),
        Err(payload) => failed(format!("task panicked: {}", panic_text(payload)), true),
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-text panic payload".to_string()
    }
}

/// Environment variables that tell a task process about its run (Airflow's AIRFLOW_CTX_*).
fn context_env(context: &TaskContext) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("WEFT_CTX_DAG_ID".to_string(), context.dag_id.clone());
    env.insert("WEFT_CTX_TASK_ID".to_string(), context.task_id.clone());
    env.insert("WEFT_CTX_RUN_ID".to_string(), context.run_id.clone());
    env.insert(
        "WEFT_CTX_TRY_NUMBER".to_string(),
        context.try_number.to_string(),
    );
    env.insert(
        "WEFT_CTX_LOGICAL_DATE".to_string(),
        context.logical_date.clone(),
    );
    env
}

fn success(result: Option<serde_json::Value>) -> AttemptReport {
    AttemptReport {
        outcome: AttemptOutcome::Success {
            branch: None,
            proceed: None,
            output_len: None,
        },
        result,
        log_bytes: 0,
        log_truncated: false,
        exit_code: None,
    }
}

fn failed(reason: String, retryable: bool) -> AttemptReport {
    AttemptReport {
        outcome: AttemptOutcome::Failed { reason, retryable },
        ..success(None)
    }
}

fn timed_out() -> AttemptReport {
    AttemptReport {
        outcome: AttemptOutcome::TimedOut,
        ..success(None)
    }
}

//! Worker slots: each runs one attempt at a time. The dispatcher starts an attempt in an idle
//! slot through the slot's handle (the attempt runs in a tokio task of its own and reports its
//! start and end, as `SlotReport`s, straight to the attempt's task actor, and frees the slot at
//! the dispatcher); the slot's actor stops the attempt on a kill and, when it dies, takes its
//! attempt down with it. Assignments and reports are plain serializable data, so that a
//! transport can place slots in other processes and cells.

use crate::attempt::RUNNING_REPORT_GRACE;
use crate::executor::{self, AttemptReport};
use crate::messages::{
    AttemptAssignment, DispatcherMsg, SlotReport, TaskMsg, WorkerSlotArgs, WorkerSlotMsg,
};
use crate::shared::Shared;
use futures::FutureExt as _;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use weft_core::dag_run::AttemptOutcome;
use weft_core::spec::{FlowControl, TaskKind};

pub(crate) struct WorkerSlot;

pub(crate) struct WorkerSlotState {
    handle: SlotHandle,
    dispatcher: ActorRef<DispatcherMsg>,
}

/// One worker slot as the dispatcher, the slot's actor and the attempt's task share it: the
/// attempt the slot runs. Whichever ends the attempt takes it out and reports: its task when
/// it returns (straight to the run and the dispatcher), the actor on a kill, the dispatcher
/// when the actor died.
#[derive(Clone)]
pub(crate) struct SlotHandle {
    pub index: usize,
    running: Arc<Mutex<Option<Running>>>,
}

struct Running {
    assignment: Arc<AttemptAssignment>,
    /// The attempt's task actor (another one after an adoption, see `readopt`).
    reply: ActorRef<TaskMsg>,
    /// Set once the attempt's task is spawned (it may have ended before).
    execution: Option<tokio::task::AbortHandle>,
    started: Instant,
    started_at: weft_core::Timestamp,
    /// The run was told that the attempt started (after `RUNNING_REPORT_GRACE`); until then
    /// the end carries the start.
    start_reported: bool,
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
            handle: args.handle,
            dispatcher: args.dispatcher,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<WorkerSlotMsg>,
        message: WorkerSlotMsg,
        state: &mut WorkerSlotState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerSlotMsg::Kill { token } => {
                if let Some(running) = take_running(&state.handle.running, token) {
                    // Dropping the execution kills its process tree (the executors hold kill
                    // guards).
                    if let Some(execution) = &running.execution {
                        execution.abort();
                    }
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
                    report_end(&state.dispatcher, running, report);
                }
            }
            #[cfg(any(test, feature = "fault-injection"))]
            WorkerSlotMsg::Crash => return Err("injected worker slot crash".into()),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<WorkerSlotMsg>,
        state: &mut WorkerSlotState,
    ) -> Result<(), ActorProcessingErr> {
        // The dispatcher reports the attempt of a slot that stopped as lost.
        state.handle.abort();
        Ok(())
    }
}

fn lock(running: &Mutex<Option<Running>>) -> std::sync::MutexGuard<'_, Option<Running>> {
    // Nothing panics while holding it; a poisoned lock still holds a consistent value.
    running
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The running attempt, if it is the one with `token`.
fn current(running: &mut Option<Running>, token: u64) -> Option<&mut Running> {
    running
        .as_mut()
        .filter(|running| running.assignment.request.attempt.token == token)
}

/// Takes the running attempt out if it is the one with `token`.
fn take_running(running: &Mutex<Option<Running>>, token: u64) -> Option<Running> {
    let mut running = lock(running);
    current(&mut running, token)?;
    running.take()
}

/// Tells the attempt's task actor how the attempt ended and frees the slot at the dispatcher.
fn report_end(dispatcher: &ActorRef<DispatcherMsg>, running: Running, report: AttemptReport) {
    let request = &running.assignment.request;
    metrics::histogram!("weft_attempt_seconds").record(running.started.elapsed().as_secs_f64());
    let attempt = request.attempt.clone();
    let finished = SlotReport::Finished {
        attempt: attempt.clone(),
        report: Box::new(report),
        started_at: running.started_at,
        start_unreported: !running.start_reported,
    };
    let _ = running.reply.cast(TaskMsg::Slot(finished));
    let _ = dispatcher.cast(DispatcherMsg::SlotFree { attempt });
}

impl SlotHandle {
    pub fn new(index: usize) -> SlotHandle {
        SlotHandle {
            index,
            running: Arc::new(Mutex::new(None)),
        }
    }

    /// Stops the slot's attempt, if any, without a report (its slot died: the dispatcher
    /// reports it lost).
    pub fn abort(&self) {
        let running = lock(&self.running).take();
        if let Some(execution) = running.and_then(|running| running.execution) {
            execution.abort();
        }
    }

    /// Points the reports of the running attempt with `token` at `reply`, a task actor that
    /// took the attempt up; `false` when the slot no longer runs it (its end was reported to
    /// the task actor before).
    pub fn readopt(&self, token: u64, reply: &ActorRef<TaskMsg>) -> bool {
        match current(&mut lock(&self.running), token) {
            Some(running) => {
                running.reply = reply.clone();
                true
            }
            None => false,
        }
    }

    /// Runs `assignment` in this (idle) slot and reports its start and end to `reply`, the
    /// attempt's task actor, and frees the slot at `dispatcher`. Called by the dispatcher itself: a message through the slot's
    /// actor was a hop on every attempt's path for nothing the actor adds.
    pub fn start(
        &self,
        shared: &Arc<Shared>,
        dispatcher: &ActorRef<DispatcherMsg>,
        assignment: Arc<AttemptAssignment>,
        reply: ActorRef<TaskMsg>,
    ) {
        let token = assignment.request.attempt.token;
        {
            let mut running = lock(&self.running);
            if let Some(busy) = running.as_ref() {
                // The dispatcher only assigns idle slots; a second assignment is a bug upstream.
                tracing::error!(
                    slot = self.index,
                    busy_with = %busy.assignment.request.attempt.key,
                    "worker slot got a second attempt while busy"
                );
                metrics::counter!("weft_invariant_violations_total", "name" => "slot_double_booked")
                    .increment(1);
            }
            *running = Some(Running {
                assignment: assignment.clone(),
                reply,
                execution: None,
                started: Instant::now(),
                started_at: crate::shared::now(),
                start_reported: false,
            });
        }
        let shared = shared.clone();
        let (slot, dispatcher) = (self.running.clone(), dispatcher.clone());
        let execution = tokio::spawn(async move {
            let attempt = execute(&shared, &assignment);
            tokio::pin!(attempt);
            let request = &assignment.request;
            // An attempt still running after the grace period has its start reported on its
            // own (see `RUNNING_REPORT_GRACE`); a shorter one reports it with its end.
            let report = tokio::select! {
                report = &mut attempt => report,
                () = tokio::time::sleep(RUNNING_REPORT_GRACE) => {
                    // Read under the lock: an adoption may have pointed it elsewhere.
                    let reply = current(&mut lock(&slot), token).map(|running| {
                        running.start_reported = true;
                        running.reply.clone()
                    });
                    if let Some(reply) = reply {
                        let started = SlotReport::Started {
                            attempt: request.attempt.clone(),
                        };
                        let _ = reply.cast(TaskMsg::Slot(started));
                    }
                    attempt.await
                }
            };
            if let Some(running) = take_running(&slot, token) {
                report_end(&dispatcher, running, report);
            }
        });
        if let Some(running) = current(&mut lock(&self.running), token) {
            running.execution = Some(execution.abort_handle());
        }
    }
}

/// Run one attempt with the executor its task kind needs, then read the result as the task's
/// flow control asks (branch targets, short-circuit, mapped length).
async fn execute(shared: &Shared, assignment: &AttemptAssignment) -> AttemptReport {
    let report = execute_kind(shared, assignment).await;
    interpret_result(assignment.flow, report)
}

fn interpret_result(flow: FlowControl, mut report: AttemptReport) -> AttemptReport {
    report.outcome.read_result(flow, report.result.as_ref());
    report
}

/// The shell and Python executors' futures are boxed: they are large, and every attempt's
/// future (moved into its tokio task) is as large as its largest branch, which made moving an
/// in-process attempt's future a visible share of the engine's CPU.
async fn execute_kind(shared: &Shared, assignment: &AttemptAssignment) -> AttemptReport {
    match &assignment.kind {
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
                    .run_callable(&assignment.context(), &assignment.log, &assignment.limits)
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
    let mut masks = Vec::new();
    let kind = if templated {
        match render_shell(shared, assignment).await {
            Ok((kind, used)) => (rendered, masks) = (kind, used),
            Err(reason) => return failed(reason, false),
        }
        &rendered
    } else {
        &assignment.kind
    };
    let Some(mut command) = executor::subprocess::ShellCommand::from_kind(kind) else {
        return failed("not a shell task".to_string(), false);
    };
    command.masks = masks;
    let try_number = assignment.request.attempt.try_number.to_string();
    let extra_env = context_env(assignment, &try_number);
    executor::subprocess::run_shell(&command, &assignment.log, &assignment.limits, &extra_env).await
}

/// The shell task with its templates rendered, and the secret values they used (to mask in
/// its log).
async fn render_shell(
    shared: &Shared,
    assignment: &AttemptAssignment,
) -> Result<(TaskKind, Vec<String>), String> {
    let TaskKind::Shell {
        command,
        env,
        append_env,
        cwd,
        skip_exit_code,
        ..
    } = &assignment.kind
    else {
        return Err("not a shell task".to_string());
    };
    let fields = serde_json::json!({ "command": command, "env": env });
    let executor::python::Rendered {
        fields: rendered,
        masks,
    } = shared
        .python()
        .await
        .render(&assignment.context(), fields)
        .await
        .map_err(|error| format!("template rendering failed: {error}"))?;
    let command = rendered["command"].as_str().unwrap_or(command).to_string();
    let env: BTreeMap<String, String> =
        serde_json::from_value(rendered["env"].clone()).unwrap_or_else(|_| env.clone());
    let kind = TaskKind::Shell {
        command,
        env,
        append_env: *append_env,
        cwd: cwd.clone(),
        skip_exit_code: *skip_exit_code,
        templated: false,
    };
    Ok((kind, masks))
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
    let call = std::panic::AssertUnwindSafe(function(assignment.context())).catch_unwind();
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
fn context_env<'a>(
    assignment: &'a AttemptAssignment,
    try_number: &'a str,
) -> [(&'static str, &'a str); 5] {
    let run = &assignment.run;
    [
        ("WEFT_CTX_DAG_ID", &run.dag_id),
        (
            "WEFT_CTX_TASK_ID",
            assignment.request.attempt.key.task_id.as_str(),
        ),
        ("WEFT_CTX_RUN_ID", &run.run_id),
        ("WEFT_CTX_TRY_NUMBER", try_number),
        ("WEFT_CTX_LOGICAL_DATE", &run.logical_date),
    ]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::{AttemptLimits, LogTarget, TaskContext};
    use weft_core::dag_run::DispatchRequest;
    use weft_core::ids::{AttemptId, Name, TaskInstanceKey};
    use weft_core::state::RunType;

    fn assignment() -> AttemptAssignment {
        let run = TaskContext {
            dag_id: "etl".to_string(),
            task_id: String::new(),
            run_id: "manual__1".to_string(),
            map_index: -1,
            try_number: 0,
            max_tries: 0,
            run_type: "manual".to_string(),
            logical_date: "2026-12-03T18:00:00.000000Z".to_string(),
            data_interval_start: "2026-12-03T18:00:00.000000Z".to_string(),
            data_interval_end: "2026-12-03T18:00:00.000000Z".to_string(),
            params: serde_json::Map::from_iter([("n".to_string(), serde_json::json!(3))]),
            conf: serde_json::json!({"n": 3}),
            xcoms: BTreeMap::new(),
            fileloc: Some("/dags/etl.py".to_string()),
            timezone: "UTC".to_string(),
        };
        let key = TaskInstanceKey::new("etl", "manual__1", "load", 4);
        AttemptAssignment {
            request: DispatchRequest {
                attempt: AttemptId::new(key.clone(), 2, 9),
                priority_weight: 1,
                run_type: RunType::Manual,
                pool: Name::from("default_pool"),
                pool_slots: 1,
                queue: Name::from("default"),
                execution_timeout_ms: None,
            },
            kind: TaskKind::Empty,
            flow: FlowControl::Normal,
            run: Arc::new(run),
            xcoms: BTreeMap::from([("extract".to_string(), serde_json::json!([1, 2]))]),
            max_tries: 3,
            limits: AttemptLimits {
                timeout_ms: None,
                log_bytes_max: 1024,
                sandbox: None,
            },
            log: LogTarget {
                key,
                try_number: 2,
                path: "/logs/attempt=2.log".into(),
            },
        }
    }

    #[test]
    fn an_attempt_context_is_its_run_context_with_its_own_fields() {
        let assignment = assignment();
        let context = assignment.context();
        assert_eq!(
            (
                context.task_id.as_str(),
                context.map_index,
                context.try_number,
                context.max_tries
            ),
            ("load", 4, 2, 3)
        );
        assert_eq!(context.xcoms["extract"], serde_json::json!([1, 2]));
        assert_eq!(
            (
                context.dag_id.as_str(),
                context.run_id.as_str(),
                context.params["n"].clone()
            ),
            ("etl", "manual__1", serde_json::json!(3))
        );
        let try_number = assignment.request.attempt.try_number.to_string();
        assert_eq!(
            context_env(&assignment, &try_number),
            [
                ("WEFT_CTX_DAG_ID", "etl"),
                ("WEFT_CTX_TASK_ID", "load"),
                ("WEFT_CTX_RUN_ID", "manual__1"),
                ("WEFT_CTX_TRY_NUMBER", "2"),
                ("WEFT_CTX_LOGICAL_DATE", "2026-12-03T18:00:00.000000Z"),
            ]
        );
    }

    #[test]
    fn an_assignment_serializes_as_plain_data_and_back() {
        let assignment = assignment();
        let text = serde_json::to_string(&assignment).unwrap();
        let back: AttemptAssignment = serde_json::from_str(&text).unwrap();
        assert_eq!(back, assignment);
    }
}

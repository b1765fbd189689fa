//! Task actors: one per dispatched task instance, children of their DagRun actor. A task
//! actor prepares the attempt (template context, results of upstream tasks, limits), asks the
//! dispatcher for a slot and relays what the worker slot reports to its run.
//!
//! A task actor holds nothing that is not in the store: when one fails, its run restarts it
//! from the stored task instance, and an attempt that was queued or running is reported lost
//! (the run retries it with a new fencing token, so a late result of the old attempt is
//! refused).

use crate::dag_run_actor::DagRunMsg;
use crate::dispatcher_actor::DispatcherMsg;
use crate::executor::{AttemptLimits, AttemptReport, LogTarget, TaskContext};
use crate::shared::Shared;
use crate::worker_slot::{AttemptAssignment, WorkerSlotMsg};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::BTreeMap;
use std::sync::Arc;
use weft_core::dag_run::{AttemptOutcome, DispatchRequest, RunContext};
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::spec::TaskKind;

pub(crate) enum TaskMsg {
    /// Run this attempt (from the run, after the queued state is durable).
    Dispatch {
        request: DispatchRequest,
        /// The store may hold results of this run (else there are none to read).
        results_stored: bool,
    },
    /// A worker slot began the attempt.
    Started {
        try_number: u32,
        token: u64,
        slot: ActorRef<WorkerSlotMsg>,
    },
    /// Report the start of the attempt with this token to the run, unless its end already
    /// carried it (sent by the worker slot when the grace period is over).
    ReportStarted { token: u64 },
    /// The attempt ended.
    Finished {
        try_number: u32,
        token: u64,
        report: Box<AttemptReport>,
    },
    /// The dispatcher queue is full; the attempt was not queued.
    DispatchRefused { try_number: u32, token: u64 },
    /// Stop the attempt with this token.
    Kill { token: u64 },
    /// Test hook: fail the actor as a crash would.
    #[cfg(any(test, feature = "fault-injection"))]
    Crash,
}

pub(crate) struct TaskActor;

pub(crate) struct TaskArgs {
    pub shared: Arc<Shared>,
    pub context: Arc<RunContext>,
    pub key: TaskInstanceKey,
    pub run: ActorRef<DagRunMsg>,
    pub dispatcher: ActorRef<DispatcherMsg>,
    /// Rebuilt after a failure: report a queued or running attempt as lost.
    pub recovering: bool,
}

pub(crate) struct TaskState {
    args: TaskArgs,
    running: Option<(u64, ActorRef<WorkerSlotMsg>)>,
    started_at: Option<weft_core::Timestamp>,
    /// When the current attempt was handed to the dispatcher (dispatch latency).
    dispatched: Option<std::time::Instant>,
    /// (try, token) of a started attempt whose start the run has not been told yet.
    start_unreported: Option<(u32, u64)>,
}

/// How long the start of an attempt is held back before the run is told (and persists the
/// `running` state). An attempt that ends sooner reports start and end together, so that the
/// run commits both transitions in one batch: one fsync per task instead of two on the
/// critical path of a chain. Nothing depends on `running` before it is durable; a crash in
/// this window leaves the instance `queued`, which recovery re-dispatches with a new token,
/// as it would after a crash just before the start.
pub(crate) const RUNNING_REPORT_GRACE: std::time::Duration = std::time::Duration::from_millis(20);

impl Actor for TaskActor {
    type Msg = TaskMsg;
    type State = TaskState;
    type Arguments = TaskArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<TaskMsg>,
        args: TaskArgs,
    ) -> Result<TaskState, ActorProcessingErr> {
        if args.recovering {
            if let Some(record) = args.shared.store.task_instance(&args.key).await? {
                if record.state.is_active() {
                    let _ = args.run.cast(DagRunMsg::AttemptFinished {
                        task_id: args.key.task_id.clone(),
                        map_index: args.key.map_index,
                        try_number: record.try_number,
                        token: record.token,
                        report: Box::new(lost_report("task actor restarted")),
                        started_at: record.started_at,
                        start_unreported: false,
                    });
                }
            }
        }
        Ok(TaskState {
            args,
            running: None,
            started_at: None,
            dispatched: None,
            start_unreported: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<TaskMsg>,
        message: TaskMsg,
        state: &mut TaskState,
    ) -> Result<(), ActorProcessingErr> {
        let args = &state.args;
        match message {
            TaskMsg::Dispatch {
                request,
                results_stored,
            } => {
                state.dispatched = Some(std::time::Instant::now());
                let assignment = build_assignment(args, request, results_stored).await?;
                args.dispatcher.cast(DispatcherMsg::Enqueue {
                    assignment: Box::new(assignment),
                    reply: myself,
                })?;
            }
            TaskMsg::Started {
                try_number,
                token,
                slot,
            } => {
                if let Some(dispatched) = state.dispatched.take() {
                    metrics::histogram!("weft_dispatch_latency_seconds")
                        .record(dispatched.elapsed().as_secs_f64());
                }
                state.running = Some((token, slot));
                state.started_at = Some(crate::shared::now());
                // Held back for a moment: an attempt that ends within the grace period reports
                // its start with its end, and the run commits both in one batch. The worker
                // slot sends `ReportStarted` when the grace is over (one timer inside the
                // attempt's own task, instead of a timer task per attempt here).
                state.start_unreported = Some((try_number, token));
            }
            TaskMsg::ReportStarted { token } => {
                if let Some((try_number, _)) =
                    state.start_unreported.take_if(|(_, held)| *held == token)
                {
                    args.run.cast(DagRunMsg::AttemptStarted {
                        task_id: args.key.task_id.clone(),
                        map_index: args.key.map_index,
                        try_number,
                        token,
                    })?;
                }
            }
            TaskMsg::Finished {
                try_number,
                token,
                report,
            } => {
                if state.running.as_ref().map(|(running, _)| *running) == Some(token) {
                    state.running = None;
                }
                let start_unreported = state
                    .start_unreported
                    .take_if(|(_, held)| *held == token)
                    .is_some();
                args.run.cast(DagRunMsg::AttemptFinished {
                    task_id: args.key.task_id.clone(),
                    map_index: args.key.map_index,
                    try_number,
                    token,
                    report,
                    started_at: state.started_at.take(),
                    start_unreported,
                })?;
            }
            TaskMsg::DispatchRefused { try_number, token } => {
                args.run.cast(DagRunMsg::AttemptFinished {
                    task_id: args.key.task_id.clone(),
                    map_index: args.key.map_index,
                    try_number,
                    token,
                    report: Box::new(lost_report("dispatch queue full")),
                    started_at: None,
                    start_unreported: false,
                })?;
            }
            TaskMsg::Kill { token } => {
                if let Some((running, slot)) = &state.running {
                    if *running == token {
                        let _ = slot.cast(WorkerSlotMsg::Kill { token });
                    }
                }
                args.dispatcher.cast(DispatcherMsg::Cancel {
                    key: args.key.clone(),
                    token,
                })?;
            }
            #[cfg(any(test, feature = "fault-injection"))]
            TaskMsg::Crash => panic!("injected task actor crash"),
        }
        Ok(())
    }
}

pub(crate) fn lost_report(reason: &str) -> AttemptReport {
    AttemptReport {
        outcome: AttemptOutcome::Lost {
            reason: reason.to_string(),
        },
        result: None,
        log_bytes: 0,
        log_truncated: false,
        exit_code: None,
    }
}

async fn build_assignment(
    args: &TaskArgs,
    request: DispatchRequest,
    results_stored: bool,
) -> Result<AttemptAssignment, ActorProcessingErr> {
    let context = &args.context;
    let dag = &context.dag;
    let task = dag
        .task(&args.key.task_id)
        .ok_or_else(|| {
            format!(
                "task `{}` is not in dag `{}`",
                args.key.task_id,
                dag.dag_id()
            )
        })?
        .clone();
    let run = RunKey {
        dag_id: args.key.dag_id.clone(),
        run_id: args.key.run_id.clone(),
    };
    let mut xcoms = BTreeMap::new();
    // Only tasks that can read upstream results get them: a plain shell command (no template
    // to render) or an empty task never looks, so its dispatch skips the store read.
    let reads_results = match &task.kind {
        TaskKind::Shell { templated, .. } => *templated,
        TaskKind::Empty => false,
        TaskKind::Python { .. } | TaskKind::InProcess { .. } => true,
    };
    let rows = if reads_results && results_stored {
        args.shared.store.xcoms(&run).await?
    } else {
        Vec::new()
    };
    for row in rows {
        if row.name != "return_value" {
            continue;
        }
        if row.key.map_index < 0 {
            xcoms.insert(row.key.task_id.to_string(), row.value);
        } else {
            let slot = xcoms
                .entry(row.key.task_id.to_string())
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let serde_json::Value::Array(items) = slot {
                let index = row.key.map_index as usize;
                if items.len() <= index {
                    items.resize(index + 1, serde_json::Value::Null);
                }
                items[index] = row.value;
            }
        }
    }
    let mut params = serde_json::Map::new();
    for (name, param) in &dag.spec().params {
        params.insert(name.clone(), param.default.clone());
    }
    if let serde_json::Value::Object(conf) = &context.conf {
        for (name, value) in conf {
            params.insert(name.clone(), value.clone());
        }
    }
    let rfc3339 =
        |at: weft_core::Timestamp| at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let task_context = TaskContext {
        dag_id: args.key.dag_id.to_string(),
        task_id: args.key.task_id.to_string(),
        run_id: args.key.run_id.to_string(),
        map_index: args.key.map_index,
        try_number: request.try_number,
        max_tries: task.retries + 1,
        run_type: context.run_type.as_str().to_string(),
        logical_date: rfc3339(context.logical_date),
        data_interval_start: rfc3339(context.data_interval.start),
        data_interval_end: rfc3339(context.data_interval.end),
        params,
        conf: context.conf.clone(),
        xcoms,
        fileloc: dag.spec().fileloc.clone(),
        timezone: dag.spec().timezone.clone(),
    };
    let config = &args.shared.config;
    let limits = AttemptLimits {
        timeout_ms: request.execution_timeout_ms,
        log_bytes_max: config.log_bytes_max,
        sandbox: config.sandbox.clone(),
    };
    let log = LogTarget {
        key: args.key.clone(),
        try_number: request.try_number,
        path: config
            .data_dir
            .join(log_relative_path(&args.key, request.try_number)),
    };
    Ok(AttemptAssignment {
        request,
        task,
        context: task_context,
        limits,
        log,
    })
}

/// Where an attempt's log lives under the data directory, as Airflow lays out its logs.
pub(crate) fn log_relative_path(key: &TaskInstanceKey, try_number: u32) -> String {
    let map = if key.map_index >= 0 {
        format!("/map_index={}", key.map_index)
    } else {
        String::new()
    };
    format!(
        "logs/dag_id={}/run_id={}/task_id={}{}/attempt={}.log",
        key.dag_id,
        sanitize(&key.run_id),
        key.task_id,
        map,
        try_number
    )
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

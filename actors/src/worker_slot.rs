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
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use weft_core::dag_run::AttemptOutcome;

pub(crate) struct WorkerSlot;

pub(crate) struct WorkerSlotState {
    handle: SlotHandle,
    dispatcher: ActorRef<DispatcherMsg>,
}

/// One worker slot as the dispatcher, the slot's actor and the attempt's task share it: the
/// attempt the slot runs. Whichever ends the attempt takes it out and reports: its task when
/// it returns (straight to the attempt's task actor and the dispatcher), the actor on a kill,
/// the dispatcher when the actor died.
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
        worker: None,
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
        let worker = shared.worker().clone();
        let (slot, dispatcher) = (self.running.clone(), dispatcher.clone());
        let execution = tokio::spawn(async move {
            let attempt = executor::worker::run_attempt(&worker, &assignment);
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

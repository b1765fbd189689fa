//! Task actors: one per dispatched or running attempt, each a child of its run's actor. A task
//! actor owns its attempt from dispatch to outcome: it builds the attempt's assignment
//! (reading the upstream results the task reads, in its own time, so the run keeps deciding),
//! enqueues it at the dispatcher, hears the attempt's start and end from the worker slot that
//! runs it, holds its execution-timeout timer, carries a kill, and reports to its run. It
//! decides nothing: the run's core does, and fences every report by the attempt's token.
//!
//! A task actor that fails is rebuilt by its run as an adopting one (`TaskStart::Adopt`): the
//! dispatcher points the attempt's reports at it if the attempt still waits or runs with the
//! same token, and reports it lost otherwise (the core retries the try as its policy allows).

use crate::attempt;
use crate::messages::{DagRunMsg, DispatcherMsg, SlotReport, TaskArgs, TaskMsg, TaskStart};
use crate::shared::Shared;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use weft_core::dag_run::{DispatchRequest, RunContext};
use weft_core::ids::AttemptId;

pub(crate) struct TaskActor;

pub(crate) struct TaskActorState {
    attempt: AttemptId,
    run: ActorRef<DagRunMsg>,
    dispatcher: ActorRef<DispatcherMsg>,
    /// A dispatch that reads upstream results first, done in `post_start` (the run's spawn
    /// waits for `pre_start` only).
    reading: Option<Reading>,
}

struct Reading {
    shared: Arc<Shared>,
    request: DispatchRequest,
    context: Arc<RunContext>,
    run_context: Arc<crate::executor::TaskContext>,
}

impl Actor for TaskActor {
    type Msg = TaskMsg;
    type State = TaskActorState;
    type Arguments = TaskArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TaskMsg>,
        args: TaskArgs,
    ) -> Result<TaskActorState, ActorProcessingErr> {
        let TaskArgs {
            shared,
            run,
            dispatcher,
            start,
        } = args;
        let mut state = TaskActorState {
            attempt: start.attempt().clone(),
            run,
            dispatcher,
            reading: None,
        };
        match start {
            TaskStart::Dispatch {
                request,
                context,
                run_context,
                results_stored,
            } => {
                let reads = context
                    .dag
                    .task(&request.attempt.key.task_id)
                    .is_some_and(attempt::reads_results);
                if results_stored && reads {
                    state.reading = Some(Reading {
                        shared,
                        request,
                        context,
                        run_context,
                    });
                } else {
                    let results = Default::default();
                    state.enqueue(&myself, &shared, request, &context, &run_context, results);
                }
            }
            TaskStart::Adopt { attempt } => {
                metrics::counter!("weft_task_actors_adopting_total").increment(1);
                let _ = state.dispatcher.cast(DispatcherMsg::Adopt {
                    attempt,
                    reply: myself.clone(),
                });
            }
        }
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<TaskMsg>,
        state: &mut TaskActorState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(Reading {
            shared,
            request,
            context,
            run_context,
        }) = state.reading.take()
        else {
            return Ok(());
        };
        let run = request.attempt.run();
        match attempt::read_results(&shared, &run).await {
            Ok(results) => {
                state.enqueue(&myself, &shared, request, &context, &run_context, results)
            }
            Err(error) => {
                let reason = format!("cannot read upstream results: {error}");
                state.report_lost(&myself, reason);
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<TaskMsg>,
        message: TaskMsg,
        state: &mut TaskActorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TaskMsg::Slot(report) => state.slot_report(&myself, report),
            TaskMsg::Kill => {
                // The dispatcher withdraws the attempt if it waits, or stops it if it runs.
                // Nothing waits for its end: the core has moved the task instance on.
                let (key, token) = (state.attempt.key.clone(), state.attempt.token);
                let _ = state.dispatcher.cast(DispatcherMsg::Cancel { key, token });
                myself.stop(None);
            }
            TaskMsg::ArmTimeout { after, timer } => {
                myself.send_after(after, move || TaskMsg::TimeoutDue(timer));
            }
            TaskMsg::TimeoutDue(timer) => {
                let _ = state.run.cast(DagRunMsg::Timer(timer));
            }
            #[cfg(any(test, feature = "fault-injection"))]
            TaskMsg::Crash => return Err("injected task actor crash".into()),
        }
        Ok(())
    }
}

impl TaskActorState {
    /// Hands the attempt, with its assignment, to the dispatcher.
    fn enqueue(
        &self,
        myself: &ActorRef<TaskMsg>,
        shared: &Shared,
        request: DispatchRequest,
        context: &RunContext,
        run_context: &Arc<crate::executor::TaskContext>,
        results: attempt::Results,
    ) {
        let Some(task) = context.dag.task(&request.attempt.key.task_id) else {
            // The core dispatches only tasks of its DAG; report rather than fail the run.
            let reason = format!("task `{}` is not in the DAG", request.attempt.key.task_id);
            return self.report_lost(myself, reason);
        };
        let assignment = attempt::build_assignment(shared, run_context, task, request, results);
        let _ = self.dispatcher.cast(DispatcherMsg::Enqueue {
            assignment: Arc::new(assignment),
            reply: myself.clone(),
        });
    }

    fn slot_report(&self, myself: &ActorRef<TaskMsg>, report: SlotReport) {
        if report.attempt().token != self.attempt.token {
            // Not this actor's attempt: only a bug sends it here.
            metrics::counter!("weft_invariant_violations_total", "name" => "misaddressed_report")
                .increment(1);
            return;
        }
        let message = match report {
            SlotReport::Started { attempt } => {
                let _ = self.run.cast(DagRunMsg::AttemptStarted { attempt });
                return;
            }
            SlotReport::Finished {
                attempt,
                report,
                started_at,
                start_unreported,
                worker,
            } => DagRunMsg::AttemptFinished {
                attempt,
                report,
                started_at: Some(started_at),
                start_unreported,
                worker,
            },
            SlotReport::Lost {
                attempt,
                reason,
                started_at,
                worker,
            } => DagRunMsg::AttemptFinished {
                attempt,
                report: Box::new(attempt::lost_report(&reason)),
                started_at,
                worker,
                // The start may not have been reported; the run ignores a second one.
                start_unreported: started_at.is_some(),
            },
        };
        let _ = self.run.cast(message);
        myself.stop(None);
    }

    /// The attempt could not be handed to a worker: the run hears it lost (retried as the
    /// task's policy allows).
    fn report_lost(&self, myself: &ActorRef<TaskMsg>, reason: String) {
        let report = SlotReport::Lost {
            attempt: self.attempt.clone(),
            reason,
            started_at: None,
            worker: None,
        };
        self.slot_report(myself, report);
    }
}

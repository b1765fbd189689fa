//! DagRun actors: one per active run. Each drives a `weft_core::dag_run::DagRun` through the
//! run's commit pipeline (`run_pipeline.rs`: a decision's writes coalesced into one store
//! batch, group commit across a wide run, a wide fan-out's opening in chunks, waiting rows
//! deferred, oversized batches cut, each decision's effects kept until its writes are durable),
//! and does what the pipeline leaves to its driver: commits each batch it hands over (tried
//! again while the store is unavailable), arms its timers with `send_after`, performs the
//! durable decisions' effects and publishes their events. Each attempt it dispatches (or
//! adopts, when rebuilt from the store) gets a task actor of its own, a supervised child
//! (`task_actor.rs`), which reports the attempt's start and end. A child that fails is rebuilt
//! as one that adopts the attempt (see `handle_supervisor_evt`).

use crate::attempt::{self, log_relative_path, lost_report};
use crate::events::Event;
use crate::executor::AttemptReport;
use crate::messages::{
    ChangeAnswer, DagRunArgs, DagRunMsg, DispatcherMsg, RunStart, SchedulerMsg, TaskArgs, TaskMsg,
    TaskStart,
};
use crate::run_pipeline::{Decided, Next, RunPipeline};
use crate::shared::Shared;
use foldhash::{HashMap, HashMapExt};
use ractor::{
    Actor, ActorId, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SupervisionEvent,
};
use std::sync::Arc;
use weft_core::dag_run::{AttemptOutcome, DagRun, RunEffect, RunInput, RunTimer};
use weft_core::ids::{AttemptId, RunKey, TaskInstanceKey};
use weft_core::state::{DagRunState, TaskState};
use weft_core::Timestamp;
use weft_storage::{AttemptRow, LogRow, Write, XcomRow};

pub(crate) struct DagRunActor;

pub(crate) struct DagRunActorState {
    shared: Arc<Shared>,
    /// The core state machine and the commit pipeline around it.
    pipeline: RunPipeline<RpcReplyPort<ChangeAnswer>>,
    key: RunKey,
    scheduler: ActorRef<SchedulerMsg>,
    dispatcher: ActorRef<DispatcherMsg>,
    /// The run was re-opened: `Start` waits for the clear or mark that re-opened it.
    start_deferred: bool,
    /// Changes that came after the run's end was decided, answered once it is durable.
    handed_back: Vec<RpcReplyPort<ChangeAnswer>>,
    /// What each attempt is told about the run (see `attempt::run_task_context`).
    task_context: Arc<crate::executor::TaskContext>,
    /// The task actor of each task instance's current attempt, and the instance of each task
    /// actor (to tell which one a supervision event is about).
    tasks: HashMap<TaskInstanceKey, TaskChild>,
    task_of_actor: HashMap<ActorId, TaskInstanceKey>,
}

/// The task actor of an attempt.
struct TaskChild {
    actor: ActorRef<TaskMsg>,
    token: u64,
}

impl Actor for DagRunActor {
    type Msg = DagRunMsg;
    type State = DagRunActorState;
    type Arguments = DagRunArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<DagRunMsg>,
        args: DagRunArgs,
    ) -> Result<DagRunActorState, ActorProcessingErr> {
        let key = RunKey {
            dag_id: args.context.dag.dag_name().clone(),
            run_id: args.context.run_id.clone(),
        };
        let results_stored = matches!(args.start, RunStart::Recovered { .. });
        let start_deferred = matches!(
            args.start,
            RunStart::Recovered {
                start_with_change: true,
                ..
            }
        );
        let task_context = Arc::new(attempt::run_task_context(&args.context));
        let (run, stored_state) = match args.start {
            RunStart::Fresh => (DagRun::new(args.context), DagRunState::Running),
            RunStart::Recovered {
                state,
                task_instances,
                started_at,
                ..
            } => {
                let run = DagRun::recover(args.context, state, task_instances);
                let run = match started_at {
                    Some(started_at) => run.with_started_at(started_at),
                    None => run,
                };
                (run, state)
            }
        };
        Ok(DagRunActorState {
            shared: args.shared,
            pipeline: RunPipeline::new(run, stored_state, results_stored),
            key,
            scheduler: args.scheduler,
            dispatcher: args.dispatcher,
            start_deferred,
            handed_back: Vec::new(),
            task_context,
            tasks: HashMap::new(),
            task_of_actor: HashMap::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<DagRunMsg>,
        state: &mut DagRunActorState,
    ) -> Result<(), ActorProcessingErr> {
        if state.start_deferred {
            return Ok(());
        }
        state.decide(&myself, RunInput::Start, Vec::new()).await
    }

    async fn handle(
        &self,
        myself: ActorRef<DagRunMsg>,
        message: DagRunMsg,
        state: &mut DagRunActorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DagRunMsg::AttemptStarted { attempt } => {
                let input = RunInput::AttemptStarted { attempt };
                state.decide(&myself, input, Vec::new()).await?;
            }
            DagRunMsg::AttemptFinished {
                attempt,
                report,
                started_at,
                start_unreported,
                worker,
            } => {
                let attempt = FinishedAttempt {
                    attempt,
                    started_at,
                    start_unreported,
                    worker,
                };
                state.attempt_finished(&myself, attempt, *report).await?;
            }
            DagRunMsg::Timer(timer) => {
                state
                    .decide(&myself, RunInput::TimerFired(timer), Vec::new())
                    .await?;
            }
            DagRunMsg::PastTaskFinished {
                task_id,
                state: past,
            } => {
                let input = RunInput::PastTaskFinished {
                    task_id,
                    state: past,
                };
                state.decide(&myself, input, Vec::new()).await?;
            }
            DagRunMsg::Clear {
                task_ids,
                downstream,
                upstream,
                reply,
            } => {
                let mut extra = Vec::new();
                for task_id in &task_ids {
                    for record in state
                        .pipeline
                        .task_instances()
                        .filter(|record| &record.key.task_id == task_id)
                    {
                        extra.push(Write::DeleteXcoms {
                            key: record.key.clone(),
                        });
                    }
                }
                let input = RunInput::Clear {
                    task_ids,
                    downstream,
                    upstream,
                };
                state.decide_change(&myself, input, extra, reply).await?;
            }
            DagRunMsg::MarkState {
                task_id,
                map_index,
                state: target,
                reply,
            } => {
                let input = RunInput::MarkState {
                    task_id,
                    map_index,
                    state: target,
                };
                state
                    .decide_change(&myself, input, Vec::new(), reply)
                    .await?;
            }
            DagRunMsg::Flushed(result) => state.flushed(&myself, result).await?,
            DagRunMsg::FlushDue => {
                state.pipeline.flush_due();
                state.flush(&myself).await?;
            }
            DagRunMsg::DeferredRowsDue => {
                state.pipeline.deferred_rows_due(crate::shared::now());
                state.flush(&myself).await?;
            }
            #[cfg(any(test, feature = "fault-injection"))]
            DagRunMsg::Crash => return Err("injected dag run actor crash".into()),
            DagRunMsg::StandDown => state.stand_down(&myself),
            #[cfg(any(test, feature = "fault-injection"))]
            DagRunMsg::CrashTask { key } => {
                if let Some(child) = state.tasks.get(&key) {
                    let _ = child.actor.cast(TaskMsg::Crash);
                }
            }
        }
        Ok(())
    }

    /// A task actor stopped (its attempt ended, or it was killed) or failed. A failed one is
    /// rebuilt, if its attempt is still the current one of its task instance, as a task actor
    /// that adopts the attempt: it hears the attempt's end if the attempt still waits or runs,
    /// or reports it lost (a lost try, retried as the task's policy allows).
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<DagRunMsg>,
        event: SupervisionEvent,
        state: &mut DagRunActorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, error) = match event {
            SupervisionEvent::ActorTerminated(cell, ..) => (cell, None),
            SupervisionEvent::ActorFailed(cell, error) => (cell, Some(error)),
            _ => return Ok(()),
        };
        let Some(key) = state.task_of_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        let current = state
            .tasks
            .get(&key)
            .is_some_and(|child| child.actor.get_id() == cell.get_id());
        if !current {
            return Ok(());
        }
        let Some(child) = state.tasks.remove(&key) else {
            return Ok(());
        };
        let Some(error) = error else {
            return Ok(());
        };
        let attempt = state
            .pipeline
            .run()
            .task_instance(&key.task_id, key.map_index)
            .filter(|record| record.state.is_active() && record.token == child.token)
            .map(|record| record.attempt_id());
        let Some(attempt) = attempt else {
            return Ok(());
        };
        tracing::error!(task = %key, %error, "task actor failed; rebuilding it to adopt its attempt");
        metrics::counter!("weft_task_actors_rebuilt_total").increment(1);
        if !state.ending() {
            state
                .spawn_task(&myself, TaskStart::Adopt { attempt })
                .await;
        }
        Ok(())
    }
}

impl DagRunActorState {
    async fn attempt_finished(
        &mut self,
        myself: &ActorRef<DagRunMsg>,
        attempt: FinishedAttempt,
        mut report: AttemptReport,
    ) -> Result<(), ActorProcessingErr> {
        let FinishedAttempt {
            attempt,
            started_at,
            start_unreported,
            worker,
        } = attempt;
        refuse_oversized_result(&mut report);
        let key = attempt.key.clone();
        let try_number = attempt.try_number;
        let now = crate::shared::now();
        // The attempt's own records go in the same batch as the decision, and only if the run
        // accepts the result (current try and token): a fenced-out result leaves no trace.
        let mut extra = vec![Write::PutAttempt(AttemptRow {
            attempt: attempt.clone(),
            state: attempt_state(&report.outcome),
            started_at: started_at.unwrap_or(now),
            ended_at: Some(now),
            worker: worker.unwrap_or_else(|| weft_core::dispatch::LOCAL_WORKER.to_string()),
            note: outcome_note(&report.outcome),
        })];
        if report.log_bytes > 0 {
            extra.push(Write::PutLog(LogRow {
                key: key.clone(),
                try_number,
                path: log_relative_path(&key, try_number),
                bytes: report.log_bytes,
                truncated: report.log_truncated,
            }));
        }
        if let (AttemptOutcome::Success { .. }, Some(value)) = (&report.outcome, &report.result) {
            extra.push(Write::PutXcom(XcomRow {
                key: key.clone(),
                name: "return_value".to_string(),
                value: value.clone(),
            }));
        }
        let prelude = match (start_unreported, started_at) {
            (true, Some(started_at)) => Some((
                started_at,
                RunInput::AttemptStarted {
                    attempt: attempt.clone(),
                },
            )),
            _ => None,
        };
        let input = RunInput::AttemptFinished {
            attempt,
            outcome: report.outcome,
        };
        // The pipeline includes `extra` only if the core takes this report as the current
        // attempt's.
        self.decide_with(myself, prelude, input, extra, None).await
    }

    async fn decide(
        &mut self,
        myself: &ActorRef<DagRunMsg>,
        input: RunInput,
        extra: Vec<Write>,
    ) -> Result<(), ActorProcessingErr> {
        self.decide_with(myself, None, input, extra, None).await
    }

    /// A decision ended the run (it may not be durable yet): no other is taken (see
    /// `ChangeAnswer::RunEnded`). Every run actor's core starts unfinished, so its state is
    /// finished only once one of this actor's decisions ended it.
    fn ending(&self) -> bool {
        self.pipeline.ending()
    }

    /// A change by hand (clear, mark); on a re-opened run, the change comes before `Start`.
    async fn decide_change(
        &mut self,
        myself: &ActorRef<DagRunMsg>,
        change: RunInput,
        extra: Vec<Write>,
        reply: RpcReplyPort<ChangeAnswer>,
    ) -> Result<(), ActorProcessingErr> {
        if self.ending() {
            self.handed_back.push(reply);
            return Ok(());
        }
        if std::mem::take(&mut self.start_deferred) {
            let now = crate::shared::now();
            return self
                .decide_with(
                    myself,
                    Some((now, change)),
                    RunInput::Start,
                    extra,
                    Some(reply),
                )
                .await;
        }
        self.decide_with(myself, None, change, extra, Some(reply))
            .await
    }

    /// Feed one input to the core (after `prelude`, an earlier input at its own time, if any)
    /// through the pipeline, which gathers the resulting writes (plus `extra`, for an attempt's
    /// end only when the core accepts the report) into the next batch, then commit what is
    /// due (see `flush`).
    #[tracing::instrument(level = "debug", skip_all, fields(run = %self.key))]
    async fn decide_with(
        &mut self,
        myself: &ActorRef<DagRunMsg>,
        prelude: Option<(Timestamp, RunInput)>,
        input: RunInput,
        extra: Vec<Write>,
        reply: Option<RpcReplyPort<ChangeAnswer>>,
    ) -> Result<(), ActorProcessingErr> {
        let now = crate::shared::now();
        let wants = self.pipeline.decide(now, prelude, input, extra, reply);
        if let Some(delay) = wants.deferred_rows_after {
            myself.send_after(delay, || DagRunMsg::DeferredRowsDue);
        }
        self.flush(myself).await
    }

    /// Drives the pipeline: hands the next batch to the store (in a task of its own, which
    /// tries it again while the store is unavailable and reports `Flushed`), performs the
    /// decisions that are durable, and arms the flush timer while decisions are held back for
    /// a shared commit. Decisions made while a batch is being committed share the next one.
    async fn flush(&mut self, myself: &ActorRef<DagRunMsg>) -> Result<(), ActorProcessingErr> {
        loop {
            match self.pipeline.next_step() {
                Next::Commit(batch) => {
                    self.commit(myself, batch);
                    return Ok(());
                }
                Next::Perform(decided) => self.perform_decided(myself, decided).await?,
                Next::Wait { arm_flush } => {
                    if let Some(delay) = arm_flush {
                        myself.send_after(delay, || DagRunMsg::FlushDue);
                    }
                    return Ok(());
                }
                Next::Idle => return Ok(()),
            }
        }
    }

    /// Writes one batch in a task of its own; its answer comes back as `Flushed`.
    fn commit(&self, myself: &ActorRef<DagRunMsg>, batch: Vec<Write>) {
        let (shared, myself) = (self.shared.clone(), myself.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let gone = || {
                matches!(
                    myself.get_status(),
                    ActorStatus::Stopping | ActorStatus::Stopped
                )
            };
            // While the store is unavailable, the batch is tried again (backoff, each
            // failure logged and counted) for as long as it takes; the decisions it holds
            // stay in the pipeline meanwhile, and later ones join the next batch.
            let Some(result) = shared.write_until_answered(batch, gone).await else {
                return;
            };
            metrics::histogram!("weft_run_persist_seconds").record(started.elapsed().as_secs_f64());
            let _ = myself.cast(DagRunMsg::Flushed(result));
        });
    }

    /// The batch being committed is durable, or refused. On a conflict (a guard did not hold:
    /// the store holds something this actor does not know of) the actor fails and its
    /// supervisor rebuilds the run from the store. Any other refusal is for good (see
    /// `fail_refused`). A store that is unavailable is not an answer: the write is tried again
    /// until the store answers (see `commit`).
    async fn flushed(
        &mut self,
        myself: &ActorRef<DagRunMsg>,
        result: weft_storage::Result<()>,
    ) -> Result<(), ActorProcessingErr> {
        match result {
            Ok(()) => {}
            Err(error) if error.is_conflict() => return Err(error.into()),
            Err(weft_storage::Error::Fenced {
                run,
                epoch,
                current,
            }) => {
                tracing::warn!(%run, epoch, current, "the run's shard has a newer owner; standing down");
                metrics::counter!("weft_run_writes_fenced_total").increment(1);
                self.stand_down(myself);
                return Ok(());
            }
            Err(error) => return self.fail_refused(myself, error).await,
        }
        let decided = self.pipeline.committed();
        self.perform_decided(myself, decided).await?;
        self.flush(myself).await
    }

    /// Another cell decides for this run now: stop its attempts (withdrawn if they wait,
    /// killed if they run; their results would be refused by the fence anyway) and stop,
    /// writing nothing.
    fn stand_down(&mut self, myself: &ActorRef<DagRunMsg>) {
        for record in self.pipeline.task_instances() {
            if record.state.is_active() {
                let _ = self.dispatcher.cast(DispatcherMsg::Cancel {
                    key: record.key.clone(),
                    token: record.token,
                });
            }
        }
        myself.stop(Some("stood down: the shard has another owner".to_string()));
    }

    /// The store refused a batch of this run for good (over a limit, corrupt, a row gone):
    /// the same batch would be refused again, and a run waiting for it would hang. The run
    /// fails visibly instead: the refusal is logged and counted, the run is stored failed (its
    /// task instances keep what is durable), its attempts are stopped and the scheduler is
    /// told. What was decided and not written is dropped; a change waiting for it gets no
    /// answer (its caller hears that the run stopped).
    async fn fail_refused(
        &mut self,
        myself: &ActorRef<DagRunMsg>,
        error: weft_storage::Error,
    ) -> Result<(), ActorProcessingErr> {
        tracing::error!(run = %self.key, %error, "the store refused a batch of the run for good; the run fails");
        metrics::counter!("weft_run_batches_refused_total").increment(1);
        for record in self.pipeline.task_instances() {
            if record.state.is_active() {
                let _ = self.dispatcher.cast(DispatcherMsg::Cancel {
                    key: record.key.clone(),
                    token: record.token,
                });
            }
        }
        // Their task actors stop with this actor.
        let now = crate::shared::now();
        let failed = Write::UpdateRun {
            key: self.key.clone(),
            expected: DagRunState::Running,
            state: DagRunState::Failed,
            started_at: None,
            ended_at: Some(now),
        };
        // A failure to store the failure fails the actor: the run is rebuilt from the store,
        // decides again and, refused again, comes back here.
        self.shared.write(vec![failed]).await?;
        self.shared.publish(Event::RunChanged {
            run: self.key.clone(),
            state: DagRunState::Failed,
            at: now,
        });
        for reply in self.handed_back.drain(..) {
            let _ = reply.send(ChangeAnswer::RunEnded);
        }
        let _ = self.scheduler.cast(SchedulerMsg::RunFinished {
            run: self.key.clone(),
            state: DagRunState::Failed,
            actor: myself.get_id(),
        });
        myself.stop(None);
        Ok(())
    }

    async fn perform_decided(
        &mut self,
        myself: &ActorRef<DagRunMsg>,
        decided: Vec<Decided<RpcReplyPort<ChangeAnswer>>>,
    ) -> Result<(), ActorProcessingErr> {
        for decision in decided {
            if self.perform_decision(myself, decision).await? {
                // The run is over: what was decided after its end does not matter.
                break;
            }
        }
        Ok(())
    }

    /// Publishes a durable decision's events and performs its effects; `true` when it
    /// finished the run.
    async fn perform_decision(
        &mut self,
        myself: &ActorRef<DagRunMsg>,
        decision: Decided<RpcReplyPort<ChangeAnswer>>,
    ) -> Result<bool, ActorProcessingErr> {
        let Decided {
            events,
            effects,
            finished,
            reply,
        } = decision;
        let now = crate::shared::now();
        for event in events {
            if let Event::TaskChanged { key, state, .. } = &event {
                if state.is_finished() && self.depends_on_past_downstream(&key.task_id) {
                    let _ = self.scheduler.cast(SchedulerMsg::TaskFinalized {
                        run: self.key.clone(),
                        logical_date: self.pipeline.run().context().logical_date,
                        task_id: key.task_id.to_string(),
                        state: *state,
                    });
                }
            }
            self.shared.publish(event);
        }
        for effect in effects {
            self.perform(myself, effect, now).await?;
        }
        if let Some(reply) = reply {
            let _ = reply.send(ChangeAnswer::Applied);
        }
        if let Some(state) = finished {
            for reply in self.handed_back.drain(..) {
                let _ = reply.send(ChangeAnswer::RunEnded);
            }
            let _ = self.scheduler.cast(SchedulerMsg::RunFinished {
                run: self.key.clone(),
                state,
                actor: myself.get_id(),
            });
            myself.stop(None);
            return Ok(true);
        }
        Ok(false)
    }

    fn depends_on_past_downstream(&self, task_id: &str) -> bool {
        self.pipeline
            .run()
            .context()
            .dag
            .task(task_id)
            .is_some_and(|task| task.depends_on_past)
    }

    async fn perform(
        &mut self,
        myself: &ActorRef<DagRunMsg>,
        effect: RunEffect,
        now: Timestamp,
    ) -> Result<(), ActorProcessingErr> {
        match effect {
            RunEffect::Dispatch(request) => {
                let start = TaskStart::Dispatch {
                    request,
                    context: self.pipeline.shared_context().clone(),
                    run_context: self.task_context.clone(),
                    results_stored: self.pipeline.results_stored(),
                };
                self.spawn_task(myself, start).await;
            }
            RunEffect::Adopt { attempt } => {
                self.spawn_task(myself, TaskStart::Adopt { attempt }).await;
            }
            RunEffect::Kill { attempt } => match self.current_task(&attempt) {
                // The task actor carries the kill, and stops.
                Some(child) => {
                    let _ = child.actor.cast(TaskMsg::Kill);
                    self.tasks.remove(&attempt.key);
                }
                // An attempt without a task actor (its start failed): the dispatcher
                // withdraws it if it waits, or stops it if it runs.
                None => {
                    let (key, token) = (attempt.key, attempt.token);
                    let _ = self.dispatcher.cast(DispatcherMsg::Cancel { key, token });
                }
            },
            RunEffect::SetTimer { at, timer } => {
                let after = (at - now).to_std().unwrap_or_default();
                if let RunTimer::ExecutionTimeout { attempt } = &timer {
                    // The attempt's task actor holds its timeout; an attempt that has ended
                    // (its start reported with its end) has none to hold.
                    if let Some(child) = self.current_task(attempt) {
                        let _ = child.actor.cast(TaskMsg::ArmTimeout { after, timer });
                    }
                    return Ok(());
                }
                myself.send_after(after, move || DagRunMsg::Timer(timer));
            }
            RunEffect::PersistTask { .. } | RunEffect::PersistRun { .. } => {}
        }
        Ok(())
    }

    /// The task actor of `attempt`, if it is the current one of its task instance.
    fn current_task(&self, attempt: &AttemptId) -> Option<&TaskChild> {
        self.tasks
            .get(&attempt.key)
            .filter(|child| child.token == attempt.token)
    }

    /// Starts the task actor of an attempt, as a child of this run's actor. One that cannot be
    /// started (the runtime is shutting down) is a lost try.
    async fn spawn_task(&mut self, myself: &ActorRef<DagRunMsg>, start: TaskStart) {
        let attempt = start.attempt().clone();
        let args = TaskArgs {
            shared: self.shared.clone(),
            run: myself.clone(),
            dispatcher: self.dispatcher.clone(),
            start,
        };
        match crate::tree::spawn_task(args, myself.get_cell()).await {
            Ok(actor) => {
                self.task_of_actor
                    .insert(actor.get_id(), attempt.key.clone());
                let child = TaskChild {
                    actor,
                    token: attempt.token,
                };
                self.tasks.insert(attempt.key, child);
            }
            Err(error) => {
                let reason = format!("cannot start the attempt's task actor: {error}");
                let _ = myself.cast(DagRunMsg::attempt_lost(attempt, &reason));
            }
        }
    }
}

impl DagRunMsg {
    /// An attempt that could not be handed to a worker, reported as lost (retried as the
    /// task's policy allows).
    pub(crate) fn attempt_lost(attempt: AttemptId, reason: &str) -> DagRunMsg {
        DagRunMsg::AttemptFinished {
            attempt,
            report: Box::new(lost_report(reason)),
            started_at: None,
            start_unreported: false,
            worker: None,
        }
    }
}

/// The attempt an `AttemptFinished` is about.
struct FinishedAttempt {
    attempt: AttemptId,
    started_at: Option<Timestamp>,
    start_unreported: bool,
    worker: Option<String>,
}

/// A result over the XCom limit fails the attempt (for good: a retry would produce it again)
/// instead of failing the whole store batch.
fn refuse_oversized_result(report: &mut AttemptReport) {
    let Some(value) = &report.result else { return };
    let size = serde_json::to_vec(value)
        .map(|bytes| bytes.len())
        .unwrap_or(usize::MAX);
    if size > weft_core::limits::XCOM_BYTES_MAX {
        report.outcome = AttemptOutcome::Failed {
            reason: format!(
                "task result is {size} bytes, over the limit of {} bytes: return a smaller value or write it to storage and return its location",
                weft_core::limits::XCOM_BYTES_MAX
            ),
            retryable: false,
        };
        report.result = None;
    }
}

fn attempt_state(outcome: &AttemptOutcome) -> TaskState {
    match outcome {
        AttemptOutcome::Success { .. } => TaskState::Success,
        AttemptOutcome::Skipped => TaskState::Skipped,
        AttemptOutcome::Failed { .. } | AttemptOutcome::TimedOut | AttemptOutcome::Lost { .. } => {
            TaskState::Failed
        }
    }
}

fn outcome_note(outcome: &AttemptOutcome) -> Option<String> {
    match outcome {
        AttemptOutcome::Failed { reason, .. } => Some(reason.clone()),
        AttemptOutcome::TimedOut => Some("execution timeout".to_string()),
        AttemptOutcome::Lost { reason } => Some(format!("lost: {reason}")),
        AttemptOutcome::Success { .. } | AttemptOutcome::Skipped => None,
    }
}

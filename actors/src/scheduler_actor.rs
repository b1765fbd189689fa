//! The Scheduler actor: drives `weft_core::scheduler::Scheduler`, sleeps until the next due
//! time (one timer, never a scan), creates runs in the store and supervises one DagRun actor
//! per active run, rebuilding a failed one from the store.

use crate::engine::UpsertOutcome;
use crate::error::EngineError;
use crate::events::Event;
use crate::messages::{
    ChangeAnswer, DagRunArgs, DagRunMsg, DispatcherMsg, RunChange, RunStart, SchedulerArgs,
    SchedulerMsg,
};
use crate::shared::Shared;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use weft_core::dag::Dag;
use weft_core::dag_run::RunContext;
use weft_core::ids::RunKey;
use weft_core::lease::ShardId;
use weft_core::scheduler::{Scheduler, SchedulerEffect, SchedulerInput};
use weft_core::spec::DagSpec;
use weft_core::state::{DagRunState, RunType, TaskState};
use weft_core::Timestamp;
use weft_storage::{DagVersionRow, RunRow, Write};

/// How often a change may be handed back by a run that ended before it (see `change_run`).
const CHANGE_ROUNDS_MAX: u32 = 2;

pub(crate) struct SchedulerActor;

pub(crate) struct SchedulerState {
    shared: Arc<Shared>,
    dispatcher: ActorRef<DispatcherMsg>,
    core: Scheduler,
    /// Latest definition of every DAG.
    dags: HashMap<String, (Arc<Dag>, String)>,
    /// Definitions by version hash: runs keep the version they were created with.
    versions: HashMap<String, Arc<Dag>>,
    runs: HashMap<RunKey, ActorRef<DagRunMsg>>,
    /// Active runs of each DAG by logical date (to route depends_on_past notices).
    by_date: HashMap<String, BTreeMap<Timestamp, RunKey>>,
    /// Failures of each active run's actor so far: the backoff of its next rebuild.
    restarts: HashMap<RunKey, u32>,
    wake: Option<ractor::concurrency::JoinHandle<Result<(), ractor::MessagingErr<SchedulerMsg>>>>,
    seed_counter: u64,
    /// The message being handled answers nobody (a tick, a run's end, a rebuild): the runs it
    /// creates and starts wait for the store however long it is unavailable (see
    /// `write_run`), since giving up would lose a schedule tick or fail the scheduler.
    patient: bool,
}

impl Actor for SchedulerActor {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = SchedulerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SchedulerMsg>,
        args: SchedulerArgs,
    ) -> Result<SchedulerState, ActorProcessingErr> {
        Ok(SchedulerState {
            shared: args.shared,
            dispatcher: args.dispatcher,
            core: Scheduler::new(),
            dags: HashMap::new(),
            versions: HashMap::new(),
            runs: HashMap::new(),
            by_date: HashMap::new(),
            restarts: HashMap::new(),
            wake: None,
            seed_counter: 0,
            patient: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        state.recover(&myself).await
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        message: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SchedulerMsg::UpsertDag { spec, reply } => {
                let result = state.upsert_dag(&myself, *spec).await;
                let _ = reply.send(result);
            }
            SchedulerMsg::SetPaused {
                dag_id,
                paused,
                reply,
            } => {
                let result = state.set_paused(&myself, dag_id, paused).await;
                let _ = reply.send(result);
            }
            SchedulerMsg::Trigger {
                dag_id,
                logical_date,
                conf,
                reply,
            } => {
                let result = state.trigger(&myself, dag_id, logical_date, conf).await;
                let _ = reply.send(result);
            }
            SchedulerMsg::Backfill {
                dag_id,
                from,
                to,
                reply,
            } => {
                let result = state.backfill(&myself, dag_id, from, to).await;
                let _ = reply.send(result);
            }
            SchedulerMsg::Clear {
                run,
                task_ids,
                downstream,
                upstream,
                reply,
            } => {
                let change = RunChange::Clear {
                    task_ids,
                    downstream,
                    upstream,
                };
                state.change_run(&myself, run, change, reply, 0).await;
            }
            SchedulerMsg::MarkTask {
                run,
                task_id,
                map_index,
                state: target,
                reply,
            } => {
                let change = RunChange::Mark {
                    task_id,
                    map_index,
                    state: target,
                };
                state.change_run(&myself, run, change, reply, 0).await;
            }
            SchedulerMsg::ChangeHandedBack {
                run,
                change,
                reply,
                round,
            } => state.change_run(&myself, run, change, reply, round).await,
            SchedulerMsg::Tick => {
                let started = std::time::Instant::now();
                state.patient = true;
                let fed = state.feed(&myself, SchedulerInput::Tick).await;
                state.patient = false;
                fed?;
                metrics::histogram!("weft_scheduler_loop_seconds")
                    .record(started.elapsed().as_secs_f64());
            }
            SchedulerMsg::RunFinished {
                run,
                state: final_state,
                actor,
            } => {
                if state.runs.get(&run).map(|current| current.get_id()) != Some(actor) {
                    // Its finish was already applied when the run was re-opened.
                    tracing::debug!(%run, "stale run-finished report ignored");
                    return Ok(());
                }
                state.patient = true;
                let over = state.run_over(&myself, &run, final_state).await;
                state.patient = false;
                over?;
            }
            SchedulerMsg::TaskFinalized {
                run,
                logical_date,
                task_id,
                state: task_state,
            } => {
                let next = state
                    .by_date
                    .get(run.dag_id.as_str())
                    .and_then(|runs| runs.range(logical_date..).find(|(_, key)| **key != run))
                    .and_then(|(_, key)| state.runs.get(key));
                if let Some(next) = next {
                    let _ = next.cast(DagRunMsg::PastTaskFinished {
                        task_id,
                        state: task_state,
                    });
                }
            }
            SchedulerMsg::ShardGained { shard, epoch } => {
                state.patient = true;
                let gained = state.shard_gained(&myself, shard, epoch).await;
                state.patient = false;
                gained?;
            }
            SchedulerMsg::ShardLost { shard } => state.shard_lost(&myself, shard).await?,
            SchedulerMsg::RebuildRun { run } => {
                state.patient = true;
                state.rebuild_run(&myself, run).await;
                state.patient = false;
            }
            #[cfg(any(test, feature = "fault-injection"))]
            SchedulerMsg::CrashRun { run } => {
                if let Some(actor) = state.runs.get(&run) {
                    let _ = actor.cast(DagRunMsg::Crash);
                }
            }
            #[cfg(any(test, feature = "fault-injection"))]
            SchedulerMsg::CrashTask { key } => {
                let run = RunKey {
                    dag_id: key.dag_id.clone(),
                    run_id: key.run_id.clone(),
                };
                if let Some(actor) = state.runs.get(&run) {
                    let _ = actor.cast(DagRunMsg::CrashTask { key });
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SchedulerMsg>,
        event: SupervisionEvent,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, error) = event {
            let Some(run) = state
                .runs
                .iter()
                .find(|(_, actor)| actor.get_id() == cell.get_id())
                .map(|(run, _)| run.clone())
            else {
                return Ok(());
            };
            state.untrack_run(&run);
            metrics::counter!("weft_run_actor_restarts_total").increment(1);
            tracing::warn!(%run, %error, "dag run actor failed; rebuilding it from the store");
            state.rebuild_run_later(&myself, run);
        }
        Ok(())
    }
}

impl SchedulerState {
    /// Rebuild everything this engine decides for from the store: DAGs, their schedules,
    /// active runs. In a cell that is nothing yet: shards come with `ShardGained`.
    async fn recover(&mut self, myself: &ActorRef<SchedulerMsg>) -> Result<(), ActorProcessingErr> {
        let shared = self.shared.clone();
        self.recover_where(myself, None, |dag_id| shared.owns(dag_id))
            .await
    }

    /// Load the DAGs that `decides` accepts and their unfinished runs from the store, and
    /// schedule them. With `fence`, each unfinished run is first adopted under that epoch (a
    /// batch of only its fence), so a deposed owner's late writes to it are refused.
    async fn recover_where(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        fence: Option<u64>,
        decides: impl Fn(&str) -> bool,
    ) -> Result<(), ActorProcessingErr> {
        let store = self.shared.store.clone();
        for row in store.dags().await? {
            if !decides(&row.dag_id) {
                continue;
            }
            let Some(version) = store.dag_version(&row.dag_id, &row.latest_version).await? else {
                tracing::error!(dag_id = %row.dag_id, "latest dag version missing from the store");
                continue;
            };
            let dag = match self.load_version(&version) {
                Ok(dag) => dag,
                Err(error) => {
                    tracing::error!(dag_id = %row.dag_id, %error, "stored dag no longer valid");
                    continue;
                }
            };
            self.dags.insert(
                row.dag_id.clone(),
                (dag.clone(), row.latest_version.clone()),
            );
            self.set_dag_limit(&dag);
            let last_automated = store
                .latest_scheduled_run(&row.dag_id)
                .await?
                .map(|run| run.data_interval);
            let input = SchedulerInput::DagUpserted {
                dag,
                paused: row.is_paused,
                last_automated,
            };
            self.feed(myself, input).await?;
        }
        let active: Vec<RunRow> = store
            .runs_in_states(&[DagRunState::Queued, DagRunState::Running])
            .await?
            .into_iter()
            .filter(|run| {
                decides(&run.key.dag_id) && self.dags.contains_key(run.key.dag_id.as_str())
            })
            .collect();
        if let Some(epoch) = fence {
            for run in &active {
                let adopt = Write::Fence {
                    run: run.key.clone(),
                    epoch,
                };
                self.shared.write(vec![adopt]).await?;
            }
        }
        for run in &active {
            let input = SchedulerInput::RunRecovered {
                dag_id: run.key.dag_id.to_string(),
                run_id: run.key.run_id.to_string(),
                run_type: run.run_type,
                logical_date: run.logical_date,
                data_interval: run.data_interval,
                state: run.state,
            };
            self.feed(myself, input).await?;
        }
        for run in active
            .iter()
            .filter(|run| run.state == DagRunState::Running)
        {
            self.resume_run(myself, &run.key).await?;
        }
        Ok(self.feed(myself, SchedulerInput::Tick).await?)
    }

    /// This cell took `shard`: decide for its DAGs from now on.
    async fn shard_gained(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        shard: ShardId,
        epoch: u64,
    ) -> Result<(), ActorProcessingErr> {
        let Some(ownership) = self.shared.config.ownership.clone() else {
            return Ok(());
        };
        if ownership.epoch_of(shard) != Some(epoch) {
            // Lost again before this message was handled.
            return Ok(());
        }
        let started = std::time::Instant::now();
        let result = self
            .recover_where(myself, Some(epoch), |dag_id| {
                ownership.shard_of(dag_id) == shard
            })
            .await;
        match &result {
            Ok(()) => {
                tracing::info!(shard, epoch, elapsed = ?started.elapsed(), "took over a shard")
            }
            Err(error) => tracing::warn!(shard, epoch, %error, "taking over a shard failed"),
        }
        metrics::counter!("weft_cell_shards_gained_total").increment(1);
        // A fence refused here means another cell took the shard meanwhile: its `Lost` follows.
        match result {
            Err(error)
                if matches!(
                    error.downcast_ref::<weft_storage::Error>(),
                    Some(weft_storage::Error::Fenced { .. })
                ) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// This cell no longer holds `shard`: forget its DAGs' schedules and stand its runs down.
    async fn shard_lost(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        shard: ShardId,
    ) -> Result<(), ActorProcessingErr> {
        let Some(ownership) = self.shared.config.ownership.clone() else {
            return Ok(());
        };
        let dags: Vec<String> = self
            .dags
            .keys()
            .filter(|dag_id| ownership.shard_of(dag_id) == shard)
            .cloned()
            .collect();
        for dag_id in dags {
            self.feed(
                myself,
                SchedulerInput::DagRemoved {
                    dag_id: dag_id.clone(),
                },
            )
            .await?;
            self.by_date.remove(&dag_id);
        }
        let runs: Vec<RunKey> = self
            .runs
            .keys()
            .filter(|run| ownership.shard_of(&run.dag_id) == shard)
            .cloned()
            .collect();
        for run in runs {
            if let Some(actor) = self.untrack_run(&run) {
                let _ = actor.cast(DagRunMsg::StandDown);
            }
            self.restarts.remove(&run);
        }
        metrics::counter!("weft_cell_shards_lost_total").increment(1);
        tracing::info!(shard, "stood down from a shard");
        Ok(())
    }

    /// Refuse a command for a DAG whose shard another cell holds.
    fn check_owned(&self, dag_id: &str) -> Result<(), EngineError> {
        match &self.shared.config.ownership {
            Some(ownership) if ownership.epoch_of_dag(dag_id).is_none() => {
                Err(EngineError::NotOwner {
                    dag_id: dag_id.to_string(),
                    shard: ownership.shard_of(dag_id),
                })
            }
            _ => Ok(()),
        }
    }

    fn load_version(&mut self, version: &DagVersionRow) -> Result<Arc<Dag>, EngineError> {
        if let Some(dag) = self.versions.get(&version.version_hash) {
            return Ok(dag.clone());
        }
        let spec: DagSpec = serde_json::from_str(&version.spec_json).map_err(|error| {
            EngineError::Store(weft_storage::Error::Corrupt(format!(
                "dag version {} is not valid json: {error}",
                version.version_hash
            )))
        })?;
        let dag = Arc::new(Dag::from_spec(spec)?);
        self.versions
            .insert(version.version_hash.clone(), dag.clone());
        Ok(dag)
    }

    fn set_dag_limit(&self, dag: &Dag) {
        let _ = self.dispatcher.cast(DispatcherMsg::SetDagLimit {
            dag_id: dag.dag_id().to_string(),
            max_active_tasks: dag.spec().max_active_tasks,
        });
    }

    async fn upsert_dag(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        spec: DagSpec,
    ) -> Result<UpsertOutcome, EngineError> {
        let dag = Arc::new(Dag::from_spec(spec)?);
        let dag_id = dag.dag_id().to_string();
        let version_hash = dag.spec().version_hash();
        if self
            .dags
            .get(&dag_id)
            .is_some_and(|(_, current)| *current == version_hash)
        {
            return Ok(UpsertOutcome::Unchanged);
        }
        let is_new = !self.dags.contains_key(&dag_id);
        let spec_json = serde_json::to_string(dag.spec())
            .map_err(|error| EngineError::Rejected(format!("dag does not serialize: {error}")))?;
        let paused_if_new = dag.spec().is_paused_upon_creation.unwrap_or(false);
        self.shared
            .write(vec![Write::PutDag {
                version: DagVersionRow {
                    dag_id: dag_id.clone(),
                    version_hash: version_hash.clone(),
                    spec_json,
                    created_at: crate::shared::now(),
                },
                fileloc: dag.spec().fileloc.clone(),
                paused_if_new,
            }])
            .await?;
        let row = self.shared.store.dag(&dag_id).await?;
        let paused = row.map(|row| row.is_paused).unwrap_or(paused_if_new);
        self.versions.insert(version_hash.clone(), dag.clone());
        if !self.shared.owns(&dag_id) {
            // Stored for its owner; this cell schedules it if it takes its shard.
            self.shared.publish(Event::DagChanged { dag_id });
            return Ok(if is_new {
                UpsertOutcome::Created
            } else {
                UpsertOutcome::Updated
            });
        }
        self.dags
            .insert(dag_id.clone(), (dag.clone(), version_hash));
        self.set_dag_limit(&dag);
        let last_automated = self
            .shared
            .store
            .latest_scheduled_run(&dag_id)
            .await?
            .map(|run| run.data_interval);
        self.feed(
            myself,
            SchedulerInput::DagUpserted {
                dag,
                paused,
                last_automated,
            },
        )
        .await?;
        self.shared.publish(Event::DagChanged { dag_id });
        Ok(if is_new {
            UpsertOutcome::Created
        } else {
            UpsertOutcome::Updated
        })
    }

    async fn set_paused(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        dag_id: String,
        paused: bool,
    ) -> Result<(), EngineError> {
        self.check_owned(&dag_id)?;
        if !self.dags.contains_key(&dag_id) {
            return Err(EngineError::UnknownDag(dag_id));
        }
        self.shared
            .write(vec![Write::SetPaused {
                dag_id: dag_id.clone(),
                paused,
            }])
            .await?;
        self.feed(
            myself,
            SchedulerInput::Paused {
                dag_id: dag_id.clone(),
                paused,
            },
        )
        .await?;
        self.shared.publish(Event::DagChanged { dag_id });
        Ok(())
    }

    async fn trigger(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        dag_id: String,
        logical_date: Option<Timestamp>,
        conf: serde_json::Value,
    ) -> Result<RunKey, EngineError> {
        self.check_owned(&dag_id)?;
        if !self.dags.contains_key(&dag_id) {
            return Err(EngineError::UnknownDag(dag_id));
        }
        let conf_bytes = serde_json::to_vec(&conf)
            .map(|bytes| bytes.len())
            .unwrap_or(0);
        if conf_bytes > weft_core::limits::CONF_BYTES_MAX {
            return Err(EngineError::Rejected(format!(
                "conf is {conf_bytes} bytes, over the limit of {} bytes",
                weft_core::limits::CONF_BYTES_MAX
            )));
        }
        let input = SchedulerInput::Trigger {
            dag_id: dag_id.clone(),
            run_id: None,
            logical_date,
            conf,
        };
        let effects = self.feed_collect(myself, input).await?;
        for effect in &effects {
            match effect {
                SchedulerEffect::CreateRun {
                    dag_id: created,
                    run_id,
                    run_type: RunType::Manual,
                    ..
                } if *created == dag_id => {
                    return Ok(RunKey {
                        dag_id: dag_id.into(),
                        run_id: run_id.as_str().into(),
                    });
                }
                SchedulerEffect::Rejected { reason, .. } => {
                    return Err(EngineError::Rejected(reason.clone()))
                }
                _ => {}
            }
        }
        Err(EngineError::Rejected(format!(
            "dag `{dag_id}` did not create a run"
        )))
    }

    async fn backfill(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        dag_id: String,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<RunKey>, EngineError> {
        self.check_owned(&dag_id)?;
        if !self.dags.contains_key(&dag_id) {
            return Err(EngineError::UnknownDag(dag_id));
        }
        let input = SchedulerInput::Backfill {
            dag_id: dag_id.clone(),
            from,
            to,
        };
        let effects = self.feed_collect(myself, input).await?;
        let mut created = Vec::new();
        for effect in &effects {
            match effect {
                SchedulerEffect::CreateRun {
                    run_id,
                    run_type: RunType::Backfill,
                    ..
                } => created.push(RunKey {
                    dag_id: dag_id.as_str().into(),
                    run_id: run_id.as_str().into(),
                }),
                SchedulerEffect::Rejected { reason, .. } => {
                    return Err(EngineError::Rejected(reason.clone()))
                }
                _ => {}
            }
        }
        Ok(created)
    }

    /// Hands a change to the run's actor (re-opening a finished run) and answers `reply` once
    /// it is durable, without waiting for it here: the run's answer is awaited by a task of
    /// its own, so the scheduler serves other messages meanwhile (a change can wait for the
    /// store as long as an outage lasts). A change that reaches the actor after it decided the
    /// run's end is handed back once that end is durable (`ChangeHandedBack`); the run, finished
    /// by then, is re-opened for it.
    async fn change_run(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        run: RunKey,
        change: RunChange,
        reply: RpcReplyPort<Result<(), EngineError>>,
        round: u32,
    ) {
        // A re-opened run starts with the change, so it cannot end before it: a second hand
        // back would be a bug, not a race.
        if round >= CHANGE_ROUNDS_MAX {
            let error = EngineError::Unavailable("the run kept ending before the change".into());
            let _ = reply.send(Err(error));
            return;
        }
        if let Err(error) = self.check_owned(&run.dag_id) {
            let _ = reply.send(Err(error));
            return;
        }
        let actor = match self.active_run_actor(myself, &run).await {
            Ok(actor) => actor,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        let scheduler = myself.clone();
        tokio::spawn(async move {
            let answer = actor.call(|port| change.message(port), None).await;
            let result = match answer {
                Ok(ractor::rpc::CallResult::Success(ChangeAnswer::Applied)) => Ok(()),
                Ok(ractor::rpc::CallResult::Success(ChangeAnswer::RunEnded)) => {
                    let handed_back = SchedulerMsg::ChangeHandedBack {
                        run,
                        change,
                        reply,
                        round: round + 1,
                    };
                    // The scheduler is gone (the engine stops): nobody can re-open it.
                    if let Err(ractor::MessagingErr::SendErr(SchedulerMsg::ChangeHandedBack {
                        reply,
                        ..
                    })) = scheduler.cast(handed_back)
                    {
                        let stopped = EngineError::Unavailable("the engine stopped".into());
                        let _ = reply.send(Err(stopped));
                    }
                    return;
                }
                Ok(ractor::rpc::CallResult::Timeout) => Err(EngineError::Unavailable(
                    "the run did not answer".to_string(),
                )),
                Ok(ractor::rpc::CallResult::SenderError) | Err(_) => Err(EngineError::Unavailable(
                    "the run stopped before applying the change".to_string(),
                )),
            };
            let _ = reply.send(result);
        });
    }

    /// The actor of a run, re-opening a finished run (clearing a task of a finished run makes
    /// it run again, as in Airflow).
    async fn active_run_actor(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        run: &RunKey,
    ) -> Result<ActorRef<DagRunMsg>, EngineError> {
        let row = self
            .shared
            .store
            .run(run)
            .await?
            .ok_or_else(|| EngineError::UnknownRun(run.to_string()))?;
        if let Some(actor) = self.runs.get(run) {
            if !row.state.is_finished() {
                return Ok(actor.clone());
            }
            // The actor finished the run and is stopping; its report is still queued behind
            // this call. Apply the finish now (the report will be ignored as stale) and re-open
            // the run with a new actor.
            Box::pin(self.run_over(myself, run, row.state)).await?;
        }
        if row.state.is_finished() {
            // Re-opening is the core's decision: the run holds a `max_active_runs` place again.
            let reopen = SchedulerInput::Reopen {
                dag_id: run.dag_id.to_string(),
                run_id: run.run_id.to_string(),
                run_type: row.run_type,
                logical_date: row.logical_date,
            };
            let effects = self.feed_collect(myself, reopen).await?;
            if let Some(reason) = effects.iter().find_map(|effect| match effect {
                SchedulerEffect::Rejected { reason, .. } => Some(reason.clone()),
                _ => None,
            }) {
                return Err(EngineError::Rejected(reason));
            }
            self.shared
                .write(vec![Write::UpdateRun {
                    key: run.clone(),
                    expected: row.state,
                    state: DagRunState::Running,
                    started_at: None,
                    ended_at: None,
                }])
                .await?;
        }
        if row.state.is_finished() {
            let task_instances = self.shared.store.task_instances(run).await?;
            let start = RunStart::Recovered {
                state: DagRunState::Running,
                task_instances,
                started_at: row.started_at,
                start_with_change: true,
            };
            self.spawn_run(myself, run, start).await?;
        } else {
            self.resume_run(myself, run).await?;
        }
        self.runs
            .get(run)
            .cloned()
            .ok_or_else(|| EngineError::UnknownRun(run.to_string()))
    }

    async fn feed(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        input: SchedulerInput,
    ) -> Result<(), EngineError> {
        self.feed_collect(myself, input).await?;
        Ok(())
    }

    /// Feed one input to the core scheduler and perform its effects; returns them.
    async fn feed_collect(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        input: SchedulerInput,
    ) -> Result<Vec<SchedulerEffect>, EngineError> {
        let now = crate::shared::now();
        let effects = self.core.handle(now, input);
        // A run created and started by the same step is written running at once: one commit
        // instead of two before its first task (see `create_run`).
        let starting: HashSet<(&str, &str)> = effects
            .iter()
            .filter_map(|effect| match effect {
                SchedulerEffect::StartRun { dag_id, run_id } => {
                    Some((dag_id.as_str(), run_id.as_str()))
                }
                _ => None,
            })
            .collect();
        let mut created_running: HashMap<(&str, &str), RunRow> = HashMap::new();
        for effect in &effects {
            match effect {
                SchedulerEffect::CreateRun { dag_id, run_id, .. }
                    if starting.contains(&(dag_id.as_str(), run_id.as_str())) =>
                {
                    if let Some(row) = self.create_run(effect, now, true).await? {
                        created_running.insert((dag_id.as_str(), run_id.as_str()), row);
                    }
                }
                SchedulerEffect::StartRun { dag_id, run_id } => {
                    match created_running.remove(&(dag_id.as_str(), run_id.as_str())) {
                        Some(row) => self.spawn_run_of(myself, row, RunStart::Fresh).await?,
                        None => self.perform(myself, effect, now).await?,
                    }
                }
                _ => self.perform(myself, effect, now).await?,
            }
        }
        Ok(effects)
    }

    /// Writes the run a `CreateRun` effect asks for, queued or (when the same step starts it)
    /// running; returns the row written, or `None` when the run exists already (creation is
    /// idempotent: one run per tick) or its DAG is gone.
    async fn create_run(
        &mut self,
        effect: &SchedulerEffect,
        now: Timestamp,
        running: bool,
    ) -> Result<Option<RunRow>, EngineError> {
        let SchedulerEffect::CreateRun {
            dag_id,
            run_id,
            run_type,
            logical_date,
            data_interval,
            conf,
        } = effect
        else {
            return Ok(None);
        };
        let Some((_, version_hash)) = self.dags.get(dag_id) else {
            return Ok(None);
        };
        self.seed_counter += 1;
        let row = RunRow {
            key: RunKey {
                dag_id: dag_id.as_str().into(),
                run_id: run_id.as_str().into(),
            },
            run_type: *run_type,
            state: if running {
                DagRunState::Running
            } else {
                DagRunState::Queued
            },
            logical_date: *logical_date,
            data_interval: *data_interval,
            version_hash: version_hash.clone(),
            conf: conf.clone(),
            seed: draw_seed(now, self.seed_counter),
            created_at: now,
            started_at: running.then_some(now),
            ended_at: None,
        };
        match self.write_run(Write::CreateRun(row.clone())).await {
            Ok(()) => {
                let states: &[DagRunState] = if running {
                    &[DagRunState::Queued, DagRunState::Running]
                } else {
                    &[DagRunState::Queued]
                };
                for &state in states {
                    self.shared.publish(Event::RunChanged {
                        run: row.key.clone(),
                        state,
                        at: now,
                    });
                }
                Ok(Some(row))
            }
            Err(weft_storage::Error::Conflict { what, detail }) => {
                tracing::debug!(%what, %detail, "run exists already");
                Ok(None)
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn perform(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        effect: &SchedulerEffect,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        match effect {
            SchedulerEffect::CreateRun { .. } => {
                self.create_run(effect, now, false).await?;
            }
            SchedulerEffect::StartRun { dag_id, run_id } => {
                let run = RunKey {
                    dag_id: dag_id.as_str().into(),
                    run_id: run_id.as_str().into(),
                };
                self.start_run(myself, &run, now).await?;
            }
            SchedulerEffect::WakeAt(at) => {
                if let Some(previous) = self.wake.take() {
                    previous.abort();
                }
                let delay = (*at - now).to_std().unwrap_or_default();
                self.wake = Some(myself.send_after(delay, || SchedulerMsg::Tick));
            }
            SchedulerEffect::Rejected { dag_id, reason } => {
                tracing::warn!(%dag_id, %reason, "scheduler rejected a request");
            }
            // Performed by `active_run_actor`, which asked for it with the change to apply.
            SchedulerEffect::ReopenRun { .. } => {}
        }
        Ok(())
    }

    async fn start_run(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        run: &RunKey,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let write = Write::UpdateRun {
            key: run.clone(),
            expected: DagRunState::Queued,
            state: DagRunState::Running,
            started_at: Some(now),
            ended_at: None,
        };
        match self.write_run(write).await {
            Ok(()) => {}
            Err(weft_storage::Error::Conflict { .. }) => {
                tracing::debug!(%run, "run is no longer queued; not starting it");
                return self.start_refused(myself, run).await;
            }
            Err(error) => return Err(error.into()),
        }
        self.shared.publish(Event::RunChanged {
            run: run.clone(),
            state: DagRunState::Running,
            at: now,
        });
        self.spawn_run(myself, run, RunStart::Fresh).await
    }

    /// The store refused to start a run: tell the core what the store holds (so a run that
    /// does not exist stops holding a `max_active_runs` place), and resume a running run that
    /// has no actor.
    async fn start_refused(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        run: &RunKey,
    ) -> Result<(), EngineError> {
        let stored = self.shared.store.run(run).await?.map(|row| row.state);
        let input = SchedulerInput::StartRefused {
            dag_id: run.dag_id.to_string(),
            run_id: run.run_id.to_string(),
            stored,
        };
        Box::pin(self.feed_collect(myself, input)).await?;
        if stored == Some(DagRunState::Running) && !self.runs.contains_key(run) {
            self.resume_run(myself, run).await?;
        }
        Ok(())
    }

    /// Writes a run's creation or start: while handling a message that answers nobody, tried
    /// again until the store answers (as a run actor's batches); otherwise given up after a
    /// few tries, the error going back to the caller.
    async fn write_run(&self, write: Write) -> weft_storage::Result<()> {
        if !self.patient {
            return self.shared.write(vec![write]).await;
        }
        let answer = self
            .shared
            .write_until_answered(vec![write], || false)
            .await;
        answer.unwrap_or_else(|| Err(weft_storage::Error::Unavailable("abandoned".to_string())))
    }

    /// Rebuilds a failed run actor after a backoff that grows with the run's failures in a
    /// row, up to the configured `store_retry_backoff_ms_max`: a store outage is not a restart
    /// loop, and however long it lasts the run comes back once the store answers. A run is
    /// never left without an actor while it is active.
    fn rebuild_run_later(&mut self, myself: &ActorRef<SchedulerMsg>, run: RunKey) {
        let failures = self.restarts.entry(run.clone()).or_insert(0);
        *failures = failures.saturating_add(1);
        let delay = self.shared.backoff().nth_delay(*failures);
        myself.send_after(delay, move || SchedulerMsg::RebuildRun { run });
    }

    async fn rebuild_run(&mut self, myself: &ActorRef<SchedulerMsg>, run: RunKey) {
        if self.runs.contains_key(&run) || !self.restarts.contains_key(&run) {
            // Rebuilt meanwhile (a clear or mark of the run), or over.
            return;
        }
        if let Err(error) = self.resume_run(myself, &run).await {
            metrics::counter!("weft_run_actor_rebuilds_failed_total").increment(1);
            tracing::error!(%run, %error, "could not rebuild dag run actor; trying again");
            self.rebuild_run_later(myself, run);
        }
    }

    /// Rebuild a running run's actor from the store.
    async fn resume_run(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        run: &RunKey,
    ) -> Result<(), EngineError> {
        let row = self.shared.store.run(run).await?;
        if let Some(row) = row.as_ref().filter(|row| row.state.is_finished()) {
            // Its final state was applied but the acknowledgement lost (the actor failed on
            // the retry's conflict): the run is over, not to be resumed.
            self.shared.publish(Event::RunChanged {
                run: run.clone(),
                state: row.state,
                at: crate::shared::now(),
            });
            Box::pin(self.run_over(myself, run, row.state)).await?;
            return Ok(());
        }
        let task_instances = self.shared.store.task_instances(run).await?;
        let started_at = row.and_then(|row| row.started_at);
        let start = RunStart::Recovered {
            state: DagRunState::Running,
            task_instances,
            started_at,
            start_with_change: false,
        };
        self.spawn_run(myself, run, start).await
    }

    async fn spawn_run(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        run: &RunKey,
        start: RunStart,
    ) -> Result<(), EngineError> {
        if self.runs.contains_key(run) {
            return Ok(());
        }
        let row = self
            .shared
            .store
            .run(run)
            .await?
            .ok_or_else(|| EngineError::UnknownRun(run.to_string()))?;
        self.spawn_run_of(myself, row, start).await
    }

    /// `spawn_run` with the run's row in hand.
    async fn spawn_run_of(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        row: RunRow,
        start: RunStart,
    ) -> Result<(), EngineError> {
        let run = &row.key;
        if self.runs.contains_key(run) {
            return Ok(());
        }
        let dag = self.dag_for_run(&row).await?;
        let past = self.past_states(&dag, &row).await?;
        let context = RunContext {
            dag,
            run_id: row.key.run_id.clone(),
            run_type: row.run_type,
            logical_date: row.logical_date,
            data_interval: row.data_interval,
            conf: row.conf.clone(),
            seed: row.seed,
            past,
        };
        let args = DagRunArgs {
            shared: self.shared.clone(),
            context,
            start,
            scheduler: myself.clone(),
            dispatcher: self.dispatcher.clone(),
        };
        let actor = crate::tree::spawn_run(args, myself.get_cell()).await?;
        self.track_run(run, actor);
        self.by_date
            .entry(run.dag_id.to_string())
            .or_default()
            .insert(row.logical_date, run.clone());
        Ok(())
    }

    async fn dag_for_run(&mut self, row: &RunRow) -> Result<Arc<Dag>, EngineError> {
        if let Some(dag) = self.versions.get(&row.version_hash) {
            return Ok(dag.clone());
        }
        let version = self
            .shared
            .store
            .dag_version(&row.key.dag_id, &row.version_hash)
            .await?
            .ok_or_else(|| {
                EngineError::UnknownDag(format!("{}@{}", row.key.dag_id, row.version_hash))
            })?;
        self.load_version(&version)
    }

    /// States of the previous run's task instances, for tasks that depend on the past.
    async fn past_states(
        &self,
        dag: &Dag,
        row: &RunRow,
    ) -> Result<BTreeMap<String, TaskState>, EngineError> {
        if !dag.spec().tasks.iter().any(|task| task.depends_on_past) {
            return Ok(BTreeMap::new());
        }
        let Some(previous) = self
            .shared
            .store
            .previous_run(&row.key.dag_id, row.logical_date)
            .await?
        else {
            return Ok(BTreeMap::new());
        };
        let records = self.shared.store.task_instances(&previous.key).await?;
        Ok(records
            .into_iter()
            .filter(|record| record.key.map_index < 0)
            .map(|record| (record.key.task_id.to_string(), record.state))
            .collect())
    }

    /// A run is over: drop its actor's entry and tell the core, which frees its place and
    /// starts what waited for it.
    async fn run_over(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        run: &RunKey,
        state: DagRunState,
    ) -> Result<(), EngineError> {
        self.forget_run(run);
        let input = SchedulerInput::RunFinished {
            dag_id: run.dag_id.to_string(),
            run_id: run.run_id.to_string(),
            state,
        };
        self.feed(myself, input).await
    }

    /// Hold `actor` as the actor of `run`; a cell counts the run as its shard's work.
    fn track_run(&mut self, run: &RunKey, actor: ActorRef<DagRunMsg>) {
        if self.runs.insert(run.clone(), actor).is_none() {
            if let Some(ownership) = &self.shared.config.ownership {
                ownership.run_started(&run.dag_id);
            }
        }
    }

    fn untrack_run(&mut self, run: &RunKey) -> Option<ActorRef<DagRunMsg>> {
        let actor = self.runs.remove(run);
        if actor.is_some() {
            if let Some(ownership) = &self.shared.config.ownership {
                ownership.run_stopped(&run.dag_id);
            }
        }
        actor
    }

    fn forget_run(&mut self, run: &RunKey) {
        self.untrack_run(run);
        self.restarts.remove(run);
        if let Some(dates) = self.by_date.get_mut(run.dag_id.as_str()) {
            dates.retain(|_, key| key != run);
        }
    }
}

/// A run's jitter seed: drawn by the driver (never by the core) and stored with the run, so a
/// rebuilt run keeps the same retry delays.
fn draw_seed(now: Timestamp, counter: u64) -> u64 {
    let nanos = now.timestamp_nanos_opt().unwrap_or(0) as u64;
    weft_core::retry::splitmix64(nanos ^ weft_core::retry::splitmix64(counter))
}

//! The supervision tree: the one module that names actor types and spawns them. Actor modules
//! spawn their children through it and talk to each other through `messages`, so that no actor
//! module imports another.
//!
//! ```text
//! (engine) ──> Scheduler ──> DagRun (one per active run) ──> Task (one per dispatched attempt)
//!          ──> Dispatcher ──> WorkerSlot × N
//! ```

use crate::dag_run_actor::DagRunActor;
use crate::dispatcher_actor::DispatcherActor;
use crate::messages::{
    DagRunArgs, DagRunMsg, DispatcherMsg, SchedulerArgs, SchedulerMsg, TaskArgs, TaskMsg,
    WorkerSlotArgs, WorkerSlotMsg,
};
use crate::scheduler_actor::SchedulerActor;
use crate::shared::Shared;
use crate::task_actor::TaskActor;
use crate::worker_slot::WorkerSlot;
use ractor::{Actor, ActorCell, ActorRef, SpawnErr};
use std::sync::Arc;

/// The dispatcher, at the root (the engine holds it).
pub(crate) async fn spawn_dispatcher(
    shared: Arc<Shared>,
) -> Result<ActorRef<DispatcherMsg>, SpawnErr> {
    Ok(Actor::spawn(None, DispatcherActor, shared).await?.0)
}

/// The scheduler, at the root (the engine holds it).
pub(crate) async fn spawn_scheduler(
    args: SchedulerArgs,
) -> Result<ActorRef<SchedulerMsg>, SpawnErr> {
    Ok(Actor::spawn(None, SchedulerActor, args).await?.0)
}

/// The actor of one run, supervised by `scheduler`.
pub(crate) async fn spawn_run(
    args: DagRunArgs,
    scheduler: ActorCell,
) -> Result<ActorRef<DagRunMsg>, SpawnErr> {
    Ok(Actor::spawn_linked(None, DagRunActor, args, scheduler)
        .await?
        .0)
}

/// The actor of one attempt, supervised by `run`, the actor of its run.
pub(crate) async fn spawn_task(
    args: TaskArgs,
    run: ActorCell,
) -> Result<ActorRef<TaskMsg>, SpawnErr> {
    Ok(Actor::spawn_linked(None, TaskActor, args, run).await?.0)
}

/// One worker slot, supervised by `dispatcher`.
pub(crate) async fn spawn_worker_slot(
    args: WorkerSlotArgs,
    dispatcher: ActorCell,
) -> Result<ActorRef<WorkerSlotMsg>, SpawnErr> {
    Ok(Actor::spawn_linked(None, WorkerSlot, args, dispatcher)
        .await?
        .0)
}

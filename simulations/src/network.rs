//! The message layer between the scheduler, the DagRun drivers, the dispatcher and the
//! workers. It can drop, delay, duplicate and reorder messages: the seam where the multi-cell
//! QUIC transport will plug in. A dropped message is not retransmitted; what heals it is
//! written down in `sim.rs` (worker supervision, the run's timers, and recovery from the store
//! after a restart).

use weft_core::dag_run::{AttemptOutcome, DispatchRequest};
use weft_core::ids::{AttemptId, RunKey, TaskInstanceKey};
use weft_core::state::DagRunState;
use weft_core::Timestamp;

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// DagRun -> dispatcher: a task instance is ready (sent after its queued state is durable).
    Enqueue(DispatchRequest),
    /// DagRun -> dispatcher: withdraw the waiting request of a task instance.
    Cancel { key: TaskInstanceKey, token: u64 },
    /// DagRun (rebuilt from the store) -> dispatcher: an attempt the store holds as running.
    /// Reports reach the run by its key, so an attempt still on a worker is adopted as it is;
    /// one that is not is reported lost (as the task actor's adoption does).
    Adopt { attempt: AttemptId },
    /// Worker -> dispatcher: the slot is free again. `epoch` is the node incarnation that
    /// owned the slot; a release from an older incarnation means nothing to a new dispatcher.
    Release {
        epoch: u64,
        worker: usize,
        attempt: AttemptId,
    },
    /// Worker -> DagRun.
    AttemptStarted { attempt: AttemptId },
    /// Worker (or its supervisor, or the dispatcher for an attempt it could not adopt) ->
    /// DagRun. `worker`: the worker that ran it, if one did.
    AttemptFinished {
        attempt: AttemptId,
        outcome: AttemptOutcome,
        started_at: Option<Timestamp>,
        worker: Option<usize>,
    },
    /// DagRun -> worker: stop the attempt with this token.
    Kill { key: TaskInstanceKey, token: u64 },
    /// DagRun -> scheduler.
    RunFinished { run: RunKey, state: DagRunState },
}

impl Message {
    /// A short name for traces.
    pub fn describe(&self) -> String {
        match self {
            Message::Enqueue(request) => {
                format!(
                    "enqueue {} try {}",
                    request.attempt.key, request.attempt.try_number
                )
            }
            Message::Cancel { key, token } => format!("cancel {key} token {token}"),
            Message::Adopt { attempt } => format!("adopt {attempt}"),
            Message::Release { attempt, .. } => format!("release {attempt}"),
            Message::AttemptStarted { attempt } => format!("started {attempt}"),
            Message::AttemptFinished { attempt, .. } => format!("finished {attempt}"),
            Message::Kill { key, token } => format!("kill {key} token {token}"),
            Message::RunFinished { run, state } => format!("run finished {run} {state}"),
        }
    }
}

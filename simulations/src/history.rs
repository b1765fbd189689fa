//! What the simulator records while it runs: plain facts (a run was created, a task instance
//! write was acknowledged, an attempt started on a worker, a result was accepted, the node
//! crashed), each at a simulated time. The checkers judge this history and nothing else, so a
//! hand-built history can test each checker.

use std::fmt::Write as _;
use weft_core::dag_run::TaskVersion;
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::spec::DagSpec;
use weft_core::state::{DagRunState, RunType, TaskState};
use weft_core::Timestamp;
use weft_storage::RunRow;

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// The store acknowledged `CreateRun`.
    RunCreated {
        run: RunKey,
        run_type: RunType,
        logical_date: Timestamp,
    },
    /// The store applied a run's state change (acknowledged, or applied with the
    /// acknowledgement lost).
    RunStateChanged {
        run: RunKey,
        state: DagRunState,
    },
    /// The store applied a task instance write (`from: None` is its creation). A run's batch
    /// writes each task instance once, from the first guard to the last record, so one write
    /// may span several transitions.
    TaskWritten {
        key: TaskInstanceKey,
        from: Option<TaskVersion>,
        to: TaskVersion,
        max_tries: u32,
        /// The row's own times (`None`: the record's time stands for them): when the run
        /// queued its try and when the try ended. A batch is applied some time after its
        /// decisions, so these say when they were made.
        queued_at: Option<Timestamp>,
        ended_at: Option<Timestamp>,
    },
    /// A worker began executing an attempt.
    AttemptStarted {
        attempt: u64,
        key: TaskInstanceKey,
        try_number: u32,
        token: u64,
        worker: usize,
        pool: String,
        pool_slots: u32,
    },
    /// An attempt stopped executing (finished, killed, or died with its worker or node).
    AttemptEnded {
        attempt: u64,
        how: String,
    },
    /// The run accepted a worker's start report (queued -> running) for this attempt, and the
    /// store applied the batch that holds it.
    StartAccepted {
        key: TaskInstanceKey,
        try_number: u32,
        token: u64,
    },
    /// The run accepted an attempt's result and the store applied it: the attempt's row (which
    /// a run writes only with an accepted result), naming the attempt the worker ran, with the
    /// state it ended in.
    ResultAccepted {
        key: TaskInstanceKey,
        try_number: u32,
        token: u64,
        state: TaskState,
    },
    /// Ends the records of one batch of this run (its writes, then its accepted reports),
    /// which the store applied atomically.
    BatchApplied {
        run: RunKey,
    },
    /// A store batch failed or its acknowledgement was lost.
    StoreFault {
        what: String,
    },
    NodeCrashed,
    /// The quiet period ended: every DAG paused, runs in flight drain.
    AllPaused,
    NodeRestarted,
    WorkerDied {
        worker: usize,
    },
    ClockJumped {
        ms: u64,
    },
    MessageDropped {
        what: String,
    },
    /// A paused worker's attempt stops progressing (SIGSTOP), and goes on (SIGCONT).
    AttemptSuspended {
        attempt: u64,
    },
    AttemptResumed {
        attempt: u64,
    },
    /// The node accepted a remote worker's session and sent `WorkerJoined`.
    RemoteJoined {
        worker: String,
        session: u64,
    },
    /// The node treated a session as left: `WorkerLeft`, its attempts released (recorded
    /// after them).
    RemoteLeft {
        worker: String,
        session: u64,
        why: String,
    },
    /// The dispatcher placed an attempt on a remote slot of this session (and sent `Assign`).
    RemotePlaced {
        worker: String,
        session: u64,
        slot: u32,
        key: TaskInstanceKey,
        try_number: u32,
        token: u64,
    },
    /// The node released an attempt it had placed on a remote slot.
    RemoteReleased {
        worker: String,
        session: u64,
        key: TaskInstanceKey,
        try_number: u32,
        token: u64,
    },
    /// The node accepted a report (started or finished) from this session of a worker.
    ReportAccepted {
        worker: String,
        session: u64,
        key: TaskInstanceKey,
        try_number: u32,
        token: u64,
    },
    /// A fault broke the link of a session the node holds (cut, worker death, a pause past
    /// the lease): the node must treat the session as left within its idle timeout.
    LinkLost {
        worker: String,
        session: u64,
    },
    /// Something happened to a remote worker or its link (for traces).
    RemoteFault {
        worker: String,
        what: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub at: Timestamp,
    pub record: Record,
}

/// The store as it stands at the end of a seed.
#[derive(Debug, Clone, Default)]
pub struct FinalStore {
    pub runs: Vec<RunRow>,
    pub task_instances: Vec<weft_core::dag_run::TaskInstanceRecord>,
}

#[derive(Debug, Clone, Default)]
pub struct History {
    pub entries: Vec<Entry>,
    /// The DAGs of the seed, as registered.
    pub dags: Vec<DagSpec>,
    /// Pools besides `default_pool`: (name, slots).
    pub pools: Vec<(String, u32)>,
    pub worker_slots: u32,
    /// When faults stopped; liveness is judged after this.
    pub faults_end: Option<Timestamp>,
    /// When every DAG was paused for the drain: ticks due before it must have their run.
    pub schedule_horizon: Option<Timestamp>,
    /// The simulated time the seed ended.
    pub end: Option<Timestamp>,
    pub final_store: FinalStore,
    /// The seed ran out of events or simulated time before its work was done.
    pub budget_exhausted: bool,
    /// Remote workers: (name, slots). Their slots are numbered after the local ones.
    pub remote_workers: Vec<(String, u32)>,
    /// At the end: the attempts the dispatcher counts as started (`None`: the node is down),
    /// and the attempts really executing.
    pub final_started: Option<usize>,
    pub final_executing: usize,
    /// Remote reports the node refused (old session, or an attempt not placed there).
    pub reports_refused: u64,
}

impl History {
    pub fn record(&mut self, at: Timestamp, record: Record) {
        self.entries.push(Entry { at, record });
    }

    pub fn dag(&self, dag_id: &str) -> Option<&DagSpec> {
        self.dags.iter().find(|dag| dag.dag_id == dag_id)
    }

    /// FNV-1a over the rendered entries: equal hashes mean equal traces.
    pub fn trace_hash(&self) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325_u64;
        let mut line = String::new();
        for entry in &self.entries {
            line.clear();
            let _ = write!(line, "{} {:?}", entry.at.timestamp_millis(), entry.record);
            for byte in line.bytes() {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        hash
    }

    /// The entries around `at`, rendered one per line, mentioning `needle` when given.
    pub fn excerpt(&self, at: Option<Timestamp>, needle: &str, lines_max: usize) -> String {
        let matching: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|entry| at.is_none_or(|at| entry.at <= at))
            .filter(|entry| {
                // A subject is rendered `dag/run/task`; records render their keys as fields.
                let text = format!("{:?}", entry.record);
                needle.split('/').all(|part| {
                    text.contains(
                        part.trim_end_matches(|c| c == ']' || c == '[' || char::is_numeric(c)),
                    )
                })
            })
            .collect();
        let skip = matching.len().saturating_sub(lines_max);
        let mut text = String::new();
        for entry in &matching[skip..] {
            let _ = writeln!(text, "  {} {:?}", entry.at.to_rfc3339(), entry.record);
        }
        text
    }
}

/// A broken invariant, named after the checker that found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub checker: &'static str,
    pub message: String,
    /// When it happened, if one instant is to blame.
    pub at: Option<Timestamp>,
    /// A string that picks the relevant entries out of the trace (a task instance or run).
    pub subject: String,
}

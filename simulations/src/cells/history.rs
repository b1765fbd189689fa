//! What the cells simulation records: plain facts at real (simulated) times — a cell acted for
//! a shard, the store applied a lease write, the store accepted or fenced a run write — and the
//! faults. The cells checkers judge this history and nothing else.

use std::fmt::Write as _;
use weft_core::ids::RunKey;
use weft_core::lease::{LeaseOp, LeaseSettings, ShardId};
use weft_core::state::DagRunState;
use weft_core::Timestamp;
use weft_storage::RunRow;

/// A run write a cell sends for a shard it decides for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActKind {
    /// `[CreateRun, Fence]` for a due tick.
    Create,
    /// `[Fence]` alone: adopt a run before acting on it (then read it).
    Adopt,
    /// `[UpdateRun from -> to, Fence]`.
    Update { from: DagRunState, to: DagRunState },
}

/// What a run write the store accepted did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunChange {
    Created { logical_date: Timestamp },
    Adopted,
    State { from: DagRunState, to: DagRunState },
}

#[derive(Debug, Clone, PartialEq)]
pub enum CellRecord {
    /// A cell (incarnation `life` of it) sent a run write for `shard` under `epoch`; the
    /// entry's time is the real time it was sent.
    Act {
        cell: String,
        life: u64,
        shard: ShardId,
        epoch: u64,
        run: RunKey,
        kind: ActKind,
    },
    /// The store applied a lease write (entry time: when it was applied).
    LeaseApplied {
        by: String,
        op: LeaseOp,
        shard: ShardId,
        owner: Option<String>,
        epoch: u64,
        version: u64,
    },
    /// The store accepted a run write fenced by `epoch` (entry time: when it was applied).
    RunAccepted {
        by: String,
        run: RunKey,
        epoch: u64,
        change: RunChange,
    },
    /// The store refused a run write with `Error::Fenced`: the run is owned under `current`.
    RunFenced {
        by: String,
        run: RunKey,
        epoch: u64,
        current: u64,
    },
    /// The keeper of a cell said `Gained` / `Lost` (for traces).
    Gained {
        cell: String,
        life: u64,
        shard: ShardId,
        epoch: u64,
    },
    Lost {
        cell: String,
        life: u64,
        shard: ShardId,
        epoch: u64,
    },
    /// A cell process started (first start, restart after a crash, re-join after leaving).
    Started {
        cell: String,
        life: u64,
    },
    Crashed {
        cell: String,
    },
    /// SIGSTOP for `ms`; the cell's clock runs on.
    Paused {
        cell: String,
        ms: u64,
    },
    Resumed {
        cell: String,
    },
    /// The cell's requests to the store and their replies are lost for `ms`.
    Partitioned {
        cell: String,
        ms: u64,
    },
    /// Every request the cell sends for `ms` is slow to reach the store.
    Slowed {
        cell: String,
        ms: u64,
    },
    /// The cell was asked to leave (`LeaseInput::Leave`).
    Leaving {
        cell: String,
    },
    /// The leaving process exited.
    Left {
        cell: String,
    },
    /// No fault starts after this.
    FaultsEnd,
}

impl CellRecord {
    /// The shard a record is about, if one.
    pub fn shard(&self) -> Option<ShardId> {
        match self {
            CellRecord::Act { shard, .. }
            | CellRecord::LeaseApplied { shard, .. }
            | CellRecord::Gained { shard, .. }
            | CellRecord::Lost { shard, .. } => Some(*shard),
            _ => None,
        }
    }
}

impl CellRecord {
    /// A fault or a process starting or ending: shown in every excerpt.
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            CellRecord::Started { .. }
                | CellRecord::Crashed { .. }
                | CellRecord::Paused { .. }
                | CellRecord::Resumed { .. }
                | CellRecord::Partitioned { .. }
                | CellRecord::Slowed { .. }
                | CellRecord::Leaving { .. }
                | CellRecord::Left { .. }
                | CellRecord::FaultsEnd
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CellEntry {
    pub at: Timestamp,
    pub record: CellRecord,
}

/// A scheduled DAG of the cells workload: ticks every `every_ms` from `start` (its first
/// logical date) while the logical date is at most `end`. With data intervals a tick is due one
/// period after its logical date, otherwise at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellDag {
    pub dag_id: String,
    pub shard: ShardId,
    pub every_ms: u64,
    pub data_intervals: bool,
    pub start: Timestamp,
    pub end: Timestamp,
}

#[derive(Debug, Clone, Default)]
pub struct CellsHistory {
    pub entries: Vec<CellEntry>,
    pub cells: Vec<String>,
    pub settings: LeaseSettings,
    pub dags: Vec<CellDag>,
    /// When the last fault ended; the schedule is judged whole after the settling time.
    pub faults_end: Option<Timestamp>,
    pub end: Option<Timestamp>,
    /// The runs in the store at the end, with the epoch each was last written under.
    pub final_runs: Vec<(RunRow, Option<u64>)>,
    /// The seed hit its event budget before its end.
    pub budget_exhausted: bool,
}

impl CellsHistory {
    pub fn record(&mut self, at: Timestamp, record: CellRecord) {
        self.entries.push(CellEntry { at, record });
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

    /// The last `lines_max` entries up to `at`, one per line: those about the shard when
    /// `subject` starts with `shard N`, else those whose rendering contains `subject`, and the
    /// faults.
    pub fn excerpt(&self, at: Option<Timestamp>, subject: &str, lines_max: usize) -> String {
        let shard: Option<ShardId> = subject
            .strip_prefix("shard ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok());
        let matching: Vec<&CellEntry> = self
            .entries
            .iter()
            .filter(|entry| at.is_none_or(|at| entry.at <= at))
            .filter(|entry| match entry.record.shard() {
                Some(of) if shard.is_some() => shard == Some(of),
                _ if entry.record.is_fault() => true,
                _ => format!("{:?}", entry.record).contains(subject),
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

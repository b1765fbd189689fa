//! The checkers of the cells simulation: plain functions over a [`CellsHistory`]. Their names
//! are constants in [`crate::checkers`] beside the node simulation's; `schedule_exactly_once`
//! is the same invariant as the node's, judged across failovers between cells.
//!
//! Expectations are stated independently of the code under test: due ticks are computed by
//! arithmetic from each DAG's interval (the cells use `weft_core::timetable`), ownership from
//! the lease writes the store applied (the cells use `LeaseKeeper`'s effects).

use super::history::{CellRecord, CellsHistory, RunChange};
use crate::checkers::{
    violation, FENCED_WRITES_REFUSED, ONE_OWNER_PER_EPOCH, SCHEDULE_EXACTLY_ONCE,
};
use crate::history::Violation;
use std::collections::{BTreeMap, BTreeSet};
use weft_core::ids::RunKey;
use weft_core::lease::{LeaseOp, ShardId};
use weft_core::state::{DagRunState, RunType};
use weft_core::Timestamp;

pub type CellsChecker = fn(&CellsHistory) -> Vec<Violation>;

/// Every checker of the cells simulation, by name.
pub const CHECKERS: &[(&str, CellsChecker)] = &[
    (ONE_OWNER_PER_EPOCH, one_owner_per_epoch),
    (SCHEDULE_EXACTLY_ONCE, schedule_exactly_once),
    (FENCED_WRITES_REFUSED, fenced_writes_refused),
];

pub fn check_all(history: &CellsHistory) -> Vec<Violation> {
    CHECKERS
        .iter()
        .flat_map(|(_, checker)| checker(history))
        .collect()
}

/// Ownership, judged on the acts (run writes, at their send times) against the lease writes
/// the store applied:
/// - (a) no two cells (nor two incarnations of one) act for the same (shard, epoch), and a
///   cell acts only under an epoch the store gave it by a take;
/// - (b) no cell acts for (shard, e) after the store applied a take of the shard under a
///   higher epoch: a deposed owner stops deciding before its successor can begin.
///
/// Each broken rule is reported once per (shard, epoch, cell).
pub fn one_owner_per_epoch(history: &CellsHistory) -> Vec<Violation> {
    let mut violations = Vec::new();
    // (shard, epoch) -> the cell a take gave it to.
    let mut given: BTreeMap<(ShardId, u64), &str> = BTreeMap::new();
    // shard -> the newest epoch taken, and when the store applied it.
    let mut newest: BTreeMap<ShardId, (u64, Timestamp)> = BTreeMap::new();
    // (shard, epoch) -> the first cell incarnation that acted under it.
    let mut acting: BTreeMap<(ShardId, u64), (&str, u64)> = BTreeMap::new();
    let mut reported: BTreeSet<(u8, ShardId, u64, &str)> = BTreeSet::new();
    for entry in &history.entries {
        match &entry.record {
            CellRecord::LeaseApplied {
                op: LeaseOp::Take,
                shard,
                owner: Some(owner),
                epoch,
                ..
            } => {
                given.insert((*shard, *epoch), owner);
                let known = newest.entry(*shard).or_insert((*epoch, entry.at));
                if *epoch > known.0 {
                    *known = (*epoch, entry.at);
                }
            }
            CellRecord::Act {
                cell,
                life,
                shard,
                epoch,
                run,
                kind,
            } => {
                let subject = format!("shard {shard} epoch {epoch} {cell}");
                let mut report = |rule: u8, message: String| {
                    if reported.insert((rule, *shard, *epoch, cell.as_str())) {
                        violations.push(violation(
                            ONE_OWNER_PER_EPOCH,
                            Some(entry.at),
                            &subject,
                            message,
                        ));
                    }
                };
                let first = *acting
                    .entry((*shard, *epoch))
                    .or_insert((cell.as_str(), *life));
                if first != (cell.as_str(), *life) {
                    report(
                        0,
                        format!(
                            "{cell} (life {life}) acted ({kind:?} {run}) under epoch {epoch} of \
                             shard {shard}, under which {} (life {}) acted",
                            first.0, first.1
                        ),
                    );
                }
                let owner = given.get(&(*shard, *epoch)).copied();
                if owner != Some(cell.as_str()) {
                    report(
                        1,
                        format!(
                            "{cell} acted ({kind:?} {run}) under epoch {epoch} of shard {shard}, \
                             which the store gave to {owner:?}"
                        ),
                    );
                }
                if let Some((newer, taken_at)) = newest.get(shard) {
                    if newer > epoch {
                        report(
                            2,
                            format!(
                                "{cell} acted ({kind:?} {run}) under epoch {epoch} of shard \
                                 {shard} after the store applied a take under epoch {newer} at \
                                 {}",
                                taken_at.to_rfc3339()
                            ),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    violations
}

/// Every due tick of every DAG has exactly one scheduled run in the store at the end, none at
/// a date that is not a tick, none created before it was due, and every run created reached
/// `success` (the simulation ends well after faults stop and the last tick is due).
pub fn schedule_exactly_once(history: &CellsHistory) -> Vec<Violation> {
    let mut violations = Vec::new();
    if history.budget_exhausted {
        let message = "the seed ran out of events before its end".to_string();
        violations.push(violation(SCHEDULE_EXACTLY_ONCE, history.end, "", message));
    }
    let mut due: BTreeMap<(&str, Timestamp), Timestamp> = BTreeMap::new();
    for dag in &history.dags {
        let every = chrono::TimeDelta::milliseconds(dag.every_ms as i64);
        let mut logical = dag.start;
        while logical <= dag.end {
            let at = if dag.data_intervals {
                logical + every
            } else {
                logical
            };
            due.insert((dag.dag_id.as_str(), logical), at);
            logical += every;
        }
    }
    let mut runs: BTreeMap<(&str, Timestamp), Vec<&RunKey>> = BTreeMap::new();
    for (row, _) in &history.final_runs {
        if row.state != DagRunState::Success {
            let message = format!("run is still {} when the simulation ends", row.state);
            violations.push(violation(
                SCHEDULE_EXACTLY_ONCE,
                history.end,
                &row.key,
                message,
            ));
        }
        if row.run_type != RunType::Scheduled {
            continue;
        }
        let dag_id = row.key.dag_id.as_str();
        runs.entry((dag_id, row.logical_date))
            .or_default()
            .push(&row.key);
        if !due.contains_key(&(dag_id, row.logical_date)) {
            let message = format!("scheduled run {} is not at a tick", row.key.run_id);
            violations.push(violation(SCHEDULE_EXACTLY_ONCE, None, &row.key, message));
        }
    }
    for ((dag_id, logical), keys) in &runs {
        if keys.len() > 1 {
            let message = format!("{} scheduled runs at {logical}: {keys:?}", keys.len());
            violations.push(violation(SCHEDULE_EXACTLY_ONCE, None, dag_id, message));
        }
    }
    let mut missed: BTreeMap<&str, Vec<Timestamp>> = BTreeMap::new();
    for (dag_id, logical) in due.keys() {
        if !runs.contains_key(&(dag_id, *logical)) {
            missed.entry(dag_id).or_default().push(*logical);
        }
    }
    for (dag_id, dates) in missed {
        let message = format!(
            "{} due ticks have no run, first at {}",
            dates.len(),
            dates[0].to_rfc3339()
        );
        violations.push(violation(
            SCHEDULE_EXACTLY_ONCE,
            history.end,
            dag_id,
            message,
        ));
    }
    for entry in &history.entries {
        let CellRecord::RunAccepted {
            run,
            change: RunChange::Created { logical_date },
            ..
        } = &entry.record
        else {
            continue;
        };
        if let Some(due_at) = due.get(&(run.dag_id.as_str(), *logical_date)) {
            if entry.at < *due_at {
                let message = format!("created before it was due at {}", due_at.to_rfc3339());
                violations.push(violation(
                    SCHEDULE_EXACTLY_ONCE,
                    Some(entry.at),
                    run,
                    message,
                ));
            }
        }
    }
    violations
}

/// The store accepts no run write under an epoch older than one the run was already written
/// under, refuses as fenced only writes that are older, and ends with each run's epoch the
/// newest it accepted.
pub fn fenced_writes_refused(history: &CellsHistory) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut epochs: BTreeMap<&RunKey, u64> = BTreeMap::new();
    for entry in &history.entries {
        match &entry.record {
            CellRecord::RunAccepted {
                by,
                run,
                epoch,
                change,
            } => {
                let newest = epochs.entry(run).or_insert(*epoch);
                if *epoch < *newest {
                    let message = format!(
                        "accepted {change:?} by {by} under epoch {epoch}, after a write under \
                         epoch {newest}"
                    );
                    violations.push(violation(
                        FENCED_WRITES_REFUSED,
                        Some(entry.at),
                        run,
                        message,
                    ));
                } else {
                    *newest = *epoch;
                }
            }
            CellRecord::RunFenced {
                by,
                run,
                epoch,
                current,
            } if current <= epoch => {
                let message = format!(
                    "refused a write by {by} under epoch {epoch} as fenced by epoch {current}"
                );
                violations.push(violation(
                    FENCED_WRITES_REFUSED,
                    Some(entry.at),
                    run,
                    message,
                ));
            }
            _ => {}
        }
    }
    for (row, stored) in &history.final_runs {
        let accepted = epochs.get(&row.key).copied();
        if *stored != accepted {
            let message = format!(
                "the store ends with epoch {stored:?}, the newest accepted write had {accepted:?}"
            );
            violations.push(violation(
                FENCED_WRITES_REFUSED,
                history.end,
                &row.key,
                message,
            ));
        }
    }
    violations
}

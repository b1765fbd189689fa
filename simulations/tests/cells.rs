//! The cells simulation as a test: determinism, the canary is caught by the checker that names
//! it, a batch of seeds passes, the faults happen, and each cells checker catches a small
//! hand-built history that breaks its invariant (and accepts it without the break).

use chrono::TimeZone;
use std::collections::BTreeSet;
use weft_core::ids::RunKey;
use weft_core::lease::LeaseOp;
use weft_core::state::{DagRunState, RunType};
use weft_core::timetable::DataInterval;
use weft_core::Timestamp;
use weft_simulations::cells::checkers::{
    check_all, fenced_writes_refused, one_owner_per_epoch, schedule_exactly_once,
};
use weft_simulations::cells::history::{ActKind, CellDag, CellRecord, CellsHistory, RunChange};
use weft_simulations::cells::{self, CellsReport};
use weft_simulations::checkers::{
    FENCED_WRITES_REFUSED, ONE_OWNER_PER_EPOCH, SCHEDULE_EXACTLY_ONCE,
};
use weft_simulations::Canary;
use weft_storage::RunRow;

/// Seeds the passing test checks; the binary (`--seeds N`) covers more.
const SEEDS_PASSING: u64 = 200;
/// The canary must be caught within this many seeds.
const CANARY_SEEDS: u64 = 300;

fn run(seed: u64, canary: Canary) -> CellsReport {
    cells::run(seed, canary)
}

#[test]
fn same_seed_gives_the_same_cells_trace() {
    for seed in [1, 7, 54] {
        let first = run(seed, Canary::Off);
        let second = run(seed, Canary::Off);
        assert_eq!(
            first.trace_hash, second.trace_hash,
            "seed {seed} is not deterministic"
        );
        assert_eq!(first.history.entries, second.history.entries);
        assert!(
            !first.history.entries.is_empty(),
            "seed {seed} recorded nothing"
        );
    }
    let hashes: BTreeSet<u64> = (0..5)
        .map(|seed| run(seed, Canary::Off).trace_hash)
        .collect();
    assert_eq!(
        hashes.len(),
        5,
        "different seeds should give different traces"
    );
}

/// Cells that go on acting after their keeper says `Lost` act beside (or after) the cell that
/// took the shard over.
#[test]
fn the_cell_lease_canary_is_caught_by_one_owner_per_epoch() {
    let caught = (0..CANARY_SEEDS).find(|&seed| {
        run(seed, Canary::IgnoreCellLease)
            .violations
            .iter()
            .any(|violation| violation.checker == ONE_OWNER_PER_EPOCH)
    });
    let Some(seed) = caught else {
        panic!("ignoring Lost went unnoticed in {CANARY_SEEDS} seeds");
    };
    let honest = run(seed, Canary::Off);
    assert!(
        honest.violations.is_empty(),
        "seed {seed} fails without the canary: {:?}",
        honest.violations
    );
}

#[test]
fn cells_seeds_pass_every_checker() {
    for seed in 0..SEEDS_PASSING {
        let report = run(seed, Canary::Off);
        assert_eq!(
            check_all(&report.history),
            report.violations,
            "checking is a pure function of the history"
        );
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?}\nreplay: {}",
            report.violations,
            weft_simulations::replay_command(seed, Canary::Off)
        );
    }
}

/// The faults happen and the paths they open are taken: crashes, pauses, partitions, slow
/// links, leaves; shards taken over after their lease ran out, late writes refused by the
/// fence, runs adopted by a new owner, creations refused because the run existed.
#[test]
fn cells_meet_their_faults() {
    let mut seen = BTreeSet::new();
    for seed in 0..100 {
        let history = run(seed, Canary::Off).history;
        let mut owners = std::collections::BTreeMap::new();
        for entry in &history.entries {
            let what = match &entry.record {
                CellRecord::Crashed { .. } => "crashed",
                CellRecord::Paused { .. } => "paused",
                CellRecord::Partitioned { .. } => "partitioned",
                CellRecord::Slowed { .. } => "slowed",
                CellRecord::Left { .. } => "left",
                CellRecord::RunFenced { .. } => "fenced",
                CellRecord::RunAccepted {
                    change: RunChange::Adopted,
                    ..
                } => "adopted",
                CellRecord::LeaseApplied {
                    op, shard, owner, ..
                } => {
                    let before = owners.insert(*shard, owner.clone());
                    match (op, before) {
                        (LeaseOp::Take, Some(Some(_))) => "taken after the lease ran out",
                        (LeaseOp::Release, _) => "handed over",
                        _ => continue,
                    }
                }
                _ => continue,
            };
            seen.insert(what);
        }
    }
    assert_eq!(seen.len(), 9, "only {seen:?} happened in 100 seeds");
}

// ---- hand-built histories ----

fn at(second: u32) -> Timestamp {
    chrono::Utc
        .with_ymd_and_hms(2024, 1, 1, 0, 0, second)
        .unwrap()
}

fn run_key(second: u32) -> RunKey {
    RunKey {
        dag_id: "d".into(),
        run_id: format!("scheduled__{second}").into(),
    }
}

fn take(cell: &str, shard: u32, epoch: u64) -> CellRecord {
    CellRecord::LeaseApplied {
        by: cell.to_string(),
        op: LeaseOp::Take,
        shard,
        owner: Some(cell.to_string()),
        epoch,
        version: epoch,
    }
}

fn act(cell: &str, shard: u32, epoch: u64) -> CellRecord {
    CellRecord::Act {
        cell: cell.to_string(),
        life: 1,
        shard,
        epoch,
        run: run_key(0),
        kind: ActKind::Adopt,
    }
}

fn history(records: Vec<(u32, CellRecord)>) -> CellsHistory {
    let mut history = CellsHistory::default();
    for (second, record) in records {
        history.record(at(second), record);
    }
    history
}

#[test]
fn one_owner_per_epoch_catches_a_deposed_owner_and_a_second_actor() {
    let good = history(vec![
        (0, take("a", 0, 1)),
        (1, act("a", 0, 1)),
        (2, take("b", 0, 2)),
        (3, act("b", 0, 2)),
    ]);
    assert_eq!(one_owner_per_epoch(&good), vec![]);
    // a acts for epoch 1 after the store applied b's take under epoch 2.
    let late = history(vec![
        (0, take("a", 0, 1)),
        (2, take("b", 0, 2)),
        (3, act("a", 0, 1)),
    ]);
    let found = one_owner_per_epoch(&late);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].checker, ONE_OWNER_PER_EPOCH);
    assert!(found[0].message.contains("after the store applied a take"));
    // b acts under an epoch the store gave to a (and a acted under it first).
    let twin = history(vec![
        (0, take("a", 0, 1)),
        (1, act("a", 0, 1)),
        (2, act("b", 0, 1)),
    ]);
    assert_eq!(one_owner_per_epoch(&twin).len(), 2);
}

fn dag(every_s: u32, until_s: u32) -> CellDag {
    CellDag {
        dag_id: "d".to_string(),
        shard: 0,
        every_ms: u64::from(every_s) * 1_000,
        data_intervals: false,
        start: at(0),
        end: at(until_s),
    }
}

fn run_row(second: u32, state: DagRunState) -> RunRow {
    RunRow {
        key: run_key(second),
        run_type: RunType::Scheduled,
        state,
        logical_date: at(second),
        data_interval: DataInterval::exact(at(second)),
        version_hash: String::new(),
        conf: serde_json::Value::Null,
        seed: 0,
        created_at: at(second),
        started_at: None,
        ended_at: None,
    }
}

#[test]
fn schedule_exactly_once_catches_a_missed_tick_an_unfinished_run_and_an_early_one() {
    let mut good = history(vec![(
        0,
        CellRecord::RunAccepted {
            by: "a".to_string(),
            run: run_key(0),
            epoch: 1,
            change: RunChange::Created {
                logical_date: at(0),
            },
        },
    )]);
    good.dags = vec![dag(2, 2)];
    good.end = Some(at(30));
    good.final_runs = vec![
        (run_row(0, DagRunState::Success), Some(1)),
        (run_row(2, DagRunState::Success), Some(1)),
    ];
    assert_eq!(schedule_exactly_once(&good), vec![]);

    let mut missed = good.clone();
    missed.final_runs.pop();
    let found = schedule_exactly_once(&missed);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].checker, SCHEDULE_EXACTLY_ONCE);
    assert!(found[0].message.contains("have no run"));

    let mut unfinished = good.clone();
    unfinished.final_runs[1].0.state = DagRunState::Running;
    assert_eq!(schedule_exactly_once(&unfinished).len(), 1);

    let mut off_tick = good.clone();
    off_tick
        .final_runs
        .push((run_row(1, DagRunState::Success), Some(1)));
    assert_eq!(schedule_exactly_once(&off_tick).len(), 1);

    // Created at second 0 for the tick due at second 2.
    let mut early = good.clone();
    early.entries[0].record = CellRecord::RunAccepted {
        by: "a".to_string(),
        run: run_key(2),
        epoch: 1,
        change: RunChange::Created {
            logical_date: at(2),
        },
    };
    assert_eq!(schedule_exactly_once(&early).len(), 1);
}

fn accepted(epoch: u64) -> CellRecord {
    CellRecord::RunAccepted {
        by: "a".to_string(),
        run: run_key(0),
        epoch,
        change: RunChange::Adopted,
    }
}

#[test]
fn fenced_writes_refused_catches_a_write_under_an_older_epoch() {
    let mut good = history(vec![
        (0, accepted(1)),
        (1, accepted(2)),
        (
            2,
            CellRecord::RunFenced {
                by: "a".to_string(),
                run: run_key(0),
                epoch: 1,
                current: 2,
            },
        ),
    ]);
    good.final_runs = vec![(run_row(0, DagRunState::Success), Some(2))];
    assert_eq!(fenced_writes_refused(&good), vec![]);

    let mut stale = good.clone();
    stale.record(at(3), accepted(1));
    let found = fenced_writes_refused(&stale);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].checker, FENCED_WRITES_REFUSED);

    let mut wrong_end = good.clone();
    wrong_end.final_runs[0].1 = Some(1);
    assert_eq!(fenced_writes_refused(&wrong_end).len(), 1);
}

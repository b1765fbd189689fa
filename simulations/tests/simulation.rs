//! The simulator as a test: determinism (same seed, same trace), the canary is caught by the
//! checker that names it, and a range of seeds passes every checker.

use std::collections::BTreeSet;
use weft_simulations::checkers::{check_all, NO_ORPHAN_OVERLAP, ONE_RESULT_PER_TRY};
use weft_simulations::history::Record;
use weft_simulations::{run_seed, Canary};

/// Seeds every test run checks; the binary (`--seeds N`) covers more.
const SEEDS_PASSING: u64 = 100;

#[test]
fn same_seed_gives_the_same_trace() {
    for seed in [1, 7, 54] {
        let first = run_seed(seed, Canary::Off);
        let second = run_seed(seed, Canary::Off);
        assert_eq!(
            first.trace_hash, second.trace_hash,
            "seed {seed} is not deterministic"
        );
        assert_eq!(first.history.entries.len(), second.history.entries.len());
        assert!(
            !first.history.entries.is_empty(),
            "seed {seed} recorded nothing"
        );
    }
    let hashes: BTreeSet<u64> = (0..5)
        .map(|seed| run_seed(seed, Canary::Off).trace_hash)
        .collect();
    assert_eq!(
        hashes.len(),
        5,
        "different seeds should give different traces"
    );
}

#[test]
fn the_canary_is_caught_by_one_result_per_try() {
    let caught: Vec<u64> = (0..40)
        .filter(|&seed| {
            run_seed(seed, Canary::AcceptStaleResults)
                .violations
                .iter()
                .any(|violation| violation.checker == ONE_RESULT_PER_TRY)
        })
        .collect();
    assert!(
        !caught.is_empty(),
        "accepting stale results went unnoticed in 40 seeds"
    );
    for seed in caught {
        let honest = run_seed(seed, Canary::Off);
        let blamed = honest
            .violations
            .iter()
            .any(|v| v.checker == ONE_RESULT_PER_TRY);
        assert!(
            !blamed,
            "seed {seed} fails {ONE_RESULT_PER_TRY} without the canary"
        );
    }
}

/// Remote workers that let their attempts run on past their lease leave orphans beside the
/// retries the node starts once its idle timeout has released them.
#[test]
fn the_lease_canary_is_caught_by_no_orphan_overlap() {
    let caught: Vec<u64> = (0..60)
        .filter(|&seed| {
            run_seed(seed, Canary::IgnoreLease)
                .violations
                .iter()
                .any(|violation| violation.checker == NO_ORPHAN_OVERLAP)
        })
        .collect();
    assert!(
        !caught.is_empty(),
        "ignoring the lease went unnoticed in 60 seeds"
    );
    for seed in caught {
        let honest = run_seed(seed, Canary::Off);
        let blamed = honest
            .violations
            .iter()
            .any(|v| v.checker == NO_ORPHAN_OVERLAP);
        assert!(
            !blamed,
            "seed {seed} fails {NO_ORPHAN_OVERLAP} without the canary"
        );
    }
}

/// The remote faults happen and the protocol's paths are taken: links lost and sessions left
/// by the idle timeout, leases expired, attempts paused, drains, late reports refused.
#[test]
fn remote_workers_meet_their_faults() {
    let mut seen = BTreeSet::new();
    let mut refused = 0;
    for seed in 0..60 {
        let history = run_seed(seed, Canary::Off).history;
        refused += history.reports_refused;
        for entry in &history.entries {
            let what = match &entry.record {
                Record::LinkLost { .. } => "link lost",
                Record::RemoteLeft { why, .. } if why.contains("idle timeout") => "idle timeout",
                Record::RemoteLeft { why, .. } if why.contains("drained") => "drained",
                Record::RemoteFault { what, .. } if what == "lease expired" => "lease expired",
                Record::AttemptSuspended { .. } => "suspended",
                Record::ReportAccepted { .. } => "report accepted",
                _ => continue,
            };
            seen.insert(what);
        }
    }
    assert_eq!(
        seen.len(),
        6,
        "only {seen:?} happened in 60 seeds with remote workers"
    );
    assert!(refused > 0, "no late report was refused in 60 seeds");
}

#[test]
fn seeds_pass_every_checker() {
    for seed in 0..SEEDS_PASSING {
        let report = run_seed(seed, Canary::Off);
        assert_eq!(
            check_all(&report.history),
            report.node_violations(),
            "checking is a pure function of the history"
        );
        assert!(
            report.violations.is_empty(),
            "{}",
            weft_simulations::describe_failure(&report, Canary::Off)
        );
    }
}

/// Seeds that once failed, run whole. The production fixes have their own regression tests
/// (`core/tests/`, `actors/tests/engine.rs`); these keep the seeds themselves green, including
/// the two that were the simulator's own mistakes.
fn assert_seed_passes(seed: u64) {
    let outcome = run_seed(seed, Canary::Off);
    assert!(
        outcome.violations.is_empty(),
        "seed {seed}: {:?}",
        outcome.violations
    );
}

/// A backfill over a date held by a finished run kept a `max_active_runs` place forever.
#[test]
fn seed_503_refused_start_after_restart() {
    assert_seed_passes(503);
}

/// A `Kill` lost with a crashed run driver left a hung attempt holding its pool's slots.
#[test]
fn seed_1701_superseded_attempt_is_stopped() {
    assert_seed_passes(1701);
}

/// The workload started a backfill weeks before the schedule (thousands of runs, more than
/// the quiet period can finish).
#[test]
fn seed_671_backfill_window_fits_the_schedule() {
    assert_seed_passes(671);
}

/// A monthly run created by the last tick of the quiet period had no time left to finish.
#[test]
fn seed_3215_runs_in_flight_drain_after_the_quiet_period() {
    assert_seed_passes(3215);
}

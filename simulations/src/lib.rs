//! weft-simulations: deterministic simulation testing of the scheduling core.
//!
//! One seed fixes a workload (random DAGs, schedules, triggers, backfills), the remote workers
//! beside the node's own slots, the faults (store errors and lost acknowledgements, message
//! drops, duplicates and delays, node crashes, worker deaths, clock jumps; remote link cuts,
//! worker deaths, pauses and drains) and every worker outcome. [`sim::Simulation`] drives the real
//! `weft_core` state machines through glue that mirrors the actors, records a [`History`], and
//! the named [`checkers`] judge it. The same seed always gives the same trace.
//!
//! Every seed also runs the cells simulation ([`cells`]): regional cells that own DAGs
//! through shard leases (the real `LeaseKeeper`) over one store, with link delays and
//! partitions, crashes, pauses, leaves and clock drift, judged by its own checkers.

pub mod cells;
pub mod checkers;
pub mod faults;
pub mod history;
pub mod network;
pub mod rng;
pub mod sim;
pub mod workload;

pub use history::{History, Violation};
pub use sim::Canary;

/// Trace lines shown with a failure.
pub const EXCERPT_LINES_MAX: usize = 12;

#[derive(Debug)]
pub struct SeedReport {
    pub seed: u64,
    /// The node simulation's trace hash (the cells simulation's is in `cells`).
    pub trace_hash: u64,
    /// Every violation of the seed: the node simulation's, then the cells simulation's
    /// (also in `cells.violations`).
    pub violations: Vec<Violation>,
    pub history: History,
    pub cells: cells::CellsReport,
}

impl SeedReport {
    /// The node simulation's violations.
    pub fn node_violations(&self) -> &[Violation] {
        let node = self.violations.len() - self.cells.violations.len();
        &self.violations[..node]
    }
}

/// Runs both simulations of a seed and judges them.
pub fn run_seed(seed: u64, canary: Canary) -> SeedReport {
    let history = sim::Simulation::new(seed, canary).run();
    let mut violations = checkers::check_all(&history);
    let cells = cells::run(seed, canary);
    violations.extend(cells.violations.iter().cloned());
    SeedReport {
        seed,
        trace_hash: history.trace_hash(),
        violations,
        history,
        cells,
    }
}

/// The exact command that replays a seed.
pub fn replay_command(seed: u64, canary: Canary) -> String {
    let canary = match canary {
        Canary::Off => "",
        Canary::AcceptStaleResults => " --canary",
        Canary::IgnoreLease => " --canary-lease",
        Canary::IgnoreCellLease => " --canary-cell-lease",
    };
    format!("cargo run --release -p weft-simulations -- --seed {seed}{canary}")
}

/// What a failing seed prints: the seed, each violation by checker name, a trace excerpt
/// around the first one, and the replay command.
pub fn describe_failure(report: &SeedReport, canary: Canary) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "seed {} failed: {} violation(s)",
        report.seed,
        report.violations.len()
    );
    for violation in report.violations.iter().take(EXCERPT_LINES_MAX) {
        let at = violation.at.map(|at| at.to_rfc3339()).unwrap_or_default();
        let _ = writeln!(
            text,
            "  [{}] {}: {} {}",
            violation.checker, violation.subject, violation.message, at
        );
    }
    if let Some(first) = report.node_violations().first() {
        let _ = writeln!(text, "trace excerpt ({}):", first.subject);
        text.push_str(
            &report
                .history
                .excerpt(first.at, &first.subject, EXCERPT_LINES_MAX),
        );
    }
    if let Some(first) = report.cells.violations.first() {
        let _ = writeln!(text, "cells trace excerpt ({}):", first.subject);
        text.push_str(
            &report
                .cells
                .history
                .excerpt(first.at, &first.subject, EXCERPT_LINES_MAX),
        );
    }
    let _ = writeln!(text, "replay: {}", replay_command(report.seed, canary));
    text
}

//! Trigger rules as a table: every rule against the same upstream situations, compared with
//! Airflow's `TriggerRuleDep` outcomes.

use expect_test::expect;
use std::fmt::Write as _;
use weft_core::state::{TaskState, TriggerRule};
use weft_core::trigger_rule::{
    evaluate, evaluate_indirect_setups, Decision, Instance, UpstreamCounts,
};

const UNMAPPED: Instance = Instance { map_index: -1 };

/// Upstream situations, one letter per upstream instance: s=success k=skipped f=failed
/// u=upstream_failed r=removed .=not finished; capital S/K = a setup task in that state.
const SITUATIONS: &[&str] = &[
    "ss", "s.", "sk", "kk", "sf", "ff", "fu", "f.", "k.", "..", "Ss", "Sf", "Kf", "K.",
];

fn counts(situation: &str) -> UpstreamCounts {
    UpstreamCounts::from_states(situation.chars().map(|c| {
        let state = match c.to_ascii_lowercase() {
            's' => TaskState::Success,
            'k' => TaskState::Skipped,
            'f' => TaskState::Failed,
            'u' => TaskState::UpstreamFailed,
            'r' => TaskState::Removed,
            _ => TaskState::Running,
        };
        (state, c.is_ascii_uppercase())
    }))
}

fn short(decision: Decision) -> &'static str {
    match decision {
        Decision::Wait => "wait",
        Decision::Run => "RUN",
        Decision::Skip => "skip",
        Decision::UpstreamFailed => "up_failed",
        Decision::Removed => "removed",
    }
}

#[test]
fn every_rule_against_every_situation() {
    let mut table = format!("{:<28}", "");
    for situation in SITUATIONS {
        let _ = write!(table, "{situation:>10}");
    }
    table.push('\n');
    for &rule in TriggerRule::ALL {
        let _ = write!(table, "{:<28}", rule.as_str());
        for situation in SITUATIONS {
            let _ = write!(
                table,
                "{:>10}",
                short(evaluate(rule, &counts(situation), UNMAPPED))
            );
        }
        table.push('\n');
    }
    expect![[r#"
                                            ss        s.        sk        kk        sf        ff        fu        f.        k.        ..        Ss        Sf        Kf        K.
        all_success                        RUN      wait      skip      skip up_failed up_failed up_failed up_failed      skip      wait       RUN up_failed up_failed      skip
        all_failed                        skip      skip      skip      skip      skip       RUN       RUN      wait      skip      wait      skip      skip      skip      skip
        all_done                           RUN      wait       RUN       RUN       RUN       RUN       RUN      wait      wait      wait       RUN       RUN       RUN      wait
        all_done_setup_success             RUN      wait       RUN       RUN       RUN       RUN       RUN      wait      wait      wait       RUN       RUN      skip      wait
        all_skipped                       skip      skip      skip       RUN      skip      skip      skip      skip      wait      wait      skip      skip      skip      wait
        one_success                        RUN       RUN       RUN      skip       RUN up_failed up_failed      wait      wait      wait       RUN       RUN up_failed      wait
        one_failed                        skip      wait      skip      skip       RUN       RUN       RUN       RUN      wait      wait      skip       RUN       RUN      wait
        one_done                           RUN       RUN       RUN      skip       RUN       RUN       RUN       RUN      wait      wait       RUN       RUN       RUN      wait
        none_failed                        RUN      wait       RUN       RUN up_failed up_failed up_failed up_failed      wait      wait       RUN up_failed up_failed      wait
        none_failed_min_one_success        RUN      wait       RUN      skip up_failed up_failed up_failed up_failed      wait      wait       RUN up_failed up_failed      wait
        none_skipped                       RUN      wait      skip      skip       RUN       RUN       RUN      wait      skip      wait       RUN       RUN      skip      skip
        always                             RUN       RUN       RUN       RUN       RUN       RUN       RUN       RUN       RUN       RUN       RUN       RUN       RUN       RUN
    "#]]
    .assert_eq(&table);
}

#[test]
fn no_upstream_always_runs() {
    for &rule in TriggerRule::ALL {
        assert_eq!(
            evaluate(rule, &UpstreamCounts::default(), UNMAPPED),
            Decision::Run,
            "{rule}"
        );
    }
}

#[test]
fn removed_upstreams_only_count_for_mapped_instances() {
    let removed = counts("sr");
    assert_eq!(
        evaluate(TriggerRule::AllSuccess, &removed, UNMAPPED),
        Decision::Wait
    );
    assert_eq!(
        evaluate(TriggerRule::AllSuccess, &removed, Instance { map_index: 0 }),
        Decision::Run
    );
    // A mapped instance beyond the upstream's successes is removed, as in Airflow.
    assert_eq!(
        evaluate(TriggerRule::AllSuccess, &removed, Instance { map_index: 1 }),
        Decision::Removed
    );
}

#[test]
fn indirect_setups_fail_or_skip_without_waiting_for_the_rest() {
    assert_eq!(
        evaluate_indirect_setups(&counts("f."), UNMAPPED),
        Some(Decision::UpstreamFailed)
    );
    assert_eq!(
        evaluate_indirect_setups(&counts("k."), UNMAPPED),
        Some(Decision::Skip)
    );
    assert_eq!(
        evaluate_indirect_setups(&counts("s."), UNMAPPED),
        Some(Decision::Wait)
    );
    assert_eq!(evaluate_indirect_setups(&counts("ss"), UNMAPPED), None);
}

#[test]
fn counts_add_and_take_out_exactly() {
    let mut sum = UpstreamCounts::default();
    for situation in SITUATIONS {
        sum += counts(situation);
    }
    let all: String = SITUATIONS.concat();
    assert_eq!(sum, counts(&all), "adding counts is counting the union");
    for situation in SITUATIONS {
        sum -= counts(situation);
    }
    assert_eq!(sum, UpstreamCounts::default(), "taking out is the inverse");
}

//! Trigger rules: may a task run, given the states of its direct upstream tasks?
//!
//! A transcription of Airflow's `TriggerRuleDep` (`airflow/ti_deps/deps/trigger_rule_dep.py`)
//! as the scheduler runs it (`flag_upstream_failed=True`): first the rule may decide that the
//! task will never run (`Skip`, `UpstreamFailed`, `Removed`), otherwise it either passes
//! (`Run`) or keeps waiting (`Wait`). Counts are over task *instances*, so a mapped upstream
//! with three instances counts three.

use crate::state::{TaskState, TriggerRule};

/// How many direct upstream task instances are in each finished state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamCounts {
    /// Upstream task instances in total, finished or not.
    pub total: usize,
    pub success: usize,
    pub skipped: usize,
    pub failed: usize,
    pub upstream_failed: usize,
    pub removed: usize,
    /// Finished upstream task instances: the sum of the five states above (`done <= total`).
    pub done: usize,
    /// Upstream instances that belong to setup tasks, finished or not.
    pub setup_total: usize,
    pub setup_success: usize,
    pub setup_skipped: usize,
}

impl UpstreamCounts {
    /// Counts `states`; `is_setup` tells which ones belong to setup tasks.
    pub fn from_states(states: impl IntoIterator<Item = (TaskState, bool)>) -> UpstreamCounts {
        let mut counts = UpstreamCounts::default();
        for (state, is_setup) in states {
            counts.add(state, is_setup);
        }
        counts
    }

    pub fn add(&mut self, state: TaskState, is_setup: bool) {
        self.total += 1;
        self.setup_total += usize::from(is_setup);
        let slot = match state {
            TaskState::Success => &mut self.success,
            TaskState::Skipped => &mut self.skipped,
            TaskState::Failed => &mut self.failed,
            TaskState::UpstreamFailed => &mut self.upstream_failed,
            TaskState::Removed => &mut self.removed,
            _ => return,
        };
        *slot += 1;
        self.done += 1;
        if is_setup {
            match state {
                TaskState::Success => self.setup_success += 1,
                TaskState::Skipped => self.setup_skipped += 1,
                _ => {}
            }
        }
        debug_assert!(self.done <= self.total, "done never exceeds total");
    }

    fn all_done(&self) -> bool {
        self.done >= self.total
    }

    /// Applies `op` to each field of `self` and the same field of `other`. The destructuring
    /// names every field, so a field added later cannot be left out of `+=` and `-=`.
    fn combine(&mut self, other: UpstreamCounts, op: fn(&mut usize, usize)) {
        let UpstreamCounts {
            total,
            success,
            skipped,
            failed,
            upstream_failed,
            removed,
            done,
            setup_total,
            setup_success,
            setup_skipped,
        } = other;
        op(&mut self.total, total);
        op(&mut self.success, success);
        op(&mut self.skipped, skipped);
        op(&mut self.failed, failed);
        op(&mut self.upstream_failed, upstream_failed);
        op(&mut self.removed, removed);
        op(&mut self.done, done);
        op(&mut self.setup_total, setup_total);
        op(&mut self.setup_success, setup_success);
        op(&mut self.setup_skipped, setup_skipped);
    }
}

/// The counts of two disjoint sets of instances together.
impl std::ops::AddAssign for UpstreamCounts {
    fn add_assign(&mut self, other: UpstreamCounts) {
        self.combine(other, |field, other| *field += other);
    }
}

/// Takes out the counts of instances that `self` counted: the inverse of `+=`, so that kept
/// sums stay exact. Taking out more than was counted is the caller's bug (a panic in debug
/// builds).
impl std::ops::SubAssign for UpstreamCounts {
    fn sub_assign(&mut self, other: UpstreamCounts) {
        self.combine(other, |field, other| *field -= other);
    }
}

/// What the trigger rule decides for a task instance that has not run yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Not yet: some upstream instances must finish first.
    Wait,
    Run,
    Skip,
    UpstreamFailed,
    /// A mapped instance beyond the upstream's successful instances (Airflow's `removed`).
    Removed,
}

/// The instance being decided: only mapped instances treat `removed` upstreams specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    /// `-1` when the task is not mapped, as in Airflow.
    pub map_index: i32,
}

/// Airflow's `TriggerRuleDep` for one task instance over its direct upstream instances.
pub fn evaluate(rule: TriggerRule, counts: &UpstreamCounts, instance: Instance) -> Decision {
    // Airflow passes at once when there is no upstream task or the rule is `always`.
    if counts.total == 0 || rule == TriggerRule::Always {
        return Decision::Run;
    }
    if let Some(decision) = final_state(rule, counts, instance) {
        return decision;
    }
    if passes(rule, counts, instance) {
        Decision::Run
    } else {
        Decision::Wait
    }
}

/// Airflow's `setup constraint`: a task that is not a teardown also waits for its relevant
/// setups that are not direct upstreams; a failed one fails it, a skipped one skips it, without
/// waiting for the others. `None` means the constraint is met.
pub fn evaluate_indirect_setups(counts: &UpstreamCounts, instance: Instance) -> Option<Decision> {
    if counts.upstream_failed > 0 || counts.failed > 0 {
        return Some(Decision::UpstreamFailed);
    }
    if counts.skipped > 0 {
        return Some(Decision::Skip);
    }
    if removed_beyond_success(counts, instance) {
        return Some(Decision::Removed);
    }
    let mut non_successes = counts.total.saturating_sub(counts.success);
    if instance.map_index > -1 {
        non_successes = non_successes.saturating_sub(counts.removed);
    }
    (non_successes > 0).then_some(Decision::Wait)
}

fn removed_beyond_success(counts: &UpstreamCounts, instance: Instance) -> bool {
    counts.removed > 0
        && counts.success > 0
        && instance.map_index > -1
        && usize::try_from(instance.map_index).is_ok_and(|index| index >= counts.success)
}

/// The first half of Airflow's evaluation: states set before the rule is checked.
fn final_state(rule: TriggerRule, c: &UpstreamCounts, instance: Instance) -> Option<Decision> {
    use Decision::{Removed, Skip, UpstreamFailed};
    let done = c.all_done();
    let any_failure = c.failed > 0 || c.upstream_failed > 0;
    match rule {
        TriggerRule::AllSuccess if any_failure => Some(UpstreamFailed),
        TriggerRule::AllSuccess if c.skipped > 0 => Some(Skip),
        TriggerRule::AllSuccess if removed_beyond_success(c, instance) => Some(Removed),
        TriggerRule::AllFailed if c.success > 0 || c.skipped > 0 => Some(Skip),
        TriggerRule::OneSuccess if done && c.done == c.skipped => Some(Skip),
        TriggerRule::OneSuccess if done && c.success == 0 => Some(UpstreamFailed),
        TriggerRule::OneFailed if done && !any_failure => Some(Skip),
        TriggerRule::OneDone if done && c.failed == 0 && c.success == 0 => Some(Skip),
        TriggerRule::NoneFailed if any_failure => Some(UpstreamFailed),
        TriggerRule::NoneFailedMinOneSuccess if any_failure => Some(UpstreamFailed),
        TriggerRule::NoneFailedMinOneSuccess if c.skipped == c.total => Some(Skip),
        TriggerRule::NoneSkipped if c.skipped > 0 => Some(Skip),
        TriggerRule::AllSkipped if c.success > 0 || any_failure => Some(Skip),
        TriggerRule::AllDoneSetupSuccess
            if done && c.setup_total > 0 && c.setup_skipped >= c.setup_total =>
        {
            Some(Skip)
        }
        TriggerRule::AllDoneSetupSuccess if done && c.setup_total > 0 && c.setup_success == 0 => {
            Some(UpstreamFailed)
        }
        _ => None,
    }
}

/// The second half: does the rule pass with the counts as they are?
fn passes(rule: TriggerRule, c: &UpstreamCounts, instance: Instance) -> bool {
    // Mapped instances do not count removed upstream instances against the rule.
    let removed = if instance.map_index > -1 {
        c.removed
    } else {
        0
    };
    match rule {
        TriggerRule::Always => true,
        TriggerRule::OneSuccess => c.success > 0,
        TriggerRule::OneFailed => c.failed > 0 || c.upstream_failed > 0,
        TriggerRule::OneDone => c.success + c.failed > 0,
        TriggerRule::AllSuccess => c.total.saturating_sub(c.success + removed) == 0,
        TriggerRule::AllFailed => {
            c.total
                .saturating_sub(c.failed + c.upstream_failed + removed)
                == 0
        }
        TriggerRule::AllDone => c.all_done(),
        TriggerRule::AllDoneSetupSuccess => {
            c.all_done() && (c.setup_total == 0 || c.setup_success > 0)
        }
        TriggerRule::NoneFailed | TriggerRule::NoneFailedMinOneSuccess => {
            c.total.saturating_sub(c.success + c.skipped + removed) == 0
        }
        TriggerRule::NoneSkipped => c.all_done() && c.skipped == 0,
        TriggerRule::AllSkipped => c.total.saturating_sub(c.skipped) == 0,
    }
}

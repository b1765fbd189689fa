//! The named checkers: each a plain function over a recorded [`History`] that returns the
//! violations it finds. The names are the invariants' names everywhere (reports, metrics).
//!
//! The checkers do not call the core's decision code: expectations come from independent
//! statements of the rules (trigger-rule conditions, minimum retry delays), and the schedule
//! check computes the due ticks from the timetable itself (`Timetable::runs_between`).

use crate::history::{History, Record, Violation};
use std::collections::{BTreeMap, BTreeSet};
use weft_core::dag_run::TaskVersion;
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::retry::MAX_RETRY_DELAY_DEFAULT_MS;
use weft_core::spec::{DagSpec, ScheduleSpec, TaskSpec};
use weft_core::state::{DagRunState, RunType, TaskState, TriggerRule};
use weft_core::timetable::Timetable;
use weft_core::Timestamp;

pub const SCHEDULE_EXACTLY_ONCE: &str = "schedule_exactly_once";
pub const ONE_RESULT_PER_TRY: &str = "one_result_per_try";
pub const NO_CONCURRENT_ATTEMPTS: &str = "no_concurrent_attempts";
pub const DEPENDENCIES_RESPECTED: &str = "dependencies_respected";
pub const RETRIES_WITHIN_POLICY: &str = "retries_within_policy";
pub const LIMITS_RESPECTED: &str = "limits_respected";
pub const LIVENESS: &str = "liveness";
pub const ACKNOWLEDGED_NEVER_LOST: &str = "acknowledged_never_lost";
pub const NO_ORPHAN_OVERLAP: &str = "no_orphan_overlap";
pub const REPORTS_FENCED_BY_SESSION: &str = "reports_fenced_by_session";
pub const LINK_LOSS_RELEASES: &str = "link_loss_releases";
/// Cells (`crate::cells::checkers`): at most one cell acts for a shard under an epoch, and a
/// deposed owner stops acting before the store applies the take that deposes it.
pub const ONE_OWNER_PER_EPOCH: &str = "one_owner_per_epoch";
/// Cells: the store never accepts a run write under an epoch older than one the run was
/// already written under.
pub const FENCED_WRITES_REFUSED: &str = "fenced_writes_refused";

/// How long after a lost link the node may take to treat the session as left: its idle
/// timeout, counted from the last reply it heard (before the loss), plus this.
pub const LINK_LOSS_SLACK_MS: u64 = 1_000;

/// Scheduled runs per DAG the schedule check looks at, at most.
const EXPECTED_TICKS_MAX: usize = 100_000;
/// Slots of `default_pool` (the store's default, never resized by the simulator).
const DEFAULT_POOL_SLOTS: u32 = weft_storage::DEFAULT_POOL_SLOTS;

pub type Checker = fn(&History) -> Vec<Violation>;

/// Every checker, by name.
pub const CHECKERS: &[(&str, Checker)] = &[
    (SCHEDULE_EXACTLY_ONCE, schedule_exactly_once),
    (ONE_RESULT_PER_TRY, one_result_per_try),
    (NO_CONCURRENT_ATTEMPTS, no_concurrent_attempts),
    (DEPENDENCIES_RESPECTED, dependencies_respected),
    (RETRIES_WITHIN_POLICY, retries_within_policy),
    (LIMITS_RESPECTED, limits_respected),
    (LIVENESS, liveness),
    (ACKNOWLEDGED_NEVER_LOST, acknowledged_never_lost),
    (NO_ORPHAN_OVERLAP, no_orphan_overlap),
    (REPORTS_FENCED_BY_SESSION, reports_fenced_by_session),
    (LINK_LOSS_RELEASES, link_loss_releases),
];

pub fn check_all(history: &History) -> Vec<Violation> {
    CHECKERS
        .iter()
        .flat_map(|(_, checker)| checker(history))
        .collect()
}

pub(crate) fn violation(
    checker: &'static str,
    at: Option<Timestamp>,
    subject: impl ToString,
    message: String,
) -> Violation {
    Violation {
        checker,
        message,
        at,
        subject: subject.to_string(),
    }
}

/// Every due schedule tick has exactly one run: none twice, none missed (Jepsen's Chronos
/// check). Ticks come from the timetable between the DAG's start and end dates.
pub fn schedule_exactly_once(history: &History) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut runs: BTreeMap<(&str, Timestamp), Vec<RunType>> = BTreeMap::new();
    for row in &history.final_store.runs {
        runs.entry((row.key.dag_id.as_str(), row.logical_date))
            .or_default()
            .push(row.run_type);
    }
    for ((dag_id, date), types) in &runs {
        let ticks = types
            .iter()
            .filter(|t| matches!(t, RunType::Scheduled | RunType::Backfill))
            .count();
        if ticks > 1 {
            let message = format!("{ticks} scheduled/backfill runs at {date} ({types:?})");
            violations.push(violation(SCHEDULE_EXACTLY_ONCE, None, dag_id, message));
        }
    }
    for dag in &history.dags {
        let Some(expected) = expected_ticks(dag, history.end) else {
            continue;
        };
        let has_run = |date: &Timestamp| runs.contains_key(&(dag.dag_id.as_str(), *date));
        // Without catch-up, ticks missed while the DAG was down or at `max_active_runs` are
        // skipped by design (only the latest due one is created, and none past the end date).
        // Ticks at or after the drain's pause may go without a run.
        let before_horizon =
            |run_after: &Timestamp| history.schedule_horizon.is_none_or(|h| *run_after < h);
        let missed: Vec<&Timestamp> = if dag.catchup {
            expected
                .iter()
                .filter(|(date, run_after)| before_horizon(run_after) && !has_run(date))
                .map(|(date, _)| date)
                .collect()
        } else {
            Vec::new()
        };
        if let Some(first) = missed.first() {
            let message = format!("{} due ticks have no run, first at {first}", missed.len());
            violations.push(violation(SCHEDULE_EXACTLY_ONCE, None, &dag.dag_id, message));
        }
        for row in history.final_store.runs.iter().filter(|row| {
            row.key.dag_id == dag.dag_id
                && row.run_type == RunType::Scheduled
                && !expected.contains_key(&row.logical_date)
        }) {
            let message = format!("scheduled run {} is not at a tick", row.key.run_id);
            violations.push(violation(SCHEDULE_EXACTLY_ONCE, None, &row.key, message));
        }
    }
    violations
}

/// The ticks due by the end of the history: logical date -> when the run is due.
fn expected_ticks(
    dag: &DagSpec,
    history_end: Option<Timestamp>,
) -> Option<BTreeMap<Timestamp, Timestamp>> {
    if dag.schedule == ScheduleSpec::None {
        return None;
    }
    // Without catch-up, an interval schedule starts from "now", not from the start date
    // (Airflow's delta timetables): its ticks are not fixed in advance.
    if !dag.catchup && matches!(dag.schedule, ScheduleSpec::Interval { .. }) {
        return None;
    }
    let (start, end) = (dag.start_date?, dag.end_date?);
    let timetable =
        Timetable::new(&dag.schedule, &dag.timezone, Some(start), Some(end), true).ok()?;
    // Far enough in the future that every tick up to the end date is due.
    let now = end + chrono::TimeDelta::days(400);
    let mut ticks = BTreeMap::new();
    let mut last = None;
    while ticks.len() < EXPECTED_TICKS_MAX {
        let Some(info) = timetable.next_dagrun_info(last.as_ref(), now) else {
            break;
        };
        if history_end.is_none_or(|end| info.run_after <= end) {
            ticks.insert(info.logical_date, info.run_after);
        }
        last = Some(info.data_interval);
    }
    Some(ticks)
}

/// At most one accepted result per (task instance, try), and only from the attempt whose
/// (try, token) the task instance held when the result was accepted.
pub fn one_result_per_try(history: &History) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut held_before: BTreeMap<&TaskInstanceKey, TaskVersion> = BTreeMap::new();
    let mut accepted: BTreeMap<(&TaskInstanceKey, u32), u32> = BTreeMap::new();
    for entry in &history.entries {
        match &entry.record {
            Record::TaskWritten {
                key,
                from: Some(from),
                ..
            } => {
                held_before.insert(key, *from);
            }
            Record::ResultAccepted {
                key,
                try_number,
                token,
                ..
            } => {
                let count = accepted.entry((key, *try_number)).or_default();
                *count += 1;
                if *count > 1 {
                    let message = format!("try {try_number} has {count} accepted results");
                    violations.push(violation(ONE_RESULT_PER_TRY, Some(entry.at), key, message));
                }
                let held = held_before.get(key).map(|v| (v.try_number, v.token));
                if held != Some((*try_number, *token)) {
                    let message = format!(
                        "accepted the result of try {try_number} token {token} while the task instance held {held:?}"
                    );
                    violations.push(violation(ONE_RESULT_PER_TRY, Some(entry.at), key, message));
                }
            }
            _ => {}
        }
    }
    violations
}

/// No task instance executes twice at once under one fencing token, and a start is accepted
/// only from the attempt whose token the task instance holds.
pub fn no_concurrent_attempts(history: &History) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut executing: BTreeMap<u64, (&TaskInstanceKey, u64)> = BTreeMap::new();
    let mut held_before: BTreeMap<&TaskInstanceKey, TaskVersion> = BTreeMap::new();
    for entry in &history.entries {
        match &entry.record {
            Record::AttemptStarted {
                attempt,
                key,
                token,
                ..
            } => {
                let twin = executing.values().any(|(k, t)| *k == key && t == token);
                if twin {
                    let message = format!("a second attempt executes under token {token}");
                    violations.push(violation(
                        NO_CONCURRENT_ATTEMPTS,
                        Some(entry.at),
                        key,
                        message,
                    ));
                }
                executing.insert(*attempt, (key, *token));
            }
            Record::AttemptEnded { attempt, .. } => {
                executing.remove(attempt);
            }
            Record::TaskWritten {
                key,
                from: Some(from),
                ..
            } => {
                held_before.insert(key, *from);
            }
            Record::StartAccepted {
                key,
                try_number,
                token,
            } => {
                let held = held_before.get(key).map(|v| (v.try_number, v.token));
                if held != Some((*try_number, *token)) {
                    let message = format!(
                        "accepted the start of token {token} while the task instance held {held:?}"
                    );
                    violations.push(violation(
                        NO_CONCURRENT_ATTEMPTS,
                        Some(entry.at),
                        key,
                        message,
                    ));
                }
            }
            _ => {}
        }
    }
    violations
}

/// A task instance starts only when its trigger rule allows it given its upstream states at
/// that time; at the end, all-success tasks below a failure or a skip did not run.
///
/// A run's batch is applied atomically and its dispatches are sent once it is durable, so a
/// start is judged against the upstream states the store holds once the start's batch is
/// applied: the records up to its `BatchApplied` (or, in a history without one, the records of
/// one instant). Within a batch, a task's write comes where the batch first wrote it, which may
/// be before the write of an upstream that the same batch finished.
pub fn dependencies_respected(history: &History) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut states: BTreeMap<&TaskInstanceKey, TaskState> = BTreeMap::new();
    // Starts of the batch being read, judged at its end.
    let mut starts: Vec<(Timestamp, &TaskInstanceKey, &TaskSpec)> = Vec::new();
    let mut judge = |starts: &mut Vec<(Timestamp, &TaskInstanceKey, &TaskSpec)>,
                     states: &BTreeMap<&TaskInstanceKey, TaskState>| {
        for (at, key, task) in starts.drain(..) {
            let upstream = upstream_states(states, key, task);
            if !rule_allows(task.trigger_rule, &upstream) {
                let message = format!(
                    "started under {} with upstream states {upstream:?}",
                    task.trigger_rule
                );
                violations.push(violation(DEPENDENCIES_RESPECTED, Some(at), key, message));
            }
        }
    };
    for entry in &history.entries {
        if starts.first().is_some_and(|(at, ..)| *at != entry.at) {
            judge(&mut starts, &states);
        }
        let Record::TaskWritten { key, from, to, .. } = &entry.record else {
            if matches!(entry.record, Record::BatchApplied { .. }) {
                judge(&mut starts, &states);
            }
            continue;
        };
        // A row created by its first start (a waiting row is written late, or never) starts
        // from try 0 as one created waiting does.
        let from_try = from.map_or(0, |from| from.try_number);
        let first_try_started = to.try_number == 1
            && from_try == 0
            && matches!(to.state, TaskState::Queued | TaskState::Success);
        if first_try_started {
            if let Some(task) = history.dag(&key.dag_id).and_then(|d| d.task(&key.task_id)) {
                starts.push((entry.at, key, task));
            }
        }
        states.insert(key, to.state);
    }
    judge(&mut starts, &states);
    violations.extend(skips_propagated(history));
    violations
}

fn upstream_states(
    states: &BTreeMap<&TaskInstanceKey, TaskState>,
    key: &TaskInstanceKey,
    task: &TaskSpec,
) -> Vec<TaskState> {
    let mut upstream = Vec::new();
    for up in &task.upstream {
        let first = TaskInstanceKey::new(&key.dag_id, &key.run_id, up, i32::MIN);
        let last = TaskInstanceKey::new(&key.dag_id, &key.run_id, up, i32::MAX);
        let instances = states.range::<TaskInstanceKey, _>(&first..=&last);
        upstream.extend(instances.map(|(_, state)| *state));
    }
    upstream.retain(|state| *state != TaskState::Removed);
    upstream
}

/// Necessary conditions for a trigger rule to let a task run (Airflow's `TriggerRuleDep`).
fn rule_allows(rule: TriggerRule, upstream: &[TaskState]) -> bool {
    let count = |wanted: &[TaskState]| upstream.iter().filter(|s| wanted.contains(s)).count();
    let all = upstream.len();
    let done = upstream.iter().filter(|s| s.is_finished()).count();
    let failed = count(&[TaskState::Failed, TaskState::UpstreamFailed]);
    let success = count(&[TaskState::Success]);
    let skipped = count(&[TaskState::Skipped]);
    match rule {
        _ if all == 0 => true,
        TriggerRule::Always => true,
        TriggerRule::AllSuccess => success == all,
        TriggerRule::AllFailed => failed == all,
        TriggerRule::AllDone | TriggerRule::AllDoneSetupSuccess => done == all,
        TriggerRule::AllSkipped => skipped == all,
        TriggerRule::OneSuccess => success > 0,
        TriggerRule::OneFailed => failed > 0,
        TriggerRule::OneDone => success + count(&[TaskState::Failed]) > 0,
        TriggerRule::NoneFailed | TriggerRule::NoneFailedMinOneSuccess => {
            done == all && failed == 0
        }
        TriggerRule::NoneSkipped => done == all && skipped == 0,
    }
}

/// In finished runs, an unmapped all-success task below a failed upstream did not succeed,
/// and one below only skipped (not failed) upstreams was skipped, as Airflow propagates them.
fn skips_propagated(history: &History) -> Vec<Violation> {
    let mut violations = Vec::new();
    let finished: BTreeSet<&RunKey> = history
        .final_store
        .runs
        .iter()
        .filter(|row| row.state.is_finished())
        .map(|row| &row.key)
        .collect();
    let mut by_run: BTreeMap<(&str, &str), BTreeMap<&str, TaskState>> = BTreeMap::new();
    for record in &history.final_store.task_instances {
        if record.key.map_index < 0 {
            by_run
                .entry((&record.key.dag_id, &record.key.run_id))
                .or_default()
                .insert(&record.key.task_id, record.state);
        }
    }
    for ((dag_id, run_id), states) in &by_run {
        let run = RunKey {
            dag_id: (*dag_id).into(),
            run_id: (*run_id).into(),
        };
        let Some(dag) = history.dag(dag_id) else {
            continue;
        };
        if !finished.contains(&run) || dag.dagrun_timeout_ms.is_some() {
            continue;
        }
        for task in &dag.tasks {
            let unmapped = |t: &TaskSpec| t.mapping.is_none();
            let ups: Option<Vec<TaskState>> = task
                .upstream
                .iter()
                .map(|up| {
                    dag.task(up)
                        .filter(|t| unmapped(t))
                        .and(states.get(up.as_str()).copied())
                })
                .collect();
            let (Some(ups), Some(state)) = (ups, states.get(task.task_id.as_str())) else {
                continue;
            };
            if task.trigger_rule != TriggerRule::AllSuccess || ups.is_empty() || !unmapped(task) {
                continue;
            }
            let any_failed = ups
                .iter()
                .any(|s| matches!(s, TaskState::Failed | TaskState::UpstreamFailed));
            let any_skipped = ups.contains(&TaskState::Skipped);
            let wrong = (any_failed
                && !matches!(state, TaskState::UpstreamFailed | TaskState::Skipped))
                || (!any_failed && any_skipped && *state != TaskState::Skipped);
            if wrong {
                let key = TaskInstanceKey::new(dag_id, run_id, &task.task_id, -1);
                let message = format!("ended {state} with upstream states {ups:?}");
                violations.push(violation(DEPENDENCIES_RESPECTED, None, key, message));
            }
        }
    }
    violations
}

/// Tries never exceed `max_tries` (1 + retries, raised only by clears), and a retry is not
/// dispatched before its delay has passed.
///
/// Times are the row's own (when the run failed the try, when it queued the next), which a
/// batch applied later still says. A write that goes from try n straight to try n + 1 queued
/// (one batch held the failure and the retry, so `up_for_retry` was never stored) is judged
/// from the earliest the failure can have been: when try n was queued, before which its
/// attempt was not dispatched.
pub fn retries_within_policy(history: &History) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut up_for_retry_at: BTreeMap<&TaskInstanceKey, (u32, Timestamp)> = BTreeMap::new();
    let mut queued_at: BTreeMap<&TaskInstanceKey, (u32, Timestamp)> = BTreeMap::new();
    for entry in &history.entries {
        let Record::TaskWritten {
            key,
            from,
            to,
            max_tries,
            queued_at: row_queued_at,
            ended_at: row_ended_at,
        } = &entry.record
        else {
            continue;
        };
        let queued_at_time = row_queued_at.unwrap_or(entry.at);
        let skipped_up_for_retry = from.is_some_and(|from| {
            from.state != TaskState::UpForRetry
                && from.try_number + 1 == to.try_number
                && to.state == TaskState::Queued
        });
        if skipped_up_for_retry {
            if let Some(queued) = queued_at.get(key).copied() {
                up_for_retry_at.insert(key, queued);
            }
        }
        if to.state == TaskState::Queued {
            queued_at.insert(key, (to.try_number, queued_at_time));
        }
        if to.try_number > *max_tries {
            let message = format!("try {} of at most {max_tries}", to.try_number);
            violations.push(violation(
                RETRIES_WITHIN_POLICY,
                Some(entry.at),
                key,
                message,
            ));
        }
        match to.state {
            TaskState::UpForRetry => {
                let failed_at = row_ended_at.unwrap_or(entry.at);
                up_for_retry_at.insert(key, (to.try_number, failed_at));
            }
            TaskState::Queued => {
                let Some((failed_try, failed_at)) = up_for_retry_at.get(key).copied() else {
                    continue;
                };
                let task = history.dag(&key.dag_id).and_then(|d| d.task(&key.task_id));
                if failed_try + 1 != to.try_number {
                    continue;
                }
                let Some(task) = task else { continue };
                let delay_ms = minimum_retry_delay_ms(task, to.try_number);
                let earliest = failed_at + chrono::TimeDelta::milliseconds(delay_ms as i64);
                if queued_at_time < earliest {
                    let message = format!(
                        "try {} dispatched at {queued_at_time} before its retry time {earliest}",
                        to.try_number
                    );
                    violations.push(violation(
                        RETRIES_WITHIN_POLICY,
                        Some(entry.at),
                        key,
                        message,
                    ));
                }
            }
            _ => {}
        }
    }
    violations
}

/// The least delay before `next_try` that Airflow's policy allows (jitter only adds).
fn minimum_retry_delay_ms(task: &TaskSpec, next_try: u32) -> u64 {
    if !task.retry_exponential_backoff {
        return task.retry_delay_ms;
    }
    let factor = 1u64
        .checked_shl(next_try.saturating_sub(2))
        .unwrap_or(u64::MAX);
    let cap = task
        .max_retry_delay_ms
        .unwrap_or(MAX_RETRY_DELAY_DEFAULT_MS);
    task.retry_delay_ms.saturating_mul(factor).max(1).min(cap)
}

/// Executing attempts never exceed worker slots, pool slots or a DAG's `max_active_tasks`,
/// and running runs never exceed `max_active_runs`.
pub fn limits_respected(history: &History) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut executing: BTreeMap<u64, (&TaskInstanceKey, usize, &str, u32)> = BTreeMap::new();
    // Attempts of a paused worker hold nothing the node still counts once it has released
    // them; they are judged again if they resume.
    let mut suspended: BTreeMap<u64, (&TaskInstanceKey, usize, &str, u32)> = BTreeMap::new();
    let mut run_states: BTreeMap<&RunKey, DagRunState> = BTreeMap::new();
    let pool_size = |pool: &str| {
        history
            .pools
            .iter()
            .find(|(name, _)| name == pool)
            .map_or(DEFAULT_POOL_SLOTS, |(_, slots)| *slots)
    };
    for entry in &history.entries {
        match &entry.record {
            Record::AttemptStarted {
                attempt,
                key,
                worker,
                pool,
                pool_slots,
                ..
            } => {
                let mut fail = |message: String| {
                    violations.push(violation(LIMITS_RESPECTED, Some(entry.at), key, message))
                };
                if executing.values().any(|(_, w, _, _)| w == worker) {
                    fail(format!("worker {worker} runs two attempts at once"));
                }
                executing.insert(*attempt, (key, *worker, pool, *pool_slots));
                if executing.len() > history.worker_slots as usize {
                    fail(format!(
                        "{} attempts on {} worker slots",
                        executing.len(),
                        history.worker_slots
                    ));
                }
                let used: u32 = executing
                    .values()
                    .filter(|(_, _, p, _)| p == pool)
                    .map(|e| e.3)
                    .sum();
                if used > pool_size(pool) {
                    fail(format!(
                        "pool {pool} uses {used} of {} slots",
                        pool_size(pool)
                    ));
                }
                let dag_active = executing
                    .values()
                    .filter(|(k, ..)| k.dag_id == key.dag_id)
                    .count();
                let limit = history
                    .dag(&key.dag_id)
                    .map_or(u32::MAX, |d| d.max_active_tasks);
                if dag_active > limit as usize {
                    fail(format!(
                        "{dag_active} active tasks over max_active_tasks {limit}"
                    ));
                }
            }
            Record::AttemptEnded { attempt, .. } => {
                executing.remove(attempt);
                suspended.remove(attempt);
            }
            Record::AttemptSuspended { attempt } => {
                if let Some(running) = executing.remove(attempt) {
                    suspended.insert(*attempt, running);
                }
            }
            Record::AttemptResumed { attempt } => {
                if let Some((key, worker, pool, _)) = suspended.remove(attempt) {
                    if executing.values().any(|(_, w, _, _)| *w == worker) {
                        let message = format!("worker {worker} runs two attempts at once");
                        violations.push(violation(LIMITS_RESPECTED, Some(entry.at), key, message));
                    }
                    let running = (key, worker, pool, suspended_slots(history, *attempt));
                    executing.insert(*attempt, running);
                }
            }
            Record::RunStateChanged { run, state } => {
                run_states.insert(run, *state);
                let running = run_states
                    .iter()
                    .filter(|(r, s)| r.dag_id == run.dag_id && **s == DagRunState::Running)
                    .count();
                let limit = history
                    .dag(&run.dag_id)
                    .map_or(u32::MAX, |d| d.max_active_runs);
                if running > limit as usize {
                    let message = format!("{running} running runs over max_active_runs {limit}");
                    violations.push(violation(LIMITS_RESPECTED, Some(entry.at), run, message));
                }
            }
            _ => {}
        }
    }
    violations
}

/// Once faults stop, every run reaches a final state within the quiet time.
pub fn liveness(history: &History) -> Vec<Violation> {
    let mut violations = Vec::new();
    if history.budget_exhausted {
        let message = "the seed ran out of events or simulated time".to_string();
        violations.push(violation(LIVENESS, history.end, "", message));
    }
    for row in &history.final_store.runs {
        if !row.state.is_finished() {
            let message = format!("run is still {} when the simulation ends", row.state);
            violations.push(violation(LIVENESS, history.end, &row.key, message));
        }
    }
    violations
}

/// Every write the store acknowledged is still there at the end, crashes or not: task
/// instances at the acknowledged (try, token) or later, created runs present.
pub fn acknowledged_never_lost(history: &History) -> Vec<Violation> {
    let mut violations = Vec::new();
    let stored: BTreeMap<&TaskInstanceKey, (u32, u64)> = history
        .final_store
        .task_instances
        .iter()
        .map(|r| (&r.key, (r.try_number, r.token)))
        .collect();
    let runs: BTreeSet<&RunKey> = history.final_store.runs.iter().map(|r| &r.key).collect();
    for entry in &history.entries {
        match &entry.record {
            Record::TaskWritten { key, to, .. } => {
                let acknowledged = (to.try_number, to.token);
                if stored.get(key).is_none_or(|held| *held < acknowledged) {
                    let message = format!(
                        "acknowledged try {} token {}, store holds {:?}",
                        to.try_number,
                        to.token,
                        stored.get(key)
                    );
                    violations.push(violation(
                        ACKNOWLEDGED_NEVER_LOST,
                        Some(entry.at),
                        key,
                        message,
                    ));
                }
            }
            Record::RunCreated { run, .. } if !runs.contains(run) => {
                let message = "acknowledged run creation is gone".to_string();
                violations.push(violation(
                    ACKNOWLEDGED_NEVER_LOST,
                    Some(entry.at),
                    run,
                    message,
                ));
            }
            _ => {}
        }
    }
    violations
}

/// The pool slots of an attempt, from its start record.
fn suspended_slots(history: &History, attempt: u64) -> u32 {
    history
        .entries
        .iter()
        .find_map(|entry| match &entry.record {
            Record::AttemptStarted {
                attempt: started,
                pool_slots,
                ..
            } if *started == attempt => Some(*pool_slots),
            _ => None,
        })
        .unwrap_or(1)
}

/// No orphan overlaps another attempt of its task instance: an attempt on a remote slot that
/// the node no longer holds (released when its session was left, or forgotten by a node
/// crash) stops at its worker's lease, before the node's idle timeout lets a retry start, so
/// it never executes while another attempt of the same task instance does. A paused attempt
/// does not execute until it resumes.
///
/// An attempt the node still holds may overlap its replacement for as long as its `Kill`
/// travels (the dispatcher stops a superseded remote attempt by a message and does not wait):
/// the run refuses its reports by fencing token, which `one_result_per_try` judges.
pub fn no_orphan_overlap(history: &History) -> Vec<Violation> {
    struct Running<'h> {
        key: &'h TaskInstanceKey,
        version: (u32, u64),
        remote: bool,
        orphan: bool,
        executing: bool,
    }
    let remote_slots: u32 = history.remote_workers.iter().map(|(_, slots)| slots).sum();
    let local_slots = history.worker_slots.saturating_sub(remote_slots) as usize;
    let mut violations = Vec::new();
    let mut attempts: BTreeMap<u64, Running> = BTreeMap::new();
    for entry in &history.entries {
        let begun = match &entry.record {
            Record::AttemptStarted {
                attempt,
                key,
                try_number,
                token,
                worker,
                ..
            } => {
                let running = Running {
                    key,
                    version: (*try_number, *token),
                    remote: *worker >= local_slots,
                    orphan: false,
                    executing: true,
                };
                attempts.insert(*attempt, running);
                *attempt
            }
            Record::AttemptResumed { attempt } => match attempts.get_mut(attempt) {
                Some(running) => {
                    running.executing = true;
                    *attempt
                }
                None => continue,
            },
            Record::AttemptSuspended { attempt } => {
                if let Some(running) = attempts.get_mut(attempt) {
                    running.executing = false;
                }
                continue;
            }
            Record::AttemptEnded { attempt, .. } => {
                attempts.remove(attempt);
                continue;
            }
            Record::RemoteReleased {
                key,
                try_number,
                token,
                ..
            } => {
                for running in attempts.values_mut() {
                    if running.key == key && running.version == (*try_number, *token) {
                        running.orphan = true;
                    }
                }
                continue;
            }
            Record::NodeCrashed => {
                for running in attempts.values_mut().filter(|r| r.remote) {
                    running.orphan = true;
                }
                continue;
            }
            _ => continue,
        };
        let this = &attempts[&begun];
        let other = attempts.iter().find(|(id, other)| {
            **id != begun
                && other.executing
                && other.key == this.key
                && (other.orphan || this.orphan)
        });
        if let Some((other, _)) = other {
            let message = format!("attempt {begun} executes while attempt {other} still does");
            violations.push(violation(
                NO_ORPHAN_OVERLAP,
                Some(entry.at),
                this.key,
                message,
            ));
        }
    }
    violations
}

/// The node accepts a remote report only from the session it holds for that worker: never
/// from an old session (a late result of a worker that was cut off and came back).
pub fn reports_fenced_by_session(history: &History) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut sessions: BTreeMap<&str, u64> = BTreeMap::new();
    for entry in &history.entries {
        match &entry.record {
            Record::RemoteJoined { worker, session } => {
                sessions.insert(worker, *session);
            }
            Record::RemoteLeft {
                worker, session, ..
            } if sessions.get(worker.as_str()) == Some(session) => {
                sessions.remove(worker.as_str());
            }
            Record::NodeCrashed => sessions.clear(),
            Record::ReportAccepted {
                worker,
                session,
                key,
                ..
            } => {
                let held = sessions.get(worker.as_str());
                if held != Some(session) {
                    let message = format!(
                        "accepted a report of {worker} session {session} while the node held {held:?}"
                    );
                    violations.push(violation(
                        REPORTS_FENCED_BY_SESSION,
                        Some(entry.at),
                        key,
                        message,
                    ));
                }
            }
            _ => {}
        }
    }
    violations
}

/// A placed attempt: task instance, try, token.
type PlacedAttempt<'h> = (&'h TaskInstanceKey, u32, u64);

/// A lost link leads, within the idle timeout (and a little), to the node treating the
/// session as left, and a session left leaves none of its attempts placed: each is released
/// (reported lost). At the end the dispatcher counts as started exactly the attempts that
/// execute: no slot leaked.
pub fn link_loss_releases(history: &History) -> Vec<Violation> {
    use crate::sim::IDLE_TIMEOUT_MS;
    let mut violations = Vec::new();
    // (worker, session) -> lost at, and the deadline, pushed back by clock jumps.
    let mut lost: BTreeMap<(&str, u64), (Timestamp, Timestamp)> = BTreeMap::new();
    let mut placed: BTreeMap<(&str, u64), BTreeSet<PlacedAttempt>> = BTreeMap::new();
    let bound = chrono::TimeDelta::milliseconds((IDLE_TIMEOUT_MS + LINK_LOSS_SLACK_MS) as i64);
    let overdue = |lost: &mut BTreeMap<(&str, u64), (Timestamp, Timestamp)>,
                   now: Timestamp,
                   violations: &mut Vec<Violation>| {
        lost.retain(|(worker, session), (at, deadline)| {
            if now <= *deadline {
                return true;
            }
            let message = format!(
                "session {session} of {worker} lost its link at {at} and was not left by {deadline}"
            );
            violations.push(violation(
                LINK_LOSS_RELEASES,
                Some(*deadline),
                worker,
                message,
            ));
            false
        });
    };
    for entry in &history.entries {
        // A clock jump is recorded at the time after it: it pushes the deadlines first.
        if let Record::ClockJumped { ms } = &entry.record {
            let jump = chrono::TimeDelta::milliseconds(*ms as i64);
            for (_, deadline) in lost.values_mut() {
                *deadline += jump;
            }
        }
        overdue(&mut lost, entry.at, &mut violations);
        match &entry.record {
            Record::LinkLost { worker, session } => {
                lost.entry((worker, *session))
                    .or_insert((entry.at, entry.at + bound));
            }
            Record::NodeCrashed => {
                lost.clear();
                placed.clear();
            }
            Record::RemotePlaced {
                worker,
                session,
                key,
                try_number,
                token,
                ..
            } => {
                placed
                    .entry((worker, *session))
                    .or_default()
                    .insert((key, *try_number, *token));
            }
            Record::RemoteReleased {
                worker,
                session,
                key,
                try_number,
                token,
            } => {
                if let Some(open) = placed.get_mut(&(worker.as_str(), *session)) {
                    open.remove(&(key, *try_number, *token));
                }
            }
            Record::RemoteLeft {
                worker, session, ..
            } => {
                lost.remove(&(worker.as_str(), *session));
                for (key, try_number, token) in placed
                    .remove(&(worker.as_str(), *session))
                    .unwrap_or_default()
                {
                    let message = format!(
                        "session {session} of {worker} left with try {try_number} token {token} still placed"
                    );
                    violations.push(violation(LINK_LOSS_RELEASES, Some(entry.at), key, message));
                }
            }
            _ => {}
        }
    }
    if let Some(end) = history.end {
        overdue(&mut lost, end, &mut violations);
    }
    if let Some(started) = history.final_started {
        if started != history.final_executing {
            let message = format!(
                "the dispatcher counts {started} started attempts, {} execute",
                history.final_executing
            );
            violations.push(violation(LINK_LOSS_RELEASES, history.end, "", message));
        }
    }
    violations
}

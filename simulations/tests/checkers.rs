//! Each checker catches a small hand-built history that breaks its invariant, and accepts the
//! same history without the break.

use chrono::TimeZone;
use weft_core::dag_run::TaskVersion;
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::spec::{DagSpec, ScheduleSpec, TaskKind, TaskSpec};
use weft_core::state::{DagRunState, RunType, TaskState};
use weft_core::Timestamp;
use weft_simulations::checkers::*;
use weft_simulations::history::{FinalStore, History, Record};
use weft_storage::RunRow;

fn at(minute: u32) -> Timestamp {
    chrono::Utc
        .with_ymd_and_hms(2024, 1, 1, 0, minute, 0)
        .unwrap()
}

fn key(task_id: &str) -> TaskInstanceKey {
    TaskInstanceKey::new("d", "r", task_id, -1)
}

fn run_key(run_id: &str) -> RunKey {
    RunKey {
        dag_id: "d".into(),
        run_id: run_id.into(),
    }
}

fn version(state: TaskState, try_number: u32, token: u64) -> TaskVersion {
    TaskVersion {
        state,
        try_number,
        token,
    }
}

/// `a >> b`, `b` all_success with one retry after 60 s, at most one active task and run.
fn dag() -> DagSpec {
    let a = TaskSpec::new("a", TaskKind::Empty);
    let mut b = TaskSpec::new("b", TaskKind::Empty);
    b.upstream = vec!["a".into()];
    b.retries = 1;
    b.retry_delay_ms = 60_000;
    let mut spec = DagSpec::new("d", vec![a, b]);
    spec.max_active_tasks = 1;
    spec.max_active_runs = 1;
    spec
}

fn history(records: Vec<(u32, Record)>) -> History {
    let mut history = History {
        dags: vec![dag()],
        worker_slots: 4,
        ..History::default()
    };
    for (minute, record) in records {
        history.record(at(minute), record);
    }
    history
}

fn written(task: &str, from: Option<TaskVersion>, to: TaskVersion) -> Record {
    Record::TaskWritten {
        key: key(task),
        from,
        to,
        max_tries: 2,
        queued_at: None,
        ended_at: None,
    }
}

fn started(attempt: u64, task: &str, token: u64, worker: usize) -> Record {
    Record::AttemptStarted {
        attempt,
        key: key(task),
        try_number: 1,
        token,
        worker,
        pool: "default_pool".into(),
        pool_slots: 1,
    }
}

fn run_row(run_id: &str, logical_date: Timestamp, state: DagRunState) -> RunRow {
    RunRow {
        key: run_key(run_id),
        run_type: RunType::Scheduled,
        state,
        logical_date,
        data_interval: weft_core::timetable::DataInterval::exact(logical_date),
        version_hash: String::new(),
        conf: serde_json::json!({}),
        seed: 0,
        created_at: logical_date,
        started_at: None,
        ended_at: None,
    }
}

fn names(violations: &[weft_simulations::Violation]) -> Vec<&'static str> {
    violations.iter().map(|v| v.checker).collect()
}

#[test]
fn schedule_exactly_once_catches_a_missed_and_a_doubled_tick() {
    let mut history = history(vec![]);
    let spec = &mut history.dags[0];
    spec.schedule = ScheduleSpec::Interval {
        every_ms: 60 * 60_000,
        data_intervals: false,
    };
    spec.catchup = true;
    spec.start_date = Some(at(0));
    spec.end_date = Some(at(0) + chrono::TimeDelta::hours(2));
    history.end = Some(at(0) + chrono::TimeDelta::hours(3));
    let hour = |h| at(0) + chrono::TimeDelta::hours(h);
    history.final_store.runs = vec![
        run_row("scheduled_0", hour(0), DagRunState::Success),
        run_row("scheduled_1", hour(1), DagRunState::Success),
        run_row("scheduled_2", hour(2), DagRunState::Success),
    ];
    assert!(schedule_exactly_once(&history).is_empty());
    let mut doubled = history.clone();
    let mut backfill = run_row("backfill_1", hour(1), DagRunState::Success);
    backfill.run_type = RunType::Backfill;
    doubled.final_store.runs.push(backfill);
    assert_eq!(
        names(&schedule_exactly_once(&doubled)),
        [SCHEDULE_EXACTLY_ONCE]
    );
    history.final_store.runs.remove(1);
    assert_eq!(
        names(&schedule_exactly_once(&history)),
        [SCHEDULE_EXACTLY_ONCE]
    );
}

#[test]
fn one_result_per_try_catches_a_stale_result() {
    let accepted = |token| Record::ResultAccepted {
        key: key("a"),
        try_number: 1,
        token,
        state: TaskState::Skipped,
    };
    let write = written(
        "a",
        Some(version(TaskState::Running, 1, 2)),
        version(TaskState::Skipped, 1, 2),
    );
    let good = history(vec![(1, write.clone()), (1, accepted(2))]);
    assert!(one_result_per_try(&good).is_empty());
    let stale = history(vec![(1, write), (1, accepted(1))]);
    assert_eq!(names(&one_result_per_try(&stale)), [ONE_RESULT_PER_TRY]);
}

#[test]
fn no_concurrent_attempts_catches_two_attempts_under_one_token() {
    let ended = Record::AttemptEnded {
        attempt: 1,
        how: "finished".into(),
    };
    let sequential = history(vec![
        (1, started(1, "a", 1, 0)),
        (2, ended),
        (3, started(2, "a", 2, 0)),
    ]);
    assert!(no_concurrent_attempts(&sequential).is_empty());
    let twins = history(vec![(1, started(1, "a", 1, 0)), (2, started(2, "a", 1, 1))]);
    assert_eq!(
        names(&no_concurrent_attempts(&twins)),
        [NO_CONCURRENT_ATTEMPTS]
    );
}

#[test]
fn dependencies_respected_catches_a_task_started_before_its_upstream_succeeded() {
    let created = |task| written(task, None, version(TaskState::None, 0, 0));
    let queued = |task| {
        written(
            task,
            Some(version(TaskState::None, 0, 0)),
            version(TaskState::Queued, 1, 1),
        )
    };
    let a_done = written(
        "a",
        Some(version(TaskState::Queued, 1, 1)),
        version(TaskState::Success, 1, 1),
    );
    let good = history(vec![
        (0, created("a")),
        (0, created("b")),
        (1, queued("a")),
        (2, a_done),
        (3, queued("b")),
    ]);
    assert!(dependencies_respected(&good).is_empty());
    let early = history(vec![
        (0, created("a")),
        (0, created("b")),
        (1, queued("a")),
        (1, queued("b")),
    ]);
    assert_eq!(
        names(&dependencies_respected(&early)),
        [DEPENDENCIES_RESPECTED]
    );
}

/// One batch may write a task instance first and its upstream's end later (a row's write
/// stands where the batch first wrote it): the start is judged once the batch is applied, and a
/// row created by its start counts as a first try.
#[test]
fn dependencies_respected_judges_a_start_against_its_whole_batch() {
    let batch_end = Record::BatchApplied { run: run_key("r") };
    let b_created_queued = written("b", None, version(TaskState::Queued, 1, 1));
    let a_done = written(
        "a",
        Some(version(TaskState::Running, 1, 1)),
        version(TaskState::Success, 1, 1),
    );
    let a_queued = written("a", None, version(TaskState::Queued, 1, 1));
    let a_running = written(
        "a",
        Some(version(TaskState::Queued, 1, 1)),
        version(TaskState::Running, 1, 1),
    );
    let good = history(vec![
        (1, a_queued.clone()),
        (1, batch_end.clone()),
        (2, a_running.clone()),
        (2, batch_end.clone()),
        (3, b_created_queued.clone()),
        (3, a_done.clone()),
        (3, batch_end.clone()),
    ]);
    assert!(dependencies_respected(&good).is_empty());
    // The upstream's end in the next batch, even at the same instant, is too late.
    let early = history(vec![
        (1, a_queued),
        (1, batch_end.clone()),
        (2, a_running),
        (2, batch_end.clone()),
        (3, b_created_queued),
        (3, batch_end.clone()),
        (3, a_done),
        (3, batch_end),
    ]);
    assert_eq!(
        names(&dependencies_respected(&early)),
        [DEPENDENCIES_RESPECTED]
    );
}

/// A failure and its retry in one batch: `up_for_retry` is never stored, and the retry is
/// judged from when the failed try was queued.
#[test]
fn retries_within_policy_judges_a_retry_coalesced_with_its_failure() {
    let queued = written(
        "b",
        Some(version(TaskState::None, 0, 0)),
        version(TaskState::Queued, 1, 1),
    );
    let retried = written(
        "b",
        Some(version(TaskState::Running, 1, 1)),
        version(TaskState::Queued, 2, 2),
    );
    let good = history(vec![(0, queued.clone()), (1, retried.clone())]);
    assert!(retries_within_policy(&good).is_empty());
    let early = history(vec![(3, queued), (3, retried)]);
    assert_eq!(
        names(&retries_within_policy(&early)),
        [RETRIES_WITHIN_POLICY]
    );
}

#[test]
fn retries_within_policy_catches_an_early_retry_and_an_extra_try() {
    let failed = written(
        "b",
        Some(version(TaskState::Running, 1, 1)),
        version(TaskState::UpForRetry, 1, 1),
    );
    let retried = written(
        "b",
        Some(version(TaskState::UpForRetry, 1, 1)),
        version(TaskState::Queued, 2, 2),
    );
    let good = history(vec![(0, failed.clone()), (1, retried.clone())]);
    assert!(retries_within_policy(&good).is_empty());
    let early = history(vec![(5, failed), (5, retried)]);
    assert_eq!(
        names(&retries_within_policy(&early)),
        [RETRIES_WITHIN_POLICY]
    );
    let extra = written(
        "b",
        Some(version(TaskState::UpForRetry, 2, 2)),
        version(TaskState::Queued, 3, 3),
    );
    assert_eq!(
        names(&retries_within_policy(&history(vec![(9, extra)]))),
        [RETRIES_WITHIN_POLICY]
    );
}

#[test]
fn limits_respected_catches_max_active_tasks_and_max_active_runs() {
    let ended = Record::AttemptEnded {
        attempt: 1,
        how: "finished".into(),
    };
    let good = history(vec![
        (1, started(1, "a", 1, 0)),
        (2, ended),
        (3, started(2, "b", 1, 1)),
    ]);
    assert!(limits_respected(&good).is_empty());
    let tasks = history(vec![(1, started(1, "a", 1, 0)), (2, started(2, "b", 1, 1))]);
    assert_eq!(names(&limits_respected(&tasks)), [LIMITS_RESPECTED]);
    let running = |run_id| Record::RunStateChanged {
        run: run_key(run_id),
        state: DagRunState::Running,
    };
    let runs = history(vec![(1, running("r1")), (2, running("r2"))]);
    assert_eq!(names(&limits_respected(&runs)), [LIMITS_RESPECTED]);
}

#[test]
fn liveness_catches_an_unfinished_run() {
    let mut history = history(vec![]);
    history.final_store.runs = vec![run_row("r", at(0), DagRunState::Success)];
    assert!(liveness(&history).is_empty());
    history
        .final_store
        .runs
        .push(run_row("stuck", at(1), DagRunState::Running));
    assert_eq!(names(&liveness(&history)), [LIVENESS]);
}

#[test]
fn acknowledged_never_lost_catches_a_write_gone_after_a_crash() {
    let acknowledged = written("a", None, version(TaskState::Queued, 1, 1));
    let mut history = history(vec![(1, acknowledged), (2, Record::NodeCrashed)]);
    let mut record = weft_core::dag_run::TaskInstanceRecord {
        key: key("a"),
        state: TaskState::Queued,
        try_number: 1,
        token: 1,
        max_tries: 1,
        priority_weight: 1,
        pool: "default_pool".into(),
        pool_slots: 1,
        queued_at: None,
        started_at: None,
        ended_at: None,
        next_retry_at: None,
        note: None,
    };
    history.final_store = FinalStore {
        runs: Vec::new(),
        task_instances: vec![record.clone()],
    };
    assert!(acknowledged_never_lost(&history).is_empty());
    record.token = 0;
    record.try_number = 0;
    history.final_store.task_instances = vec![record];
    assert_eq!(
        names(&acknowledged_never_lost(&history)),
        [ACKNOWLEDGED_NEVER_LOST]
    );
}

/// Slots 0 and 1 are local, 2 and 3 belong to the remote worker `edge-0`.
fn remote_history(records: Vec<(u32, Record)>) -> History {
    let mut history = history(records);
    history.remote_workers = vec![("edge-0".into(), 2)];
    history
}

fn ended(attempt: u64) -> Record {
    Record::AttemptEnded {
        attempt,
        how: "finished".into(),
    }
}

fn remote_released(token: u64) -> Record {
    Record::RemoteReleased {
        worker: "edge-0".into(),
        session: 1,
        key: key("a"),
        try_number: 1,
        token,
    }
}

#[test]
fn no_orphan_overlap_catches_an_orphan_running_beside_its_retry() {
    // Attempt 1 runs on the remote slot 2; the node releases it (its session was left).
    let stopped = remote_history(vec![
        (1, started(1, "a", 1, 2)),
        (2, ended(1)),
        (2, remote_released(1)),
        (3, started(2, "a", 2, 0)),
    ]);
    assert!(no_orphan_overlap(&stopped).is_empty());
    // Superseded but still held by the node: its `Kill` is on the way.
    let superseded = remote_history(vec![(1, started(1, "a", 1, 2)), (3, started(2, "a", 2, 0))]);
    assert!(no_orphan_overlap(&superseded).is_empty());
    let orphan = remote_history(vec![
        (1, started(1, "a", 1, 2)),
        (2, remote_released(1)),
        (3, started(2, "a", 2, 0)),
    ]);
    assert_eq!(names(&no_orphan_overlap(&orphan)), [NO_ORPHAN_OVERLAP]);
    // A paused orphan does not execute; resumed beside its retry, it does.
    let paused = vec![
        (1, started(1, "a", 1, 2)),
        (2, Record::AttemptSuspended { attempt: 1 }),
        (2, remote_released(1)),
        (3, started(2, "a", 2, 0)),
    ];
    assert!(no_orphan_overlap(&remote_history(paused.clone())).is_empty());
    let mut resumed = paused;
    resumed.push((4, Record::AttemptResumed { attempt: 1 }));
    assert_eq!(
        names(&no_orphan_overlap(&remote_history(resumed))),
        [NO_ORPHAN_OVERLAP]
    );
}

#[test]
fn reports_fenced_by_session_catches_a_report_of_an_old_session() {
    let joined = |session| Record::RemoteJoined {
        worker: "edge-0".into(),
        session,
    };
    let report = |session| Record::ReportAccepted {
        worker: "edge-0".into(),
        session,
        key: key("a"),
        try_number: 1,
        token: 1,
    };
    let left = Record::RemoteLeft {
        worker: "edge-0".into(),
        session: 1,
        why: "worker link lost (idle timeout)".into(),
    };
    let good = remote_history(vec![
        (1, joined(1)),
        (2, report(1)),
        (3, left.clone()),
        (4, joined(2)),
        (5, report(2)),
    ]);
    assert!(reports_fenced_by_session(&good).is_empty());
    let late = remote_history(vec![
        (1, joined(1)),
        (3, left),
        (4, joined(2)),
        (5, report(1)),
    ]);
    assert_eq!(
        names(&reports_fenced_by_session(&late)),
        [REPORTS_FENCED_BY_SESSION]
    );
}

#[test]
fn link_loss_releases_catches_a_session_never_left_and_a_leaked_slot() {
    let placed = Record::RemotePlaced {
        worker: "edge-0".into(),
        session: 1,
        slot: 0,
        key: key("a"),
        try_number: 1,
        token: 1,
    };
    let lost = Record::LinkLost {
        worker: "edge-0".into(),
        session: 1,
    };
    let left = Record::RemoteLeft {
        worker: "edge-0".into(),
        session: 1,
        why: "worker link lost (idle timeout)".into(),
    };
    let mut good = remote_history(vec![
        (0, placed.clone()),
        (1, lost.clone()),
        (1, remote_released(1)),
        (1, left.clone()),
    ]);
    good.end = Some(at(10));
    good.final_started = Some(0);
    assert!(link_loss_releases(&good).is_empty());
    let mut never_left = remote_history(vec![(0, placed.clone()), (1, lost)]);
    never_left.end = Some(at(10));
    assert_eq!(
        names(&link_loss_releases(&never_left)),
        [LINK_LOSS_RELEASES]
    );
    let kept = remote_history(vec![(0, placed), (1, left)]);
    assert_eq!(names(&link_loss_releases(&kept)), [LINK_LOSS_RELEASES]);
    good.final_started = Some(1);
    assert_eq!(names(&link_loss_releases(&good)), [LINK_LOSS_RELEASES]);
}

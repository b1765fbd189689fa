//! DagRun snapshots: dispatch order, retries, branching, short-circuit, skip propagation,
//! mapping, timeouts, fencing, recovery, clear and mark, and the run's final state.

mod dag_run_support;

use dag_run_support::*;
use expect_test::expect;
use weft_core::dag_run::{AttemptOutcome, RunInput, RunTimer};
use weft_core::spec::{FlowControl, MappingSpec, TaskKind};
use weft_core::state::{DagRunState, TaskState, TriggerRule};

#[test]
fn diamond_runs_in_order_and_succeeds() {
    let mut h = Harness::new(dag("a >> b, c; b, c >> d"));
    h.start();
    h.started("a");
    h.succeed("a");
    h.succeed("b");
    h.succeed("c");
    h.succeed("d");
    assert_eq!(h.run.state(), DagRunState::Success);
    expect![[r#"
        > start @00:00:00
          run running
          create a none
          create b none
          create c none
          create d none
          persist a: none -> queued try=1 token=1
          dispatch a try=1 token=1 prio=4
        > started a @00:00:00
          persist a: queued -> running try=1 token=1
        > finished a try=1 token=1 success @00:00:00
          persist a: running -> success try=1 token=1
          persist b: none -> queued try=1 token=1
          dispatch b try=1 token=1 prio=2
          persist c: none -> queued try=1 token=1
          dispatch c try=1 token=1 prio=2
        > finished b try=1 token=1 success @00:00:00
          persist b: queued -> success try=1 token=1
        > finished c try=1 token=1 success @00:00:00
          persist c: queued -> success try=1 token=1
          persist d: none -> queued try=1 token=1
          dispatch d try=1 token=1 prio=1
        > finished d try=1 token=1 success @00:00:00
          persist d: queued -> success try=1 token=1
          run success at 00:00:00
    "#]]
    .assert_eq(&h.take_log());
}

#[test]
fn retries_with_exponential_backoff_then_fails_the_run() {
    let mut spec = dag("a >> b");
    let a = task(&mut spec, "a");
    a.retries = 3;
    a.retry_delay_ms = 60_000;
    a.retry_exponential_backoff = true;
    a.max_retry_delay_ms = Some(5 * 60_000);
    let mut h = Harness::new(spec);
    h.start();
    for try_number in 2..=4 {
        h.fail("a");
        let at = h
            .run
            .task_instance("a", -1)
            .and_then(|r| r.next_retry_at)
            .expect("retry time");
        h.now = at;
        h.fire(RunTimer::Retry {
            task_id: "a".to_string(),
            map_index: -1,
            try_number,
        });
    }
    h.fail("a");
    assert_eq!(h.state("b"), TaskState::UpstreamFailed);
    assert_eq!(h.run.state(), DagRunState::Failed);
    expect![[r#"
        > start @00:00:00
          run running
          create a none
          create b none
          persist a: none -> queued try=1 token=1
          dispatch a try=1 token=1 prio=2
        > finished a try=1 token=1 failed retryable=true @00:00:00
          persist a: queued -> up_for_retry try=1 token=1 retry_at=00:01:48.584 (exit 1)
          timer retry a try=2 at 00:01:48.584
        > fire retry a try=2 @00:01:48.584
          persist a: up_for_retry -> queued try=2 token=2 (exit 1)
          dispatch a try=2 token=2 prio=2
        > finished a try=2 token=2 failed retryable=true @00:01:48.584
          persist a: queued -> up_for_retry try=2 token=2 retry_at=00:05:10.627 (exit 1)
          timer retry a try=3 at 00:05:10.627
        > fire retry a try=3 @00:05:10.627
          persist a: up_for_retry -> queued try=3 token=3 (exit 1)
          dispatch a try=3 token=3 prio=2
        > finished a try=3 token=3 failed retryable=true @00:05:10.627
          persist a: queued -> up_for_retry try=3 token=3 retry_at=00:09:47.725 (exit 1)
          timer retry a try=4 at 00:09:47.725
        > fire retry a try=4 @00:09:47.725
          persist a: up_for_retry -> queued try=4 token=4 (exit 1)
          dispatch a try=4 token=4 prio=2
        > finished a try=4 token=4 failed retryable=true @00:09:47.725
          persist a: queued -> failed try=4 token=4 (exit 1)
          persist b: none -> upstream_failed try=0 token=0
          run failed at 00:09:47.725
    "#]]
    .assert_eq(&h.take_log());
}

#[test]
fn branch_skips_unfollowed_and_join_runs() {
    let mut spec = dag("pick >> left, right; left, right >> join");
    task(&mut spec, "pick").flow = FlowControl::Branch;
    task(&mut spec, "join").trigger_rule = TriggerRule::NoneFailedMinOneSuccess;
    let mut h = Harness::new(spec);
    h.start();
    let branch = Some(vec!["left".to_string()]);
    h.finish(
        "pick",
        AttemptOutcome::Success {
            branch,
            proceed: None,
            output_len: None,
        },
    );
    h.succeed("left");
    h.succeed("join");
    assert_eq!(h.run.state(), DagRunState::Success);
    expect![[r#"
        > start @00:00:00
          run running
          create pick none
          create left none
          create right none
          create join none
          persist pick: none -> queued try=1 token=1
          dispatch pick try=1 token=1 prio=4
        > finished pick try=1 token=1 success branch=left @00:00:00
          persist pick: queued -> success try=1 token=1
          persist right: none -> skipped try=0 token=0
          persist left: none -> queued try=1 token=1
          dispatch left try=1 token=1 prio=2
        > finished left try=1 token=1 success @00:00:00
          persist left: queued -> success try=1 token=1
          persist join: none -> queued try=1 token=1
          dispatch join try=1 token=1 prio=1
        > finished join try=1 token=1 success @00:00:00
          persist join: queued -> success try=1 token=1
          run success at 00:00:00
    "#]]
    .assert_eq(&h.take_log());
}

#[test]
fn short_circuit_skips_every_descendant_and_skip_propagates() {
    let mut spec = dag("check >> a >> b; other >> b");
    task(&mut spec, "check").flow = FlowControl::ShortCircuit;
    let mut h = Harness::new(spec);
    h.start();
    h.finish(
        "check",
        AttemptOutcome::Success {
            branch: None,
            proceed: Some(false),
            output_len: None,
        },
    );
    h.succeed("other");
    assert_eq!(h.state("b"), TaskState::Skipped);
    assert_eq!(h.run.state(), DagRunState::Success);
    expect![[r#"
        > start @00:00:00
          run running
          create check none
          create a none
          create other none
          create b none
          persist check: none -> queued try=1 token=1
          dispatch check try=1 token=1 prio=3
          persist other: none -> queued try=1 token=1
          dispatch other try=1 token=1 prio=2
        > finished check try=1 token=1 success proceed=false @00:00:00
          persist check: queued -> success try=1 token=1
          persist a: none -> skipped try=0 token=0
          persist b: none -> skipped try=0 token=0
        > finished other try=1 token=1 success @00:00:00
          persist other: queued -> success try=1 token=1
          run success at 00:00:00
    "#]]
    .assert_eq(&h.take_log());
}

#[test]
fn skipped_attempt_flows_through_trigger_rules() {
    let mut spec = dag("a >> b >> c; a >> done");
    task(&mut spec, "done").trigger_rule = TriggerRule::AllDone;
    task(&mut spec, "c").trigger_rule = TriggerRule::NoneFailed;
    let mut h = Harness::new(spec);
    h.start();
    h.finish("a", AttemptOutcome::Skipped);
    // Airflow: `none_failed` runs when every upstream was skipped.
    assert_eq!(h.state("c"), TaskState::Queued);
    h.succeed("done");
    expect![[r#"
        > start @00:00:00
          run running
          create a none
          create b none
          create c none
          create done none
          persist a: none -> queued try=1 token=1
          dispatch a try=1 token=1 prio=4
        > finished a try=1 token=1 skipped @00:00:00
          persist a: queued -> skipped try=1 token=1
          persist b: none -> skipped try=0 token=0
          persist c: none -> queued try=1 token=1
          dispatch c try=1 token=1 prio=1
          persist done: none -> queued try=1 token=1
          dispatch done try=1 token=1 prio=1
        > finished done try=1 token=1 success @00:00:00
          persist done: queued -> success try=1 token=1
    "#]]
    .assert_eq(&h.take_log());
}

#[test]
fn depends_on_past_waits_for_the_previous_run() {
    let mut spec = dag("a >> b");
    task(&mut spec, "a").depends_on_past = true;
    let mut context = context(spec);
    context.past.insert("a".to_string(), TaskState::Running);
    let mut h = Harness::from_run(weft_core::dag_run::DagRun::new(context));
    h.start();
    assert_eq!(h.state("a"), TaskState::None);
    let input = RunInput::PastTaskFinished {
        task_id: "a".to_string(),
        state: TaskState::Success,
    };
    h.send("past a success", input);
    expect![[r#"
        > start @00:00:00
          run running
          create a none
          create b none
        > past a success @00:00:00
          persist a: none -> queued try=1 token=1
          dispatch a try=1 token=1 prio=2
    "#]]
    .assert_eq(&h.take_log());
}

#[test]
fn literal_mapping_and_empty_tasks() {
    let mut spec = dag("m >> e; none_of_them");
    task(&mut spec, "m").mapping = Some(MappingSpec::Literal { length: 2 });
    task(&mut spec, "e").kind = TaskKind::Empty;
    task(&mut spec, "none_of_them").mapping = Some(MappingSpec::Literal { length: 0 });
    let mut h = Harness::new(spec);
    h.start();
    h.succeed("m[0]");
    h.succeed("m[1]");
    assert_eq!(h.run.state(), DagRunState::Success);
    expect![[r#"
        > start @00:00:00
          run running
          create m[0] none
          create m[1] none
          create e none
          create none_of_them skipped
          persist m[0]: none -> queued try=1 token=1
          dispatch m[0] try=1 token=1 prio=2
          persist m[1]: none -> queued try=1 token=1
          dispatch m[1] try=1 token=1 prio=2
        > finished m[0] try=1 token=1 success @00:00:00
          persist m[0]: queued -> success try=1 token=1
        > finished m[1] try=1 token=1 success @00:00:00
          persist m[1]: queued -> success try=1 token=1
          persist e: none -> success try=1 token=0
          run success at 00:00:00
    "#]]
    .assert_eq(&h.take_log());
}

#[test]
fn upstream_mapping_expands_on_success() {
    let mut spec = dag("list >> each >> sum; empty_list >> none_each");
    task(&mut spec, "each").mapping = Some(MappingSpec::Upstream {
        task_id: "list".to_string(),
    });
    task(&mut spec, "none_each").mapping = Some(MappingSpec::Upstream {
        task_id: "empty_list".to_string(),
    });
    let mut h = Harness::new(spec);
    h.start();
    h.finish(
        "list",
        AttemptOutcome::Success {
            branch: None,
            proceed: None,
            output_len: Some(2),
        },
    );
    h.finish(
        "empty_list",
        AttemptOutcome::Success {
            branch: None,
            proceed: None,
            output_len: Some(0),
        },
    );
    h.succeed("each[0]");
    h.succeed("each[1]");
    h.succeed("sum");
    assert_eq!(h.run.state(), DagRunState::Success);
    expect![[r#"
        > start @00:00:00
          run running
          create list none
          create each none
          create sum none
          create empty_list none
          create none_each none
          persist list: none -> queued try=1 token=1
          dispatch list try=1 token=1 prio=3
          persist empty_list: none -> queued try=1 token=1
          dispatch empty_list try=1 token=1 prio=2
        > finished list try=1 token=1 success output_len=2 @00:00:00
          persist list: queued -> success try=1 token=1
          persist each: none -> removed try=0 token=0 (expanded into 2 instances)
          create each[0] none
          create each[1] none
          persist each[0]: none -> queued try=1 token=1
          dispatch each[0] try=1 token=1 prio=2
          persist each[1]: none -> queued try=1 token=1
          dispatch each[1] try=1 token=1 prio=2
        > finished empty_list try=1 token=1 success output_len=0 @00:00:00
          persist empty_list: queued -> success try=1 token=1
          persist none_each: none -> skipped try=0 token=0 (mapped over an empty list)
        > finished each[0] try=1 token=1 success @00:00:00
          persist each[0]: queued -> success try=1 token=1
        > finished each[1] try=1 token=1 success @00:00:00
          persist each[1]: queued -> success try=1 token=1
          persist sum: none -> queued try=1 token=1
          dispatch sum try=1 token=1 prio=1
        > finished sum try=1 token=1 success @00:00:00
          persist sum: queued -> success try=1 token=1
          run success at 00:00:00
    "#]]
    .assert_eq(&h.take_log());
    // Shown: the mapped instances, not the placeholder they replaced; a task mapped over an
    // empty list keeps its one (skipped) instance.
    let shown = weft_core::dag_run::shown_instances(h.run.task_instances().cloned().collect());
    let mut names: Vec<String> = shown
        .iter()
        .map(|record| {
            format!(
                "{}[{}] {}",
                record.key.task_id, record.key.map_index, record.state
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "each[0] success",
            "each[1] success",
            "empty_list[-1] success",
            "list[-1] success",
            "none_each[-1] skipped",
            "sum[-1] success",
        ]
    );
    assert_eq!(
        h.run.task_instances().count(),
        names.len() + 1,
        "the run itself keeps the placeholder"
    );
}

#[test]
fn execution_timeout_kills_and_retries() {
    let mut spec = dag("slow");
    let slow = task(&mut spec, "slow");
    slow.execution_timeout_ms = Some(30_000);
    slow.retries = 1;
    slow.retry_delay_ms = 1_000;
    let mut h = Harness::new(spec);
    h.start();
    h.started("slow");
    h.advance_ms(30_000);
    h.fire(RunTimer::ExecutionTimeout {
        attempt: h.attempt_id("slow", 1, 1),
    });
    // The killed attempt's late result is fenced out.
    h.finish_attempt("slow", 1, 1, success());
    assert_eq!(h.run.stats().ignored_results, 1);
    expect![[r#"
        > start @00:00:00
          run running
          create slow none
          persist slow: none -> queued try=1 token=1
          dispatch slow try=1 token=1 prio=1
        > started slow @00:00:00
          persist slow: queued -> running try=1 token=1
          timer execution_timeout slow try=1 token=1 at 00:00:30
        > fire execution_timeout slow try=1 token=1 @00:00:30
          kill slow try=1 token=1
          persist slow: running -> up_for_retry try=1 token=1 retry_at=00:00:31 (execution timed out after 30000 ms)
          timer retry slow try=2 at 00:00:31
        > finished slow try=1 token=1 success @00:00:30
    "#]].assert_eq(&h.take_log());
}

#[test]
fn stale_and_duplicate_results_are_ignored_and_counted() {
    let mut spec = dag("a");
    task(&mut spec, "a").retries = 1;
    let mut h = Harness::new(spec);
    h.start();
    h.finish_attempt("a", 1, 0, success());
    h.finish_attempt("a", 2, 1, success());
    h.succeed("a");
    h.succeed("a");
    assert_eq!(h.run.stats().ignored_results, 3);
    assert_eq!(h.run.state(), DagRunState::Success);
    expect![[r#"
        > start @00:00:00
          run running
          create a none
          persist a: none -> queued try=1 token=1
          dispatch a try=1 token=1 prio=1
        > finished a try=1 token=0 success @00:00:00
        > finished a try=2 token=1 success @00:00:00
        > finished a try=1 token=1 success @00:00:00
          persist a: queued -> success try=1 token=1
          run success at 00:00:00
        > finished a try=1 token=1 success @00:00:00
    "#]]
    .assert_eq(&h.take_log());
}

#[test]
fn recovery_redispatches_queued_and_adopts_running() {
    let mut spec = dag("q; r");
    task(&mut spec, "r").retries = 1;
    task(&mut spec, "r").execution_timeout_ms = Some(60_000);
    let mut h = Harness::new(spec);
    h.start();
    h.started("r");
    h.restart();
    h.start();
    // The result of the attempt dispatched before the restart is fenced out.
    h.finish_attempt("q", 1, 1, success());
    assert_eq!(h.state("q"), TaskState::Queued);
    // The running attempt is adopted, not failed: its result is the current try's.
    assert_eq!(h.state("r"), TaskState::Running);
    h.succeed("q");
    h.finish_attempt("r", 1, 1, success());
    assert_eq!(h.state("r"), TaskState::Success);
    expect![[r#"
        > start @00:00:00
          run running
          create q none
          create r none
          persist q: none -> queued try=1 token=1
          dispatch q try=1 token=1 prio=1
          persist r: none -> queued try=1 token=1
          dispatch r try=1 token=1 prio=1
        > started r @00:00:00
          persist r: queued -> running try=1 token=1
          timer execution_timeout r try=1 token=1 at 00:01:00
        -- restart
        > start @00:00:00
          persist q: queued -> queued try=1 token=2
          dispatch q try=1 token=2 prio=1
          adopt r try=1 token=1
          timer execution_timeout r try=1 token=1 at 00:01:00
        > finished q try=1 token=1 success @00:00:00
        > finished q try=1 token=2 success @00:00:00
          persist q: queued -> success try=1 token=2
        > finished r try=1 token=1 success @00:00:00
          persist r: running -> success try=1 token=1
          run success at 00:00:00
    "#]]
    .assert_eq(&h.take_log());
}

#[test]
fn an_adopted_attempt_that_cannot_be_found_is_a_lost_try() {
    let mut spec = dag("r");
    task(&mut spec, "r").retries = 1;
    let mut h = Harness::new(spec);
    h.start();
    h.started("r");
    h.restart();
    h.start();
    let lost = AttemptOutcome::Lost {
        reason: "the attempt was not found where it ran".to_string(),
    };
    h.finish_attempt("r", 1, 1, lost);
    assert_eq!(h.state("r"), TaskState::UpForRetry);
    expect![[r#"
        > start @00:00:00
          run running
          create r none
          persist r: none -> queued try=1 token=1
          dispatch r try=1 token=1 prio=1
        > started r @00:00:00
          persist r: queued -> running try=1 token=1
        -- restart
        > start @00:00:00
          adopt r try=1 token=1
        > finished r try=1 token=1 lost @00:00:00
          persist r: running -> up_for_retry try=1 token=1 retry_at=00:05:00 (worker lost: the attempt was not found where it ran)
          timer retry r try=2 at 00:05:00
    "#]].assert_eq(&h.take_log());
}

#[test]
fn clear_with_downstream_reruns_and_reopens_the_run() {
    let mut h = Harness::new(dag("a >> b >> c"));
    run_all_succeeding(&mut h);
    assert_eq!(h.run.state(), DagRunState::Success);
    h.take_log();
    let input = RunInput::Clear {
        task_ids: vec!["b".to_string()],
        downstream: true,
        upstream: false,
    };
    h.send("clear b downstream", input);
    h.succeed("b");
    h.succeed("c");
    expect![[r#"
        > clear b downstream @00:00:00
          persist b: success -> none try=1 token=1 max_tries=2
          persist c: success -> none try=1 token=1 max_tries=2
          run running
          persist b: none -> queued try=2 token=2
          dispatch b try=2 token=2 prio=2
        > finished b try=2 token=2 success @00:00:00
          persist b: queued -> success try=2 token=2
          persist c: none -> queued try=2 token=2
          dispatch c try=2 token=2 prio=1
        > finished c try=2 token=2 success @00:00:00
          persist c: queued -> success try=2 token=2
          run success at 00:00:00
    "#]]
    .assert_eq(&h.take_log());
}

/// Only the attempt a task instance is queued for may start: not a stale token or try, not
/// one that already started, not an unknown task.
#[test]
fn only_the_queued_attempt_awaits_its_start() {
    let mut h = Harness::new(dag("a >> b"));
    h.start();
    let awaits = |h: &Harness, name: &str, try_number: u32, token: u64| {
        h.run.awaits_start(&h.attempt_id(name, try_number, token))
    };
    assert!(awaits(&h, "a", 1, 1));
    assert!(!awaits(&h, "a", 1, 2), "another token");
    assert!(!awaits(&h, "a", 2, 1), "another try");
    assert!(!awaits(&h, "b", 1, 1), "not queued yet");
    assert!(!awaits(&h, "missing", 1, 1));
    h.started("a");
    assert!(!awaits(&h, "a", 1, 1), "already running");
}

#[test]
fn mark_success_kills_the_attempt_and_moves_on() {
    let mut h = Harness::new(dag("a >> b"));
    h.start();
    h.started("a");
    let input = RunInput::MarkState {
        task_id: "a".to_string(),
        map_index: -1,
        state: TaskState::Success,
    };
    h.send("mark a success", input);
    h.succeed("b");
    expect![[r#"
        > start @00:00:00
          run running
          create a none
          create b none
          persist a: none -> queued try=1 token=1
          dispatch a try=1 token=1 prio=2
        > started a @00:00:00
          persist a: queued -> running try=1 token=1
        > mark a success @00:00:00
          kill a try=1 token=1
          persist a: running -> success try=1 token=1 (marked success by hand)
          persist b: none -> queued try=1 token=1
          dispatch b try=1 token=1 prio=1
        > finished b try=1 token=1 success @00:00:00
          persist b: queued -> success try=1 token=1
          run success at 00:00:00
    "#]]
    .assert_eq(&h.take_log());
}

#[test]
fn run_timeout_skips_unfinished_and_fails_the_run() {
    let mut spec = dag("a >> b");
    spec.dagrun_timeout_ms = Some(3_600_000);
    let mut h = Harness::new(spec);
    h.start();
    h.started("a");
    h.advance_ms(3_600_000);
    h.fire(RunTimer::RunTimeout);
    assert_eq!(h.run.state(), DagRunState::Failed);
    expect![[r#"
        > start @00:00:00
          run running
          timer run_timeout at 01:00:00
          create a none
          create b none
          persist a: none -> queued try=1 token=1
          dispatch a try=1 token=1 prio=2
        > started a @00:00:00
          persist a: queued -> running try=1 token=1
        > fire run_timeout @01:00:00
          kill a try=1 token=1
          persist a: running -> skipped try=1 token=1 (run timed out after 3600000 ms)
          persist b: none -> skipped try=0 token=0 (run timed out after 3600000 ms)
          run failed at 01:00:00
    "#]]
    .assert_eq(&h.take_log());
}

#[test]
fn failed_leaf_fails_run_only_when_everything_finished_and_teardown_is_ignored() {
    let mut spec = dag("setup >> work >> teardown; side");
    task(&mut spec, "setup").role = weft_core::spec::TaskRole::Setup;
    task(&mut spec, "teardown").role = weft_core::spec::TaskRole::Teardown;
    task(&mut spec, "teardown").trigger_rule = TriggerRule::AllDoneSetupSuccess;
    task(&mut spec, "teardown")
        .upstream
        .push("setup".to_string());
    let mut h = Harness::new(spec);
    h.start();
    h.succeed("setup");
    h.fail("work");
    assert_eq!(h.run.state(), DagRunState::Running);
    h.succeed("teardown");
    assert_eq!(h.run.state(), DagRunState::Running);
    h.succeed("side");
    assert_eq!(h.run.state(), DagRunState::Failed);
    expect![[r#"
        > start @00:00:00
          run running
          create setup none
          create work none
          create teardown none
          create side none
          persist setup: none -> queued try=1 token=1
          dispatch setup try=1 token=1 prio=3
          persist side: none -> queued try=1 token=1
          dispatch side try=1 token=1 prio=1
        > finished setup try=1 token=1 success @00:00:00
          persist setup: queued -> success try=1 token=1
          persist work: none -> queued try=1 token=1
          dispatch work try=1 token=1 prio=2
        > finished work try=1 token=1 failed retryable=true @00:00:00
          persist work: queued -> failed try=1 token=1 (exit 1)
          persist teardown: none -> queued try=1 token=1
          dispatch teardown try=1 token=1 prio=1
        > finished teardown try=1 token=1 success @00:00:00
          persist teardown: queued -> success try=1 token=1
        > finished side try=1 token=1 success @00:00:00
          persist side: queued -> success try=1 token=1
          run failed at 00:00:00
    "#]]
    .assert_eq(&h.take_log());
}

/// The run says which attempt report it accepted: the current attempt's start and end, and
/// neither a stale try's result nor a second report of an end already taken.
#[test]
fn the_run_names_the_report_it_accepted() {
    let mut h = Harness::new(dag("a >> b"));
    h.start();
    let (try_number, token) = h.attempt("a");
    let expected = h.attempt_id("a", try_number, token);
    let stale = h.attempt_id("a", try_number, token + 7);
    let now = h.now;
    let mut report = |input| h.run.handle_input(now, input).accepted;
    let started = RunInput::AttemptStarted {
        attempt: expected.clone(),
    };
    assert_eq!(report(started.clone()), Some(expected.clone()));
    assert_eq!(report(started), None, "a second start is a duplicate");
    let finished = |attempt: &weft_core::ids::AttemptId| RunInput::AttemptFinished {
        attempt: attempt.clone(),
        outcome: success(),
    };
    assert_eq!(
        report(finished(&stale)),
        None,
        "another token is fenced out"
    );
    assert_eq!(report(finished(&expected)), Some(expected.clone()));
    assert_eq!(report(finished(&expected)), None, "an end already taken");
    assert_eq!(report(RunInput::Start), None, "an input without a report");
}

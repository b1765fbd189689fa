//! Wide joins: a task after a fan-out of many tasks, or after a mapped task that expands into
//! many instances. The run keeps each task's upstream counts as instances change instead of
//! recounting them; debug builds compare the kept counts with a recount at every evaluation,
//! so these tests check the counts all along the way and the decisions at the end.

mod dag_run_support;

use dag_run_support::*;
use weft_core::dag_run::{AttemptOutcome, RunInput};
use weft_core::spec::{MappingSpec, TaskRole};
use weft_core::state::{DagRunState, TaskState, TriggerRule};

fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i}")).collect()
}

fn output_len(len: usize) -> AttemptOutcome {
    AttemptOutcome::Success {
        branch: None,
        proceed: None,
        output_len: Some(len),
    }
}

fn clear(h: &mut Harness, task_ids: &[String], downstream: bool) {
    let input = RunInput::Clear {
        task_ids: task_ids.to_vec(),
        downstream,
        upstream: false,
    };
    h.send("clear", input);
}

#[test]
fn join_after_200_tasks_runs_after_the_last_one_also_after_a_restart_and_a_clear() {
    let middle = names("m", 200);
    let mut h = Harness::new(dag(&format!("start >> {} >> end", middle.join(", "))));
    h.start();
    h.succeed("start");
    for (i, name) in middle.iter().enumerate() {
        assert_eq!(h.state("end"), TaskState::None, "before {name} finished");
        if i == 100 {
            // Rebuilt from the store half-way: the counts start again from the records.
            h.restart();
            h.start();
        }
        h.succeed(name);
    }
    assert_eq!(h.state("end"), TaskState::Queued);
    h.succeed("end");
    assert_eq!(h.run.state(), DagRunState::Success);

    // A quarter of the fan-out runs again, and `end` with it.
    clear(&mut h, &middle[..50], true);
    assert_eq!(h.state("end"), TaskState::None);
    assert_eq!(h.state("m0"), TaskState::Queued);
    assert_eq!(h.state("m50"), TaskState::Success);
    for name in &middle[..49] {
        h.succeed(name);
        assert_eq!(h.state("end"), TaskState::None, "after {name} ran again");
    }
    h.succeed("m49");
    assert_eq!(h.state("end"), TaskState::Queued);
    h.succeed("end");
    assert_eq!(h.run.state(), DagRunState::Success);
}

#[test]
fn joins_with_other_rules_after_200_tasks_with_mixed_outcomes() {
    let middle = names("m", 200);
    let mut spec = dag(&format!(
        "start >> {} >> all_success, all_done, one_failed, none_failed",
        middle.join(", ")
    ));
    task(&mut spec, "all_done").trigger_rule = TriggerRule::AllDone;
    task(&mut spec, "one_failed").trigger_rule = TriggerRule::OneFailed;
    task(&mut spec, "none_failed").trigger_rule = TriggerRule::NoneFailed;
    let mut h = Harness::new(spec);
    h.start();
    h.succeed("start");
    for (i, name) in middle.iter().enumerate() {
        match i {
            _ if i % 40 == 7 => h.fail(name),
            _ if i % 10 == 3 => h.finish(name, AttemptOutcome::Skipped),
            _ => h.succeed(name),
        }
        // Each join is decided by the first outcome that settles it, and not before.
        let expected = |decided: bool, state: TaskState| {
            if decided {
                state
            } else {
                TaskState::None
            }
        };
        assert_eq!(h.state("all_success"), expected(i >= 3, TaskState::Skipped));
        assert_eq!(h.state("one_failed"), expected(i >= 7, TaskState::Queued));
        assert_eq!(
            h.state("none_failed"),
            expected(i >= 7, TaskState::UpstreamFailed)
        );
        assert_eq!(h.state("all_done"), expected(i == 199, TaskState::Queued));
    }
    h.succeed("one_failed");
    h.succeed("all_done");
    assert_eq!(h.state("m7"), TaskState::Failed);
    assert_eq!(h.run.state(), DagRunState::Failed);

    // The failed and skipped tasks run again and succeed: every join is decided anew.
    let again: Vec<String> = middle
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 40 == 7 || i % 10 == 3)
        .map(|(_, name)| name.clone())
        .collect();
    clear(&mut h, &again, true);
    for name in &again {
        assert_eq!(h.state("all_success"), TaskState::None);
        h.succeed(name);
    }
    assert_eq!(h.state("all_success"), TaskState::Queued);
    assert_eq!(h.state("all_done"), TaskState::Queued);
    assert_eq!(h.state("none_failed"), TaskState::Queued);
    // No upstream failed this time: `one_failed` can never run.
    assert_eq!(h.state("one_failed"), TaskState::Skipped);
}

#[test]
fn joins_after_mapped_tasks_that_expand_wide() {
    let mut spec = dag("src >> each, side; each >> again; each, side, again >> join");
    task(&mut spec, "each").mapping = Some(MappingSpec::Upstream {
        task_id: "src".to_string(),
    });
    task(&mut spec, "again").mapping = Some(MappingSpec::Upstream {
        task_id: "each".to_string(),
    });
    let mut h = Harness::new(spec);
    h.start();
    h.finish("src", output_len(120));
    assert_eq!(h.state("each"), TaskState::Removed);
    h.succeed("side");
    for i in 0..120 {
        if i == 60 {
            // The store gives the removed placeholder back first, alone, before the instances
            // that hide it.
            h.restart();
            h.start();
        }
        assert_eq!(h.state("again"), TaskState::None);
        h.succeed(&format!("each[{i}]"));
    }
    assert_eq!(h.state("again"), TaskState::Removed);
    for i in 0..120 {
        assert_eq!(h.state("join"), TaskState::None);
        h.succeed(&format!("again[{i}]"));
    }
    assert_eq!(h.state("join"), TaskState::Queued);
    h.succeed("join");
    assert_eq!(h.run.state(), DagRunState::Success);

    // The second mapped task runs again; its placeholder stays removed and hidden.
    clear(&mut h, &["again".to_string()], true);
    assert_eq!(h.state("again"), TaskState::Removed);
    assert_eq!(h.state("again[0]"), TaskState::Queued);
    for i in 0..119 {
        h.succeed(&format!("again[{i}]"));
    }
    assert_eq!(h.state("join"), TaskState::None);
    // One instance marked failed by hand fails the join.
    let mark = RunInput::MarkState {
        task_id: "again".to_string(),
        map_index: 119,
        state: TaskState::Failed,
    };
    h.send("mark again[119] failed", mark);
    assert_eq!(h.state("join"), TaskState::UpstreamFailed);
    assert_eq!(h.run.state(), DagRunState::Failed);
}

#[test]
fn teardown_after_a_wide_fan_out_counts_its_setup() {
    let workers = names("w", 100);
    let text = format!(
        "setup >> {0} >> teardown; setup >> teardown",
        workers.join(", ")
    );
    let mut spec = dag(&text);
    task(&mut spec, "setup").role = TaskRole::Setup;
    task(&mut spec, "teardown").role = TaskRole::Teardown;
    task(&mut spec, "teardown").trigger_rule = TriggerRule::AllDoneSetupSuccess;

    let mut h = Harness::new(spec.clone());
    h.start();
    h.succeed("setup");
    for (i, name) in workers.iter().enumerate() {
        assert_eq!(h.state("teardown"), TaskState::None);
        if i % 3 == 0 {
            h.fail(name);
        } else {
            h.succeed(name);
        }
    }
    // Every upstream is done and the setup succeeded: the teardown runs despite failures.
    assert_eq!(h.state("teardown"), TaskState::Queued);

    let mut h = Harness::new(spec);
    h.start();
    h.fail("setup");
    // The workers fail with their setup; the teardown, with no successful setup, too.
    assert_eq!(h.state("w99"), TaskState::UpstreamFailed);
    assert_eq!(h.state("teardown"), TaskState::UpstreamFailed);
    assert_eq!(h.run.state(), DagRunState::Failed);
}

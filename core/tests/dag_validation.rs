//! `Dag::from_spec`: each kind of bad DAG gets its own clear error; good DAGs get their
//! indexes and weights.

mod dag_run_support;

use dag_run_support::{dag, task};
use expect_test::expect;
use weft_core::dag::Dag;
use weft_core::spec::{DagSpec, MappingSpec, TaskRole, SCHEMA_VERSION};
use weft_core::state::WeightRule;

fn error(spec: DagSpec) -> String {
    match Dag::from_spec(spec) {
        Ok(_) => "ok".to_string(),
        Err(error) => error.to_string(),
    }
}

#[test]
fn every_invalid_dag_names_its_problem() {
    let mut cases: Vec<(&str, DagSpec)> = Vec::new();
    let mut cycle = dag("a >> b >> c >> a; x >> a");
    cases.push(("cycle", cycle.clone()));
    task(&mut cycle, "a").upstream = vec!["a".to_string()];
    cases.push(("self loop", cycle));
    let mut newer = dag("a");
    newer.schema_version = SCHEMA_VERSION + 1;
    cases.push(("schema", newer));
    cases.push(("empty", DagSpec::new("d", Vec::new())));
    let mut duplicate = dag("a >> b");
    duplicate.tasks.push(duplicate.tasks[0].clone());
    cases.push(("duplicate", duplicate));
    let mut unknown = dag("a");
    task(&mut unknown, "a").upstream.push("ghost".to_string());
    cases.push(("unknown upstream", unknown));
    cases.push(("bad char", dag("a b")));
    cases.push(("long id", dag(&"x".repeat(251))));
    let mut retries = dag("a");
    task(&mut retries, "a").retries = 101;
    cases.push(("retries", retries));
    let mut group = dag("a");
    task(&mut group, "a").task_group = Some("g".to_string());
    cases.push(("group", group));
    let mut slots = dag("a");
    task(&mut slots, "a").pool_slots = 0;
    cases.push(("pool slots", slots));
    let mut mapping = dag("a >> b");
    task(&mut mapping, "b").mapping = Some(MappingSpec::Upstream {
        task_id: "zz".to_string(),
    });
    cases.push(("mapping unknown", mapping));
    let mut not_upstream = dag("a; b");
    task(&mut not_upstream, "b").mapping = Some(MappingSpec::Upstream {
        task_id: "a".to_string(),
    });
    cases.push(("mapping not upstream", not_upstream));
    let many: Vec<String> = (0..10_001).map(|i| format!("t{i}")).collect();
    cases.push(("too many tasks", dag(&many.join(";"))));
    let report: String = cases
        .into_iter()
        .map(|(name, spec)| format!("{name}: {}\n", error(spec)))
        .collect();
    expect![[r#"
        cycle: dag `d` has a cycle: a -> b -> c -> a
        self loop: dag `d` has a cycle: a -> a
        schema: dag `d` uses schema version 2, but this build reads up to 1: upgrade weft or produce the dag with an older sdk
        empty: dag `d` has no tasks
        duplicate: dag `d` has task id `a` more than once
        unknown upstream: task `a` in dag `d` names unknown upstream task `ghost`
        bad char: invalid id `a b`: character ` ` is not allowed: use letters, digits, `_`, `.`, `-`
        long id: invalid id `xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx`: 251 bytes, more than the limit of 250
        retries: task `a` in dag `d`: 101 retries, more than the limit of 100
        group: task `a` in dag `d` names unknown task group `g`
        pool slots: task `a` in dag `d`: pool_slots must be at least 1
        mapping unknown: task `b` in dag `d`: maps over unknown upstream task `zz`
        mapping not upstream: task `b` in dag `d`: maps over `a`, which must also be one of its direct upstream tasks
        too many tasks: dag `d` has 10001 tasks, more than the limit of 10000
    "#]].assert_eq(&report);
}

#[test]
fn indexes_and_weights() {
    let mut spec = dag("a >> b, c; b, c >> d");
    task(&mut spec, "d").weight_rule = WeightRule::Upstream;
    task(&mut spec, "c").weight_rule = WeightRule::Absolute;
    task(&mut spec, "c").priority_weight = 10;
    let dag = Dag::from_spec(spec).expect("valid");
    assert_eq!(dag.topological_order(), vec!["a", "b", "c", "d"]);
    assert_eq!(dag.downstream("a"), vec!["b", "c"]);
    assert_eq!(dag.upstream("d"), vec!["b", "c"]);
    assert_eq!(dag.descendants("a"), vec!["b", "c", "d"]);
    assert_eq!(dag.ancestors("d"), vec!["a", "b", "c"]);
    let weights: Vec<i64> = ["a", "b", "c", "d"]
        .iter()
        .map(|t| dag.priority_weight(t))
        .collect();
    // a: 1 + b + c + d; b: 1 + d; c: absolute 10; d: 1 + a + b + c.
    assert_eq!(weights, vec![13, 2, 10, 13]);
}

#[test]
fn teardowns_do_not_decide_the_run_and_setups_reach_indirect_tasks() {
    let mut spec = dag("s >> w >> x >> t; s >> t");
    task(&mut spec, "s").role = TaskRole::Setup;
    task(&mut spec, "t").role = TaskRole::Teardown;
    let dag = Dag::from_spec(spec).expect("valid");
    let leaves: Vec<&str> = dag
        .run_state_indices()
        .iter()
        .map(|&i| dag.task_id_at(i))
        .collect();
    assert_eq!(leaves, vec!["x"]);
    let x = dag.task_index("x").expect("x");
    assert_eq!(dag.indirect_setup_indices(x), &[0]);
    assert!(dag
        .indirect_setup_indices(dag.task_index("w").expect("w"))
        .is_empty());
}

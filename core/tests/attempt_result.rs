//! How a successful attempt's result is read for flow control: branch targets, short-circuit
//! truthiness, mapped length.

use serde_json::json;
use weft_core::dag_run::AttemptOutcome;
use weft_core::spec::FlowControl;

fn read(flow: FlowControl, result: serde_json::Value) -> AttemptOutcome {
    let mut outcome = AttemptOutcome::Success {
        branch: None,
        proceed: None,
        output_len: None,
    };
    outcome.read_result(flow, Some(&result));
    outcome
}

#[test]
fn branch_results_name_the_tasks_to_follow() {
    assert_eq!(
        read(FlowControl::Branch, json!("left")),
        AttemptOutcome::Success {
            branch: Some(vec!["left".into()]),
            proceed: None,
            output_len: None
        }
    );
    assert_eq!(
        read(FlowControl::Branch, json!(["a", "b"])),
        AttemptOutcome::Success {
            branch: Some(vec!["a".into(), "b".into()]),
            proceed: None,
            output_len: Some(2)
        }
    );
    assert_eq!(
        read(FlowControl::Branch, json!(null)),
        AttemptOutcome::Success {
            branch: Some(vec![]),
            proceed: None,
            output_len: None
        }
    );
}

#[test]
fn short_circuit_follows_python_truthiness() {
    let proceeds = |value| match read(FlowControl::ShortCircuit, value) {
        AttemptOutcome::Success { proceed, .. } => proceed,
        other => panic!("{other:?}"),
    };
    for falsy in [
        json!(null),
        json!(false),
        json!(0),
        json!(0.0),
        json!(""),
        json!([]),
        json!({}),
    ] {
        assert_eq!(proceeds(falsy.clone()), Some(false), "{falsy}");
    }
    for truthy in [
        json!(true),
        json!(1),
        json!("x"),
        json!([0]),
        json!({"a": 1}),
    ] {
        assert_eq!(proceeds(truthy.clone()), Some(true), "{truthy}");
    }
}

#[test]
fn values_set_by_the_executor_are_kept_and_failures_untouched() {
    let mut outcome = AttemptOutcome::Success {
        branch: Some(vec!["set".into()]),
        proceed: None,
        output_len: None,
    };
    outcome.read_result(FlowControl::Branch, Some(&json!("other")));
    assert_eq!(
        outcome,
        AttemptOutcome::Success {
            branch: Some(vec!["set".into()]),
            proceed: None,
            output_len: None
        }
    );
    let mut failed = AttemptOutcome::Failed {
        reason: "x".into(),
        retryable: true,
    };
    failed.read_result(FlowControl::ShortCircuit, Some(&json!(true)));
    assert_eq!(
        failed,
        AttemptOutcome::Failed {
            reason: "x".into(),
            retryable: true
        }
    );
}

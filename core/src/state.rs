//! The states of task instances and DAG runs, trigger rules and weight rules, named as Airflow
//! names them so that users and the compatibility layer see the same words.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant,)* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(text: &str) -> Result<$name, UnknownName> {
                match text {
                    $($text => Ok($name::$variant),)*
                    _ => Err(UnknownName {
                        kind: stringify!($name),
                        name: text.to_string(),
                        expected: vec![$($text,)*],
                    }),
                }
            }
        }
    };
}

/// A name that is not one of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{name}`: expected one of {}", expected.join(", "))]
pub struct UnknownName {
    pub kind: &'static str,
    pub name: String,
    pub expected: Vec<&'static str>,
}

string_enum! {
    /// Airflow's task-instance states. `None` is a task instance that exists but has not been
    /// considered yet.
    TaskState {
        None => "none",
        Scheduled => "scheduled",
        Queued => "queued",
        Running => "running",
        Success => "success",
        Failed => "failed",
        UpForRetry => "up_for_retry",
        UpstreamFailed => "upstream_failed",
        Skipped => "skipped",
        Removed => "removed",
    }
}

impl TaskState {
    /// A finished state: the task instance will not change again unless cleared.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TaskState::Success
                | TaskState::Failed
                | TaskState::UpstreamFailed
                | TaskState::Skipped
                | TaskState::Removed
        )
    }

    /// Holds (or is about to hold) a worker slot.
    pub fn is_active(self) -> bool {
        matches!(self, TaskState::Queued | TaskState::Running)
    }
}

string_enum! {
    /// Airflow's DAG-run states.
    DagRunState {
        Queued => "queued",
        Running => "running",
        Success => "success",
        Failed => "failed",
    }
}

impl DagRunState {
    pub fn is_finished(self) -> bool {
        matches!(self, DagRunState::Success | DagRunState::Failed)
    }
}

string_enum! {
    /// Why a run exists. Backfill runs rank below fresh runs.
    RunType {
        Scheduled => "scheduled",
        Manual => "manual",
        Backfill => "backfill",
    }
}

string_enum! {
    /// Airflow's trigger rules: when a task may run given its direct upstream tasks' states.
    TriggerRule {
        AllSuccess => "all_success",
        AllFailed => "all_failed",
        AllDone => "all_done",
        AllDoneSetupSuccess => "all_done_setup_success",
        AllSkipped => "all_skipped",
        OneSuccess => "one_success",
        OneFailed => "one_failed",
        OneDone => "one_done",
        NoneFailed => "none_failed",
        NoneFailedMinOneSuccess => "none_failed_min_one_success",
        NoneSkipped => "none_skipped",
        Always => "always",
    }
}

// The enums come from a macro that cannot mark a `#[default]` variant, hence hand-written.
#[allow(clippy::derivable_impls)]
impl Default for TriggerRule {
    fn default() -> TriggerRule {
        TriggerRule::AllSuccess
    }
}

string_enum! {
    /// How a task's effective priority is computed from the weights of the DAG.
    WeightRule {
        Absolute => "absolute",
        Downstream => "downstream",
        Upstream => "upstream",
    }
}

#[allow(clippy::derivable_impls)]
impl Default for WeightRule {
    fn default() -> WeightRule {
        WeightRule::Downstream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in TaskState::ALL {
            assert_eq!(state.as_str().parse::<TaskState>().unwrap(), *state);
        }
        for rule in TriggerRule::ALL {
            assert_eq!(rule.as_str().parse::<TriggerRule>().unwrap(), *rule);
        }
        let error = "all_succes".parse::<TriggerRule>().unwrap_err();
        assert!(error
            .to_string()
            .contains("unknown TriggerRule `all_succes`"));
        assert!(error.to_string().contains("all_success"));
    }

    #[test]
    fn serde_uses_airflow_spelling() {
        let text = serde_json::to_string(&TaskState::UpForRetry).unwrap();
        assert_eq!(text, "\"up_for_retry\"");
        let rule: TriggerRule = serde_json::from_str("\"none_failed_min_one_success\"").unwrap();
        assert_eq!(rule, TriggerRule::NoneFailedMinOneSuccess);
    }
}

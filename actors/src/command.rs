//! The commands that change a DAG's runs (trigger, pause, clear, mark, backfill) as values, so
//! that a cell that does not own a DAG can hand one to the cell that does and give its answer
//! back (`Forwarder`, implemented by `weft_cells::peers`).
//!
//! A command is executed by the engine of the cell holding the DAG's shard; on any other cell
//! the scheduler refuses it with `EngineError::NotOwner`, and the engine passes it to its
//! forwarder, if it has one. A forwarded command is executed where it lands and never forwarded
//! again, so a command crosses at most one link.

use crate::error::EngineError;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use weft_core::ids::RunKey;
use weft_core::lease::ShardId;
use weft_core::state::TaskState;
use weft_core::Timestamp;

/// One command for a DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Trigger {
        dag_id: String,
        logical_date: Option<Timestamp>,
        /// Travels as JSON text: the wire's encoding (bincode) carries no self-describing
        /// values. Only a forwarded command is encoded.
        #[serde(with = "json_text")]
        conf: serde_json::Value,
    },
    SetPaused {
        dag_id: String,
        paused: bool,
    },
    Clear {
        run: RunKey,
        task_ids: Vec<String>,
        downstream: bool,
        upstream: bool,
    },
    Mark {
        run: RunKey,
        task_id: String,
        map_index: i32,
        state: TaskState,
    },
    Backfill {
        dag_id: String,
        from: Timestamp,
        to: Timestamp,
    },
}

impl Command {
    /// The DAG the command is for: its shard decides which cell executes it.
    pub fn dag_id(&self) -> &str {
        match self {
            Command::Trigger { dag_id, .. }
            | Command::SetPaused { dag_id, .. }
            | Command::Backfill { dag_id, .. } => dag_id,
            Command::Clear { run, .. } | Command::Mark { run, .. } => &run.dag_id,
        }
    }

    /// What the command is, for logs.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Trigger { .. } => "trigger",
            Command::SetPaused { .. } => "pause",
            Command::Clear { .. } => "clear",
            Command::Mark { .. } => "mark",
            Command::Backfill { .. } => "backfill",
        }
    }
}

/// A JSON value as its text, for encodings that cannot carry it as it is.
mod json_text {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &serde_json::Value,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<serde_json::Value, D::Error> {
        let text = String::deserialize(deserializer)?;
        serde_json::from_str(&text).map_err(D::Error::custom)
    }
}

/// What a command gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandOutcome {
    Done,
    Run(RunKey),
    Runs(Vec<RunKey>),
}

/// An engine error as it crosses a link: its kind (so that the cell the user is on answers
/// with the same status the owner would have) and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandFailure {
    UnknownDag(String),
    UnknownRun(String),
    Rejected(String),
    NotOwner { dag_id: String, shard: u32 },
    Unavailable(String),
}

impl From<EngineError> for CommandFailure {
    fn from(error: EngineError) -> CommandFailure {
        match error {
            EngineError::UnknownDag(dag_id) => CommandFailure::UnknownDag(dag_id),
            EngineError::UnknownRun(run) => CommandFailure::UnknownRun(run),
            EngineError::Rejected(reason) => CommandFailure::Rejected(reason),
            EngineError::InvalidDag(error) => CommandFailure::Rejected(error.to_string()),
            EngineError::NotOwner { dag_id, shard } => CommandFailure::NotOwner { dag_id, shard },
            error @ (EngineError::Store(_) | EngineError::Unavailable(_)) => {
                CommandFailure::Unavailable(error.to_string())
            }
        }
    }
}

impl CommandFailure {
    /// The error on the cell the user is on; `owner` names the cell that answered.
    pub fn into_error(self, owner: &str) -> EngineError {
        match self {
            CommandFailure::UnknownDag(dag_id) => EngineError::UnknownDag(dag_id),
            CommandFailure::UnknownRun(run) => EngineError::UnknownRun(run),
            CommandFailure::Rejected(reason) => EngineError::Rejected(reason),
            CommandFailure::NotOwner { dag_id, shard } => EngineError::NotOwner { dag_id, shard },
            CommandFailure::Unavailable(reason) => {
                EngineError::Unavailable(format!("cell `{owner}`: {reason}"))
            }
        }
    }
}

/// Hands a command for a DAG this cell does not own to the cell that does, and returns its
/// answer (`weft_cells::peers::Peers` over the QUIC links between cells).
pub trait Forwarder: Send + Sync + 'static {
    fn forward(
        &self,
        shard: ShardId,
        command: Command,
    ) -> BoxFuture<'static, Result<CommandOutcome, EngineError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_answers_cross_the_wire() {
        let run = RunKey {
            dag_id: "etl".into(),
            run_id: "manual__1".into(),
        };
        let commands = vec![
            Command::Trigger {
                dag_id: "etl".into(),
                logical_date: Some(chrono::Utc::now()),
                conf: serde_json::json!({"a": [1, 2], "b": {"c": null}}),
            },
            Command::SetPaused {
                dag_id: "etl".into(),
                paused: true,
            },
            Command::Clear {
                run: run.clone(),
                task_ids: vec!["load".into()],
                downstream: true,
                upstream: false,
            },
            Command::Mark {
                run: run.clone(),
                task_id: "load".into(),
                map_index: -1,
                state: TaskState::Success,
            },
            Command::Backfill {
                dag_id: "etl".into(),
                from: chrono::Utc::now(),
                to: chrono::Utc::now(),
            },
        ];
        for command in commands {
            let bytes = crate::wire::encode(&command).unwrap();
            assert_eq!(crate::wire::decode::<Command>(&bytes).unwrap(), command);
            assert_eq!(command.dag_id(), "etl");
        }
        let answers: Vec<Result<CommandOutcome, CommandFailure>> = vec![
            Ok(CommandOutcome::Runs(vec![run.clone()])),
            Err(CommandFailure::NotOwner {
                dag_id: "etl".into(),
                shard: 3,
            }),
        ];
        for answer in answers {
            let bytes = crate::wire::encode(&answer).unwrap();
            assert_eq!(
                crate::wire::decode::<Result<CommandOutcome, CommandFailure>>(&bytes).unwrap(),
                answer
            );
        }
    }

    #[test]
    fn a_failure_keeps_its_kind_across_the_link() {
        let failure = CommandFailure::from(EngineError::UnknownDag("nope".into()));
        assert!(matches!(
            failure.into_error("a"),
            EngineError::UnknownDag(dag) if dag == "nope"
        ));
        let failure = CommandFailure::from(EngineError::Unavailable("stopping".into()));
        let error = failure.into_error("cell-a");
        assert!(error.to_string().contains("cell `cell-a`"), "{error}");
    }
}

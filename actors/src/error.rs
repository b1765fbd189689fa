//! Errors the embedding API returns.

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("dag `{0}` is not registered")]
    UnknownDag(String),
    #[error("run `{0}` not found")]
    UnknownRun(String),
    #[error("invalid dag: {0}")]
    InvalidDag(#[from] weft_core::dag::DagError),
    #[error("rejected: {0}")]
    Rejected(String),
    #[error("store: {0}")]
    Store(#[from] weft_storage::Error),
    #[error("the engine is shutting down or an actor is gone: {0}")]
    Unavailable(String),
    /// The DAG's shard is held by another cell: the command belongs there.
    #[error("dag `{dag_id}` is in shard {shard}, which another cell owns: send the command to that cell (`weft cells list` shows which)")]
    NotOwner { dag_id: String, shard: u32 },
}

impl<T> From<ractor::MessagingErr<T>> for EngineError {
    fn from(error: ractor::MessagingErr<T>) -> EngineError {
        EngineError::Unavailable(error.to_string())
    }
}

impl From<ractor::SpawnErr> for EngineError {
    fn from(error: ractor::SpawnErr) -> EngineError {
        EngineError::Unavailable(error.to_string())
    }
}

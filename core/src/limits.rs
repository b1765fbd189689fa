//! Named bounds. Every queue, payload and collection in weft has one; exceeding one is a clear,
//! counted error, never a hang or an out-of-memory.

/// Tasks in one DAG.
pub const DAG_TASKS_MAX: usize = 10_000;
/// Edges in one DAG.
pub const DAG_EDGES_MAX: usize = 100_000;
/// Length of a dag id, task id or task group id.
pub const ID_BYTES_MAX: usize = 250;
/// Mapped instances one task may expand into.
pub const MAP_INDEX_MAX: usize = 4_096;
/// Retries one task may ask for.
pub const RETRIES_MAX: u32 = 100;
/// Serialized size of one task result (XCom value).
pub const XCOM_BYTES_MAX: usize = 64 * 1024;
/// Serialized size of a run's `conf`.
pub const CONF_BYTES_MAX: usize = 64 * 1024;
/// Size of one serialized DAG.
pub const DAG_SPEC_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Runs one catch-up or backfill may create at once.
pub const BACKFILL_RUNS_MAX: usize = 10_000;

//! The JSON request and response types of weft's REST API (`/api/v1`) and of its live
//! WebSocket stream, shared by the server (`weft-web`) and the browser UI (`weft-ui`).
//!
//! Plain serde types only, so that the crate builds for `wasm32-unknown-unknown`; the
//! `openapi` feature adds `utoipa::ToSchema` derives for the server's OpenAPI document.
//! Timestamps are RFC 3339 strings in UTC; durations are milliseconds.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The URL prefix of every REST endpoint.
pub const API_PREFIX: &str = "/api/v1";
/// The cookie holding the access JWT.
pub const SESSION_COOKIE: &str = "weft_session";
/// The cookie holding the refresh token.
pub const REFRESH_COOKIE: &str = "weft_refresh";

/// Every error answer: a stable snake_case `code` a program can match, and a `message` that
/// says what was wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

// ---------------------------------------------------------------- states and roles

/// State of a DAG run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    Success,
    Failed,
}

/// State of a task instance (Airflow's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    None,
    Scheduled,
    Queued,
    Running,
    Success,
    Failed,
    UpForRetry,
    UpstreamFailed,
    Skipped,
    Removed,
}

/// How a run was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunType {
    Scheduled,
    Manual,
    Backfill,
}

/// Roles with Airflow's meaning: Viewer reads; User also triggers, clears, marks and pauses;
/// Op also manages pools and backfills and sees import errors and workers; Admin also manages
/// users, other people's tokens and reads the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    User,
    Op,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::User, Role::Op, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::User => "user",
            Role::Op => "op",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(text))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------- sign-in

/// `POST /api/v1/auth/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// `POST /api/v1/auth/refresh`; the token may come from the `weft_refresh` cookie instead.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RefreshRequest {
    #[serde(default)]
    pub refresh_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UserInfo {
    pub username: String,
    pub role: Role,
}

/// Answer of login and refresh; the same tokens are also set as cookies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LoginResponse {
    /// A JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Seconds until `access_token` expires.
    pub expires_in: u64,
    pub refresh_token: String,
    pub user: UserInfo,
}

/// `GET /api/v1/me`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Me {
    pub username: String,
    pub role: Role,
    /// DAGs a User or Viewer may see; empty means all.
    pub dag_grants: Vec<String>,
}

// ---------------------------------------------------------------- DAGs

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RecentRun {
    pub run_id: String,
    pub state: RunState,
    pub logical_date: String,
}

/// One row of the DAG list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DagSummary {
    pub dag_id: String,
    pub display_name: String,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub tags: Vec<String>,
    pub paused: bool,
    /// The schedule as written: a cron expression, a preset such as `@daily`, an interval
    /// such as `every 30m`, or `none`.
    pub schedule: String,
    pub timezone: String,
    pub next_run_at: Option<String>,
    pub fileloc: Option<String>,
    /// Newest first, at most 10.
    pub recent_runs: Vec<RecentRun>,
    /// Durations of the most recent finished runs, oldest first (for a sparkline).
    pub recent_durations_ms: Vec<u64>,
}

/// `GET /api/v1/dags`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DagList {
    pub dags: Vec<DagSummary>,
    /// DAGs matching the filters, before `limit`/`offset`.
    pub total: u64,
}

/// One task of a DAG, with its edges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TaskInfo {
    pub task_id: String,
    pub operator: String,
    pub upstream: Vec<String>,
    pub downstream: Vec<String>,
    /// The task group, if any.
    pub group: Option<String>,
    pub trigger_rule: String,
    pub retries: u32,
    pub pool: String,
}

/// `GET /api/v1/dags/{dag_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DagDetail {
    #[serde(flatten)]
    pub summary: DagSummary,
    /// Tasks in topological order.
    pub tasks: Vec<TaskInfo>,
    /// A JSON schema object (`{"type":"object","properties":{..}}`) of the run conf.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub params: serde_json::Value,
    pub doc_md: Option<String>,
    pub version_hash: String,
}

/// `PATCH /api/v1/dags/{dag_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DagPatch {
    pub paused: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DagVersion {
    pub version_hash: String,
    pub created_at: String,
}

/// `GET /api/v1/dags/{dag_id}/code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DagCode {
    pub fileloc: Option<String>,
    /// The DAG file's text when readable, else the serialized DAG as JSON.
    pub source: String,
    pub version_hash: String,
}

// ---------------------------------------------------------------- grid

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GridRun {
    pub run_id: String,
    pub state: RunState,
    pub logical_date: String,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub run_type: RunType,
}

/// `GET /api/v1/dags/{dag_id}/grid`: runs × tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Grid {
    /// Task ids in topological order.
    pub tasks: Vec<String>,
    /// Newest first.
    pub runs: Vec<GridRun>,
    /// One row per run, aligned with `tasks`; `null` where the task has no instance yet.
    pub cells: Vec<Vec<Option<TaskState>>>,
    /// Pass as `before` to get the next (older) page; `null` on the last page.
    pub next_before: Option<String>,
}

// ---------------------------------------------------------------- runs

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Run {
    pub dag_id: String,
    pub run_id: String,
    pub state: RunState,
    pub run_type: RunType,
    pub logical_date: String,
    pub data_interval_start: String,
    pub data_interval_end: String,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub created_at: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub conf: serde_json::Value,
    pub version_hash: String,
}

/// `GET /api/v1/dags/{dag_id}/runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RunList {
    pub runs: Vec<Run>,
    pub total: u64,
}

/// `POST /api/v1/dags/{dag_id}/runs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TriggerRun {
    /// The run conf, checked against the DAG's params.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub conf: Option<serde_json::Value>,
    /// RFC 3339; now when absent.
    #[serde(default)]
    pub logical_date: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TaskInstance {
    pub task_id: String,
    pub state: TaskState,
    pub try_number: u32,
    pub max_tries: u32,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub duration_ms: Option<u64>,
    pub operator: String,
    pub pool: String,
    /// -1 for a task that is not mapped.
    pub map_index: i32,
}

/// `GET /api/v1/dags/{dag_id}/runs/{run_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RunDetail {
    pub run: Run,
    pub task_instances: Vec<TaskInstance>,
    /// The cell that owns the run (decides for its DAG); absent on a standalone node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TaskTry {
    pub try_number: u32,
    pub state: TaskState,
    pub start_date: String,
    pub end_date: Option<String>,
    /// The worker slot that ran the try.
    pub hostname: String,
    /// Why the try failed, as the executor saw it: the exit code, the signal that killed it
    /// (with the sandbox limit it hit, such as out of memory), `execution timeout`, or `lost`
    /// with the reason. Absent for a try that succeeded, was skipped or still runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

/// `GET /api/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TaskInstanceDetail {
    #[serde(flatten)]
    pub instance: TaskInstance,
    /// Oldest first.
    pub tries: Vec<TaskTry>,
    /// Template fields with their values for this run.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub rendered_fields: BTreeMap<String, serde_json::Value>,
}

/// `GET .../logs/{try_number}?offset=`: a chunk of a try's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LogChunk {
    pub content: String,
    /// Pass as `offset` to read on.
    pub next_offset: u64,
    /// The try has finished and `next_offset` is the end of its log.
    pub complete: bool,
}

/// `POST /api/v1/dags/{dag_id}/runs/{run_id}/clear`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClearRequest {
    /// Tasks to clear; empty clears every task of the run.
    #[serde(default)]
    pub task_ids: Vec<String>,
    #[serde(default)]
    pub downstream: bool,
    #[serde(default)]
    pub upstream: bool,
    /// Only list what would be cleared.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ClearResponse {
    pub task_ids: Vec<String>,
}

/// States a person may set by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MarkState {
    Success,
    Failed,
}

/// `POST .../tasks/{task_id}/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MarkRequest {
    pub state: MarkState,
}

/// `POST /api/v1/dags/{dag_id}/backfills`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// RFC 3339, inclusive.
    pub from: String,
    /// RFC 3339, inclusive.
    pub to: String,
    #[serde(default)]
    pub dry_run: bool,
    /// Also clear and rerun failed runs already in the range.
    #[serde(default)]
    pub rerun_failed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BackfillResponse {
    /// Logical dates of the runs created (or, on a dry run, that would be).
    pub logical_dates: Vec<String>,
    pub created: bool,
}

// ---------------------------------------------------------------- the rest

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ImportError {
    pub fileloc: String,
    pub line: Option<u32>,
    pub message: String,
    pub at: String,
}

/// `GET /api/v1/import-errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ImportErrorList {
    pub import_errors: Vec<ImportError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Pool {
    pub name: String,
    pub slots: u32,
    pub description: String,
    /// Task instances queued or running in this pool now.
    pub occupied: u32,
}

/// `GET /api/v1/pools`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PoolList {
    pub pools: Vec<Pool>,
}

/// `POST /api/v1/pools` (create or resize).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PoolUpsert {
    pub name: String,
    pub slots: u32,
    #[serde(default)]
    pub description: String,
}

/// A try running now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RunningTry {
    pub dag_id: String,
    pub run_id: String,
    pub task_id: String,
    pub map_index: i32,
    pub try_number: u32,
    pub started_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Worker {
    pub name: String,
    /// Tries this worker may run at once.
    pub slots: u32,
    /// The queues it serves (Airflow's `queue=` on a task); empty: every queue.
    #[serde(default)]
    pub queues: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub running: Vec<RunningTry>,
    /// `local` (the node's own slots) or `remote` (a `weft worker`).
    #[serde(default)]
    pub kind: String,
    /// A remote worker's address, as its link comes from.
    #[serde(default)]
    pub address: String,
    /// A remote worker's weft version.
    #[serde(default)]
    pub version: String,
    /// It finishes what runs and takes nothing new (SIGTERM).
    #[serde(default)]
    pub draining: bool,
    /// When a slot of a remote worker last answered its node.
    #[serde(default)]
    pub last_heartbeat: Option<String>,
}

/// A shard a cell holds by lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CellShard {
    pub shard: u32,
    /// Grows on every change of owner; the cell's run writes carry it.
    pub epoch: u64,
    /// Since the lease row was last written (renewed).
    pub lease_age_ms: u64,
}

/// A cell of the deployment, from its heartbeat row and the lease rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Cell {
    pub name: String,
    pub region: String,
    /// Where other cells and workers reach it (QUIC).
    pub address: String,
    /// Its UI and API.
    pub api: String,
    pub heartbeat_age_ms: u64,
    pub started_at: String,
    pub shards: Vec<CellShard>,
    /// The round-trip time of the link between the cell that answered and this one (ms);
    /// absent for the cell that answered and for a cell it has no link with.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    /// Remote workers connected to it, as the cell that answered knows (itself, or over a link).
    #[serde(default)]
    pub workers: Option<u32>,
    /// The cell that answered.
    #[serde(default)]
    pub this: bool,
}

/// `GET /api/v1/cells`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CellList {
    pub cells: Vec<Cell>,
    /// Shards the DAGs are spread over.
    pub shards: u32,
    /// Shards no live cell holds (their DAGs wait for a cell to take them).
    pub unowned_shards: Vec<u32>,
    /// The cell that answered; absent on a standalone node.
    #[serde(default)]
    pub this_cell: Option<String>,
}

/// `GET /api/v1/workers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WorkerList {
    pub workers: Vec<Worker>,
    /// Tries waiting for a queue that no worker serves: they start once a worker serving
    /// their queue joins.
    #[serde(default)]
    pub waiting_unserved_queue: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditEntry {
    pub id: u64,
    pub at: String,
    /// Who: the username.
    pub actor: String,
    /// What: e.g. `dag.pause`, `run.trigger`, `user.create`.
    pub action: String,
    pub target: String,
    /// From where: the client's address.
    pub from: Option<String>,
    pub detail: String,
}

/// `GET /api/v1/audit`, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct User {
    pub username: String,
    pub role: Role,
    pub dag_grants: Vec<String>,
    pub disabled: bool,
    pub created_at: String,
}

/// `GET /api/v1/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UserList {
    pub users: Vec<User>,
}

/// `POST /api/v1/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    pub username: String,
    pub password: String,
    pub role: Role,
    #[serde(default)]
    pub dag_grants: Vec<String>,
}

/// `PATCH /api/v1/users/{username}`: fields left out stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub dag_grants: Option<Vec<String>>,
    #[serde(default)]
    pub disabled: Option<bool>,
}

/// `POST /api/v1/tokens`: an API token for scripts, acting as the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    pub name: String,
    /// Days until it expires; never when absent.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub username: String,
    pub created_at: String,
    pub expires_at: Option<String>,
}

/// The answer to `POST /api/v1/tokens`: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TokenCreated {
    #[serde(flatten)]
    pub info: ApiToken,
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
}

/// `GET /api/v1/tokens`: the caller's tokens (an Admin sees everyone's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TokenList {
    pub tokens: Vec<ApiToken>,
}

// ---------------------------------------------------------------- variables and connections

/// What the API shows instead of a masked value: the value of a variable whose key names a
/// secret (Airflow's sensitive names: `password`, `secret`, `api_key`, `token`, ...), and the
/// sensitive keys of a connection's extra.
pub const MASKED_VALUE: &str = "***";

/// An Airflow Variable. `value` is [`MASKED_VALUE`] when the key names a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Variable {
    pub key: String,
    pub value: String,
    pub description: Option<String>,
}

/// `GET /api/v1/variables`: one page of variables by key, and how many there are in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct VariableList {
    pub variables: Vec<Variable>,
    pub total_entries: usize,
}

/// `POST /api/v1/variables`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VariableCreate {
    pub key: String,
    pub value: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// `PATCH /api/v1/variables/{key}`: fields left out stay as they are; a `null` description
/// removes it. With `?update_mask=value,description` only the fields named change (a named
/// field left out of the body is cleared). `key`, when sent, must be the key of the path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VariablePatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub description: Option<Option<String>>,
}

/// An Airflow Connection as the API shows it: never the password (it is write-only), and the
/// extra (a JSON object as text) with the values of its sensitive keys masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Connection {
    pub connection_id: String,
    pub conn_type: String,
    pub description: Option<String>,
    pub host: Option<String>,
    pub schema: Option<String>,
    pub login: Option<String>,
    pub port: Option<u16>,
    pub extra: Option<String>,
    /// Whether a password is stored (it is never shown).
    pub has_password: bool,
}

/// `GET /api/v1/connections`: one page of connections by id, and how many there are in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ConnectionList {
    pub connections: Vec<Connection>,
    pub total_entries: usize,
}

/// `POST /api/v1/connections`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConnectionCreate {
    pub connection_id: String,
    pub conn_type: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(default)]
    pub login: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// A JSON object as text.
    #[serde(default)]
    pub extra: Option<String>,
}

/// `PATCH /api/v1/connections/{connection_id}`: fields left out stay as they are (the
/// password too); `null` clears a field. With `?update_mask=host,port` only the fields named
/// change (a named field left out of the body is cleared). `connection_id`, when sent, must
/// be the id of the path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConnectionPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_type: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub description: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub host: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub schema: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub login: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub password: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u16>))]
    pub port: Option<Option<u16>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub extra: Option<Option<String>>,
}

/// Reads a field that is present in the body, `null` or not, as `Some`: with `default`, an
/// absent field stays `None`, so that a patch tells "leave it" from "clear it".
fn present<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Health {
    pub status: String,
}

// ---------------------------------------------------------------- live stream

/// One message of `GET /api/v1/stream` (server to client).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StreamMessage {
    /// Increasing by one per event; pass the last one seen as `since` when reconnecting.
    pub seq: u64,
    pub event: StreamEvent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StreamEvent {
    Run {
        dag_id: String,
        run_id: String,
        state: RunState,
        at: String,
    },
    Task {
        dag_id: String,
        run_id: String,
        task_id: String,
        state: TaskState,
        try_number: u32,
        at: String,
    },
    Dag {
        dag_id: String,
    },
    Log {
        dag_id: String,
        run_id: String,
        task_id: String,
        try_number: u32,
        line: String,
    },
    /// Events since the requested `seq` are no longer available: refetch from the API.
    Resync,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_messages_use_the_documented_shape() {
        let message = StreamMessage {
            seq: 7,
            event: StreamEvent::Task {
                dag_id: "etl".into(),
                run_id: "manual__1".into(),
                task_id: "load".into(),
                state: TaskState::UpForRetry,
                try_number: 2,
                at: "2026-01-01T00:00:00Z".into(),
            },
        };
        let json = serde_json::to_value(&message).unwrap();
        assert_eq!(json["event"]["kind"], "task");
        assert_eq!(json["event"]["state"], "up_for_retry");
        let resync: StreamMessage =
            serde_json::from_str(r#"{"seq":3,"event":{"kind":"resync"}}"#).unwrap();
        assert_eq!(resync.event, StreamEvent::Resync);
    }

    #[test]
    fn a_patch_tells_a_left_out_field_from_a_null_one() {
        let patch: ConnectionPatch = serde_json::from_str(r#"{"host":null,"port":5432}"#).unwrap();
        assert_eq!(patch.host, Some(None));
        assert_eq!(patch.port, Some(Some(5432)));
        assert_eq!(patch.password, None);
        let patch: VariablePatch = serde_json::from_str(r#"{"value":"v"}"#).unwrap();
        assert_eq!(patch.description, None);
        assert_eq!(patch.value.as_deref(), Some("v"));
    }

    #[test]
    fn unknown_fields_in_bodies_are_refused() {
        let error = serde_json::from_str::<DagPatch>(r#"{"paused":true,"pasued":false}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `pasued`"), "{error}");
        assert_eq!(Role::parse("Admin"), Some(Role::Admin));
    }
}

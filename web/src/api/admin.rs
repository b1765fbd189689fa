//! Operations and administration: import errors, pools, workers (Op and above); the audit log
//! and users (Admin); API tokens (everyone manages their own, Admin everyone's).

use super::{audit_by, page_limit, Body, Params};
use crate::auth::{self, ClientAddr, Principal};
use crate::error::{Error, Result};
use crate::views;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use std::collections::BTreeMap;
use weft_api_types::{
    ApiToken, AuditEntry, AuditList, ImportError, ImportErrorList, Pool, PoolList, PoolUpsert,
    Role, RunningTry, TokenCreate, TokenCreated, TokenList, User, UserCreate, UserList, UserPatch,
    Worker, WorkerList,
};
use weft_core::ids::{AttemptId, TaskInstanceKey};
use weft_core::state::{DagRunState, TaskState};
use weft_storage::{ApiTokenRow, UserRow, Write};

/// Audit entries per page unless `limit` says otherwise.
pub const AUDIT_PAGE_DEFAULT: usize = 100;
/// API tokens one user may hold.
pub const API_TOKENS_PER_USER_MAX: usize = 50;
/// Longest API token lifetime.
pub const API_TOKEN_DAYS_MAX: u32 = 3650;
/// Longest pool description, in bytes.
pub const POOL_DESCRIPTION_BYTES_MAX: usize = 4 * 1024;
/// Per-DAG grants one user may hold; a user who needs more is better served without grants
/// (all DAGs) or by a role.
pub const DAG_GRANTS_PER_USER_MAX: usize = 1_000;
/// Name of the worker that runs attempts in this process.
pub const LOCAL_WORKER: &str = weft_core::dispatch::LOCAL_WORKER;

/// Import errors of DAG files (Op and above).
#[utoipa::path(
    get,
    path = "/api/v1/import-errors",
    tag = "admin",
    responses(
        (status = 200, description = "import errors", body = ImportErrorList),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low", body = weft_api_types::ApiError),
    )
)]
pub async fn import_errors(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<ImportErrorList>> {
    principal.require(Role::Op)?;
    let rows = state.store().import_errors().await?;
    Ok(Json(ImportErrorList {
        import_errors: rows
            .into_iter()
            .map(|row| ImportError {
                fileloc: row.fileloc,
                line: row.line,
                message: row.message,
                at: views::time(row.at),
            })
            .collect(),
    }))
}

/// Task instances queued or running now.
async fn active_task_instances(
    state: &AppState,
) -> Result<Vec<weft_core::dag_run::TaskInstanceRecord>> {
    let store = state.store();
    let runs = store
        .runs_in_states(&[DagRunState::Queued, DagRunState::Running])
        .await?;
    let mut active = Vec::new();
    for run in runs {
        active.extend(
            store
                .task_instances(&run.key)
                .await?
                .into_iter()
                .filter(|record| record.state.is_active()),
        );
    }
    Ok(active)
}

/// Pools with their slots and how many are taken (Op and above).
#[utoipa::path(
    get,
    path = "/api/v1/pools",
    tag = "admin",
    responses(
        (status = 200, description = "pools", body = PoolList),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low", body = weft_api_types::ApiError),
    )
)]
pub async fn pools(State(state): State<AppState>, principal: Principal) -> Result<Json<PoolList>> {
    principal.require(Role::Op)?;
    let mut occupied: BTreeMap<String, u32> = BTreeMap::new();
    for record in active_task_instances(&state).await? {
        *occupied.entry(record.pool.to_string()).or_default() += record.pool_slots;
    }
    let rows = state.store().pools().await?;
    Ok(Json(PoolList {
        pools: rows
            .into_iter()
            .map(|row| Pool {
                occupied: occupied.get(&row.name).copied().unwrap_or(0),
                name: row.name,
                slots: row.slots,
                description: row.description,
            })
            .collect(),
    }))
}

/// Creates or resizes a pool (Op and above).
#[utoipa::path(
    post,
    path = "/api/v1/pools",
    tag = "admin",
    request_body = PoolUpsert,
    responses(
        (status = 200, description = "the pool", body = Pool),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low", body = weft_api_types::ApiError),
        (status = 422, description = "invalid body", body = weft_api_types::ApiError),
    )
)]
pub async fn put_pool(
    State(state): State<AppState>,
    principal: Principal,
    from: ClientAddr,
    Body(request): Body<PoolUpsert>,
) -> Result<Json<Pool>> {
    principal.require(Role::Op)?;
    weft_core::dag::validate_id(&request.name).map_err(|error| {
        Error::unprocessable("invalid_pool_name", format!("pool name: {error}"))
    })?;
    if request.description.len() > POOL_DESCRIPTION_BYTES_MAX {
        return Err(Error::unprocessable(
            "invalid_pool_description",
            format!(
                "the description is {} bytes, over the limit of {POOL_DESCRIPTION_BYTES_MAX}: \
                 shorten it",
                request.description.len()
            ),
        ));
    }
    state
        .engine()
        .set_pool(&request.name, request.slots, &request.description)
        .await?;
    audit_by(
        &state,
        &principal,
        &from,
        "pool.put",
        &request.name,
        serde_json::json!({ "slots": request.slots }),
    )
    .await?;
    Ok(Json(Pool {
        name: request.name,
        slots: request.slots,
        description: request.description,
        occupied: 0,
    }))
}

/// Workers, their slots and what each runs (Op and above).
#[utoipa::path(
    get,
    path = "/api/v1/workers",
    tag = "admin",
    responses(
        (status = 200, description = "workers", body = WorkerList),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low", body = weft_api_types::ApiError),
    )
)]
pub async fn workers(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<WorkerList>> {
    principal.require(Role::Op)?;
    let mut running: Vec<(TaskInstanceKey, RunningTry)> = active_task_instances(&state)
        .await?
        .into_iter()
        .filter(|record| record.state == TaskState::Running)
        .map(|record| {
            let shown = RunningTry {
                dag_id: record.key.dag_id.to_string(),
                run_id: record.key.run_id.to_string(),
                task_id: record.key.task_id.to_string(),
                map_index: record.key.map_index,
                try_number: record.try_number,
                started_at: views::optional_time(record.started_at).unwrap_or_default(),
            };
            (record.key, shown)
        })
        .collect();
    let view = state.engine().workers().await?;
    // A try a remote worker runs is listed with it; every other one runs on the node's slots.
    let mut remote_running = |attempts: &[AttemptId]| -> Vec<RunningTry> {
        let mut found = Vec::new();
        running.retain(|(key, shown)| {
            let on_it = attempts
                .iter()
                .any(|attempt| &attempt.key == key && attempt.try_number == shown.try_number);
            if on_it {
                found.push(shown.clone());
            }
            !on_it
        });
        found
    };
    let remote: Vec<Worker> = view
        .remote
        .iter()
        .map(|worker| Worker {
            running: remote_running(&worker.running),
            name: worker.name.clone(),
            slots: worker.slots,
            queues: worker.queues.clone(),
            labels: worker.labels.clone(),
            kind: "remote".to_string(),
            address: worker.address.clone(),
            version: worker.version.clone(),
            draining: worker.draining,
            last_heartbeat: views::optional_time(worker.last_heartbeat),
        })
        .collect();
    let mut local_running = Some(running.into_iter().map(|(_, shown)| shown).collect());
    let mut workers: Vec<Worker> = view
        .workers
        .into_iter()
        .filter(|worker| worker.id.as_ref() == LOCAL_WORKER)
        .map(|worker| Worker {
            running: local_running.take().unwrap_or_default(),
            name: worker.id.to_string(),
            slots: worker.slots,
            queues: worker.queues.iter().map(ToString::to_string).collect(),
            labels: worker.labels,
            kind: "local".to_string(),
            address: String::new(),
            version: String::new(),
            draining: false,
            last_heartbeat: None,
        })
        .collect();
    workers.extend(remote);
    Ok(Json(WorkerList {
        workers,
        waiting_unserved_queue: view.waiting_unserved_queue,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    pub limit: Option<usize>,
}

/// The audit log, newest first (Admin).
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "admin",
    params(AuditQuery),
    responses(
        (status = 200, description = "audit entries", body = AuditList),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low", body = weft_api_types::ApiError),
    )
)]
pub async fn audit_log(
    State(state): State<AppState>,
    principal: Principal,
    Params(query): Params<AuditQuery>,
) -> Result<Json<AuditList>> {
    principal.require(Role::Admin)?;
    let limit = page_limit(query.limit, AUDIT_PAGE_DEFAULT)?;
    let rows = state.store().audit(limit).await?;
    let entries = rows
        .into_iter()
        .map(|row| {
            let detail: Option<serde_json::Value> = serde_json::from_str(&row.detail).ok();
            let from = detail
                .as_ref()
                .and_then(|detail| detail.get("from"))
                .and_then(|from| from.as_str())
                .map(str::to_string);
            AuditEntry {
                id: row.id,
                at: views::time(row.at),
                actor: row.actor,
                action: row.action,
                target: row.target,
                from,
                detail: row.detail,
            }
        })
        .collect();
    Ok(Json(AuditList { entries }))
}

fn user_view(row: UserRow) -> User {
    User {
        role: Role::parse(&row.role).unwrap_or(Role::Viewer),
        username: row.username,
        dag_grants: row.dag_grants,
        disabled: row.disabled,
        created_at: views::time(row.created_at),
    }
}

/// Users (Admin).
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "admin",
    responses(
        (status = 200, description = "users", body = UserList),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low", body = weft_api_types::ApiError),
    )
)]
pub async fn users(State(state): State<AppState>, principal: Principal) -> Result<Json<UserList>> {
    principal.require(Role::Admin)?;
    let rows = state.store().users().await?;
    Ok(Json(UserList {
        users: rows.into_iter().map(user_view).collect(),
    }))
}

/// Refuses too many grants, or a grant that cannot be a DAG id.
fn check_grants(grants: &[String]) -> Result<()> {
    if grants.len() > DAG_GRANTS_PER_USER_MAX {
        return Err(Error::unprocessable(
            "too_many_grants",
            format!(
                "{} DAG grants, over the limit of {DAG_GRANTS_PER_USER_MAX}: grant no DAG \
                 (which means every DAG) or fewer",
                grants.len()
            ),
        ));
    }
    for grant in grants {
        weft_core::dag::validate_id(grant).map_err(|error| {
            Error::unprocessable("invalid_grant", format!("DAG grant: {error}"))
        })?;
    }
    Ok(())
}

async fn hash(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|error| Error::internal(format!("password hashing failed: {error}")))?
        .map_err(|error| Error::internal(error.to_string()))
}

/// Creates a user (Admin).
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "admin",
    request_body = UserCreate,
    responses(
        (status = 201, description = "the user", body = User),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low", body = weft_api_types::ApiError),
        (status = 409, description = "the user exists", body = weft_api_types::ApiError),
        (status = 422, description = "invalid body", body = weft_api_types::ApiError),
    )
)]
pub async fn create_user(
    State(state): State<AppState>,
    principal: Principal,
    from: ClientAddr,
    Body(request): Body<UserCreate>,
) -> Result<(StatusCode, Json<User>)> {
    principal.require(Role::Admin)?;
    auth::check_username(&request.username)?;
    auth::check_password_rules(&request.password)?;
    check_grants(&request.dag_grants)?;
    if state.store().user(&request.username).await?.is_some() {
        return Err(Error::conflict(format!(
            "user `{}` exists: change it with PATCH /api/v1/users/{}",
            request.username, request.username
        )));
    }
    let row = UserRow {
        username: request.username.clone(),
        password_hash: hash(request.password).await?,
        role: request.role.as_str().to_string(),
        dag_grants: request.dag_grants,
        disabled: false,
        created_at: chrono::Utc::now(),
        session_epoch: 0,
    };
    state
        .store()
        .write(vec![Write::PutUser(row.clone())])
        .await?;
    audit_by(
        &state,
        &principal,
        &from,
        "user.create",
        &row.username,
        serde_json::json!({ "role": row.role, "dag_grants": row.dag_grants }),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(user_view(row))))
}

/// Changes a user's role, password, grants or disabled flag (Admin).
#[utoipa::path(
    patch,
    path = "/api/v1/users/{username}",
    tag = "admin",
    params(("username" = String, Path, description = "username")),
    request_body = UserPatch,
    responses(
        (status = 200, description = "the user", body = User),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low", body = weft_api_types::ApiError),
        (status = 404, description = "no such user", body = weft_api_types::ApiError),
        (status = 422, description = "invalid body", body = weft_api_types::ApiError),
    )
)]
pub async fn patch_user(
    State(state): State<AppState>,
    principal: Principal,
    from: ClientAddr,
    Path(username): Path<String>,
    Body(patch): Body<UserPatch>,
) -> Result<Json<User>> {
    principal.require(Role::Admin)?;
    let mut row = state
        .store()
        .user(&username)
        .await?
        .ok_or_else(|| Error::not_found(format!("user `{username}`")))?;
    if let Some(password) = &patch.password {
        auth::check_password_rules(password)?;
    }
    if let Some(grants) = &patch.dag_grants {
        check_grants(grants)?;
    }
    if username == principal.username
        && (patch.disabled == Some(true) || patch.role.is_some_and(|role| role != Role::Admin))
    {
        return Err(Error::unprocessable(
            "self_lockout",
            "you cannot disable yourself or drop your own admin role: ask another admin",
        ));
    }
    if let Some(password) = patch.password.clone() {
        row.password_hash = hash(password).await?;
    }
    if let Some(role) = patch.role {
        row.role = role.as_str().to_string();
    }
    if let Some(grants) = patch.dag_grants.clone() {
        row.dag_grants = grants;
    }
    if let Some(disabled) = patch.disabled {
        row.disabled = disabled;
    }
    // A new password or a disabled user ends the user's sessions (the stored session epoch
    // moves on); re-enabling does not revive them. Any change (role, grants) makes live
    // streams re-check their callers.
    if patch.password.is_some() || patch.disabled == Some(true) {
        state.sessions().end_sessions_in(&mut row);
    } else {
        state.sessions().keep_epoch_in(&mut row);
    }
    state
        .store()
        .write(vec![Write::PutUser(row.clone())])
        .await?;
    state.sessions().changed();
    audit_by(
        &state,
        &principal,
        &from,
        "user.update",
        &username,
        serde_json::json!({
            "role": patch.role, "dag_grants": patch.dag_grants,
            "disabled": patch.disabled, "password_changed": patch.password.is_some(),
        }),
    )
    .await?;
    Ok(Json(user_view(row)))
}

fn token_view(row: ApiTokenRow) -> ApiToken {
    ApiToken {
        id: row.id,
        name: row.name,
        username: row.username,
        created_at: views::time(row.created_at),
        expires_at: views::optional_time(row.expires_at),
    }
}

/// The caller's API tokens (an Admin sees everyone's).
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "admin",
    responses(
        (status = 200, description = "tokens, without their secrets", body = TokenList),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
    )
)]
pub async fn tokens(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<TokenList>> {
    let rows = state.store().api_tokens().await?;
    Ok(Json(TokenList {
        tokens: rows
            .into_iter()
            .filter(|row| principal.role == Role::Admin || row.username == principal.username)
            .map(token_view)
            .collect(),
    }))
}

/// Creates an API token acting as the caller; the secret is shown only in this answer.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "admin",
    request_body = TokenCreate,
    responses(
        (status = 201, description = "the token with its secret", body = TokenCreated),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 422, description = "invalid body or too many tokens", body = weft_api_types::ApiError),
    )
)]
pub async fn create_token(
    State(state): State<AppState>,
    principal: Principal,
    from: ClientAddr,
    Body(request): Body<TokenCreate>,
) -> Result<(StatusCode, Json<TokenCreated>)> {
    if request.name.trim().is_empty() || request.name.len() > 100 {
        return Err(Error::unprocessable(
            "invalid_token_name",
            "`name` must be 1 to 100 bytes: say what the token is for",
        ));
    }
    if request
        .expires_in_days
        .is_some_and(|days| days == 0 || days > API_TOKEN_DAYS_MAX)
    {
        return Err(Error::unprocessable(
            "invalid_expiry",
            format!("`expires_in_days` must be 1 to {API_TOKEN_DAYS_MAX}, or absent for never"),
        ));
    }
    let held = state
        .store()
        .api_tokens()
        .await?
        .iter()
        .filter(|row| row.username == principal.username)
        .count();
    if held >= API_TOKENS_PER_USER_MAX {
        return Err(Error::unprocessable(
            "too_many_tokens",
            format!("you hold {held} tokens, the most allowed: delete unused ones first"),
        ));
    }
    let expires_at = request
        .expires_in_days
        .map(|days| chrono::Utc::now() + chrono::Duration::days(i64::from(days)));
    let (row, token) = auth::new_api_token(&request.name, &principal.username, expires_at);
    state
        .store()
        .write(vec![Write::PutApiToken(row.clone())])
        .await?;
    audit_by(
        &state,
        &principal,
        &from,
        "token.create",
        &row.id,
        serde_json::json!({ "name": row.name }),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            info: token_view(row),
            token,
        }),
    ))
}

/// Revokes an API token: one's own, or anyone's for an Admin.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "token id")),
    responses(
        (status = 204, description = "revoked"),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "someone else's token", body = weft_api_types::ApiError),
        (status = 404, description = "no such token", body = weft_api_types::ApiError),
    )
)]
pub async fn delete_token(
    State(state): State<AppState>,
    principal: Principal,
    from: ClientAddr,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let row = state
        .store()
        .api_token(&id)
        .await?
        .ok_or_else(|| Error::not_found(format!("token `{id}`")))?;
    if row.username != principal.username {
        principal.require(Role::Admin)?;
    }
    state
        .store()
        .write(vec![Write::DeleteApiToken { id: id.clone() }])
        .await?;
    audit_by(
        &state,
        &principal,
        &from,
        "token.delete",
        &id,
        serde_json::json!({ "owner": row.username }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

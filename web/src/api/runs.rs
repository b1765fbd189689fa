//! Run endpoints: list and trigger runs, one run, one task instance with its tries and log,
//! clear, mark, and backfills.

use super::dags::dag_for;
use super::{audit_by, page_limit, Body, Params};
use crate::auth::{ClientAddr, Principal};
use crate::error::{Error, Result};
use crate::views::{self, DagVersionView};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use weft_api_types::{
    BackfillRequest, BackfillResponse, ClearRequest, ClearResponse, LogChunk, MarkRequest,
    MarkState, Role, Run, RunDetail, RunList, TaskInstance, TaskInstanceDetail, TaskTry,
    TriggerRun,
};
use weft_core::dag_run::shown_instances;
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::state::{DagRunState, TaskState};
use weft_storage::RunRow;

/// Runs per page unless `limit` says otherwise.
pub const RUN_PAGE_DEFAULT: usize = 25;
/// Runs a run listing looks at to count and filter; older runs are left out of `total`.
pub const RUN_LIST_SCAN_MAX: usize = 100_000;
/// Size limit of one log chunk.
pub const LOG_CHUNK_BYTES_MAX: u64 = 256 * 1024;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RunListQuery {
    pub limit: Option<usize>,
    pub offset: Option<usize>,
    /// Only runs in this state.
    pub state: Option<String>,
}

/// Runs of a DAG, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/dags/{dag_id}/runs",
    tag = "runs",
    params(("dag_id" = String, Path, description = "DAG id"), RunListQuery),
    responses(
        (status = 200, description = "a page of runs", body = RunList),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "no grant for this DAG", body = weft_api_types::ApiError),
        (status = 404, description = "no such DAG", body = weft_api_types::ApiError),
        (status = 422, description = "invalid state or limit", body = weft_api_types::ApiError),
    )
)]
pub async fn list_runs(
    State(state): State<AppState>,
    principal: Principal,
    Path(dag_id): Path<String>,
    Params(query): Params<RunListQuery>,
) -> Result<Json<RunList>> {
    let limit = page_limit(query.limit, RUN_PAGE_DEFAULT)?;
    let offset = query.offset.unwrap_or(0);
    let wanted_state = query
        .state
        .as_deref()
        .map(|text| {
            text.parse::<DagRunState>()
                .map_err(|error| Error::unprocessable("invalid_state", error.to_string()))
        })
        .transpose()?;
    dag_for(&state, &principal, &dag_id).await?;
    let store = state.store();
    let runs: Vec<RunRow> = match wanted_state {
        None => store.runs(&dag_id, RUN_LIST_SCAN_MAX).await?,
        Some(wanted) => store
            .runs(&dag_id, RUN_LIST_SCAN_MAX)
            .await?
            .into_iter()
            .filter(|run| run.state == wanted)
            .collect(),
    };
    let total = runs.len() as u64;
    let runs = runs
        .iter()
        .skip(offset)
        .take(limit)
        .map(views::run)
        .collect();
    Ok(Json(RunList { runs, total }))
}

/// Checks a run conf against the DAG's params; the error names the failing param.
fn check_conf(view: &DagVersionView, conf: &serde_json::Value) -> Result<()> {
    let Some(conf) = conf.as_object() else {
        return Err(Error::unprocessable(
            "invalid_conf",
            "`conf` must be a JSON object of param names to values",
        ));
    };
    for (name, param) in &view.spec.params {
        if param.schema.is_empty() {
            continue;
        }
        let value = conf.get(name).unwrap_or(&param.default);
        let schema = serde_json::Value::Object(param.schema.clone());
        let validator = jsonschema::validator_for(&schema).map_err(|error| {
            Error::unprocessable(
                "invalid_param_schema",
                format!("param `{name}` of the DAG has an invalid schema: {error}"),
            )
        })?;
        let first_error = validator
            .iter_errors(value)
            .next()
            .map(|error| error.to_string());
        if let Some(error) = first_error {
            return Err(Error::unprocessable(
                "invalid_conf",
                format!("param `{name}` is {value}: {error}; fix it in `conf`"),
            ));
        }
    }
    Ok(())
}

/// Triggers a manual run (User and above); `conf` is checked against the DAG's params.
#[utoipa::path(
    post,
    path = "/api/v1/dags/{dag_id}/runs",
    tag = "runs",
    params(("dag_id" = String, Path, description = "DAG id")),
    request_body = TriggerRun,
    responses(
        (status = 201, description = "the new run", body = Run),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low or no grant", body = weft_api_types::ApiError),
        (status = 404, description = "no such DAG", body = weft_api_types::ApiError),
        (status = 409, description = "a run with that logical date exists", body = weft_api_types::ApiError),
        (status = 422, description = "invalid body or conf", body = weft_api_types::ApiError),
    )
)]
pub async fn trigger_run(
    State(state): State<AppState>,
    principal: Principal,
    from: ClientAddr,
    Path(dag_id): Path<String>,
    Body(request): Body<TriggerRun>,
) -> Result<(StatusCode, Json<Run>)> {
    principal.require(Role::User)?;
    let (_, view) = dag_for(&state, &principal, &dag_id).await?;
    let conf = request
        .conf
        .clone()
        .unwrap_or_else(|| serde_json::json!({}));
    check_conf(&view, &conf)?;
    let logical_date = request
        .logical_date
        .as_deref()
        .map(|text| views::parse_logical_date("logical_date", text))
        .transpose()?;
    let key = state
        .engine()
        .trigger_at(&dag_id, logical_date, conf.clone())
        .await?;
    audit_by(
        &state,
        &principal,
        &from,
        "run.trigger",
        &key.to_string(),
        serde_json::json!({ "conf": conf }),
    )
    .await?;
    let run = load_run(&state, &key).await?;
    Ok((StatusCode::CREATED, Json(views::run(&run))))
}

async fn load_run(state: &AppState, key: &RunKey) -> Result<RunRow> {
    state
        .store()
        .run(key)
        .await?
        .ok_or_else(|| Error::not_found(format!("run `{key}`")))
}

fn run_key(dag_id: &str, run_id: &str) -> RunKey {
    RunKey {
        dag_id: dag_id.into(),
        run_id: run_id.into(),
    }
}

/// The version a run executes, parsed.
async fn run_view(state: &AppState, run: &RunRow) -> Result<Arc<DagVersionView>> {
    state
        .views()
        .get(state.store().as_ref(), &run.key.dag_id, &run.version_hash)
        .await
}

/// A run and its task instances.
#[utoipa::path(
    get,
    path = "/api/v1/dags/{dag_id}/runs/{run_id}",
    tag = "runs",
    params(("dag_id" = String, Path, description = "DAG id"), ("run_id" = String, Path, description = "run id")),
    responses(
        (status = 200, description = "the run", body = RunDetail),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "no grant for this DAG", body = weft_api_types::ApiError),
        (status = 404, description = "no such run", body = weft_api_types::ApiError),
    )
)]
pub async fn get_run(
    State(state): State<AppState>,
    principal: Principal,
    Path((dag_id, run_id)): Path<(String, String)>,
) -> Result<Json<RunDetail>> {
    principal.require_dag(&dag_id)?;
    let run = load_run(&state, &run_key(&dag_id, &run_id)).await?;
    let view = run_view(&state, &run).await?;
    let records = shown_instances(state.store().task_instances(&run.key).await?);
    let position = |task_id: &str| view.task_order.iter().position(|id| id == task_id);
    let mut task_instances: Vec<TaskInstance> = records
        .iter()
        .map(|record| views::task_instance(record, Some(&view)))
        .collect();
    task_instances.sort_by_key(|ti| (position(&ti.task_id), ti.map_index));
    let cell = state
        .engine()
        .ownership()
        .and_then(|ownership| ownership.owner_of_dag(&run.key.dag_id))
        .map(|(cell, _)| cell);
    Ok(Json(RunDetail {
        run: views::run(&run),
        task_instances,
        cell,
    }))
}

/// The first (or only) instance of a task in a run.
async fn load_task_instance(
    state: &AppState,
    run: &RunKey,
    task_id: &str,
) -> Result<weft_core::dag_run::TaskInstanceRecord> {
    let records = shown_instances(state.store().task_instances(run).await?);
    records
        .into_iter()
        .filter(|record| record.key.task_id == task_id)
        .min_by_key(|record| record.key.map_index)
        .ok_or_else(|| Error::not_found(format!("task `{task_id}` in run `{run}`")))
}

/// A task instance with its tries and template fields.
#[utoipa::path(
    get,
    path = "/api/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}",
    tag = "runs",
    params(
        ("dag_id" = String, Path, description = "DAG id"),
        ("run_id" = String, Path, description = "run id"),
        ("task_id" = String, Path, description = "task id"),
    ),
    responses(
        (status = 200, description = "the task instance", body = TaskInstanceDetail),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "no grant for this DAG", body = weft_api_types::ApiError),
        (status = 404, description = "no such task instance", body = weft_api_types::ApiError),
    )
)]
pub async fn get_task_instance(
    State(state): State<AppState>,
    principal: Principal,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
) -> Result<Json<TaskInstanceDetail>> {
    principal.require_dag(&dag_id)?;
    let run = load_run(&state, &run_key(&dag_id, &run_id)).await?;
    let view = run_view(&state, &run).await?;
    let record = load_task_instance(&state, &run.key, &task_id).await?;
    let attempts = state.store().attempts(&record.key).await?;
    let tries = attempts
        .iter()
        .map(|attempt| TaskTry {
            try_number: attempt.attempt.try_number,
            state: crate::stream::task_state(attempt.state),
            start_date: views::time(attempt.started_at),
            end_date: views::optional_time(attempt.ended_at),
            hostname: attempt.worker.clone(),
            failure_reason: attempt.note.clone(),
        })
        .collect();
    let rendered_fields: BTreeMap<String, serde_json::Value> = view
        .spec
        .task(&task_id)
        .map(|task| {
            task.template_fields
                .iter()
                .filter_map(|field| {
                    let value = task.extra.get(field)?;
                    Some((field.clone(), value.clone()))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(TaskInstanceDetail {
        instance: views::task_instance(&record, Some(&view)),
        tries,
        rendered_fields,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LogQuery {
    /// Byte offset to read from (the `next_offset` of the previous chunk).
    pub offset: Option<u64>,
}

/// A chunk of one try's log; poll with `offset` to follow it.
#[utoipa::path(
    get,
    path = "/api/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/logs/{try_number}",
    tag = "runs",
    params(
        ("dag_id" = String, Path, description = "DAG id"),
        ("run_id" = String, Path, description = "run id"),
        ("task_id" = String, Path, description = "task id"),
        ("try_number" = u32, Path, description = "try, from 1"),
        LogQuery,
    ),
    responses(
        (status = 200, description = "a chunk of the log", body = LogChunk),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "no grant for this DAG", body = weft_api_types::ApiError),
        (status = 404, description = "no such try", body = weft_api_types::ApiError),
    )
)]
pub async fn task_log(
    State(state): State<AppState>,
    principal: Principal,
    Path((dag_id, run_id, task_id, try_number)): Path<(String, String, String, u32)>,
    Params(query): Params<LogQuery>,
) -> Result<Json<LogChunk>> {
    principal.require_dag(&dag_id)?;
    let run = run_key(&dag_id, &run_id);
    let record = load_task_instance(&state, &run, &task_id).await?;
    if try_number == 0 || try_number > record.try_number {
        return Err(Error::not_found(format!(
            "try {try_number} of `{}` (it has {} tries)",
            record.key, record.try_number
        )));
    }
    let finished = state
        .store()
        .attempts(&record.key)
        .await?
        .iter()
        .any(|attempt| attempt.attempt.try_number == try_number && attempt.ended_at.is_some());
    let path = state.engine().log_path(&record.key, try_number);
    let offset = query.offset.unwrap_or(0);
    let (content, next_offset, at_end) = read_chunk(&path, offset).await?;
    Ok(Json(LogChunk {
        content,
        next_offset,
        complete: finished && at_end,
    }))
}

/// Reads at most `LOG_CHUNK_BYTES_MAX` from `offset`, ending at a line or character boundary.
async fn read_chunk(path: &std::path::Path, offset: u64) -> Result<(String, u64, bool)> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        // Not written yet: the try has not started printing.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok((String::new(), offset, true))
        }
        Err(error) => return Err(Error::internal(format!("cannot read the log: {error}"))),
    };
    let length = file
        .metadata()
        .await
        .map_err(|error| Error::internal(format!("cannot read the log: {error}")))?
        .len();
    let start = offset.min(length);
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|error| Error::internal(format!("cannot read the log: {error}")))?;
    let mut buffer = Vec::new();
    file.take(LOG_CHUNK_BYTES_MAX)
        .read_to_end(&mut buffer)
        .await
        .map_err(|error| Error::internal(format!("cannot read the log: {error}")))?;
    // Never split a UTF-8 character between chunks.
    let valid = match std::str::from_utf8(&buffer) {
        Ok(_) => buffer.len(),
        Err(error) if error.error_len().is_none() => error.valid_up_to(),
        Err(_) => buffer.len(),
    };
    buffer.truncate(valid);
    let next = start + buffer.len() as u64;
    Ok((
        String::from_utf8_lossy(&buffer).into_owned(),
        next,
        next >= length,
    ))
}

/// The tasks a clear touches, in topological order; unknown task ids are an error.
fn tasks_to_clear(view: &DagVersionView, request: &ClearRequest) -> Result<Vec<String>> {
    let mut chosen: BTreeSet<String> = BTreeSet::new();
    if request.task_ids.is_empty() {
        chosen.extend(view.task_order.iter().cloned());
    }
    for task_id in &request.task_ids {
        if view.spec.task(task_id).is_none() {
            return Err(Error::unprocessable(
                "unknown_task",
                format!("task `{task_id}` is not in the DAG: check `task_ids`"),
            ));
        }
        chosen.insert(task_id.clone());
        if let Some(dag) = &view.dag {
            if request.downstream {
                chosen.extend(dag.descendants(task_id).into_iter().map(str::to_string));
            }
            if request.upstream {
                chosen.extend(dag.ancestors(task_id).into_iter().map(str::to_string));
            }
        }
    }
    Ok(view
        .task_order
        .iter()
        .filter(|task_id| chosen.contains(*task_id))
        .cloned()
        .collect())
}

/// Clears task instances of a run so that they run again (User and above).
#[utoipa::path(
    post,
    path = "/api/v1/dags/{dag_id}/runs/{run_id}/clear",
    tag = "runs",
    params(("dag_id" = String, Path, description = "DAG id"), ("run_id" = String, Path, description = "run id")),
    request_body = ClearRequest,
    responses(
        (status = 200, description = "the tasks cleared (or that would be, on a dry run)", body = ClearResponse),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low or no grant", body = weft_api_types::ApiError),
        (status = 404, description = "no such run", body = weft_api_types::ApiError),
        (status = 422, description = "invalid body or unknown task", body = weft_api_types::ApiError),
    )
)]
pub async fn clear(
    State(state): State<AppState>,
    principal: Principal,
    from: ClientAddr,
    Path((dag_id, run_id)): Path<(String, String)>,
    Body(request): Body<ClearRequest>,
) -> Result<Json<ClearResponse>> {
    principal.require(Role::User)?;
    principal.require_dag(&dag_id)?;
    let run = load_run(&state, &run_key(&dag_id, &run_id)).await?;
    let view = run_view(&state, &run).await?;
    let task_ids = tasks_to_clear(&view, &request)?;
    if !request.dry_run {
        let ids: Vec<&str> = task_ids.iter().map(String::as_str).collect();
        state.engine().clear(&run.key, &ids, false, false).await?;
        audit_by(
            &state,
            &principal,
            &from,
            "run.clear",
            &run.key.to_string(),
            serde_json::json!({ "task_ids": task_ids }),
        )
        .await?;
    }
    Ok(Json(ClearResponse { task_ids }))
}

/// Sets a task instance's state by hand (User and above).
#[utoipa::path(
    post,
    path = "/api/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/state",
    tag = "runs",
    params(
        ("dag_id" = String, Path, description = "DAG id"),
        ("run_id" = String, Path, description = "run id"),
        ("task_id" = String, Path, description = "task id"),
    ),
    request_body = MarkRequest,
    responses(
        (status = 200, description = "the task instance after the change", body = TaskInstance),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low or no grant", body = weft_api_types::ApiError),
        (status = 404, description = "no such task instance", body = weft_api_types::ApiError),
        (status = 422, description = "invalid body", body = weft_api_types::ApiError),
    )
)]
pub async fn mark(
    State(state): State<AppState>,
    principal: Principal,
    from: ClientAddr,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
    Body(request): Body<MarkRequest>,
) -> Result<Json<TaskInstance>> {
    principal.require(Role::User)?;
    principal.require_dag(&dag_id)?;
    let run = load_run(&state, &run_key(&dag_id, &run_id)).await?;
    let record = load_task_instance(&state, &run.key, &task_id).await?;
    let wanted = match request.state {
        MarkState::Success => TaskState::Success,
        MarkState::Failed => TaskState::Failed,
    };
    state
        .engine()
        .mark(&run.key, &task_id, record.key.map_index, wanted)
        .await?;
    audit_by(
        &state,
        &principal,
        &from,
        "task.mark",
        &record.key.to_string(),
        serde_json::json!({ "state": wanted.as_str() }),
    )
    .await?;
    let view = run_view(&state, &run).await?;
    let key: &TaskInstanceKey = &record.key;
    let record = state
        .store()
        .task_instance(key)
        .await?
        .ok_or_else(|| Error::not_found(format!("task instance `{key}`")))?;
    Ok(Json(views::task_instance(&record, Some(&view))))
}

/// Creates the runs of a date range (Op and above); a dry run only lists them.
#[utoipa::path(
    post,
    path = "/api/v1/dags/{dag_id}/backfills",
    tag = "runs",
    params(("dag_id" = String, Path, description = "DAG id")),
    request_body = BackfillRequest,
    responses(
        (status = 200, description = "the runs' logical dates", body = BackfillResponse),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low", body = weft_api_types::ApiError),
        (status = 404, description = "no such DAG", body = weft_api_types::ApiError),
        (status = 422, description = "invalid body or range", body = weft_api_types::ApiError),
    )
)]
pub async fn backfill(
    State(state): State<AppState>,
    principal: Principal,
    from_addr: ClientAddr,
    Path(dag_id): Path<String>,
    Body(request): Body<BackfillRequest>,
) -> Result<Json<BackfillResponse>> {
    principal.require(Role::Op)?;
    let (_, view) = dag_for(&state, &principal, &dag_id).await?;
    let from = views::parse_logical_date("from", &request.from)?;
    let to = views::parse_logical_date("to", &request.to)?;
    if from > to {
        return Err(Error::unprocessable(
            "invalid_range",
            "`from` is after `to`: swap them",
        ));
    }
    let dag = view.dag.as_ref().ok_or_else(|| {
        Error::unprocessable("invalid_dag", "the DAG's latest version does not validate")
    })?;
    if dag.timetable().is_manual_only() {
        return Err(Error::unprocessable(
            "no_schedule",
            format!("dag `{dag_id}` has no schedule, so a range has no runs: trigger it instead"),
        ));
    }
    let limit = weft_core::limits::BACKFILL_RUNS_MAX;
    let planned = dag.timetable().runs_between(from, to, limit + 1);
    if planned.len() > limit {
        return Err(Error::unprocessable(
            "too_many_runs",
            format!("the range holds more than {limit} runs: split it"),
        ));
    }
    let mut logical_dates: Vec<String> = planned
        .iter()
        .map(|info| views::time(info.logical_date))
        .collect();
    if request.dry_run {
        return Ok(Json(BackfillResponse {
            logical_dates,
            created: false,
        }));
    }
    if request.rerun_failed {
        rerun_failed(&state, &dag_id, from, to).await?;
    }
    let created = state.engine().backfill(&dag_id, from, to).await?;
    audit_by(
        &state,
        &principal,
        &from_addr,
        "dag.backfill",
        &dag_id,
        serde_json::json!({
            "from": request.from, "to": request.to,
            "rerun_failed": request.rerun_failed, "runs": created.len(),
        }),
    )
    .await?;
    let mut dates = Vec::with_capacity(created.len());
    for key in &created {
        if let Some(run) = state.store().run(key).await? {
            dates.push(views::time(run.logical_date));
        }
    }
    if !dates.is_empty() || created.is_empty() {
        logical_dates = dates;
    }
    Ok(Json(BackfillResponse {
        logical_dates,
        created: true,
    }))
}

/// Clears the failed task instances of failed runs in the range, as `weft dags backfill
/// --rerun-failed` does.
async fn rerun_failed(
    state: &AppState,
    dag_id: &str,
    from: weft_core::Timestamp,
    to: weft_core::Timestamp,
) -> Result<()> {
    let store = state.store();
    let runs = store
        .runs(dag_id, weft_core::limits::BACKFILL_RUNS_MAX)
        .await?;
    for run in runs.into_iter().filter(|run| {
        run.logical_date >= from && run.logical_date <= to && run.state == DagRunState::Failed
    }) {
        let failed: Vec<String> = store
            .task_instances(&run.key)
            .await?
            .into_iter()
            .filter(|record| matches!(record.state, TaskState::Failed | TaskState::UpstreamFailed))
            .map(|record| record.key.task_id.to_string())
            .collect();
        let ids: Vec<&str> = failed.iter().map(String::as_str).collect();
        state.engine().clear(&run.key, &ids, true, false).await?;
    }
    Ok(())
}

//! DAG endpoints: the list, one DAG, pause, versions, code, and the grid of runs × tasks.

use super::{audit_by, page_limit, Body, Params};
use crate::auth::{ClientAddr, Principal};
use crate::error::{Error, Result};
use crate::views::{self, DagVersionView};
use crate::AppState;
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;
use weft_api_types::{
    DagCode, DagDetail, DagList, DagPatch, DagSummary, DagVersion, Grid, GridRun, Role,
};
use weft_storage::DagRow;

/// DAGs per page unless `limit` says otherwise.
pub const DAG_PAGE_DEFAULT: usize = 50;
/// Runs per grid page unless `limit` says otherwise, and at most.
pub const GRID_RUNS_DEFAULT: usize = 25;
pub const GRID_RUNS_MAX: usize = 200;
/// Size limit of a DAG file shown as code.
pub const CODE_BYTES_MAX: u64 = 1024 * 1024;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DagListQuery {
    /// Matches the DAG id, display name or description, ignoring case.
    pub search: Option<String>,
    pub tag: Option<String>,
    pub owner: Option<String>,
    pub paused: Option<bool>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

/// The DAGs the caller may see, with recent runs and the next run.
#[utoipa::path(
    get,
    path = "/api/v1/dags",
    tag = "dags",
    params(DagListQuery),
    responses(
        (status = 200, description = "a page of DAGs", body = DagList),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
    )
)]
pub async fn list_dags(
    State(state): State<AppState>,
    principal: Principal,
    Params(query): Params<DagListQuery>,
) -> Result<Json<DagList>> {
    let limit = page_limit(query.limit, DAG_PAGE_DEFAULT)?;
    let offset = query.offset.unwrap_or(0);
    let store = state.store().as_ref();
    let search = query.search.as_deref().map(str::to_lowercase);
    let mut matching: Vec<(DagRow, Arc<DagVersionView>)> = Vec::new();
    for row in store.dags().await? {
        if !principal.can_see(&row.dag_id) {
            continue;
        }
        if query.paused.is_some_and(|paused| paused != row.is_paused) {
            continue;
        }
        let view = state
            .views()
            .get(store, &row.dag_id, &row.latest_version)
            .await?;
        let spec = &view.spec;
        if let Some(tag) = &query.tag {
            if !spec.tags.iter().any(|candidate| candidate == tag) {
                continue;
            }
        }
        if let Some(owner) = &query.owner {
            if spec.owner.as_deref() != Some(owner.as_str()) {
                continue;
            }
        }
        if let Some(search) = &search {
            let found = [
                Some(row.dag_id.as_str()),
                spec.display_name.as_deref(),
                spec.description.as_deref(),
            ]
            .into_iter()
            .flatten()
            .any(|text| text.to_lowercase().contains(search));
            if !found {
                continue;
            }
        }
        matching.push((row, view));
    }
    let total = matching.len() as u64;
    let page = matching.iter().skip(offset).take(limit);
    let summaries = page.map(|(row, view)| views::summary_with_runs(store, row, view));
    let dags = futures::future::try_join_all(summaries).await?;
    Ok(Json(DagList { dags, total }))
}

/// A DAG the caller may see, with its latest version parsed.
pub(crate) async fn dag_for(
    state: &AppState,
    principal: &Principal,
    dag_id: &str,
) -> Result<(DagRow, Arc<DagVersionView>)> {
    principal.require_dag(dag_id)?;
    let store = state.store().as_ref();
    let row = store
        .dag(dag_id)
        .await?
        .ok_or_else(|| Error::not_found(format!("dag `{dag_id}`")))?;
    let view = state
        .views()
        .get(store, dag_id, &row.latest_version)
        .await?;
    Ok((row, view))
}

/// One DAG: its summary, tasks with their edges, params and docs.
#[utoipa::path(
    get,
    path = "/api/v1/dags/{dag_id}",
    tag = "dags",
    params(("dag_id" = String, Path, description = "DAG id")),
    responses(
        (status = 200, description = "the DAG", body = DagDetail),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "no grant for this DAG", body = weft_api_types::ApiError),
        (status = 404, description = "no such DAG", body = weft_api_types::ApiError),
    )
)]
pub async fn get_dag(
    State(state): State<AppState>,
    principal: Principal,
    Path(dag_id): Path<String>,
) -> Result<Json<DagDetail>> {
    let (row, view) = dag_for(&state, &principal, &dag_id).await?;
    let summary = views::summary_with_runs(state.store().as_ref(), &row, &view).await?;
    let tasks = view
        .task_order
        .iter()
        .filter_map(|task_id| views::task_info(&view, task_id))
        .collect();
    Ok(Json(DagDetail {
        summary,
        tasks,
        params: views::params_schema(&view.spec),
        doc_md: view.spec.doc_md.clone(),
        version_hash: view.version_hash.clone(),
    }))
}

/// Pauses or unpauses a DAG (User and above).
#[utoipa::path(
    patch,
    path = "/api/v1/dags/{dag_id}",
    tag = "dags",
    params(("dag_id" = String, Path, description = "DAG id")),
    request_body = DagPatch,
    responses(
        (status = 200, description = "the DAG after the change", body = DagSummary),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "role too low or no grant", body = weft_api_types::ApiError),
        (status = 404, description = "no such DAG", body = weft_api_types::ApiError),
        (status = 422, description = "invalid body", body = weft_api_types::ApiError),
    )
)]
pub async fn patch_dag(
    State(state): State<AppState>,
    principal: Principal,
    from: ClientAddr,
    Path(dag_id): Path<String>,
    Body(patch): Body<DagPatch>,
) -> Result<Json<DagSummary>> {
    principal.require(Role::User)?;
    dag_for(&state, &principal, &dag_id).await?;
    state.engine().set_paused(&dag_id, patch.paused).await?;
    let action = if patch.paused {
        "dag.pause"
    } else {
        "dag.unpause"
    };
    audit_by(
        &state,
        &principal,
        &from,
        action,
        &dag_id,
        serde_json::Value::Null,
    )
    .await?;
    let (row, view) = dag_for(&state, &principal, &dag_id).await?;
    Ok(Json(
        views::summary_with_runs(state.store().as_ref(), &row, &view).await?,
    ))
}

/// The stored versions of a DAG, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/dags/{dag_id}/versions",
    tag = "dags",
    params(("dag_id" = String, Path, description = "DAG id")),
    responses(
        (status = 200, description = "versions, newest first", body = Vec<DagVersion>),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "no grant for this DAG", body = weft_api_types::ApiError),
        (status = 404, description = "no such DAG", body = weft_api_types::ApiError),
    )
)]
pub async fn dag_versions(
    State(state): State<AppState>,
    principal: Principal,
    Path(dag_id): Path<String>,
) -> Result<Json<Vec<DagVersion>>> {
    dag_for(&state, &principal, &dag_id).await?;
    let versions = state.store().dag_versions(&dag_id).await?;
    Ok(Json(
        versions
            .into_iter()
            .map(|version| DagVersion {
                version_hash: version.version_hash,
                created_at: views::time(version.created_at),
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct CodeQuery {
    /// A version hash; the latest when absent.
    pub version: Option<String>,
}

/// A DAG's code: the DAG file of the latest version, or the serialized DAG of an older one.
#[utoipa::path(
    get,
    path = "/api/v1/dags/{dag_id}/code",
    tag = "dags",
    params(("dag_id" = String, Path, description = "DAG id"), CodeQuery),
    responses(
        (status = 200, description = "the code", body = DagCode),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "no grant for this DAG", body = weft_api_types::ApiError),
        (status = 404, description = "no such DAG or version", body = weft_api_types::ApiError),
    )
)]
pub async fn dag_code(
    State(state): State<AppState>,
    principal: Principal,
    Path(dag_id): Path<String>,
    Params(query): Params<CodeQuery>,
) -> Result<Json<DagCode>> {
    let (row, _) = dag_for(&state, &principal, &dag_id).await?;
    let version_hash = query.version.unwrap_or_else(|| row.latest_version.clone());
    let version = state
        .store()
        .dag_version(&dag_id, &version_hash)
        .await?
        .ok_or_else(|| Error::not_found(format!("version `{version_hash}` of dag `{dag_id}`")))?;
    let fileloc = row.fileloc.clone();
    let file_text = match (&fileloc, version_hash == row.latest_version) {
        (Some(path), true) => read_small_file(path).await,
        _ => None,
    };
    let source = match file_text {
        Some(text) => text,
        None => serde_json::from_str::<serde_json::Value>(&version.spec_json)
            .ok()
            .and_then(|value| serde_json::to_string_pretty(&value).ok())
            .unwrap_or(version.spec_json),
    };
    Ok(Json(DagCode {
        fileloc,
        source,
        version_hash,
    }))
}

async fn read_small_file(path: &str) -> Option<String> {
    let metadata = tokio::fs::metadata(path).await.ok()?;
    if metadata.len() > CODE_BYTES_MAX {
        return None;
    }
    tokio::fs::read_to_string(path).await.ok()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct GridQuery {
    /// Runs per page (at most 200).
    pub limit: Option<usize>,
    /// `next_before` of the previous page.
    pub before: Option<String>,
}

/// Runs × tasks: task states of a page of runs, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/dags/{dag_id}/grid",
    tag = "dags",
    params(("dag_id" = String, Path, description = "DAG id"), GridQuery),
    responses(
        (status = 200, description = "a page of the grid", body = Grid),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
        (status = 403, description = "no grant for this DAG", body = weft_api_types::ApiError),
        (status = 404, description = "no such DAG", body = weft_api_types::ApiError),
        (status = 422, description = "invalid cursor or limit", body = weft_api_types::ApiError),
    )
)]
pub async fn grid(
    State(state): State<AppState>,
    principal: Principal,
    Path(dag_id): Path<String>,
    Params(query): Params<GridQuery>,
) -> Result<Json<Grid>> {
    let limit = page_limit(query.limit, GRID_RUNS_DEFAULT)?.min(GRID_RUNS_MAX);
    let before = query
        .before
        .as_deref()
        .map(|text| views::parse_time("before", text))
        .transpose()?;
    let (_, view) = dag_for(&state, &principal, &dag_id).await?;
    let store = state.store().as_ref();
    let runs = store.runs_before(&dag_id, before, limit).await?;
    let instances =
        futures::future::try_join_all(runs.iter().map(|run| store.task_instances(&run.key)))
            .await?
            .into_iter()
            .map(weft_core::dag_run::shown_instances)
            .collect::<Vec<_>>();
    let position: std::collections::HashMap<&str, usize> = view
        .task_order
        .iter()
        .enumerate()
        .map(|(index, task_id)| (task_id.as_str(), index))
        .collect();
    let cells = instances
        .iter()
        .map(|records| {
            let mut row = vec![None; view.task_order.len()];
            for record in records {
                // Mapped tasks show their first instance's state.
                if let Some(&index) = position.get(record.key.task_id.as_str()) {
                    if row[index].is_none() {
                        row[index] = Some(crate::stream::task_state(record.state));
                    }
                }
            }
            row
        })
        .collect();
    let next_before = (runs.len() == limit)
        .then(|| runs.last().map(|run| views::time(run.logical_date)))
        .flatten();
    let runs = runs
        .iter()
        .map(|run| GridRun {
            run_id: run.key.run_id.to_string(),
            state: crate::stream::run_state(run.state),
            logical_date: views::time(run.logical_date),
            start_date: views::optional_time(run.started_at),
            end_date: views::optional_time(run.ended_at),
            run_type: views::run_type(run.run_type),
        })
        .collect();
    Ok(Json(Grid {
        tasks: view.task_order.clone(),
        runs,
        cells,
        next_before,
    }))
}

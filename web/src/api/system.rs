//! `/health`, `/metrics` and `/openapi.json`.

use crate::auth::Principal;
use crate::AppState;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use weft_api_types::Health;

/// 200 once the node serves requests.
#[utoipa::path(
    get,
    path = "/health",
    tag = "system",
    security(()),
    responses((status = 200, description = "ready", body = Health))
)]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".to_string(),
    })
}

/// Everything the engine records, in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "not signed in", body = weft_api_types::ApiError),
    )
)]
pub async fn metrics(State(state): State<AppState>, _principal: Principal) -> Response {
    let text = match &state.inner.metrics {
        Some(handle) => handle.render(),
        None => "# no metrics recorder is installed in this process\n".to_string(),
    };
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

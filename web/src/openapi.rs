//! The OpenAPI document, generated from the handlers' annotations: every route of the API is
//! registered through [`router_and_document`], so a route cannot exist without its entry.

use crate::api::{self, admin, cells, dags, runs, secrets, session, system};
use crate::AppState;
use axum::extract::DefaultBodyLimit;
use axum::{Json, Router};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "weft",
        description = "REST API of the weft workflow scheduler. Errors are JSON `{code, message}`.",
        version = "1"
    ),
    modifiers(&Security),
    security(("bearer" = []), ("session_cookie" = [])),
    tags(
        (name = "auth", description = "sign-in and sessions"),
        (name = "dags", description = "DAGs"),
        (name = "runs", description = "runs and task instances"),
        (name = "admin", description = "pools, workers, import errors, audit, users, tokens"),
        (name = "secrets", description = "Airflow Variables and Connections, sealed at rest"),
        (name = "stream", description = "the live WebSocket stream"),
        (name = "system", description = "health and metrics"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("a session JWT or an API token"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                weft_api_types::SESSION_COOKIE,
            ))),
        );
    }
}

/// The URL of the document.
pub const DOCUMENT_PATH: &str = "/openapi.json";

/// Every API route, and the document describing exactly those routes.
pub fn router_and_document() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::health))
        .routes(routes!(system::metrics))
        .routes(routes!(session::login))
        .routes(routes!(session::refresh))
        .routes(routes!(session::logout))
        .routes(routes!(session::me))
        .routes(routes!(dags::list_dags))
        .routes(routes!(dags::get_dag, dags::patch_dag))
        .routes(routes!(dags::dag_versions))
        .routes(routes!(dags::dag_code))
        .routes(routes!(dags::grid))
        .routes(routes!(runs::list_runs, runs::trigger_run))
        .routes(routes!(runs::get_run))
        .routes(routes!(runs::get_task_instance))
        .routes(routes!(runs::task_log))
        .routes(routes!(runs::clear))
        .routes(routes!(runs::mark))
        .routes(routes!(runs::backfill))
        .routes(routes!(admin::import_errors))
        .routes(routes!(admin::pools, admin::put_pool))
        .routes(routes!(admin::workers))
        .routes(routes!(cells::cells))
        .routes(routes!(admin::audit_log))
        .routes(routes!(admin::users, admin::create_user))
        .routes(routes!(admin::patch_user))
        .routes(routes!(admin::tokens, admin::create_token))
        .routes(routes!(admin::delete_token))
        .routes(routes!(secrets::list_variables, secrets::create_variable))
        .routes(routes!(
            secrets::get_variable,
            secrets::patch_variable,
            secrets::delete_variable
        ))
        .routes(routes!(
            secrets::list_connections,
            secrets::create_connection
        ))
        .routes(routes!(
            secrets::get_connection,
            secrets::patch_connection,
            secrets::delete_connection
        ))
        .routes(routes!(crate::stream::stream))
        .routes(routes!(openapi_json))
        .split_for_parts();
    let _ = DOCUMENT.set(document.clone());
    let router = router.layer(DefaultBodyLimit::max(api::REQUEST_BODY_BYTES_MAX));
    (router, document)
}

/// The document is the same for every router of the process: built from the same code.
static DOCUMENT: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "system",
    security(()),
    responses((status = 200, description = "the OpenAPI document", body = Object))
)]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(DOCUMENT.get().cloned().unwrap_or_else(ApiDoc::openapi))
}

/// The document alone (for tests and tools).
pub fn document() -> utoipa::openapi::OpenApi {
    router_and_document().1
}

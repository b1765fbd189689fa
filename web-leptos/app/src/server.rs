//! The axum side of the UI: renders every page on the server (with the hydration scripts),
//! sends visitors without a session to the sign-in page, and serves the bundle under `/pkg/`
//! compressed and with cache headers.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use leptos::config::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use weft_api_types::SESSION_COOKIE;

use crate::{shell, App, OUTPUT_NAME, STYLESHEET};

/// Says whether the value of the `weft_session` cookie is a valid, unexpired session.
pub type SessionCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What the UI router needs from the server that mounts it.
#[derive(Clone)]
pub struct UiOptions {
    /// The directory holding the built bundle (`weft_ui.js`, `weft_ui_bg.wasm`), as written
    /// by `weft-ui-build`.
    pub pkg_dir: PathBuf,
    /// Validates a session cookie. Without it any non-empty `weft_session` cookie lets a page
    /// render; the data on it still comes from the API, which checks the token itself.
    pub session_check: Option<SessionCheck>,
}

impl UiOptions {
    pub fn new(pkg_dir: impl Into<PathBuf>) -> UiOptions {
        UiOptions {
            pkg_dir: pkg_dir.into(),
            session_check: None,
        }
    }

    pub fn with_session_check(mut self, check: SessionCheck) -> UiOptions {
        self.session_check = Some(check);
        self
    }
}

impl std::fmt::Debug for UiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiOptions")
            .field("pkg_dir", &self.pkg_dir)
            .field("session_check", &self.session_check.is_some())
            .finish()
    }
}

/// Every UI page (server-rendered, hydrated) and the assets under `/pkg/`. Has no fallback, so
/// that the server can merge it with its own routes and fallback.
pub fn ui_router(options: UiOptions) -> Router {
    if !options.pkg_dir.join(format!("{OUTPUT_NAME}.js")).is_file() {
        tracing::warn!(
            pkg_dir = %options.pkg_dir.display(),
            "the UI bundle is missing: pages render but stay static; build it with `cargo run -p weft-ui-build`"
        );
    }
    let leptos_options = LeptosOptions::builder()
        .output_name(OUTPUT_NAME)
        .site_pkg_dir("pkg")
        .build();
    let routes = generate_route_list(App);
    let pages = Router::new()
        .leptos_routes(&leptos_options, routes, {
            let leptos_options = leptos_options.clone();
            move || shell(leptos_options.clone())
        })
        .with_state(leptos_options)
        .layer(middleware::from_fn_with_state(
            Arc::new(options.session_check.clone()),
            require_session,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));
    // The bundle's file names carry no hash, so browsers keep it but revalidate it (a 304
    // when unchanged, by Last-Modified).
    let assets = Router::new()
        .route("/pkg/weft.css", get(stylesheet))
        .nest_service("/pkg", ServeDir::new(&options.pkg_dir).precompressed_gzip())
        .layer(SetResponseHeaderLayer::if_not_present(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=0, must-revalidate"),
        ));
    pages.merge(assets).layer(CompressionLayer::new())
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/css; charset=utf-8"),
        )],
        STYLESHEET,
    )
}

/// Sends a visitor without a valid session to `/login?next=<where they were going>`.
async fn require_session(
    State(check): State<Arc<Option<SessionCheck>>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path == "/login" || has_session(request.headers(), check.as_ref().as_ref()) {
        return next.run(request).await;
    }
    let target = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let location = format!("/login?next={}", crate::api::encode_component(&target));
    match HeaderValue::from_str(&location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(LOCATION, value)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

fn has_session(headers: &HeaderMap, check: Option<&SessionCheck>) -> bool {
    let session = cookie(headers, SESSION_COOKIE);
    match (session, check) {
        (Some(token), Some(check)) => check(&token),
        (Some(token), None) => !token.is_empty(),
        // An expired access cookie is dropped by the browser; the sign-in page refreshes the
        // session from the refresh cookie when there is one.
        (None, _) => false,
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_session_cookie_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=1; weft_session=abc; b=2"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("abc"));
        assert!(has_session(&headers, None));
        let reject: SessionCheck = Arc::new(|token| token == "good");
        assert!(!has_session(&headers, Some(&reject)));
        assert!(!has_session(&HeaderMap::new(), None));
    }
}

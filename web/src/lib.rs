//! weft-web: the HTTP side of a node. The REST API under `/api/v1` with its OpenAPI document
//! (`/openapi.json`), sign-in (argon2 passwords, short-lived JWT sessions, API tokens) and
//! roles, the live WebSocket stream of state changes, `/metrics` and `/health`, and, with the
//! `ssr` feature, the Leptos UI merged in.
//!
//! The crate reads and writes only through the [`weft_actors::Engine`] handle and the store it
//! carries; it never names a concrete store backend.

pub mod api;
pub mod auth;
pub mod error;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod stream;
pub mod tls;
mod views;

pub use error::Error;

use axum::Router;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use weft_actors::Engine;
use weft_storage::Store;

/// Where `weft standalone` listens unless told otherwise.
pub const BIND_DEFAULT: &str = "127.0.0.1:8080";
/// Where the UI's built WASM/JS/CSS bundle is looked for unless told otherwise.
pub const PKG_DIR_DEFAULT: &str = "target/site/pkg";

/// Settings of the web side; the runtime fills it from the `[web]` section of `weft.toml`.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Key that signs session JWTs; at least 32 bytes. Sessions outlive a restart only if it
    /// does (the runtime keeps it in the data directory).
    pub session_secret: Vec<u8>,
    /// Lifetime of an access JWT (the `weft_session` cookie).
    pub session_ttl_s: u64,
    /// Lifetime of a refresh token (the `weft_refresh` cookie).
    pub refresh_ttl_s: u64,
    /// Sign-in attempts one client address may make per minute.
    pub login_attempts_per_minute: u32,
    /// Failed sign-ins one username may have per minute, from any address; past it, sign-in
    /// as that user waits for the next minute (a guesser spread over many addresses is
    /// stopped at the cost of locking the user out for that minute).
    pub login_failures_per_user_per_minute: u32,
    /// API requests one user may make per minute.
    pub api_requests_per_minute: u32,
    /// Stream events kept for replay to clients that reconnect.
    pub stream_replay_events_max: usize,
    /// The UI's built bundle.
    pub pkg_dir: PathBuf,
    /// The server speaks HTTPS: responses carry `Strict-Transport-Security` and cookies are
    /// `Secure`.
    pub tls: bool,
}

impl WebConfig {
    pub fn new(session_secret: Vec<u8>) -> WebConfig {
        WebConfig {
            session_secret,
            session_ttl_s: 15 * 60,
            refresh_ttl_s: 7 * 24 * 3600,
            login_attempts_per_minute: 10,
            login_failures_per_user_per_minute: 10,
            api_requests_per_minute: 6_000,
            stream_replay_events_max: stream::REPLAY_EVENTS_MAX_DEFAULT,
            pkg_dir: PathBuf::from(PKG_DIR_DEFAULT),
            tls: false,
        }
    }
}

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    config: WebConfig,
    keys: auth::Keys,
    login_limiter: limits::RateLimiter,
    login_user_limiter: limits::RateLimiter,
    sessions: auth::Sessions,
    api_limiter: limits::RateLimiter,
    hub: stream::Hub,
    views: views::SpecCache,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("engine", &self.inner.engine)
            .finish()
    }
}

impl AppState {
    /// Starts the stream hub on `engine`'s events. `metrics` renders `/metrics`; see
    /// [`metrics::install_recorder`].
    pub fn new(
        engine: Engine,
        config: WebConfig,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> Result<AppState, auth::AuthError> {
        let keys = auth::Keys::new(&config.session_secret)?;
        let hub = stream::Hub::start(&engine, config.stream_replay_events_max);
        Ok(AppState {
            inner: Arc::new(Inner {
                login_limiter: limits::RateLimiter::new(config.login_attempts_per_minute),
                login_user_limiter: limits::RateLimiter::new(
                    config.login_failures_per_user_per_minute,
                ),
                api_limiter: limits::RateLimiter::new(config.api_requests_per_minute),
                sessions: auth::Sessions::default(),
                engine,
                keys,
                hub,
                views: views::SpecCache::default(),
                metrics,
                config,
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.inner.engine.store()
    }

    pub fn config(&self) -> &WebConfig {
        &self.inner.config
    }

    pub(crate) fn keys(&self) -> &auth::Keys {
        &self.inner.keys
    }

    /// Session generations: revoke a user's sessions, watch for changes.
    pub fn sessions(&self) -> &auth::Sessions {
        &self.inner.sessions
    }

    pub(crate) fn hub(&self) -> &stream::Hub {
        &self.inner.hub
    }

    pub(crate) fn views(&self) -> &views::SpecCache {
        &self.inner.views
    }
}

/// The API, `/health`, `/metrics` and `/openapi.json`, without the UI.
pub fn api_router(state: AppState) -> Router {
    let tls = state.config().tls;
    finish(api_routes(state), tls)
}

/// Everything a node serves: the API and, with the `ssr` feature, the UI pages and bundle.
pub fn router(state: AppState) -> Router {
    let tls = state.config().tls;
    let ui = ui_router(&state);
    finish(api_routes(state).merge(ui), tls)
}

fn api_routes(state: AppState) -> Router {
    let (router, _) = openapi::router_and_document();
    router
        .layer(axum::middleware::from_fn(http::json_errors))
        .with_state(state)
}

/// What every route shares: JSON answers for unknown paths and wrong methods, request limits
/// and security headers. The fallback is set before the layers so that they wrap it too.
fn finish(router: Router, tls: bool) -> Router {
    router
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(axum::middleware::from_fn(http::request_limits))
        .layer(axum::middleware::from_fn_with_state(
            tls,
            http::security_headers,
        ))
}

/// The UI's pages and `/pkg/` assets: the Leptos UI with the `ssr` feature.
#[cfg(feature = "ssr")]
fn ui_router(state: &AppState) -> Router {
    let keys = state.inner.keys.clone();
    let check: weft_ui::SessionCheck = Arc::new(move |token: &str| keys.check_session(token));
    let options = weft_ui::UiOptions::new(state.config().pkg_dir.clone()).with_session_check(check);
    weft_ui::ui_router(options)
}

/// Without the `ssr` feature there is no UI: `/` says where the API is.
#[cfg(not(feature = "ssr"))]
fn ui_router(_state: &AppState) -> Router {
    use axum::response::Html;
    Router::new().route(
        "/",
        axum::routing::get(|| async {
            Html(
                "<!doctype html><title>weft</title><p>This build of weft serves the API only: \
                 see <a href=\"/openapi.json\">/openapi.json</a>.</p>",
            )
        }),
    )
}

/// Serves `router` on `listener` until `shutdown` completes. Handlers see the client's
/// address (for audit entries and sign-in rate limits).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

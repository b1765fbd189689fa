//! What every response of a node shares: the security headers (content security policy,
//! framing, sniffing, referrer, and HSTS under TLS), limits on the request line and headers,
//! and JSON `{code, message}` bodies for what the router refuses by itself (an unknown route, a
//! wrong method, an extractor's plain-text rejection).

use crate::api::REQUEST_BODY_BYTES_MAX;
use crate::error::Error;
use axum::extract::{Request, State};
use axum::http::header::{
    CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Longest request URI (path and query) accepted; longer ones get 414.
pub const URI_BYTES_MAX: usize = 8 * 1024;
/// Most bytes of request headers (names and values) accepted; more get 431. The HTTP server
/// itself drops a connection whose header block exceeds its read buffer (about 400 KiB)
/// before any handler sees it, without a JSON body.
pub const HEADERS_BYTES_MAX: usize = 64 * 1024;
/// Most bytes of a plain-text error body turned into a JSON message.
const ERROR_TEXT_BYTES_MAX: usize = 4 * 1024;
/// How long browsers keep to HTTPS once they saw `Strict-Transport-Security` (one year).
pub const HSTS_MAX_AGE_S: u64 = 365 * 24 * 3600;

/// The SHA-256 (base64) of each inline script the UI's pages carry, all fixed text: Leptos's
/// hydration script (imports the bundle and hydrates the page), and the two chunks its
/// server rendering writes around a page whose data is not rendered on the server (empty
/// lists of resolved resources and errors, and of incomplete chunks; the UI fetches its data
/// from the API in the browser, so they stay empty). The CSP allows exactly these scripts
/// inline; `runtime/tests/web_tls.rs` checks that every inline script of served pages has a
/// hash listed here, so a Leptos upgrade or a server-rendered resource that changes them fails
/// there.
pub const INLINE_SCRIPTS_SHA256: [&str; 3] = [
    // hydration_script.js("", "pkg", "weft_ui", "weft_ui_bg", false)
    "Pw9f7eSWw88RgLHOAsNHyIl4M3ApL110WQ4q8h0Ngc0=",
    // __RESOLVED_RESOURCES=[];__SERIALIZED_ERRORS=[];__PENDING_RESOURCES=[];__RESOURCE_RESOLVERS=[];
    "2e+rGxtst+bbxdLf6Dp32aL0uyPdikvr0awq53hVU58=",
    // __INCOMPLETE_CHUNKS=[];
    "PEoA+SZ6ZbFCusLsUEMftpXvTp6Abhw9kvgQnCC8l3U=",
];

/// The policy of HTML pages. Scripts come from this origin only, plus the inline scripts above
/// by their hashes; `'wasm-unsafe-eval'` lets the page compile the UI's WebAssembly (it allows no
/// `eval` of JavaScript). Stylesheets come from this origin; inline `style` attributes are
/// allowed because the UI sizes bars (Gantt, pool slots) with them, and attributes cannot run
/// script. `connect-src 'self'` covers the API and the same-origin WebSocket.
pub fn page_policy() -> String {
    let hashes: Vec<String> = INLINE_SCRIPTS_SHA256
        .iter()
        .map(|hash| format!("'sha256-{hash}'"))
        .collect();
    format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval' {}; style-src 'self'; \
         style-src-attr 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        hashes.join(" ")
    )
}

/// The policy of everything that is not a page (JSON, text, assets): nothing may load from it
/// if a browser is ever made to render it.
pub const API_POLICY: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; \
                              form-action 'none'";

/// Adds the security headers to every response; HSTS when `tls` (the server speaks HTTPS).
pub async fn security_headers(State(tls): State<bool>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let is_page = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"));
    let policy = if is_page {
        static PAGE_POLICY: std::sync::OnceLock<HeaderValue> = std::sync::OnceLock::new();
        PAGE_POLICY
            .get_or_init(|| HeaderValue::from_str(&page_policy()).expect("the policy is ASCII"))
            .clone()
    } else {
        HeaderValue::from_static(API_POLICY)
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, policy);
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if tls {
        let value = format!("max-age={HSTS_MAX_AGE_S}");
        headers.insert(
            STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_str(&value).expect("the value is ASCII"),
        );
    }
    response
}

/// Refuses over-long URIs (414), header blocks (431) and declared bodies (413) before any
/// handler reads them.
pub async fn request_limits(request: Request, next: Next) -> Response {
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |path| path.as_str().len());
    if uri_bytes > URI_BYTES_MAX {
        return Error::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the URI is {uri_bytes} bytes, over the limit of {URI_BYTES_MAX}: send less in the query"),
        )
        .into_response();
    }
    // A declared body over the limit is refused before a byte of it is read; a body of
    // undeclared length is cut by the body extractors at the same limit.
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(declared) = declared.filter(|bytes| *bytes > REQUEST_BODY_BYTES_MAX as u64) {
        return Error::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the request body is {declared} bytes, over the limit of \
                 {REQUEST_BODY_BYTES_MAX}"
            ),
        )
        .into_response();
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > HEADERS_BYTES_MAX {
        return Error::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request headers are {header_bytes} bytes, over the limit of \
                 {HEADERS_BYTES_MAX}: drop unneeded cookies or headers"
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Turns an error response that is neither JSON nor a page (an extractor's plain-text
/// rejection, an empty 405) into JSON `{code, message}` with the same status.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/json") || content_type.starts_with("text/html") {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, ERROR_TEXT_BYTES_MAX)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_lowercase()
    } else {
        text
    };
    let mut converted = Error::new(status, status_code_name(status), message).into_response();
    // Keep what the original said beyond its body (`Allow` on a 405, for one).
    for (name, value) in parts.headers.iter() {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH {
            converted.headers_mut().insert(name.clone(), value.clone());
        }
    }
    converted
}

/// The stable code of an error response that carries no code of its own.
fn status_code_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        status if status.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// The answer for a path no route serves.
pub async fn not_found(uri: Uri) -> Error {
    Error::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "nothing is served at `{}`: see /openapi.json for the API's routes",
            uri.path()
        ),
    )
}

/// The answer for a known path asked with a method it does not take.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Error {
    Error::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "`{}` does not take {method}: see the `Allow` header or /openapi.json",
            uri.path()
        ),
    )
}

//! The REST handlers under `/api/v1`, and what they share: a JSON body extractor whose
//! errors are JSON too, and the audit entry every mutating call writes.

pub mod admin;
pub mod cells;
pub mod dags;
pub mod runs;
pub mod secrets;
pub mod session;
pub mod system;

use crate::auth::{ClientAddr, Principal};
use crate::error::{Error, Result};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

/// Size limit of a request body.
pub const REQUEST_BODY_BYTES_MAX: usize = 1024 * 1024;
/// Largest page a list endpoint returns.
pub const PAGE_LIMIT_MAX: usize = 500;

/// A JSON object request body; a malformed one is a 400/413/415/422 JSON error that names the
/// problem. Every body the API takes is an object: an array (which serde would read into a
/// struct field by field) or any other JSON value is refused.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Body<T>> {
        if !is_json(request.headers()) {
            return Err(Error::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(bytes_error)?;
        require_object(&bytes)?;
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(body_error(rejection)),
        }
    }
}

/// Whether the request says its body is JSON (`application/json` or `application/*+json`).
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Refuses a body that is not a JSON object, before serde reads it.
pub fn require_object(bytes: &[u8]) -> Result<()> {
    let first = bytes.iter().find(|byte| !byte.is_ascii_whitespace());
    if first == Some(&b'{') {
        return Ok(());
    }
    Err(Error::bad_request(
        "invalid_body",
        "the request body must be a JSON object (`{...}`)",
    ))
}

/// The error for a body that could not be read: 413 when it is over the size limit.
pub fn bytes_error(rejection: BytesRejection) -> Error {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return Error::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is over the limit of {REQUEST_BODY_BYTES_MAX} bytes"),
        );
    }
    Error::bad_request(
        "invalid_body",
        format!("the request body cannot be read: {}", rejection.body_text()),
    )
}

fn body_error(rejection: JsonRejection) -> Error {
    match rejection {
        JsonRejection::JsonDataError(error) => Error::unprocessable(
            "invalid_body",
            format!("the request body does not fit: {}", error.body_text()),
        ),
        JsonRejection::JsonSyntaxError(error) => Error::bad_request(
            "invalid_json",
            format!("the request body is not valid JSON: {}", error.body_text()),
        ),
        JsonRejection::MissingJsonContentType(_) => Error::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        other => Error::bad_request(
            "invalid_body",
            format!("the request body cannot be read ({})", other.body_text()),
        ),
    }
}

/// Records who did what to what, when and from where.
pub async fn audit(
    state: &AppState,
    who: &str,
    from: &ClientAddr,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<()> {
    let detail = serde_json::json!({ "from": from.0, "detail": detail });
    let entry = weft_storage::AuditRow {
        id: 0,
        at: chrono::Utc::now(),
        actor: who.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        detail: detail.to_string(),
    };
    state
        .store()
        .write(vec![weft_storage::Write::Audit(entry)])
        .await?;
    Ok(())
}

/// Audit for a signed-in caller.
pub async fn audit_by(
    state: &AppState,
    principal: &Principal,
    from: &ClientAddr,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<()> {
    audit(state, &principal.username, from, action, target, detail).await
}

/// A `limit` query parameter, defaulted and bounded.
pub fn page_limit(limit: Option<usize>, default: usize) -> Result<usize> {
    match limit {
        None => Ok(default),
        Some(0) => Err(Error::unprocessable(
            "invalid_limit",
            "`limit` must be at least 1",
        )),
        Some(limit) if limit > PAGE_LIMIT_MAX => Err(Error::unprocessable(
            "invalid_limit",
            format!("`limit` is {limit}, over the maximum of {PAGE_LIMIT_MAX}: page with `offset`"),
        )),
        Some(limit) => Ok(limit),
    }
}

/// Query parameters; malformed ones are a 400 JSON error that names the problem.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Params<T>> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Params(value)),
            Err(rejection) => Err(Error::bad_request(
                "invalid_query",
                format!("the query string does not fit: {}", rejection.body_text()),
            )),
        }
    }
}

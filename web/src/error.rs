//! The API's error type: every failure answers JSON `{"code", "message"}` with a stable
//! snake_case code and a message that says what was wrong and what to do.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use weft_api_types::ApiError;

/// A failed request, with the HTTP status it answers.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Error {
        Error {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Error {
        Error::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Error {
        Error::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(what: impl std::fmt::Display) -> Error {
        Error::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} does not exist: check the name"),
        )
    }

    pub fn unauthenticated(message: impl Into<String>) -> Error {
        Error::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn conflict(message: impl Into<String>) -> Error {
        Error::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn body(&self) -> ApiError {
        ApiError {
            code: self.code.to_string(),
            message: self.message.clone(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        (self.status, Json(self.body())).into_response()
    }
}

impl From<weft_storage::Error> for Error {
    fn from(error: weft_storage::Error) -> Error {
        use weft_storage::Error as Store;
        match &error {
            Store::NotFound { what } => Error::not_found(what),
            Store::Conflict { .. } => Error::conflict(format!(
                "{error}: the data changed meanwhile; reload and try again"
            )),
            Store::TooLarge { .. } | Store::TooMany { .. } => Error::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                error.to_string(),
            ),
            Store::Unavailable(_) => Error::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("{error}; retry shortly"),
            ),
            Store::Fenced { .. } => Error::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "owner_moved",
                format!("{error}; the run's shard moved to another cell: retry shortly"),
            ),
            Store::Corrupt(_) => Error::internal(error.to_string()),
        }
    }
}

impl From<weft_actors::EngineError> for Error {
    fn from(error: weft_actors::EngineError) -> Error {
        use weft_actors::EngineError as Engine;
        match error {
            Engine::UnknownDag(dag_id) => Error::not_found(format!("dag `{dag_id}`")),
            Engine::UnknownRun(run) => Error::not_found(format!("run `{run}`")),
            Engine::InvalidDag(error) => Error::unprocessable("invalid_dag", error.to_string()),
            Engine::Rejected(reason) => Error::new(StatusCode::CONFLICT, "rejected", reason),
            Engine::Store(error) => error.into(),
            Engine::Unavailable(reason) => Error::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "engine_unavailable",
                format!("the engine cannot take the request now ({reason}); retry shortly"),
            ),
            error @ Engine::NotOwner { .. } => Error::new(
                StatusCode::MISDIRECTED_REQUEST,
                "not_owner",
                error.to_string(),
            ),
        }
    }
}

//! Errors as the API answers them: the CLI's `--json` error document
//! (`{"error": {"kind", "exit_code", "message"}}`, docs/json.md) with the
//! HTTP status that matches the exit code.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use vmrepo_repo::ErrorKind;

/// An error answer.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub exit_code: u8,
    pub message: String,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        exit_code: u8,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError { status, kind, exit_code, message: message.into() }
    }

    /// A malformed request (exit code 6's `invalid-input`).
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid-input", 6, message)
    }

    /// Nothing here (exit code 4's `not-found`).
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", 4, message)
    }

    /// A failure of the server itself (exit code 7's `io`).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io", 7, message)
    }
}

/// The HTTP status for an error of `kind`.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists => StatusCode::CONFLICT,
        ErrorKind::InvalidInput | ErrorKind::Ambiguous => StatusCode::BAD_REQUEST,
        ErrorKind::BadImage | ErrorKind::NeedsReferenced => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::Locked | ErrorKind::Interrupted => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<vmrepo_repo::Error> for ApiError {
    fn from(e: vmrepo_repo::Error) -> ApiError {
        let (code, name) = e.kind().code_and_name();
        ApiError::new(status_of(e.kind()), name, code, e.to_string().replace('\n', " "))
    }
}

impl From<vmrepo_name::NameError> for ApiError {
    fn from(e: vmrepo_name::NameError) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "kind": self.kind, "exit_code": self.exit_code, "message": self.message }
        });
        let mut r = (self.status, axum::Json(body)).into_response();
        r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        r
    }
}

/// The answer to a path no route knows.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such page")
}

//! The one place that decides how a failed request looks on the wire.
//!
//! Handlers return [`ApiError`] with `?`; this module maps each case to its
//! status code and JSON body, and logs server-side failures with their detail
//! (which the client does not get).
//!
//! | case | status | body |
//! | --- | --- | --- |
//! | malformed request | 400 | `{"error":"bad_request","message":…}` |
//! | a write without a configured API key, or with an unknown one | 401 | `{"error":"unauthorized","message":…}` |
//! | a body over [`MAX_REQUEST_BYTES`](crate::api::MAX_REQUEST_BYTES) | 413 | `{"error":"payload_too_large","message":…}` |
//! | a field breaks a rule | 422 | `{"error":"validation_failed","field":…,"message":…}` |
//! | no such content | 404 | `{"error":"not_found"}` |
//! | database unreachable or busy | 503 | `{"error":"unavailable","message":…}` |
//! | anything else | 500 | `{"error":"internal","message":…}` |

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::error;

use herald_notifier::KeyRefusal;

use crate::api::MAX_REQUEST_BYTES;
use crate::model::InvalidContent;
use crate::page::BadPageRequest;
use crate::store::StoreError;

/// Every way a content API request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: not JSON, not an object, a bad cursor.
    #[error("{0}")]
    BadRequest(String),
    /// A write came without one of the configured API keys.
    #[error("{0}")]
    Unauthorized(#[from] KeyRefusal),
    /// The body is larger than [`MAX_REQUEST_BYTES`].
    #[error("the request body is larger than {MAX_REQUEST_BYTES} bytes")]
    PayloadTooLarge,
    /// One field breaks a rule.
    #[error("{field}: {message}")]
    Validation {
        /// The field at fault (`title`, `body`, `limit`).
        field: &'static str,
        /// What is wrong, for a person to read.
        message: String,
    },
    /// No content has that id.
    #[error("not found")]
    NotFound,
    /// The database failed; nothing was changed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl From<InvalidContent> for ApiError {
    fn from(e: InvalidContent) -> Self {
        match e {
            InvalidContent::NotAnObject => ApiError::BadRequest(e.to_string()),
            InvalidContent::Field { field, message } => ApiError::Validation { field, message },
        }
    }
}

impl From<BadPageRequest> for ApiError {
    fn from(e: BadPageRequest) -> Self {
        match e {
            BadPageRequest::Limit(_) => ApiError::Validation {
                field: "limit",
                message: e.to_string(),
            },
            BadPageRequest::Cursor(_) => ApiError::BadRequest(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::BadRequest(message) => (
                StatusCode::BAD_REQUEST,
                json!({"error": "bad_request", "message": message}),
            ),
            ApiError::Unauthorized(refusal) => (
                StatusCode::UNAUTHORIZED,
                json!({"error": KeyRefusal::CODE, "message": refusal.to_string()}),
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "payload_too_large", "message": format!("the request body is larger than {MAX_REQUEST_BYTES} bytes")}),
            ),
            ApiError::Validation { field, message } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": "validation_failed", "field": field, "message": message}),
            ),
            ApiError::NotFound => (StatusCode::NOT_FOUND, json!({"error": "not_found"})),
            ApiError::Store(e) if e.is_unavailable() => {
                error!(error = %e, "database unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "unavailable", "message": "the database is unavailable; nothing was changed, try again"}),
                )
            }
            ApiError::Store(e) => {
                error!(error = %e, "database failure");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": "internal", "message": "the database failed; nothing was changed"}),
                )
            }
        };
        (status, Json(body)).into_response()
    }
}

//! The one place that decides how an HTTP-level error looks to a client.
//!
//! Every handler error becomes an [`ApiError`]; its `IntoResponse` picks the
//! status code and writes the same JSON shape everywhere:
//! `{"error": "<stable_code>", "message": "<human text>"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered over plain HTTP (WebSocket errors after the upgrade use close codes).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A plain HTTP request reached a WebSocket endpoint.
    #[error("this endpoint speaks WebSocket only: {0}")]
    UpgradeRequired(String),
    /// The request used a method the endpoint does not take.
    #[error("method not allowed: {0}")]
    MethodNotAllowed(String),
}

/// The JSON body of every error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// A stable, machine-readable code.
    pub error: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// The stable code clients can match on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::UpgradeRequired(_) => "websocket_upgrade_required",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::UpgradeRequired(_) => StatusCode::UPGRADE_REQUIRED,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code(),
            message: self.to_string(),
        };
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(self, ApiError::UpgradeRequired(_)) {
            response.headers_mut().insert(
                axum::http::header::UPGRADE,
                axum::http::HeaderValue::from_static("websocket"),
            );
        }
        response
    }
}

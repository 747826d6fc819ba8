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
    /// No credentials, or credentials this gateway does not accept.
    #[error("{0}")]
    Unauthorized(String),
    /// The credentials are fine but do not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// The body is not what the endpoint takes (not JSON, missing fields).
    #[error("{0}")]
    BadRequest(String),
    /// A channel name breaks the grammar.
    #[error("{0}")]
    InvalidChannel(String),
    /// A field is out of range.
    #[error("{0}")]
    Unprocessable(String),
    /// The body is larger than allowed.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The instance is at its connection limit.
    #[error("this instance is at its connection limit")]
    TooManyConnections,
    /// The client's token has expired.
    #[error("token expired")]
    TokenExpired,
    /// The bus could not take the request now; retry later.
    #[error("the bus is unavailable: {0}")]
    BrokerUnavailable(String),
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
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidChannel(_) => "invalid_channel",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::BrokerUnavailable(_) => "broker_unavailable",
            ApiError::TooManyConnections => "too_many_connections",
            ApiError::TokenExpired => "token_expired",
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UpgradeRequired(_) => StatusCode::UPGRADE_REQUIRED,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidChannel(_) | ApiError::Unprocessable(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BrokerUnavailable(_) | ApiError::TooManyConnections => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::TokenExpired => StatusCode::UNAUTHORIZED,
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::PayloadTooLarge(rejection.body_text());
        }
        ApiError::BadRequest(rejection.body_text())
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

//! The function's HTTP trigger: `POST /invoke` with one domain event.
//!
//! This is how a FaaS platform (or a person with curl) calls the function
//! directly, without the event log: the event in the body is handled, its
//! notifications are published, and the response lists them.
//!
//! Anyone who can call it can publish on `events` and `news:content`, so the
//! route requires an API key ([`ApiKeys`], `Authorization: Bearer KEY`); the
//! runtime refuses to serve it without one unless told explicitly that the
//! route may be open ([`NotifierConfig::open_invoke`](crate::NotifierConfig::open_invoke)).
//! A body is at most [`MAX_INVOKE_BYTES`]; the event's own fields are bounded
//! by the handler ([`MAX_TITLE_CHARS`](crate::handler::MAX_TITLE_CHARS)).
//!
//! | outcome | status | body |
//! | --- | --- | --- |
//! | handled and published | 200 | `{"notifications":[{"channel","payload"}…]}` |
//! | body is not JSON | 400 | `{"error":"bad_request","message":…}` |
//! | no key, or an unknown one | 401 | `{"error":"unauthorized","message":…}` |
//! | body over [`MAX_INVOKE_BYTES`] | 413 | `{"error":"payload_too_large","message":…}` |
//! | event rejected (a field missing, empty or too long) | 422 | `{"error":"rejected","reason":…}` |
//! | broker unavailable | 503 | `{"error":"unavailable","message":…}` |

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use herald_broker::{Broker, BrokerError};
use serde::Serialize;
use serde_json::json;

use crate::api_key::{ApiKeys, KeyRefusal};
use crate::deliver::{Delivered, RawSink, deliver_text};
use crate::handler::{Notification, Rejection};

/// The body of a successful invocation.
#[derive(Debug, Serialize)]
pub struct InvokeResponse {
    /// Every notification the event caused, as published, in order.
    pub notifications: Vec<Notification>,
}

/// Why an invocation failed; decides the status code and body in one place.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The body is not JSON at all.
    #[error("{0}")]
    BadRequest(String),
    /// The caller presented no key, or an unknown one.
    #[error("{0}")]
    Unauthorized(#[from] KeyRefusal),
    /// The body is larger than [`MAX_INVOKE_BYTES`].
    #[error("the body is larger than {MAX_INVOKE_BYTES} bytes")]
    PayloadTooLarge,
    /// The event cannot be handled.
    #[error("{0}")]
    Rejected(Rejection),
    /// Publishing failed; the caller may retry.
    #[error("publishing failed: {0}")]
    Unavailable(#[from] BrokerError),
}

impl IntoResponse for InvokeError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            InvokeError::BadRequest(message) => (
                StatusCode::BAD_REQUEST,
                json!({"error": "bad_request", "message": message}),
            ),
            InvokeError::Unauthorized(refusal) => (
                StatusCode::UNAUTHORIZED,
                json!({"error": KeyRefusal::CODE, "message": refusal.to_string()}),
            ),
            InvokeError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "payload_too_large", "message": self.to_string()}),
            ),
            InvokeError::Rejected(rejection) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": "rejected", "reason": rejection.to_string()}),
            ),
            InvokeError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "unavailable", "message": self.to_string()}),
            ),
        };
        (status, Json(body)).into_response()
    }
}

/// The largest `POST /invoke` body, in bytes.
///
/// The biggest event the content service writes (a 10,000-character body and a
/// 200-character title, every character escaped) is about 62 KB, so this never
/// refuses a real event while keeping a caller from making the notifier buffer
/// axum's default of 2 MB.
pub const MAX_INVOKE_BYTES: usize = 64 * 1024;

/// What the invoke handler shares.
#[derive(Clone)]
struct Invoke {
    /// Where notifications are published.
    broker: Arc<dyn Broker>,
    /// Who may call; open when empty.
    keys: ApiKeys,
}

/// The routes of the function: `POST /invoke`, publishing through `broker`, for callers
/// presenting one of `keys` (everyone, if `keys` [is open](ApiKeys::is_open)).
pub fn router(broker: Arc<dyn Broker>, keys: ApiKeys) -> Router {
    Router::new()
        .route("/invoke", post(invoke))
        .layer(DefaultBodyLimit::max(MAX_INVOKE_BYTES))
        .with_state(Invoke { broker, keys })
}

async fn invoke(
    State(Invoke { broker, keys }): State<Invoke>,
    request: Request,
) -> Result<Json<InvokeResponse>, InvokeError> {
    // The key before the body: an unauthorized caller does not get the body buffered.
    keys.authorize(request.headers())?;
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|rejection: BytesRejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                InvokeError::PayloadTooLarge
            } else {
                InvokeError::BadRequest(rejection.body_text())
            }
        })?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| InvokeError::BadRequest("body is not UTF-8".to_owned()))?;
    match deliver_text(&*broker, text, RawSink::Broker).await? {
        Delivered::Published(notifications) => Ok(Json(InvokeResponse { notifications })),
        Delivered::Rejected(Rejection::NotJson(why)) => {
            Err(InvokeError::BadRequest(format!("body is not JSON: {why}")))
        }
        Delivered::Rejected(rejection) => Err(InvokeError::Rejected(rejection)),
    }
}

//! The function's HTTP trigger: `POST /invoke` with one domain event.
//!
//! This is how a FaaS platform (or a person with curl) calls the function
//! directly, without the event log: the event in the body is handled, its
//! notifications are published, and the response lists them.
//!
//! | outcome | status | body |
//! | --- | --- | --- |
//! | handled and published | 200 | `{"notifications":[{"channel","payload"}…]}` |
//! | body is not JSON | 400 | `{"error":"bad_request","message":…}` |
//! | event rejected | 422 | `{"error":"rejected","reason":…}` |
//! | broker unavailable | 503 | `{"error":"unavailable","message":…}` |

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use herald_broker::{Broker, BrokerError};
use serde::Serialize;
use serde_json::json;

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

/// The routes of the function: `POST /invoke`, publishing through `broker`.
pub fn router(broker: Arc<dyn Broker>) -> Router {
    Router::new()
        .route("/invoke", post(invoke))
        .with_state(broker)
}

async fn invoke(
    State(broker): State<Arc<dyn Broker>>,
    body: Bytes,
) -> Result<Json<InvokeResponse>, InvokeError> {
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

//! `POST /api/publish`: publishing over HTTP, for services that do not speak Redis.
//!
//! Authorized by an API key as a Bearer token. The message goes through the
//! broker's [`publish_json`](herald_broker::Broker::publish_json): on a channel
//! with history it is appended and published live in one atomic step, and the
//! answer carries its position. An idempotency key makes a retry safe: within
//! the window, the same key returns the first result and publishes nothing.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use herald_broker::PublishRequest;
use herald_protocol::ChannelName;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// The longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// The most messages one batch may carry.
pub const MAX_BATCH: usize = 1000;

/// One message to publish.
#[derive(Debug, Deserialize)]
pub struct PublishBody {
    /// The channel.
    pub channel: String,
    /// Any JSON value; delivered to clients untouched.
    pub data: Box<RawValue>,
    /// Makes a retry within the window return the first result instead of publishing again.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// A batch of messages.
#[derive(Debug, Deserialize)]
pub struct BatchBody {
    /// Published in this order.
    pub messages: Vec<PublishBody>,
}

/// What a publish did.
#[derive(Debug, Serialize)]
pub struct PublishResult {
    /// The channel.
    pub channel: String,
    /// The message's offset; `null` on a channel without history.
    pub offset: Option<u64>,
    /// The history's epoch; `null` on a channel without history.
    pub epoch: Option<String>,
    /// Whether this was a retry answered with the first result.
    pub duplicate: bool,
}

/// One entry of a batch answer: a result or an error.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum BatchEntry {
    /// Published.
    Published(PublishResult),
    /// Refused; the other messages were still published.
    Failed(ErrorBody),
}

/// The answer to a batch.
#[derive(Debug, Serialize)]
pub struct BatchResult {
    /// One entry per message, in order.
    pub results: Vec<BatchEntry>,
}

/// `POST /api/publish`.
pub async fn publish(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<PublishBody>, JsonRejection>,
) -> Result<Json<PublishResult>, ApiError> {
    authorize(&state, &headers)?;
    let Json(body) = body?;
    Ok(Json(publish_one(&state, body).await?))
}

/// `POST /api/publish/batch`.
pub async fn publish_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<BatchBody>, JsonRejection>,
) -> Result<Json<BatchResult>, ApiError> {
    authorize(&state, &headers)?;
    let Json(body) = body?;
    if body.messages.len() > MAX_BATCH {
        return Err(ApiError::Unprocessable(format!(
            "a batch holds at most {MAX_BATCH} messages"
        )));
    }
    let mut results = Vec::with_capacity(body.messages.len());
    for message in body.messages {
        results.push(match publish_one(&state, message).await {
            Ok(result) => BatchEntry::Published(result),
            Err(error) => BatchEntry::Failed(ErrorBody {
                error: error.code(),
                message: error.to_string(),
            }),
        });
    }
    Ok(Json(BatchResult { results }))
}

async fn publish_one(state: &AppState, body: PublishBody) -> Result<PublishResult, ApiError> {
    let channel =
        ChannelName::new(&body.channel).map_err(|e| ApiError::InvalidChannel(e.to_string()))?;
    if let Some(key) = &body.idempotency_key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN)
    {
        return Err(ApiError::Unprocessable(format!(
            "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes"
        )));
    }
    let request = PublishRequest {
        channel: &channel,
        data: body.data.get().as_bytes(),
        history: state.config.channels.history(&channel),
        idempotency: body
            .idempotency_key
            .as_deref()
            .map(|key| (key, state.config.idempotency_window)),
    };
    let published = state.hub.broker().publish_json(request).await;
    state.metrics.published(published.is_ok());
    let published = published.map_err(|e| ApiError::BrokerUnavailable(e.to_string()))?;
    Ok(PublishResult {
        channel: channel.to_string(),
        offset: published.position.as_ref().map(|p| p.offset),
        epoch: published.position.map(|p| p.epoch),
        duplicate: published.duplicate,
    })
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.config.api_keys.is_empty() {
        return Err(ApiError::Unauthorized(
            "publishing over HTTP is off: start the gateway with --api-key".to_owned(),
        ));
    }
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::Unauthorized("send the API key as Authorization: Bearer KEY".to_owned())
        })?;
    if state
        .config
        .api_keys
        .iter()
        .any(|key| constant_time_eq(key.as_bytes(), presented.trim().as_bytes()))
    {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("unknown API key".to_owned()))
    }
}

/// Compares without an early exit, so response timing does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret!"));
    }
}

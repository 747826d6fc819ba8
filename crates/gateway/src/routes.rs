//! The HTTP surface of a gateway: which path goes to which handler.
//!
//! Built by a plain function from explicit state, so tests can drive the
//! router without a socket and the binary can merge other services' routers
//! into the same origin.

use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use herald_broker::BrokerStatus;
use serde_json::json;
use std::sync::atomic::Ordering;

use crate::publish;
use crate::state::AppState;
use crate::transport::{sse, websocket};

/// The gateway's routes, bound to `state`.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_publish_bytes;
    Router::new()
        // `any`, so a wrong method gets our JSON error rather than an empty 405.
        .route("/ws/notifications", any(websocket::tutorial_notifications))
        .route("/ws", any(websocket::herald))
        .route("/sse", get(sse::sse))
        .route("/api/publish", post(publish::publish))
        .route("/api/publish/batch", post(publish::publish_batch))
        .layer(DefaultBodyLimit::max(max_body))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// `GET /healthz`: the process is alive. Always 200, with a few numbers.
async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    let stats = state.hub.stats();
    Json(json!({
        "status": "ok",
        "instance_id": state.config.instance_id,
        "connections": state.open_connections(),
        "channels": state.hub.channel_count(),
        "messages": stats.messages.load(Ordering::Relaxed),
        "deliveries": stats.deliveries.load(Ordering::Relaxed),
        "slow_consumers": stats.slow_consumers.load(Ordering::Relaxed),
    }))
}

/// `GET /metrics`: Prometheus' text format.
async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(&state);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

/// `GET /readyz`: 200 only while the broker's subscriber connection is live, else 503.
///
/// A load balancer should send new clients only to ready instances: one whose
/// bus is down would accept them and deliver nothing.
async fn readyz(State(state): State<AppState>) -> Response {
    let status = *state.hub.broker().status().borrow();
    let (code, ready, broker) = match status {
        BrokerStatus::Connected => (StatusCode::OK, "ready", "connected"),
        BrokerStatus::Connecting => (StatusCode::SERVICE_UNAVAILABLE, "not_ready", "connecting"),
        BrokerStatus::Closed => (StatusCode::SERVICE_UNAVAILABLE, "not_ready", "closed"),
    };
    let shutting_down = state.shutdown.is_cancelled();
    let (code, ready) = if shutting_down {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
    } else {
        (code, ready)
    };
    (
        code,
        Json(json!({ "status": ready, "broker": broker, "instance_id": state.config.instance_id })),
    )
        .into_response()
}

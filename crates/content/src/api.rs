//! The content API's routes: create, list and fetch content.
//!
//! - `POST /api/content` `{"title","body"}` → `201` with the stored content.
//! - `GET /api/content?limit=20&cursor=…` → `{"items":[…],"next_cursor":…}`, newest first.
//! - `GET /api/content/{id}` → the content, or `404 {"error":"not_found"}`.
//!
//! Errors are shaped by [`ApiError`]. The router is
//! built by a plain function so tests drive it without a socket, and the
//! gateway can mount it in the one-process demo.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Notify;

use crate::error::ApiError;
use crate::model::{Content, NewContent};
use crate::page::{Page, PageRequest};
use crate::store::Store;

/// What every request handler shares: the database, and the relay's doorbell.
#[derive(Debug, Clone)]
pub struct ContentState {
    /// The content database.
    store: Store,
    /// Rung after each commit so the relay moves the new event at once.
    relay_wake: Arc<Notify>,
}

impl ContentState {
    /// State over `store`; `relay_wake` is notified after every committed create.
    pub fn new(store: Store, relay_wake: Arc<Notify>) -> Self {
        ContentState { store, relay_wake }
    }

    /// The content database.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// The content API's routes over `state`.
pub fn router(state: ContentState) -> Router {
    Router::new()
        .route("/api/content", get(list).post(create))
        .route("/api/content/{id}", get(fetch))
        .with_state(state)
}

/// The raw query parameters of the list route, validated by [`PageRequest::parse`].
#[derive(Debug, Deserialize)]
struct ListParams {
    /// Page size, 1..=100.
    limit: Option<String>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

async fn create(
    State(state): State<ContentState>,
    request: Result<Json<Value>, JsonRejection>,
) -> Result<(StatusCode, Json<Content>), ApiError> {
    let Json(request) = request.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let new = NewContent::from_json(&request)?;
    let content = state.store.create(&new).await?;
    state.relay_wake.notify_one();
    Ok((StatusCode::CREATED, Json(content)))
}

async fn list(
    State(state): State<ContentState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let request = PageRequest::parse(params.limit.as_deref(), params.cursor.as_deref())?;
    Ok(Json(state.store.list(request).await?))
}

async fn fetch(
    State(state): State<ContentState>,
    Path(id): Path<String>,
) -> Result<Json<Content>, ApiError> {
    state
        .store
        .get(&id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

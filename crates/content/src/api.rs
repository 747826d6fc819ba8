//! The content API's routes: create, list and fetch content.
//!
//! - `POST /api/content` `{"title","body"}` → `201` with the stored content.
//! - `GET /api/content?limit=20&cursor=…` → `{"items":[…],"next_cursor":…}`, newest first.
//! - `GET /api/content/{id}` → the content, or `404 {"error":"not_found"}`.
//!
//! Writing is the one thing a stranger must not do at will: with keys
//! configured (`herald content --api-key`), `POST` needs
//! `Authorization: Bearer KEY` — the gateway's proxy sends its own
//! `--content-api-key` after checking the user's JWT. Reads stay open. Every
//! request body is at most [`MAX_REQUEST_BYTES`], and each field has its own
//! limit ([`crate::model`]).
//!
//! Errors are shaped by [`ApiError`]. The router is
//! built by a plain function so tests drive it without a socket, and the
//! gateway can mount it in the one-process demo.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use herald_notifier::ApiKeys;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Notify;

use crate::error::ApiError;
use crate::model::{Content, NewContent};
use crate::page::{Page, PageRequest};
use crate::store::Store;

/// The largest request body the API reads, in bytes; larger ones get `413 payload_too_large`.
///
/// The largest valid create request (a 200-character title and a
/// 10,000-character body, every character JSON-escaped as `\uXXXX`) is about
/// 61 KB, so this refuses nothing valid while keeping axum's 2 MB default away.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// What every request handler shares: the database, the relay's doorbell, and who may write.
#[derive(Debug, Clone)]
pub struct ContentState {
    /// The content database.
    store: Store,
    /// Rung after each commit so the relay moves the new event at once.
    relay_wake: Arc<Notify>,
    /// The keys `POST /api/content` accepts; open to everyone when empty.
    write_keys: ApiKeys,
}

impl ContentState {
    /// State over `store`; `relay_wake` is notified after every committed create.
    /// Writing is open until [`with_write_keys`](Self::with_write_keys).
    pub fn new(store: Store, relay_wake: Arc<Notify>) -> Self {
        ContentState {
            store,
            relay_wake,
            write_keys: ApiKeys::default(),
        }
    }

    /// This state with `POST /api/content` requiring one of `keys` (open if `keys` is).
    pub fn with_write_keys(mut self, keys: ApiKeys) -> Self {
        self.write_keys = keys;
        self
    }

    /// Whether anyone may create content (no key is configured).
    pub fn writes_are_open(&self) -> bool {
        self.write_keys.is_open()
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
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
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
    request: Request,
) -> Result<(StatusCode, Json<Content>), ApiError> {
    // The key before the body: an unauthorized caller does not get its body buffered.
    state.write_keys.authorize(request.headers())?;
    let Json(request) =
        Json::<Value>::from_request(request, &())
            .await
            .map_err(|rejection: JsonRejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest(rejection.body_text())
                }
            })?;
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

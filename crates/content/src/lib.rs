//! Herald's content service: the API that creates content, and the outbox that announces it.
//!
//! In the tutorial the content service publishes `Content published: <title>`
//! to Redis Pub/Sub right after saving, and a crash between the two loses the
//! notification. Here creating content writes the row and a `content.created`
//! domain event in one database transaction (the transactional outbox); a
//! relay task then moves events to the domain-event log, where the notifier
//! (`herald_notifier`) turns them into live notifications.
//!
//! # Layout
//!
//! - [`model`]: content, and the rules a new piece must satisfy.
//! - [`page`]: keyset pagination (`limit`, `cursor`), newest first.
//! - [`store`]: SQLite/PostgreSQL persistence, migrations, and the outbox rows.
//! - [`relay`]: the task moving outbox rows to the [`EventLog`](herald_notifier::EventLog).
//! - [`error`]: the one error type of the API and its HTTP mapping.
//! - [`api`]: the routes, built by [`router`].
//! - [`service`]: [`ContentService`] (store + relay) and [`serve`] for `herald content`.

// Tests may unwrap: a panic there is a failed test with its message.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
pub mod error;
pub mod model;
pub mod page;
pub mod relay;
pub mod service;
pub mod store;

pub use api::{ContentState, MAX_REQUEST_BYTES, router};
pub use error::ApiError;
pub use model::{Content, NewContent};
pub use page::{Page, PageRequest};
pub use relay::RelayConfig;
pub use service::{ContentConfig, ContentError, ContentService, serve};
pub use store::{Backend, Store, StoreError};

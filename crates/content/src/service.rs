//! The content service as a whole: its database, its relay task, its HTTP server.
//!
//! [`ContentService`] owns what outlives a request: the store and the relay
//! task that moves outbox rows to the event log. The binary uses it two ways:
//!
//! - `herald content --listen ADDR --broker redis://… --database URL`:
//!   [`serve`] does everything, with the Redis Stream as the event log.
//! - the one-process demo: [`ContentService::open`] with a
//!   [`MemoryEventLog`](herald_notifier::MemoryEventLog), and the gateway
//!   mounts [`ContentService::router`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use herald_notifier::{ApiKeys, EventLog, EventLogError};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::api::{ContentState, router};
use crate::relay::{Relay, RelayConfig};
use crate::store::{Store, StoreError};

/// Everything `herald content` is configured with.
#[derive(Debug, Clone)]
pub struct ContentConfig {
    /// Where to serve the content API (`--listen`).
    pub listen: SocketAddr,
    /// The Redis whose `herald:domain-events` stream receives the domain events (`--broker redis://…`).
    pub broker_url: String,
    /// The database (`--database`): `sqlite://path/to/herald.db` (created if missing) or `postgres://…`.
    pub database_url: String,
    /// The outbox relay's batch size and timings.
    pub relay: RelayConfig,
    /// The keys `POST /api/content` accepts (`--api-key`); empty leaves creating content open to anyone.
    pub api_keys: ApiKeys,
    /// How long open requests may take to finish after `cancel` fires; then they are
    /// dropped, so a client holding a half-sent request cannot keep the process alive.
    pub shutdown_timeout: Duration,
}

impl ContentConfig {
    /// A configuration with the default relay settings.
    pub fn new(
        listen: SocketAddr,
        broker_url: impl Into<String>,
        database_url: impl Into<String>,
    ) -> Self {
        ContentConfig {
            listen,
            broker_url: broker_url.into(),
            database_url: database_url.into(),
            relay: RelayConfig::default(),
            api_keys: ApiKeys::default(),
            shutdown_timeout: Duration::from_secs(15),
        }
    }
}

/// Why the content service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The event log URL is unusable.
    #[error("event log: {0}")]
    EventLog(#[from] EventLogError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Serve(std::io::Error),
}

/// An open content database with its relay running.
///
/// Call [`shutdown`](ContentService::shutdown) to stop the relay and close
/// the database; dropping the service stops the relay without waiting.
#[derive(Debug)]
pub struct ContentService {
    /// What the routes share.
    state: ContentState,
    /// Stops the relay.
    cancel: CancellationToken,
    /// Owns the relay task, so shutdown can wait for it.
    tasks: TaskTracker,
}

impl ContentService {
    /// Opens and migrates the database at `database_url` and starts the relay into `log`.
    pub async fn open(
        database_url: &str,
        log: Arc<dyn EventLog>,
        relay: RelayConfig,
    ) -> Result<Self, ContentError> {
        let store = Store::open(database_url).await?;
        let wake = Arc::new(Notify::new());
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let relay = Relay {
            store: store.clone(),
            log,
            wake: wake.clone(),
            config: relay,
            cancel: cancel.clone(),
        };
        tasks.spawn(relay.run());
        tasks.close();
        Ok(ContentService {
            state: ContentState::new(store, wake),
            cancel,
            tasks,
        })
    }

    /// This service with `POST /api/content` requiring one of `keys` (open if `keys` is);
    /// call before [`router`](Self::router).
    pub fn with_write_keys(mut self, keys: ApiKeys) -> Self {
        self.state = self.state.clone().with_write_keys(keys);
        self
    }

    /// The content API's routes (`/api/content`, `/api/content/{id}`), to serve or to mount.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// The shared request state, for callers that build the router themselves.
    pub fn state(&self) -> ContentState {
        self.state.clone()
    }

    /// The content database.
    pub fn store(&self) -> &Store {
        self.state.store()
    }

    /// Stops the relay, waits for it, and closes the database.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.wait().await;
        self.state.store().close().await;
    }
}

impl Drop for ContentService {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Runs `herald content` until `cancel` fires: opens the database, relays to
/// the Redis Stream at `config.broker_url`, and serves the API on `config.listen`.
pub async fn serve(config: ContentConfig, cancel: CancellationToken) -> Result<(), ContentError> {
    let log = herald_notifier::event_log::connect(&config.broker_url)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ContentError::Bind {
            addr: config.listen,
            source,
        })?;
    let service = ContentService::open(&config.database_url, log, config.relay.clone())
        .await?
        .with_write_keys(config.api_keys.clone());
    if service.state().writes_are_open() {
        warn!(addr = %config.listen, "content service listening; POST /api/content is OPEN to anyone (close it with --api-key)");
    } else {
        info!(addr = %config.listen, "content service listening; POST /api/content requires an API key");
    }
    let server = axum::serve(listener, service.router())
        .with_graceful_shutdown(cancel.clone().cancelled_owned())
        .into_future();
    tokio::pin!(server);
    let served = tokio::select! {
        served = &mut server => served,
        () = cancel.cancelled() => {
            match tokio::time::timeout(config.shutdown_timeout, &mut server).await {
                Ok(served) => served,
                Err(_) => {
                    warn!("requests still open at the shutdown timeout; dropping them");
                    Ok(())
                }
            }
        }
    };
    service.shutdown().await;
    served.map_err(ContentError::Serve)
}

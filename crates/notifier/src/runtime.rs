//! The notifier as a process: `herald notifier --broker redis://… --consumer NAME --listen ADDR`.
//!
//! It runs the consumer-group member and, if asked, the HTTP invoke route,
//! side by side in one task, both stopping on one [`CancellationToken`]. The
//! Redis behind `--broker` serves as both the domain-event stream and the
//! Pub/Sub bus the notifications are published on. For the one-process demo
//! (no Redis) the binary uses
//! [`run_memory_consumer`](crate::memory_consumer::run_memory_consumer) instead.

use std::net::SocketAddr;
use std::time::Duration;

use herald_broker::{Broker, BrokerError, Inbox, RedisBrokerConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api_key::ApiKeys;
use crate::invoke;
use crate::stream_consumer::{StreamConsumerConfig, StreamConsumerError, run_stream_consumer};

/// Everything `herald notifier` is configured with.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// The Redis holding `herald:domain-events` and carrying the published notifications: `redis://host:port[/db]`.
    pub broker_url: String,
    /// Where to serve `POST /invoke`; `None` serves no HTTP at all.
    pub listen: Option<SocketAddr>,
    /// The keys `POST /invoke` accepts (`Authorization: Bearer KEY`). With `listen`
    /// set and no key, [`Notifier::bind`] refuses to start unless `open_invoke`.
    pub invoke_keys: ApiKeys,
    /// Serve `POST /invoke` to anyone when no key is configured: an explicit
    /// opt-out, because an open route lets any caller publish notifications.
    pub open_invoke: bool,
    /// The consumer-group member: its name (`--consumer`) and its timings.
    pub stream: StreamConsumerConfig,
    /// Timings of the Pub/Sub connection notifications are published on.
    pub broker: RedisBrokerConfig,
    /// How long open `/invoke` requests may take to finish once stopping; then they are dropped.
    pub shutdown_timeout: Duration,
}

impl NotifierConfig {
    /// Defaults for the consumer named `consumer` on the Redis at `broker_url`, without HTTP.
    pub fn new(broker_url: impl Into<String>, consumer: impl Into<String>) -> Self {
        NotifierConfig {
            broker_url: broker_url.into(),
            listen: None,
            invoke_keys: ApiKeys::default(),
            open_invoke: false,
            stream: StreamConsumerConfig::new(consumer),
            broker: RedisBrokerConfig::default(),
            shutdown_timeout: Duration::from_secs(15),
        }
    }
}

/// Why the notifier could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    /// The broker URL is not a Redis URL.
    #[error(
        "the notifier needs a redis:// broker, got {0:?}; memory:// works only inside the one-process demo"
    )]
    NeedsRedis(String),
    /// The broker could not be set up.
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
    /// The stream consumer's configuration or URL is unusable.
    #[error("stream consumer: {0}")]
    Consumer(#[from] StreamConsumerError),
    /// `listen` is set but no key protects `POST /invoke`, and `open_invoke` is off.
    #[error(
        "POST /invoke would be open to anyone: give it an API key (--api-key), or pass --insecure-open-invoke to serve it open on purpose"
    )]
    InvokeWithoutKey,
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

/// A notifier that has bound its socket and connected its broker, ready to [`run`](Notifier::run).
pub struct Notifier {
    /// Settings.
    config: NotifierConfig,
    /// Where notifications are published.
    broker: std::sync::Arc<dyn Broker>,
    /// The broker's inbox; the notifier subscribes to nothing, but keeping the
    /// receiver alive keeps the broker's reader task from treating the hub as gone.
    _inbox: Inbox,
    /// The bound invoke socket, if HTTP was asked for.
    listener: Option<TcpListener>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("consumer", &self.config.stream.consumer)
            .field("listen", &self.local_addr())
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Checks the configuration, binds the listen address and starts the broker.
    pub async fn bind(config: NotifierConfig) -> Result<Self, NotifierError> {
        if !(config.broker_url.starts_with("redis://")
            || config.broker_url.starts_with("rediss://")
            || config.broker_url.starts_with("redis+unix://"))
        {
            return Err(NotifierError::NeedsRedis(config.broker_url));
        }
        config.stream.validate()?;
        if config.listen.is_some() && config.invoke_keys.is_open() && !config.open_invoke {
            return Err(NotifierError::InvokeWithoutKey);
        }
        let listener = match config.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| NotifierError::Bind { addr, source })?,
            ),
            None => None,
        };
        let (broker, inbox) = herald_broker::connect(&config.broker_url, config.broker.clone())?;
        Ok(Notifier {
            config,
            broker,
            _inbox: inbox,
            listener,
        })
    }

    /// The address `POST /invoke` is served on (useful when the port was 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Consumes the stream and serves HTTP until `cancel` fires, then shuts the broker down.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), NotifierError> {
        let Notifier {
            config,
            broker,
            _inbox,
            listener,
        } = self;
        // Either half stopping stops the other: a notifier without its consumer must not look alive.
        let stop = cancel.child_token();
        let consumer = async {
            let result = run_stream_consumer(
                &config.broker_url,
                config.stream.clone(),
                broker.clone(),
                stop.clone(),
            )
            .await;
            stop.cancel();
            result
        };
        let server = async {
            let Some(listener) = listener else {
                return Ok(());
            };
            if let Ok(addr) = listener.local_addr() {
                if config.invoke_keys.is_open() {
                    warn!(%addr, "notifier serving POST /invoke OPEN to anyone (--insecure-open-invoke)");
                } else {
                    info!(%addr, "notifier serving POST /invoke (API key required)");
                }
            }
            let router = invoke::router(broker.clone(), config.invoke_keys.clone());
            let server = axum::serve(listener, router)
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future();
            tokio::pin!(server);
            // A client holding a half-sent request must not keep the notifier alive.
            let result = tokio::select! {
                served = &mut server => served,
                () = stop.cancelled() => {
                    match tokio::time::timeout(config.shutdown_timeout, &mut server).await {
                        Ok(served) => served,
                        Err(_) => {
                            warn!("requests still open at the shutdown timeout; dropping them");
                            Ok(())
                        }
                    }
                }
            };
            stop.cancel();
            result
        };
        let (consumed, served) = tokio::join!(consumer, server);
        broker.shutdown().await;
        consumed?;
        served.map_err(NotifierError::Serve)
    }
}

/// Binds and runs a notifier until `cancel` fires: what `herald notifier` does.
pub async fn run(config: NotifierConfig, cancel: CancellationToken) -> Result<(), NotifierError> {
    Notifier::bind(config).await?.run(cancel).await
}

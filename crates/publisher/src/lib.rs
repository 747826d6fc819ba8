//! Publishing to Herald from a Rust service, without going through HTTP.
//!
//! A [`Publisher`] does exactly what `POST /api/publish` does — serialize the
//! data, append it to the channel's history when a rule says so, publish it
//! live, honour an idempotency key — by running the same Redis script through
//! [`herald_broker`]. Services that already talk to Redis skip a network hop
//! and an API key, and still get positions clients can recover from.
//!
//! ```no_run
//! # async fn example() -> Result<(), herald_publisher::PublishError> {
//! use herald_publisher::Publisher;
//!
//! let publisher = Publisher::connect("redis://127.0.0.1:6379", &["news:*=1000/24h"])?;
//! let published = publisher.publish("news:sport", &serde_json::json!({"title": "Goal"})).await?;
//! println!("published at {:?}", published.position);
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use herald_broker::history::HistoryRuleError;
use herald_broker::{
    Broker, BrokerError, HistoryRules, PublishRequest, Published, RedisBrokerConfig,
};
use herald_protocol::{ChannelName, ChannelNameError};
use serde::Serialize;

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The channel name breaks the grammar.
    #[error("invalid channel: {0}")]
    InvalidChannel(#[from] ChannelNameError),
    /// The data could not be serialized to JSON.
    #[error("data is not serializable to JSON: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A history rule could not be read.
    #[error(transparent)]
    HistoryRule(#[from] HistoryRuleError),
    /// The idempotency key is empty or longer than 128 bytes.
    #[error("idempotency key must be 1 to 128 bytes")]
    BadIdempotencyKey,
    /// The bus refused or did not answer; retry (with the same idempotency key).
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Publishes JSON messages to Herald channels.
#[derive(Clone)]
pub struct Publisher {
    /// The bus; only its publishing half is used.
    broker: Arc<dyn Broker>,
    /// Which channels keep history: must match the gateways' `--history` rules.
    history: HistoryRules,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher on the Redis at `url`, with the gateways' history rules
    /// (e.g. `["news:*=1000/24h"]`). Connects lazily, on the first publish.
    /// Must be called within a Tokio runtime.
    pub fn connect(url: &str, history: &[&str]) -> Result<Self, PublishError> {
        let (broker, _inbox) = herald_broker::connect(url, RedisBrokerConfig::default())?;
        Ok(Publisher::with_broker(
            broker,
            HistoryRules::parse(history.iter().copied())?,
        ))
    }

    /// A publisher over an existing broker (e.g. the in-process one of a single-process app).
    pub fn with_broker(broker: Arc<dyn Broker>, history: HistoryRules) -> Self {
        Publisher { broker, history }
    }

    /// Publishes `data` on `channel`.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        data: &T,
    ) -> Result<Published, PublishError> {
        self.send(channel, data, None).await
    }

    /// Publishes `data` on `channel` at most once per `key` within `window`: a retry
    /// returns the first result with `duplicate: true` and publishes nothing.
    pub async fn publish_once<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        data: &T,
        key: &str,
        window: Duration,
    ) -> Result<Published, PublishError> {
        if key.is_empty() || key.len() > 128 {
            return Err(PublishError::BadIdempotencyKey);
        }
        self.send(channel, data, Some((key, window))).await
    }

    async fn send<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        data: &T,
        idempotency: Option<(&str, Duration)>,
    ) -> Result<Published, PublishError> {
        let channel = ChannelName::new(channel)?;
        let data = serde_json::to_vec(data)?;
        let request = PublishRequest {
            channel: &channel,
            data: &data,
            history: self.history.policy(&channel),
            idempotency,
        };
        Ok(self.broker.publish_json(request).await?)
    }
}

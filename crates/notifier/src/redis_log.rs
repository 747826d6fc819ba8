//! The domain-event log as a Redis Stream.
//!
//! A stream, not Pub/Sub: entries stay until trimmed, so a notifier that is
//! down or slow catches up instead of missing events, and a consumer group
//! shares them between notifier instances. Each entry has one field, `event`,
//! holding the event's JSON. A batch is appended as one pipeline, so a relay
//! batch costs one round trip.

use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::event_log::{DOMAIN_EVENTS_STREAM, EventLog, EventLogError, STREAM_MAXLEN};

/// How long one append (the whole pipeline) may take before it counts as failed.
const APPEND_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An [`EventLog`] that appends to the `herald:domain-events` Redis Stream.
pub struct RedisEventLog {
    /// Opens connections to the configured server.
    client: redis::Client,
    /// The multiplexed connection, opened on first use; it reconnects by itself.
    conn: OnceCell<ConnectionManager>,
}

impl std::fmt::Debug for RedisEventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEventLog")
            .field("stream", &DOMAIN_EVENTS_STREAM)
            .finish_non_exhaustive()
    }
}

impl RedisEventLog {
    /// A log on the Redis server at `url`, appending to [`DOMAIN_EVENTS_STREAM`].
    ///
    /// Does not connect: the first append does, and later appends reconnect
    /// as needed, so a producer can start before its Redis does.
    pub fn open(url: &str) -> Result<Self, EventLogError> {
        Ok(RedisEventLog {
            client: redis::Client::open(url)?,
            conn: OnceCell::new(),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, EventLogError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(APPEND_TIMEOUT))
            .set_number_of_retries(2);
        let manager = self
            .conn
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config))
            .await?;
        Ok(manager.clone())
    }
}

impl EventLog for RedisEventLog {
    fn append<'a>(&'a self, events: &'a [String]) -> BoxFuture<'a, Result<(), EventLogError>> {
        Box::pin(async move {
            if events.is_empty() {
                return Ok(());
            }
            let mut conn = self.connection().await?;
            let mut pipe = redis::pipe();
            for event in events {
                pipe.cmd("XADD")
                    .arg(DOMAIN_EVENTS_STREAM)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(STREAM_MAXLEN)
                    .arg("*")
                    .arg("event")
                    .arg(event)
                    .ignore();
            }
            match tokio::time::timeout(APPEND_TIMEOUT, pipe.query_async::<()>(&mut conn)).await {
                Ok(result) => Ok(result?),
                Err(_) => Err(EventLogError::Timeout(APPEND_TIMEOUT)),
            }
        })
    }
}

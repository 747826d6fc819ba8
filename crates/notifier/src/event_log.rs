//! The domain-event log: where producers append events and the notifier reads them.
//!
//! Pub/Sub (the [`Broker`](herald_broker::Broker)) forgets a message nobody is
//! listening to at that instant; the tutorial names that as its limitation.
//! Domain events must not be forgotten, so producers append them to a log
//! instead, and the notification function consumes the log at its own pace.
//!
//! The contract lives here, next to its consumer, because it is the
//! function's trigger: producers (the content service's outbox relay) depend
//! on this crate for [`EventLog`] and for the event schema in
//! [`event`](crate::event), and on nothing of the runtimes.
//!
//! Two implementations:
//! - [`RedisEventLog`]: a Redis Stream
//!   (`XADD herald:domain-events MAXLEN ~ 100000 * event <json>`), read by a
//!   consumer group so that many notifier instances share the work.
//! - [`MemoryEventLog`](crate::memory_log::MemoryEventLog): a bounded channel,
//!   for the one-process demo where the notifier runs in the same process.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::redis_log::RedisEventLog;

/// The Redis Stream that holds the domain events.
pub const DOMAIN_EVENTS_STREAM: &str = "herald:domain-events";

/// The Redis Stream where events that cannot be handled are parked with the reason.
pub const DEAD_LETTER_STREAM: &str = "herald:dead-letter";

/// The approximate length the streams are trimmed to (`MAXLEN ~`).
///
/// Enough to ride out a long notifier outage at a busy rate, small enough that
/// Redis memory stays bounded if no notifier ever runs.
pub const STREAM_MAXLEN: usize = 100_000;

/// Why appending to the event log failed; the relay keeps the events and retries.
#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    /// Redis refused the command or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("event log did not answer within {0:?}")]
    Timeout(Duration),
    /// The reading end is gone (in-memory log) or the log was shut down.
    #[error("event log is closed")]
    Closed,
    /// The URL does not name an event log this process can open.
    #[error(
        "unsupported event log url {0:?}: use redis://host:port[/db] (memory logs are built in-process with MemoryEventLog::channel)"
    )]
    BadUrl(String),
}

/// Where domain events are appended, in order, at least once.
///
/// `append` returns once every event is durably in the log (or, for the
/// in-memory log, handed to the consumer). On error, none or some of the
/// events may be in the log: callers retry the whole batch, and consumers
/// dedupe on the events' `event_id`.
pub trait EventLog: Send + Sync + 'static {
    /// Appends the events, each one domain event's JSON text, in order.
    fn append<'a>(&'a self, events: &'a [String]) -> BoxFuture<'a, Result<(), EventLogError>>;
}

/// Opens the event log a URL names: `redis://host:port[/db]` (or `rediss://`).
///
/// `memory://` is refused: an in-memory log only makes sense when its reader
/// lives in the same process, so the one-process demo builds it with
/// [`MemoryEventLog::channel`](crate::memory_log::MemoryEventLog::channel) and
/// hands the reading end to the notifier itself.
pub fn connect(url: &str) -> Result<Arc<dyn EventLog>, EventLogError> {
    if url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("redis+unix://")
    {
        return Ok(Arc::new(RedisEventLog::open(url)?));
    }
    Err(EventLogError::BadUrl(url.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_redis_urls_open_a_shared_log() {
        assert!(matches!(
            connect("memory://"),
            Err(EventLogError::BadUrl(_))
        ));
        assert!(matches!(
            connect("kafka://x"),
            Err(EventLogError::BadUrl(_))
        ));
        assert!(
            connect("redis://127.0.0.1:1").is_ok(),
            "opening is lazy and does not connect"
        );
    }
}

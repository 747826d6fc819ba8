//! The domain-event log as a bounded in-process channel, for the one-process demo.
//!
//! When the content service and the notifier run in one process there is no
//! Redis to hold a stream, and none is needed: the relay hands events straight
//! to the notifier. The channel is bounded so that a stalled notifier makes
//! the relay wait (the events stay in the durable outbox meanwhile) instead of
//! piling them up in memory. Unlike the Redis log it is not durable: events in
//! the channel when the process dies are gone with the notifier that would
//! have handled them.

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use crate::event_log::{EventLog, EventLogError};

/// How many events may wait between the relay and the notifier in the demo.
pub const DEFAULT_MEMORY_LOG_CAPACITY: usize = 1024;

/// The writing end: an [`EventLog`] for the content service's relay.
#[derive(Debug, Clone)]
pub struct MemoryEventLog {
    /// Where appended events go; the notifier holds the receiving end.
    tx: mpsc::Sender<String>,
}

/// The reading end, for [`run_memory_consumer`](crate::memory_consumer::run_memory_consumer).
#[derive(Debug)]
pub struct MemoryEvents {
    /// Appended events, in order.
    rx: mpsc::Receiver<String>,
}

impl MemoryEventLog {
    /// A log holding at most `capacity` (at least 1) unread events, and its reading end.
    pub fn channel(capacity: usize) -> (MemoryEventLog, MemoryEvents) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (MemoryEventLog { tx }, MemoryEvents { rx })
    }
}

impl EventLog for MemoryEventLog {
    fn append<'a>(&'a self, events: &'a [String]) -> BoxFuture<'a, Result<(), EventLogError>> {
        Box::pin(async move {
            for event in events {
                self.tx
                    .send(event.clone())
                    .await
                    .map_err(|_| EventLogError::Closed)?;
            }
            Ok(())
        })
    }
}

impl MemoryEvents {
    /// The next event's JSON text; `None` once every writer is gone and the log is drained.
    pub async fn recv(&mut self) -> Option<String> {
        self.rx.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_in_order_and_reports_a_missing_reader() {
        let (log, mut events) = MemoryEventLog::channel(4);
        log.append(&["a".to_owned(), "b".to_owned()]).await.unwrap();
        assert_eq!(events.recv().await.as_deref(), Some("a"));
        assert_eq!(events.recv().await.as_deref(), Some("b"));
        drop(events);
        assert!(matches!(
            log.append(&["c".to_owned()]).await,
            Err(EventLogError::Closed)
        ));
    }
}

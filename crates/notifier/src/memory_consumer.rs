//! The notifier's runtime for the one-process demo: it drains the in-memory event log.
//!
//! Same handler, same publishing as the stream consumer, without Redis. There
//! is no dead-letter stream here: a rejected event is logged with its reason
//! and skipped. A failed publish is retried with backoff, so a briefly
//! unavailable broker delays notifications instead of dropping them.

use std::sync::Arc;
use std::time::Duration;

use herald_broker::Broker;
use herald_broker::backoff::Backoff;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::deliver::{Delivered, RawSink, deliver_text};
use crate::memory_log::MemoryEvents;

/// Handles every event appended to the in-memory log until `cancel` fires or every writer is gone.
pub async fn run_memory_consumer(
    mut events: MemoryEvents,
    broker: Arc<dyn Broker>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        let text = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            next = events.recv() => match next {
                Some(text) => text,
                None => return,
            },
        };
        loop {
            match deliver_text(&*broker, &text, RawSink::Broker).await {
                Ok(Delivered::Published(notifications)) => {
                    debug!(count = notifications.len(), "published notifications");
                    backoff.reset();
                    break;
                }
                Ok(Delivered::Rejected(rejection)) => {
                    warn!(reason = %rejection, event = %text, "skipping an event that cannot be handled");
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "publishing failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_wait()) => {}
                        () = cancel.cancelled() => return,
                    }
                }
            }
        }
    }
}

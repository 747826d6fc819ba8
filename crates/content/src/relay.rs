//! The outbox relay: moves committed domain events from the database to the event log.
//!
//! Content and its event are committed together (see [`store`](crate::store));
//! this task is the second half of the pattern. It takes undelivered outbox
//! rows oldest first in bounded batches, appends them to the
//! [`EventLog`], and only then marks them delivered. A crash between the two
//! steps appends the batch again on restart, so delivery is at least once;
//! every event carries an `event_id` for consumers to dedupe on.
//!
//! It wakes when a request commits new content, and also on a timer, so rows
//! left by a previous run (or another instance) are never stranded. When the
//! log or the database fails it waits with capped, jittered backoff, and the
//! rows wait safely in the outbox meanwhile. It stops when its
//! [`CancellationToken`] fires: at once while it waits for the log (a
//! stalled log must not hold up shutdown; that batch stays undelivered and is
//! relayed again by the next run), but never between the log taking a batch
//! and the batch being marked delivered.

use std::sync::Arc;
use std::time::Duration;

use herald_broker::backoff::Backoff;
use herald_notifier::{EventLog, EventLogError};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::store::{OutboxBatch, Store, StoreError};

/// Timings and sizes of the relay; the defaults suit a single instance.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// How many outbox rows one batch moves at most (one pipeline to the log).
    pub batch_size: u32,
    /// How often the outbox is looked at when no request has woken the relay.
    pub poll_interval: Duration,
    /// The cap of the first wait after a failure.
    pub retry_initial: Duration,
    /// The longest wait after failures.
    pub retry_max: Duration,
    /// How long delivered rows are kept (for inspection and replays) before they are deleted.
    pub retention: Duration,
    /// How often delivered rows older than `retention` are deleted.
    pub prune_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_size: 100,
            poll_interval: Duration::from_secs(1),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            retention: Duration::from_secs(24 * 3600),
            prune_interval: Duration::from_secs(600),
        }
    }
}

/// Why one relay step failed; the relay logs it and retries.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    /// Reading or marking outbox rows failed.
    #[error("outbox: {0}")]
    Store(#[from] StoreError),
    /// The event log refused the batch.
    #[error("event log: {0}")]
    Log(#[from] EventLogError),
}

/// The relay task's state.
pub(crate) struct Relay {
    /// The outbox.
    pub(crate) store: Store,
    /// Where events go.
    pub(crate) log: Arc<dyn EventLog>,
    /// Signalled by requests after they commit, so events leave at once instead of at the next poll.
    pub(crate) wake: Arc<Notify>,
    /// Sizes and timings.
    pub(crate) config: RelayConfig,
    /// Stops the relay; a batch the log has not taken yet is abandoned, not marked.
    pub(crate) cancel: CancellationToken,
}

impl Relay {
    /// Runs until cancelled.
    pub(crate) async fn run(self) {
        let mut backoff = Backoff::new(self.config.retry_initial, self.config.retry_max);
        let mut next_prune = Instant::now() + self.config.prune_interval;
        info!("outbox relay started");
        while !self.cancel.is_cancelled() {
            match self.relay_batch().await {
                Ok(None) => break,
                // A full batch: there may be more right behind it.
                Ok(Some(moved)) if moved >= self.config.batch_size as usize => {
                    backoff.reset();
                }
                Ok(Some(moved)) => {
                    if moved > 0 {
                        debug!(moved, "relayed outbox events");
                    }
                    backoff.reset();
                    if Instant::now() >= next_prune {
                        self.prune().await;
                        next_prune = Instant::now() + self.config.prune_interval;
                    }
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(self.config.poll_interval) => {}
                        () = self.cancel.cancelled() => break,
                    }
                }
                Err(e) => {
                    let wait = backoff.next_wait();
                    warn!(error = %e, retry_in = ?wait, "outbox relay failed; events stay in the outbox");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.cancel.cancelled() => break,
                    }
                }
            }
        }
        info!("outbox relay stopped");
    }

    /// Moves one batch; returns how many events it moved, or `None` if cancelled first.
    ///
    /// Cancellation cuts the wait for the database or the log short (a
    /// stalled log must not hold up shutdown; that batch stays undelivered
    /// and is relayed again later), but once the log has taken a batch the
    /// batch is always marked, so a clean shutdown causes no duplicates.
    async fn relay_batch(&self) -> Result<Option<usize>, RelayError> {
        let batch = tokio::select! {
            batch = self.store.undelivered(self.config.batch_size.max(1)) => batch?,
            () = self.cancel.cancelled() => return Ok(None),
        };
        let moved = batch.rows.len();
        if moved == 0 {
            return Ok(Some(0));
        }
        let payloads: Vec<String> = batch.rows.iter().map(|row| row.payload.clone()).collect();
        let appended = tokio::select! {
            appended = self.log.append(&payloads) => appended,
            () = self.cancel.cancelled() => {
                self.release(batch).await;
                return Ok(None);
            }
        };
        if let Err(e) = appended {
            self.release(batch).await;
            return Err(e.into());
        }
        self.store.mark_delivered(batch).await?;
        Ok(Some(moved))
    }

    /// Hands a batch back undelivered.
    async fn release(&self, batch: OutboxBatch) {
        // Best effort: a failed rollback is also undone when the connection goes back to the pool.
        if let Err(e) = self.store.release(batch).await {
            debug!(error = %e, "could not release the outbox batch");
        }
    }

    async fn prune(&self) {
        match self.store.prune_delivered(self.config.retention).await {
            Ok(0) => {}
            Ok(pruned) => debug!(pruned, "deleted old delivered outbox rows"),
            Err(e) => warn!(error = %e, "could not prune the outbox"),
        }
    }
}

//! History reads for recovery: bounded per instance, and shared by clients asking the same.
//!
//! Every `subscribe` with `since` reads the channel's history. Unchecked, a
//! reconnect storm turns into one read per client per channel, all at once,
//! and every reader decodes and encodes its own copy of the same messages.
//! Two rules keep that bounded:
//!
//! - **Bounded concurrency.** At most `--max-concurrent-recoveries` reads run
//!   at once on an instance; the others queue on a semaphore, so a storm
//!   queues instead of flooding Redis.
//! - **Single flight.** Clients asking for the same `(channel, since)` share
//!   one read while it is in flight, and with it one [`Delivery`] per message,
//!   so each missed frame is encoded once however many clients get it.
//!
//! Sharing must never cost a message. A client joins the hub before it
//! recovers, so every message published after its bus subscription was
//! confirmed reaches it live; a read that *starts* after that confirmation
//! therefore misses nothing the client needs. A client may only join a flight
//! that started after its own confirmation ([`Recoveries::ticket`] orders the
//! two); otherwise it starts a new one. A flight lives in the table only while
//! someone waits for it, so the table holds at most one entry per recovering
//! client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use herald_broker::{Broker, MAX_RECOVERY};
use herald_protocol::{ChannelName, Position};
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::delivery::Delivery;

/// The default of `--max-concurrent-recoveries`: enough to keep a few Redis
/// round trips in flight, few enough that a storm cannot crowd out publishing.
pub const DEFAULT_MAX_CONCURRENT_RECOVERIES: usize = 16;

/// What one history read found, shared by every client that asked for it.
#[derive(Debug)]
pub struct Recovered {
    /// The channel's position when the read ran.
    pub position: Position,
    /// Whether `messages` is everything after `since`.
    pub complete: bool,
    /// The missed messages in order, each encoded at most once for all readers.
    pub messages: Vec<Arc<Delivery>>,
}

/// Why a recovery read failed; the subscribe is answered with `internal`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    /// The history store answered with an error.
    #[error("history is unavailable: {0}")]
    Unavailable(String),
    /// The history store did not answer in time.
    #[error("history did not answer within {0:?}")]
    TimedOut(Duration),
    /// The read waited its turn longer than it may: the instance is busy recovering others.
    #[error("too many recoveries are queued on this instance (waited {0:?}); retry later")]
    Busy(Duration),
    /// The instance is shutting down; the read was not started.
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

/// Which reads can be shared: the same channel from the same position.
type FlightKey = (ChannelName, Option<Position>);

/// One read, awaited by every client that joined it.
#[derive(Debug)]
struct Flight {
    /// The ticket drawn when the flight was created; its read runs after that.
    started: u64,
    /// The read's outcome, set once. If the client running the read goes away
    /// midway, the next waiter runs it (that is how [`OnceCell`] works).
    outcome: OnceCell<Result<Arc<Recovered>, RecoveryError>>,
}

/// Running totals, for `/metrics`.
#[derive(Debug, Default)]
pub struct RecoveryStats {
    /// History reads sent to the store.
    pub reads: AtomicU64,
    /// Recoveries served by joining another client's read.
    pub shared: AtomicU64,
    /// Reads running now.
    pub running: AtomicUsize,
    /// The most reads that ever ran at once.
    pub peak: AtomicUsize,
}

/// The recovery reads of one instance.
#[derive(Debug)]
pub struct Recoveries {
    /// One permit per read allowed to run at once.
    permits: Semaphore,
    /// Reads in flight, by what they read.
    flights: Mutex<HashMap<FlightKey, Arc<Flight>>>,
    /// Orders bus confirmations against flight starts.
    clock: AtomicU64,
    /// Queued reads give up when the instance shuts down.
    shutdown: CancellationToken,
    /// Totals.
    stats: RecoveryStats,
}

impl Recoveries {
    /// At most `max_concurrent` reads at once (at least one).
    pub fn new(max_concurrent: usize, shutdown: CancellationToken) -> Self {
        Recoveries {
            permits: Semaphore::new(max_concurrent.clamp(1, Semaphore::MAX_PERMITS)),
            flights: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            shutdown,
            stats: RecoveryStats::default(),
        }
    }

    /// Running totals.
    pub fn stats(&self) -> &RecoveryStats {
        &self.stats
    }

    /// A point in this instance's order of events. A client draws one right after
    /// the bus confirmed its subscription and passes it to [`Recoveries::recover`].
    pub fn ticket(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// The messages of `channel` after `since`, read by a read that started after
    /// `confirmed` (the caller's [`Recoveries::ticket`]).
    ///
    /// `wait` bounds both the wait for a turn and the read itself, so a client is
    /// answered (if need be with "retry later") even when the queue is long.
    pub async fn recover(
        &self,
        broker: &Arc<dyn Broker>,
        channel: &ChannelName,
        since: Option<&Position>,
        confirmed: u64,
        wait: Duration,
    ) -> Result<Arc<Recovered>, RecoveryError> {
        let key = (channel.clone(), since.cloned());
        let flight = self.join(&key, confirmed);
        // Leaves the table tidy however this future ends, even if it is dropped.
        let participant = Participant {
            recoveries: self,
            key,
            flight,
        };
        participant
            .flight
            .outcome
            .get_or_init(|| self.read(broker, channel, since, wait))
            .await
            .clone()
    }

    /// The flight to wait for: a shareable one in progress, or a new one.
    fn join(&self, key: &FlightKey, confirmed: u64) -> Arc<Flight> {
        let mut flights = self.lock();
        if let Some(flight) = flights.get(key)
            && flight.started > confirmed
        {
            self.stats.shared.fetch_add(1, Ordering::Relaxed);
            return flight.clone();
        }
        let flight = Arc::new(Flight {
            started: self.ticket(),
            outcome: OnceCell::new(),
        });
        // An older flight that is replaced keeps serving those already waiting on it.
        flights.insert(key.clone(), flight.clone());
        flight
    }

    /// One read, once a permit is free.
    async fn read(
        &self,
        broker: &Arc<dyn Broker>,
        channel: &ChannelName,
        since: Option<&Position>,
        wait: Duration,
    ) -> Result<Arc<Recovered>, RecoveryError> {
        let _permit = tokio::select! {
            biased;
            () = self.shutdown.cancelled() => return Err(RecoveryError::ShuttingDown),
            permit = timeout(wait, self.permits.acquire()) => match permit {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(RecoveryError::ShuttingDown),
                Err(_) => return Err(RecoveryError::Busy(wait)),
            },
        };
        let _running = Running::start(&self.stats);
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        let recovery = match timeout(wait, broker.recover(channel, since, MAX_RECOVERY)).await {
            Ok(Ok(recovery)) => recovery,
            Ok(Err(e)) => return Err(RecoveryError::Unavailable(e.to_string())),
            Err(_) => return Err(RecoveryError::TimedOut(wait)),
        };
        Ok(Arc::new(Recovered {
            position: recovery.position,
            complete: recovery.complete,
            messages: recovery
                .messages
                .into_iter()
                .map(|m| Arc::new(Delivery::from(m)))
                .collect(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<FlightKey, Arc<Flight>>> {
        // Only inserts and removes happen under this lock; neither can leave the map half-done.
        self.flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many reads are in the table now (waited for by someone).
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }
}

/// One client waiting on a flight; the last one to leave removes it from the table.
struct Participant<'a> {
    recoveries: &'a Recoveries,
    key: FlightKey,
    flight: Arc<Flight>,
}

impl Drop for Participant<'_> {
    fn drop(&mut self) {
        let mut flights = self.recoveries.lock();
        // Participants clone the flight under this lock, so the count is exact:
        // the table's reference and ours mean nobody else is waiting.
        if let Some(current) = flights.get(&self.key)
            && Arc::ptr_eq(current, &self.flight)
            && Arc::strong_count(&self.flight) == 2
        {
            flights.remove(&self.key);
        }
    }
}

/// Counts one running read for as long as it lives.
struct Running<'a>(&'a RecoveryStats);

impl<'a> Running<'a> {
    fn start(stats: &'a RecoveryStats) -> Self {
        let now = stats.running.fetch_add(1, Ordering::SeqCst) + 1;
        stats.peak.fetch_max(now, Ordering::SeqCst);
        Running(stats)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_broker::{HistoryPolicy, MemoryBroker, PublishRequest};

    fn broker() -> Arc<dyn Broker> {
        let (broker, _inbox) = MemoryBroker::new();
        Arc::new(broker)
    }

    #[tokio::test]
    async fn readers_confirmed_before_a_flight_started_share_it() {
        let broker = broker();
        let news = ChannelName::new("news:a").unwrap();
        for i in 0..3 {
            broker
                .publish_json(PublishRequest {
                    channel: &news,
                    data: format!("{i}").as_bytes(),
                    history: Some(HistoryPolicy {
                        size: 100,
                        ttl: None,
                    }),
                    idempotency: None,
                })
                .await
                .unwrap();
        }
        let recoveries = Recoveries::new(1, CancellationToken::new());
        let since = Position::new(
            0,
            broker.recover(&news, None, 1).await.unwrap().position.epoch,
        );
        let confirmed = recoveries.ticket();
        let wait = Duration::from_secs(5);
        // The only permit is taken, so both readers are waiting when it is released.
        let held = recoveries.permits.acquire().await.unwrap();
        let release = async {
            tokio::task::yield_now().await;
            assert_eq!(
                recoveries.in_flight(),
                1,
                "the second reader joined the first"
            );
            drop(held);
        };
        let (a, b, ()) = tokio::join!(
            recoveries.recover(&broker, &news, Some(&since), confirmed, wait),
            recoveries.recover(&broker, &news, Some(&since), confirmed, wait),
            release,
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(Arc::ptr_eq(&a, &b), "one read, one set of deliveries");
        assert_eq!(a.messages.len(), 3);
        assert_eq!(recoveries.stats().reads.load(Ordering::Relaxed), 1);
        assert_eq!(
            recoveries.in_flight(),
            0,
            "nobody waits: the table is empty"
        );
        // A reader confirmed after that read ran gets a read of its own.
        let later = recoveries.ticket();
        let c = recoveries
            .recover(&broker, &news, Some(&since), later, wait)
            .await
            .unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(recoveries.stats().reads.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_cannot_get_a_turn_in_time_is_refused_not_queued_forever() {
        let recoveries = Recoveries::new(1, CancellationToken::new());
        let _held = recoveries.permits.acquire().await.unwrap();
        let news = ChannelName::new("news:a").unwrap();
        let wait = Duration::from_secs(5);
        let outcome = recoveries.recover(&broker(), &news, None, 0, wait).await;
        assert_eq!(outcome.unwrap_err(), RecoveryError::Busy(wait));
        assert_eq!(recoveries.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_shut_down_instance_starts_no_read() {
        let shutdown = CancellationToken::new();
        let recoveries = Recoveries::new(1, shutdown.clone());
        shutdown.cancel();
        let news = ChannelName::new("news:a").unwrap();
        let outcome = recoveries
            .recover(&broker(), &news, None, 0, Duration::from_secs(1))
            .await;
        assert_eq!(outcome.unwrap_err(), RecoveryError::ShuttingDown);
        assert_eq!(recoveries.in_flight(), 0);
    }
}

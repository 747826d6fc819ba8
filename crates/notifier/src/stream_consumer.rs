//! The notifier's main runtime: a member of a Redis Streams consumer group.
//!
//! Every notifier instance joins the group `notifiers` on
//! `herald:domain-events` under its own consumer name. Redis hands each new
//! entry to exactly one member (`XREADGROUP … >`); the member publishes the
//! entry's notifications through the [`Broker`] and only then acknowledges it
//! (`XACK`). Delivery is therefore at least once; the notifications of an
//! event with an `event_id` are published exactly once all the same, because
//! each carries an idempotency key made of that id (see [`crate::deliver`]),
//! so an event handled again after its member died is not published twice.
//!
//! # When an instance dies
//!
//! Entries it had read but not acknowledged stay in the group's pending list.
//! Every live member periodically runs `XAUTOCLAIM` for entries idle longer
//! than [`StreamConsumerConfig::min_idle`] and handles them as its own, so
//! another instance finishes the dead one's work. A restarted instance with
//! the same consumer name re-reads its own pending entries first, at once.
//! `min_idle` must exceed the longest time a live member may hold an entry
//! before acknowledging it, or a slow member's entries are stolen and
//! published twice.
//!
//! # Events that cannot be handled
//!
//! A [`Rejection`] is permanent, so the entry is copied to
//! `herald:dead-letter` (`event`, `reason`, `consumer`, `entry` fields) and
//! acknowledged in one `MULTI`, and the stream moves on. An entry that keeps
//! coming back unacknowledged (its member died, or publishing kept failing)
//! is dead-lettered the same way after [`StreamConsumerConfig::max_deliveries`].
//!
//! # Stopping
//!
//! Cancellation is honoured between entries, never between publishing an
//! entry and acknowledging it. Entries read but not reached yet stay pending
//! and are claimed by the other members after `min_idle`.

use std::sync::Arc;
use std::time::Duration;

use herald_broker::backoff::Backoff;
use herald_broker::{Broker, BrokerError};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamPendingCountReply;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::deliver::{Delivered, RawSink, deliver_text};
use crate::event_log::{DEAD_LETTER_STREAM, DOMAIN_EVENTS_STREAM, STREAM_MAXLEN};
use crate::handler::Rejection;
use crate::stream_entry::{Entry, EventField, autoclaim_reply, entry_list, read_reply};

/// The consumer group every notifier instance joins.
pub const CONSUMER_GROUP: &str = "notifiers";

/// Settings of one consumer-group member; [`StreamConsumerConfig::new`] gives LAN defaults.
#[derive(Debug, Clone)]
pub struct StreamConsumerConfig {
    /// This instance's name in the group. Unique per live instance (two
    /// instances sharing a name would share pending entries), and stable
    /// across restarts so a restarted instance resumes its own pending entries.
    pub consumer: String,
    /// The group to join; [`CONSUMER_GROUP`] in production.
    pub group: String,
    /// How many entries one read or claim returns at most (`COUNT`), bounding the work in hand.
    pub batch_size: usize,
    /// How long one read waits for new entries (`BLOCK`); also how often cancellation
    /// and the claim timer are looked at while the stream is quiet.
    pub block: Duration,
    /// How often pending entries of other members are looked for.
    pub claim_interval: Duration,
    /// How long an entry must have been pending, unacknowledged, before another member takes it.
    pub min_idle: Duration,
    /// After this many deliveries without an acknowledgement an entry is dead-lettered.
    pub max_deliveries: usize,
    /// How long one non-blocking command may take before the connection is deemed dead.
    pub command_timeout: Duration,
    /// The cap of the first wait before reconnecting.
    pub reconnect_initial: Duration,
    /// The longest wait before reconnecting.
    pub reconnect_max: Duration,
}

impl StreamConsumerConfig {
    /// Defaults for the member named `consumer`.
    pub fn new(consumer: impl Into<String>) -> Self {
        StreamConsumerConfig {
            consumer: consumer.into(),
            group: CONSUMER_GROUP.to_owned(),
            batch_size: 64,
            block: Duration::from_secs(2),
            claim_interval: Duration::from_secs(5),
            min_idle: Duration::from_secs(30),
            max_deliveries: 5,
            command_timeout: Duration::from_secs(2),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
        }
    }

    /// Refuses settings that cannot work.
    pub fn validate(&self) -> Result<(), StreamConsumerError> {
        if self.consumer.is_empty() {
            return Err(StreamConsumerError::Config("the consumer name is empty"));
        }
        if self.group.is_empty() {
            return Err(StreamConsumerError::Config("the group name is empty"));
        }
        if self.batch_size == 0 || self.max_deliveries == 0 {
            return Err(StreamConsumerError::Config(
                "batch_size and max_deliveries must be at least 1",
            ));
        }
        if self.min_idle < self.command_timeout {
            return Err(StreamConsumerError::Config(
                "min_idle must be at least command_timeout, or live consumers' entries get stolen",
            ));
        }
        Ok(())
    }
}

/// Why the consumer could not start at all (failures after start are retried, not returned).
#[derive(Debug, thiserror::Error)]
pub enum StreamConsumerError {
    /// The Redis URL is not valid.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The configuration cannot work.
    #[error("invalid stream consumer config: {0}")]
    Config(&'static str),
}

/// Creates the group on the domain-event stream if it does not exist yet (idempotent).
///
/// A new group starts at `$`: it sees events appended from now on, not the
/// backlog. Producers that must not lose the first events call this (or wait
/// for a notifier to have started) before appending.
pub async fn ensure_group(
    conn: &mut MultiplexedConnection,
    group: &str,
) -> Result<(), redis::RedisError> {
    let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(DOMAIN_EVENTS_STREAM)
        .arg(group)
        .arg("$")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Runs one member of the consumer group on the Redis at `redis_url` until `cancel` fires.
///
/// Connection failures are retried with capped, jittered backoff; the only
/// errors returned are those that no retry can fix (a bad URL or config).
pub async fn run_stream_consumer(
    redis_url: &str,
    config: StreamConsumerConfig,
    broker: Arc<dyn Broker>,
    cancel: CancellationToken,
) -> Result<(), StreamConsumerError> {
    config.validate()?;
    let client = redis::Client::open(redis_url)?;
    let consumer = Consumer {
        client,
        config,
        broker,
        cancel,
    };
    consumer.run().await;
    Ok(())
}

/// Why a session with Redis ended early.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// A stream command failed; reconnect.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Publishing failed; the entry stays pending and is retried.
    #[error("publish: {0}")]
    Broker(#[from] BrokerError),
}

/// Whether to go on after a step.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    /// Keep consuming.
    Continue,
    /// Cancellation was asked for.
    Stop,
}

/// One member of the group, with what it needs to reconnect.
struct Consumer {
    /// Opens connections to the stream's server.
    client: redis::Client,
    /// Settings.
    config: StreamConsumerConfig,
    /// Where notifications are published.
    broker: Arc<dyn Broker>,
    /// Stops the member between entries.
    cancel: CancellationToken,
}

impl Consumer {
    async fn run(self) {
        let mut backoff = Backoff::new(self.config.reconnect_initial, self.config.reconnect_max);
        info!(consumer = %self.config.consumer, group = %self.config.group, "stream consumer starting");
        loop {
            match self.session(&mut backoff).await {
                Ok(()) => break,
                Err(why) => {
                    warn!(consumer = %self.config.consumer, error = %why, "stream consumer session ended; retrying")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_wait()) => {}
                () = self.cancel.cancelled() => break,
            }
        }
        info!(consumer = %self.config.consumer, "stream consumer stopped");
    }

    async fn connect(
        &self,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, redis::RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.command_timeout))
            .set_response_timeout(Some(response_timeout));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// One connection's lifetime: `Ok` when cancelled, `Err` when it must reconnect.
    async fn session(&self, backoff: &mut Backoff) -> Result<(), Failure> {
        // A blocking read holds its connection, so it gets one of its own.
        let mut reader = tokio::select! {
            conn = self.connect(self.config.block + self.config.command_timeout) => conn?,
            () = self.cancel.cancelled() => return Ok(()),
        };
        let mut conn = tokio::select! {
            conn = self.connect(self.config.command_timeout) => conn?,
            () = self.cancel.cancelled() => return Ok(()),
        };
        ensure_group(&mut conn, &self.config.group).await?;
        backoff.reset();
        debug!(consumer = %self.config.consumer, "stream consumer connected");

        if self.resume_own_pending(&mut conn).await? == Flow::Stop {
            return Ok(());
        }
        let mut claim_cursor = "0-0".to_owned();
        let mut next_claim = Instant::now();
        loop {
            if self.cancel.is_cancelled() {
                return Ok(());
            }
            if Instant::now() >= next_claim {
                if self.claim_abandoned(&mut conn, &mut claim_cursor).await? == Flow::Stop {
                    return Ok(());
                }
                next_claim = Instant::now() + self.config.claim_interval;
            }
            let until_claim = next_claim.saturating_duration_since(Instant::now());
            let block_ms = self
                .config
                .block
                .min(until_claim)
                .as_millis()
                .clamp(1, u128::from(u32::MAX));
            let read = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.config.group)
                .arg(&self.config.consumer)
                .arg("COUNT")
                .arg(self.config.batch_size)
                .arg("BLOCK")
                .arg(u64::try_from(block_ms).unwrap_or(u64::from(u32::MAX)))
                .arg("STREAMS")
                .arg(DOMAIN_EVENTS_STREAM)
                .arg(">")
                .to_owned();
            let reply: redis::Value = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Ok(()),
                reply = read.query_async(&mut reader) => reply?,
            };
            if self.process_all(&mut conn, read_reply(reply)).await? == Flow::Stop {
                return Ok(());
            }
        }
    }

    /// Handles the entries this consumer name was given before and never acknowledged.
    async fn resume_own_pending(&self, conn: &mut MultiplexedConnection) -> Result<Flow, Failure> {
        let mut after = "0".to_owned();
        loop {
            let reply: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.config.group)
                .arg(&self.config.consumer)
                .arg("COUNT")
                .arg(self.config.batch_size)
                .arg("STREAMS")
                .arg(DOMAIN_EVENTS_STREAM)
                .arg(&after)
                .query_async(conn)
                .await?;
            let entries = read_reply(reply);
            let Some(last) = entries.last() else {
                return Ok(Flow::Continue);
            };
            after = last.id.clone();
            info!(consumer = %self.config.consumer, count = entries.len(), "resuming own pending entries");
            if self.process_all(conn, entries).await? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
    }

    /// Takes over entries other members left pending too long; dead-letters those redelivered too often.
    async fn claim_abandoned(
        &self,
        conn: &mut MultiplexedConnection,
        cursor: &mut String,
    ) -> Result<Flow, Failure> {
        let min_idle_ms = u64::try_from(self.config.min_idle.as_millis()).unwrap_or(u64::MAX);

        let pending: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(DOMAIN_EVENTS_STREAM)
            .arg(&self.config.group)
            .arg("IDLE")
            .arg(min_idle_ms)
            .arg("-")
            .arg("+")
            .arg(self.config.batch_size)
            .query_async(conn)
            .await?;
        for worn_out in pending
            .ids
            .iter()
            .filter(|p| p.times_delivered >= self.config.max_deliveries)
        {
            let claimed: redis::Value = redis::cmd("XCLAIM")
                .arg(DOMAIN_EVENTS_STREAM)
                .arg(&self.config.group)
                .arg(&self.config.consumer)
                .arg(min_idle_ms)
                .arg(&worn_out.id)
                .query_async(conn)
                .await?;
            for entry in entry_list(claimed) {
                let text = match &entry.event {
                    EventField::Present(text) => text.as_str(),
                    EventField::Missing | EventField::Deleted => "",
                };
                let reason = Rejection::TooManyDeliveries(worn_out.times_delivered);
                warn!(entry = %entry.id, reason = %reason, "dead-lettering an entry nobody acknowledged");
                self.dead_letter(conn, &entry.id, text, &reason).await?;
            }
        }

        let reply: redis::Value = redis::cmd("XAUTOCLAIM")
            .arg(DOMAIN_EVENTS_STREAM)
            .arg(&self.config.group)
            .arg(&self.config.consumer)
            .arg(min_idle_ms)
            .arg(cursor.as_str())
            .arg("COUNT")
            .arg(self.config.batch_size)
            .query_async(conn)
            .await?;
        let (next, entries) = autoclaim_reply(reply);
        *cursor = next;
        if !entries.is_empty() {
            info!(consumer = %self.config.consumer, count = entries.len(), "claimed entries abandoned by another consumer");
        }
        self.process_all(conn, entries).await
    }

    async fn process_all(
        &self,
        conn: &mut MultiplexedConnection,
        entries: Vec<Entry>,
    ) -> Result<Flow, Failure> {
        for entry in entries {
            if self.cancel.is_cancelled() {
                return Ok(Flow::Stop);
            }
            self.process(conn, entry).await?;
        }
        Ok(Flow::Continue)
    }

    /// Publishes one entry's notifications and acknowledges it, or dead-letters it.
    async fn process(&self, conn: &mut MultiplexedConnection, entry: Entry) -> Result<(), Failure> {
        match entry.event {
            EventField::Deleted => self.ack(conn, &entry.id).await,
            EventField::Missing => {
                self.dead_letter(conn, &entry.id, "", &Rejection::NoEventField)
                    .await
            }
            EventField::Present(text) => {
                match deliver_text(&*self.broker, &text, RawSink::Once(conn)).await? {
                    Delivered::Published(_) => self.ack(conn, &entry.id).await,
                    Delivered::Rejected(rejection) => {
                        warn!(entry = %entry.id, reason = %rejection, "dead-lettering an event that cannot be handled");
                        self.dead_letter(conn, &entry.id, &text, &rejection).await
                    }
                }
            }
        }
    }

    async fn ack(&self, conn: &mut MultiplexedConnection, id: &str) -> Result<(), Failure> {
        let _acked: i64 = redis::cmd("XACK")
            .arg(DOMAIN_EVENTS_STREAM)
            .arg(&self.config.group)
            .arg(id)
            .query_async(conn)
            .await?;
        Ok(())
    }

    /// Parks an entry in the dead-letter stream and acknowledges it, atomically.
    async fn dead_letter(
        &self,
        conn: &mut MultiplexedConnection,
        id: &str,
        event: &str,
        reason: &Rejection,
    ) -> Result<(), Failure> {
        redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(DEAD_LETTER_STREAM)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAXLEN)
            .arg("*")
            .arg("event")
            .arg(event)
            .arg("reason")
            .arg(reason.to_string())
            .arg("consumer")
            .arg(&self.config.consumer)
            .arg("entry")
            .arg(id)
            .ignore()
            .cmd("XACK")
            .arg(DOMAIN_EVENTS_STREAM)
            .arg(&self.config.group)
            .arg(id)
            .ignore()
            .query_async::<()>(conn)
            .await?;
        Ok(())
    }
}

//! The Redis side of the bench: wait until the gateways have subscribed, then
//! publish the numbered, timestamped payloads at a steady rate.
//!
//! Publishing runs on a 1 ms tick. Each tick computes how many messages are
//! due by now (so a late tick catches up instead of lowering the rate), packs
//! them into one pipeline and hands it to the multiplexed connection without
//! waiting for the reply: replies are collected as they come, so a slow Redis
//! never stalls the clock and high rates stay reachable.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::aio::MultiplexedConnection;
use tokio::time::MissedTickBehavior;
use tracing::warn;

use crate::BenchError;
use crate::payload::{encode_into, now_us};

/// The publishing clock's period.
const TICK: Duration = Duration::from_millis(1);
/// How often `PUBSUB NUMSUB` is asked while waiting for subscribers.
const NUMSUB_POLL: Duration = Duration::from_millis(50);
/// How long one Redis command may take before it counts as failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long opening the Redis connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the multiplexed (pipelining) connection the bench publishes and asks on.
pub(crate) async fn connect(redis_url: &str) -> Result<MultiplexedConnection, BenchError> {
    let redis_err = |source| BenchError::Redis {
        url: redis_url.to_owned(),
        source,
    };
    let client = redis::Client::open(redis_url).map_err(redis_err)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(redis_err)
}

/// Polls `PUBSUB NUMSUB channel` until at least `want` connections subscribe to it,
/// for at most `timeout`; returns the last count.
pub(crate) async fn wait_for_subscribers(
    conn: &mut MultiplexedConnection,
    channel: &str,
    want: u64,
    timeout: Duration,
) -> Result<u64, BenchError> {
    let started = Instant::now();
    loop {
        let (_, count): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(conn)
            .await
            .map_err(BenchError::Publish)?;
        if count >= want {
            return Ok(count);
        }
        if started.elapsed() >= timeout {
            return Err(BenchError::SubscribeTimeout {
                channel: channel.to_owned(),
                want,
                got: count,
                waited: timeout,
            });
        }
        tokio::time::sleep(NUMSUB_POLL).await;
    }
}

/// What to publish.
#[derive(Debug, Clone)]
pub(crate) struct PublishPlan {
    /// The Redis channel.
    pub(crate) channel: String,
    /// Messages per second.
    pub(crate) rate: f64,
    /// How many messages in total.
    pub(crate) messages: u64,
    /// The size of each payload.
    pub(crate) payload_bytes: usize,
}

/// What publishing did.
#[derive(Debug, Clone, Default)]
pub(crate) struct PublishOutcome {
    /// Messages handed to Redis.
    pub(crate) published: u64,
    /// When the first message was stamped, in microseconds since the epoch.
    pub(crate) first_us: u64,
    /// When the last message was stamped, in microseconds since the epoch.
    pub(crate) last_us: u64,
    /// Messages whose PUBLISH failed or whose reply never came.
    pub(crate) failed: u64,
    /// Messages Redis delivered to no subscriber at all.
    pub(crate) without_subscriber: u64,
    /// The first error seen, if any.
    pub(crate) first_error: Option<String>,
}

/// Publishes `plan.messages` messages at `plan.rate` per second, then waits for every reply.
pub(crate) async fn publish(conn: &MultiplexedConnection, plan: &PublishPlan) -> PublishOutcome {
    let mut outcome = PublishOutcome::default();
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut in_flight = FuturesUnordered::new();
    let mut buf = Vec::with_capacity(plan.payload_bytes + 64);
    let mut sent: u64 = 0;
    let started = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = interval.tick(), if sent < plan.messages => {
                // One message goes out at once, then one every 1/rate seconds.
                let due_f = started.elapsed().as_secs_f64() * plan.rate + 1.0;
                let due = if due_f >= plan.messages as f64 { plan.messages } else { due_f as u64 };
                if due <= sent {
                    continue;
                }
                let mut pipe = redis::pipe();
                let ts = now_us();
                if sent == 0 {
                    outcome.first_us = ts;
                }
                for seq in sent..due {
                    encode_into(&mut buf, seq, ts, plan.payload_bytes);
                    pipe.cmd("PUBLISH").arg(&plan.channel).arg(&buf[..]);
                }
                outcome.last_us = ts;
                let count = due - sent;
                sent = due;
                let mut conn = conn.clone();
                in_flight.push(async move {
                    (count, pipe.query_async::<Vec<u64>>(&mut conn).await)
                });
            }
            Some((count, reply)) = in_flight.next(), if !in_flight.is_empty() => match reply {
                Ok(receivers) => {
                    outcome.without_subscriber += receivers.iter().filter(|&&n| n == 0).count() as u64;
                }
                Err(e) => {
                    outcome.failed += count;
                    if outcome.first_error.is_none() {
                        warn!(error = %e, "PUBLISH pipeline failed");
                        outcome.first_error = Some(e.to_string());
                    }
                }
            },
            else => break,
        }
    }
    outcome.published = sent;
    outcome
}

//! The event bus that carries every published message to every gateway instance.
//!
//! The hub (in `herald-gateway`) never talks to Redis itself: it talks to a
//! [`Broker`]. A broker has two jobs. It keeps the bus subscribed to exactly
//! the channels this instance has local subscribers for, and it hands every
//! message that arrives on those channels — and, in their place among them,
//! the notice of any gap it could not fill — to the hub through a bounded
//! [`Inbox`] of [`BusEvent`]s. Swapping the in-process broker for Redis (and later Redis
//! Cluster) changes nothing in the hub.
//!
//! # Layout
//!
//! - [`interest`]: which channels the hub wants and which the bus has confirmed; shared by every broker.
//! - [`memory`]: the in-process broker, for one instance and for tests.
//! - [`redis_pubsub`]: Redis Pub/Sub, with reconnect, re-subscribe and a liveness ping.
//! - [`backoff`]: capped exponential backoff with full jitter, for every retry loop.
//! - [`history`]: which channels keep history, and the verdict on a recovery.
//! - [`redis_streams`]: history in Redis Streams, and the one script that appends and publishes.
//! - [`idempotency`]: the in-process broker's bounded memory of idempotency keys.

pub mod backoff;
pub mod history;
pub mod idempotency;
pub mod interest;
pub mod memory;
pub mod redis_pubsub;
pub mod redis_streams;

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use herald_protocol::envelope;
use herald_protocol::{ChannelName, GapReason, Position};
use tokio::sync::{mpsc, watch};

pub use history::{HistoryPolicy, HistoryRules, Recovery};
pub use memory::MemoryBroker;
pub use redis_pubsub::{RedisBroker, RedisBrokerConfig};

/// One message as it came off the bus.
///
/// Either a raw payload (a plain `PUBLISH`, as in the tutorial), or JSON data
/// published through Herald, which may carry a history position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusMessage {
    /// The channel the message was published to.
    pub channel: ChannelName,
    /// The raw payload exactly as published, or the JSON data of a Herald message.
    pub payload: Bytes,
    /// The message's place in the channel's history, when the channel keeps one.
    pub position: Option<Position>,
    /// When it was published (milliseconds since the UNIX epoch), for Herald messages.
    pub time_ms: Option<u64>,
    /// Whether `payload` is JSON data published through Herald (else a raw payload).
    pub json: bool,
}

impl BusMessage {
    /// A raw payload, as a plain `PUBLISH` sends it.
    pub fn raw(channel: ChannelName, payload: Bytes) -> Self {
        BusMessage {
            channel,
            payload,
            position: None,
            time_ms: None,
            json: false,
        }
    }

    /// A message as it arrives from the bus: an envelope is opened, anything else is raw.
    pub fn from_wire(channel: ChannelName, wire: &[u8]) -> Self {
        match envelope::open(wire) {
            Some((header, data)) => BusMessage {
                channel,
                payload: Bytes::copy_from_slice(data),
                position: header.position(),
                time_ms: Some(header.time_ms),
                json: true,
            },
            None => BusMessage::raw(channel, Bytes::copy_from_slice(wire)),
        }
    }
}

/// A gap in a channel's delivery that the channel's clients must be told about.
///
/// A broker that loses messages it cannot get back from history (its own
/// connection dropped and history no longer covers the outage, or history
/// itself was lost) says so with a gap, in order with the channel's messages:
/// what follows on the channel comes after `position`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The channel that has the gap.
    pub channel: ChannelName,
    /// Why its clients' positions are void.
    pub reason: GapReason,
    /// The channel's position now, `None` when the broker could not read it.
    pub position: Option<Position>,
}

/// What a broker hands the hub: a channel's messages, and in their place among
/// them the notice of a gap.
///
/// A gap rides the same inbox as the messages because it must keep its order
/// with them: what follows a gap on its channel comes after the gap's
/// position, and a second queue could overtake (or be overtaken by) them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    /// A message published on a subscribed channel, or recovered from its history.
    Message(BusMessage),
    /// Messages of the channel may be lost; its clients must be told.
    Gap(Gap),
}

impl BusEvent {
    /// The channel the event belongs to, which picks the clients it goes to.
    pub fn channel(&self) -> &ChannelName {
        match self {
            BusEvent::Message(message) => &message.channel,
            BusEvent::Gap(gap) => &gap.channel,
        }
    }
}

/// A message to publish through Herald: JSON data, maybe kept in history, maybe deduplicated.
#[derive(Debug, Clone, Copy)]
pub struct PublishRequest<'a> {
    /// Where to publish.
    pub channel: &'a ChannelName,
    /// The data, already valid JSON.
    pub data: &'a [u8],
    /// Keep the message in the channel's history, with a position.
    pub history: Option<HistoryPolicy>,
    /// Publish at most once per key within the window; a retry gets the first result.
    pub idempotency: Option<(&'a str, Duration)>,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The message's position, when the channel keeps history.
    pub position: Option<Position>,
    /// Its publish time, milliseconds since the UNIX epoch.
    pub time_ms: u64,
    /// Whether this was a retry answered with the first publish's result.
    pub duplicate: bool,
}

/// The most messages one recovery may return; a client that missed more is told it cannot recover.
pub const MAX_RECOVERY: usize = 10_000;

/// The receiving end of a broker: every message on a subscribed channel, and
/// every gap among them, in bus order.
///
/// Bounded, so a hub that falls behind slows the broker's reader down instead of
/// letting messages pile up in memory without limit.
pub type Inbox = mpsc::Receiver<BusEvent>;

/// How many bus events may wait between a broker and the hub.
pub const INBOX_CAPACITY: usize = 4096;

/// Whether the broker can currently deliver messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerStatus {
    /// Not connected yet, or connecting again after a loss; nothing is delivered now.
    Connecting,
    /// Connected, subscribed, and answering liveness pings.
    Connected,
    /// Shut down for good.
    Closed,
}

/// Why a broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The bus answered something Herald did not expect (e.g. a damaged history entry).
    #[error("unexpected reply from the bus: {0}")]
    Unexpected(String),
    /// The bus could not be reached or refused the command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The bus did not answer within the deadline.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The broker was shut down.
    #[error("broker is closed")]
    Closed,
    /// The broker URL was not one Herald understands.
    #[error("unsupported broker url {0:?}: use memory:// or redis://host:port[/db]")]
    BadUrl(String),
}

/// The contract between the hub and the event bus.
///
/// `subscribe` and `unsubscribe` are declarations, not commands: they return at
/// once and the broker brings the bus in line with them in the background (and
/// again after every reconnect). The hub calls them only on edges — the first
/// local subscriber of a channel and the last one leaving — so the bus holds
/// one subscription per channel per instance, never one per client.
pub trait Broker: Send + Sync + 'static {
    /// Declares that this instance wants the channel's messages.
    fn subscribe(&self, channel: &ChannelName);

    /// Declares that this instance no longer wants the channel's messages.
    fn unsubscribe(&self, channel: &ChannelName);

    /// Resolves once the bus has confirmed a subscription to `channel`.
    ///
    /// A caller that must not miss the first message (a test, a recovering
    /// client) waits for this before it relies on live delivery.
    fn until_subscribed<'a>(
        &'a self,
        channel: &'a ChannelName,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Publishes a raw `payload` on `channel` to every instance, like a plain `PUBLISH`:
    /// no position, no history.
    fn publish<'a>(
        &'a self,
        channel: &'a ChannelName,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Publishes JSON data through Herald: appended to the channel's history (when
    /// `history` is set) and published live in one atomic step, so the two never disagree.
    fn publish_json<'a>(
        &'a self,
        request: PublishRequest<'a>,
    ) -> BoxFuture<'a, Result<Published, BrokerError>>;

    /// Reads the channel's current position and, when `since` is given, every
    /// message after it (at most `limit`), for a channel that keeps `policy`.
    ///
    /// Callers subscribe first and read history second, then drop live
    /// messages at or before the last recovered position: that order leaves no
    /// gap and no duplicate at the seam.
    fn recover<'a>(
        &'a self,
        channel: &'a ChannelName,
        since: Option<&'a Position>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Recovery, BrokerError>>;

    /// The broker's status, updated as it connects, loses and regains the bus.
    fn status(&self) -> watch::Receiver<BrokerStatus>;

    /// Stops every background task of the broker and waits for them to finish.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// Opens the broker a URL names: `memory://` or `redis://host:port[/db]`.
pub fn connect(
    url: &str,
    config: RedisBrokerConfig,
) -> Result<(std::sync::Arc<dyn Broker>, Inbox), BrokerError> {
    if url == "memory://" || url == "memory" {
        let (broker, inbox) = MemoryBroker::new();
        return Ok((std::sync::Arc::new(broker), inbox));
    }
    if url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("redis+unix://")
    {
        let (broker, inbox) = RedisBroker::connect(url, config)?;
        return Ok((std::sync::Arc::new(broker), inbox));
    }
    Err(BrokerError::BadUrl(url.to_owned()))
}

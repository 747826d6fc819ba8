//! Redis Pub/Sub as the bus between gateway instances.
//!
//! One dedicated Pub/Sub connection per instance carries every subscription,
//! whatever the number of clients. A single task owns that connection: it
//! applies the hub's declarations ([`Interest`]), forwards messages to the
//! inbox, pings Redis to prove the connection is alive, and when anything goes
//! wrong it reconnects with capped, jittered backoff and subscribes to every
//! wanted channel again. Publishing uses a separate multiplexed connection,
//! because a connection in subscribe mode cannot publish.
//!
//! The ping matters: a subscriber connection can stay open while Redis no
//! longer sends it anything (a half-dead TCP path, a paused server). Such a
//! gateway would look healthy and lose every message silently. So the status
//! is `Connected` only while pings on the subscriber connection itself answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use std::collections::HashMap;

use herald_protocol::{ChannelName, GapReason, Position};
use redis::aio::{
    ConnectionManager, ConnectionManagerConfig, MultiplexedConnection, PubSubSink, PubSubStream,
};
use tokio::sync::{OnceCell, mpsc, watch};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::history::Recovery;
use crate::interest::Interest;
use crate::redis_streams;
use crate::{
    Broker, BrokerError, BrokerStatus, BusEvent, BusMessage, Gap, INBOX_CAPACITY, Inbox,
    MAX_RECOVERY, PublishRequest, Published,
};

/// How many channels one SUBSCRIBE or UNSUBSCRIBE names at most, so that
/// re-subscribing thousands of channels after a reconnect stays a few commands
/// of bounded size.
const SUBSCRIBE_BATCH: usize = 512;

/// Timings of the Redis broker; every field has a default that suits a LAN.
#[derive(Debug, Clone)]
pub struct RedisBrokerConfig {
    /// How often the subscriber connection is pinged to prove it is alive.
    pub ping_interval: Duration,
    /// How long a ping, a (un)subscribe or a publish may take before the connection is deemed dead.
    pub command_timeout: Duration,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// The cap of the first reconnect wait.
    pub reconnect_initial: Duration,
    /// The longest reconnect wait.
    pub reconnect_max: Duration,
    /// The most messages one channel's gap fill forwards after a reconnect; a
    /// larger gap is announced to the channel's clients instead of read, so a
    /// fill never holds an unbounded reply in memory.
    pub gap_fill_max: usize,
    /// How long one channel's gap-fill read may take before it is given up and announced.
    pub gap_fill_timeout: Duration,
}

impl Default for RedisBrokerConfig {
    fn default() -> Self {
        RedisBrokerConfig {
            ping_interval: Duration::from_secs(3),
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            gap_fill_max: MAX_RECOVERY,
            gap_fill_timeout: Duration::from_secs(2),
        }
    }
}

/// A broker backed by Redis Pub/Sub.
pub struct RedisBroker {
    /// Opens connections to the configured server.
    client: redis::Client,
    /// Channels the hub wants, and those the subscriber connection has confirmed.
    interest: Arc<Interest>,
    /// Connected only while the subscriber connection answers pings.
    status: watch::Sender<BrokerStatus>,
    /// The multiplexed connection used to publish, opened on first use; it reconnects by itself.
    publisher: OnceCell<ConnectionManager>,
    /// Timings.
    config: RedisBrokerConfig,
    /// Tells the subscriber task to stop.
    shutdown: CancellationToken,
    /// Owns the subscriber task, so shutdown can wait for it.
    tasks: TaskTracker,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// Starts a broker for the Redis server at `url`.
    ///
    /// Returns at once: the connection is made in the background and retried
    /// until it succeeds, so a gateway can start before its Redis does (and
    /// reports not-ready until then). Must be called within a Tokio runtime.
    pub fn connect(url: &str, config: RedisBrokerConfig) -> Result<(Self, Inbox), BrokerError> {
        let client = redis::Client::open(url)?;
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        let broker = RedisBroker {
            client: client.clone(),
            interest: Arc::new(Interest::default()),
            status: watch::Sender::new(BrokerStatus::Connecting),
            publisher: OnceCell::new(),
            config,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        let subscriber = Subscriber {
            last: HashMap::new(),
            client,
            interest: broker.interest.clone(),
            status: broker.status.clone(),
            inbox: tx,
            config: broker.config.clone(),
            shutdown: broker.shutdown.clone(),
        };
        broker.tasks.spawn(subscriber.run());
        broker.tasks.close();
        Ok((broker, rx))
    }

    async fn publisher(&self) -> Result<ConnectionManager, BrokerError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(Some(self.config.command_timeout))
            .set_number_of_retries(2);
        let manager = self
            .publisher
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config))
            .await?;
        Ok(manager.clone())
    }
}

impl Broker for RedisBroker {
    fn subscribe(&self, channel: &ChannelName) {
        self.interest.want(channel);
    }

    fn unsubscribe(&self, channel: &ChannelName) {
        self.interest.unwant(channel);
    }

    fn until_subscribed<'a>(
        &'a self,
        channel: &'a ChannelName,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            tokio::select! {
                () = self.interest.until_active(channel) => Ok(()),
                () = self.shutdown.cancelled() => Err(BrokerError::Closed),
            }
        })
    }

    fn publish<'a>(
        &'a self,
        channel: &'a ChannelName,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let mut conn = self.publisher().await?;
            let _receivers: i64 = redis::cmd("PUBLISH")
                .arg(channel.as_str())
                .arg(payload.as_ref())
                .query_async(&mut conn)
                .await?;
            Ok(())
        })
    }

    fn publish_json<'a>(
        &'a self,
        request: PublishRequest<'a>,
    ) -> BoxFuture<'a, Result<Published, BrokerError>> {
        Box::pin(async move {
            let mut conn = self.publisher().await?;
            redis_streams::publish_json(&mut conn, request).await
        })
    }

    fn recover<'a>(
        &'a self,
        channel: &'a ChannelName,
        since: Option<&'a Position>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Recovery, BrokerError>> {
        Box::pin(async move {
            let mut conn = self.publisher().await?;
            match redis_streams::recover(&mut conn, channel, since, limit).await {
                // The connection died since its last use (say Redis restarted) and is now being
                // replaced. A read is safe to repeat, so it is tried once more on the new one.
                Err(BrokerError::Redis(e))
                    if e.is_io_error()
                        || e.is_connection_dropped()
                        || e.is_connection_refusal() =>
                {
                    let mut conn = self.publisher().await?;
                    redis_streams::recover(&mut conn, channel, since, limit).await
                }
                other => other,
            }
        })
    }

    fn status(&self) -> watch::Receiver<BrokerStatus> {
        self.status.subscribe()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.shutdown.cancel();
        Box::pin(async move {
            self.tasks.wait().await;
            self.status.send_replace(BrokerStatus::Closed);
        })
    }
}

/// Why a subscriber connection ended.
enum Ended {
    /// Shutdown was asked for, or the hub is gone: do not reconnect.
    Stop,
    /// The connection failed or went quiet: reconnect.
    Lost(String),
}

/// The task that owns the Pub/Sub connection.
struct Subscriber {
    /// The last position forwarded per channel with history: what to recover
    /// from after a reconnect, and what live messages must come after.
    last: HashMap<ChannelName, Position>,
    client: redis::Client,
    interest: Arc<Interest>,
    status: watch::Sender<BrokerStatus>,
    inbox: mpsc::Sender<BusEvent>,
    config: RedisBrokerConfig,
    shutdown: CancellationToken,
}

impl Subscriber {
    async fn run(mut self) {
        let mut backoff = Backoff::new(self.config.reconnect_initial, self.config.reconnect_max);
        loop {
            let ended = self.connect_and_serve(&mut backoff).await;
            self.interest.connection_lost();
            match ended {
                Ended::Stop => break,
                Ended::Lost(why) => {
                    if self.status.send_replace(BrokerStatus::Connecting) == BrokerStatus::Connected
                    {
                        warn!(reason = %why, "lost the redis subscriber connection; reconnecting");
                    } else {
                        debug!(reason = %why, "redis not reachable yet");
                    }
                }
            }
            let wait = backoff.next_wait();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.shutdown.cancelled() => break,
            }
        }
        self.status.send_replace(BrokerStatus::Closed);
    }

    async fn connect_and_serve(&mut self, backoff: &mut Backoff) -> Ended {
        let pubsub = tokio::select! {
            result = timeout(self.config.connect_timeout, self.client.get_async_pubsub()) => match result {
                Ok(Ok(pubsub)) => pubsub,
                Ok(Err(e)) => return Ended::Lost(format!("connect: {e}")),
                Err(_) => return Ended::Lost("connect: timed out".to_owned()),
            },
            () = self.shutdown.cancelled() => return Ended::Stop,
        };
        let (mut sink, stream) = pubsub.split();
        if let Err(why) = self.reconcile(&mut sink).await {
            return Ended::Lost(why);
        }
        if let Err(why) = self.fill_gaps().await {
            return Ended::Lost(why);
        }
        let resubscribed = self.interest.wanted_count();
        self.status.send_replace(BrokerStatus::Connected);
        info!(channels = resubscribed, "redis subscriber connected");
        backoff.reset();
        self.serve(sink, stream).await
    }

    async fn serve(&mut self, mut sink: PubSubSink, mut stream: PubSubStream) -> Ended {
        let mut ping = tokio::time::interval(self.config.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Ended::Stop,
                msg = stream.next() => {
                    let Some(msg) = msg else { return Ended::Lost("connection closed".to_owned()) };
                    let Ok(channel) = ChannelName::new(msg.get_channel_name()) else {
                        // Only channels we subscribed to arrive, and those were validated.
                        continue;
                    };
                    let message = BusMessage::from_wire(channel, msg.get_payload_bytes());
                    if !self.forward(message).await {
                        return Ended::Stop;
                    }
                }
                () = self.interest.changed() => {
                    if let Err(why) = self.reconcile(&mut sink).await {
                        return Ended::Lost(why);
                    }
                }
                _ = ping.tick() => {
                    match timeout(self.config.command_timeout, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Ended::Lost(format!("ping: {e}")),
                        Err(_) => return Ended::Lost(format!("ping: no answer within {:?}", self.config.command_timeout)),
                    }
                }
            }
        }
    }

    /// Hands a message to the hub, unless it is a repeat of one already forwarded.
    /// Returns `false` when the hub is gone.
    async fn forward(&mut self, message: BusMessage) -> bool {
        if let Some(position) = &message.position {
            if let Some(last) = self.last.get(&message.channel)
                && !position.is_after(last)
            {
                return true;
            }
            self.last.insert(message.channel.clone(), position.clone());
        }
        self.inbox.send(BusEvent::Message(message)).await.is_ok()
    }

    /// After a reconnect, forwards from history what was published while the
    /// connection was down, for every channel with a known position, before any
    /// live message of the new connection.
    ///
    /// A channel whose gap cannot be filled — its read fails or times out, or
    /// history no longer covers the outage — is announced to its clients with a
    /// [`Gap`] and the fill moves on: one channel never holds the others back.
    /// Fails only when no history connection can be opened at all, which is a
    /// lost connection to Redis, not a channel's problem.
    async fn fill_gaps(&mut self) -> Result<(), String> {
        let interest = &self.interest;
        self.last.retain(|channel, _| interest.is_wanted(channel));
        if self.last.is_empty() {
            return Ok(());
        }
        let positions: Vec<(ChannelName, Position)> = self
            .last
            .iter()
            .map(|(c, p)| (c.clone(), p.clone()))
            .collect();
        let mut conn = None;
        for (channel, since) in positions {
            if !self.fill_channel(&mut conn, &channel, &since).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Fills one channel's gap after `since`, or announces it. Returns `false` when the hub is gone.
    async fn fill_channel(
        &mut self,
        conn: &mut Option<MultiplexedConnection>,
        channel: &ChannelName,
        since: &Position,
    ) -> Result<bool, String> {
        let limit = self.config.gap_fill_max;
        let recovery = match self.read_history(conn, channel, Some(since), limit).await? {
            Ok(recovery) => recovery,
            Err(why) => {
                warn!(%channel, since = %since, %why, "could not read history to fill the gap of the outage; telling the channel's clients");
                // Reading only the position skips the XRANGE, so it often answers when the fill did not.
                let position = self
                    .read_history(conn, channel, None, 0)
                    .await?
                    .ok()
                    .map(|now| now.position);
                return Ok(self
                    .announce(channel, GapReason::Unrecoverable, position)
                    .await);
            }
        };
        if recovery.complete {
            if !recovery.messages.is_empty() {
                info!(%channel, missed = recovery.messages.len(), "filled the gap of the outage from history");
            }
            return Ok(self.forward_all(recovery.messages).await);
        }
        if recovery.position.epoch == since.epoch {
            warn!(%channel, since = %since, now = %recovery.position, "history cannot fill the gap of the outage (trimmed, expired or over the fill's bound); telling the channel's clients");
            return Ok(self
                .announce(channel, GapReason::Unrecoverable, Some(recovery.position))
                .await);
        }
        // History was lost and started a new epoch (Redis restarted empty): the old
        // epoch's messages are gone, but whatever the new one holds is still forwarded.
        warn!(%channel, since = %since, now = %recovery.position, "the channel's history started a new epoch; telling its clients");
        if recovery.position.offset == 0 {
            // Nothing published since the loss: the channel has no epoch yet (a read
            // answers a one-off name no message will carry), so there is no position
            // to hand out; the next message starts the new epoch.
            return Ok(self.announce(channel, GapReason::EpochChanged, None).await);
        }
        let start = Position::new(0, recovery.position.epoch.clone());
        match self
            .read_history(conn, channel, Some(&start), limit)
            .await?
        {
            Ok(fresh) if fresh.complete => Ok(self
                .announce(channel, GapReason::EpochChanged, Some(start))
                .await
                && self.forward_all(fresh.messages).await),
            Ok(fresh) => Ok(self
                .announce(channel, GapReason::EpochChanged, Some(fresh.position))
                .await),
            Err(_) => Ok(self
                .announce(channel, GapReason::EpochChanged, Some(recovery.position))
                .await),
        }
    }

    /// Reads `channel`'s history after `since` (at most `limit` messages) on the
    /// fill's connection, within [`RedisBrokerConfig::gap_fill_timeout`].
    ///
    /// The outer error means no connection could be opened (Redis is gone);
    /// the inner one that this read failed. A connection that broke is replaced
    /// and the read tried once more; one that timed out is dropped, so that its
    /// late answer cannot delay the next channel's read.
    async fn read_history(
        &self,
        conn: &mut Option<MultiplexedConnection>,
        channel: &ChannelName,
        since: Option<&Position>,
        limit: usize,
    ) -> Result<Result<Recovery, String>, String> {
        let wait = self.config.gap_fill_timeout;
        for attempt in 0..2 {
            let open = match conn.take() {
                Some(open) => open,
                None => self.open_history_connection().await?,
            };
            let mut reading = open.clone();
            match timeout(
                wait,
                redis_streams::recover(&mut reading, channel, since, limit),
            )
            .await
            {
                Ok(Ok(recovery)) => {
                    *conn = Some(open);
                    return Ok(Ok(recovery));
                }
                Ok(Err(BrokerError::Redis(e)))
                    if attempt == 0
                        && (e.is_io_error()
                            || e.is_connection_dropped()
                            || e.is_connection_refusal()) => {}
                Ok(Err(e)) => {
                    *conn = Some(open);
                    return Ok(Err(e.to_string()));
                }
                Err(_) => return Ok(Err(format!("no answer within {wait:?}"))),
            }
        }
        Ok(Err("the connection broke twice".to_owned()))
    }

    async fn open_history_connection(&self) -> Result<MultiplexedConnection, String> {
        match timeout(
            self.config.connect_timeout,
            self.client.get_multiplexed_async_connection(),
        )
        .await
        {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(format!("history connection: {e}")),
            Err(_) => Err("history connection: timed out".to_owned()),
        }
    }

    /// Forwards recovered messages in order. Returns `false` when the hub is gone.
    async fn forward_all(&mut self, messages: Vec<BusMessage>) -> bool {
        for message in messages {
            if !self.forward(message).await {
                return false;
            }
        }
        true
    }

    /// Tells the channel's clients about a gap, in order with its messages, and
    /// goes on from `position`: live messages at or before it were part of the
    /// gap. Returns `false` when the hub is gone.
    async fn announce(
        &mut self,
        channel: &ChannelName,
        reason: GapReason,
        position: Option<Position>,
    ) -> bool {
        match &position {
            Some(position) => self.last.insert(channel.clone(), position.clone()),
            None => self.last.remove(channel),
        };
        let gap = Gap {
            channel: channel.clone(),
            reason,
            position,
        };
        self.inbox.send(BusEvent::Gap(gap)).await.is_ok()
    }

    /// Brings the connection's subscriptions in line with what the hub wants.
    async fn reconcile(&mut self, sink: &mut PubSubSink) -> Result<(), String> {
        let delta = self.interest.delta();
        for batch in delta.subscribe.chunks(SUBSCRIBE_BATCH) {
            let names: Vec<&str> = batch.iter().map(ChannelName::as_str).collect();
            match timeout(self.config.command_timeout, sink.subscribe(&names)).await {
                Ok(Ok(())) => self.interest.confirm_subscribed(batch),
                Ok(Err(e)) => return Err(format!("subscribe: {e}")),
                Err(_) => return Err("subscribe: timed out".to_owned()),
            }
        }
        for batch in delta.unsubscribe.chunks(SUBSCRIBE_BATCH) {
            let names: Vec<&str> = batch.iter().map(ChannelName::as_str).collect();
            match timeout(self.config.command_timeout, sink.unsubscribe(&names)).await {
                Ok(Ok(())) => {
                    self.interest.confirm_unsubscribed(batch);
                    // Nobody here listens any more: a later outage must not replay from
                    // this old position to whoever subscribes again.
                    for channel in batch {
                        self.last.remove(channel);
                    }
                }
                Ok(Err(e)) => return Err(format!("unsubscribe: {e}")),
                Err(_) => return Err("unsubscribe: timed out".to_owned()),
            }
        }
        Ok(())
    }
}

//! The in-process broker: the bus of a single instance, and of the embedded demo.
//!
//! Publishing hands the message straight to this instance's hub when the
//! channel has local subscribers. It keeps the same contract as Redis —
//! declarations, confirmations, a bounded inbox — so the hub cannot tell the
//! difference and the same behavioural tests run against both.
//!
//! It is also the history store of `memory://`, with the lifetimes Redis
//! gives the keys: a channel's messages last its TTL after its last publish,
//! its position [`position_ttl`](crate::history::position_ttl) — and then the
//! channel leaves nothing behind. Reading never creates state, so a channel
//! that was only subscribed to costs nothing once its subscribers are gone.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use herald_protocol::{ChannelName, Position};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::time::Instant;

use crate::history::{HistoryPolicy, Recovery, new_epoch};
use crate::idempotency::IdempotencyStore;
use crate::interest::Interest;
use crate::{
    Broker, BrokerError, BrokerStatus, BusEvent, BusMessage, INBOX_CAPACITY, Inbox, PublishRequest,
    Published,
};

/// The in-process history and idempotency records.
#[derive(Debug, Default)]
struct Store {
    /// Per channel that was published to with history: its epoch, last offset and kept messages.
    logs: HashMap<ChannelName, ChannelLog>,
    /// When each log must next be looked at (its messages or its position
    /// expire), soonest first; exactly one entry per log, never later than the
    /// log's own deadline. Swept at every publish and read, so what has expired
    /// is gone by the next call to the broker.
    deadlines: BinaryHeap<Reverse<(Instant, ChannelName)>>,
    /// (channel, key) → first result, bounded.
    idempotency: IdempotencyStore,
}

#[derive(Debug)]
struct ChannelLog {
    epoch: String,
    offset: u64,
    messages: VecDeque<BusMessage>,
    /// When the kept messages expire.
    messages_expire: Instant,
    /// When the position (epoch and offset) expires, and with it the whole log.
    position_expires: Instant,
}

impl ChannelLog {
    fn new(now: Instant) -> Self {
        ChannelLog {
            epoch: new_epoch(),
            offset: 0,
            messages: VecDeque::new(),
            messages_expire: now,
            position_expires: now,
        }
    }

    /// Drops the messages once their TTL has passed, memory included.
    fn expire(&mut self, now: Instant) {
        if self.messages_expire <= now && !self.messages.is_empty() {
            self.messages = VecDeque::new();
        }
    }

    /// When something of this log next expires.
    fn next_deadline(&self) -> Instant {
        if self.messages.is_empty() {
            self.position_expires
        } else {
            self.messages_expire.min(self.position_expires)
        }
    }
}

impl Store {
    /// Expires messages and drops the logs whose position has expired, soonest
    /// first; O(log n) per log that is due, nothing when none is.
    fn sweep(&mut self, now: Instant) {
        while let Some(Reverse((due, _))) = self.deadlines.peek()
            && *due <= now
        {
            let Some(Reverse((_, channel))) = self.deadlines.pop() else {
                break;
            };
            let Some(log) = self.logs.get_mut(&channel) else {
                continue;
            };
            if log.position_expires <= now {
                self.logs.remove(&channel);
                continue;
            }
            log.expire(now);
            self.deadlines.push(Reverse((log.next_deadline(), channel)));
        }
    }

    /// Appends `message` to the channel's log (made if missing) and returns its position.
    fn append(&mut self, message: &BusMessage, policy: HistoryPolicy, now: Instant) -> Position {
        if !self.logs.contains_key(&message.channel) {
            // Its one deadline entry; `sweep` moves it on until the log goes.
            self.deadlines.push(Reverse((now, message.channel.clone())));
        }
        let log = self
            .logs
            .entry(message.channel.clone())
            .or_insert_with(|| ChannelLog::new(now));
        log.expire(now);
        log.offset += 1;
        let position = Position::new(log.offset, log.epoch.clone());
        let mut kept = message.clone();
        kept.position = Some(position.clone());
        log.messages.push_back(kept);
        while log.messages.len() > policy.size {
            log.messages.pop_front();
        }
        log.messages_expire = now + policy.messages_ttl();
        log.position_expires = now + policy.position_ttl();
        position
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A broker whose bus is this process.
#[derive(Debug)]
pub struct MemoryBroker {
    /// The channels the hub wants; always confirmed at once.
    interest: Arc<Interest>,
    /// Where published messages go; the hub holds the receiving end.
    inbox: mpsc::Sender<BusEvent>,
    /// Connected until shut down: there is nothing to lose a connection to.
    status: watch::Sender<BrokerStatus>,
    /// History and idempotency records. An async lock, held while the message is
    /// handed to the inbox, so messages reach the hub in offset order.
    store: Mutex<Store>,
}

impl MemoryBroker {
    /// A new in-process bus and the inbox its messages arrive in.
    pub fn new() -> (Self, Inbox) {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        let broker = MemoryBroker {
            interest: Arc::new(Interest::default()),
            inbox: tx,
            status: watch::Sender::new(BrokerStatus::Connected),
            store: Mutex::new(Store::default()),
        };
        (broker, rx)
    }
}

impl Broker for MemoryBroker {
    fn subscribe(&self, channel: &ChannelName) {
        self.interest.want(channel);
        self.interest
            .confirm_subscribed(std::slice::from_ref(channel));
    }

    fn unsubscribe(&self, channel: &ChannelName) {
        self.interest.unwant(channel);
        self.interest
            .confirm_unsubscribed(std::slice::from_ref(channel));
    }

    fn until_subscribed<'a>(
        &'a self,
        channel: &'a ChannelName,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            self.interest.until_active(channel).await;
            Ok(())
        })
    }

    fn publish<'a>(
        &'a self,
        channel: &'a ChannelName,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            if *self.status.borrow() == BrokerStatus::Closed {
                return Err(BrokerError::Closed);
            }
            // Like Redis Pub/Sub: a message on a channel nobody listens to is gone.
            if !self.interest.is_active(channel) {
                return Ok(());
            }
            let message = BusMessage::raw(channel.clone(), payload);
            self.inbox
                .send(BusEvent::Message(message))
                .await
                .map_err(|_| BrokerError::Closed)
        })
    }

    fn publish_json<'a>(
        &'a self,
        request: PublishRequest<'a>,
    ) -> BoxFuture<'a, Result<Published, BrokerError>> {
        Box::pin(async move {
            if *self.status.borrow() == BrokerStatus::Closed {
                return Err(BrokerError::Closed);
            }
            let now = Instant::now();
            let mut store = self.store.lock().await;
            store.sweep(now);
            if let Some((key, _)) = request.idempotency
                && let Some(first) = store.idempotency.get(request.channel, key, now)
            {
                return Ok(Published {
                    duplicate: true,
                    ..first
                });
            }
            let time_ms = now_ms();
            let mut message = BusMessage {
                channel: request.channel.clone(),
                payload: Bytes::copy_from_slice(request.data),
                position: None,
                time_ms: Some(time_ms),
                json: true,
            };
            if let Some(policy) = request.history {
                message.position = Some(store.append(&message, policy, now));
            }
            let published = Published {
                position: message.position.clone(),
                time_ms,
                duplicate: false,
            };
            if let Some((key, window)) = request.idempotency {
                let expires = now + window.max(Duration::from_millis(1));
                store
                    .idempotency
                    .insert(request.channel, key, published.clone(), expires, now);
            }
            if self.interest.is_active(request.channel) {
                self.inbox
                    .send(BusEvent::Message(message))
                    .await
                    .map_err(|_| BrokerError::Closed)?;
            }
            Ok(published)
        })
    }

    fn recover<'a>(
        &'a self,
        channel: &'a ChannelName,
        since: Option<&'a Position>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Recovery, BrokerError>> {
        Box::pin(async move {
            let now = Instant::now();
            let mut store = self.store.lock().await;
            store.sweep(now);
            let Some(log) = store.logs.get_mut(channel) else {
                // No position yet: nothing is created for a read (see `new_epoch`).
                return Ok(Recovery::judge(
                    Position::new(0, new_epoch()),
                    since,
                    Vec::new(),
                    limit,
                ));
            };
            log.expire(now);
            let top = Position::new(log.offset, log.epoch.clone());
            let found = match since {
                Some(since) if since.epoch == log.epoch => log
                    .messages
                    .iter()
                    .filter(|m| m.position.as_ref().is_some_and(|p| p.offset > since.offset))
                    .take(limit.saturating_add(1))
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            };
            Ok(Recovery::judge(top, since, found, limit))
        })
    }

    fn status(&self) -> watch::Receiver<BrokerStatus> {
        self.status.subscribe()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.status.send_replace(BrokerStatus::Closed);
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_only_what_is_subscribed_in_publish_order() {
        let (broker, mut inbox) = MemoryBroker::new();
        let news = ChannelName::new("news").unwrap();
        let other = ChannelName::new("other").unwrap();
        broker.subscribe(&news);
        broker.until_subscribed(&news).await.unwrap();
        for i in 0..3 {
            broker
                .publish(&other, Bytes::from(format!("x{i}")))
                .await
                .unwrap();
            broker
                .publish(&news, Bytes::from(format!("n{i}")))
                .await
                .unwrap();
        }
        for i in 0..3 {
            let event = inbox.recv().await.unwrap();
            assert_eq!(
                event,
                BusEvent::Message(BusMessage::raw(news.clone(), Bytes::from(format!("n{i}"))))
            );
        }
        assert!(inbox.try_recv().is_err());

        broker.unsubscribe(&news);
        broker
            .publish(&news, Bytes::from_static(b"late"))
            .await
            .unwrap();
        assert!(inbox.try_recv().is_err());
    }

    fn request<'a>(
        channel: &'a ChannelName,
        data: &'a [u8],
        key: Option<&'a str>,
    ) -> PublishRequest<'a> {
        let history = Some(crate::HistoryPolicy { size: 3, ttl: None });
        PublishRequest {
            channel,
            data,
            history,
            idempotency: key.map(|k| (k, Duration::from_secs(60))),
        }
    }

    #[tokio::test]
    async fn history_keeps_positions_and_recovers_what_was_missed() {
        let (broker, _inbox) = MemoryBroker::new();
        let news = ChannelName::new("news").unwrap();
        let first = broker
            .publish_json(request(&news, b"1", None))
            .await
            .unwrap();
        let epoch = first.position.clone().unwrap().epoch;
        for data in [b"2", b"3", b"4"] {
            broker
                .publish_json(request(&news, data, None))
                .await
                .unwrap();
        }
        let recovery = broker
            .recover(&news, Some(&Position::new(2, epoch.clone())), 100)
            .await
            .unwrap();
        assert!(recovery.complete);
        let payloads: Vec<&[u8]> = recovery
            .messages
            .iter()
            .map(|m| m.payload.as_ref())
            .collect();
        assert_eq!(payloads, [b"3", b"4"]);
        assert_eq!(recovery.position, Position::new(4, epoch.clone()));
        // Offset 1 was trimmed (size 3): recovering from 0 cannot be complete.
        assert!(
            !broker
                .recover(&news, Some(&Position::new(0, epoch)), 100)
                .await
                .unwrap()
                .complete
        );
    }

    #[tokio::test]
    async fn a_retried_publish_is_answered_with_the_first_result() {
        let (broker, _inbox) = MemoryBroker::new();
        let news = ChannelName::new("news").unwrap();
        let first = broker
            .publish_json(request(&news, b"1", Some("k")))
            .await
            .unwrap();
        let again = broker
            .publish_json(request(&news, b"1", Some("k")))
            .await
            .unwrap();
        assert!(!first.duplicate && again.duplicate);
        assert_eq!(first.position, again.position);
        let top = broker.recover(&news, None, 100).await.unwrap().position;
        assert_eq!(top.offset, 1);
    }

    #[tokio::test]
    async fn reading_a_channel_creates_nothing_and_cannot_vouch_for_it_later() {
        let (broker, _inbox) = MemoryBroker::new();
        let fresh = ChannelName::new("news:fresh").unwrap();
        let first = broker.recover(&fresh, None, 100).await.unwrap();
        assert_eq!(first.position.offset, 0);
        let stale = Position::new(3, "gone");
        assert!(
            !broker
                .recover(&fresh, Some(&stale), 100)
                .await
                .unwrap()
                .complete
        );
        assert!(broker.store.lock().await.logs.is_empty());
        assert!(broker.store.lock().await.deadlines.is_empty());

        // The first publish starts the epoch; the position handed out before it
        // proves nothing about what was published since, so it does not recover.
        broker
            .publish_json(request(&fresh, b"1", None))
            .await
            .unwrap();
        let later = broker
            .recover(&fresh, Some(&first.position), 100)
            .await
            .unwrap();
        assert!(!later.complete);
        assert_eq!(later.position.offset, 1);
        assert_ne!(later.position.epoch, first.position.epoch);
    }

    #[tokio::test(start_paused = true)]
    async fn messages_expire_with_their_ttl_and_the_position_long_after() {
        let (broker, _inbox) = MemoryBroker::new();
        let news = ChannelName::new("news").unwrap();
        let hour = Duration::from_secs(3600);
        let policy = crate::HistoryPolicy {
            size: 10,
            ttl: Some(hour),
        };
        let publish = |data: &'static [u8]| PublishRequest {
            channel: &news,
            data,
            history: Some(policy),
            idempotency: None,
        };
        broker.publish_json(publish(b"1")).await.unwrap();
        let second = broker.publish_json(publish(b"2")).await.unwrap();
        let first = Position::new(1, second.position.clone().unwrap().epoch);

        tokio::time::advance(hour - Duration::from_secs(1)).await;
        let kept = broker.recover(&news, Some(&first), 100).await.unwrap();
        assert!(kept.complete && kept.messages.len() == 1);

        // Past the TTL the messages are gone, not the position: a client that
        // missed nothing still recovers, one that missed something is told.
        tokio::time::advance(Duration::from_secs(2)).await;
        let at_top = broker
            .recover(&news, second.position.as_ref(), 100)
            .await
            .unwrap();
        assert!(at_top.complete);
        assert!(
            !broker
                .recover(&news, Some(&first), 100)
                .await
                .unwrap()
                .complete
        );
        assert!(broker.store.lock().await.logs[&news].messages.is_empty());

        // Past the position's TTL the channel leaves nothing behind.
        tokio::time::advance(policy.position_ttl()).await;
        let gone = broker
            .recover(&news, second.position.as_ref(), 100)
            .await
            .unwrap();
        assert!(!gone.complete);
        assert_eq!(gone.position.offset, 0);
        let store = broker.store.lock().await;
        assert!(store.logs.is_empty() && store.deadlines.is_empty());
    }

    #[tokio::test]
    async fn idempotency_keys_are_bounded() {
        let (broker, _inbox) = MemoryBroker::new();
        let news = ChannelName::new("news").unwrap();
        for n in 0..(crate::idempotency::IDEMPOTENCY_CAP + 10) {
            let key = n.to_string();
            broker
                .publish_json(PublishRequest {
                    channel: &news,
                    data: b"1",
                    history: None,
                    idempotency: Some((&key, Duration::from_secs(60))),
                })
                .await
                .unwrap();
        }
        let again = |key: &'static str| PublishRequest {
            channel: &news,
            data: b"1",
            history: None,
            idempotency: Some((key, Duration::from_secs(60))),
        };
        assert!(!broker.publish_json(again("0")).await.unwrap().duplicate);
        assert!(
            broker
                .publish_json(again("100009"))
                .await
                .unwrap()
                .duplicate
        );
    }
}

//! The in-process broker: the bus of a single instance, and of the embedded demo.
//!
//! Publishing hands the message straight to this instance's hub when the
//! channel has local subscribers. It keeps the same contract as Redis —
//! declarations, confirmations, a bounded inbox — so the hub cannot tell the
//! difference and the same behavioural tests run against both.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use herald_protocol::{ChannelName, Position};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::time::Instant;

use crate::history::{Recovery, new_epoch};
use crate::interest::Interest;
use crate::{
    Broker, BrokerError, BrokerStatus, BusMessage, INBOX_CAPACITY, Inbox, PublishRequest, Published,
};

/// Idempotency records kept before expired ones are swept; bounds the map.
const IDEMPOTENCY_SWEEP_AT: usize = 10_000;

/// The in-process history and idempotency records.
#[derive(Debug, Default)]
struct Store {
    /// Per channel: its epoch, last offset and kept messages.
    logs: HashMap<ChannelName, ChannelLog>,
    /// (channel, key) → first result and when it expires.
    idempotency: HashMap<(ChannelName, String), (Published, Instant)>,
}

#[derive(Debug)]
struct ChannelLog {
    epoch: String,
    offset: u64,
    messages: VecDeque<BusMessage>,
    /// When the kept messages expire, if the channel has a TTL.
    expires: Option<Instant>,
}

impl ChannelLog {
    fn new() -> Self {
        ChannelLog {
            epoch: new_epoch(),
            offset: 0,
            messages: VecDeque::new(),
            expires: None,
        }
    }

    fn expire(&mut self, now: Instant) {
        if self.expires.is_some_and(|at| at <= now) {
            self.messages.clear();
            self.expires = None;
        }
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
    inbox: mpsc::Sender<BusMessage>,
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
                .send(message)
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
            if let Some((key, _)) = request.idempotency {
                let id = (request.channel.clone(), key.to_owned());
                if let Some((first, expires)) = store.idempotency.get(&id)
                    && *expires > now
                {
                    return Ok(Published {
                        duplicate: true,
                        ..first.clone()
                    });
                }
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
                let log = store
                    .logs
                    .entry(request.channel.clone())
                    .or_insert_with(ChannelLog::new);
                log.expire(now);
                log.offset += 1;
                let position = Position::new(log.offset, log.epoch.clone());
                message.position = Some(position);
                log.messages.push_back(message.clone());
                while log.messages.len() > policy.size {
                    log.messages.pop_front();
                }
                log.expires = policy.ttl.map(|ttl| now + ttl);
            }
            let published = Published {
                position: message.position.clone(),
                time_ms,
                duplicate: false,
            };
            if let Some((key, window)) = request.idempotency {
                if store.idempotency.len() >= IDEMPOTENCY_SWEEP_AT {
                    store.idempotency.retain(|_, (_, expires)| *expires > now);
                }
                store.idempotency.insert(
                    (request.channel.clone(), key.to_owned()),
                    (
                        published.clone(),
                        now + window.max(Duration::from_millis(1)),
                    ),
                );
            }
            if self.interest.is_active(request.channel) {
                self.inbox
                    .send(message)
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
            let mut store = self.store.lock().await;
            let log = store
                .logs
                .entry(channel.clone())
                .or_insert_with(ChannelLog::new);
            log.expire(Instant::now());
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
            let msg = inbox.recv().await.unwrap();
            assert_eq!(
                msg,
                BusMessage::raw(news.clone(), Bytes::from(format!("n{i}")))
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
}

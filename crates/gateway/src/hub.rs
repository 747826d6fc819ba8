//! The hub: which local clients listen to which channel, and the fan-out.
//!
//! The hub keeps the only subscriber registry of an instance. It tells the
//! broker about a channel on edges only — the first local subscriber makes
//! the broker subscribe, the last one leaving makes it unsubscribe — so the
//! bus carries one subscription per channel per instance however many clients
//! there are. Every bus message becomes one shared [`Delivery`], encoded at
//! most once per wire format, and the same `Arc` is offered to each
//! subscriber's bounded queue; the hub never waits on a client. The broker's
//! gap notices ([`BusEvent::Gap`]) travel the same way, in their place among
//! the channel's messages; each session decides what a notice means to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use herald_broker::{Broker, BusEvent, Inbox};
use herald_protocol::ChannelName;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::client::{ClientId, ClientSender, Offer};
use crate::delivery::Delivery;

/// Subscribers of one channel on this instance.
type Subscribers = HashMap<ClientId, ClientSender>;

/// Running totals, for `/healthz` and the logs.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Bus messages fanned out.
    pub messages: AtomicU64,
    /// Frames queued to clients.
    pub deliveries: AtomicU64,
    /// Clients kicked because their queue was full.
    pub slow_consumers: AtomicU64,
}

/// The fan-out hub of one gateway instance.
pub struct Hub {
    /// The bus; told about first and last subscribers only.
    broker: Arc<dyn Broker>,
    /// Channel → local subscribers. A plain lock: it is never held across an await,
    /// and the fan-out holds it for reading only.
    channels: RwLock<HashMap<ChannelName, Subscribers>>,
    /// Totals.
    stats: HubStats,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("channels", &self.read().len())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub in front of `broker`.
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        Hub {
            broker,
            channels: RwLock::new(HashMap::new()),
            stats: HubStats::default(),
        }
    }

    /// The broker behind this hub.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// Running totals.
    pub fn stats(&self) -> &HubStats {
        &self.stats
    }

    /// Adds `client` to `channel`'s subscribers; the first one subscribes the bus.
    pub fn subscribe(&self, channel: &ChannelName, client: &ClientSender) {
        let mut channels = self.write();
        let subscribers = channels.entry(channel.clone()).or_default();
        let first = subscribers.is_empty();
        subscribers.insert(client.id, client.clone());
        if first {
            // Under the lock, so that a racing last-unsubscribe cannot overtake it.
            self.broker.subscribe(channel);
            debug!(%channel, "first local subscriber");
        }
    }

    /// Removes `client` from `channel`; the last one leaving unsubscribes the bus.
    pub fn unsubscribe(&self, channel: &ChannelName, client: ClientId) {
        let mut channels = self.write();
        let Some(subscribers) = channels.get_mut(channel) else {
            return;
        };
        if subscribers.remove(&client).is_some() && subscribers.is_empty() {
            channels.remove(channel);
            self.broker.unsubscribe(channel);
            debug!(%channel, "last local subscriber left");
        }
    }

    /// How many local clients listen to `channel`.
    pub fn subscriber_count(&self, channel: &ChannelName) -> usize {
        self.read().get(channel).map_or(0, HashMap::len)
    }

    /// How many channels have local subscribers.
    pub fn channel_count(&self) -> usize {
        self.read().len()
    }

    /// Offers one bus event to every local subscriber of its channel, a gap
    /// exactly like a message: the same queues, in the same order.
    ///
    /// Encodes once; each client gets a reference-counted clone of the same bytes.
    pub fn fan_out(&self, event: BusEvent) {
        if let BusEvent::Gap(gap) = &event {
            info!(channel = %gap.channel, reason = gap.reason.as_str(), "telling the channel's clients about a gap in its messages");
        }
        let channels = self.read();
        let Some(subscribers) = channels.get(event.channel()) else {
            return;
        };
        let frame = Arc::new(Delivery::from(event));
        let mut delivered = 0u64;
        let mut overflowed = 0u64;
        for client in subscribers.values() {
            match client.offer(frame.clone()) {
                Offer::Queued => delivered += 1,
                Offer::Overflowed => overflowed += 1,
                Offer::Gone => {}
            }
        }
        drop(channels);
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
        self.stats
            .deliveries
            .fetch_add(delivered, Ordering::Relaxed);
        if overflowed > 0 {
            self.stats
                .slow_consumers
                .fetch_add(overflowed, Ordering::Relaxed);
        }
    }

    /// Fans out every event from the broker's inbox until it closes or `shutdown` fires.
    pub async fn run(self: Arc<Self>, mut inbox: Inbox, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                event = inbox.recv() => match event {
                    Some(event) => self.fan_out(event),
                    None => break,
                },
            }
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<ChannelName, Subscribers>> {
        // Nothing panics while holding this lock; were it poisoned, the map would still be whole.
        self.channels
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<ChannelName, Subscribers>> {
        self.channels
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Frame, client};
    use bytes::Bytes;
    use herald_broker::{BusMessage, MemoryBroker};

    fn hub() -> (Arc<Hub>, Inbox) {
        let (broker, inbox) = MemoryBroker::new();
        (Arc::new(Hub::new(Arc::new(broker))), inbox)
    }

    #[tokio::test]
    async fn one_bus_subscription_per_channel_however_many_clients() {
        let (hub, _inbox) = hub();
        let news = ChannelName::new("news").unwrap();
        let (a, _ra) = client(8);
        let (b, _rb) = client(8);
        hub.subscribe(&news, &a);
        hub.subscribe(&news, &b);
        assert_eq!(hub.subscriber_count(&news), 2);
        hub.unsubscribe(&news, a.id);
        // Still wanted: b listens.
        hub.broker().until_subscribed(&news).await.unwrap();
        hub.unsubscribe(&news, b.id);
        assert_eq!(hub.channel_count(), 0);
    }

    #[tokio::test]
    async fn fan_out_shares_one_encoded_frame() {
        let (hub, _inbox) = hub();
        let news = ChannelName::new("news").unwrap();
        let (a, ra) = client(8);
        let (b, rb) = client(8);
        hub.subscribe(&news, &a);
        hub.subscribe(&news, &b);
        hub.fan_out(BusEvent::Message(BusMessage::raw(
            news.clone(),
            Bytes::from_static(b"hello"),
        )));
        let (mut batch_a, mut batch_b) = (
            std::collections::VecDeque::new(),
            std::collections::VecDeque::new(),
        );
        ra.take(&mut batch_a).await.unwrap();
        rb.take(&mut batch_b).await.unwrap();
        let (a, b) = (batch_a.pop_front().unwrap(), batch_b.pop_front().unwrap());
        // The same delivery, not a copy per client; its frame is built once.
        assert!(Arc::ptr_eq(&a, &b));
        let (Frame::Text(fa), Frame::Text(fb)) = (a.tutorial_frame(), b.tutorial_frame()) else {
            panic!("expected text frames");
        };
        assert_eq!(fa.as_str(), "hello");
        assert_eq!(fa.as_str().as_ptr(), fb.as_str().as_ptr());
    }

    #[tokio::test]
    async fn a_gap_notice_reaches_the_channels_clients_in_order() {
        let (hub, _inbox) = hub();
        let news = ChannelName::new("news").unwrap();
        let (a, ra) = client(8);
        let (other, other_rx) = client(8);
        hub.subscribe(&news, &a);
        hub.subscribe(&ChannelName::new("other").unwrap(), &other);
        let gap = herald_broker::Gap {
            channel: news.clone(),
            reason: herald_protocol::GapReason::Unrecoverable,
            position: None,
        };
        hub.fan_out(BusEvent::Gap(gap.clone()));
        hub.fan_out(BusEvent::Message(BusMessage::raw(
            news.clone(),
            Bytes::from_static(b"after"),
        )));
        let mut batch = std::collections::VecDeque::new();
        ra.take(&mut batch).await.unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].gap(), Some(&gap));
        assert_eq!(batch[1].gap(), None);
        assert_eq!(
            batch[1].tutorial_frame(),
            Frame::from_payload(Bytes::from_static(b"after"))
        );
        // Only the channel's own clients hear of it.
        assert!(
            tokio::time::timeout(
                std::time::Duration::from_millis(50),
                other_rx.take(&mut std::collections::VecDeque::new())
            )
            .await
            .is_err()
        );
    }

    #[tokio::test]
    async fn a_full_client_is_kicked_and_the_others_still_receive() {
        let (hub, _inbox) = hub();
        let news = ChannelName::new("news").unwrap();
        let (slow, slow_rx) = client(1);
        let (fast, fast_rx) = client(16);
        hub.subscribe(&news, &slow);
        hub.subscribe(&news, &fast);
        for i in 0..5 {
            hub.fan_out(BusEvent::Message(BusMessage::raw(
                news.clone(),
                Bytes::from(format!("m{i}")),
            )));
        }
        assert_eq!(
            slow_rx.kicked(),
            Some(herald_protocol::CloseCode::SlowConsumer)
        );
        let mut batch = std::collections::VecDeque::new();
        fast_rx.take(&mut batch).await.unwrap();
        let expected: Vec<Frame> = (0..5)
            .map(|i| Frame::from_payload(Bytes::from(format!("m{i}"))))
            .collect();
        assert_eq!(
            batch.iter().map(|d| d.tutorial_frame()).collect::<Vec<_>>(),
            expected
        );
    }
}

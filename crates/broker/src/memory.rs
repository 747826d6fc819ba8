//! The in-process broker: the bus of a single instance, and of the embedded demo.
//!
//! Publishing hands the message straight to this instance's hub when the
//! channel has local subscribers. It keeps the same contract as Redis —
//! declarations, confirmations, a bounded inbox — so the hub cannot tell the
//! difference and the same behavioural tests run against both.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use herald_protocol::ChannelName;
use tokio::sync::{mpsc, watch};

use crate::interest::Interest;
use crate::{Broker, BrokerError, BrokerStatus, BusMessage, INBOX_CAPACITY, Inbox};

/// A broker whose bus is this process.
#[derive(Debug)]
pub struct MemoryBroker {
    /// The channels the hub wants; always confirmed at once.
    interest: Arc<Interest>,
    /// Where published messages go; the hub holds the receiving end.
    inbox: mpsc::Sender<BusMessage>,
    /// Connected until shut down: there is nothing to lose a connection to.
    status: watch::Sender<BrokerStatus>,
}

impl MemoryBroker {
    /// A new in-process bus and the inbox its messages arrive in.
    pub fn new() -> (Self, Inbox) {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        let broker = MemoryBroker {
            interest: Arc::new(Interest::default()),
            inbox: tx,
            status: watch::Sender::new(BrokerStatus::Connected),
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
            let message = BusMessage {
                channel: channel.clone(),
                payload,
            };
            self.inbox
                .send(message)
                .await
                .map_err(|_| BrokerError::Closed)
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
                BusMessage {
                    channel: news.clone(),
                    payload: Bytes::from(format!("n{i}"))
                }
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
}

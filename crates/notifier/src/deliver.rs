//! One step every runtime shares: run the handler on an event and publish what it returns.
//!
//! The stream consumer, the in-process consumer and the HTTP invoke route
//! differ in where events come from and how they are acknowledged, not in
//! what happens to one event. That part is here, once.

use bytes::Bytes;
use herald_broker::{Broker, BrokerError};

use crate::event::DomainEvent;
use crate::handler::{Notification, Rejection, handle};

/// What became of one event.
#[derive(Debug)]
pub enum Delivered {
    /// Every notification the event causes was published (possibly none).
    Published(Vec<Notification>),
    /// The event cannot be handled; nothing was published.
    Rejected(Rejection),
}

/// Parses `text` as a domain event, handles it and publishes the notifications.
///
/// `Err` means the broker failed part-way: some notifications may have been
/// published, and the event must be retried (consumers of Pub/Sub channels
/// see a duplicate then, the price of at-least-once).
pub async fn deliver_text(broker: &dyn Broker, text: &str) -> Result<Delivered, BrokerError> {
    match DomainEvent::parse(text) {
        Ok(event) => deliver(broker, &event).await,
        Err(rejection) => Ok(Delivered::Rejected(rejection)),
    }
}

/// Handles `event` and publishes the notifications, in order.
pub async fn deliver(broker: &dyn Broker, event: &DomainEvent) -> Result<Delivered, BrokerError> {
    let notifications = match handle(event) {
        Ok(notifications) => notifications,
        Err(rejection) => return Ok(Delivered::Rejected(rejection)),
    };
    for notification in &notifications {
        broker
            .publish(
                &notification.channel,
                Bytes::from(notification.payload.clone()),
            )
            .await?;
    }
    Ok(Delivered::Published(notifications))
}

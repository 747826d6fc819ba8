//! One step every runtime shares: run the handler on an event and publish what it returns.
//!
//! The stream consumer, the in-process consumer and the HTTP invoke route
//! differ in where events come from and how they are acknowledged, not in
//! what happens to one event. That part is here, once.

use std::sync::OnceLock;

use bytes::Bytes;
use herald_broker::{Broker, BrokerError, HistoryRules, PublishRequest};

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
        match history().policy(&notification.channel) {
            // Kept in history, with a position, so reconnecting clients recover it.
            Some(policy) => {
                let data = as_json(&notification.payload);
                let request = PublishRequest {
                    channel: &notification.channel,
                    data: data.as_bytes(),
                    history: Some(policy),
                    idempotency: None,
                };
                broker.publish_json(request).await?;
            }
            // A plain PUBLISH, byte for byte what the tutorial sends, so anything
            // subscribed to Redis directly (the tutorial's own gateway, redis-cli) reads the same text.
            None => {
                broker
                    .publish(
                        &notification.channel,
                        Bytes::from(notification.payload.clone()),
                    )
                    .await?
            }
        }
    }
    Ok(Delivered::Published(notifications))
}

/// The history notifications keep: the structured `news:*` ones, so a client
/// that reconnects recovers the notifications it missed. Gateways serving these
/// channels use the same rule (`--history 'news:*=1000/24h'`, as `herald demo` does).
pub const NOTIFICATION_HISTORY: &str = "news:*=1000/24h";

fn history() -> &'static HistoryRules {
    static RULES: OnceLock<HistoryRules> = OnceLock::new();
    // The rule is a constant known to parse; the test below keeps it so.
    RULES.get_or_init(|| HistoryRules::parse([NOTIFICATION_HISTORY]).unwrap_or_default())
}

/// A payload that is JSON travels as is; plain text (the tutorial's
/// `Content published: …`) as a JSON string, which tutorial clients receive as the text itself.
fn as_json(payload: &str) -> String {
    if serde_json::from_str::<&serde_json::value::RawValue>(payload).is_ok() {
        payload.to_owned()
    } else {
        serde_json::Value::from(payload).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_rule_parses_and_text_becomes_a_json_string() {
        assert!(HistoryRules::parse([NOTIFICATION_HISTORY]).is_ok());
        assert!(
            history()
                .policy(&herald_protocol::ChannelName::new("news:content").unwrap())
                .is_some()
        );
        assert_eq!(
            as_json("Content published: a \"b\""),
            r#""Content published: a \"b\"""#
        );
        assert_eq!(as_json(r#"{"a":1}"#), r#"{"a":1}"#);
    }
}

//! One step every runtime shares: run the handler on an event and publish what it returns.
//!
//! The stream consumer, the in-process consumer and the HTTP invoke route
//! differ in where events come from and how they are acknowledged, not in
//! what happens to one event. That part is here, once.
//!
//! # Exactly once, even when a notifier dies mid-work
//!
//! A notifier killed after publishing an event's notifications but before
//! acknowledging the event leaves it pending; another member takes it over
//! and handles it again. So every notification is published under an
//! idempotency key made of the domain event's `event_id` and the
//! notification's index: the second attempt finds the key and publishes
//! nothing. History channels use the broker's own idempotency (the key is
//! checked and written in the same script as the append and the `PUBLISH`).
//! Raw channels (`events`, kept byte for byte as the tutorial sends it) go
//! through [`RawSink::Once`]: a marker key and the `PUBLISH` in one script,
//! so either both happen or neither. The keys live for
//! [`NOTIFICATION_IDEMPOTENCY_WINDOW`], longer than any redelivery can take.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use herald_broker::{Broker, BrokerError, HistoryRules, PublishRequest};
use herald_protocol::ChannelName;
use redis::aio::{ConnectionLike, MultiplexedConnection};

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

/// How long a notification's idempotency key is remembered.
///
/// A redelivery comes at the latest after `max_deliveries` × `--reclaim-idle`
/// (5 × 30 s by default); an hour covers that with a wide margin while
/// bounding the keys Redis holds to one hour of notifications.
pub const NOTIFICATION_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(3600);

/// The longest `event_id` used in an idempotency key; an event with a longer
/// (or no) id is published without one, at least once instead of exactly once.
const MAX_EVENT_ID_LEN: usize = 100;

/// Where notifications for channels without history (raw `PUBLISH`) go.
pub enum RawSink<'a> {
    /// Through the broker, with no idempotency: a redelivered event repeats them.
    /// For runtimes that never redeliver to another process (the in-process demo,
    /// the HTTP trigger, whose caller decides about retries).
    Broker,
    /// Through this connection to the broker's Redis, at most once per event and notification.
    Once(&'a mut MultiplexedConnection),
}

/// Parses `text` as a domain event, handles it and publishes the notifications.
///
/// `Err` means the broker failed part-way: some notifications may have been
/// published, and the event must be retried; the idempotency keys (see the
/// module docs) keep the retry from publishing them twice.
pub async fn deliver_text(
    broker: &dyn Broker,
    text: &str,
    raw: RawSink<'_>,
) -> Result<Delivered, BrokerError> {
    match DomainEvent::parse(text) {
        Ok(event) => deliver(broker, &event, raw).await,
        Err(rejection) => Ok(Delivered::Rejected(rejection)),
    }
}

/// Handles `event` and publishes the notifications, in order.
pub async fn deliver(
    broker: &dyn Broker,
    event: &DomainEvent,
    mut raw: RawSink<'_>,
) -> Result<Delivered, BrokerError> {
    let notifications = match handle(event) {
        Ok(notifications) => notifications,
        Err(rejection) => return Ok(Delivered::Rejected(rejection)),
    };
    for (index, notification) in notifications.iter().enumerate() {
        let key = idempotency_key(event, index);
        match history().policy(&notification.channel) {
            // Kept in history, with a position, so reconnecting clients recover it.
            Some(policy) => {
                let data = as_json(&notification.payload);
                let request = PublishRequest {
                    channel: &notification.channel,
                    data: data.as_bytes(),
                    history: Some(policy),
                    idempotency: key
                        .as_deref()
                        .map(|key| (key, NOTIFICATION_IDEMPOTENCY_WINDOW)),
                };
                broker.publish_json(request).await?;
            }
            // A plain PUBLISH, byte for byte what the tutorial sends, so anything
            // subscribed to Redis directly (the tutorial's own gateway, redis-cli) reads the same text.
            None => match (&mut raw, key) {
                (RawSink::Once(conn), Some(key)) => {
                    publish_raw_once(*conn, &notification.channel, &notification.payload, &key)
                        .await?;
                }
                _ => {
                    broker
                        .publish(
                            &notification.channel,
                            Bytes::from(notification.payload.clone()),
                        )
                        .await?
                }
            },
        }
    }
    Ok(Delivered::Published(notifications))
}

/// The idempotency key of the `index`-th notification of `event`, when the event has a usable id.
fn idempotency_key(event: &DomainEvent, index: usize) -> Option<String> {
    event
        .event_id()
        .filter(|id| !id.is_empty() && id.len() <= MAX_EVENT_ID_LEN)
        .map(|id| format!("notify:{id}:{index}"))
}

/// Sets the marker and publishes in one script: the `PUBLISH` happens exactly when the marker is new.
const RAW_ONCE_SCRIPT: &str = r#"
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[3]) then
  redis.call('PUBLISH', ARGV[1], ARGV[2])
  return 1
end
return 0
"#;

/// `PUBLISH channel payload` unless a notification with `key` was already published on it;
/// returns whether it published. The marker key has the broker's idempotency-key shape
/// (`herald:{CHANNEL}:idem:KEY`), so it sits in the channel's hash slot on a cluster.
async fn publish_raw_once(
    conn: &mut impl ConnectionLike,
    channel: &ChannelName,
    payload: &str,
    key: &str,
) -> Result<bool, BrokerError> {
    let published: i64 = redis::Script::new(RAW_ONCE_SCRIPT)
        .key(format!("herald:{{{channel}}}:idem:{key}"))
        .arg(channel.as_str())
        .arg(payload)
        .arg(NOTIFICATION_IDEMPOTENCY_WINDOW.as_millis() as u64)
        .invoke_async(conn)
        .await?;
    Ok(published == 1)
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

    /// A notifier that dies after publishing but before acknowledging hands the
    /// event to another member, which handles it again: nothing is published twice,
    /// neither on the raw tutorial channel nor on the history channel.
    #[tokio::test]
    async fn an_event_delivered_twice_publishes_each_notification_once() {
        use futures_util::StreamExt;
        use herald_broker::{RedisBroker, RedisBrokerConfig};

        let redis = herald_testkit::RedisServer::start().await;
        let (broker, _inbox) = RedisBroker::connect(&redis.url(), RedisBrokerConfig::default())
            .expect("a redis:// url");
        let mut conn = redis.connection().await.unwrap();
        let mut listener = redis::Client::open(redis.url())
            .unwrap()
            .get_async_pubsub()
            .await
            .unwrap();
        listener.subscribe("events").await.unwrap();
        listener.subscribe("news:content").await.unwrap();

        let event = r#"{"type":"content.created","id":"c1","title":"Once","body":"b",
            "created_at":"2026-01-01T00:00:00Z","event_id":"e-once"}"#;
        for _attempt in 0..3 {
            let delivered = deliver_text(&broker, event, RawSink::Once(&mut conn))
                .await
                .unwrap();
            assert!(matches!(delivered, Delivered::Published(ref n) if n.len() == 2));
        }
        // Another event goes out: once it is seen, anything before it has been seen too.
        let next = event.replace("e-once", "e-next").replace("Once", "Next");
        deliver_text(&broker, &next, RawSink::Once(&mut conn))
            .await
            .unwrap();

        let mut seen = Vec::new();
        let mut messages = listener.on_message();
        while seen.len() < 4 {
            let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .expect("the notifications arrive")
                .unwrap();
            let payload: Vec<u8> = message.get_payload().unwrap();
            let text = String::from_utf8_lossy(&payload).into_owned();
            seen.push((message.get_channel_name().to_owned(), text));
        }
        let on = |channel: &str, needle: &str| {
            seen.iter()
                .filter(|(c, text)| c == channel && text.contains(needle))
                .count()
        };
        assert_eq!(on("events", "Content published: Once"), 1, "{seen:?}");
        assert_eq!(on("news:content", "\"Once\""), 1, "{seen:?}");
        assert_eq!(on("events", "Content published: Next"), 1, "{seen:?}");
        assert_eq!(on("news:content", "\"Next\""), 1, "{seen:?}");
        let kept: i64 = redis::cmd("XLEN")
            .arg("herald:{news:content}:stream")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(kept, 2, "history holds each notification once");
        broker.shutdown().await;
    }

    #[test]
    fn the_key_names_the_event_and_the_notification() {
        let event = |json: &str| DomainEvent::parse(json).unwrap();
        assert_eq!(
            idempotency_key(&event(r#"{"type":"t","event_id":"e1"}"#), 1).as_deref(),
            Some("notify:e1:1")
        );
        assert_eq!(idempotency_key(&event(r#"{"type":"t"}"#), 0), None);
        assert_eq!(
            idempotency_key(&event(r#"{"type":"t","event_id":""}"#), 0),
            None
        );
        let long = format!(r#"{{"type":"t","event_id":"{}"}}"#, "x".repeat(101));
        assert_eq!(idempotency_key(&event(&long), 0), None);
    }
}

//! The notification function itself: one domain event in, the notifications it causes out.
//!
//! This is the FaaS part of Herald and it does no I/O: no Redis, no clock, no
//! randomness. Everything that moves events in and notifications out (the
//! stream consumer, the HTTP invoke route, the in-process demo) lives in other
//! modules and calls [`handle`]. So the rules for what a notification says are
//! tested with plain unit tests, and every runtime applies the same rules.
//!
//! # Decisions
//!
//! - **Unknown event types are not errors**: `handle` returns `Ok(vec![])`.
//!   The domain-event log carries every service's events; the function
//!   subscribes to the whole log and only some types concern it. Rejecting the
//!   others would fill the dead-letter stream with healthy events every time a
//!   producer adds a type.
//! - **Known types with bad fields are rejected** with a [`Rejection`] that
//!   names the field: retrying such an event can never succeed, so the
//!   runtimes dead-letter it instead of redelivering it.

use herald_protocol::{ChannelName, TUTORIAL_CHANNEL};
use serde::Serialize;
use serde::ser::SerializeStruct;
use serde_json::Value;

use crate::event::{CONTENT_CREATED, DomainEvent};

/// The channel that carries structured (JSON) notifications about content.
pub const CONTENT_CHANNEL: &str = "news:content";

/// The longest `title` a `content.created` event may carry, in characters.
///
/// The content API refuses longer titles (it uses this very constant), so only
/// a caller of `POST /invoke` or a foreign writer can exceed it; without the
/// check such a title would be published and kept in `news:content` history.
pub const MAX_TITLE_CHARS: usize = 200;

/// The longest `id` and `created_at` of a `content.created` event, in bytes
/// (the content service writes a 36-byte UUID and a 27-byte timestamp).
pub const MAX_SHORT_FIELD_BYTES: usize = 128;

/// Why an event cannot be handled, now or ever; the runtimes dead-letter it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The event text is not JSON.
    #[error("event is not valid JSON: {0}")]
    NotJson(String),
    /// The event is JSON but not an object.
    #[error("event is not a JSON object")]
    NotAnObject,
    /// The event has no `type` field.
    #[error("event has no \"type\" field")]
    MissingType,
    /// The event's `type` is not a string.
    #[error("event \"type\" is not a string")]
    BadType,
    /// A field that the event's type requires is missing or unusable.
    #[error("{event_type} event field {field:?} {problem}")]
    BadField {
        /// The event's `type`.
        event_type: String,
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it, as a phrase ("is missing", "is not a string").
        problem: &'static str,
    },
    /// The stream entry holding the event has no `event` field (a foreign writer).
    #[error("stream entry has no \"event\" field")]
    NoEventField,
    /// The event was redelivered too often without being acknowledged.
    #[error("gave up after {0} deliveries without an acknowledgement")]
    TooManyDeliveries(usize),
}

/// One message to publish: a channel and the exact text its subscribers receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Where to publish it.
    pub channel: ChannelName,
    /// The text frame subscribers receive, byte for byte.
    pub payload: String,
}

impl Serialize for Notification {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Notification", 2)?;
        s.serialize_field("channel", self.channel.as_str())?;
        s.serialize_field("payload", &self.payload)?;
        s.end()
    }
}

/// The notifications `event` causes, or why it cannot be handled.
///
/// `content.created` gives two notifications: the tutorial's text
/// `Content published: <title>` on `events`, and a JSON object
/// `{"type":"content.created","id","title","created_at"}` on `news:content`.
/// Any other type gives none (see the module docs for why that is not an error).
pub fn handle(event: &DomainEvent) -> Result<Vec<Notification>, Rejection> {
    match event.event_type() {
        CONTENT_CREATED => content_created(event),
        _ => Ok(Vec::new()),
    }
}

fn content_created(event: &DomainEvent) -> Result<Vec<Notification>, Rejection> {
    let id = required_string(event, "id")?;
    let title = required_string(event, "title")?;
    let created_at = required_string(event, "created_at")?;
    if id.is_empty() {
        return Err(bad_field(event, "id", "is empty"));
    }
    if title.trim().is_empty() {
        return Err(bad_field(event, "title", "is empty"));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(bad_field(event, "title", "is longer than 200 characters"));
    }
    if id.len() > MAX_SHORT_FIELD_BYTES {
        return Err(bad_field(event, "id", "is longer than 128 bytes"));
    }
    if created_at.len() > MAX_SHORT_FIELD_BYTES {
        return Err(bad_field(event, "created_at", "is longer than 128 bytes"));
    }
    let structured = serde_json::json!({
        "type": CONTENT_CREATED,
        "id": id,
        "title": title,
        "created_at": created_at,
    });
    Ok(vec![
        Notification {
            channel: channel(TUTORIAL_CHANNEL),
            payload: format!("Content published: {title}"),
        },
        Notification {
            channel: channel(CONTENT_CHANNEL),
            payload: structured.to_string(),
        },
    ])
}

fn required_string<'e>(event: &'e DomainEvent, field: &'static str) -> Result<&'e str, Rejection> {
    match event.fields().get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad_field(event, field, "is not a string")),
        None => Err(bad_field(event, field, "is missing")),
    }
}

fn bad_field(event: &DomainEvent, field: &'static str, problem: &'static str) -> Rejection {
    Rejection::BadField {
        event_type: event.event_type().to_owned(),
        field,
        problem,
    }
}

/// A channel name known at compile time to satisfy the grammar (a unit test checks each).
fn channel(name: &'static str) -> ChannelName {
    ChannelName::new(name).expect("a constant channel name is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> DomainEvent {
        DomainEvent::parse(json).unwrap()
    }

    #[test]
    fn the_constant_channels_are_valid_names() {
        assert_eq!(channel(TUTORIAL_CHANNEL).as_str(), "events");
        assert_eq!(channel(CONTENT_CHANNEL).namespace(), Some("news"));
    }

    #[test]
    fn content_created_gives_the_tutorial_text_and_a_structured_notification() {
        let e = event(
            r#"{"type":"content.created","id":"c1","title":"Hello, world","body":"ignored",
               "created_at":"2026-01-01T00:00:00Z","event_id":"e1"}"#,
        );
        let out = handle(&e).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].channel.as_str(), "events");
        assert_eq!(out[0].payload, "Content published: Hello, world");
        assert_eq!(out[1].channel.as_str(), "news:content");
        let structured: Value = serde_json::from_str(&out[1].payload).unwrap();
        assert_eq!(
            structured,
            serde_json::json!({"type":"content.created","id":"c1","title":"Hello, world","created_at":"2026-01-01T00:00:00Z"})
        );
    }

    #[test]
    fn the_title_is_passed_through_verbatim() {
        let e = event(
            r#"{"type":"content.created","id":"c1","title":"\"quotes\" & <ünïcode> 🚀","created_at":"t"}"#,
        );
        let out = handle(&e).unwrap();
        assert_eq!(
            out[0].payload,
            "Content published: \"quotes\" & <ünïcode> 🚀"
        );
        let structured: Value = serde_json::from_str(&out[1].payload).unwrap();
        assert_eq!(structured["title"], "\"quotes\" & <ünïcode> 🚀");
    }

    #[test]
    fn a_title_at_the_limit_passes() {
        let json = format!(
            r#"{{"type":"content.created","id":"c","title":"{}","created_at":"x"}}"#,
            "é".repeat(MAX_TITLE_CHARS)
        );
        assert_eq!(handle(&event(&json)).unwrap().len(), 2);
    }

    #[test]
    fn unknown_types_cause_no_notifications() {
        assert_eq!(
            handle(&event(r#"{"type":"user.deleted","id":"u1"}"#)),
            Ok(vec![])
        );
        assert_eq!(handle(&event(r#"{"type":""}"#)), Ok(vec![]));
    }

    #[test]
    fn malformed_content_events_are_rejected_with_the_field_at_fault() {
        let cases = [
            (
                r#"{"type":"content.created","title":"t","created_at":"x"}"#,
                "id",
                "is missing",
            ),
            (
                r#"{"type":"content.created","id":"","title":"t","created_at":"x"}"#,
                "id",
                "is empty",
            ),
            (
                r#"{"type":"content.created","id":"c","title":42,"created_at":"x"}"#,
                "title",
                "is not a string",
            ),
            (
                r#"{"type":"content.created","id":"c","title":"   ","created_at":"x"}"#,
                "title",
                "is empty",
            ),
            (
                r#"{"type":"content.created","id":"c","title":"t"}"#,
                "created_at",
                "is missing",
            ),
        ];
        let long_title = format!(
            r#"{{"type":"content.created","id":"c","title":"{}","created_at":"x"}}"#,
            "é".repeat(MAX_TITLE_CHARS + 1)
        );
        let long_id = format!(
            r#"{{"type":"content.created","id":"{}","title":"t","created_at":"x"}}"#,
            "i".repeat(MAX_SHORT_FIELD_BYTES + 1)
        );
        let long_time = format!(
            r#"{{"type":"content.created","id":"c","title":"t","created_at":"{}"}}"#,
            "1".repeat(MAX_SHORT_FIELD_BYTES + 1)
        );
        let too_long = [
            (
                long_title.as_str(),
                "title",
                "is longer than 200 characters",
            ),
            (long_id.as_str(), "id", "is longer than 128 bytes"),
            (long_time.as_str(), "created_at", "is longer than 128 bytes"),
        ];
        for (json, field, problem) in cases.into_iter().chain(too_long) {
            let rejection = handle(&event(json)).unwrap_err();
            assert_eq!(
                rejection,
                Rejection::BadField {
                    event_type: "content.created".into(),
                    field,
                    problem
                },
                "for {json}"
            );
            assert!(rejection.to_string().contains(field));
        }
    }

    #[test]
    fn notifications_serialize_as_channel_and_payload() {
        let n = Notification {
            channel: channel("events"),
            payload: "hi".into(),
        };
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            serde_json::json!({"channel":"events","payload":"hi"})
        );
    }
}

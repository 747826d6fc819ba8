//! The domain events Herald's services tell each other about, as they travel.
//!
//! A domain event is a JSON object with a string `type` and whatever fields
//! that type defines. The envelope ([`DomainEvent`]) is deliberately loose:
//! the event log carries events whose schema the reader may not know (a newer
//! producer, another service's events), and a reader must be able to look at
//! the `type` of such an event and pass on it instead of failing to decode
//! the whole log. Each known type has a typed struct here ([`ContentCreated`])
//! that producers serialize and the handler checks, so the schema lives in one
//! place.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::handler::Rejection;

/// The `type` of the event the content service emits when content is created.
pub const CONTENT_CREATED: &str = "content.created";

/// One domain event: a JSON object whose `type` is a string.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainEvent {
    /// The whole object, `type` included, exactly as it was received.
    fields: Map<String, Value>,
}

impl DomainEvent {
    /// Parses the JSON text of an event, refusing what is not an object with a string `type`.
    pub fn parse(text: &str) -> Result<Self, Rejection> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| Rejection::NotJson(e.to_string()))?;
        Self::from_value(value)
    }

    /// Wraps an already parsed JSON value, refusing what is not an object with a string `type`.
    pub fn from_value(value: Value) -> Result<Self, Rejection> {
        let Value::Object(fields) = value else {
            return Err(Rejection::NotAnObject);
        };
        match fields.get("type") {
            Some(Value::String(_)) => Ok(DomainEvent { fields }),
            Some(_) => Err(Rejection::BadType),
            None => Err(Rejection::MissingType),
        }
    }

    /// The event's `type`, such as [`CONTENT_CREATED`].
    pub fn event_type(&self) -> &str {
        self.fields
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The producer's id for this event, if it gave one; consumers dedupe on it.
    pub fn event_id(&self) -> Option<&str> {
        self.fields.get("event_id").and_then(Value::as_str)
    }

    /// Every field of the event, `type` included.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// The event as compact JSON text.
    pub fn to_json(&self) -> String {
        Value::Object(self.fields.clone()).to_string()
    }
}

/// The `content.created` event: a piece of content was stored.
///
/// The content service writes it to its outbox in the same transaction as the
/// content row; the relay moves it to the event log; the notifier turns it
/// into notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentCreated {
    /// The content's id, as the content API returns it.
    pub id: String,
    /// The content's title, already trimmed and validated by the content service.
    pub title: String,
    /// The content's body.
    pub body: String,
    /// When the content was created, RFC 3339 in UTC.
    pub created_at: String,
    /// Unique per event (not per delivery): a consumer that sees it twice has seen a redelivery.
    pub event_id: String,
}

/// The wire form of a typed event: its fields plus the `type` tag.
#[derive(Serialize)]
struct Tagged<'a, T> {
    /// The event's `type`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The event's own fields, inlined next to `type`.
    #[serde(flatten)]
    event: &'a T,
}

impl ContentCreated {
    /// The event as the JSON text that goes into the outbox and the event log.
    pub fn to_json(&self) -> String {
        let tagged = Tagged {
            kind: CONTENT_CREATED,
            event: self,
        };
        // A struct of strings always serializes; the fallback is never taken.
        serde_json::to_string(&tagged).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_created_round_trips_with_its_type_tag() {
        let event = ContentCreated {
            id: "c1".into(),
            title: "Hello".into(),
            body: "World".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            event_id: "e1".into(),
        };
        let json = event.to_json();
        let parsed = DomainEvent::parse(&json).unwrap();
        assert_eq!(parsed.event_type(), CONTENT_CREATED);
        assert_eq!(parsed.event_id(), Some("e1"));
        let back: ContentCreated =
            serde_json::from_value(Value::Object(parsed.fields().clone())).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn the_envelope_refuses_what_is_not_an_event() {
        assert!(matches!(
            DomainEvent::parse("{"),
            Err(Rejection::NotJson(_))
        ));
        assert_eq!(DomainEvent::parse("[1]"), Err(Rejection::NotAnObject));
        assert_eq!(
            DomainEvent::parse(r#"{"id":"x"}"#),
            Err(Rejection::MissingType)
        );
        assert_eq!(DomainEvent::parse(r#"{"type":7}"#), Err(Rejection::BadType));
        let other = DomainEvent::parse(r#"{"type":"user.deleted","id":"u1"}"#).unwrap();
        assert_eq!(other.event_type(), "user.deleted");
        assert_eq!(other.event_id(), None);
    }
}

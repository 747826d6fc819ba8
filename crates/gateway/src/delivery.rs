//! One bus event on its way to clients: a message, encoded at most once per
//! wire format, or the broker's notice of a gap.
//!
//! The hub wraps every bus event in one `Arc<Delivery>` and hands clones of
//! that `Arc` to every subscriber, so a gap keeps its place among the
//! channel's messages in each client's queue. For a message, each transport
//! asks for the bytes it sends — the tutorial's raw text frame, the Herald
//! `message` frame, the SSE event — and each of those is built the first time
//! any client needs it and then shared by all the others. A gap has no such
//! bytes: what it means depends on each client's position, so each session
//! decides ([`crate::gap`]).

use std::sync::OnceLock;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use herald_broker::{BusEvent, BusMessage, Gap};
use herald_protocol::frames::{encode_message, payload_as_json};
use herald_protocol::{ChannelName, Position};

use crate::client::Frame;
use crate::transport::sse_event;

/// A bus event as the client queues carry it.
#[derive(Debug)]
pub struct Delivery {
    /// A message or a gap; only a message has encodings.
    kind: Kind,
}

/// What a delivery is: the two things a broker's inbox carries.
#[derive(Debug)]
enum Kind {
    /// A message, with its encodings.
    Message(Encoded),
    /// A gap notice, which each session turns into its own frame, or none.
    Gap(Gap),
}

/// A bus message with its lazily built, shared encodings.
#[derive(Debug)]
struct Encoded {
    /// The message as it came off the bus.
    message: BusMessage,
    /// The tutorial endpoint's frame: the raw payload (or a Herald message's data as text).
    tutorial: OnceLock<Frame>,
    /// The Herald protocol's `message` frame.
    herald: OnceLock<Utf8Bytes>,
    /// The SSE event, without its per-stream `id:` line.
    sse: OnceLock<Bytes>,
}

impl From<BusMessage> for Delivery {
    fn from(message: BusMessage) -> Self {
        Delivery {
            kind: Kind::Message(Encoded {
                message,
                tutorial: OnceLock::new(),
                herald: OnceLock::new(),
                sse: OnceLock::new(),
            }),
        }
    }
}

impl From<Gap> for Delivery {
    fn from(gap: Gap) -> Self {
        Delivery {
            kind: Kind::Gap(gap),
        }
    }
}

impl From<BusEvent> for Delivery {
    fn from(event: BusEvent) -> Self {
        match event {
            BusEvent::Message(message) => Delivery::from(message),
            BusEvent::Gap(gap) => Delivery::from(gap),
        }
    }
}

impl Delivery {
    /// The channel it belongs to.
    pub fn channel(&self) -> &ChannelName {
        match &self.kind {
            Kind::Message(encoded) => &encoded.message.channel,
            Kind::Gap(gap) => &gap.channel,
        }
    }

    /// A message's place in the channel's history, if the channel keeps one.
    ///
    /// A gap is not a message and has no place of its own; the position it
    /// announces is in [`Delivery::gap`].
    pub fn position(&self) -> Option<&Position> {
        match &self.kind {
            Kind::Message(encoded) => encoded.message.position.as_ref(),
            Kind::Gap(_) => None,
        }
    }

    /// The gap the broker announces, when this is a gap rather than a message.
    pub fn gap(&self) -> Option<&Gap> {
        match &self.kind {
            Kind::Message(_) => None,
            Kind::Gap(gap) => Some(gap),
        }
    }

    /// The frame for `/ws/notifications`: exactly the published payload.
    ///
    /// A message published through Herald's API reaches tutorial clients as its
    /// data: a JSON string as the string itself, any other JSON as its text.
    /// A gap is never rendered as a message (sessions check [`Delivery::gap`]
    /// first); asked anyway, it answers an empty frame rather than invent a message.
    pub fn tutorial_frame(&self) -> Frame {
        match &self.kind {
            Kind::Message(encoded) => encoded.tutorial_frame(),
            Kind::Gap(_) => Frame::Text(Utf8Bytes::default()),
        }
    }

    /// The Herald protocol's `message` frame; empty for a gap (see [`Delivery::tutorial_frame`]).
    pub fn herald_frame(&self) -> Utf8Bytes {
        match &self.kind {
            Kind::Message(encoded) => encoded.herald_frame(),
            Kind::Gap(_) => Utf8Bytes::default(),
        }
    }

    /// The SSE event (`event: message` and its `data:` lines, ending the event);
    /// empty for a gap (see [`Delivery::tutorial_frame`]).
    pub fn sse_event(&self) -> Bytes {
        match &self.kind {
            Kind::Message(encoded) => encoded.sse_event(),
            Kind::Gap(_) => Bytes::new(),
        }
    }
}

impl Encoded {
    fn tutorial_frame(&self) -> Frame {
        self.tutorial
            .get_or_init(|| {
                if self.message.json
                    && let Ok(text) = serde_json::from_slice::<String>(&self.message.payload)
                {
                    return Frame::Text(Utf8Bytes::from(text));
                }
                Frame::from_payload(self.message.payload.clone())
            })
            .clone()
    }

    fn herald_frame(&self) -> Utf8Bytes {
        self.herald
            .get_or_init(|| {
                let data = if self.message.json {
                    serde_json::value::RawValue::from_string(
                        String::from_utf8_lossy(&self.message.payload).into_owned(),
                    )
                    .unwrap_or_else(|_| payload_as_json(&self.message.payload))
                } else {
                    payload_as_json(&self.message.payload)
                };
                let time = self.message.time_ms.unwrap_or_else(now_ms);
                Utf8Bytes::from(encode_message(
                    self.message.channel.as_str(),
                    self.message.position.as_ref(),
                    &data,
                    time,
                ))
            })
            .clone()
    }

    /// The SSE event (`event: message` and its `data:` lines, ending the event).
    ///
    /// One `data:` line per line of the frame: a payload published pretty-printed
    /// keeps its line breaks in the frame, and written on one `data:` line they
    /// would cut the event apart (see [`sse_event`]).
    fn sse_event(&self) -> Bytes {
        self.sse
            .get_or_init(|| sse_event::event("message", self.herald_frame().as_str()))
            .clone()
    }
}

/// Milliseconds since the UNIX epoch: the receive time of a raw message, which has no publish time.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_message(data: &'static str) -> Delivery {
        Delivery::from(BusMessage {
            channel: ChannelName::new("events").unwrap(),
            payload: Bytes::from_static(data.as_bytes()),
            position: Some(Position::new(3, "e")),
            time_ms: Some(9),
            json: true,
        })
    }

    #[test]
    fn a_raw_payload_reaches_tutorial_clients_untouched() {
        let raw = Delivery::from(BusMessage::raw(
            ChannelName::new("events").unwrap(),
            Bytes::from_static(b"Content published: x"),
        ));
        assert_eq!(
            raw.tutorial_frame(),
            Frame::Text(Utf8Bytes::from_static("Content published: x"))
        );
        assert!(
            raw.herald_frame()
                .as_str()
                .contains(r#""data":"Content published: x""#)
        );
    }

    #[test]
    fn a_herald_string_reaches_tutorial_clients_as_text() {
        assert_eq!(
            json_message(r#""Content published: y""#).tutorial_frame(),
            Frame::Text(Utf8Bytes::from_static("Content published: y"))
        );
        assert_eq!(
            json_message(r#"{"a":1}"#).tutorial_frame(),
            Frame::Text(Utf8Bytes::from_static(r#"{"a":1}"#))
        );
    }

    #[test]
    fn a_pretty_printed_payload_is_one_valid_sse_event() {
        let pretty = "{\n  \"title\": \"two\\nlines\",\r\n\n  \"n\": [1,\n 2]\n}";
        let event = json_message(pretty).sse_event();
        let text = std::str::from_utf8(&event).unwrap();
        // Only the closing empty line ends the event.
        assert_eq!(text.find("\n\n"), Some(text.len() - 2), "{text:?}");
        let data: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .collect();
        let frame: serde_json::Value = serde_json::from_str(&data.join("\n")).unwrap();
        assert_eq!(
            frame["data"],
            serde_json::json!({"title": "two\nlines", "n": [1, 2]})
        );
    }

    #[test]
    fn encodings_are_built_once_and_shared() {
        let delivery = json_message(r#"{"a":1}"#);
        let (a, b) = (delivery.herald_frame(), delivery.herald_frame());
        assert_eq!(a.as_str().as_ptr(), b.as_str().as_ptr());
        assert_eq!(
            a.as_str(),
            r#"{"type":"message","channel":"events","offset":3,"epoch":"e","data":{"a":1},"time":9}"#
        );
        assert!(
            delivery
                .sse_event()
                .starts_with(b"event: message\ndata: {\"type\":\"message\"")
        );
    }

    #[test]
    fn a_gap_is_no_message_and_has_no_message_bytes() {
        let gap = Gap {
            channel: ChannelName::new("events").unwrap(),
            reason: herald_protocol::GapReason::Unrecoverable,
            position: Some(Position::new(90, "e")),
        };
        let delivery = Delivery::from(BusEvent::Gap(gap.clone()));
        assert_eq!(delivery.gap(), Some(&gap));
        assert_eq!(delivery.channel().as_str(), "events");
        // Its position is the one it announces, not a place among the messages.
        assert_eq!(delivery.position(), None);
        assert_eq!(delivery.herald_frame().as_str(), "");
        assert!(delivery.sse_event().is_empty());
        assert_eq!(delivery.tutorial_frame(), Frame::Text(Utf8Bytes::default()));
        // A message is never taken for one, whatever its position.
        assert_eq!(json_message("1").gap(), None);
        assert_eq!(json_message("1").position(), Some(&Position::new(3, "e")));
    }
}

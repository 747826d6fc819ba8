//! The frames of the Herald protocol (`docs/protocol.md`), version [`PROTOCOL_VERSION`].
//!
//! Client frames are decoded here, once, into types the gateway can trust;
//! server frames are encoded here so that every transport sends the same
//! JSON. The `message` frame is built around the already-serialized data, so
//! a published payload is never parsed and re-serialized per client.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::position::Position;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// A frame a client sends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Subscribe to channels, each optionally recovering from a position.
    Subscribe {
        /// Echoed in the replies.
        #[serde(default)]
        id: Option<u64>,
        /// The channels.
        channels: Vec<SubscribeTo>,
    },
    /// Stop receiving channels.
    Unsubscribe {
        /// Echoed in the replies.
        #[serde(default)]
        id: Option<u64>,
        /// The channel names.
        channels: Vec<String>,
    },
    /// Sets who the connection is: a JWT sent in-band instead of in the URL (where
    /// access logs keep it). As the first frame, it settles the identity before
    /// `connected` when the gateway waits for it; later, it replaces the identity
    /// with a fresh token of the same user. Always answered with `authenticated` (or
    /// a close with 4004/4005).
    Auth {
        /// Echoed in the reply.
        #[serde(default)]
        id: Option<u64>,
        /// The JWT; absent or `null` for an explicitly anonymous client.
        #[serde(default)]
        token: Option<String>,
    },
    /// An application-level ping, answered with `pong`.
    Ping {
        /// Echoed in the reply.
        #[serde(default)]
        id: Option<u64>,
    },
}

/// One channel of a `subscribe` frame.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SubscribeTo {
    /// The channel name, not yet validated.
    pub channel: String,
    /// Recover every message after this position.
    #[serde(default)]
    pub since: Option<Position>,
}

/// Why a client frame could not be decoded; the connection closes with 4002.
#[derive(Debug, thiserror::Error)]
#[error("bad frame: {0}")]
pub struct FrameError(#[from] serde_json::Error);

/// Decodes one client text frame.
pub fn decode_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    Ok(serde_json::from_str(text)?)
}

/// A frame the server sends, other than `message` (see [`encode_message`]).
///
/// `Deserialize` too, so that tools and tests read frames with the very types that wrote them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The first frame of every connection.
    Connected {
        /// Protocol version.
        protocol: u32,
        /// This connection's id on the instance.
        client_id: String,
        /// Which instance the client is connected to.
        instance_id: String,
        /// The authenticated user, `null` when anonymous.
        user: Option<String>,
        /// How often the server pings.
        ping_interval_ms: u64,
    },
    /// A channel subscription is active.
    Subscribed {
        /// The `id` of the subscribe frame.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel.
        channel: String,
        /// The channel's current position; `null` without history.
        position: Option<Position>,
        /// Present when the subscribe asked for `since`: whether every missed message was sent.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    /// A channel subscription ended.
    Unsubscribed {
        /// The `id` of the unsubscribe frame.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel.
        channel: String,
    },
    /// The answer to an `auth` frame: the identity the connection now has.
    Authenticated {
        /// The `id` of the auth frame.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The authenticated user, `null` when anonymous.
        user: Option<String>,
        /// Milliseconds until the token expires (and the connection closes with 4005);
        /// absent when it does not expire.
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_in_ms: Option<u64>,
    },
    /// The answer to a client `ping`.
    Pong {
        /// The `id` of the ping.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// A request failed; the connection stays open.
    Error {
        /// The `id` of the failed frame.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel concerned, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
        /// A stable code from the table in `docs/protocol.md`.
        code: ErrorCode,
        /// What went wrong, for a person.
        message: String,
    },
    /// Messages of a channel may be missing and the client's stored position for it is void.
    ///
    /// Sent to a live subscriber when the gateway could not fill a gap from
    /// history, or when the channel's history started a new epoch (Redis lost
    /// it). Everything that follows on the channel comes after `position`.
    Gap {
        /// The channel.
        channel: String,
        /// Why the position is void.
        reason: GapReason,
        /// The position to store instead: the next messages come after it.
        /// `null` when the gateway does not know it; the next message's position then counts.
        position: Option<Position>,
    },
}

/// Why a `gap` frame was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// The channel's history was lost and started again (a new epoch): nothing
    /// before `position` can be recovered, and the old epoch's positions mean nothing.
    EpochChanged,
    /// History could not cover what the gateway missed (trimmed, expired,
    /// larger than it fills, or the read failed).
    Unrecoverable,
}

impl GapReason {
    /// The reason as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::EpochChanged => "epoch_changed",
            GapReason::Unrecoverable => "unrecoverable",
        }
    }
}

impl ServerFrame {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The stable codes of `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The channel name breaks the grammar.
    InvalidChannel,
    /// The client may not subscribe to the channel.
    Forbidden,
    /// The client is at its subscription limit.
    TooManySubscriptions,
    /// Unsubscribe from a channel the client does not have.
    NotSubscribed,
    /// A field is out of range.
    BadRequest,
    /// The gateway could not serve the request; retry later.
    Internal,
}

/// The `message` frame for one published message, built once and shared by every client.
#[derive(Debug, Serialize)]
struct MessageFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
    data: &'a RawValue,
    time: u64,
}

/// Encodes a `message` frame around `data`, which must already be JSON.
pub fn encode_message(
    channel: &str,
    position: Option<&Position>,
    data: &RawValue,
    time_ms: u64,
) -> String {
    let frame = MessageFrame {
        kind: "message",
        channel,
        offset: position.map(|p| p.offset),
        epoch: position.map(|p| p.epoch.as_str()),
        data,
        time: time_ms,
    };
    serde_json::to_string(&frame).unwrap_or_default()
}

/// Turns a published payload into JSON data: as is when it is JSON, else as a JSON string
/// (invalid UTF-8 replaced by U+FFFD).
pub fn payload_as_json(payload: &[u8]) -> Box<RawValue> {
    if let Ok(text) = std::str::from_utf8(payload)
        && let Ok(raw) = RawValue::from_string(text.trim().to_owned())
    {
        return raw;
    }
    let text = String::from_utf8_lossy(payload);
    // A string always serializes, and its serialization is always valid JSON.
    serde_json::value::to_raw_value(&text)
        .unwrap_or_else(|_| RawValue::from_string("null".to_owned()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_client_frame_of_the_spec() {
        let frame = decode_client_frame(r#"{"type":"subscribe","id":1,"channels":[{"channel":"news:sport","since":{"offset":41,"epoch":"Zk3j2"}},{"channel":"user:42"}]}"#).unwrap();
        assert_eq!(
            frame,
            ClientFrame::Subscribe {
                id: Some(1),
                channels: vec![
                    SubscribeTo {
                        channel: "news:sport".into(),
                        since: Some(Position::new(41, "Zk3j2"))
                    },
                    SubscribeTo {
                        channel: "user:42".into(),
                        since: None
                    },
                ],
            }
        );
        assert_eq!(
            decode_client_frame(r#"{"type":"unsubscribe","id":2,"channels":["a"]}"#).unwrap(),
            ClientFrame::Unsubscribe {
                id: Some(2),
                channels: vec!["a".into()]
            }
        );
        assert_eq!(
            decode_client_frame(r#"{"type":"ping"}"#).unwrap(),
            ClientFrame::Ping { id: None }
        );
        assert_eq!(
            decode_client_frame(r#"{"type":"auth","id":3,"token":"a.b.c"}"#).unwrap(),
            ClientFrame::Auth {
                id: Some(3),
                token: Some("a.b.c".into())
            }
        );
        assert_eq!(
            decode_client_frame(r#"{"type":"auth"}"#).unwrap(),
            ClientFrame::Auth {
                id: None,
                token: None
            }
        );
    }

    #[test]
    fn refuses_what_is_not_a_frame() {
        for bad in [
            "",
            "hello",
            "{}",
            r#"{"type":"dance"}"#,
            r#"{"type":"subscribe"}"#,
            r#"{"type":"subscribe","channels":[{"since":1}]}"#,
            r#"{"type":"auth","token":42}"#,
            "[1,2]",
        ] {
            assert!(
                decode_client_frame(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn encodes_server_frames_as_documented() {
        let frame = ServerFrame::Subscribed {
            id: Some(1),
            channel: "news".into(),
            position: Some(Position::new(45, "Zk3j2")),
            recovered: Some(true),
        };
        assert_eq!(
            frame.to_json(),
            r#"{"type":"subscribed","id":1,"channel":"news","position":{"offset":45,"epoch":"Zk3j2"},"recovered":true}"#
        );
        let frame = ServerFrame::Authenticated {
            id: Some(3),
            user: Some("42".into()),
            expires_in_ms: Some(60_000),
        };
        assert_eq!(
            frame.to_json(),
            r#"{"type":"authenticated","id":3,"user":"42","expires_in_ms":60000}"#
        );
        let frame = ServerFrame::Error {
            id: None,
            channel: Some("user:7".into()),
            code: ErrorCode::Forbidden,
            message: "no".into(),
        };
        assert_eq!(
            frame.to_json(),
            r#"{"type":"error","channel":"user:7","code":"forbidden","message":"no"}"#
        );
    }

    #[test]
    fn gap_frames_round_trip_as_documented() {
        let frames = [
            (
                ServerFrame::Gap {
                    channel: "news".into(),
                    reason: GapReason::EpochChanged,
                    position: Some(Position::new(0, "Q9x2")),
                },
                r#"{"type":"gap","channel":"news","reason":"epoch_changed","position":{"offset":0,"epoch":"Q9x2"}}"#,
            ),
            (
                ServerFrame::Gap {
                    channel: "news".into(),
                    reason: GapReason::Unrecoverable,
                    position: None,
                },
                r#"{"type":"gap","channel":"news","reason":"unrecoverable","position":null}"#,
            ),
        ];
        for (frame, json) in frames {
            assert_eq!(frame.to_json(), json);
            assert_eq!(serde_json::from_str::<ServerFrame>(json).unwrap(), frame);
        }
        for reason in [GapReason::EpochChanged, GapReason::Unrecoverable] {
            assert_eq!(
                serde_json::to_string(&reason).unwrap(),
                format!("\"{}\"", reason.as_str())
            );
        }
        assert!(serde_json::from_str::<GapReason>(r#""lost""#).is_err());
    }

    #[test]
    fn message_frames_embed_the_data_untouched() {
        let data = payload_as_json(br#"{"title":"Hello"}"#);
        let json = encode_message("news", Some(&Position::new(43, "Zk3j2")), &data, 7);
        assert_eq!(
            json,
            r#"{"type":"message","channel":"news","offset":43,"epoch":"Zk3j2","data":{"title":"Hello"},"time":7}"#
        );
        let text = payload_as_json(b"Content published: x");
        assert_eq!(
            encode_message("events", None, &text, 7),
            r#"{"type":"message","channel":"events","data":"Content published: x","time":7}"#
        );
        assert_eq!(payload_as_json(&[0xff]).get(), "\"\u{fffd}\"");
    }
}

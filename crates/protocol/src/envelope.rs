//! How a message published through Herald travels on the bus.
//!
//! The tutorial's publisher sends raw payloads (`PUBLISH events "…"`), and
//! those must keep working. Messages published through Herald's API carry
//! more: their history position and publish time. They travel on the same
//! Redis channel, behind a prefix no text payload starts with (a NUL byte),
//! so one subscription carries both and the gateway tells them apart:
//!
//! ```text
//! \0herald:1\n{"o":43,"e":"Zk3j2","t":1764280000000}\n<data as JSON>
//! ```
//!
//! `o`/`e` are absent for channels without history.

use serde::{Deserialize, Serialize};

use crate::position::Position;

/// The prefix of every enveloped message.
pub const ENVELOPE_PREFIX: &[u8] = b"\0herald:1\n";

/// The header line of an enveloped message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeHeader {
    /// Offset in the channel's history, if it keeps one.
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Epoch of the channel's history, if it keeps one.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// Publish time, milliseconds since the UNIX epoch.
    #[serde(rename = "t")]
    pub time_ms: u64,
}

impl EnvelopeHeader {
    /// The position, when both parts are present.
    pub fn position(&self) -> Option<Position> {
        match (&self.offset, &self.epoch) {
            (Some(offset), Some(epoch)) => Some(Position::new(*offset, epoch.clone())),
            _ => None,
        }
    }
}

/// Splits an enveloped payload into header and JSON data; `None` for a raw payload
/// (or a damaged envelope, which is then delivered raw rather than dropped).
pub fn open(payload: &[u8]) -> Option<(EnvelopeHeader, &[u8])> {
    let rest = payload.strip_prefix(ENVELOPE_PREFIX)?;
    let newline = rest.iter().position(|b| *b == b'\n')?;
    let header = serde_json::from_slice(&rest[..newline]).ok()?;
    Some((header, &rest[newline + 1..]))
}

/// Wraps JSON `data` in an envelope.
pub fn seal(header: &EnvelopeHeader, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE_PREFIX.len() + 64 + data.len());
    out.extend_from_slice(ENVELOPE_PREFIX);
    // Serializing a struct of integers and a string cannot fail.
    out.extend_from_slice(&serde_json::to_vec(header).unwrap_or_default());
    out.push(b'\n');
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_messages_open_again() {
        let header = EnvelopeHeader {
            offset: Some(43),
            epoch: Some("Zk3j2".into()),
            time_ms: 1,
        };
        let sealed = seal(&header, br#"{"title":"a\nb"}"#);
        let (opened, data) = open(&sealed).unwrap();
        assert_eq!(opened, header);
        assert_eq!(data, br#"{"title":"a\nb"}"#);
        assert_eq!(opened.position(), Some(Position::new(43, "Zk3j2")));
    }

    #[test]
    fn raw_and_damaged_payloads_are_not_envelopes() {
        assert!(open(b"Content published: hello").is_none());
        assert!(open(b"\0herald:1\nnot json\n1").is_none());
        assert!(open(b"\0herald:1\n{\"t\":1}").is_none());
    }
}

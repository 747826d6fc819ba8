//! Where a message stands in its channel's history: an offset within an epoch.
//!
//! The offset counts the channel's messages (1, 2, 3 …). The epoch names one
//! lifetime of that count: when Redis loses the history (a restart without
//! persistence), the next publish starts a new epoch, so a client holding a
//! position from the old one learns that it cannot recover rather than
//! silently skipping messages.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A position in a channel's history.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The message's number within its epoch, from 1.
    pub offset: u64,
    /// The lifetime of the channel's history this offset belongs to.
    pub epoch: String,
}

impl Position {
    /// A position.
    pub fn new(offset: u64, epoch: impl Into<String>) -> Self {
        Position {
            offset,
            epoch: epoch.into(),
        }
    }

    /// Whether a message at `self` comes after `other` in the same epoch (so it is not a repeat).
    pub fn is_after(&self, other: &Position) -> bool {
        self.epoch != other.epoch || self.offset > other.offset
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch, self.offset)
    }
}

/// The longest epoch accepted from a client; epochs Herald makes are 12 characters.
pub const MAX_EPOCH_LEN: usize = 32;

/// Encodes the SSE `id:` of a stream: one `EPOCH.OFFSET` (or `-`) per channel, joined by `,`.
pub fn encode_sse_id<'a>(positions: impl IntoIterator<Item = Option<&'a Position>>) -> String {
    let parts: Vec<String> = positions
        .into_iter()
        .map(|p| p.map_or_else(|| "-".to_owned(), Position::to_string))
        .collect();
    parts.join(",")
}

/// Decodes an SSE `Last-Event-ID` for a stream of `channels` channels.
///
/// Returns `None` when the id does not have that shape: the client then gets
/// `recovered: false` rather than a guess.
pub fn decode_sse_id(id: &str, channels: usize) -> Option<Vec<Option<Position>>> {
    let parts: Vec<&str> = id.split(',').collect();
    if parts.len() != channels {
        return None;
    }
    parts
        .into_iter()
        .map(|part| {
            if part == "-" {
                return Some(None);
            }
            let (epoch, offset) = part.rsplit_once('.')?;
            if epoch.is_empty()
                || epoch.len() > MAX_EPOCH_LEN
                || !epoch.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return None;
            }
            // Only the canonical decimal the gateway writes: no sign, no leading zero,
            // so an id decodes to exactly one position and encodes back to itself.
            let canonical = !offset.is_empty()
                && offset.bytes().all(|b| b.is_ascii_digit())
                && (offset == "0" || !offset.starts_with('0'));
            if !canonical {
                return None;
            }
            Some(Some(Position::new(offset.parse().ok()?, epoch)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_ids_round_trip() {
        let a = Position::new(46, "Zk3j2");
        let id = encode_sse_id([Some(&a), None]);
        assert_eq!(id, "Zk3j2.46,-");
        assert_eq!(decode_sse_id(&id, 2), Some(vec![Some(a), None]));
    }

    #[test]
    fn malformed_sse_ids_are_refused() {
        assert_eq!(decode_sse_id("Zk3j2.46", 2), None);
        assert_eq!(decode_sse_id("Zk3j2.x", 1), None);
        assert_eq!(decode_sse_id(".4", 1), None);
        assert_eq!(decode_sse_id("a b.4", 1), None);
        // Non-canonical offsets: a sign, a leading zero, nothing.
        assert_eq!(decode_sse_id("Zk3j2.+4", 1), None);
        assert_eq!(decode_sse_id("Zk3j2.04", 1), None);
        assert_eq!(decode_sse_id("Zk3j2.", 1), None);
        assert_eq!(
            decode_sse_id("Zk3j2.0", 1),
            Some(vec![Some(Position::new(0, "Zk3j2"))])
        );
    }

    #[test]
    fn a_new_epoch_is_always_after() {
        let old = Position::new(10, "a");
        assert!(!Position::new(10, "a").is_after(&old));
        assert!(Position::new(11, "a").is_after(&old));
        assert!(Position::new(1, "b").is_after(&old));
    }
}

//! Channel history: which channels keep it, and what a recovery found.
//!
//! Pub/Sub forgets; history does not. A channel whose name matches a
//! [`HistoryRules`] pattern keeps its last messages (by count and/or age) with
//! a position each, so a client that reconnects can ask for everything after
//! the last position it saw. The storage is the broker's (Redis Streams, or
//! memory); the rules and the verdict on a recovery are the same for both and
//! live here, with how long each part of a channel's history is kept.
//!
//! # What expires when
//!
//! A channel's messages and its position (epoch and last offset) expire
//! separately. The messages last the rule's TTL after the channel's last
//! publish. The position lasts much longer — [`position_ttl`] — because the
//! protocol promises that it outlives the messages: a client that missed
//! nothing while a quiet channel's messages expired must still be told
//! `recovered: true`. It is not kept forever either, so a channel that is no
//! longer published to leaves nothing behind in the end. Reading never
//! creates or extends anything: only a publish does.

use std::time::Duration;

use herald_protocol::{ChannelName, Position};
use rand::Rng;
use rand::distr::Alphanumeric;

use crate::BusMessage;

/// How much history one channel keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// At most this many messages.
    pub size: usize,
    /// Dropped this long after the channel's last publish, if set.
    pub ttl: Option<Duration>,
}

/// The most messages a channel may keep; bounds memory and recovery reads.
pub const MAX_HISTORY_SIZE: usize = 1_000_000;

/// The longest TTL a history rule may give; ten years, so that every derived
/// expiry stays far inside what Redis accepts.
pub const MAX_HISTORY_TTL: Duration = Duration::from_secs(3650 * 86_400);

/// The shortest time a channel's position outlives its last publish: 30 days.
///
/// Long enough that a client returning after a weekend, a holiday or a month
/// of a quiet channel is told the truth about what it missed; short enough that
/// abandoned channels (`news:<uuid>`) do not accumulate for ever.
pub const MIN_POSITION_TTL: Duration = Duration::from_secs(30 * 86_400);

/// How many times the messages' TTL a channel's position outlives its last publish, at least.
pub const POSITION_TTL_FACTOR: u32 = 10;

impl HistoryPolicy {
    /// How long the channel's position (epoch and last offset) is kept after its
    /// last publish: `max(30 days, 10 × TTL)`, always well past the messages.
    pub fn position_ttl(&self) -> Duration {
        position_ttl(self.ttl)
    }

    /// How long the channel's messages are kept after its last publish: the
    /// rule's TTL, or as long as the position when the rule has none.
    pub fn messages_ttl(&self) -> Duration {
        self.ttl.unwrap_or_else(|| self.position_ttl())
    }
}

/// `max(30 days, 10 × ttl)`: how long a position outlives the last publish of a
/// channel whose messages last `ttl` (or have no TTL).
pub fn position_ttl(ttl: Option<Duration>) -> Duration {
    ttl.map_or(MIN_POSITION_TTL, |ttl| {
        ttl.saturating_mul(POSITION_TTL_FACTOR)
            .max(MIN_POSITION_TTL)
    })
}

/// Channel patterns and the history each keeps: `news:*=1000/24h`, `orders=100`.
///
/// The first matching rule wins. A pattern is a channel name, or a prefix
/// followed by `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryRules {
    /// In the order given.
    rules: Vec<(String, HistoryPolicy)>,
}

/// A history rule that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "history rule {rule:?}: {why} (write PATTERN=SIZE or PATTERN=SIZE/TTL, e.g. 'news:*=1000/24h')"
)]
pub struct HistoryRuleError {
    /// The rule as written.
    pub rule: String,
    /// What is wrong with it.
    pub why: String,
}

impl HistoryRules {
    /// Parses rules like `news:*=1000/24h`.
    pub fn parse<'a>(rules: impl IntoIterator<Item = &'a str>) -> Result<Self, HistoryRuleError> {
        let mut parsed = Vec::new();
        for rule in rules {
            let error = |why: &str| HistoryRuleError {
                rule: rule.to_owned(),
                why: why.to_owned(),
            };
            let (pattern, policy) = rule.split_once('=').ok_or_else(|| error("missing '='"))?;
            if !is_valid_pattern(pattern) {
                return Err(error(
                    "the pattern is not a channel name or a prefix ending in '*'",
                ));
            }
            let (size, ttl) = match policy.split_once('/') {
                Some((size, ttl)) => (
                    size,
                    Some(humantime_secs(ttl).ok_or_else(|| error("bad TTL"))?),
                ),
                None => (policy, None),
            };
            if ttl.is_some_and(|ttl| ttl > MAX_HISTORY_TTL) {
                return Err(error("TTL must be at most 3650d"));
            }
            let size: usize = size
                .trim()
                .parse()
                .map_err(|_| error("SIZE is not a number"))?;
            if size == 0 || size > MAX_HISTORY_SIZE {
                return Err(error(&format!("SIZE must be 1 to {MAX_HISTORY_SIZE}")));
            }
            parsed.push((pattern.to_owned(), HistoryPolicy { size, ttl }));
        }
        Ok(HistoryRules { rules: parsed })
    }

    /// The history `channel` keeps, if any.
    pub fn policy(&self, channel: &ChannelName) -> Option<HistoryPolicy> {
        self.rules
            .iter()
            .find(|(pattern, _)| pattern_matches(pattern, channel.as_str()))
            .map(|(_, policy)| *policy)
    }
}

/// Whether `pattern` is a channel name or a prefix followed by `*`.
pub fn is_valid_pattern(pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => ChannelName::new(prefix).is_ok(),
        None => ChannelName::new(pattern).is_ok(),
    }
}

/// Whether `channel` matches `pattern` (exact, or prefix when the pattern ends in `*`).
pub fn pattern_matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => channel == pattern,
    }
}

/// Parses `90s`, `15m`, `24h`, `7d`: history TTLs are coarse, so whole units suffice.
fn humantime_secs(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let seconds = match unit {
        "ms" => return (number > 0).then(|| Duration::from_millis(number)),
        "s" => number,
        "m" => number.checked_mul(60)?,
        "h" => number.checked_mul(3600)?,
        "d" => number.checked_mul(86_400)?,
        _ => return None,
    };
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

/// A fresh epoch name: 12 random letters and digits.
///
/// Also what a read of a channel that has no position yet (never published
/// to, or its position lost) answers with offset 0: a one-off epoch that no
/// message will ever carry, stored nowhere. A client that later passes it as
/// `since` is therefore told `recovered: false`: nothing was kept that could
/// prove it missed nothing, and claiming so would be a lie whenever the
/// channel's first messages were published and lost meanwhile.
pub fn new_epoch() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(12)
        .map(char::from)
        .collect()
}

/// What a recovery read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The channel's position now (its last message, offset 0 before the first).
    pub position: Position,
    /// The messages after the requested position, in order, up to `position`.
    pub messages: Vec<BusMessage>,
    /// Whether `messages` is everything that was missed. `false` when the epoch
    /// changed, the position is older than what is kept, or too much was missed.
    pub complete: bool,
}

impl Recovery {
    /// Judges a history read: `top` is the channel's position, `since` what the client
    /// asked for, `found` what the store returned after `since` (up to `top`).
    pub fn judge(
        top: Position,
        since: Option<&Position>,
        found: Vec<BusMessage>,
        limit: usize,
    ) -> Recovery {
        let Some(since) = since else {
            return Recovery {
                position: top,
                messages: Vec::new(),
                complete: true,
            };
        };
        let incomplete = |top| Recovery {
            position: top,
            messages: Vec::new(),
            complete: false,
        };
        if since.epoch != top.epoch || since.offset > top.offset {
            return incomplete(top);
        }
        let missed = top.offset - since.offset;
        if missed > limit as u64 {
            return incomplete(top);
        }
        // Exactly the offsets since+1 ..= top, or something was trimmed or expired.
        let whole = found.len() as u64 == missed
            && found
                .iter()
                .zip(since.offset + 1..)
                .all(|(m, expected)| m.position.as_ref().map(|p| p.offset) == Some(expected));
        if !whole {
            return incomplete(top);
        }
        Recovery {
            position: top,
            messages: found,
            complete: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ch(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    fn at(offset: u64) -> BusMessage {
        BusMessage {
            channel: ch("c"),
            payload: Bytes::from_static(b"1"),
            position: Some(Position::new(offset, "e")),
            time_ms: Some(0),
            json: true,
        }
    }

    #[test]
    fn rules_pick_the_first_match() {
        let rules =
            HistoryRules::parse(["news:sport=5", "news:*=1000/24h", "orders=10/90s"]).unwrap();
        assert_eq!(
            rules.policy(&ch("news:sport")),
            Some(HistoryPolicy { size: 5, ttl: None })
        );
        assert_eq!(
            rules.policy(&ch("news:tech")),
            Some(HistoryPolicy {
                size: 1000,
                ttl: Some(Duration::from_secs(86_400))
            })
        );
        assert_eq!(
            rules.policy(&ch("orders")),
            Some(HistoryPolicy {
                size: 10,
                ttl: Some(Duration::from_secs(90))
            })
        );
        assert_eq!(rules.policy(&ch("events")), None);
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for bad in [
            "news",
            "news:*=",
            "news:*=0",
            "news:*=abc",
            "news:*=10/soon",
            "a b=1",
            "x=2000000",
            "news:*=10/3651d",
        ] {
            assert!(
                HistoryRules::parse([bad]).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn recovery_is_complete_only_with_every_missed_offset() {
        let top = Position::new(5, "e");
        let all = Recovery::judge(
            top.clone(),
            Some(&Position::new(2, "e")),
            vec![at(3), at(4), at(5)],
            100,
        );
        assert!(all.complete);
        assert_eq!(all.messages.len(), 3);

        let trimmed = Recovery::judge(
            top.clone(),
            Some(&Position::new(2, "e")),
            vec![at(4), at(5)],
            100,
        );
        assert!(!trimmed.complete && trimmed.messages.is_empty());

        let other_epoch = Recovery::judge(top.clone(), Some(&Position::new(2, "old")), vec![], 100);
        assert!(!other_epoch.complete);

        let too_many = Recovery::judge(
            top.clone(),
            Some(&Position::new(2, "e")),
            vec![at(3), at(4), at(5)],
            2,
        );
        assert!(!too_many.complete);

        let nothing_missed =
            Recovery::judge(top.clone(), Some(&Position::new(5, "e")), vec![], 100);
        assert!(nothing_missed.complete);

        let ahead = Recovery::judge(top, Some(&Position::new(9, "e")), vec![], 100);
        assert!(!ahead.complete);
    }

    #[test]
    fn positions_outlive_messages_by_far() {
        let day = Duration::from_secs(86_400);
        let hourly = HistoryPolicy {
            size: 10,
            ttl: Some(Duration::from_secs(3600)),
        };
        assert_eq!(hourly.messages_ttl(), Duration::from_secs(3600));
        assert_eq!(hourly.position_ttl(), 30 * day);
        let weekly = HistoryPolicy {
            size: 10,
            ttl: Some(7 * day),
        };
        assert_eq!(weekly.position_ttl(), 70 * day);
        let forever = HistoryPolicy {
            size: 10,
            ttl: None,
        };
        assert_eq!(forever.position_ttl(), 30 * day);
        assert_eq!(forever.messages_ttl(), 30 * day);
        let longest = HistoryPolicy {
            size: 1,
            ttl: Some(MAX_HISTORY_TTL),
        };
        assert_eq!(longest.position_ttl(), MAX_HISTORY_TTL * 10);
    }

    #[test]
    fn epochs_are_fresh() {
        let (a, b) = (new_epoch(), new_epoch());
        assert_eq!(a.len(), 12);
        assert_ne!(a, b);
    }
}

//! Reading stream entries out of raw Redis replies, tolerantly.
//!
//! The consumer reads entries three ways (`XREADGROUP`, its own history, and
//! `XAUTOCLAIM`/`XCLAIM`), whose replies nest entries differently, and an
//! entry that was trimmed away while pending comes back with nil fields. A
//! strict decoder would fail the whole reply on such an entry and the
//! consumer would retry it forever; this one turns every shape into plain
//! [`Entry`] values and lets the consumer decide what a missing field means.

use redis::Value;

/// One stream entry as the consumer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The entry's stream id (`<ms>-<seq>`), used to acknowledge it.
    pub(crate) id: String,
    /// What the entry's `event` field holds.
    pub(crate) event: EventField,
}

/// The state of an entry's `event` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EventField {
    /// The field's text (lossily decoded if it was not UTF-8).
    Present(String),
    /// The entry exists but has no `event` field: a foreign writer's entry.
    Missing,
    /// The entry was deleted (trimmed) while pending; only its id is left.
    Deleted,
}

/// Entries of an `XREADGROUP` reply (RESP2 array or RESP3 map of streams), in order.
pub(crate) fn read_reply(value: Value) -> Vec<Entry> {
    let streams: Vec<Value> = match value {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|stream| match stream {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        _ => Vec::new(),
    };
    streams.into_iter().flat_map(entry_list).collect()
}

/// The reply of `XAUTOCLAIM`: the cursor for the next call, the claimed
/// entries, and the ids of pending entries that no longer exist (Redis 7
/// drops those from the pending list itself).
pub(crate) fn autoclaim_reply(value: Value) -> (String, Vec<Entry>) {
    let Value::Array(parts) = value else {
        return ("0-0".to_owned(), Vec::new());
    };
    let mut parts = parts.into_iter();
    let cursor = parts
        .next()
        .and_then(text)
        .unwrap_or_else(|| "0-0".to_owned());
    let entries = parts.next().map(entry_list).unwrap_or_default();
    (cursor, entries)
}

/// The entries of an `XCLAIM` reply, or of one stream's part of a read reply.
pub(crate) fn entry_list(value: Value) -> Vec<Entry> {
    let Value::Array(entries) = value else {
        return Vec::new();
    };
    entries.into_iter().filter_map(entry).collect()
}

fn entry(value: Value) -> Option<Entry> {
    let Value::Array(parts) = value else {
        // Redis 6 answers nil for a claimed entry that was deleted; it has no id to act on.
        return None;
    };
    let mut parts = parts.into_iter();
    let id = parts.next().and_then(text)?;
    let event = match parts.next() {
        Some(Value::Array(fields)) => event_field(fields),
        Some(Value::Map(pairs)) => {
            event_field(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())
        }
        _ => EventField::Deleted,
    };
    Some(Entry { id, event })
}

fn event_field(fields: Vec<Value>) -> EventField {
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        if text(name).as_deref() == Some("event") {
            return text(value).map_or(EventField::Missing, EventField::Present);
        }
    }
    EventField::Missing
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(
            String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        ),
        Value::SimpleString(s) => Some(s),
        Value::VerbatimString { text, .. } => Some(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn raw_entry(id: &str, fields: &[(&str, &str)]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(
                fields
                    .iter()
                    .flat_map(|(k, v)| [bulk(k), bulk(v)])
                    .collect(),
            ),
        ])
    }

    #[test]
    fn reads_an_xreadgroup_reply_including_deleted_and_foreign_entries() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("herald:domain-events"),
            Value::Array(vec![
                raw_entry("1-0", &[("event", "{}")]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
                raw_entry("3-0", &[("other", "x")]),
            ]),
        ])]);
        assert_eq!(
            read_reply(reply),
            vec![
                Entry {
                    id: "1-0".into(),
                    event: EventField::Present("{}".into())
                },
                Entry {
                    id: "2-0".into(),
                    event: EventField::Deleted
                },
                Entry {
                    id: "3-0".into(),
                    event: EventField::Missing
                },
            ]
        );
        assert_eq!(read_reply(Value::Nil), vec![]);
    }

    #[test]
    fn reads_an_xautoclaim_reply() {
        let reply = Value::Array(vec![
            bulk("7-0"),
            Value::Array(vec![raw_entry("5-0", &[("event", "e")])]),
            Value::Array(vec![bulk("6-0")]),
        ]);
        let (cursor, entries) = autoclaim_reply(reply);
        assert_eq!(cursor, "7-0");
        assert_eq!(
            entries,
            vec![Entry {
                id: "5-0".into(),
                event: EventField::Present("e".into())
            }]
        );
        assert_eq!(autoclaim_reply(Value::Nil), ("0-0".to_owned(), vec![]));
    }

    #[test]
    fn reads_an_xclaim_reply_skipping_nil_entries() {
        let reply = Value::Array(vec![Value::Nil, raw_entry("9-1", &[("event", "x")])]);
        assert_eq!(
            entry_list(reply),
            vec![Entry {
                id: "9-1".into(),
                event: EventField::Present("x".into())
            }]
        );
    }
}

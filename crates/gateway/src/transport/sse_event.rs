//! The `text/event-stream` encoding of one event, valid per the SSE spec whatever its data holds.
//!
//! In an event stream a line ends at CR, LF or CRLF, and an empty line ends
//! the event. A payload written verbatim after one `data: ` would therefore
//! be cut by any line break it holds — a pretty-printed JSON object, or a
//! blank line, reaches `EventSource` as a fragment that is not JSON. So each
//! line of the data becomes its own `data:` line, which the client joins
//! back with `\n`: a JSON text parses to the same value (its line breaks are
//! whitespace between tokens, never inside strings, where JSON escapes them),
//! and the publisher's bytes are kept except that CR and CRLF arrive as LF.
//! Nothing is parsed or re-serialised, so the cost stays one copy per
//! message, shared by every stream (see [`Delivery`](crate::delivery::Delivery)).

use bytes::Bytes;

/// `event: NAME` followed by one `data:` line per line of `data`, and the empty line that ends the event.
///
/// `name` is one of the gateway's own event names and must not hold a line break.
pub fn event(name: &str, data: &str) -> Bytes {
    // "event: " + name + "\n" + per line "data: " + "\n", + the closing "\n".
    let lines = data.bytes().filter(|b| matches!(b, b'\n' | b'\r')).count() + 1;
    let mut out = Vec::with_capacity(name.len() + data.len() + 8 + 7 * lines + 1);
    debug_assert!(!name.contains(['\n', '\r']), "event name {name:?}");
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    for line in lines_of(data) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    Bytes::from(out)
}

/// A `retry:` field on its own: how many milliseconds `EventSource` waits before it reconnects.
pub fn retry(millis: u64) -> Bytes {
    Bytes::from(format!("retry: {millis}\n\n"))
}

/// The lines of `text` as the SSE spec splits them: at CRLF, lone LF and lone CR.
fn lines_of(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(current)
            }
            Some(at) => {
                let skip = if current[at..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&current[at + skip..]);
                Some(&current[..at])
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec-following reader's view of one encoded event: its name and its data, lines joined by `\n`.
    fn decode(bytes: &[u8]) -> (String, String) {
        let text = std::str::from_utf8(bytes).unwrap();
        assert!(text.ends_with("\n\n"), "{text:?}");
        let body = &text[..text.len() - 1];
        let (mut name, mut data) = (String::new(), Vec::new());
        for line in lines_of(body.strip_suffix('\n').unwrap()) {
            assert!(!line.is_empty(), "an empty line inside the event: {text:?}");
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => name = value.to_owned(),
                "data" => data.push(value),
                other => panic!("unexpected field {other:?} in {text:?}"),
            }
        }
        (name, data.join("\n"))
    }

    #[test]
    fn a_single_line_is_one_data_line() {
        assert_eq!(
            &event("message", "{\"a\":1}")[..],
            b"event: message\ndata: {\"a\":1}\n\n"
        );
    }

    #[test]
    fn every_kind_of_line_break_becomes_its_own_data_line() {
        let data = "{\n  \"a\": 1,\r\n\r\n  \"b\": \"x\\ny\"\r}";
        let encoded = event("message", data);
        assert_eq!(
            &encoded[..],
            b"event: message\ndata: {\ndata:   \"a\": 1,\ndata: \ndata:   \"b\": \"x\\ny\"\ndata: }\n\n"
        );
        let (name, decoded) = decode(&encoded);
        assert_eq!(name, "message");
        let sent: serde_json::Value = serde_json::from_str(data).unwrap();
        let received: serde_json::Value = serde_json::from_str(&decoded).unwrap();
        assert_eq!(sent, received);
    }

    #[test]
    fn leading_and_trailing_breaks_and_empty_data_survive() {
        for data in ["", "\n", "\r\n\r\n", "a\r", "\ra", " lead"] {
            let (_, decoded) = decode(&event("x", data));
            assert_eq!(decoded, data.replace("\r\n", "\n").replace('\r', "\n"));
        }
    }

    #[test]
    fn retry_is_a_field_of_its_own() {
        assert_eq!(&retry(2500)[..], b"retry: 2500\n\n");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 1000, ..Default::default() })]

        /// Whatever the data, a spec-following reader gets it back (line breaks as LF).
        #[test]
        fn any_data_round_trips(data in "(\\PC|\r|\n| ){0,64}") {
            let (name, decoded) = decode(&event("message", &data));
            proptest::prop_assert_eq!(name, "message");
            proptest::prop_assert_eq!(decoded, data.replace("\r\n", "\n").replace('\r', "\n"));
        }
    }
}

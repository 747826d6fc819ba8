//! The bytes the bench publishes and how a receiver reads them back, fast.
//!
//! Every published message is a small JSON object of exactly the requested
//! size: `{"seq":123,"ts":1700000000000000,"pad":"xxxx"}`. `seq` numbers the
//! message (0-based) so a receiver can detect loss and duplicates, and `ts` is
//! the send time in microseconds since the UNIX epoch (`CLOCK_REALTIME`; the
//! bench and the gateway share one machine, so one clock) so a receiver can
//! compute latency. `pad` fills the object up to the requested size.
//!
//! Receivers must handle about a million frames per second, so [`decode`] is a
//! hand-written prefix parser over the bytes: it reads `seq` and `ts` and
//! never looks at the padding, never allocates and never builds a JSON tree.

use std::time::{SystemTime, UNIX_EPOCH};

/// Opens every payload, up to the first digit of the sequence number.
const SEQ_KEY: &[u8] = b"{\"seq\":";
/// Separates the sequence number from the timestamp.
const TS_KEY: &[u8] = b",\"ts\":";
/// Separates the timestamp from the padding string.
const PAD_KEY: &[u8] = b",\"pad\":\"";
/// Closes the padding string and the object.
const END: &[u8] = b"\"}";
/// The byte the padding is made of.
const PAD_BYTE: u8 = b'x';

/// What a receiver reads out of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The message's sequence number, 0-based, in publishing order.
    pub seq: u64,
    /// When the message was sent, in microseconds since the UNIX epoch.
    pub ts_us: u64,
}

/// The current wall-clock time in microseconds since the UNIX epoch (0 if the clock is before it).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The size of the smallest payload that can carry `seq` and `ts_us` (an empty padding).
pub fn minimal_len(seq: u64, ts_us: u64) -> usize {
    SEQ_KEY.len() + digits(seq) + TS_KEY.len() + digits(ts_us) + PAD_KEY.len() + END.len()
}

/// Writes into `buf` (cleared first) the payload for `seq` sent at `ts_us`,
/// exactly `target_len` bytes long, or [`minimal_len`] bytes if `target_len` is smaller.
pub fn encode_into(buf: &mut Vec<u8>, seq: u64, ts_us: u64, target_len: usize) {
    buf.clear();
    buf.extend_from_slice(SEQ_KEY);
    push_u64(buf, seq);
    buf.extend_from_slice(TS_KEY);
    push_u64(buf, ts_us);
    buf.extend_from_slice(PAD_KEY);
    let pad = target_len.saturating_sub(buf.len() + END.len());
    buf.resize(buf.len() + pad, PAD_BYTE);
    buf.extend_from_slice(END);
}

/// Reads `seq` and `ts` from the front of a payload; `None` if the frame is not one of ours.
///
/// Only the prefix `{"seq":N,"ts":T` followed by `,` or `}` is checked: this
/// is what makes it cheap enough for the receive path.
#[inline]
pub fn decode(frame: &[u8]) -> Option<Stamp> {
    let rest = frame.strip_prefix(SEQ_KEY)?;
    let (seq, rest) = parse_u64(rest)?;
    let rest = rest.strip_prefix(TS_KEY)?;
    let (ts_us, rest) = parse_u64(rest)?;
    match rest.first() {
        Some(b',' | b'}') => Some(Stamp { seq, ts_us }),
        _ => None,
    }
}

/// Parses the leading decimal digits of `s`; `None` if there are none or the number overflows.
#[inline]
fn parse_u64(s: &[u8]) -> Option<(u64, &[u8])> {
    let len = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 || len > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for &b in &s[..len] {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((value, &s[len..]))
}

/// How many decimal digits `n` has.
fn digits(mut n: u64) -> usize {
    let mut count = 1;
    while n >= 10 {
        n /= 10;
        count += 1;
    }
    count
}

/// Appends the decimal digits of `n` to `buf`.
fn push_u64(buf: &mut Vec<u8>, n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut n = n;
    loop {
        i -= 1;
        // `n % 10` is below 10, so the cast cannot truncate.
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_for_every_size_and_many_numbers() {
        let numbers = [0, 1, 9, 10, 99, 123, 100_000, u64::from(u32::MAX), u64::MAX];
        let mut buf = Vec::new();
        for &seq in &numbers {
            for &ts in &[0, 1_700_000_000_000_000, u64::MAX] {
                let min = minimal_len(seq, ts);
                for target in 0..min + 300 {
                    encode_into(&mut buf, seq, ts, target);
                    assert_eq!(
                        buf.len(),
                        target.max(min),
                        "seq {seq} ts {ts} target {target}"
                    );
                    assert_eq!(decode(&buf), Some(Stamp { seq, ts_us: ts }));
                    let value: serde_json::Value =
                        serde_json::from_slice(&buf).expect("payload is valid JSON");
                    assert_eq!(value["seq"].as_u64(), Some(seq));
                    assert_eq!(value["ts"].as_u64(), Some(ts));
                }
            }
        }
    }

    #[test]
    fn minimal_payload_has_empty_padding() {
        let mut buf = Vec::new();
        encode_into(&mut buf, 7, 42, 1);
        assert_eq!(buf, br#"{"seq":7,"ts":42,"pad":""}"#);
        assert_eq!(minimal_len(7, 42), buf.len());
    }

    #[test]
    fn decode_accepts_a_closing_brace_after_ts() {
        assert_eq!(
            decode(br#"{"seq":5,"ts":6}"#),
            Some(Stamp { seq: 5, ts_us: 6 })
        );
    }

    #[test]
    fn decode_rejects_foreign_frames() {
        for frame in [
            &b""[..],
            b"hello",
            br#"{"seq":,"ts":1}"#,
            br#"{"seq":1,"ts":}"#,
            br#"{"seq":1,"ts":2"#,
            br#"{"seq":-1,"ts":2}"#,
            br#"{"ts":2,"seq":1}"#,
            br#"{"seq":99999999999999999999999,"ts":2}"#,
            br#"{"seq":1,"ts":2x}"#,
        ] {
            assert_eq!(decode(frame), None, "{}", String::from_utf8_lossy(frame));
        }
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_us() > 1_577_836_800_000_000);
    }
}

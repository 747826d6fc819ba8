//! Property tests of the small parsers a remote peer reaches directly: SSE
//! `Last-Event-ID` (and `since=`), a subscribe's `since` position, and channel
//! names. Whatever arrives, each returns a value or a refusal — never a panic —
//! and what it accepts is exactly what its grammar says.
#![allow(clippy::unwrap_used)]

use herald_protocol::channel::MAX_CHANNEL_LEN;
use herald_protocol::frames::decode_client_frame;
use herald_protocol::position::{MAX_EPOCH_LEN, decode_sse_id, encode_sse_id};
use herald_protocol::{ChannelName, ClientFrame, Position};
use proptest::prelude::*;

/// Epochs as Herald makes them and as a client may send them back.
fn epoch() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{1,32}"
}

fn position() -> impl Strategy<Value = Option<Position>> {
    prop::option::of(
        (any::<u64>(), epoch()).prop_map(|(offset, epoch)| Position::new(offset, epoch)),
    )
}

/// Text built from the pieces an SSE id is made of, and pieces that break it.
fn id_like() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just(",".to_owned()),
            Just(".".to_owned()),
            Just("-".to_owned()),
            "[0-9]{1,25}",
            "[A-Za-z0-9]{0,40}",
            "\\PC{0,4}",
            Just("18446744073709551616".to_owned()),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

/// The channel-name grammar, written independently of the parser.
fn is_valid_channel(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHANNEL_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:@=/".contains(&b))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn sse_ids_round_trip(positions in prop::collection::vec(position(), 1..16)) {
        let id = encode_sse_id(positions.iter().map(Option::as_ref));
        prop_assert_eq!(decode_sse_id(&id, positions.len()), Some(positions.clone()));
        // The same id for a stream of a different shape is refused, not guessed.
        prop_assert_eq!(decode_sse_id(&id, positions.len() + 1), None);
    }

    #[test]
    fn any_last_event_id_decodes_to_its_own_shape_or_nothing(id in id_like(), channels in 0usize..8) {
        if let Some(positions) = decode_sse_id(&id, channels) {
            prop_assert_eq!(positions.len(), channels);
            for position in positions.into_iter().flatten() {
                prop_assert!(!position.epoch.is_empty() && position.epoch.len() <= MAX_EPOCH_LEN);
                prop_assert!(position.epoch.bytes().all(|b| b.is_ascii_alphanumeric()));
                // What was accepted is what was sent: it encodes back into the id.
                prop_assert!(id.contains(&position.to_string()));
            }
        }
    }

    #[test]
    fn arbitrary_text_as_last_event_id_never_panics(id in "\\PC{0,300}", channels in 0usize..130) {
        let _ = decode_sse_id(&id, channels);
    }

    #[test]
    fn any_since_value_decodes_to_exactly_itself_or_is_refused(
        offset in prop_oneof![
            any::<u64>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
            "\\PC{0,8}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            Just(serde_json::json!("18446744073709551616")),
            Just(serde_json::json!(18_446_744_073_709_551_615u64)),
        ],
        epoch in prop_oneof![
            epoch().prop_map(serde_json::Value::from),
            "\\PC{0,40}".prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
        ],
    ) {
        let since = serde_json::json!({"offset": offset, "epoch": epoch});
        let frame = serde_json::json!({"type": "subscribe", "channels": [{"channel": "news", "since": since}]});
        match decode_client_frame(&frame.to_string()) {
            Ok(ClientFrame::Subscribe { channels, .. }) => {
                let decoded = channels[0].since.clone().unwrap();
                prop_assert_eq!(Some(decoded.offset), offset.as_u64());
                prop_assert_eq!(Some(decoded.epoch.as_str()), epoch.as_str());
            }
            Ok(other) => prop_assert!(false, "decoded as {other:?}"),
            // Refused: an offset that is not a u64, or an epoch that is not a string.
            Err(_) => prop_assert!(offset.as_u64().is_none() || !epoch.is_string()),
        }
    }

    #[test]
    fn channel_names_are_accepted_exactly_by_the_grammar(
        name in prop_oneof![
            "[A-Za-z0-9_.:@=/-]{0,140}",
            "\\PC{0,140}",
            "[a-z]{1,10}:[\\x00-\\x7f]{0,20}",
            any::<String>(),
        ]
    ) {
        match ChannelName::new(&name) {
            Ok(channel) => {
                prop_assert!(is_valid_channel(&name), "accepted {name:?}");
                prop_assert_eq!(channel.as_str(), name.as_str());
                prop_assert_eq!(channel.to_string().parse::<ChannelName>().unwrap(), channel);
            }
            Err(_) => prop_assert!(!is_valid_channel(&name), "refused {name:?}"),
        }
    }
}

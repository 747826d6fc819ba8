//! Property tests of the client-frame decoder: whatever a client sends, decoding
//! returns a frame or an error — it never panics, and what it allocates is
//! bounded by the input (itself bounded by the gateway's frame-size limit).
#![allow(clippy::unwrap_used)]

use herald_protocol::frames::decode_client_frame;
use herald_protocol::{ChannelName, ClientFrame};
use proptest::prelude::*;

/// Arbitrary JSON values, nested a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("subscribe"),
            Just("unsubscribe"),
            Just("ping"),
            Just("channels"),
            Just("since")
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("id".to_owned()),
                    Just("channels".to_owned()),
                    Just("channel".to_owned()),
                    Just("since".to_owned()),
                    Just("offset".to_owned()),
                    Just("epoch".to_owned()),
                    ".{0,8}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,2000}") {
        let _ = decode_client_frame(&text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = decode_client_frame(&text);
    }

    #[test]
    fn arbitrary_json_decodes_to_at_most_what_it_holds(value in json_value()) {
        let text = value.to_string();
        if let Ok(frame) = decode_client_frame(&text) {
            // Every decoded channel came from the input: the output never outgrows it.
            let names: Vec<&str> = match &frame {
                ClientFrame::Subscribe { channels, .. } => channels.iter().map(|c| c.channel.as_str()).collect(),
                ClientFrame::Unsubscribe { channels, .. } => channels.iter().map(String::as_str).collect(),
                ClientFrame::Ping { .. } | ClientFrame::Auth { .. } => Vec::new(),
            };
            prop_assert!(names.iter().map(|n| n.len()).sum::<usize>() <= text.len());
            for name in names {
                // Validation of names happens after decoding, and never panics either.
                let _ = ChannelName::new(name);
            }
        }
    }

    #[test]
    fn well_formed_subscribes_always_decode(channels in prop::collection::vec("[a-z:]{1,20}", 1..10), id in any::<u64>()) {
        let frame = serde_json::json!({
            "type": "subscribe",
            "id": id,
            "channels": channels.iter().map(|c| serde_json::json!({"channel": c})).collect::<Vec<_>>(),
        });
        let decoded = decode_client_frame(&frame.to_string()).unwrap();
        let ClientFrame::Subscribe { id: Some(got), channels: got_channels } = decoded else { panic!("not a subscribe") };
        prop_assert_eq!(got, id);
        prop_assert_eq!(got_channels.len(), channels.len());
    }
}

#[test]
fn deeply_nested_input_is_refused_not_overflowed() {
    // serde_json stops at 128 levels instead of exhausting the stack.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(decode_client_frame(&deep).is_err());
    let deep_object = format!(
        r#"{{"type":"ping","id":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(decode_client_frame(&deep_object).is_err());
}

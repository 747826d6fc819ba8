//! Property tests of every gateway parser a remote peer reaches: the publish
//! API's body and batch body, SSE's `Last-Event-ID`, JWT claim values, and the
//! content proxy's paths.
//!
//! The HTTP ones drive the real router (`tower::ServiceExt::oneshot`, no socket)
//! on the in-process bus: whatever the body, the answer is a success or a 4xx
//! with the gateway's one error shape — never a 5xx, never a panic. The proxy
//! property runs against a real upstream on a loopback port.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use herald_broker::{Broker, HistoryRules, MemoryBroker};
use herald_gateway::auth::{AuthError, Authenticator};
use herald_gateway::policy::ChannelPolicy;
use herald_gateway::{Gateway, GatewayConfig};
use herald_protocol::position::decode_sse_id;
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tower::ServiceExt;

const API_KEY: &str = "k";
const SECRET: &[u8] = b"a-test-secret-of-32-bytes-length";

/// The error codes the HTTP API documents (`docs/protocol.md`); a 4xx carries one of them.
const ERROR_CODES: [&str; 11] = [
    "websocket_upgrade_required",
    "method_not_allowed",
    "unauthorized",
    "forbidden",
    "bad_request",
    "invalid_channel",
    "unprocessable",
    "payload_too_large",
    "broker_unavailable",
    "too_many_connections",
    "token_expired",
];

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A gateway on the in-process bus, with history on `news:*` and an API key. Call inside the runtime.
fn gateway() -> Gateway {
    let (broker, inbox) = MemoryBroker::new();
    let broker: Arc<dyn Broker> = Arc::new(broker);
    let config = GatewayConfig {
        api_keys: vec![API_KEY.to_owned()],
        channels: ChannelPolicy {
            history: HistoryRules::parse(["news:*=100/1h"]).unwrap(),
            public: vec!["news:*".to_owned()],
        },
        max_publish_bytes: 16 * 1024,
        ..GatewayConfig::default()
    };
    Gateway::new(config, broker, inbox)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Sends `request` to `router`; returns the status and the body as JSON (`Null` if it is not JSON).
async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A 4xx in the gateway's one error shape, `{"error": <documented code>, "message": <text>}`.
fn assert_clean_refusal(status: StatusCode, body: &Value, sent: &str) {
    assert!(
        status.is_client_error(),
        "{status} for {sent:?}: {body} (only 2xx or 4xx are allowed)"
    );
    let code = body["error"].as_str().unwrap_or_default();
    assert!(
        ERROR_CODES.contains(&code),
        "{status} for {sent:?} without a documented error code: {body}"
    );
    assert!(body["message"].is_string(), "{body}");
}

fn post(path: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(path)
        .header("authorization", format!("Bearer {API_KEY}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

/// Arbitrary JSON, biased towards the publish API's own field names and channel-like strings.
fn json_value() -> impl Strategy<Value = Value> + Clone {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
        "(news|user|orders):[a-z0-9 %/.]{0,12}".prop_map(Value::from),
        "[a-z]{0,200}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("channel".to_owned()),
                    Just("data".to_owned()),
                    Just("idempotency_key".to_owned()),
                    Just("messages".to_owned()),
                    "\\PC{0,6}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A publish body: well-formed, nearly well-formed, or anything.
fn publish_body() -> impl Strategy<Value = Value> + Clone {
    prop_oneof![
        (
            prop_oneof!["news:[a-z]{1,8}", "\\PC{0,20}", "[a-z:]{120,140}"],
            json_value(),
            prop::option::of(prop_oneof!["[a-z0-9]{1,10}", "", "[a-z]{120,140}"]),
        )
            .prop_map(|(channel, data, key)| {
                let mut body = json!({"channel": channel, "data": data});
                if let Some(key) = key {
                    body["idempotency_key"] = json!(key);
                }
                body
            }),
        json_value(),
    ]
}

/// Bytes that are JSON, nearly JSON, or not JSON at all.
fn body_bytes(value: impl Strategy<Value = Value> + Clone) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => value.clone().prop_map(|v| v.to_string().into_bytes()),
        1 => value.clone().prop_map(|v| serde_json::to_vec_pretty(&v).unwrap()),
        1 => (value, any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let text = v.to_string().into_bytes();
            let at = cut.index(text.len() + 1);
            text[..at].to_vec()
        }),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

#[test]
fn any_publish_body_is_published_or_refused_with_a_4xx_error_shape() {
    let rt = runtime();
    let router = rt.block_on(async { gateway().router() });
    runner(512)
        .run(&body_bytes(publish_body()), |body| {
            let sent = String::from_utf8_lossy(&body).into_owned();
            let (status, answer) = rt.block_on(send(&router, post("/api/publish", body)));
            if status.is_success() {
                prop_assert_eq!(status, StatusCode::OK);
                prop_assert!(answer["channel"].is_string(), "{}", answer);
                prop_assert!(answer["duplicate"].is_boolean(), "{}", answer);
            } else {
                assert_clean_refusal(status, &answer, &sent);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn any_batch_body_is_answered_entry_by_entry_or_refused_with_a_4xx_error_shape() {
    let rt = runtime();
    let router = rt.block_on(async { gateway().router() });
    let batch = prop_oneof![
        prop::collection::vec(publish_body(), 0..12)
            .prop_map(|messages| json!({"messages": messages})),
        json_value(),
    ];
    runner(512)
        .run(&body_bytes(batch), |body| {
            let sent = String::from_utf8_lossy(&body).into_owned();
            // serde also reads a struct from an array of its fields: `[[…]]` is a batch too.
            let messages = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
                v.get("messages")
                    .or_else(|| v.get(0))
                    .and_then(Value::as_array)
                    .map(Vec::len)
            });
            let (status, answer) = rt.block_on(send(&router, post("/api/publish/batch", body)));
            if status.is_success() {
                // One entry per message, each a result or an error in the one shape.
                let results = answer["results"].as_array().unwrap();
                prop_assert_eq!(Some(results.len()), messages);
                for entry in results {
                    if let Some(code) = entry.get("error") {
                        prop_assert!(
                            ERROR_CODES.contains(&code.as_str().unwrap_or_default()),
                            "{}",
                            entry
                        );
                        prop_assert!(entry["message"].is_string());
                    } else {
                        prop_assert!(entry["channel"].is_string(), "{}", entry);
                    }
                }
            } else {
                assert_clean_refusal(status, &answer, &sent);
            }
            Ok(())
        })
        .unwrap();
}

/// Header-safe text built from the pieces of an SSE id, and from pieces that break it.
fn last_event_id() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just(",".to_owned()),
            Just(".".to_owned()),
            Just("-".to_owned()),
            "[0-9]{1,22}",
            "[A-Za-z0-9]{0,40}",
            "[ -~]{0,6}",
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

/// Reads SSE events from `body` until `n` `subscribed` events have arrived; returns their data.
async fn subscribed_events(body: Body, n: usize) -> Vec<Value> {
    let mut body = body.into_data_stream();
    let mut text = String::new();
    let mut found = Vec::new();
    while found.len() < n {
        use futures_util::StreamExt;
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("no SSE event within 10 s")
            .expect("the stream ended")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            if event.contains("event: subscribed\n") {
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                found.push(serde_json::from_str(&data.join("\n")).unwrap());
            }
        }
    }
    found
}

#[test]
fn any_last_event_id_resumes_or_reports_recovery_incomplete() {
    let rt = runtime();
    let gateway = rt.block_on(async { gateway() });
    let router = gateway.router();
    runner(256)
        .run(&(last_event_id(), any::<bool>()), |(id, as_header)| {
            let encoded: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
            let request = if as_header {
                Request::get("/sse?channel=news:a&channel=news:b")
                    .header("last-event-id", id.as_str())
                    .body(Body::empty())
                    .unwrap()
            } else {
                Request::get(format!(
                    "/sse?channel=news:a&channel=news:b&since={encoded}"
                ))
                .body(Body::empty())
                .unwrap()
            };
            let resume = decode_sse_id(&id, 2);
            let subscribed = rt.block_on(async {
                let response = router.clone().oneshot(request).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK, "for id {id:?}");
                subscribed_events(response.into_body(), 2).await
            });
            prop_assert_eq!(subscribed.len(), 2);
            for (i, frame) in subscribed.iter().enumerate() {
                match &resume {
                    // A channel resumed from a position is told whether recovery is complete.
                    Some(positions) if positions[i].is_some() => {
                        prop_assert!(frame["recovered"].is_boolean(), "id {:?}: {}", id, frame);
                    }
                    // A channel the id marks `-` asked for no recovery.
                    Some(_) => prop_assert!(frame["recovered"].is_null(), "id {:?}: {}", id, frame),
                    // An id that cannot be read is never guessed at.
                    None => prop_assert_eq!(
                        &frame["recovered"],
                        &json!(false),
                        "id {:?}: {}",
                        id,
                        frame
                    ),
                }
            }
            Ok(())
        })
        .unwrap();
    gateway.shutdown_token().cancel();
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A NumericDate-like claim value: past, future, huge, negative, fractional, or not a number.
fn time_claim() -> impl Strategy<Value = Value> {
    let now = now();
    prop_oneof![
        (0..120u64).prop_map(move |d| json!(now + 60 + d)),
        (0..120u64).prop_map(move |d| json!(now - 60 - d)),
        any::<u64>().prop_map(Value::from),
        ((1u64 << 62)..=u64::MAX).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        (0..1000u32).prop_map(move |ms| json!(now as f64 + 60.0 + f64::from(ms) / 1000.0)),
        json_value(),
    ]
}

/// An `exp` of 2^63 seconds or more: past what `SystemTime` can hold.
fn is_huge_exp(value: Option<&Value>) -> bool {
    value
        .and_then(Value::as_u64)
        .is_some_and(|exp| exp >= 1 << 63)
}

#[test]
fn any_signed_claim_values_are_accepted_or_refused_without_a_panic() {
    signed_claims_are_accepted_or_refused_cleanly(false);
}

#[test]
fn any_signed_claim_values_even_a_huge_exp_are_accepted_or_refused_without_a_panic() {
    signed_claims_are_accepted_or_refused_cleanly(true);
}

/// Signs arbitrary claim values with the gateway's HS256 secret and authenticates them.
fn signed_claims_are_accepted_or_refused_cleanly(huge_exp: bool) {
    let auth = Authenticator::hs256(SECRET).unwrap();
    let key = EncodingKey::from_secret(SECRET);
    let claims = (
        prop::option::of(prop_oneof![
            "[a-z0-9]{0,12}".prop_map(Value::from),
            json_value()
        ]),
        prop::option::of(time_claim()),
        prop::option::of(time_claim()),
        prop::option::of(prop_oneof![
            prop::collection::vec("(news|user):[a-z*]{0,6}", 0..4).prop_map(|v| json!(v)),
            json_value()
        ]),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
    );
    runner(1000)
        .run(&claims, |(sub, exp, nbf, channels, aud, iss)| {
            if !huge_exp && is_huge_exp(exp.as_ref()) {
                return Ok(());
            }
            let mut object = serde_json::Map::new();
            for (name, value) in [
                ("sub", sub),
                ("exp", exp),
                ("nbf", nbf),
                ("channels", channels),
                ("aud", aud),
                ("iss", iss),
            ] {
                if let Some(value) = value {
                    object.insert(name.to_owned(), value);
                }
            }
            let claims = Value::Object(object);
            let token = encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
            match auth.authenticate(Some(&token)) {
                Ok(identity) => {
                    // Accepted only with a user, and only while not expired.
                    prop_assert_eq!(identity.user.as_deref(), claims["sub"].as_str());
                    prop_assert!(!identity.user.clone().unwrap_or_default().is_empty());
                    if let Some(left) = identity.expires_in() {
                        prop_assert!(
                            left > Duration::ZERO,
                            "accepted an expired token: {}",
                            claims
                        );
                    }
                }
                Err(AuthError::Expired | AuthError::Invalid(_)) => {}
            }
            Ok(())
        })
        .unwrap();
}

/// The path of a URL, percent-decoded, split into segments.
fn decoded_segments(path: &str) -> Vec<String> {
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned();
    decoded.split(['/', '\\']).map(str::to_owned).collect()
}

fn has_dot_dot(path: &str) -> bool {
    decoded_segments(path).iter().any(|s| s == "..")
}

/// A path under `/api/content/` from pieces that spell traversals in every way a URL can.
fn proxy_path() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just(".."),
            Just("."),
            Just("%2e%2e"),
            Just("%2E%2e"),
            Just(".%2e"),
            Just("%2e."),
            Just("..%2f"),
            Just("%2f"),
            Just("%5c"),
            Just("%00"),
            Just("%zz"),
            Just("posts"),
            Just("internal"),
            Just("~x"),
            Just(""),
        ],
        0..8,
    )
    .prop_map(|parts| format!("/api/content/{}", parts.join("/")))
}

#[test]
fn no_proxy_path_answers_5xx_and_no_traversal_reaches_the_upstream() {
    let rt = runtime();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let upstream = {
        let seen = seen.clone();
        Router::new().fallback(move |request: Request<Body>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(request.uri().path().to_owned());
                "upstream"
            }
        })
    };
    let (addr, _server) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, upstream).await });
        (addr, server)
    });
    let router = herald_gateway::edge::content_proxy(&format!("http://{addr}/prefix")).unwrap();
    let refused = Mutex::new(HashSet::new());
    runner(512)
        .run(&proxy_path(), |path| {
            let Ok(request) = Request::get(path.as_str()).body(Body::empty()) else {
                return Ok(());
            };
            let before = seen.lock().unwrap().len();
            let (status, body) = rt.block_on(send(&router, request));
            prop_assert!(
                !status.is_server_error(),
                "{} for {:?}: {}",
                status,
                path,
                body
            );
            let reached: Vec<String> = seen.lock().unwrap()[before..].to_vec();
            if has_dot_dot(&path) {
                prop_assert!(
                    reached.is_empty(),
                    "{:?} reached the upstream as {:?}",
                    path,
                    reached
                );
                prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{}", body);
                refused.lock().unwrap().insert(path.clone());
            }
            for upstream_path in reached {
                prop_assert!(
                    upstream_path.starts_with("/prefix/api/content"),
                    "{:?} escaped as {:?}",
                    path,
                    upstream_path
                );
                prop_assert!(
                    !has_dot_dot(&upstream_path),
                    "{:?} reached as {:?}",
                    path,
                    upstream_path
                );
            }
            Ok(())
        })
        .unwrap();
    assert!(
        !refused.lock().unwrap().is_empty(),
        "the strategy never produced a traversal"
    );
}

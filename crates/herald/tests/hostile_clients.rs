//! Hostile and careless clients against real gateway processes on a real Redis:
//! recovery amplification, the tutorial route's policy and rate limit, and the
//! `Origin` check (issue #7, items 1, 5, 6 and 7).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use futures_util::SinkExt;
use herald_testkit::{
    GatewayProcess, RedisServer, Seen, SseStream, Ws, assert_quiet, close_code, connect,
    connect_with_headers, expect_frame, next_seen, post_json, send_json,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "a-test-secret-of-32-bytes-length";
const API_KEY: &str = "test-key";

fn herald() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_herald"))
}

fn token(claims: Value) -> String {
    herald_testkit::hs256_token(SECRET, &claims)
}

/// A gateway with JWT auth, public `news:*` with history, the API key, plus `extra`.
async fn gateway(redis: &RedisServer, name: &str, extra: &[&str]) -> GatewayProcess {
    let mut flags = vec![
        "--jwt-secret",
        SECRET,
        "--public-channel",
        "news:*",
        "--history",
        "news:*=1000/1h",
        "--api-key",
        API_KEY,
    ];
    flags.extend_from_slice(extra);
    started(GatewayProcess::start(herald(), &redis.url(), name, &flags).await).await
}

async fn started(gateway: GatewayProcess) -> GatewayProcess {
    gateway.wait_readyz(200).await;
    gateway
}

/// Publishes `data` on `channel` through the API; returns the position it got.
async fn publish(gateway: &GatewayProcess, channel: &str, data: Value) -> Value {
    let (status, body) = post_json(
        gateway.addr,
        "/api/publish",
        Some(API_KEY),
        &json!({"channel": channel, "data": data}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    json!({"offset": body["offset"], "epoch": body["epoch"]})
}

/// A `/ws` client past its `connected` frame.
async fn herald_client(gateway: &GatewayProcess) -> Ws {
    let mut ws = connect(&format!("ws://{}/ws", gateway.addr)).await;
    expect_frame(&mut ws, "connected").await;
    ws
}

/// Reads `count` message frames of `channel` and returns their offsets.
async fn message_offsets(ws: &mut Ws, channel: &str, count: usize) -> Vec<u64> {
    let mut offsets = Vec::with_capacity(count);
    for _ in 0..count {
        let frame = expect_frame(ws, "message").await;
        assert_eq!(frame["channel"], channel);
        offsets.push(frame["offset"].as_u64().unwrap());
    }
    offsets
}

/// The value of an unlabelled sample in the gateway's `/metrics`.
async fn metric(gateway: &GatewayProcess, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", gateway.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} is not in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

// ------------------------------------------------------------ item 1: recovery amplification

#[tokio::test]
async fn a_subscribe_repeating_a_history_channel_recovers_it_once() {
    let redis = RedisServer::start().await;
    let gateway = gateway(&redis, "amp", &[]).await;
    let since = publish(&gateway, "news:amp", json!("seed")).await;
    let first = since["offset"].as_u64().unwrap() + 1;
    for i in 0..100 {
        publish(&gateway, "news:amp", json!({ "n": i })).await;
    }
    let mut ws = herald_client(&gateway).await;
    // The attack: one frame, 200 copies of the same channel with `since`.
    let entries: Vec<Value> = (0..200)
        .map(|_| json!({"channel": "news:amp", "since": since}))
        .collect();
    send_json(
        &mut ws,
        json!({"type": "subscribe", "id": 7, "channels": entries}),
    )
    .await;
    let subscribed = expect_frame(&mut ws, "subscribed").await;
    assert_eq!(subscribed["id"], 7);
    assert_eq!(subscribed["recovered"], true);
    assert_eq!(subscribed["position"]["offset"], first + 99);
    let offsets = message_offsets(&mut ws, "news:amp", 100).await;
    assert_eq!(offsets, (first..first + 100).collect::<Vec<_>>());
    // Merged: no second `subscribed`, no second copy of any message.
    assert_quiet(&mut ws, Duration::from_secs(1)).await;
    // And the channel is live once.
    let live = publish(&gateway, "news:amp", json!("live")).await;
    let frame = expect_frame(&mut ws, "message").await;
    assert_eq!(frame["offset"], live["offset"]);
    assert_quiet(&mut ws, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_subscribe_naming_more_channels_than_a_client_may_hold_is_refused_whole() {
    let redis = RedisServer::start().await;
    let gateway = gateway(&redis, "cap", &["--max-subscriptions", "4"]).await;
    let mut ws = herald_client(&gateway).await;
    let five: Vec<Value> = (0..5)
        .map(|i| json!({"channel": format!("news:cap{i}")}))
        .collect();
    send_json(
        &mut ws,
        json!({"type": "subscribe", "id": 1, "channels": five}),
    )
    .await;
    let error = expect_frame(&mut ws, "error").await;
    assert_eq!(error["id"], 1);
    assert_eq!(error["code"], "bad_request");
    assert!(error.get("channel").is_none(), "{error}");
    // Nothing was subscribed: the refusal is the whole answer.
    assert_quiet(&mut ws, Duration::from_millis(500)).await;
    // Repeats do not count against the cap: four channels, each named twice, pass.
    let four: Vec<Value> = (0..8)
        .map(|i| json!({"channel": format!("news:cap{}", i % 4)}))
        .collect();
    send_json(
        &mut ws,
        json!({"type": "subscribe", "id": 2, "channels": four}),
    )
    .await;
    for i in 0..4 {
        let subscribed = expect_frame(&mut ws, "subscribed").await;
        assert_eq!(subscribed["channel"], format!("news:cap{i}"));
    }
    assert_quiet(&mut ws, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_reconnect_storm_queues_its_recoveries_and_every_client_gets_every_message() {
    const CLIENTS: usize = 30;
    const MESSAGES: u64 = 60;
    let redis = RedisServer::start().await;
    let gateway = gateway(&redis, "storm", &["--max-concurrent-recoveries", "2"]).await;
    let seed = publish(&gateway, "news:storm", json!("seed")).await;
    let (base, epoch) = (seed["offset"].as_u64().unwrap(), seed["epoch"].clone());
    for i in 0..MESSAGES {
        publish(&gateway, "news:storm", json!({ "n": i })).await;
    }
    let top = base + MESSAGES;
    // Clients were at different places: several distinct ranges, several clients per range.
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut ws = herald_client(&gateway).await;
        let since = base + (i as u64 % 6) * 5;
        let frame = json!({"type": "subscribe", "channels": [
            {"channel": "news:storm", "since": {"offset": since, "epoch": epoch}}
        ]});
        clients.push(tokio::spawn(async move {
            send_json(&mut ws, frame).await;
            let subscribed = expect_frame(&mut ws, "subscribed").await;
            assert_eq!(subscribed["recovered"], true, "{subscribed}");
            let missed = usize::try_from(top - since).unwrap();
            let offsets = message_offsets(&mut ws, "news:storm", missed).await;
            assert_eq!(offsets, (since + 1..=top).collect::<Vec<_>>());
            ws
        }));
    }
    let mut sockets = Vec::new();
    for client in clients {
        sockets.push(client.await.unwrap());
    }
    for ws in &mut sockets {
        assert_quiet(ws, Duration::from_millis(200)).await;
    }
    let peak = metric(&gateway, "herald_recovery_reads_peak").await;
    let reads = metric(&gateway, "herald_recovery_reads_total").await;
    let shared = metric(&gateway, "herald_recoveries_shared_total").await;
    assert!(
        (1.0..=2.0).contains(&peak),
        "at most 2 reads at once, saw {peak}"
    );
    assert_eq!(
        reads + shared,
        CLIENTS as f64,
        "one read or one share per client"
    );
}

// ------------------------------------------------------------ items 5 and 6: the tutorial route

/// Connects to `/ws/notifications` with `headers`, failing if the handshake is refused.
async fn tutorial(gateway: &GatewayProcess, query: &str, headers: &[(&str, &str)]) -> Ws {
    let url = format!("{}{query}", gateway.tutorial_url());
    connect_with_headers(&url, headers)
        .await
        .unwrap_or_else(|(status, body)| panic!("{url}: {status} {body}"))
}

/// Publishes `text` on `events` and waits until `ws` receives exactly it.
async fn receives(gateway: &GatewayProcess, ws: &mut Ws, text: &str) {
    publish(gateway, "events", json!(text)).await;
    match next_seen(ws, Duration::from_secs(10)).await {
        Ok(Seen::Text(got)) => assert_eq!(got, text),
        other => panic!("expected {text:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn with_a_jwt_key_the_tutorial_route_takes_a_grant_for_events() {
    let redis = RedisServer::start().await;
    let gateway = gateway(&redis, "tut-auth", &[]).await;
    // The hole: anonymous, `events` not public.
    let mut anonymous = tutorial(&gateway, "", &[]).await;
    assert_eq!(
        close_code(&mut anonymous, Duration::from_secs(5)).await,
        Some(4004)
    );
    // A token that does not grant `events`, a bad one and an expired one: refused as /ws refuses them.
    let ungranted =
        token(json!({"sub": "1", "exp": herald_testkit::unix_now() + 600, "channels": ["news:*"]}));
    let expired =
        token(json!({"sub": "1", "exp": herald_testkit::unix_now() - 60, "channels": ["events"]}));
    for (query, code) in [
        (format!("?token={ungranted}"), 4004),
        ("?token=not.a.token".to_owned(), 4004),
        (format!("?token={expired}"), 4005),
    ] {
        let mut ws = tutorial(&gateway, &query, &[]).await;
        assert_eq!(
            close_code(&mut ws, Duration::from_secs(5)).await,
            Some(code),
            "{query}"
        );
    }
    // A grant, in the query or in the header, opens it.
    let granted =
        token(json!({"sub": "1", "exp": herald_testkit::unix_now() + 600, "channels": ["events"]}));
    let mut by_query = tutorial(&gateway, &format!("?token={granted}"), &[]).await;
    let bearer = format!("Bearer {granted}");
    let mut by_header = tutorial(&gateway, "", &[("authorization", &bearer)]).await;
    redis.wait_subscribers("events", 1).await;
    publish(&gateway, "events", json!("for the granted")).await;
    for ws in [&mut by_query, &mut by_header] {
        match next_seen(ws, Duration::from_secs(10)).await {
            Ok(Seen::Text(got)) => assert_eq!(got, "for the granted"),
            other => panic!("expected the message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn with_a_jwt_key_and_public_events_the_tutorial_route_is_open() {
    let redis = RedisServer::start().await;
    let gateway = gateway(&redis, "tut-public", &["--public-channel", "events"]).await;
    let mut ws = tutorial(&gateway, "", &[]).await;
    redis.wait_subscribers("events", 1).await;
    receives(&gateway, &mut ws, "for everyone").await;
}

/// A gateway configured like the tutorial: no JWT key, only an API key to publish with.
async fn open_gateway(redis: &RedisServer, name: &str) -> GatewayProcess {
    let flags = ["--api-key", API_KEY];
    started(GatewayProcess::start(herald(), &redis.url(), name, &flags).await).await
}

#[tokio::test]
async fn without_auth_the_tutorial_route_is_open_as_before() {
    let redis = RedisServer::start().await;
    let gateway = open_gateway(&redis, "tut-open").await;
    let mut ws = tutorial(&gateway, "", &[]).await;
    redis.wait_subscribers("events", 1).await;
    receives(&gateway, &mut ws, "Content published: x").await;
}

#[tokio::test]
async fn a_burst_of_text_frames_on_the_tutorial_route_closes_it_with_4006() {
    let redis = RedisServer::start().await;
    let gateway = open_gateway(&redis, "tut-burst").await;
    let mut flooder = tutorial(&gateway, "", &[]).await;
    let mut bystander = tutorial(&gateway, "", &[]).await;
    redis.wait_subscribers("events", 1).await;
    for _ in 0..2_000 {
        if flooder.feed(Message::text("keep-alive")).await.is_err() {
            break;
        }
    }
    let _ = flooder.flush().await;
    assert_eq!(
        close_code(&mut flooder, Duration::from_secs(10)).await,
        Some(4006)
    );
    receives(&gateway, &mut bystander, "still here").await;
}

#[tokio::test]
async fn an_oversized_frame_on_the_tutorial_route_closes_it_with_1009() {
    let redis = RedisServer::start().await;
    let flags = ["--api-key", API_KEY, "--max-client-message-bytes", "1024"];
    let gateway =
        started(GatewayProcess::start(herald(), &redis.url(), "tut-size", &flags).await).await;
    let mut ws = tutorial(&gateway, "", &[]).await;
    ws.send(Message::text("x".repeat(4096))).await.unwrap();
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(10)).await,
        Some(1009)
    );
}

// ------------------------------------------------------------ item 7: the Origin check

/// The status a WebSocket handshake on `path` with `headers` gets (101 when upgraded), and the body.
async fn ws_status(gateway: &GatewayProcess, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    match connect_with_headers(&format!("ws://{}{path}", gateway.addr), headers).await {
        Ok(_) => (101, Value::Null),
        Err(refused) => refused,
    }
}

/// The status `/sse` answers with `headers`, and the body.
async fn sse_status(gateway: &GatewayProcess, headers: &[(&str, &str)]) -> (u16, Value) {
    let url = format!("http://{}/sse?channel=news:o", gateway.addr);
    match SseStream::open(&url, headers).await {
        Ok(_) => (200, Value::Null),
        Err(refused) => refused,
    }
}

#[tokio::test]
async fn only_the_own_host_listed_origins_and_non_browsers_may_connect() {
    let redis = RedisServer::start().await;
    let gateway = gateway(
        &redis,
        "origin",
        &["--allowed-origin", "https://app.example.com"],
    )
    .await;
    let own = format!("http://{}", gateway.addr);
    for (origin, upgraded, streamed) in [
        (None, 101, 200),
        (Some(own.as_str()), 101, 200),
        (Some("https://app.example.com"), 101, 200),
        (Some("https://evil.example"), 403, 403),
        (Some("http://app.example.com"), 403, 403),
        (Some("null"), 403, 403),
    ] {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
        for path in ["/ws", "/ws/notifications"] {
            let (status, body) = ws_status(&gateway, path, &headers).await;
            assert_eq!(status, upgraded, "{path} with {origin:?}: {body}");
            if status == 403 {
                assert_eq!(body["error"], "origin_not_allowed", "{body}");
            }
        }
        let (status, body) = sse_status(&gateway, &headers).await;
        assert_eq!(status, streamed, "/sse with {origin:?}: {body}");
        if status == 403 {
            assert_eq!(body["error"], "origin_not_allowed", "{body}");
        }
    }
}

#[tokio::test]
async fn a_wildcard_allows_every_origin() {
    let redis = RedisServer::start().await;
    let gateway = gateway(&redis, "origin-any", &["--allowed-origin", "*"]).await;
    let headers = [("origin", "https://evil.example")];
    for path in ["/ws", "/ws/notifications"] {
        assert_eq!(ws_status(&gateway, path, &headers).await.0, 101, "{path}");
    }
    assert_eq!(sse_status(&gateway, &headers).await.0, 200);
}

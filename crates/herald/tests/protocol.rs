//! The Herald protocol end to end: real gateway processes on a real Redis,
//! real WebSocket and SSE clients, publishing through the HTTP API.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use herald_testkit::{
    GatewayProcess, RedisServer, SseStream, Ws, assert_quiet, close_code, connect, expect_frame,
    next_json, post_json, send_json,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

const SECRET: &str = "a-test-secret-of-32-bytes-length";
const API_KEY: &str = "test-key";

fn herald() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_herald"))
}

fn token(claims: Value) -> String {
    herald_testkit::hs256_token(SECRET, &claims)
}

/// The flags every gateway of these tests runs with, plus `extra`.
fn flags<'a>(extra: &[&'a str]) -> Vec<&'a str> {
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
    flags
}

async fn gateway(redis: &RedisServer, name: &str, extra: &[&str]) -> GatewayProcess {
    let gateway = GatewayProcess::start(herald(), &redis.url(), name, &flags(extra)).await;
    gateway.wait_readyz(200).await;
    gateway
}

/// Connects to `/ws` (with `?token=` when given) and reads the `connected` frame.
async fn client(gateway: &GatewayProcess, token: Option<&str>) -> (Ws, Value) {
    let url = match token {
        Some(token) => format!("ws://{}/ws?token={token}", gateway.addr),
        None => format!("ws://{}/ws", gateway.addr),
    };
    let mut ws = connect(&url).await;
    let connected = expect_frame(&mut ws, "connected").await;
    (ws, connected)
}

async fn subscribe(ws: &mut Ws, channel: &str, since: Option<Value>) -> Value {
    let mut entry = json!({"channel": channel});
    if let Some(since) = since {
        entry["since"] = since;
    }
    send_json(
        ws,
        json!({"type": "subscribe", "id": 1, "channels": [entry]}),
    )
    .await;
    next_json(ws).await
}

async fn publish(gateway: &GatewayProcess, channel: &str, data: Value) -> Value {
    let (status, body) = post_json(
        gateway.addr,
        "/api/publish",
        Some(API_KEY),
        &json!({"channel": channel, "data": data}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn subscribe_receive_and_unsubscribe() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis, "a", &[]).await;
    let (mut ws, connected) = client(&a, None).await;
    assert_eq!(connected["protocol"], 1);
    assert_eq!(connected["instance_id"], "a");
    assert_eq!(connected["user"], Value::Null);

    let subscribed = subscribe(&mut ws, "news:sport", None).await;
    assert_eq!(subscribed["type"], "subscribed");
    assert_eq!(subscribed["id"], 1);
    assert_eq!(subscribed["position"]["offset"], 0);
    assert!(subscribed.get("recovered").is_none());

    let published = publish(&a, "news:sport", json!({"title": "Hello"})).await;
    assert_eq!(published["offset"], 1);
    let message = expect_frame(&mut ws, "message").await;
    assert_eq!(message["channel"], "news:sport");
    assert_eq!(message["data"], json!({"title": "Hello"}));
    assert_eq!(message["offset"], 1);
    assert_eq!(message["epoch"], published["epoch"]);
    assert!(message["time"].as_u64().unwrap() > 0);

    // A raw PUBLISH reaches Herald clients too, without a position.
    redis.publish("news:sport", "plain text").await;
    let raw = expect_frame(&mut ws, "message").await;
    assert_eq!(raw["data"], "plain text");
    assert!(raw.get("offset").is_none());

    send_json(&mut ws, json!({"type": "ping", "id": 9})).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "pong", "id": 9}));

    send_json(
        &mut ws,
        json!({"type": "unsubscribe", "id": 2, "channels": ["news:sport"]}),
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "unsubscribed", "id": 2, "channel": "news:sport"})
    );
    publish(&a, "news:sport", json!("after")).await;
    assert_quiet(&mut ws, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn every_error_code_of_the_protocol() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis, "a", &["--max-subscriptions", "2"]).await;
    let (mut ws, _) = client(&a, None).await;

    let error = subscribe(&mut ws, "bad channel!", None).await;
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("invalid_channel"))
    );

    let error = subscribe(&mut ws, "orders", None).await;
    assert_eq!(error["code"], "forbidden");
    assert_eq!(error["channel"], "orders");

    assert_eq!(
        subscribe(&mut ws, "news:a", None).await["type"],
        "subscribed"
    );
    assert_eq!(
        subscribe(&mut ws, "news:b", None).await["type"],
        "subscribed"
    );
    assert_eq!(
        subscribe(&mut ws, "news:c", None).await["code"],
        "too_many_subscriptions"
    );
    // Subscribing again to a channel it has is not a new subscription.
    assert_eq!(
        subscribe(&mut ws, "news:a", None).await["type"],
        "subscribed"
    );

    send_json(
        &mut ws,
        json!({"type": "unsubscribe", "channels": ["news:zzz"]}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["code"], "not_subscribed");

    send_json(&mut ws, json!({"type": "subscribe", "channels": []})).await;
    assert_eq!(next_json(&mut ws).await["code"], "bad_request");

    // Not a frame at all: a protocol violation.
    let mut bystander = client(&a, None).await.0;
    assert_eq!(
        subscribe(&mut bystander, "news:a", None).await["type"],
        "subscribed"
    );
    send_json(&mut ws, json!({"type": "dance"})).await;
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        Some(4002)
    );
    publish(&a, "news:a", json!(1)).await;
    assert_eq!(expect_frame(&mut bystander, "message").await["data"], 1);
}

#[tokio::test]
async fn a_client_sending_too_fast_is_closed_with_4006() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis, "a", &["--client-frame-rate", "2"]).await;
    let (mut ws, _) = client(&a, None).await;
    for _ in 0..20 {
        send_json(&mut ws, json!({"type": "ping"})).await;
    }
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        Some(4006)
    );
}

#[tokio::test]
async fn tokens_decide_who_reads_what() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis, "a", &[]).await;

    let valid = token(
        json!({"sub": "42", "exp": herald_testkit::unix_now() + 600, "channels": ["orders:*"]}),
    );
    let (mut ws, connected) = client(&a, Some(&valid)).await;
    assert_eq!(connected["user"], "42");
    assert_eq!(
        subscribe(&mut ws, "user:42", None).await["type"],
        "subscribed"
    );
    let other = subscribe(&mut ws, "user:7", None).await;
    assert_eq!(other["code"], "forbidden");
    assert_eq!(
        subscribe(&mut ws, "orders:eu", None).await["type"],
        "subscribed"
    );
    assert_eq!(
        subscribe(&mut ws, "orders", None).await["code"],
        "forbidden"
    );
    publish(&a, "user:42", json!({"note": "for you"})).await;
    assert_eq!(
        expect_frame(&mut ws, "message").await["data"]["note"],
        "for you"
    );

    // The header wins over the query parameter.
    let request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/ws?token=garbage", a.addr),
    )
    .unwrap();
    let mut request = request;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {valid}").parse().unwrap());
    let (mut header_ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        expect_frame(&mut header_ws, "connected").await["user"],
        "42"
    );

    let expired = token(json!({"sub": "42", "exp": herald_testkit::unix_now() - 10}));
    let mut ws = connect(&format!("ws://{}/ws?token={expired}", a.addr)).await;
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        Some(4005)
    );

    let forged = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "42"}),
        &EncodingKey::from_secret(b"another-secret-of-32-bytes-long!"),
    )
    .unwrap();
    let mut ws = connect(&format!("ws://{}/ws?token={forged}", a.addr)).await;
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        Some(4004)
    );

    let mut ws = connect(&format!("ws://{}/ws?token=not.a.jwt", a.addr)).await;
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        Some(4004)
    );

    // Anonymous: public channels only, never personal ones.
    let (mut anonymous, _) = client(&a, None).await;
    assert_eq!(
        subscribe(&mut anonymous, "news:x", None).await["type"],
        "subscribed"
    );
    assert_eq!(
        subscribe(&mut anonymous, "user:42", None).await["code"],
        "forbidden"
    );
}

#[tokio::test]
async fn a_token_that_expires_during_the_connection_closes_it_with_4005() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis, "a", &[]).await;
    let short = token(json!({"sub": "42", "exp": herald_testkit::unix_now() + 2}));
    let (mut ws, _) = client(&a, Some(&short)).await;
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(10)).await,
        Some(4005)
    );
}

#[tokio::test]
async fn a_client_that_reconnects_to_another_instance_recovers_exactly_what_it_missed() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis, "a", &[]).await;
    let b = gateway(&redis, "b", &[]).await;

    let (mut ws, _) = client(&a, None).await;
    subscribe(&mut ws, "news:live", None).await;
    publish(&a, "news:live", json!({"n": 0})).await;
    let first = expect_frame(&mut ws, "message").await;
    let since = json!({"offset": first["offset"], "epoch": first["epoch"]});
    drop(ws);

    for n in 1..=100 {
        publish(&b, "news:live", json!({"n": n})).await;
    }
    let (mut ws, _) = client(&b, None).await;
    let subscribed = subscribe(&mut ws, "news:live", Some(since)).await;
    assert_eq!(subscribed["type"], "subscribed");
    assert_eq!(subscribed["recovered"], true);
    assert_eq!(subscribed["position"]["offset"], 101);
    for n in 1..=100 {
        let message = expect_frame(&mut ws, "message").await;
        assert_eq!(message["data"]["n"], n);
        assert_eq!(message["offset"], n + 1);
    }
    publish(&a, "news:live", json!({"n": "live"})).await;
    assert_eq!(expect_frame(&mut ws, "message").await["data"]["n"], "live");
    assert_quiet(&mut ws, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn recovery_says_incomplete_when_it_cannot_be_done() {
    let mut redis = RedisServer::start().await;
    let a = gateway(
        &redis,
        "a",
        &[
            "--history",
            "brief:*=5",
            "--public-channel",
            "brief:*",
            "--broker-reconnect-max",
            "300ms",
        ],
    )
    .await;

    // Older than what history keeps.
    let (mut ws, _) = client(&a, None).await;
    for n in 1..=10 {
        publish(&a, "brief:short", json!(n)).await;
    }
    let epoch = subscribe(&mut ws, "brief:short", None).await["position"]["epoch"].clone();
    let mut late = client(&a, None).await.0;
    let subscribed = subscribe(
        &mut late,
        "brief:short",
        Some(json!({"offset": 2, "epoch": epoch})),
    )
    .await;
    assert_eq!(subscribed["recovered"], false);
    // Within what is kept.
    let mut recent = client(&a, None).await.0;
    let subscribed = subscribe(
        &mut recent,
        "brief:short",
        Some(json!({"offset": 7, "epoch": epoch})),
    )
    .await;
    assert_eq!(subscribed["recovered"], true);
    for n in 8..=10 {
        assert_eq!(expect_frame(&mut recent, "message").await["data"], n);
    }

    // Redis restarted empty: the old epoch is gone, and recovery says so.
    let (mut ws, _) = client(&a, None).await;
    subscribe(&mut ws, "news:gone", None).await;
    publish(&a, "news:gone", json!(1)).await;
    let message = expect_frame(&mut ws, "message").await;
    let since = json!({"offset": message["offset"], "epoch": message["epoch"]});
    redis.restart().await;
    a.wait_readyz(200).await;
    let (mut ws, _) = client(&a, None).await;
    let subscribed = subscribe(&mut ws, "news:gone", Some(since)).await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_ne!(subscribed["position"]["epoch"], message["epoch"]);

    // A channel without history cannot recover either.
    let (mut ws, _) = client(&a, Some(&token(json!({"sub": "1", "channels": ["plain"]})))).await;
    let subscribed = subscribe(&mut ws, "plain", Some(json!({"offset": 1, "epoch": "x"}))).await;
    assert_eq!(subscribed["recovered"], false);
    assert_eq!(subscribed["position"], Value::Null);
}

#[tokio::test]
async fn sse_resumes_from_last_event_id_on_another_instance() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis, "a", &[]).await;
    let b = gateway(&redis, "b", &[]).await;

    let mut stream = SseStream::open(
        &format!("http://{}/sse?channel=news:sse&channel=news:other", a.addr),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(stream.next_event().await.event, "connected");
    assert_eq!(stream.next_event().await.event, "subscribed");
    assert_eq!(stream.next_event().await.event, "subscribed");
    publish(&a, "news:sse", json!({"n": 0})).await;
    let first = stream.next_event().await;
    assert_eq!(first.event, "message");
    let last_id = first.id.clone().unwrap();
    assert!(
        last_id.ends_with(".1,-") || last_id.contains(".1,"),
        "{last_id}"
    );
    drop(stream);

    for n in 1..=100 {
        publish(&b, "news:sse", json!({"n": n})).await;
    }
    let mut stream = SseStream::open(
        &format!("http://{}/sse?channel=news:sse&channel=news:other", b.addr),
        &[("last-event-id", &last_id)],
    )
    .await
    .unwrap();
    assert_eq!(stream.next_event().await.event, "connected");
    let subscribed: Value = serde_json::from_str(&stream.next_event().await.data).unwrap();
    assert_eq!(subscribed["recovered"], true);
    for n in 1..=100 {
        let event = stream.next_event().await;
        // The second channel's `subscribed` comes only after all of the first's recovered messages.
        assert_eq!(
            event.event, "message",
            "recovered messages must not be interleaved: {event:?}"
        );
        let message: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(message["data"]["n"], n);
        assert!(event.id.unwrap().contains(&format!(".{},", n + 1)));
    }
    assert_eq!(stream.next_event().await.event, "subscribed");
    publish(&a, "news:sse", json!({"n": "live"})).await;
    let live: Value = serde_json::from_str(&stream.next_event().await.data).unwrap();
    assert_eq!(live["data"]["n"], "live");
}

#[tokio::test]
async fn sse_refuses_bad_requests_with_json_errors() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis, "a", &[]).await;
    let base = format!("http://{}/sse", a.addr);
    assert_eq!(SseStream::open(&base, &[]).await.err().unwrap().0, 400);
    let (status, body) = SseStream::open(&format!("{base}?channel=orders"), &[])
        .await
        .err()
        .unwrap();
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    assert_eq!(
        SseStream::open(&format!("{base}?channel=a%20b"), &[])
            .await
            .err()
            .unwrap()
            .1["error"],
        "invalid_channel"
    );
    assert_eq!(
        SseStream::open(&format!("{base}?channel=news:a&token=bad"), &[])
            .await
            .err()
            .unwrap()
            .0,
        401
    );
    let expired = token(json!({"sub": "1", "exp": herald_testkit::unix_now() - 10}));
    assert_eq!(
        SseStream::open(&format!("{base}?channel=news:a&token={expired}"), &[])
            .await
            .err()
            .unwrap()
            .1["error"],
        "token_expired"
    );
}

#[tokio::test]
async fn the_publish_api_checks_keys_and_publishes_a_retry_only_once() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis, "a", &[]).await;
    let body = json!({"channel": "news:pub", "data": {"x": 1}, "idempotency_key": "order-17"});

    let (status, error) = post_json(a.addr, "/api/publish", None, &body).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(
        post_json(a.addr, "/api/publish", Some("wrong"), &body)
            .await
            .0,
        401
    );
    let (status, error) = post_json(
        a.addr,
        "/api/publish",
        Some(API_KEY),
        &json!({"channel": "bad channel", "data": 1}),
    )
    .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (422, Some("invalid_channel"))
    );
    let (status, error) =
        post_json(a.addr, "/api/publish", Some(API_KEY), &json!({"data": 1})).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, error) = post_json(
        a.addr,
        "/api/publish",
        Some(API_KEY),
        &json!({"channel": "news:big", "data": "x".repeat(100_000)}),
    )
    .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (413, Some("payload_too_large"))
    );

    let (mut ws, _) = client(&a, None).await;
    subscribe(&mut ws, "news:pub", None).await;
    let (status, first) = post_json(a.addr, "/api/publish", Some(API_KEY), &body).await;
    assert_eq!(status, 200);
    assert_eq!(first["duplicate"], false);
    let (_, retry) = post_json(a.addr, "/api/publish", Some(API_KEY), &body).await;
    assert_eq!(retry["duplicate"], true);
    assert_eq!(retry["offset"], first["offset"]);
    assert_eq!(
        expect_frame(&mut ws, "message").await["data"],
        json!({"x": 1})
    );
    assert_quiet(&mut ws, Duration::from_millis(200)).await;

    let batch = json!({"messages": [{"channel": "news:pub", "data": 2}, {"channel": "bad channel", "data": 3}, {"channel": "news:pub", "data": 4}]});
    let (status, answer) = post_json(a.addr, "/api/publish/batch", Some(API_KEY), &batch).await;
    assert_eq!(status, 200);
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results[0]["offset"], 2);
    assert_eq!(results[1]["error"], "invalid_channel");
    assert_eq!(results[2]["offset"], 3);
    assert_eq!(expect_frame(&mut ws, "message").await["data"], 2);
    assert_eq!(expect_frame(&mut ws, "message").await["data"], 4);
}

#[tokio::test]
async fn the_tutorial_route_gets_api_messages_as_text() {
    let redis = RedisServer::start().await;
    // With a JWT key the tutorial route obeys the channel policy: `events` must be public.
    let a = gateway(&redis, "a", &["--public-channel", "events"]).await;
    let mut tutorial = connect(&a.tutorial_url()).await;
    redis.wait_subscribers("events", 1).await;
    publish(&a, "events", json!("Content published: Hello")).await;
    assert_eq!(
        herald_testkit::next_text(&mut tutorial).await,
        "Content published: Hello"
    );
}

#[tokio::test]
async fn a_gateway_whose_redis_connection_drops_fills_the_gap_from_history() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis, "a", &["--broker-reconnect-max", "300ms"]).await;
    let b = gateway(&redis, "b", &[]).await;
    let (mut ws, _) = client(&a, None).await;
    subscribe(&mut ws, "news:gap", None).await;
    publish(&b, "news:gap", json!(0)).await;
    assert_eq!(expect_frame(&mut ws, "message").await["data"], 0);

    // Cut every gateway's subscriber connection; publish while they reconnect.
    let mut conn = redis.connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Only A holds subscriptions, so only its subscriber connection is a Pub/Sub one.
    assert!(killed >= 1);
    for n in 1..=50 {
        publish(&b, "news:gap", json!(n)).await;
    }
    for n in 1..=50 {
        let message = expect_frame(&mut ws, "message").await;
        assert_eq!(message["data"], n, "{message}");
    }
    assert_quiet(&mut ws, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_subscribe_the_bus_cannot_confirm_gets_internal_and_the_connection_stays() {
    let redis = RedisServer::start().await;
    let a = gateway(
        &redis,
        "a",
        &[
            "--broker-ping-interval",
            "200ms",
            "--broker-timeout",
            "300ms",
        ],
    )
    .await;
    let (mut ws, _) = client(&a, None).await;
    redis.pause();
    a.wait_readyz(503).await;
    // The bus cannot confirm the subscription: after the subscribe timeout the client is told.
    let error = subscribe(&mut ws, "news:frozen", None).await;
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("internal")),
        "{error}"
    );
    redis.resume();
    a.wait_readyz(200).await;
    // Nothing was left half-subscribed: the same subscribe now succeeds and delivers.
    assert_eq!(
        subscribe(&mut ws, "news:frozen", None).await["type"],
        "subscribed"
    );
    publish(&a, "news:frozen", json!("thawed")).await;
    assert_eq!(expect_frame(&mut ws, "message").await["data"], "thawed");
}

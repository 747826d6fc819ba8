//! `/sse` against hostile payloads and a failing bus: real gateway processes on a
//! real Redis, read with a spec-following SSE client (testkit's `SseStream`).
//!
//! - Whatever line breaks a payload holds, every event is valid SSE and its data
//!   is the JSON the publisher sent (issue #7, item 10).
//! - A stream whose subscribe fails never stays open without its channel: it
//!   ends with a `retry:` hint, and the reconnect recovers everything (item 11).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use herald_testkit::{GatewayProcess, RedisServer, SseEvent, SseStream};
use serde_json::{Value, json};

const API_KEY: &str = "test-key";

fn herald() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_herald"))
}

async fn gateway(redis: &RedisServer, extra: &[&str]) -> GatewayProcess {
    let mut flags = vec![
        "--public-channel",
        "news:*",
        "--public-channel",
        "raw:*",
        "--history",
        "news:*=1000/1h",
        "--api-key",
        API_KEY,
    ];
    flags.extend_from_slice(extra);
    let gateway = GatewayProcess::start(herald(), &redis.url(), "sse", &flags).await;
    gateway.wait_readyz(200).await;
    gateway
}

/// `POST /api/publish` with `body` sent byte for byte (not re-serialised by the client).
async fn publish_raw_body(gateway: &GatewayProcess, body: &str) -> Value {
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/publish", gateway.addr))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.unwrap()
}

async fn publish(gateway: &GatewayProcess, channel: &str, data: Value) -> Value {
    publish_raw_body(
        gateway,
        &json!({"channel": channel, "data": data}).to_string(),
    )
    .await
}

/// Opens `/sse?channel=…`, reads `connected` and one `subscribed`.
async fn open(gateway: &GatewayProcess, channel: &str, headers: &[(&str, &str)]) -> SseStream {
    let mut stream = SseStream::open(
        &format!("http://{}/sse?channel={channel}", gateway.addr),
        headers,
    )
    .await
    .unwrap();
    assert_eq!(stream.next_event().await.event, "connected");
    let subscribed = stream.next_event().await;
    assert_eq!(subscribed.event, "subscribed", "{subscribed:?}");
    stream
}

/// The next event, which must be a `message`, parsed as JSON.
async fn next_message(stream: &mut SseStream) -> (SseEvent, Value) {
    let event = stream.next_event().await;
    assert_eq!(event.event, "message", "{event:?}");
    let frame = serde_json::from_str(&event.data)
        .unwrap_or_else(|e| panic!("the event's data is not JSON ({e}): {:?}", event.data));
    (event, frame)
}

#[tokio::test]
async fn pretty_printed_json_published_through_the_api_arrives_as_the_same_json() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis, &[]).await;
    let mut stream = open(&a, "news:pretty", &[]).await;

    // Line breaks between tokens (LF, CRLF, a lone CR, blank lines) and escaped
    // ones inside strings, nested two levels deep.
    let data = "{\n  \"title\": \"two\\nlines\\r\\nand a blank\\n\\nline\",\r\n\r\n  \"nested\": {\n\n    \"list\": [\n      1,\r      \"a\\nb\"\n    ]\n  }\n}";
    let body = format!("{{\n  \"channel\": \"news:pretty\",\n\n  \"data\": {data}\n}}\n");
    let published = publish_raw_body(&a, &body).await;
    assert_eq!(published["offset"], 1);
    let (event, frame) = next_message(&mut stream).await;
    let sent: Value = serde_json::from_str(data).unwrap();
    assert_eq!(frame["data"], sent);
    assert_eq!(frame["offset"], 1);
    assert!(event.id.unwrap().ends_with(".1"));

    // And the stream goes on: the next message is a separate, intact event.
    publish(&a, "news:pretty", json!({"n": 2})).await;
    assert_eq!(next_message(&mut stream).await.1["data"], json!({"n": 2}));

    // A reconnect recovers the same JSON from history.
    let mut again = open(
        &a,
        "news:pretty",
        &[(
            "last-event-id",
            &format!("{}.0", published["epoch"].as_str().unwrap()),
        )],
    )
    .await;
    assert_eq!(next_message(&mut again).await.1["data"], sent);
    assert_eq!(next_message(&mut again).await.1["data"], json!({"n": 2}));
}

#[tokio::test]
async fn multi_line_payloads_published_raw_on_redis_arrive_intact() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis, &[]).await;
    let mut stream = open(&a, "raw:lines", &[]).await;
    redis.wait_subscribers("raw:lines", 1).await;

    // Text that is not JSON arrives as a JSON string holding exactly the text.
    for text in [
        "line one\nline two",
        "a blank\n\nline",
        "crlf\r\nline\r\n",
        "\n\nleading and a lone\rcarriage return",
    ] {
        assert_eq!(redis.publish("raw:lines", text).await, 1);
        assert_eq!(next_message(&mut stream).await.1["data"], json!(text));
    }
    // JSON published raw, pretty-printed with CRLF and a blank line, arrives as that JSON.
    let pretty = "{\r\n  \"a\": [1,\r\n\r\n 2],\n  \"b\": \"x\\ny\"\r\n}\r\n";
    redis.publish("raw:lines", pretty).await;
    assert_eq!(
        next_message(&mut stream).await.1["data"],
        json!({"a": [1, 2], "b": "x\ny"})
    );
}

#[tokio::test]
async fn a_stream_whose_subscribe_fails_ends_with_a_retry_hint_and_the_reconnect_recovers() {
    let mut redis = RedisServer::start().await;
    let a = gateway(
        &redis,
        &[
            "--broker-ping-interval",
            "200ms",
            "--broker-timeout",
            "300ms",
        ],
    )
    .await;
    let first = publish(&a, "news:frozen", json!(1)).await;
    let resume_from = format!("{}.1", first["epoch"].as_str().unwrap());

    // An EventSource reconnecting while Redis is wedged: the subscribe cannot be confirmed.
    redis.pause();
    a.wait_readyz(503).await;
    let mut stream = SseStream::open(
        &format!("http://{}/sse?channel=news:frozen", a.addr),
        &[("last-event-id", &resume_from)],
    )
    .await
    .unwrap();
    assert_eq!(stream.next_event().await.event, "connected");
    let error = stream.next_event().await;
    assert_eq!(error.event, "error", "{error:?}");
    let error: Value = serde_json::from_str(&error.data).unwrap();
    assert_eq!(error["code"], "internal");
    assert_eq!(error["channel"], "news:frozen");
    // The stream ends (rather than pinging forever with no channel), telling the browser when to come back.
    let end = stream.next_or_end(Duration::from_secs(30)).await.unwrap();
    assert_eq!(end, None, "the stream must end after a failed subscribe");
    assert!(stream.retry().unwrap() >= 1000, "{:?}", stream.retry());
    // The failed stream sent no id: the browser still holds the one it came with.
    assert_eq!(stream.last_event_id(), resume_from);

    redis.resume();
    a.wait_readyz(200).await;
    for n in 2..=4 {
        publish(&a, "news:frozen", json!(n)).await;
    }
    // The reconnect, with the id EventSource kept, recovers everything after it.
    let mut stream = SseStream::open(
        &format!("http://{}/sse?channel=news:frozen", a.addr),
        &[("last-event-id", stream.last_event_id())],
    )
    .await
    .unwrap();
    assert_eq!(stream.next_event().await.event, "connected");
    let subscribed: Value = serde_json::from_str(&stream.next_event().await.data).unwrap();
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    for n in 2..=4 {
        assert_eq!(next_message(&mut stream).await.1["data"], n);
    }
    publish(&a, "news:frozen", json!(5)).await;
    assert_eq!(next_message(&mut stream).await.1["data"], 5);
    redis.kill();
}

#[tokio::test]
async fn ids_sent_while_recovering_keep_the_resume_position_of_channels_not_yet_subscribed() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis, &[]).await;
    let first = publish(&a, "news:one", json!("o1")).await;
    let epoch_one = first["epoch"].as_str().unwrap().to_owned();
    publish(&a, "news:one", json!("o2")).await;
    let two = publish(&a, "news:two", json!("t1")).await;
    let epoch_two = two["epoch"].as_str().unwrap().to_owned();
    publish(&a, "news:two", json!("t2")).await;

    // Resume news:one from o1 and news:two from t1. news:one is recovered
    // first; if the stream ended right after o2 (the bus failed on news:two's
    // subscribe, the network dropped), the id the browser keeps must still
    // resume news:two from t1, or t2 would be skipped on reconnect.
    let mut stream = SseStream::open(
        &format!("http://{}/sse?channel=news:one&channel=news:two", a.addr),
        &[("last-event-id", &format!("{epoch_one}.1,{epoch_two}.1"))],
    )
    .await
    .unwrap();
    assert_eq!(stream.next_event().await.event, "connected");
    assert_eq!(stream.next_event().await.event, "subscribed");
    let (event, frame) = next_message(&mut stream).await;
    assert_eq!(frame["data"], "o2");
    assert_eq!(
        event.id.unwrap(),
        format!("{epoch_one}.2,{epoch_two}.1"),
        "the id of a recovered message forgot where news:two resumes from"
    );
    assert_eq!(stream.next_event().await.event, "subscribed");
    let (event, frame) = next_message(&mut stream).await;
    assert_eq!(frame["data"], "t2");
    assert_eq!(event.id.unwrap(), format!("{epoch_one}.2,{epoch_two}.2"));
}

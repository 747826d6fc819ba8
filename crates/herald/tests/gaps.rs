//! Gaps a live client must be told about, end to end: real gateway processes on
//! a real Redis. A gap the gateway cannot fill after its own Redis connection
//! dropped, and history lost while a client stays connected (Redis restarted
//! empty), each reach the channel's clients as one `gap` frame (`docs/protocol.md`)
//! before the channel's next message, and nothing else stops being served.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use herald_testkit::{
    GatewayProcess, RedisServer, SseStream, Ws, assert_quiet, connect, expect_frame, next_json,
    post_json, send_json,
};
use serde_json::{Value, json};

const API_KEY: &str = "test-key";

fn herald() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_herald"))
}

async fn gateway(redis: &RedisServer, name: &str) -> GatewayProcess {
    let flags = [
        "--public-channel",
        "news:*",
        "--history",
        "news:*=1000/1h",
        "--api-key",
        API_KEY,
        "--broker-reconnect-max",
        "300ms",
    ];
    let gateway = GatewayProcess::start(herald(), &redis.url(), name, &flags).await;
    gateway.wait_readyz(200).await;
    gateway
}

/// A `/ws` client subscribed to `channel`; returns it with its `subscribed` frame.
async fn subscriber(gateway: &GatewayProcess, channel: &str) -> (Ws, Value) {
    let mut ws = connect(&format!("ws://{}/ws", gateway.addr)).await;
    expect_frame(&mut ws, "connected").await;
    send_json(
        &mut ws,
        json!({"type": "subscribe", "id": 1, "channels": [{"channel": channel}]}),
    )
    .await;
    let subscribed = expect_frame(&mut ws, "subscribed").await;
    (ws, subscribed)
}

/// Publishes through the API, retrying while the gateway's own Redis connection
/// comes back; the idempotency key makes a retry of a publish that did land harmless.
async fn publish(gateway: &GatewayProcess, channel: &str, data: Value) -> Value {
    let key = format!("{channel}-{data}");
    let body = json!({"channel": channel, "data": data, "idempotency_key": key});
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, answer) = post_json(gateway.addr, "/api/publish", Some(API_KEY), &body).await;
        if status == 200 {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "publish never succeeded: {status} {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn signal(gateway: &GatewayProcess, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &gateway.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn kill_pubsub_connections(redis: &RedisServer) {
    let mut conn = redis.connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(killed >= 1, "no subscriber connection to cut");
}

#[tokio::test]
async fn an_unfillable_gap_is_announced_and_every_other_channel_is_still_filled() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis, "a").await;
    let b = gateway(&redis, "b").await;
    let (mut broken, _) = subscriber(&a, "news:broken").await;
    let (mut fine, _) = subscriber(&a, "news:fine").await;
    let mut sse = SseStream::open(&format!("http://{}/sse?channel=news:broken", a.addr), &[])
        .await
        .unwrap();
    assert_eq!(sse.next_event().await.event, "connected");
    assert_eq!(sse.next_event().await.event, "subscribed");
    // A has forwarded a message on each channel: it knows where to fill both from.
    let first = publish(&b, "news:broken", json!(0)).await;
    publish(&b, "news:fine", json!(0)).await;
    assert_eq!(expect_frame(&mut broken, "message").await["data"], 0);
    assert_eq!(expect_frame(&mut fine, "message").await["data"], 0);
    assert_eq!(sse.next_event().await.event, "message");

    // A is frozen while its subscriber connection is cut, so everything published
    // now can only reach its clients through the gap fill.
    signal(&a, "-STOP");
    kill_pubsub_connections(&redis).await;
    for n in 1..=20 {
        publish(&b, "news:fine", json!(n)).await;
    }
    let mut top = Value::Null;
    for n in 1..=5 {
        top = publish(&b, "news:broken", json!(n)).await;
    }
    // The broken channel's history turns into a key of another type: its fill's
    // XRANGE fails on every attempt.
    let mut conn = redis.connection().await.unwrap();
    let stream = "herald:{news:broken}:stream";
    let () = redis::cmd("DEL")
        .arg(stream)
        .query_async::<i64>(&mut conn)
        .await
        .map(drop)
        .unwrap();
    let () = redis::cmd("SET")
        .arg(stream)
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    signal(&a, "-CONT");

    let gap = expect_frame(&mut broken, "gap").await;
    assert_eq!(gap["channel"], "news:broken", "{gap}");
    assert_eq!(gap["reason"], "unrecoverable", "{gap}");
    assert_eq!(gap["position"]["offset"], top["offset"], "{gap}");
    assert_eq!(gap["position"]["epoch"], first["epoch"], "{gap}");
    let event = sse.next_event().await;
    assert_eq!(event.event, "gap", "{event:?}");
    let data: Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(data, gap);
    assert_eq!(
        event.id.as_deref(),
        Some(format!("{}.{}", first["epoch"].as_str().unwrap(), top["offset"]).as_str())
    );
    for n in 1..=20 {
        let message = expect_frame(&mut fine, "message").await;
        assert_eq!(message["data"], n, "{message}");
    }
    a.wait_readyz(200).await;
    assert_quiet(&mut fine, Duration::from_millis(300)).await;

    // The broken channel itself is served again once its history is repaired.
    let () = redis::cmd("DEL")
        .arg(stream)
        .query_async::<i64>(&mut conn)
        .await
        .map(drop)
        .unwrap();
    let after = publish(&b, "news:broken", json!("after")).await;
    let message = expect_frame(&mut broken, "message").await;
    assert_eq!(message["data"], "after", "{message}");
    assert_eq!(message["offset"], after["offset"]);
    assert_quiet(&mut broken, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn clients_connected_across_a_history_loss_are_told_before_the_new_epoch() {
    let mut redis = RedisServer::start().await;
    let a = gateway(&redis, "a").await;
    // One channel A has forwarded a message on (its gap fill sees the new epoch),
    // one it has not (the client's session sees it on the first new message).
    let (mut busy, _) = subscriber(&a, "news:busy").await;
    let old = publish(&a, "news:busy", json!(0)).await;
    assert_eq!(expect_frame(&mut busy, "message").await["data"], 0);
    // The quiet channel has history, but A never forwarded any of it live: A
    // subscribes to it only now, so its own fill knows nothing to compare.
    for n in 0..3 {
        publish(&a, "news:quiet", json!(n)).await;
    }
    let (mut quiet, subscribed) = subscriber(&a, "news:quiet").await;
    assert_eq!(subscribed["position"]["offset"], 3, "{subscribed}");
    let quiet_epoch = subscribed["position"]["epoch"].clone();
    let mut sse = SseStream::open(&format!("http://{}/sse?channel=news:quiet", a.addr), &[])
        .await
        .unwrap();
    assert_eq!(sse.next_event().await.event, "connected");
    assert_eq!(sse.next_event().await.event, "subscribed");

    redis.restart().await;
    a.wait_readyz(200).await;
    let mut epochs = Vec::new();
    for n in 1..=3 {
        let busy_at = publish(&a, "news:busy", json!(n)).await;
        let quiet_at = publish(&a, "news:quiet", json!(n)).await;
        assert_eq!(
            (busy_at["offset"].as_u64(), quiet_at["offset"].as_u64()),
            (Some(n), Some(n))
        );
        epochs.push((busy_at["epoch"].clone(), quiet_at["epoch"].clone()));
    }
    let (busy_epoch, new_quiet_epoch) = epochs[0].clone();
    assert_ne!(busy_epoch, old["epoch"]);
    assert_ne!(new_quiet_epoch, quiet_epoch);

    // A's own fill ran before the new epoch's first publish (readyz waited for it):
    // the channel had no epoch then, so its notice carries no position. The quiet
    // channel's session saw the new epoch on its first message and names it.
    for (ws, epoch, announced) in [
        (&mut busy, &busy_epoch, Value::Null),
        (
            &mut quiet,
            &new_quiet_epoch,
            json!({"offset": 0, "epoch": new_quiet_epoch}),
        ),
    ] {
        let gap = next_json(ws).await;
        assert_eq!(gap["type"], "gap", "{gap}");
        assert_eq!(gap["reason"], "epoch_changed", "{gap}");
        assert_eq!(gap["position"], announced, "{gap}");
        for n in 1..=3 {
            let message = expect_frame(ws, "message").await;
            assert_eq!(
                (&message["data"], &message["offset"]),
                (&json!(n), &json!(n))
            );
            assert_eq!(&message["epoch"], epoch);
        }
        assert_quiet(ws, Duration::from_millis(300)).await;
    }
    let event = sse.next_event().await;
    assert_eq!(event.event, "gap", "{event:?}");
    let data: Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(data["reason"], "epoch_changed");
    assert_eq!(
        event.id.as_deref(),
        Some(format!("{}.0", new_quiet_epoch.as_str().unwrap()).as_str())
    );
    for n in 1..=3 {
        let event = sse.next_event().await;
        assert_eq!(event.event, "message");
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(data["data"], n);
    }
}

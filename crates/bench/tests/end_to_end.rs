//! End-to-end check of the bench without the real gateway: a throwaway
//! `redis-server` and a tiny WebSocket server written here (subscribe to the
//! Redis channel, forward every message to every client as one text frame)
//! stand in for Herald. Skips, saying so, when `redis-server` is not installed.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use herald_bench::{BenchArgs, BenchError};
use herald_testkit::{RedisServer, free_port};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// How the fake gateway misbehaves, if at all.
#[derive(Clone, Copy, Default)]
struct Faults {
    /// Close the first connection with code 4000 after this many messages.
    close_first_after: Option<usize>,
    /// Never subscribe to Redis.
    no_subscribe: bool,
}

/// Starts the fake gateway; returns its `ws://` URL.
async fn fake_gateway(redis_url: &str, channel: &str, faults: Faults) -> String {
    let (tx, _) = broadcast::channel::<String>(1 << 16);
    if !faults.no_subscribe {
        let client = redis::Client::open(redis_url).expect("redis url");
        let mut pubsub = client.get_async_pubsub().await.expect("pubsub connection");
        pubsub.subscribe(channel).await.expect("subscribe");
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                let text =
                    String::from_utf8(msg.get_payload_bytes().to_vec()).expect("utf-8 payload");
                let _ = tx.send(text);
            }
        });
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "ws://{}/ws/notifications",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move {
        let mut index = 0usize;
        while let Ok((stream, _)) = listener.accept().await {
            let mut rx = tx.subscribe();
            let close_after = if index == 0 {
                faults.close_first_after
            } else {
                None
            };
            index += 1;
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let mut sent = 0usize;
                loop {
                    tokio::select! {
                        msg = rx.recv() => {
                            let Ok(text) = msg else { break };
                            if ws.send(Message::text(text)).await.is_err() {
                                break;
                            }
                            sent += 1;
                            if close_after == Some(sent) {
                                let frame = CloseFrame { code: CloseCode::from(4000), reason: "slow consumer".into() };
                                let _ = ws.close(Some(frame)).await;
                                break;
                            }
                        }
                        incoming = ws.next() => match incoming {
                            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                            Some(Ok(_)) => {}
                        },
                    }
                }
            });
        }
    });
    url
}

fn args(urls: Vec<String>, redis_url: String, channel: &str) -> BenchArgs {
    BenchArgs {
        urls,
        clients: 20,
        rate: 20_000.0,
        messages: 2_000,
        payload_bytes: 64,
        redis_url,
        channel: channel.to_owned(),
        server_pids: vec![std::process::id()],
        json: false,
        connect_concurrency: 8,
        drain_timeout_secs: 10,
        warmup_ms: 50,
        subscribe_timeout_secs: 5,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_reaches_every_client_across_two_gateways() {
    let redis = RedisServer::start().await;
    let a = fake_gateway(&redis.url(), "events", Faults::default()).await;
    let b = fake_gateway(&redis.url(), "events", Faults::default()).await;
    let report = herald_bench::run(args(vec![a, b], redis.url(), "events"))
        .await
        .expect("bench runs");
    let table = report.render_table();
    println!("{table}");
    assert_eq!(report.clients_connected, 20);
    assert_eq!(report.redis_subscribers, 2);
    assert_eq!(report.messages_published, 2_000);
    assert_eq!(report.expected_deliveries, 40_000);
    assert_eq!(report.delivered, 40_000);
    assert_eq!(
        (report.lost, report.duplicates, report.invalid_frames),
        (0, 0, 0)
    );
    assert!(!report.drain_timed_out);
    assert_eq!(report.payload_bytes, 64);
    assert_eq!(report.disconnects, 0);
    let latency = report.latency_ms.as_ref().expect("latencies");
    assert!(latency.p50 <= latency.p99 && latency.p99 <= latency.max);
    assert!(report.deliveries_per_sec.expect("rate") > 0.0);
    let rate = report.publish_rate.expect("publish rate");
    assert!(
        rate > 5_000.0,
        "publish rate {rate} far below the 20000/s target"
    );
    assert_eq!(report.servers.len(), 1);
    assert!(report.servers[0].rss_before_kib > 0);
    assert!(report.server_cpu_us_per_delivery.is_some());
    let json: serde_json::Value =
        serde_json::from_str(&report.to_json().expect("json")).expect("valid json");
    assert_eq!(json["delivered"], 40_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_disconnects_are_counted_with_their_close_code() {
    let redis = RedisServer::start().await;
    let faults = Faults {
        close_first_after: Some(10),
        ..Faults::default()
    };
    let url = fake_gateway(&redis.url(), "alerts", faults).await;
    let mut a = args(vec![url], redis.url(), "alerts");
    a.clients = 5;
    a.messages = 200;
    a.rate = 2_000.0;
    a.drain_timeout_secs = 2;
    let report = herald_bench::run(a)
        .await
        .expect("bench finishes despite the disconnect");
    println!("{}", report.render_table());
    assert_eq!(report.disconnects, 1);
    assert_eq!(report.disconnect_codes.len(), 1);
    assert_eq!(report.disconnect_codes[0].code, Some(4000));
    assert_eq!(report.disconnect_codes[0].example_reason, "slow consumer");
    assert_eq!(report.expected_deliveries, 1_000);
    assert_eq!(report.delivered, 1_000 - 190);
    assert_eq!(report.lost, 190);
    // The disconnected client counts as finished, so the drain does not wait in vain.
    assert!(!report.drain_timed_out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_never_subscribes_is_a_clear_error() {
    let redis = RedisServer::start().await;
    let faults = Faults {
        no_subscribe: true,
        ..Faults::default()
    };
    let url = fake_gateway(&redis.url(), "events", faults).await;
    let mut a = args(vec![url], redis.url(), "events");
    a.subscribe_timeout_secs = 1;
    let started = Instant::now();
    let err = herald_bench::run(a).await.expect_err("nobody subscribed");
    assert!(
        matches!(
            err,
            BenchError::SubscribeTimeout {
                want: 1,
                got: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("PUBSUB NUMSUB"));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_a_clear_error() {
    let url = format!("ws://127.0.0.1:{}/ws/notifications", free_port());
    let err = herald_bench::run(args(vec![url], "redis://127.0.0.1:1".into(), "events"))
        .await
        .expect_err("no gateway");
    assert!(matches!(err, BenchError::NoClientConnected { .. }), "{err}");
}

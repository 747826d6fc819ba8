//! Bad input at scale (issue #7, part D): a real gateway on a real Redis while
//! 100 hostile clients send 10,000 random frames — valid, invalid, oversized,
//! binary — and 10 well-behaved clients must still receive every message
//! published meanwhile, once and in order, with the gateway's memory flat.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald_testkit::{
    GatewayProcess, RedisServer, Seen, Ws, connect, expect_frame, get, next_seen, post_json,
    rss_kib, send_json,
};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

const API_KEY: &str = "test-key";
const CHANNEL: &str = "news:storm";
const BAD_CLIENTS: usize = 100;
const BAD_FRAMES: usize = 10_000;
const GOOD_CLIENTS: usize = 10;
/// The gateway's default `--max-client-message-bytes` is 64 KiB.
const OVERSIZED: usize = 64 * 1024 + 1;

fn herald() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_herald"))
}

/// One random frame a hostile client might send.
fn random_frame(rng: &mut impl Rng) -> Message {
    match rng.random_range(0..100) {
        // Valid frames: pings, subscribes (some to channels they may not read), unsubscribes.
        0..=24 => Message::text(
            json!({"type": "ping", "id": rng.random::<u32>()}).to_string(),
        ),
        25..=34 => Message::text(
            json!({"type": "subscribe", "id": 1, "channels": [
                {"channel": format!("news:junk{}", rng.random_range(0..50))},
                {"channel": CHANNEL, "since": {"offset": rng.random::<u32>(), "epoch": "nosuchepoch"}},
            ]})
            .to_string(),
        ),
        35..=39 => Message::text(
            json!({"type": "unsubscribe", "channels": ["news:never", "bad name!"]}).to_string(),
        ),
        // Invalid: not JSON, unknown types, wrong shapes, bad names.
        40..=49 => Message::text("{\"type\":"),
        50..=54 => Message::text(json!({"type": "dance"}).to_string()),
        55..=59 => Message::text(json!({"type": "subscribe", "channels": [{"channel": "a b"}]}).to_string()),
        60..=64 => {
            let bytes: Vec<u8> = (0..rng.random_range(1..512)).map(|_| rng.random()).collect();
            Message::text(String::from_utf8_lossy(&bytes).into_owned())
        }
        // Binary frames, which the protocol does not speak.
        65..=84 => Message::binary((0..rng.random_range(0..2048)).map(|_| rng.random::<u8>()).collect::<Vec<u8>>()),
        // Oversized: past the frame limit.
        85..=89 => Message::text("x".repeat(OVERSIZED + rng.random_range(0..4096))),
        // Deep nesting and long strings inside the limit.
        _ => Message::text(format!("{}{}", "[".repeat(rng.random_range(1..5000)), "]".repeat(rng.random_range(0..10)))),
    }
}

/// Counts of how hostile connections ended.
type Endings = Arc<Mutex<BTreeMap<String, usize>>>;

/// Sends random frames on fresh connections until `quota` is used up (shared by all bad clients).
async fn hostile(url: String, quota: Arc<AtomicUsize>, endings: Endings) {
    let mut rng = rand::rngs::StdRng::from_os_rng();
    'connections: loop {
        if quota.load(Ordering::Relaxed) == 0 {
            return;
        }
        let ws = match tokio_tungstenite::connect_async(&url).await {
            Ok((ws, _)) => ws,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // One connection in twenty floods valid pings past the frame-rate limit (bursts of 40).
        let flooder = rng.random_range(0..20) == 0;
        let (mut sink, mut stream) = ws.split();
        let closed = Arc::new(AtomicBool::new(false));
        let closing = Arc::new(AtomicBool::new(false));
        // Drain what the server sends, and note how the server ended the connection.
        let mut reader = {
            let (closed, closing, endings) = (closed.clone(), closing.clone(), endings.clone());
            tokio::spawn(async move {
                let ending = loop {
                    match stream.next().await {
                        Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => {
                            break u16::from(code).to_string();
                        }
                        Some(Ok(Message::Close(None))) => break "1005".to_owned(),
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => break "dropped".to_owned(),
                    }
                };
                closed.store(true, Ordering::Relaxed);
                if !closing.load(Ordering::Relaxed) {
                    *endings.lock().unwrap().entry(ending).or_default() += 1;
                }
            })
        };
        for sent in 0.. {
            if closed.load(Ordering::Relaxed) {
                break;
            }
            // A flooder past the burst has made its point: wait for its close.
            if flooder && sent == 50 {
                let _ = tokio::time::timeout(Duration::from_secs(10), &mut reader).await;
                continue 'connections;
            }
            // Take one frame from the shared quota, or stop.
            if quota
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_err()
            {
                // The quota is used up: this client leaves by itself.
                closing.store(true, Ordering::Relaxed);
                let _ = sink.close().await;
                let _ = reader.await;
                return;
            }
            let frame = if flooder {
                Message::text(r#"{"type":"ping"}"#)
            } else {
                random_frame(&mut rng)
            };
            if sink.send(frame).await.is_err() {
                // The frame did not go out: give it back and reconnect.
                quota.fetch_add(1, Ordering::Relaxed);
                break;
            }
            if !flooder && rng.random_range(0..4) == 0 {
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..5))).await;
            }
        }
        drop(sink);
        reader.abort();
        continue 'connections;
    }
}

/// A well-behaved client subscribed to `CHANNEL`: collects every message's data until `"end"`,
/// and hands its connection back still open.
async fn well_behaved(mut ws: Ws) -> (Vec<(u64, Value)>, Ws) {
    let mut received = Vec::new();
    loop {
        match next_seen(&mut ws, Duration::from_secs(60)).await.unwrap() {
            Seen::Text(text) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["type"] != "message" {
                    continue;
                }
                if frame["data"] == "end" {
                    return (received, ws);
                }
                received.push((frame["offset"].as_u64().unwrap(), frame["data"].clone()));
            }
            other => panic!("a well-behaved client got {other:?}"),
        }
    }
}

async fn publish(gateway: &GatewayProcess, data: Value) -> u64 {
    let (status, body) = post_json(
        gateway.addr,
        "/api/publish",
        Some(API_KEY),
        &json!({"channel": CHANNEL, "data": data}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["offset"].as_u64().unwrap()
}

/// Runs hostile clients until `frames` frames are sent; returns how their
/// connections ended and how many frames were left unsent.
async fn storm(gateway: SocketAddr, frames: usize) -> (BTreeMap<String, usize>, usize) {
    let quota = Arc::new(AtomicUsize::new(frames));
    let endings = Endings::default();
    let url = format!("ws://{gateway}/ws");
    let tasks: Vec<_> = (0..BAD_CLIENTS)
        .map(|_| tokio::spawn(hostile(url.clone(), quota.clone(), endings.clone())))
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let endings = endings.lock().unwrap().clone();
    (endings, quota.load(Ordering::Relaxed))
}

/// Waits until the gateway holds exactly `n` connections.
async fn wait_connections(gateway: &GatewayProcess, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, health) = get(gateway.addr, "/healthz").await.unwrap();
        if health["connections"].as_u64() == Some(n) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway still holds {} connections, expected {n}",
            health["connections"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_of_random_frames_loses_nothing_for_well_behaved_clients_and_leaks_nothing() {
    let redis = RedisServer::start().await;
    let gateway = GatewayProcess::start(
        herald(),
        &redis.url(),
        "storm",
        &[
            "--public-channel",
            "news:*",
            "--history",
            "news:*=10000/1h",
            "--api-key",
            API_KEY,
        ],
    )
    .await;
    gateway.wait_readyz(200).await;

    // Warm-up: the allocator's arenas and the connection paths get used once before measuring.
    publish(&gateway, json!("warm-up")).await;
    storm(gateway.addr, 1000).await;
    wait_connections(&gateway, 0).await;

    let mut good = Vec::new();
    for _ in 0..GOOD_CLIENTS {
        let mut ws = connect(&format!("ws://{}/ws", gateway.addr)).await;
        expect_frame(&mut ws, "connected").await;
        send_json(
            &mut ws,
            json!({"type": "subscribe", "channels": [{"channel": CHANNEL}]}),
        )
        .await;
        expect_frame(&mut ws, "subscribed").await;
        good.push(tokio::spawn(well_behaved(ws)));
    }
    let rss_before = rss_kib(gateway.pid());

    // The storm, with publishing all along it.
    let storm_task = tokio::spawn(storm(gateway.addr, BAD_FRAMES));
    let mut published = Vec::new();
    let mut n = 0u64;
    while !storm_task.is_finished() || published.len() < 200 {
        let offset = publish(&gateway, json!({"n": n})).await;
        published.push((offset, json!({"n": n})));
        n += 1;
    }
    let (endings, left) = storm_task.await.unwrap();
    assert_eq!(left, 0, "the hostile clients did not send all their frames");
    publish(&gateway, json!("end")).await;

    let mut still_open = Vec::new();
    for client in good {
        let (received, ws) = client.await.unwrap();
        still_open.push(ws);
        assert_eq!(
            received.len(),
            published.len(),
            "a well-behaved client lost or repeated messages"
        );
        assert_eq!(received, published, "not every message, once, in order");
    }
    // Every hostile connection the server ended got a documented close code
    // ("dropped": the server's close frame was lost to a TCP reset, as when it
    // closes with an oversized frame still unread).
    let documented = ["1002", "1003", "1007", "1009", "4002", "4006", "dropped"];
    for code in endings.keys() {
        assert!(
            documented.contains(&code.as_str()),
            "closed with {code}: {endings:?}"
        );
    }
    wait_connections(&gateway, GOOD_CLIENTS as u64).await;
    let rss_after = rss_kib(gateway.pid());
    println!(
        "storm: {BAD_FRAMES} frames from {BAD_CLIENTS} clients, endings {endings:?}; {} messages to each of {GOOD_CLIENTS} clients; gateway RSS {rss_before} KiB -> {rss_after} KiB",
        published.len()
    );
    assert!(
        rss_after <= rss_before + 16 * 1024,
        "the gateway's RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

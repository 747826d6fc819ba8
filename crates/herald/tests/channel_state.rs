//! What a channel leaves behind: nothing for a read, expiring keys for a
//! publish, and a lost `meta` key that starts a new epoch instead of
//! blocking the channel. Real gateway processes, real Redis, raw protocol
//! clients.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Instant;

use herald_testkit::{
    GatewayProcess, RedisServer, Ws, connect, expect_frame, post_json, rss_kib, send_json,
};
use serde_json::{Value, json};

const API_KEY: &str = "test-key";

fn herald() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_herald"))
}

/// A fresh, uuid-shaped channel name; `run` keeps names of different runs apart.
fn fresh_name(run: u32, n: u64) -> String {
    let mixed = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(run);
    format!(
        "news:{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        run,
        (mixed >> 48) & 0xffff,
        (mixed >> 32) & 0xffff,
        (mixed >> 16) & 0xffff,
        n
    )
}

async fn client(gateway: &GatewayProcess) -> Ws {
    let mut ws = connect(&format!("ws://{}/ws", gateway.addr)).await;
    expect_frame(&mut ws, "connected").await;
    ws
}

/// Subscribes to every name (half of them with a `since` from nowhere, which
/// runs a full recovery) one frame each, then unsubscribes from them all.
async fn subscribe_and_drop(ws: &mut Ws, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        let mut entry = json!({"channel": name});
        if i % 2 == 0 {
            entry["since"] = json!({"offset": 3, "epoch": "nowhere"});
        }
        send_json(
            ws,
            json!({"type": "subscribe", "id": i, "channels": [entry]}),
        )
        .await;
    }
    for _ in names {
        let frame = expect_frame(ws, "subscribed").await;
        assert_eq!(frame["position"]["offset"], 0, "{frame}");
    }
    for (i, name) in names.iter().enumerate() {
        send_json(
            ws,
            json!({"type": "unsubscribe", "id": i, "channels": [name]}),
        )
        .await;
    }
    for _ in names {
        expect_frame(ws, "unsubscribed").await;
    }
}

/// Runs `total` fresh names through `clients` connections, `batch` at a time each.
async fn churn(gateway: &GatewayProcess, run: u32, from: u64, total: u64) {
    const CLIENTS: u64 = 8;
    const BATCH: u64 = 25;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut ws = client(gateway).await;
        tasks.push(tokio::spawn(async move {
            let mut n = from + c;
            let end = from + total;
            while n < end {
                let mut names = Vec::new();
                while names.len() < BATCH as usize && n < end {
                    names.push(fresh_name(run, n));
                    n += CLIENTS;
                }
                subscribe_and_drop(&mut ws, &names).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fresh_channels_subscribed_and_dropped_leave_no_memory_behind() {
    let gateway = GatewayProcess::start(
        herald(),
        "memory://",
        "a",
        &[
            "--history",
            "news:*=1000/1h",
            "--public-channel",
            "news:*",
            "--client-frame-rate",
            "100000",
        ],
    )
    .await;
    let run = std::process::id();
    // Warm up: buffers, maps and allocator arenas grow to their working size.
    churn(&gateway, run, 0, 10_000).await;
    let before = rss_kib(gateway.pid());
    let started = Instant::now();
    churn(&gateway, run, 10_000, 100_000).await;
    let after = rss_kib(gateway.pid());
    eprintln!(
        "100,000 fresh channels in {:?}: RSS {before} KiB -> {after} KiB",
        started.elapsed()
    );
    assert!(
        after <= before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB for 100,000 channels nobody holds any more"
    );
}

async fn gateway_on(redis: &RedisServer) -> GatewayProcess {
    let gateway = GatewayProcess::start(
        herald(),
        &redis.url(),
        "a",
        &[
            "--history",
            "news:*=1000/1h",
            "--history",
            "kept:*=10",
            "--public-channel",
            "news:*",
            "--public-channel",
            "kept:*",
            "--api-key",
            API_KEY,
            "--client-frame-rate",
            "100000",
        ],
    )
    .await;
    gateway.wait_readyz(200).await;
    gateway
}

async fn publish(gateway: &GatewayProcess, body: Value) -> Value {
    let (status, answer) = post_json(gateway.addr, "/api/publish", Some(API_KEY), &body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Every key matching `pattern`, by SCAN.
async fn keys(conn: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut cursor = 0u64;
    let mut all = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .unwrap();
        all.extend(batch);
        if next == 0 {
            return all;
        }
        cursor = next;
    }
}

async fn ttl(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("TTL").arg(key).query_async(conn).await.unwrap()
}

#[tokio::test]
async fn reading_fresh_channels_leaves_no_redis_key_and_every_key_expires() {
    let redis = RedisServer::start().await;
    let gateway = gateway_on(&redis).await;
    let mut conn = redis.connection().await.unwrap();

    let mut ws = client(&gateway).await;
    let names: Vec<String> = (0..500).map(|n| fresh_name(7, n)).collect();
    for chunk in names.chunks(20) {
        subscribe_and_drop(&mut ws, chunk).await;
    }
    let left = keys(&mut conn, "herald:*").await;
    assert!(
        left.is_empty(),
        "subscribing to never-published channels left keys: {:?}",
        &left[..left.len().min(5)]
    );

    // A client that subscribed before the first publish holds offset 0 of a
    // one-off epoch: nothing proves it missed nothing, so it is told so.
    let mut early = client(&gateway).await;
    send_json(
        &mut early,
        json!({"type": "subscribe", "id": 1, "channels": [{"channel": "news:published"}]}),
    )
    .await;
    let before_first = expect_frame(&mut early, "subscribed").await["position"].clone();
    assert_eq!(before_first["offset"], 0);

    for n in 0..3 {
        publish(
            &gateway,
            json!({"channel": "news:published", "data": n, "idempotency_key": format!("k{n}")}),
        )
        .await;
    }
    publish(&gateway, json!({"channel": "kept:forever", "data": 1})).await;

    let mut late = client(&gateway).await;
    send_json(
        &mut late,
        json!({"type": "subscribe", "id": 1, "channels": [{"channel": "news:published", "since": before_first}]}),
    )
    .await;
    let subscribed = expect_frame(&mut late, "subscribed").await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(subscribed["position"]["offset"], 3);

    let mut written = keys(&mut conn, "herald:*").await;
    written.sort();
    assert_eq!(
        written,
        [
            "herald:{kept:forever}:meta",
            "herald:{kept:forever}:stream",
            "herald:{news:published}:idem:k0",
            "herald:{news:published}:idem:k1",
            "herald:{news:published}:idem:k2",
            "herald:{news:published}:meta",
            "herald:{news:published}:stream",
        ]
    );
    for key in &written {
        let left = ttl(&mut conn, key).await;
        assert!(left > 0, "{key} has no expiry (TTL {left})");
    }
    // The position outlives the messages by far: max(30 days, 10 × TTL).
    let month = 30 * 86_400;
    assert_eq!(ttl(&mut conn, "herald:{news:published}:stream").await, 3600);
    assert!(ttl(&mut conn, "herald:{news:published}:meta").await > month - 60);
    // Without a TTL in the rule the messages last as long as the position.
    assert!(ttl(&mut conn, "herald:{kept:forever}:stream").await > month - 60);
    assert!(ttl(&mut conn, "herald:{kept:forever}:meta").await > month - 60);
}

#[tokio::test]
async fn a_lost_meta_key_starts_a_new_epoch_instead_of_blocking_publishing() {
    let redis = RedisServer::start().await;
    let gateway = gateway_on(&redis).await;
    let mut conn = redis.connection().await.unwrap();

    let mut live = client(&gateway).await;
    send_json(
        &mut live,
        json!({"type": "subscribe", "id": 1, "channels": [{"channel": "news:lost"}]}),
    )
    .await;
    expect_frame(&mut live, "subscribed").await;
    for n in 1..=3 {
        publish(&gateway, json!({"channel": "news:lost", "data": n})).await;
    }
    let mut last = Value::Null;
    for n in 1..=3 {
        last = expect_frame(&mut live, "message").await;
        assert_eq!(last["data"], n);
    }
    let old = json!({"offset": last["offset"], "epoch": last["epoch"]});
    assert_eq!(old["offset"], 3);

    let deleted: i64 = redis::cmd("DEL")
        .arg("herald:{news:lost}:meta")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(deleted, 1);

    // Publishing goes on, in a new epoch from offset 1.
    let answer = publish(&gateway, json!({"channel": "news:lost", "data": 4})).await;
    assert_eq!(answer["offset"], 1, "{answer}");
    assert_ne!(answer["epoch"], old["epoch"]);
    let new_epoch = answer["epoch"].clone();
    // The client that stayed connected is told its position is void before the new epoch's first message.
    let gap = expect_frame(&mut live, "gap").await;
    assert_eq!(gap["reason"], "epoch_changed", "{gap}");
    assert_eq!(gap["position"], json!({"offset": 0, "epoch": new_epoch}));
    let message = expect_frame(&mut live, "message").await;
    assert_eq!(message["data"], 4);
    assert_eq!(message["epoch"], new_epoch);
    // The old epoch's messages went with it: they cannot be told apart from the new ones.
    let length: i64 = redis::cmd("XLEN")
        .arg("herald:{news:lost}:stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(length, 1);

    // A client holding a position of the old epoch is told it cannot recover.
    let mut returning = client(&gateway).await;
    send_json(
        &mut returning,
        json!({"type": "subscribe", "id": 1, "channels": [{"channel": "news:lost", "since": old}]}),
    )
    .await;
    let subscribed = expect_frame(&mut returning, "subscribed").await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(
        subscribed["position"],
        json!({"offset": 1, "epoch": new_epoch})
    );

    // One holding a position of the new epoch recovers, and everyone gets what follows.
    let mut recovering = client(&gateway).await;
    send_json(
        &mut recovering,
        json!({"type": "subscribe", "id": 1, "channels": [{"channel": "news:lost", "since": {"offset": 0, "epoch": new_epoch}}]}),
    )
    .await;
    let subscribed = expect_frame(&mut recovering, "subscribed").await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    assert_eq!(expect_frame(&mut recovering, "message").await["data"], 4);
    publish(&gateway, json!({"channel": "news:lost", "data": 5})).await;
    for ws in [&mut live, &mut returning, &mut recovering] {
        let message = expect_frame(ws, "message").await;
        assert_eq!(message["data"], 5);
        assert_eq!(message["offset"], 2);
        assert_eq!(message["epoch"], new_epoch);
    }
}

#[tokio::test]
async fn a_position_behind_its_stream_starts_a_new_epoch_too() {
    let redis = RedisServer::start().await;
    let gateway = gateway_on(&redis).await;
    let mut conn = redis.connection().await.unwrap();
    let mut first = Value::Null;
    for n in 1..=3 {
        first = publish(&gateway, json!({"channel": "news:rewound", "data": n})).await;
    }
    // A meta from an older snapshot, or edited by hand: its offset is below the stream's top.
    let _: i64 = redis::cmd("HSET")
        .arg("herald:{news:rewound}:meta")
        .arg("offset")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let answer = publish(&gateway, json!({"channel": "news:rewound", "data": 4})).await;
    assert_eq!(answer["offset"], 1, "{answer}");
    assert_ne!(answer["epoch"], first["epoch"]);
    let next = publish(&gateway, json!({"channel": "news:rewound", "data": 5})).await;
    assert_eq!(next["offset"], 2);
    assert_eq!(next["epoch"], answer["epoch"]);
}

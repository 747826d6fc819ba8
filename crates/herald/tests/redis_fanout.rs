//! Several real gateway processes on one real Redis: the fan-out across instances,
//! and what happens when Redis goes away and comes back.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use herald_testkit::{
    GatewayProcess, RedisServer, Ws, assert_quiet, close_code, connect, next_text,
};

fn herald() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_herald"))
}

/// `per_instance` clients on each gateway, connected round-robin.
async fn clients(gateways: &[GatewayProcess], per_instance: usize) -> Vec<Ws> {
    let mut clients = Vec::new();
    for _ in 0..per_instance {
        for gateway in gateways {
            clients.push(connect(&gateway.tutorial_url()).await);
        }
    }
    clients
}

#[tokio::test]
async fn a_message_published_once_reaches_every_client_on_every_instance_once_in_order() {
    let redis = RedisServer::start().await;
    let mut gateways = Vec::new();
    for name in ["a", "b", "c"] {
        gateways.push(GatewayProcess::start(herald(), &redis.url(), name, &[]).await);
    }
    for gateway in &gateways {
        gateway.wait_readyz(200).await;
    }
    let mut clients = clients(&gateways, 5).await;
    // One subscription per instance, whatever the number of clients.
    redis.wait_subscribers("events", 3).await;

    for i in 0..50 {
        // The tutorial's publisher: a plain PUBLISH on `events`; Redis reaches three subscribers.
        assert_eq!(
            redis
                .publish("events", format!("Content published: post {i}"))
                .await,
            3
        );
    }
    for ws in &mut clients {
        for i in 0..50 {
            assert_eq!(next_text(ws).await, format!("Content published: post {i}"));
        }
    }
    for ws in &mut clients {
        assert_quiet(ws, Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn clients_stay_connected_through_a_redis_restart_and_then_receive_again() {
    let mut redis = RedisServer::start().await;
    let fast = [
        "--broker-ping-interval",
        "200ms",
        "--broker-timeout",
        "500ms",
        "--broker-reconnect-max",
        "500ms",
    ];
    let a = GatewayProcess::start(herald(), &redis.url(), "a", &fast).await;
    let b = GatewayProcess::start(herald(), &redis.url(), "b", &fast).await;
    a.wait_readyz(200).await;
    b.wait_readyz(200).await;
    let gateways = [a, b];
    let mut clients = clients(&gateways, 3).await;
    redis.wait_subscribers("events", 2).await;
    redis.publish("events", "before").await;
    for ws in &mut clients {
        assert_eq!(next_text(ws).await, "before");
    }

    redis.kill();
    for gateway in &gateways {
        gateway.wait_readyz(503).await;
    }
    redis.restart().await;
    for gateway in &gateways {
        gateway.wait_readyz(200).await;
    }
    // Ready means re-subscribed: the restarted, empty Redis knows both instances again.
    redis.wait_subscribers("events", 2).await;

    for i in 0..10 {
        redis.publish("events", format!("after {i}")).await;
    }
    for ws in &mut clients {
        // The same sockets as before the restart: nobody was disconnected.
        for i in 0..10 {
            assert_eq!(next_text(ws).await, format!("after {i}"));
        }
        assert_quiet(ws, Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_gateway_started_before_redis_becomes_ready_when_redis_appears() {
    let port = herald_testkit::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let gateway = GatewayProcess::start(
        herald(),
        &url,
        "early",
        &["--broker-reconnect-max", "200ms"],
    )
    .await;
    gateway.wait_readyz(503).await;
    let (_, body) = herald_testkit::get(gateway.addr, "/readyz").await.unwrap();
    assert_eq!(body["broker"], "connecting");

    let mut ws = connect(&gateway.tutorial_url()).await;
    let redis = RedisServer::start_on(port).await;
    gateway.wait_readyz(200).await;
    redis.wait_subscribers("events", 1).await;
    redis.publish("events", "hello").await;
    assert_eq!(next_text(&mut ws).await, "hello");
}

#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_cleanly() {
    let redis = RedisServer::start().await;
    let mut gateway = GatewayProcess::start(herald(), &redis.url(), "leaving", &[]).await;
    let mut ws = connect(&gateway.tutorial_url()).await;
    redis.wait_subscribers("events", 1).await;
    let (_, health) = herald_testkit::get(gateway.addr, "/healthz").await.unwrap();
    assert_eq!(health["instance_id"], "leaving");
    let waiter = tokio::spawn(async move { close_code(&mut ws, Duration::from_secs(10)).await });
    assert!(gateway.terminate(), "gateway exited with an error");
    assert_eq!(waiter.await.unwrap(), Some(1001));
    redis.wait_subscribers("events", 0).await;
}

#[tokio::test]
async fn bad_flags_are_refused_with_a_clear_message() {
    let output = std::process::Command::new(herald())
        .args(["gateway", "--broker", "kafka://x"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unsupported broker url"), "{stderr}");

    let output = std::process::Command::new(herald())
        .args(["gateway", "--ping-interval", "0s"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("greater than zero"));
}

#[tokio::test]
async fn a_wedged_redis_that_keeps_its_sockets_open_makes_the_gateway_not_ready() {
    let redis = RedisServer::start().await;
    let fast = [
        "--broker-ping-interval",
        "200ms",
        "--broker-timeout",
        "300ms",
        "--broker-reconnect-max",
        "300ms",
    ];
    let gateway = GatewayProcess::start(herald(), &redis.url(), "watchful", &fast).await;
    gateway.wait_readyz(200).await;
    let mut ws = connect(&gateway.tutorial_url()).await;
    redis.wait_subscribers("events", 1).await;

    // Frozen, not dead: the TCP connection stays up, only the answers stop.
    redis.pause();
    gateway.wait_readyz(503).await;
    redis.resume();
    gateway.wait_readyz(200).await;

    // The stale connection was replaced; exactly one subscription serves the instance.
    redis.wait_subscribers("events", 1).await;
    redis.publish("events", "thawed").await;
    assert_eq!(next_text(&mut ws).await, "thawed");
    assert_quiet(&mut ws, Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_stalled_client_is_closed_with_4000_and_the_gateway_memory_stays_bounded() {
    let redis = RedisServer::start().await;
    let gateway = GatewayProcess::start(
        herald(),
        &redis.url(),
        "bounded",
        &["--client-queue", "8", "--write-timeout", "30s"],
    )
    .await;
    gateway.wait_readyz(200).await;
    let mut stalled = connect(&gateway.tutorial_url()).await;
    let mut reader = connect(&gateway.tutorial_url()).await;
    redis.wait_subscribers("events", 1).await;
    let before = herald_testkit::rss_kib(gateway.pid());

    // 4,000 × 16 KiB = 64 MiB through the gateway, while one client reads nothing.
    let filler = "x".repeat(16 * 1024);
    for i in 0..4000 {
        redis.publish("events", format!("{i:05}{filler}")).await;
        // The reader keeps up, message by message: it is never the slow one.
        assert_eq!(&next_text(&mut reader).await[..5], format!("{i:05}"));
    }
    let after = herald_testkit::rss_kib(gateway.pid());
    eprintln!("gateway RSS {before} KiB before, {after} KiB after 64 MiB to a stalled client");
    // A queue without bound would hold most of the 64 MiB the stalled client never read.
    // With 8 queued messages and bounded write buffers the growth stays far below it.
    assert!(
        after.saturating_sub(before) < 8 * 1024,
        "gateway RSS grew from {before} KiB to {after} KiB"
    );

    assert_eq!(
        close_code(&mut stalled, Duration::from_secs(30)).await,
        Some(4000)
    );
    redis.publish("events", "after").await;
    assert_eq!(next_text(&mut reader).await, "after");
}

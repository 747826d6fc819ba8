//! The gateway on the in-process `memory://` broker, over real sockets with real
//! WebSocket clients: the behaviour that makes sense for one instance.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use herald_broker::{Broker, MemoryBroker};
use herald_gateway::{Gateway, GatewayConfig};
use herald_protocol::ChannelName;
use herald_testkit::{Seen, Ws, assert_quiet, close_code, connect, next_seen, next_text};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// One gateway instance on a loopback port, with its in-process bus.
struct Instance {
    url: String,
    broker: Arc<dyn Broker>,
    shutdown: CancellationToken,
    served: JoinHandle<std::io::Result<()>>,
}

impl Instance {
    async fn start(config: GatewayConfig) -> Self {
        let (broker, inbox) = MemoryBroker::new();
        let broker: Arc<dyn Broker> = Arc::new(broker);
        let gateway = Gateway::new(config, broker.clone(), inbox);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws/notifications", listener.local_addr().unwrap());
        let shutdown = gateway.shutdown_token();
        let router = gateway.router();
        let served = tokio::spawn(gateway.serve(listener, router));
        Instance {
            url,
            broker,
            shutdown,
            served,
        }
    }

    async fn client(&self) -> Ws {
        let ws = connect(&self.url).await;
        // The subscription is made as the upgrade completes; wait for the bus to confirm it.
        self.broker.until_subscribed(&events()).await.unwrap();
        ws
    }

    async fn publish(&self, payload: impl Into<Bytes>) {
        self.broker
            .publish(&events(), payload.into())
            .await
            .unwrap();
    }
}

fn events() -> ChannelName {
    ChannelName::new("events").unwrap()
}

#[tokio::test]
async fn every_client_gets_every_message_once_in_publish_order() {
    let instance = Instance::start(GatewayConfig::default()).await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(instance.client().await);
    }
    // Clients connect one by one: wait until the hub has all of them before publishing.
    wait_for_subscribers(&instance, 10).await;
    for i in 0..100 {
        instance
            .publish(format!("Content published: item {i}"))
            .await;
    }
    for ws in &mut clients {
        for i in 0..100 {
            assert_eq!(next_text(ws).await, format!("Content published: item {i}"));
        }
        assert_quiet(ws, Duration::from_millis(100)).await;
    }
}

async fn wait_for_subscribers(instance: &Instance, n: u64) {
    let addr = instance
        .url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws/notifications")
        .parse()
        .unwrap();
    for _ in 0..500 {
        let (_, body) = herald_testkit::get(addr, "/healthz").await.unwrap();
        if body["connections"].as_u64() == Some(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never saw {n} connections");
}

#[tokio::test]
async fn a_payload_that_is_not_utf8_arrives_intact_as_binary() {
    let instance = Instance::start(GatewayConfig::default()).await;
    let mut ws = instance.client().await;
    instance
        .publish(Bytes::from_static(&[0xff, 0x00, 0xfe]))
        .await;
    assert_eq!(
        next_seen(&mut ws, Duration::from_secs(5)).await.unwrap(),
        Seen::Binary(vec![0xff, 0x00, 0xfe])
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_slow_consumer_and_others_keep_up() {
    let config = GatewayConfig {
        client_queue: 8,
        write_timeout: Duration::from_secs(30),
        ..GatewayConfig::default()
    };
    let instance = Instance::start(config).await;
    let mut stalled = instance.client().await;
    let mut reader = instance.client().await;
    wait_for_subscribers(&instance, 2).await;
    // 4,000 × 16 KiB = 64 MiB: far more than the socket buffers and the queue can hold.
    let payload = "x".repeat(16 * 1024);
    for i in 0..4000 {
        instance.publish(format!("{i:05}{payload}")).await;
        // The reader keeps up, message by message.
        let text = next_text(&mut reader).await;
        assert_eq!(&text[..5], format!("{i:05}"));
    }
    // The stalled client now reads what reached it, then the close frame.
    assert_eq!(
        close_code(&mut stalled, Duration::from_secs(30)).await,
        Some(4000)
    );
    // The reader is still served.
    instance.publish("after").await;
    assert_eq!(next_text(&mut reader).await, "after");
}

#[tokio::test]
async fn bad_client_frames_get_their_close_codes_and_others_are_unaffected() {
    let config = GatewayConfig {
        max_client_message_bytes: 1024,
        ..GatewayConfig::default()
    };
    let instance = Instance::start(config).await;
    let mut bystander = instance.client().await;

    let mut too_big = instance.client().await;
    too_big.send(Message::text("y".repeat(4096))).await.unwrap();
    assert_eq!(
        close_code(&mut too_big, Duration::from_secs(5)).await,
        Some(1009)
    );

    let mut binary = instance.client().await;
    binary.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(
        close_code(&mut binary, Duration::from_secs(5)).await,
        Some(1003)
    );

    let mut bad_utf8 = instance.client().await;
    let frame = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
        vec![0xc3, 0x28],
        tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
            tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
        ),
        true,
    );
    bad_utf8.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(
        close_code(&mut bad_utf8, Duration::from_secs(5)).await,
        Some(1007)
    );

    // Raw garbage where a frame should be: a broken WebSocket protocol.
    let mut garbage = instance.client().await;
    {
        use tokio::io::AsyncWriteExt;
        let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = garbage.get_mut() else {
            panic!("plain tcp expected")
        };
        // Reserved opcode 0x3 with reserved bits set: no valid client sends this.
        tcp.write_all(&[0xf3, 0x85, 1, 2, 3, 4, 5, 6, 7, 8, 9])
            .await
            .unwrap();
    }
    assert_eq!(
        close_code(&mut garbage, Duration::from_secs(5)).await,
        Some(1002)
    );

    // Text on the tutorial route is read and ignored.
    let mut chatty = instance.client().await;
    chatty.send(Message::text("ping")).await.unwrap();

    instance.publish("still here").await;
    assert_eq!(next_text(&mut bystander).await, "still here");
    assert_eq!(next_text(&mut chatty).await, "still here");
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed_with_4001() {
    let config = GatewayConfig {
        ping_interval: Duration::from_millis(100),
        pong_timeout: Duration::from_millis(100),
        ..GatewayConfig::default()
    };
    let instance = Instance::start(config).await;
    let mut silent = instance.client().await;
    // Not polling the socket means the client library sends no pongs.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        close_code(&mut silent, Duration::from_secs(5)).await,
        Some(4001)
    );
}

#[tokio::test]
async fn a_client_that_answers_pings_stays() {
    let config = GatewayConfig {
        ping_interval: Duration::from_millis(100),
        pong_timeout: Duration::from_millis(100),
        ..GatewayConfig::default()
    };
    let instance = Instance::start(config).await;
    let mut alive = instance.client().await;
    // Reading answers pings; several ping periods pass without a close.
    assert_quiet(&mut alive, Duration::from_millis(800)).await;
    instance.publish("still connected").await;
    assert_eq!(next_text(&mut alive).await, "still connected");
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_with_4003() {
    let config = GatewayConfig {
        max_connections: 2,
        ..GatewayConfig::default()
    };
    let instance = Instance::start(config).await;
    let mut first = instance.client().await;
    let _second = instance.client().await;
    let mut third = connect(&instance.url).await;
    assert_eq!(
        close_code(&mut third, Duration::from_secs(5)).await,
        Some(4003)
    );
    instance.publish("for the first two").await;
    assert_eq!(next_text(&mut first).await, "for the first two");
}

#[tokio::test]
async fn shutdown_closes_every_client_with_1001_and_returns() {
    let instance = Instance::start(GatewayConfig::default()).await;
    let mut a = instance.client().await;
    let mut b = instance.client().await;
    instance.shutdown.cancel();
    assert_eq!(close_code(&mut a, Duration::from_secs(5)).await, Some(1001));
    assert_eq!(close_code(&mut b, Duration::from_secs(5)).await, Some(1001));
    tokio::time::timeout(Duration::from_secs(10), instance.served)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn plain_http_on_the_websocket_route_gets_a_json_error() {
    let instance = Instance::start(GatewayConfig::default()).await;
    let http = instance.url.replace("ws://", "http://");
    let response = reqwest::get(&http).await.unwrap();
    assert_eq!(response.status().as_u16(), 426);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "websocket_upgrade_required");

    let response = reqwest::Client::new().post(&http).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
}

#[tokio::test]
async fn garbage_on_the_herald_protocol_closes_only_the_sender() {
    use rand::{Rng, SeedableRng};
    let instance = Instance::start(GatewayConfig {
        client_frame_rate: 1000,
        ..GatewayConfig::default()
    })
    .await;
    let herald_url = instance.url.replace("/ws/notifications", "/ws");
    let mut bystander = instance.client().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut inputs: Vec<String> = [
        "",
        "{",
        "null",
        "[]",
        "{\"type\":1}",
        "{\"type\":\"subscribe\",\"channels\":\"x\"}",
        "{\"type\":\"subscribe\",\"channels\":[{\"channel\":1}]}",
        "{\"type\":\"unsubscribe\"}",
        "{\"type\":\"ping\",\"id\":-1}",
        "{\"type\":\"ping\",\"id\":1e400}",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    for _ in 0..40 {
        let len = rng.random_range(0..300);
        inputs.push(
            (0..len)
                .map(|_| char::from(rng.random_range(0x20u8..0x7f)))
                .collect(),
        );
    }
    for input in inputs {
        let mut ws = connect(&herald_url).await;
        assert!(
            matches!(next_seen(&mut ws, Duration::from_secs(5)).await.unwrap(), Seen::Text(t) if t.contains("\"connected\""))
        );
        ws.send(Message::text(input.clone())).await.unwrap();
        assert_eq!(
            close_code(&mut ws, Duration::from_secs(5)).await,
            Some(4002),
            "input {input:?}"
        );
    }
    instance.publish("still served").await;
    assert_eq!(next_text(&mut bystander).await, "still served");
}

#[tokio::test]
async fn metrics_count_connections_deliveries_and_closes() {
    let instance = Instance::start(GatewayConfig {
        max_client_message_bytes: 1024,
        ..GatewayConfig::default()
    })
    .await;
    let mut reader = instance.client().await;
    let mut too_big = instance.client().await;
    too_big.send(Message::text("y".repeat(4096))).await.unwrap();
    assert_eq!(
        close_code(&mut too_big, Duration::from_secs(5)).await,
        Some(1009)
    );
    instance.publish("counted").await;
    assert_eq!(next_text(&mut reader).await, "counted");

    let url = instance
        .url
        .replace("ws://", "http://")
        .replace("/ws/notifications", "/metrics");
    let value = |body: &str, name: &str| {
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    // The refused client's task finishes its closing handshake just after the client saw the code.
    let mut body = String::new();
    for _ in 0..200 {
        body = reqwest::get(&url).await.unwrap().text().await.unwrap();
        if value(&body, "herald_connections ").as_deref() == Some("1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let value = |name: &str| value(&body, name);
    assert_eq!(value("herald_connections ").as_deref(), Some("1"), "{body}");
    assert_eq!(
        value("herald_messages_total ").as_deref(),
        Some("1"),
        "{body}"
    );
    assert_eq!(
        value("herald_deliveries_total ").as_deref(),
        Some("1"),
        "{body}"
    );
    assert_eq!(
        value("herald_broker_connected ").as_deref(),
        Some("1"),
        "{body}"
    );
    assert_eq!(
        value("herald_closes_total{code=\"1009\"}").as_deref(),
        Some("1"),
        "{body}"
    );
    assert_eq!(
        value("herald_closes_total{code=\"4000\"}").as_deref(),
        Some("0"),
        "{body}"
    );
}

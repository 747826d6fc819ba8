//! The outbox relay with real Redis, and the whole pipeline end to end.
//!
//! Content → outbox → relay → `herald:domain-events` (a real `redis-server`)
//! → notifier → Redis Pub/Sub, and the one-process demo's in-memory version
//! of the same path.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use herald_broker::{Broker, BusEvent, MemoryBroker};
use herald_content::{ContentService, RelayConfig};
use herald_notifier::stream_consumer::ensure_group;
use herald_notifier::{
    CONSUMER_GROUP, DOMAIN_EVENTS_STREAM, MemoryEventLog, NotifierConfig, RedisEventLog,
    run_memory_consumer,
};
use herald_protocol::ChannelName;
use herald_testkit::RedisServer;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use common::{TempDir, create, scenarios::quick_relay};

async fn stream_events(conn: &mut redis::aio::MultiplexedConnection) -> Vec<Value> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(DOMAIN_EVENTS_STREAM)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    reply
        .ids
        .into_iter()
        .map(|entry| {
            serde_json::from_str(
                &redis::from_redis_value::<String>(entry.map["event"].clone()).unwrap(),
            )
            .unwrap()
        })
        .collect()
}

async fn wait_for_stream(conn: &mut redis::aio::MultiplexedConnection, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let events = stream_events(conn).await;
        if events.len() >= n || tokio::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn the_relay_delivers_outbox_events_to_the_redis_stream() {
    let redis = RedisServer::start().await;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let dir = TempDir::new("relay");
    let service = ContentService::open(
        &dir.sqlite_url(),
        Arc::new(RedisEventLog::open(&redis.url()).unwrap()),
        quick_relay(),
    )
    .await
    .unwrap();
    let router = service.router();
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(create(&router, &format!("news {i}"), "b").await);
    }

    let events = wait_for_stream(&mut conn, 5).await;
    assert_eq!(events.len(), 5);
    for (event, content) in events.iter().zip(&created) {
        assert_eq!(event["type"], "content.created");
        for field in ["id", "title", "body", "created_at"] {
            assert_eq!(event[field], content[field]);
        }
        assert!(!event["event_id"].as_str().unwrap().is_empty());
    }
    assert_eq!(service.store().outbox_backlog().await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        stream_events(&mut conn).await.len(),
        5,
        "delivered rows are not relayed again"
    );
    service.shutdown().await;
}

#[tokio::test]
async fn the_relay_waits_out_a_redis_outage() {
    let port = herald_testkit::free_port();
    let dir = TempDir::new("outage");
    let log = RedisEventLog::open(&format!("redis://127.0.0.1:{port}")).unwrap();
    let relay = RelayConfig {
        retry_max: Duration::from_millis(300),
        ..quick_relay()
    };
    let service = ContentService::open(&dir.sqlite_url(), Arc::new(log), relay)
        .await
        .unwrap();
    let created = create(&service.router(), "while redis is down", "").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        service.store().outbox_backlog().await.unwrap(),
        1,
        "the event waits in the outbox"
    );

    let redis = RedisServer::start_on(port).await;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let events = wait_for_stream(&mut conn, 1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"], created["id"]);
    service.shutdown().await;
}

#[tokio::test]
async fn content_created_reaches_pubsub_subscribers_through_the_notifier() {
    let redis = RedisServer::start().await;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    ensure_group(&mut conn, CONSUMER_GROUP).await.unwrap();
    let mut pubsub = redis::Client::open(redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe(&["events", "news:content"]).await.unwrap();
    let mut messages = pubsub.into_on_message();

    let cancel = CancellationToken::new();
    let notifier = tokio::spawn(herald_notifier::run(
        NotifierConfig::new(redis.url(), "e2e"),
        cancel.clone(),
    ));
    let dir = TempDir::new("e2e");
    let service = ContentService::open(
        &dir.sqlite_url(),
        Arc::new(RedisEventLog::open(&redis.url()).unwrap()),
        quick_relay(),
    )
    .await
    .unwrap();
    let created = create(&service.router(), "Tutorial", "as in the article").await;

    let mut got = Vec::new();
    for _ in 0..2 {
        let msg = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .unwrap()
            .unwrap();
        // `news:content` keeps history, so it travels enveloped with its position; `events` is raw.
        let payload = msg.get_payload_bytes();
        let text = match herald_protocol::envelope::open(payload) {
            Some((header, data)) => {
                assert!(
                    header.position().is_some(),
                    "news:content carries a history position"
                );
                String::from_utf8(data.to_vec()).unwrap()
            }
            None => String::from_utf8(payload.to_vec()).unwrap(),
        };
        got.push((msg.get_channel_name().to_owned(), text));
    }
    got.sort();
    assert_eq!(
        got[0],
        (
            "events".to_owned(),
            "Content published: Tutorial".to_owned()
        )
    );
    let structured: Value = serde_json::from_str(&got[1].1).unwrap();
    assert_eq!(got[1].0, "news:content");
    assert_eq!(structured["id"], created["id"]);
    assert_eq!(structured["created_at"], created["created_at"]);

    service.shutdown().await;
    cancel.cancel();
    notifier.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_one_process_demo_path_works_without_redis() {
    let (bus, mut inbox) = MemoryBroker::new();
    let events_channel = ChannelName::new("events").unwrap();
    bus.subscribe(&events_channel);
    bus.until_subscribed(&events_channel).await.unwrap();
    let (log, events) = MemoryEventLog::channel(16);
    let cancel = CancellationToken::new();
    let consumer = tokio::spawn(run_memory_consumer(events, Arc::new(bus), cancel.clone()));

    let dir = TempDir::new("demo");
    let service = ContentService::open(&dir.sqlite_url(), Arc::new(log), quick_relay())
        .await
        .unwrap();
    create(&service.router(), "In one process", "").await;
    let event = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
        .await
        .unwrap()
        .unwrap();
    let BusEvent::Message(message) = event else {
        panic!("expected a message, got {event:?}");
    };
    assert_eq!(message.channel, events_channel);
    assert_eq!(&message.payload[..], b"Content published: In one process");

    service.shutdown().await;
    cancel.cancel();
    consumer.await.unwrap();
}

#[tokio::test]
async fn serve_refuses_an_in_memory_event_log() {
    let dir = TempDir::new("serve");
    let config = herald_content::ContentConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        "memory://",
        dir.sqlite_url(),
    );
    let err = herald_content::serve(config, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("redis://"), "{err}");
}

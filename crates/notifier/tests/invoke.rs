//! The HTTP trigger and the in-process runtime, with real brokers.
//!
//! `POST /invoke` is driven two ways: through the router with the in-process
//! broker (status codes and bodies), and over a real socket of a running
//! notifier whose broker is a real `redis-server` (the wiring). The in-memory
//! event log is drained by the memory consumer into the in-process broker.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::StreamExt;
use herald_broker::{Broker, BusEvent, Inbox, MemoryBroker};
use herald_notifier::{
    ApiKeys, ContentCreated, EventLog, MemoryEventLog, Notifier, NotifierConfig, NotifierError,
    invoke, run_memory_consumer,
};
use herald_protocol::ChannelName;
use herald_testkit::RedisServer;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

fn created(i: usize) -> ContentCreated {
    ContentCreated {
        id: format!("c{i}"),
        title: format!("title {i}"),
        body: "body".into(),
        created_at: "2026-01-01T00:00:00Z".into(),
        event_id: format!("e{i}"),
    }
}

async fn subscribed_memory_broker() -> (Arc<MemoryBroker>, Inbox) {
    let (broker, inbox) = MemoryBroker::new();
    for name in ["events", "news:content"] {
        let channel = ChannelName::new(name).unwrap();
        broker.subscribe(&channel);
        broker.until_subscribed(&channel).await.unwrap();
    }
    (Arc::new(broker), inbox)
}

const KEY: &str = "invoke-test-key";

/// The router with one key, as `herald notifier --api-key` serves it.
fn keyed_router(broker: Arc<MemoryBroker>) -> axum::Router {
    invoke::router(broker, ApiKeys::new([KEY]))
}

async fn post(router: axum::Router, body: &str) -> (StatusCode, Value) {
    post_with(router, body, Some(&format!("Bearer {KEY}"))).await
}

async fn post_with(
    router: axum::Router,
    body: &str,
    authorization: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::post("/invoke").header("content-type", "application/json");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let request = request.body(Body::from(body.to_owned())).unwrap();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn text(event: &BusEvent) -> (String, String) {
    let BusEvent::Message(message) = event else {
        panic!("expected a message, got {event:?}");
    };
    (
        message.channel.to_string(),
        String::from_utf8(message.payload.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn invoke_publishes_and_lists_the_notifications() {
    let (broker, mut inbox) = subscribed_memory_broker().await;
    let router = keyed_router(broker.clone());

    let (status, body) = post(router.clone(), &created(1).to_json()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["notifications"][0],
        json!({"channel": "events", "payload": "Content published: title 1"})
    );
    assert_eq!(body["notifications"][1]["channel"], "news:content");
    assert_eq!(
        text(&inbox.recv().await.unwrap()),
        ("events".to_owned(), "Content published: title 1".to_owned())
    );
    let (channel, payload) = text(&inbox.recv().await.unwrap());
    assert_eq!(channel, "news:content");
    assert_eq!(
        serde_json::from_str::<Value>(&payload).unwrap(),
        json!({"type":"content.created","id":"c1","title":"title 1","created_at":"2026-01-01T00:00:00Z"})
    );

    let (status, body) = post(router.clone(), r#"{"type":"user.deleted"}"#).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"notifications": []}))
    );
    assert!(inbox.try_recv().is_err());
}

#[tokio::test]
async fn invoke_refuses_what_it_cannot_handle() {
    let (broker, mut inbox) = subscribed_memory_broker().await;
    let router = keyed_router(broker.clone());

    let (status, body) = post(
        router.clone(),
        r#"{"type":"content.created","id":"c","created_at":"x"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "rejected");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("\"title\" is missing")
    );

    let (status, body) = post(router.clone(), r#"{"id":"no type"}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["reason"].as_str().unwrap().contains("\"type\""));

    let (status, body) = post(router.clone(), "not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "bad_request");
    assert!(
        inbox.try_recv().is_err(),
        "nothing is published for a refused event"
    );

    broker.shutdown().await;
    let (status, body) = post(router, &created(2).to_json()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "unavailable");
}

/// A bare HTTP/1.1 request over a real socket; returns the status code and body.
async fn http_post(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, Value) {
    http_post_with(
        addr,
        path,
        body,
        &format!("Authorization: Bearer {KEY}\r\n"),
    )
    .await
}

/// [`http_post`] with `extra` header lines (each ending in CRLF) instead of the key.
async fn http_post_with(
    addr: std::net::SocketAddr,
    path: &str,
    body: &str,
    extra: &str,
) -> (u16, Value) {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(body).unwrap())
}

#[tokio::test]
async fn a_running_notifier_serves_invoke_and_publishes_to_redis() {
    let redis = RedisServer::start().await;
    let mut pubsub = redis::Client::open(redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe("events").await.unwrap();
    let mut messages = pubsub.into_on_message();

    let mut config = NotifierConfig::new(redis.url(), "invoker");
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    config.invoke_keys = ApiKeys::new([KEY]);
    let notifier = Notifier::bind(config).await.unwrap();
    let addr = notifier.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let running = tokio::spawn(notifier.run(cancel.clone()));

    let (status, body) = http_post(addr, "/invoke", &created(7).to_json()).await;
    assert_eq!(status, 200);
    assert_eq!(body["notifications"].as_array().unwrap().len(), 2);
    let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        message.get_payload::<String>().unwrap(),
        "Content published: title 7"
    );

    let (status, body) = http_post(addr, "/invoke", "[]").await;
    assert_eq!((status, body["error"].as_str()), (422, Some("rejected")));

    // Over a real socket too, a caller without the key publishes nothing.
    let (status, body) = http_post_with(addr, "/invoke", &created(8).to_json(), "").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = http_post(addr, "/invoke", &created(9).to_json()).await;
    assert_eq!(status, 200);
    let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        message.get_payload::<String>().unwrap(),
        "Content published: title 9",
        "title 8 was never published"
    );

    cancel.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn invoke_refuses_callers_without_a_configured_key() {
    let (broker, mut inbox) = subscribed_memory_broker().await;
    let router = keyed_router(broker.clone());
    let event = created(3).to_json();
    for authorization in [
        None,
        Some("Bearer wrong-key"),
        Some(&*format!("Bearer {KEY}x")),
        Some(&*format!("Basic {KEY}")),
        Some("Bearer "),
    ] {
        let (status, body) = post_with(router.clone(), &event, authorization).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(body["error"], "unauthorized", "{authorization:?}");
        assert!(body["message"].is_string());
    }
    assert!(
        inbox.try_recv().is_err(),
        "a refused caller publishes nothing"
    );
    let (status, _) = post(router, &event).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        text(&inbox.recv().await.unwrap()).1,
        "Content published: title 3"
    );
}

#[tokio::test]
async fn invoke_bounds_the_body_and_the_title() {
    let (broker, mut inbox) = subscribed_memory_broker().await;
    let router = keyed_router(broker.clone());

    let mut huge = created(4);
    huge.body = "b".repeat(invoke::MAX_INVOKE_BYTES);
    let (status, body) = post(router.clone(), &huge.to_json()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "payload_too_large");

    let mut long_title = created(5);
    long_title.title = "t".repeat(herald_notifier::handler::MAX_TITLE_CHARS + 1);
    let (status, body) = post(router.clone(), &long_title.to_json()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "rejected");
    assert!(
        body["reason"].as_str().unwrap().contains("\"title\""),
        "{body}"
    );
    assert!(inbox.try_recv().is_err(), "nothing oversized is published");

    // The largest event the content service can write still fits.
    let mut largest = created(6);
    largest.title = "\u{1}".repeat(herald_notifier::handler::MAX_TITLE_CHARS);
    largest.body = "\u{1}".repeat(10_000);
    let json = largest.to_json();
    assert!(json.len() < invoke::MAX_INVOKE_BYTES, "{}", json.len());
    let (status, _) = post(router, &json).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_notifier_will_not_serve_an_open_invoke_by_accident() {
    let mut config = NotifierConfig::new("redis://127.0.0.1:1", "x");
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    let err = Notifier::bind(config.clone()).await.unwrap_err();
    assert!(matches!(err, NotifierError::InvokeWithoutKey), "{err}");
    assert!(err.to_string().contains("--api-key"), "{err}");
    assert!(err.to_string().contains("--insecure-open-invoke"), "{err}");
    config.invoke_keys = ApiKeys::new(["", " "]);
    assert!(matches!(
        Notifier::bind(config).await.unwrap_err(),
        NotifierError::InvokeWithoutKey
    ));
}

#[tokio::test]
async fn an_explicitly_open_invoke_serves_anyone() {
    let redis = RedisServer::start().await;
    let mut config = NotifierConfig::new(redis.url(), "open");
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    config.open_invoke = true;
    let notifier = Notifier::bind(config).await.unwrap();
    let addr = notifier.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let running = tokio::spawn(notifier.run(cancel.clone()));
    let (status, body) = http_post_with(addr, "/invoke", &created(1).to_json(), "").await;
    assert_eq!(status, 200, "{body}");
    cancel.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_notifier_refuses_a_memory_broker() {
    let err = Notifier::bind(NotifierConfig::new("memory://", "x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("redis://"), "{err}");
}

#[tokio::test]
async fn the_memory_consumer_publishes_log_events_and_skips_poison() {
    let (broker, mut inbox) = subscribed_memory_broker().await;
    let (log, events) = MemoryEventLog::channel(16);
    let cancel = CancellationToken::new();
    let consumer = tokio::spawn(run_memory_consumer(events, broker.clone(), cancel.clone()));

    log.append(&[
        created(1).to_json(),
        "poison".to_owned(),
        created(2).to_json(),
    ])
    .await
    .unwrap();
    let mut payloads = Vec::new();
    for _ in 0..4 {
        let message = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
            .await
            .unwrap()
            .unwrap();
        payloads.push(text(&message));
    }
    assert_eq!(payloads[0].1, "Content published: title 1");
    assert_eq!(payloads[2].1, "Content published: title 2");

    cancel.cancel();
    consumer.await.unwrap();

    // It also ends by itself once every writer is gone.
    let (log, events) = MemoryEventLog::channel(1);
    let consumer = tokio::spawn(run_memory_consumer(
        events,
        broker,
        CancellationToken::new(),
    ));
    drop(log);
    tokio::time::timeout(Duration::from_secs(5), consumer)
        .await
        .unwrap()
        .unwrap();
}

//! Persistence scenarios run against every backend (SQLite always, PostgreSQL where installed).
//!
//! Each takes a database URL of a fresh, empty database.

#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use herald_content::{ContentService, RelayConfig};
use herald_notifier::{MemoryEventLog, MemoryEvents};
use serde_json::Value;
use sqlx::Row;

use super::{create, send, walk};

/// A relay that polls often, so tests do not wait.
pub fn quick_relay() -> RelayConfig {
    RelayConfig {
        poll_interval: Duration::from_millis(50),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        ..RelayConfig::default()
    }
}

/// A service on `url` relaying into an in-memory log, and that log's reading end.
pub async fn open(url: &str) -> (ContentService, MemoryEvents) {
    let (log, events) = MemoryEventLog::channel(1024);
    let service = ContentService::open(url, Arc::new(log), quick_relay())
        .await
        .unwrap();
    (service, events)
}

/// Receives `n` events from the log, failing after 10 s.
pub async fn next_events(events: &mut MemoryEvents, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..n {
        let text = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("relay too slow")
            .unwrap();
        out.push(serde_json::from_str(&text).unwrap());
    }
    out
}

/// A raw connection to the same database, for looking at (and breaking) tables directly.
pub async fn raw(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap()
}

/// Content survives a restart: a new service on the same database serves it,
/// and events already relayed are not relayed again.
pub async fn persists_across_restart(url: &str) {
    let (first, mut events) = open(url).await;
    let router = first.router();
    let a = create(&router, "first", "one").await;
    let b = create(&router, "second", "two").await;
    let c = create(&router, "third", "").await;
    assert_eq!(next_events(&mut events, 3).await.len(), 3);
    first.shutdown().await;
    drop(first);

    let (second, mut events) = open(url).await;
    let router = second.router();
    for item in [&a, &b, &c] {
        let id = item["id"].as_str().unwrap();
        let (status, got) = send(&router, "GET", &format!("/api/content/{id}"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&got, item, "content must come back exactly as created");
    }
    let (_, page) = send(&router, "GET", "/api/content", None).await;
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            c["id"].as_str().unwrap(),
            b["id"].as_str().unwrap(),
            a["id"].as_str().unwrap()
        ]
    );
    assert!(page["next_cursor"].is_null());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.recv())
            .await
            .is_err(),
        "delivered events must not be relayed again"
    );
    assert_eq!(second.store().outbox_backlog().await.unwrap(), 0);
    second.shutdown().await;
}

/// The list is newest first, and following `next_cursor` visits every item once.
pub async fn paginates_newest_first(url: &str) {
    let (service, _events) = open(url).await;
    let router = service.router();
    let mut created = Vec::new();
    for i in 0..45 {
        created.push(
            create(&router, &format!("item {i}"), "").await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    created.reverse();
    for (limit, pages) in [(10, 5), (7, 7), (15, 3), (45, 1), (100, 1), (1, 45)] {
        let (ids, walked) = walk(&router, limit).await;
        assert_eq!(ids, created, "limit {limit}");
        // A page that ends exactly at the last item already says there is no next page.
        assert_eq!(walked, pages, "limit {limit}");
    }
    let (status, page) = send(&router, "GET", "/api/content", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 20, "default limit");

    // Content created while paging does not shift the pages already handed out.
    let (_, first) = send(&router, "GET", "/api/content?limit=10", None).await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    create(&router, "late", "").await;
    let (_, second) = send(
        &router,
        "GET",
        &format!("/api/content?limit=10&cursor={cursor}"),
        None,
    )
    .await;
    let second_ids: Vec<&str> = second["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        second_ids,
        created[10..20]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    service.shutdown().await;
}

/// Creating content writes its outbox row in the same transaction, and when
/// the outbox insert fails the content is not stored either.
pub async fn writes_the_outbox_in_the_same_transaction(url: &str) {
    let (service, mut events) = open(url).await;
    let router = service.router();
    let created = create(&router, "  Hello outbox  ", "body text").await;
    assert_eq!(created["title"], "Hello outbox");

    let db = raw(url).await;
    let row = sqlx::query("SELECT event_id, event_type, payload, created_at_us FROM outbox")
        .fetch_one(&db)
        .await
        .unwrap();
    let content_row = sqlx::query("SELECT created_at_us FROM content WHERE id = $1")
        .bind(created["id"].as_str().unwrap())
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("event_type"), "content.created");
    assert_eq!(
        row.get::<i64, _>("created_at_us"),
        content_row.get::<i64, _>("created_at_us"),
        "one transaction, one timestamp"
    );
    let payload: Value = serde_json::from_str(&row.get::<String, _>("payload")).unwrap();
    assert_eq!(payload["type"], "content.created");
    for field in ["id", "title", "body", "created_at"] {
        assert_eq!(payload[field], created[field], "{field}");
    }
    assert_eq!(
        payload["event_id"].as_str().unwrap(),
        row.get::<String, _>("event_id")
    );
    assert_eq!(
        next_events(&mut events, 1).await[0],
        payload,
        "the relay moves the row verbatim"
    );

    // Break the outbox: the content insert succeeds, the outbox insert fails, the transaction rolls back.
    sqlx::query("ALTER TABLE outbox RENAME TO outbox_gone")
        .execute(&db)
        .await
        .unwrap();
    let (status, error) = send(
        &router,
        "POST",
        "/api/content",
        Some(r#"{"title":"doomed","body":""}"#),
    )
    .await;
    assert!(
        status == StatusCode::INTERNAL_SERVER_ERROR || status == StatusCode::SERVICE_UNAVAILABLE,
        "{status} {error}"
    );
    assert!(
        error["error"].is_string() && error["message"].is_string(),
        "{error}"
    );
    sqlx::query("ALTER TABLE outbox_gone RENAME TO outbox")
        .execute(&db)
        .await
        .unwrap();

    let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM content")
        .fetch_one(&db)
        .await
        .unwrap()
        .get("n");
    assert_eq!(count, 1, "no content without its event");
    let (_, page) = send(&router, "GET", "/api/content", None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    // And the service is fine afterwards.
    create(&router, "after", "").await;
    assert_eq!(next_events(&mut events, 1).await[0]["title"], "after");
    db.close().await;
    service.shutdown().await;
}

/// Events whose relay failed stay in the outbox and are relayed after a restart.
pub async fn undelivered_events_survive_a_restart(url: &str) {
    let (log, events) = MemoryEventLog::channel(8);
    drop(events); // Nobody reads: every append fails.
    let first = ContentService::open(url, Arc::new(log), quick_relay())
        .await
        .unwrap();
    let created = create(&first.router(), "stranded", "").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(first.store().outbox_backlog().await.unwrap(), 1);
    first.shutdown().await;

    let (second, mut events) = open(url).await;
    let event = &next_events(&mut events, 1).await[0];
    assert_eq!(event["id"], created["id"]);
    second.shutdown().await;
}

//! The content API on SQLite: validation, persistence, pagination and the outbox.
//!
//! Every test uses a fresh SQLite file in its own temp directory (created by
//! the service, directory included) and drives the real router.

#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::scenarios;
use common::{TempDir, create, send};
use serde_json::{Value, json};

async fn expect_invalid(router: &axum::Router, body: Value, field: &str) {
    let (status, error) = send(router, "POST", "/api/content", Some(&body.to_string())).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{body} -> {error}"
    );
    assert_eq!(error["error"], "validation_failed");
    assert_eq!(error["field"], field, "{body} -> {error}");
    assert!(!error["message"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn create_validates_each_field() {
    let dir = TempDir::new("validate");
    let (service, _events) = scenarios::open(&dir.sqlite_url()).await;
    let router = service.router();

    expect_invalid(&router, json!({"body": "no title"}), "title").await;
    expect_invalid(&router, json!({"title": null}), "title").await;
    expect_invalid(&router, json!({"title": 42}), "title").await;
    expect_invalid(&router, json!({"title": ""}), "title").await;
    expect_invalid(&router, json!({"title": "   \t "}), "title").await;
    expect_invalid(&router, json!({"title": "x".repeat(201)}), "title").await;
    expect_invalid(&router, json!({"title": "ok", "body": 7}), "body").await;
    expect_invalid(
        &router,
        json!({"title": "ok", "body": "y".repeat(10_001)}),
        "body",
    )
    .await;

    // The limits are inclusive, and counted in characters.
    let at_limits = create(&router, &"é".repeat(200), &"ü".repeat(10_000)).await;
    assert_eq!(at_limits["title"].as_str().unwrap().chars().count(), 200);
    let (status, _) = send(
        &router,
        "POST",
        "/api/content",
        Some(r#"{"title":"no body"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "body is optional");

    for malformed in ["{", "not json", r#"["title"]"#, ""] {
        let (status, error) = send(&router, "POST", "/api/content", Some(malformed)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{malformed:?} -> {error}");
        assert_eq!(error["error"], "bad_request");
        assert!(error["message"].is_string());
    }
    let (_, page) = send(&router, "GET", "/api/content", None).await;
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        2,
        "nothing invalid was stored"
    );
    service.shutdown().await;
}

#[tokio::test]
async fn create_returns_the_stored_content() {
    let dir = TempDir::new("create");
    let (service, _events) = scenarios::open(&dir.sqlite_url()).await;
    let router = service.router();
    let created = create(&router, "Hello", "World").await;
    assert_eq!(created["title"], "Hello");
    assert_eq!(created["body"], "World");
    assert_eq!(created["id"].as_str().unwrap().len(), 36, "a UUID");
    let created_at = created["created_at"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(created_at, &time::format_description::well_known::Rfc3339)
            .is_ok(),
        "{created_at}"
    );
    assert!(created_at.ends_with('Z'));
    service.shutdown().await;
}

#[tokio::test]
async fn list_parameters_are_checked() {
    let dir = TempDir::new("params");
    let (service, _events) = scenarios::open(&dir.sqlite_url()).await;
    let router = service.router();
    for bad in ["0", "101", "-5", "abc", ""] {
        let (status, error) =
            send(&router, "GET", &format!("/api/content?limit={bad}"), None).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit={bad} -> {error}"
        );
        assert_eq!(error["field"], "limit");
        assert!(error["message"].as_str().unwrap().contains("1 to 100"));
    }
    for bad in ["xyz", "-1", "0"] {
        let (status, error) =
            send(&router, "GET", &format!("/api/content?cursor={bad}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "cursor={bad} -> {error}");
        assert_eq!(error["error"], "bad_request");
    }
    let (status, page) = send(&router, "GET", "/api/content?limit=100", None).await;
    assert_eq!(
        (status, page),
        (StatusCode::OK, json!({"items": [], "next_cursor": null}))
    );
    service.shutdown().await;
}

#[tokio::test]
async fn unknown_content_is_not_found() {
    let dir = TempDir::new("notfound");
    let (service, _events) = scenarios::open(&dir.sqlite_url()).await;
    let (status, body) = send(
        &service.router(),
        "GET",
        "/api/content/does-not-exist",
        None,
    )
    .await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"error": "not_found"}))
    );
    service.shutdown().await;
}

#[tokio::test]
async fn content_persists_across_a_restart() {
    let dir = TempDir::new("restart");
    scenarios::persists_across_restart(&dir.sqlite_url()).await;
    assert!(
        dir.path().join("data/herald.db").exists(),
        "the file and its directory were created"
    );
}

#[tokio::test]
async fn pagination_walks_every_item_newest_first() {
    let dir = TempDir::new("pages");
    scenarios::paginates_newest_first(&dir.sqlite_url()).await;
}

#[tokio::test]
async fn the_outbox_row_is_written_in_the_same_transaction() {
    let dir = TempDir::new("outbox");
    scenarios::writes_the_outbox_in_the_same_transaction(&dir.sqlite_url()).await;
}

#[tokio::test]
async fn undelivered_events_survive_a_restart() {
    let dir = TempDir::new("stranded");
    scenarios::undelivered_events_survive_a_restart(&dir.sqlite_url()).await;
}

//! The content API on SQLite: validation, persistence, pagination and the outbox.
//!
//! Every test uses a fresh SQLite file in its own temp directory (created by
//! the service, directory included) and drives the real router.

#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::scenarios;
use common::{TempDir, create, send, send_with};
use herald_content::api::MAX_REQUEST_BYTES;
use herald_notifier::ApiKeys;
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

#[tokio::test]
async fn with_keys_creating_needs_a_key_and_reading_does_not() {
    let dir = TempDir::new("keys");
    let (service, _events) = scenarios::open(&dir.sqlite_url()).await;
    let service = service.with_write_keys(ApiKeys::new(["content-key-1", "content-key-2"]));
    let router = service.router();
    let request = json!({"title": "keyed", "body": "b"}).to_string();

    for authorization in [
        None,
        Some("Bearer wrong"),
        Some("Bearer content-key-1x"),
        Some("content-key-1"),
        Some("Basic content-key-1"),
    ] {
        let (status, error) = send_with(
            &router,
            "POST",
            "/api/content",
            Some(&request),
            authorization,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(error["error"], "unauthorized", "{authorization:?}");
        assert!(error["message"].as_str().unwrap().contains("API key"));
    }
    // Refused before the body is looked at: even an invalid one gets 401, not 422.
    let (status, _) = send(&router, "POST", "/api/content", Some(r#"{"title":""}"#)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, page) = send(&router, "GET", "/api/content", None).await;
    assert_eq!(page["items"], json!([]), "nothing refused was stored");

    for key in ["content-key-1", "content-key-2"] {
        let (status, created) = send_with(
            &router,
            "POST",
            "/api/content",
            Some(&request),
            Some(&format!("Bearer {key}")),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
    }
    let (status, page) = send(&router, "GET", "/api/content", None).await;
    assert_eq!(status, StatusCode::OK, "reads stay open");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let id = items[0]["id"].as_str().unwrap();
    let (status, _) = send(&router, "GET", &format!("/api/content/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    service.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_the_largest_valid_one_fits() {
    let dir = TempDir::new("body-limit");
    let (service, _events) = scenarios::open(&dir.sqlite_url()).await;
    let router = service.router();

    // Valid fields, padded past the limit with a field the API ignores.
    let padding = "p".repeat(MAX_REQUEST_BYTES);
    let over = json!({"title": "t", "extra": padding}).to_string();
    let (status, error) = send(&router, "POST", "/api/content", Some(&over)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    assert_eq!(error["error"], "payload_too_large");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(&MAX_REQUEST_BYTES.to_string())
    );

    // Every character of both fields at its limit and escaped as \u0001 still fits.
    let largest = json!({"title": "\u{1}".repeat(200), "body": "\u{1}".repeat(10_000)}).to_string();
    assert!(largest.len() > 60_000 && largest.len() <= MAX_REQUEST_BYTES);
    let (status, created) = send(&router, "POST", "/api/content", Some(&largest)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (_, page) = send(&router, "GET", "/api/content", None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    service.shutdown().await;
}

//! The gateway's edge routes over real sockets: the content proxy in front of a
//! real content service (and in front of one that is down or slow), and the
//! built web app served next to the WebSocket.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::any;
use bytes::Bytes;
use herald_broker::{Broker, MemoryBroker};
use herald_content::{ContentService, RelayConfig};
use herald_gateway::edge::{ProxyConfig, content_proxy, content_proxy_with, web_app};
use herald_gateway::{Gateway, GatewayConfig};
use herald_notifier::{MemoryEventLog, MemoryEvents};
use herald_protocol::ChannelName;
use herald_testkit::{connect, free_port, next_text};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A router served on a loopback port until dropped.
struct Served {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Served {
    async fn start(router: Router) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .unwrap();
        });
        Served {
            addr,
            cancel,
            task: Some(task),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A real content service on `sqlite::memory:`, and the reading end of its event log.
async fn content_service() -> (ContentService, MemoryEvents, Served) {
    let (log, events) = MemoryEventLog::channel(64);
    let service = ContentService::open("sqlite::memory:", Arc::new(log), RelayConfig::default())
        .await
        .unwrap();
    let served = Served::start(service.router()).await;
    (service, events, served)
}

/// A gateway on the memory bus whose router is the gateway's own merged with `edge`.
struct EdgeGateway {
    broker: Arc<dyn Broker>,
    shutdown: CancellationToken,
    addr: SocketAddr,
    served: JoinHandle<std::io::Result<()>>,
}

impl EdgeGateway {
    async fn start(edge: Router) -> EdgeGateway {
        let (broker, inbox) = MemoryBroker::new();
        let broker: Arc<dyn Broker> = Arc::new(broker);
        let gateway = Gateway::new(GatewayConfig::default(), broker.clone(), inbox);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = gateway.shutdown_token();
        let router = gateway.router().merge(edge);
        let served = tokio::spawn(gateway.serve(listener, router));
        EdgeGateway {
            broker,
            shutdown,
            addr,
            served,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.served.await.unwrap().unwrap();
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn the_content_api_is_reachable_through_the_gateway() {
    let (service, mut events, upstream) = content_service().await;
    let gateway = EdgeGateway::start(content_proxy(&upstream.url("")).unwrap()).await;
    let client = http();

    let created = client
        .post(gateway.url("/api/content"))
        .json(&json!({"title": "Through the gateway", "body": "proxied"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    assert_eq!(
        created.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["title"], "Through the gateway");
    let id = created["id"].as_str().unwrap().to_owned();

    // The write went through the real service: its outbox relayed the domain event.
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    let event: Value = serde_json::from_str(&event).unwrap();
    assert_eq!(event["type"], "content.created");
    assert_eq!(event["title"], "Through the gateway");

    // The path below /api/content and the query string are forwarded.
    let (status, fetched) = json_of(
        client
            .get(gateway.url(&format!("/api/content/{id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, fetched["id"].as_str()), (200, Some(id.as_str())));
    client
        .post(gateway.url("/api/content"))
        .json(&json!({"title": "second"}))
        .send()
        .await
        .unwrap();
    let (status, page) = json_of(
        client
            .get(gateway.url("/api/content?limit=1"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["items"][0]["title"], "second");
    assert!(page["next_cursor"].is_string(), "{page}");

    // The upstream's errors pass through unchanged: status and body.
    let (status, error) = json_of(
        client
            .post(gateway.url("/api/content"))
            .json(&json!({"title": ""}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        (error["error"].as_str(), error["field"].as_str()),
        (Some("validation_failed"), Some("title"))
    );
    let (status, error) = json_of(
        client
            .get(gateway.url("/api/content/nope"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error["error"].as_str()), (404, Some("not_found")));
    let (status, _) = json_of(
        client
            .delete(gateway.url("/api/content"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 405, "the upstream decides which methods exist");

    // The gateway's own routes are untouched.
    let (status, health) = json_of(client.get(gateway.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));

    gateway.stop().await;
    upstream.stop().await;
    service.shutdown().await;
}

#[tokio::test]
async fn a_down_upstream_is_a_clean_502() {
    let port = free_port();
    let gateway =
        EdgeGateway::start(content_proxy(&format!("http://127.0.0.1:{port}")).unwrap()).await;
    let response = http()
        .post(gateway.url("/api/content"))
        .json(&json!({"title": "nobody home"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 502);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"], "upstream_unavailable", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    gateway.stop().await;
}

#[tokio::test]
async fn a_slow_upstream_is_a_504_after_the_timeout() {
    let slow = Served::start(Router::new().route(
        "/api/content",
        any(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "too late"
        }),
    ))
    .await;
    let config = ProxyConfig {
        timeout: Duration::from_millis(300),
        ..ProxyConfig::default()
    };
    let gateway = EdgeGateway::start(content_proxy_with(&slow.url(""), config).unwrap()).await;
    let started = std::time::Instant::now();
    let (status, error) = json_of(
        http()
            .get(gateway.url("/api/content"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (504, Some("upstream_timeout"))
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    gateway.stop().await;
}

#[tokio::test]
async fn the_proxy_forwards_method_body_query_and_end_to_end_headers_only() {
    // An upstream that describes what it received, and answers with a hop-by-hop header of its own.
    async fn echo(request: Request) -> axum::response::Response {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let headers: serde_json::Map<String, Value> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap())))
            .collect();
        let mut response_headers = HeaderMap::new();
        response_headers.insert("connection", "x-upstream-hop".parse().unwrap());
        response_headers.insert("x-upstream-hop", "1".parse().unwrap());
        response_headers.insert("x-upstream-end", "2".parse().unwrap());
        (
            axum::http::StatusCode::ACCEPTED,
            response_headers,
            axum::Json(json!({
                "method": parts.method.as_str(),
                "uri": parts.uri.to_string(),
                "body": String::from_utf8(body.to_vec()).unwrap(),
                "headers": headers,
            })),
        )
            .into_response()
    }
    let upstream = Served::start(
        Router::new()
            .route("/base/api/content", any(echo))
            .route("/base/api/content/{*rest}", any(echo)),
    )
    .await;
    let gateway = EdgeGateway::start(content_proxy(&upstream.url("/base/")).unwrap()).await;

    let response = http()
        .put(gateway.url("/api/content/a/b?x=1&y=two"))
        .header("connection", "x-client-hop")
        .header("x-client-hop", "secret")
        .header("x-client-end", "kept")
        .body(Bytes::from_static(b"raw body"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(response.headers()["x-upstream-end"], "2");
    assert!(response.headers().get("x-upstream-hop").is_none());
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["uri"], "/base/api/content/a/b?x=1&y=two");
    assert_eq!(seen["body"], "raw body");
    let headers = &seen["headers"];
    assert_eq!(headers["x-client-end"], "kept");
    assert!(headers.get("x-client-hop").is_none(), "{headers}");
    assert_eq!(headers["x-forwarded-host"], gateway.addr.to_string());
    assert_eq!(headers["content-length"], "8");

    // Other paths are not the proxy's.
    let status = http()
        .get(gateway.url("/api/other"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 404);
    gateway.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_before_the_upstream() {
    let (_service, _events, upstream) = content_service().await;
    let config = ProxyConfig {
        max_request_bytes: 64,
        ..ProxyConfig::default()
    };
    let gateway = EdgeGateway::start(content_proxy_with(&upstream.url(""), config).unwrap()).await;
    let (status, error) = json_of(
        http()
            .post(gateway.url("/api/content"))
            .json(&json!({"title": "x".repeat(200)}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (413, Some("payload_too_large"))
    );
    // Nothing reached the content service.
    let (_, page) = json_of(
        http()
            .get(upstream.url("/api/content"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0);
    gateway.stop().await;
}

#[test]
fn a_bad_upstream_url_is_refused() {
    for bad in ["127.0.0.1:8090", "https://content:8090", "not a url"] {
        let error = content_proxy(bad).err().unwrap();
        assert!(error.to_string().contains(bad), "{error}");
    }
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "herald-edge-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fake `web/dist`: an index page and two hashed assets.
fn built_app(dir: &Path) {
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><div id=\"root\"></div><script src=\"/assets/index-abc.js\"></script>",
    )
    .unwrap();
    std::fs::write(dir.join("assets/index-abc.js"), "console.log('herald')").unwrap();
    std::fs::write(dir.join("assets/index-abc.css"), "body{}").unwrap();
}

async fn fetch(url: &str) -> (u16, String, String, String) {
    let response = http().get(url).send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (content_type, cache) = (header("content-type"), header("cache-control"));
    let status = response.status().as_u16();
    (status, content_type, cache, response.text().await.unwrap())
}

#[tokio::test]
async fn the_built_app_is_served_with_content_types_and_a_spa_fallback() {
    let dir = TempDir::new("dist");
    built_app(dir.path());
    let gateway = EdgeGateway::start(web_app(dir.path().to_owned())).await;

    let (status, content_type, cache, body) = fetch(&gateway.url("/")).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert_eq!(cache, "no-cache");
    assert!(body.contains("id=\"root\""));

    let (status, content_type, cache, body) = fetch(&gateway.url("/assets/index-abc.js")).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/javascript"),
        "{content_type}"
    );
    assert!(cache.contains("immutable"), "{cache}");
    assert_eq!(body, "console.log('herald')");
    let (_, content_type, _, _) = fetch(&gateway.url("/assets/index-abc.css")).await;
    assert!(content_type.starts_with("text/css"), "{content_type}");

    // A client-side route gets the app's page; a missing file does not.
    let (status, content_type, _, body) = fetch(&gateway.url("/feed/recent")).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(body.contains("id=\"root\""));
    let (status, _, _, _) = fetch(&gateway.url("/assets/gone-123.js")).await;
    assert_eq!(status, 404);
    let (status, content_type, _, body) = fetch(&gateway.url("/api/unknown")).await;
    assert_eq!(status, 404);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert!(body.contains("not_found"), "{body}");

    // The gateway's own routes still win over the fallback, WebSocket included.
    let (status, _, _, body) = fetch(&gateway.url("/healthz")).await;
    assert_eq!(status, 200);
    assert!(body.contains("instance_id"), "{body}");
    let mut ws = connect(&format!("ws://{}/ws/notifications", gateway.addr)).await;
    let events = ChannelName::new("events").unwrap();
    gateway.broker.until_subscribed(&events).await.unwrap();
    gateway
        .broker
        .publish(&events, Bytes::from_static(b"Content published: hello"))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "Content published: hello");
    drop(ws);
    gateway.stop().await;
}

#[tokio::test]
async fn an_unbuilt_app_answers_with_how_to_build_it_until_it_is_built() {
    let dir = TempDir::new("unbuilt");
    let dist = dir.path().join("dist");
    let gateway = EdgeGateway::start(web_app(dist.clone())).await;

    let (status, content_type, _, body) = fetch(&gateway.url("/")).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(body.contains("npm ci &amp;&amp; npm run build"), "{body}");
    assert!(body.contains(&dist.display().to_string()), "{body}");
    let (status, _, _, _) = fetch(&gateway.url("/assets/index-abc.js")).await;
    assert_eq!(status, 404);

    // Building while the gateway runs is picked up on the next request.
    built_app(&dist);
    let (status, _, _, body) = fetch(&gateway.url("/")).await;
    assert_eq!(status, 200);
    assert!(body.contains("id=\"root\""), "{body}");
    gateway.stop().await;
}

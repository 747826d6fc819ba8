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
use herald_gateway::auth::Authenticator;
use herald_gateway::edge::{
    CONTENT_WRITE_ROLE, ProxyConfig, Writers, content_proxy, content_proxy_with, web_app,
};
use herald_gateway::peer::TrustedProxies;
use herald_gateway::{Gateway, GatewayConfig};
use herald_notifier::{ApiKeys, MemoryEventLog, MemoryEvents};
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
    // Generic: the upstream's address and the OS error are for the log, not for the client.
    assert_eq!(
        error,
        json!({"error": "upstream_unavailable", "message": "the content service is unavailable"})
    );
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
        error,
        json!({"error": "upstream_timeout", "message": "the content service did not answer in time"})
    );
    assert_eq!(status, 504);
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

/// Sends `request_head` (request line and headers, without the blank line) over a raw socket,
/// so paths reach the gateway byte for byte, as an attacker would send them (an HTTP client
/// library would resolve `..` first). Returns the status and the body as JSON (`Null` if not JSON).
async fn raw_request(addr: SocketAddr, request_head: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{request_head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// An upstream that records every path it is asked for, with an `/internal/secret` route
/// (at its root and below the proxy's `/prefix`) that the proxy must never reach.
async fn recording_upstream() -> (Served, Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let record = |seen: Arc<std::sync::Mutex<Vec<String>>>| {
        move |request: Request| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(request.uri().to_string());
                axum::Json(json!({"path": request.uri().path()}))
            }
        }
    };
    let upstream = Served::start(
        Router::new()
            .route("/internal/secret", any(record(seen.clone())))
            .route("/prefix/internal/secret", any(record(seen.clone())))
            .fallback(record(seen.clone())),
    )
    .await;
    (upstream, seen)
}

#[tokio::test]
async fn traversal_is_refused_before_the_upstream_and_cannot_escape_the_base() {
    let (upstream, seen) = recording_upstream().await;
    let gateway = EdgeGateway::start(content_proxy(&upstream.url("/prefix")).unwrap()).await;

    for path in [
        "/api/content/../../internal/secret",
        "/api/content/../../../internal/secret",
        "/api/content/..",
        "/api/content/./x",
        "/api/content/%2e%2e/%2e%2e/internal/secret",
        "/api/content/%2E%2e/%2e%2E/internal/secret",
        "/api/content/.%2e/.%2E/internal/secret",
        "/api/content/%2e./%2e./internal/secret",
        "/api/content/%2e",
        "/api/content/..%2f..%2finternal%2fsecret",
        "/api/content/..%2F..%2Finternal%2Fsecret",
        "/api/content/x%2f..%2f..%2finternal",
        "/api/content/..\\..\\internal\\secret",
        "/api/content/..%5c..%5cinternal%5csecret",
        "/api/content/..%5C..%5Cinternal",
    ] {
        for method in ["GET", "DELETE"] {
            let (status, body) =
                raw_request(gateway.addr, &format!("{method} {path} HTTP/1.1")).await;
            assert_eq!(status, 400, "{method} {path} -> {body}");
            assert_eq!(body["error"], "invalid_path", "{method} {path} -> {body}");
        }
    }
    assert_eq!(
        *seen.lock().unwrap(),
        Vec::<String>::new(),
        "nothing refused reached the upstream"
    );

    // What is not traversal is forwarded below the base, dots inside names included.
    for (path, expected) in [
        (
            "/api/content/abc?limit=1",
            "/prefix/api/content/abc?limit=1",
        ),
        ("/api/content/v1.2..3", "/prefix/api/content/v1.2..3"),
        ("/api/content/...", "/prefix/api/content/..."),
        ("/api/content", "/prefix/api/content"),
    ] {
        let (status, body) = raw_request(gateway.addr, &format!("GET {path} HTTP/1.1")).await;
        assert_eq!(status, 200, "{path} -> {body}");
        assert_eq!(
            seen.lock().unwrap().last().map(String::as_str),
            Some(expected)
        );
    }
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|path| path.starts_with("/prefix/api/content")),
        "{:?}",
        seen.lock().unwrap()
    );
    gateway.stop().await;
}

/// An upstream that answers with the headers it received.
async fn header_echo() -> Served {
    async fn echo(headers: HeaderMap) -> axum::Json<Value> {
        let mut seen = serde_json::Map::new();
        for name in headers.keys() {
            let values: Vec<&str> = headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            seen.insert(name.to_string(), json!(values.join(" | ")));
        }
        axum::Json(Value::Object(seen))
    }
    Served::start(Router::new().fallback(echo)).await
}

/// Asks the gateway, as a client that writes forwarding headers, cookies and a token of its own.
async fn headers_seen_upstream(gateway: &EdgeGateway) -> Value {
    let response = http()
        .post(gateway.url("/api/content"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6;proto=https")
        .header("x-real-ip", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .header("cookie", "session=secret-session")
        .header("authorization", "Bearer the-clients-own-token")
        .json(&json!({"title": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn forwarding_headers_come_from_the_real_peer_and_credentials_stay_at_the_gateway() {
    let upstream = header_echo().await;

    // Nobody trusted (the default): what the client wrote about itself is dropped.
    let config = ProxyConfig {
        upstream_api_key: Some("gateway-to-content-key".to_owned()),
        ..ProxyConfig::default()
    };
    let gateway = EdgeGateway::start(content_proxy_with(&upstream.url(""), config).unwrap()).await;
    let seen = headers_seen_upstream(&gateway).await;
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{seen}");
    assert_eq!(seen["x-forwarded-host"], gateway.addr.to_string(), "{seen}");
    assert_eq!(seen["x-forwarded-proto"], "http", "{seen}");
    assert!(seen.get("forwarded").is_none(), "{seen}");
    assert!(seen.get("x-real-ip").is_none(), "{seen}");
    assert!(seen.get("cookie").is_none(), "{seen}");
    assert_eq!(
        seen["authorization"], "Bearer gateway-to-content-key",
        "the gateway's key, never the client's token: {seen}"
    );
    gateway.stop().await;

    // Without an upstream key, no Authorization goes up at all.
    let gateway = EdgeGateway::start(content_proxy(&upstream.url("")).unwrap()).await;
    let seen = headers_seen_upstream(&gateway).await;
    assert!(seen.get("authorization").is_none(), "{seen}");
    gateway.stop().await;

    // The peer is a trusted proxy, and cookies are forwarded on purpose: both pass,
    // and the proxy appends the peer to the list it was given.
    let config = ProxyConfig {
        trusted_proxies: TrustedProxies::parse(["127.0.0.1"]).unwrap(),
        forward_cookies: true,
        ..ProxyConfig::default()
    };
    let gateway = EdgeGateway::start(content_proxy_with(&upstream.url(""), config).unwrap()).await;
    let seen = headers_seen_upstream(&gateway).await;
    assert_eq!(seen["x-forwarded-for"], "6.6.6.6, 127.0.0.1", "{seen}");
    assert_eq!(seen["forwarded"], "for=6.6.6.6;proto=https", "{seen}");
    assert_eq!(seen["x-real-ip"], "6.6.6.6", "{seen}");
    assert_eq!(seen["x-forwarded-host"], "evil.example", "{seen}");
    assert_eq!(seen["x-forwarded-proto"], "https", "{seen}");
    assert_eq!(seen["cookie"], "session=secret-session", "{seen}");
    assert!(seen.get("authorization").is_none(), "{seen}");
    gateway.stop().await;
}

const JWT_SECRET: &[u8] = b"edge-test-secret-of-32-bytes-ok!";

fn jwt(claims: Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn with_jwt_auth_a_write_needs_the_content_write_role_or_an_api_key() {
    // A content service that only the gateway's key may write to.
    let (log, _events) = MemoryEventLog::channel(64);
    let service = ContentService::open("sqlite::memory:", Arc::new(log), RelayConfig::default())
        .await
        .unwrap()
        .with_write_keys(ApiKeys::new(["gateway-to-content-key"]));
    let upstream = Served::start(service.router()).await;
    let config = ProxyConfig {
        writers: Writers {
            auth: Arc::new(Authenticator::hs256(JWT_SECRET).unwrap()),
            api_keys: vec!["publisher-key".to_owned()],
        },
        upstream_api_key: Some("gateway-to-content-key".to_owned()),
        ..ProxyConfig::default()
    };
    let gateway = EdgeGateway::start(content_proxy_with(&upstream.url(""), config).unwrap()).await;
    let post = |authorization: Option<String>| {
        let mut request = http()
            .post(gateway.url("/api/content"))
            .json(&json!({"title": "written"}));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        async move { json_of(request.send().await.unwrap()).await }
    };
    let in_an_hour = unix_now() + 3600;
    let reader = jwt(
        json!({"sub": "u1", "exp": in_an_hour, "roles": ["reader"]}),
        JWT_SECRET,
    );
    let expired = jwt(
        json!({"sub": "u1", "exp": unix_now() - 60, "roles": [CONTENT_WRITE_ROLE]}),
        JWT_SECRET,
    );
    let forged = jwt(
        json!({"sub": "u1", "roles": [CONTENT_WRITE_ROLE]}),
        b"another-secret-of-32-bytes-long!",
    );
    let editor = jwt(
        json!({"sub": "u2", "exp": in_an_hour, "roles": ["reader", CONTENT_WRITE_ROLE]}),
        JWT_SECRET,
    );

    for (authorization, status, code) in [
        (None, 401, "unauthorized"),
        (Some(format!("Bearer {reader}")), 403, "forbidden"),
        (Some(format!("Bearer {expired}")), 401, "token_expired"),
        (Some(format!("Bearer {forged}")), 401, "unauthorized"),
        (Some("Bearer not-a-key".to_owned()), 401, "unauthorized"),
        // The content service's key is not a gateway credential.
        (
            Some("Bearer gateway-to-content-key".to_owned()),
            401,
            "unauthorized",
        ),
    ] {
        let (got, error) = post(authorization.clone()).await;
        assert_eq!(
            (got, error["error"].as_str()),
            (status, Some(code)),
            "{authorization:?} -> {error}"
        );
    }
    let (_, page) = json_of(
        http()
            .get(gateway.url("/api/content"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(page["items"], json!([]), "nothing refused was stored");

    let (status, created) = post(Some(format!("Bearer {editor}"))).await;
    assert_eq!(status, 201, "{created}");
    let (status, created) = post(Some("Bearer publisher-key".to_owned())).await;
    assert_eq!(status, 201, "{created}");

    // Reads need nothing; the content service itself refuses writes without its key.
    let (status, page) = json_of(
        http()
            .get(gateway.url("/api/content"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, page["items"].as_array().unwrap().len()), (200, 2));
    let (status, error) = json_of(
        http()
            .post(upstream.url("/api/content"))
            .header("authorization", format!("Bearer {editor}"))
            .json(&json!({"title": "direct"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (401, Some("unauthorized"))
    );

    gateway.stop().await;
    upstream.stop().await;
    service.shutdown().await;
}

#[tokio::test]
async fn without_jwt_auth_anyone_writes_through_a_keyed_upstream() {
    // The demo's and the tutorial's shape: no user auth, a content service closed to
    // everyone but the gateway — the web app's anonymous form keeps working.
    let (log, _events) = MemoryEventLog::channel(64);
    let service = ContentService::open("sqlite::memory:", Arc::new(log), RelayConfig::default())
        .await
        .unwrap()
        .with_write_keys(ApiKeys::new(["gateway-to-content-key"]));
    let upstream = Served::start(service.router()).await;
    let config = ProxyConfig {
        upstream_api_key: Some("gateway-to-content-key".to_owned()),
        ..ProxyConfig::default()
    };
    let gateway = EdgeGateway::start(content_proxy_with(&upstream.url(""), config).unwrap()).await;
    let (status, created) = json_of(
        http()
            .post(gateway.url("/api/content"))
            .json(&json!({"title": "anonymous"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    gateway.stop().await;
    upstream.stop().await;
    service.shutdown().await;
}

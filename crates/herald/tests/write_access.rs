//! Who may write, through the real binary: the flags of `herald content`,
//! `herald gateway`, `herald notifier` and `herald demo` that close content
//! creation and `/invoke`, and the demo that stays open and says so.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_testkit::{ChildProcess, GatewayProcess, RedisServer, free_port, get, post_json};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

fn herald() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_herald"))
}

const SECRET: &str = "write-access-test-secret-32bytes";
const CONTENT_KEY: &str = "gateway-to-content";

fn token(roles: &[&str]) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "u1", "exp": exp, "roles": roles}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "herald-write-{label}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn a_keyed_content_service_behind_a_jwt_gateway_takes_writes_from_editors_only() {
    let dir = TempDir::new("cluster");
    let redis = RedisServer::start().await;
    let content_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let database = format!("sqlite://{}/herald.db", dir.0.display());
    let mut content = ChildProcess::start(
        herald(),
        "content",
        &[
            "content",
            "--listen",
            &content_addr.to_string(),
            "--broker",
            &redis.url(),
            "--database",
            &database,
            "--api-key",
            CONTENT_KEY,
        ],
    );
    content
        .wait_http(content_addr, "/api/content?limit=1", 200)
        .await;
    let upstream = format!("http://{content_addr}");
    let gateway = GatewayProcess::start(
        herald(),
        "memory://",
        "w",
        &[
            "--jwt-secret",
            SECRET,
            "--content-upstream",
            &upstream,
            "--content-api-key",
            CONTENT_KEY,
        ],
    )
    .await;
    let item = json!({"title": "through the gateway"});

    let (status, error) = post_json(content_addr, "/api/content", None, &item).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, error) = post_json(gateway.addr, "/api/content", None, &item).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let reader = token(&["reader"]);
    let (status, error) = post_json(gateway.addr, "/api/content", Some(&reader), &item).await;
    assert_eq!((status, error["error"].as_str()), (403, Some("forbidden")));

    let editor = token(&["content:write"]);
    let (status, created) = post_json(gateway.addr, "/api/content", Some(&editor), &item).await;
    assert_eq!(status, 201, "{created}");
    let (status, created) = post_json(content_addr, "/api/content", Some(CONTENT_KEY), &item).await;
    assert_eq!(status, 201, "{created}");
    let (status, page) = get(gateway.addr, "/api/content").await.unwrap();
    assert_eq!((status, page["items"].as_array().unwrap().len()), (200, 2));
}

#[tokio::test]
async fn the_notifier_will_not_serve_an_open_invoke_unless_told_to() {
    let listen = format!("127.0.0.1:{}", free_port());
    let output = tokio::process::Command::new(herald())
        .args([
            "notifier",
            "--broker",
            "redis://127.0.0.1:1",
            "--listen",
            &listen,
        ])
        .env("HERALD_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--api-key"), "{stderr}");
    assert!(stderr.contains("--insecure-open-invoke"), "{stderr}");
}

/// A running `herald demo` whose stdout is read line by line. Killed on drop.
struct Demo {
    child: tokio::process::Child,
    addr: SocketAddr,
    banner: Vec<String>,
}

impl Demo {
    /// Starts the demo on a free port and reads its banner up to the blank line that ends it.
    async fn start(dir: &TempDir, extra: &[&str]) -> Demo {
        let database = format!("sqlite://{}/demo-{}.db", dir.0.display(), free_port());
        let web_dir = dir.0.join("no-dist");
        let mut child = tokio::process::Command::new(herald())
            .args([
                "demo",
                "--listen",
                "127.0.0.1:0",
                "--no-web-build",
                "--database",
            ])
            .arg(&database)
            .arg("--web-dir")
            .arg(&web_dir)
            .args(extra)
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut banner = Vec::new();
        let mut addr = None;
        let read = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.trim().strip_prefix("Herald demo is running: http://") {
                    addr = Some(url.trim_end_matches('/').parse().unwrap());
                }
                let blank_after_banner =
                    line.trim().is_empty() && addr.is_some() && banner.len() > 2;
                banner.push(line);
                if blank_after_banner {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .unwrap();
        let addr = addr.unwrap_or_else(|| panic!("no URL in {banner:?}"));
        Demo {
            child,
            addr,
            banner,
        }
    }
}

#[tokio::test]
async fn the_demo_stays_open_and_says_so_and_a_key_closes_it() {
    let dir = TempDir::new("demo");
    let mut demo = Demo::start(&dir, &[]).await;
    let open = demo
        .banner
        .iter()
        .filter(|line| line.contains("Content creation is OPEN"))
        .count();
    assert_eq!(open, 1, "{:#?}", demo.banner);
    assert!(
        demo.banner
            .iter()
            .any(|line| line.contains("--content-api-key")),
        "{:#?}",
        demo.banner
    );
    let (status, created) =
        post_json(demo.addr, "/api/content", None, &json!({"title": "anyone"})).await;
    assert_eq!(status, 201, "{created}");
    demo.child.kill().await.unwrap();

    let mut demo = Demo::start(&dir, &["--content-api-key", "demo-key"]).await;
    assert!(
        !demo.banner.iter().any(|line| line.contains("OPEN")),
        "{:#?}",
        demo.banner
    );
    let item = json!({"title": "keyed"});
    let (status, error) = post_json(demo.addr, "/api/content", None, &item).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, created) = post_json(demo.addr, "/api/content", Some("demo-key"), &item).await;
    assert_eq!(status, 201, "{created}");
    demo.child.kill().await.unwrap();
}

//! Helpers shared by the content service's integration tests: temporary
//! directories, driving the router, and a throwaway PostgreSQL server.

#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

pub mod scenarios;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let unique = format!(
            "herald-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A SQLite URL for a database file inside a not-yet-existing subdirectory.
    pub fn sqlite_url(&self) -> String {
        format!("sqlite://{}/data/herald.db", self.0.display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends one request to the router; returns the status and the JSON body (`Null` if empty).
pub async fn send(
    router: &Router,
    method: &str,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    send_with(router, method, uri, body, None).await
}

/// [`send`] with an `Authorization` header.
pub async fn send_with(
    router: &Router,
    method: &str,
    uri: &str,
    body: Option<&str>,
    authorization: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, json)
}

/// Creates content and returns the response body, asserting 201.
pub async fn create(router: &Router, title: &str, body: &str) -> Value {
    let request = serde_json::json!({"title": title, "body": body}).to_string();
    let (status, json) = send(router, "POST", "/api/content", Some(&request)).await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    json
}

/// Pages through the whole list with `limit`; returns the ids in order and the number of pages.
pub async fn walk(router: &Router, limit: u32) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/api/content?limit={limit}&cursor={c}"),
            None => format!("/api/content?limit={limit}"),
        };
        let (status, page) = send(router, "GET", &uri, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit as usize);
        ids.extend(
            items
                .iter()
                .map(|item| item["id"].as_str().unwrap().to_owned()),
        );
        match &page["next_cursor"] {
            Value::String(next) => cursor = Some(next.clone()),
            Value::Null => return (ids, pages),
            other => panic!("next_cursor must be a string or null, got {other}"),
        }
        assert!(pages < 1000, "pagination does not end");
    }
}

/// A PostgreSQL server of its own, in a temp dir, on a free port; stopped on drop.
pub struct Postgres {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Postgres {
    /// Starts one. Fails, saying how to install it, where PostgreSQL is not installed:
    /// a skipped test would let CI pass without ever touching PostgreSQL.
    pub async fn start() -> Postgres {
        let Some(bin) = postgres_bin() else {
            panic!(
                "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run `apt-get install -y postgresql` (or scripts/test.sh, which does it)"
            );
        };
        let dir = TempDir::new("pg");
        let data = dir.path().join("data");
        // One-shot commands run through Tokio so they do not block the test's runtime.
        let as_root = tokio::process::Command::new("id")
            .arg("-u")
            .output()
            .await
            .map(|o| o.stdout.starts_with(b"0\n"))
            .unwrap_or(false);
        if as_root {
            // PostgreSQL refuses to run as root: hand the directory to the postgres user.
            let status = tokio::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .await
                .unwrap();
            assert!(status.success(), "chown failed");
        }
        let command = |program: &Path| -> Command {
            if as_root {
                let mut c = Command::new("setpriv");
                c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
                    .arg(program);
                c
            } else {
                Command::new(program)
            }
        };
        let mut initdb = command(&bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let initdb = tokio::process::Command::from(initdb)
            .status()
            .await
            .unwrap();
        assert!(initdb.success(), "initdb failed");

        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        // setpriv execs, so the child is the postmaster itself and signals reach it.
        let child = command(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ])
            .arg("-k")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Postgres {
            child,
            port,
            _dir: dir,
        };
        for _ in 0..300 {
            if sqlx::PgPool::connect(&server.url()).await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("postgres did not accept connections within 30s");
    }

    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `db` on this server.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's "fast shutdown": backends end, shared memory is released.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .collect();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .find(|bin| bin.join("initdb").exists())
}

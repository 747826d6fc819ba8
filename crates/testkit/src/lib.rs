//! Real components for integration tests: no mock stands in for Redis or the network.
//!
//! Tests start their own `redis-server` and gateway processes on free loopback
//! ports with these helpers, and talk to them with real WebSocket and HTTP
//! clients. Every process is killed when its handle drops, so a failing test
//! leaves nothing running.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod sse;
pub use sse::{SseEvent, SseParser, SseStream};

/// A WebSocket client connection as the tests use it.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where `redis-server` is, or a clear message on how to get it.
pub fn redis_server_binary() -> PathBuf {
    for candidate in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "redis-server is not installed: run `apt-get install -y redis-server` (or .ci/run, which does it)"
    );
}

/// A `redis-server` child process on its own port, with no persistence. Killed on drop.
pub struct RedisServer {
    pub port: u16,
    process: Option<ChildProcess>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    /// Starts a server on `port` and waits until it answers PING.
    pub async fn start_on(port: u16) -> Self {
        let mut server = RedisServer {
            port,
            process: None,
        };
        server.restart().await;
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: like a crash, no goodbye to clients).
    pub fn kill(&mut self) {
        // Dropping the process kills it.
        self.process = None;
    }

    /// Freezes the server (SIGSTOP): its sockets stay open but it answers nothing,
    /// like a wedged server or a half-dead network path.
    pub fn pause(&self) {
        self.process
            .as_ref()
            .expect("redis-server is running")
            .pause();
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.process
            .as_ref()
            .expect("redis-server is running")
            .resume();
    }

    /// Starts the server again on the same port, empty, and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        let port = self.port.to_string();
        let args = [
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ];
        self.process = Some(ChildProcess::start(
            &redis_server_binary(),
            "redis-server",
            &args,
        ));
        let process = self.process.as_mut();
        wait_for_ping(self.port, process, Duration::from_secs(10)).await;
    }

    /// A fresh multiplexed connection.
    pub async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        connect_redis(&self.url()).await
    }

    /// `PUBLISH channel payload`; returns how many subscribers Redis reached.
    pub async fn publish(&self, channel: &str, payload: impl AsRef<[u8]>) -> i64 {
        let mut conn = self.connection().await.unwrap();
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload.as_ref())
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// Waits until `channel` has exactly `n` subscribers in Redis (one per gateway instance).
    pub async fn wait_subscribers(&self, channel: &str, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(mut conn) = self.connection().await {
                let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(channel)
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                if counts.first().map(|(_, count)| *count) == Some(n) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "channel {channel} never reached {n} subscribers"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A `herald gateway` child process. Killed on drop.
pub struct GatewayProcess {
    pub addr: SocketAddr,
    pub instance_id: String,
    process: ChildProcess,
}

impl GatewayProcess {
    /// Starts `binary gateway --listen 127.0.0.1:PORT --broker URL --instance-id ID EXTRA…`
    /// and waits until `/healthz` answers.
    pub async fn start(binary: &Path, broker: &str, instance_id: &str, extra: &[&str]) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let listen = addr.to_string();
        let mut args = vec![
            "gateway",
            "--listen",
            &listen,
            "--broker",
            broker,
            "--instance-id",
            instance_id,
        ];
        args.extend_from_slice(extra);
        let mut process = ChildProcess::start(binary, &format!("gateway {instance_id}"), &args);
        process.wait_http(addr, "/healthz", 200).await;
        GatewayProcess {
            addr,
            instance_id: instance_id.to_owned(),
            process,
        }
    }

    /// `ws://ADDR/ws/notifications`.
    pub fn tutorial_url(&self) -> String {
        format!("ws://{}/ws/notifications", self.addr)
    }

    /// The process id, e.g. to read its memory use.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Waits until `/readyz` answers with `status`.
    pub async fn wait_readyz(&self, status: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((code, _)) = get(self.addr, "/readyz").await
                && code == status
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gateway {} /readyz never answered {status}",
                self.instance_id
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        self.process.terminate()
    }
}

/// Any `herald` subcommand as a child process (content service, notifier, demo…). Killed on drop.
pub struct ChildProcess {
    pub name: String,
    child: Option<Child>,
}

impl ChildProcess {
    /// Starts `binary ARGS…` with `HERALD_LOG` taken from `HERALD_TEST_LOG` (default `warn`).
    pub fn start(binary: &Path, name: &str, args: &[&str]) -> Self {
        let child = Command::new(binary)
            .args(args)
            .env(
                "HERALD_LOG",
                std::env::var("HERALD_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {} {args:?}: {e}", binary.display()));
        ChildProcess {
            name: name.to_owned(),
            child: Some(child),
        }
    }

    /// Waits until `GET http://ADDR/PATH` answers `status`; fails at once if the process exits.
    pub async fn wait_http(&mut self, addr: SocketAddr, path: &str, status: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((code, _)) = get(addr, path).await
                && code == status
            {
                return;
            }
            assert!(
                self.is_running(),
                "{} exited before serving {path}",
                self.name
            );
            assert!(
                Instant::now() < deadline,
                "{}: GET {path} never answered {status}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// Freezes the process (SIGSTOP): it holds its sockets and does nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused process (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        send_signal(
            self.child
                .as_ref()
                .unwrap_or_else(|| panic!("{} is not running", self.name)),
            signal,
        );
    }

    /// Kills the process (SIGKILL: like a crash, no goodbye to anyone) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET http://ADDR/PATH` → (status, JSON body or null).
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, serde_json::Value)> {
    let response = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    Ok((status, body))
}

/// Opens a WebSocket connection.
pub async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("connect {url}"))
        .unwrap();
    ws
}

/// What a client saw next: a text or binary message, or the end of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Text(String),
    Binary(Vec<u8>),
    /// A close frame with its code and reason.
    Closed(u16, String),
    /// The connection ended without a close frame.
    Dropped,
}

/// The next data message or close, skipping pings and pongs; fails after `within`.
pub async fn next_seen(ws: &mut Ws, within: Duration) -> Result<Seen> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, ws.next()).await else {
            bail!("nothing received within {within:?}")
        };
        return Ok(match next {
            None => Seen::Dropped,
            Some(Err(_)) => Seen::Dropped,
            Some(Ok(Message::Text(text))) => Seen::Text(text.to_string()),
            Some(Ok(Message::Binary(bytes))) => Seen::Binary(bytes.to_vec()),
            Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                Seen::Closed(code.into(), reason.to_string())
            }
            Some(Ok(Message::Close(None))) => Seen::Closed(1005, String::new()),
            Some(Ok(_)) => continue,
        });
    }
}

/// The next text message; fails on anything else.
pub async fn next_text(ws: &mut Ws) -> String {
    match next_seen(ws, Duration::from_secs(10)).await {
        Ok(Seen::Text(text)) => text,
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Reads until the server's close frame (skipping data), returning its code.
pub async fn close_code(ws: &mut Ws, within: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_seen(ws, left).await {
            Ok(Seen::Closed(code, _)) => return Some(code),
            Ok(Seen::Dropped) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Asserts that nothing but pings arrives for `quiet`: proof that no extra copy of a message is on its way.
pub async fn assert_quiet(ws: &mut Ws, quiet: Duration) {
    if let Ok(seen) = next_seen(ws, quiet).await {
        panic!("expected nothing more, got {seen:?}");
    }
}

/// The resident memory of a process in KiB (VmRSS from /proc).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap()
}

/// Sends a JSON frame.
pub async fn send_json(ws: &mut Ws, frame: serde_json::Value) {
    use futures_util::SinkExt;
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

/// The next text message, parsed as JSON.
pub async fn next_json(ws: &mut Ws) -> serde_json::Value {
    let text = next_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON: {text:?}: {e}"))
}

/// The next JSON frame of the given `type`, failing on any other.
pub async fn expect_frame(ws: &mut Ws, kind: &str) -> serde_json::Value {
    let frame = next_json(ws).await;
    assert_eq!(frame["type"], kind, "expected a {kind} frame, got {frame}");
    frame
}

/// `POST http://ADDR/PATH` with a JSON body and an optional Bearer key → (status, JSON body).
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .json(body)
        .timeout(Duration::from_secs(10));
    if let Some(key) = bearer {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// Sends `signal` (`-STOP`, `-CONT`, `-TERM`…) to a child process.
fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {} failed", child.id());
}

/// Opens a WebSocket with extra request headers (e.g. `Origin`, `Authorization`).
/// A refused handshake gives the HTTP status and the JSON body (null if not JSON).
pub async fn connect_with_headers(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, serde_json::Value)> {
    use tokio_tungstenite::tungstenite::Error;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderName;
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(Error::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .and_then(|body| serde_json::from_slice(body).ok())
                .unwrap_or(serde_json::Value::Null);
            Err((response.status().as_u16(), body))
        }
        Err(e) => panic!("connect {url}: {e}"),
    }
}

/// A `redis-server` that keeps its data in an append-only file in its own
/// temporary directory, so it can be crashed (SIGKILL) and started again on the
/// same port with the same data, the way a production Redis with AOF restarts.
///
/// With `appendfsync always` every acknowledged write is on disk before the
/// reply, so a crash loses nothing a client was told succeeded; with
/// `everysec` up to about a second of acknowledged writes may be lost.
/// Killed on drop; the directory is removed with it.
pub struct DurableRedis {
    pub port: u16,
    dir: PathBuf,
    appendfsync: String,
    process: Option<ChildProcess>,
}

impl DurableRedis {
    /// Starts a server on a free port with `appendonly yes` and the given
    /// `appendfsync` policy (`always`, `everysec`, `no`), and waits until it answers PING.
    pub async fn start(appendfsync: &str) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "herald-durable-redis-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = DurableRedis {
            port,
            dir,
            appendfsync: appendfsync.to_owned(),
            process: None,
        };
        server.start_again().await;
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id of the running server (0 when it is down).
    pub fn pid(&self) -> u32 {
        self.process
            .as_ref()
            .map(ChildProcess::pid)
            .unwrap_or_default()
    }

    /// Kills the server (SIGKILL: a crash, no final fsync, no goodbye to clients).
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// Starts the server on the same port with the same data directory (after
    /// [`kill`](Self::kill), or at first) and waits until it has loaded its
    /// append-only file and answers PING.
    pub async fn start_again(&mut self) {
        self.kill();
        let port = self.port.to_string();
        let dir = self.dir.display().to_string();
        let args = [
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir,
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            &self.appendfsync,
        ];
        self.process = Some(ChildProcess::start(
            &redis_server_binary(),
            "redis-server (aof)",
            &args,
        ));
        // While it loads the file, Redis answers PING with a LOADING error.
        let process = self.process.as_mut();
        wait_for_ping(self.port, process, Duration::from_secs(20)).await;
    }

    /// A fresh multiplexed connection.
    pub async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        connect_redis(&self.url()).await
    }
}

/// A fresh multiplexed connection to the Redis at `url`.
async fn connect_redis(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

/// Waits until the `redis-server` on `port` answers PING (not LOADING), failing
/// the test if its process exits first or `within` passes.
async fn wait_for_ping(port: u16, mut process: Option<&mut ChildProcess>, within: Duration) {
    let deadline = Instant::now() + within;
    let url = format!("redis://127.0.0.1:{port}");
    loop {
        if let Ok(mut conn) = connect_redis(&url).await
            && redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
        {
            return;
        }
        if let Some(process) = process.as_deref_mut() {
            assert!(
                process.is_running(),
                "redis-server on port {port} exited at start-up"
            );
        }
        assert!(
            Instant::now() < deadline,
            "redis-server on port {port} did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl DurableRedis {
    /// Copies the server's data directory as it is on disk now, to put back later
    /// with [`restore`](Self::restore). Wait for an fsync first (`everysec`: over a second).
    pub fn snapshot(&self) -> PathBuf {
        let to = self.dir.with_extension(format!("snapshot-{}", free_port()));
        copy_dir(&self.dir, &to);
        to
    }

    /// Kills the server, puts `snapshot` back as its data and starts it again: the
    /// server comes back without every write made after the snapshot, as after a
    /// machine crash that lost the writes not yet fsynced (`appendfsync everysec`).
    pub async fn restore(&mut self, snapshot: &Path) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        copy_dir(snapshot, &self.dir);
        let _ = std::fs::remove_dir_all(snapshot);
        self.start_again().await;
    }
}

/// Copies a directory tree (files and directories only).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

impl Drop for DurableRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Seconds since the Unix epoch, for a token's `exp` and `nbf`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JWT carrying `claims`, signed with HS256 and `secret` (the gateway's `--jwt-secret`).
pub fn hs256_token(secret: &str, claims: &serde_json::Value) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

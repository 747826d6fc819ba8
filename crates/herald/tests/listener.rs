//! The gateway's sockets under hostile clients: half-sent requests, idle
//! floods, one address holding too many connections, too few file
//! descriptors, and a shutdown that such clients must not hold up.
//!
//! Every test runs the real `herald gateway` binary and talks to it over raw
//! TCP, because the behaviour under test is what happens before (or
//! instead of) a well-formed HTTP exchange.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use std::process::{Child, Command, ExitStatus, Stdio};

use herald_testkit::{GatewayProcess, connect, free_port, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn herald() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_herald"))
}

/// A generous wait for something the server must do by itself; never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(20);

/// A plain GET that asks the server to close afterwards, so the answer ends at EOF.
fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n")
}

/// A WebSocket upgrade request with `extra` header lines.
fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: herald\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// A TCP connection to `addr` from `source` (any loopback address is ours on Linux).
async fn connect_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

/// What the server did with a connection after we wrote to it.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// It answered; the response head (and whatever else arrived).
    Answered(String),
    /// It closed the connection without a byte.
    Closed,
}

/// Reads until the end of the response head, or until the server closes.
/// Panics if the server does neither within [`PATIENCE`].
async fn read_head(stream: &mut TcpStream) -> Outcome {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("the server neither answered nor closed the connection");
        match read {
            Ok(0) | Err(_) if received.is_empty() => return Outcome::Closed,
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
        if received.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    Outcome::Answered(String::from_utf8_lossy(&received).into_owned())
}

/// Writes `request` on a fresh connection from `source` and reads the answer's head.
async fn exchange(source: IpAddr, addr: SocketAddr, request: &str) -> Outcome {
    let mut stream = connect_from(source, addr).await;
    if stream.write_all(request.as_bytes()).await.is_err() {
        return Outcome::Closed;
    }
    read_head(&mut stream).await
}

/// Waits until the server closes `stream` (EOF or reset); panics after [`PATIENCE`].
async fn wait_closed(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("the server never closed {what}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
        }
    }
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// Whether `outcome` is a `503 too_many_connections` with `Retry-After`.
fn is_refusal(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Answered(head) => {
            let lower = head.to_ascii_lowercase();
            head.starts_with("HTTP/1.1 503") && lower.contains("retry-after:")
        }
        Outcome::Closed => false,
    }
}

fn status_of(outcome: &Outcome) -> Option<&str> {
    match outcome {
        Outcome::Answered(head) => head.get(9..12),
        Outcome::Closed => None,
    }
}

#[tokio::test]
async fn a_half_sent_request_is_closed_within_the_header_timeout() {
    let gateway = GatewayProcess::start(
        herald(),
        "memory://",
        "slowloris",
        &["--header-read-timeout", "1s"],
    )
    .await;
    let mut stream = connect_from(loopback(1), gateway.addr).await;
    stream.write_all(b"GET /healthz HT").await.unwrap();
    assert_eq!(read_head(&mut stream).await, Outcome::Closed);

    // Trickling one byte at a time does not reset the clock either.
    let mut stream = connect_from(loopback(1), gateway.addr).await;
    let started = Instant::now();
    let mut closed = false;
    for byte in b"GET /healthz HTTP/1.1\r\nHost: herald\r\nX-Slow: "
        .iter()
        .cycle()
    {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        if started.elapsed() > PATIENCE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(closed, "a trickled request head was never cut off");
}

#[tokio::test]
async fn a_websocket_handshake_slower_than_its_timeout_is_closed_unanswered() {
    let gateway = GatewayProcess::start(
        herald(),
        "memory://",
        "handshake",
        &[
            "--ws-handshake-timeout",
            "1s",
            "--header-read-timeout",
            "30s",
        ],
    )
    .await;
    let request = upgrade_request("/ws", "");
    let (start, rest) = request.split_at(20);
    let mut stream = connect_from(loopback(1), gateway.addr).await;
    stream.write_all(start.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = stream.write_all(rest.as_bytes()).await;
    assert_eq!(read_head(&mut stream).await, Outcome::Closed);

    // Within the timeout, the same handshake succeeds.
    let mut stream = connect_from(loopback(1), gateway.addr).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(status_of(&read_head(&mut stream).await), Some("101"));
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let gateway = GatewayProcess::start(
        herald(),
        "memory://",
        "idle",
        &["--http-idle-timeout", "1s", "--header-read-timeout", "30s"],
    )
    .await;
    let mut stream = connect_from(loopback(1), gateway.addr).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert_eq!(status_of(&head), Some("200"), "{head:?}");
    wait_closed(&mut stream, "an idle kept-alive connection").await;
}

#[tokio::test]
async fn idle_sockets_past_the_cap_are_refused_and_a_websocket_client_gets_in_after() {
    let gateway = GatewayProcess::start(
        herald(),
        "memory://",
        "flood",
        &[
            "--max-http-connections",
            "10",
            "--max-connections-per-ip",
            "0",
            "--header-read-timeout",
            "2s",
        ],
    )
    .await;
    // Ten idle sockets take every slot.
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(connect_from(loopback(1), gateway.addr).await);
    }
    // At the cap, a WebSocket client is refused at once with the documented answer.
    // (The start-up health check's connection may still hold a slot for a moment
    // and free it late: a client let in through that slot holds it from then on.)
    let mut let_in = Vec::new();
    let refused = loop {
        let mut stream = connect_from(loopback(1), gateway.addr).await;
        stream
            .write_all(upgrade_request("/ws", "").as_bytes())
            .await
            .unwrap();
        let outcome = read_head(&mut stream).await;
        if status_of(&outcome) != Some("101") || let_in.len() >= 3 {
            break outcome;
        }
        let_in.push(stream);
    };
    assert!(is_refusal(&refused), "{refused:?}");
    let Outcome::Answered(head) = &refused else {
        unreachable!()
    };
    assert!(head.contains("too_many_connections"), "{head}");
    // …while the health probe still answers.
    let health = exchange(loopback(1), gateway.addr, &get_request("/healthz")).await;
    assert_eq!(status_of(&health), Some("200"), "{health:?}");

    // A flood far past the cap and the overflow slots.
    for _ in 0..60 {
        idle.push(connect_from(loopback(1), gateway.addr).await);
    }
    for (n, stream) in idle.iter_mut().enumerate() {
        wait_closed(stream, &format!("idle socket {n}")).await;
    }
    drop(let_in);

    // Once they are gone, a WebSocket client connects as usual.
    let mut ws = connect(&format!("ws://{}/ws", gateway.addr)).await;
    let connected = herald_testkit::next_json(&mut ws).await;
    assert_eq!(connected["type"], "connected", "{connected}");
}

#[tokio::test]
async fn the_per_address_cap_counts_the_tcp_peer() {
    let gateway = GatewayProcess::start(
        herald(),
        "memory://",
        "per-ip",
        &["--max-connections-per-ip", "2"],
    )
    .await;
    // 127.0.0.3 is the client under test (127.0.0.1 is the harness's own probes).
    let client = loopback(3);
    let upgrade = upgrade_request("/ws", "");
    let mut first = connect_from(client, gateway.addr).await;
    first.write_all(upgrade.as_bytes()).await.unwrap();
    assert_eq!(status_of(&read_head(&mut first).await), Some("101"));
    let mut second = connect_from(client, gateway.addr).await;
    second.write_all(upgrade.as_bytes()).await.unwrap();
    assert_eq!(status_of(&read_head(&mut second).await), Some("101"));

    // A third connection from the same address is closed at once, unanswered.
    let third = exchange(client, gateway.addr, &get_request("/healthz")).await;
    assert_eq!(third, Outcome::Closed);

    // Another address has its own allowance.
    let other = exchange(loopback(4), gateway.addr, &get_request("/healthz")).await;
    assert_eq!(status_of(&other), Some("200"), "{other:?}");

    // A slot comes back when its connection closes.
    drop(first);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let again = exchange(client, gateway.addr, &get_request("/healthz")).await;
        if status_of(&again) == Some("200") {
            break;
        }
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens a WebSocket through "the proxy" (127.0.0.1) for the client `forwarded_for`.
async fn upgrade_through_proxy(
    addr: SocketAddr,
    forwarded_for: &str,
) -> (Outcome, Option<TcpStream>) {
    let mut stream = connect_from(loopback(1), addr).await;
    let request = upgrade_request("/ws", &format!("X-Forwarded-For: {forwarded_for}\r\n"));
    stream.write_all(request.as_bytes()).await.unwrap();
    let outcome = read_head(&mut stream).await;
    (outcome, Some(stream))
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_cap_counts_the_forwarded_client() {
    let gateway = GatewayProcess::start(
        herald(),
        "memory://",
        "per-ip-proxy",
        &[
            "--max-connections-per-ip",
            "2",
            "--trusted-proxy",
            "127.0.0.1",
        ],
    )
    .await;
    let (a1, first) = upgrade_through_proxy(gateway.addr, "203.0.113.9").await;
    let (a2, _second) = upgrade_through_proxy(gateway.addr, "203.0.113.9").await;
    assert_eq!(status_of(&a1), Some("101"), "{a1:?}");
    assert_eq!(status_of(&a2), Some("101"), "{a2:?}");

    // The same client a third time: refused with the documented answer.
    let (a3, _) = upgrade_through_proxy(gateway.addr, "203.0.113.9").await;
    assert!(is_refusal(&a3), "{a3:?}");

    // Other clients behind the same proxy, and the proxy's plain requests, pass.
    let (b1, _other) = upgrade_through_proxy(gateway.addr, "203.0.113.10").await;
    assert_eq!(status_of(&b1), Some("101"), "{b1:?}");
    for _ in 0..5 {
        let plain = exchange(loopback(1), gateway.addr, &get_request("/healthz")).await;
        assert_eq!(status_of(&plain), Some("200"), "{plain:?}");
    }

    // The forwarded client's slot comes back when its WebSocket closes.
    drop(first);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (again, _keep) = upgrade_through_proxy(gateway.addr, "203.0.113.9").await;
        if status_of(&again) == Some("101") {
            break;
        }
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `herald` child process of this test file's own, for what `ChildProcess`
/// does not offer: its exit status. Killed on drop.
struct Herald(Child);

impl Herald {
    /// Runs `program ARGS…` (the herald binary, or a wrapper such as `prlimit`) and
    /// waits until `GET /healthz` on `addr` answers 200.
    async fn start(program: &Path, args: &[&str], addr: SocketAddr) -> Herald {
        let child = Command::new(program)
            .args(args)
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut herald = Herald(child);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok((200, _)) = get(addr, "/healthz").await {
                return herald;
            }
            assert!(
                matches!(herald.0.try_wait(), Ok(None)),
                "{args:?} exited before serving"
            );
            assert!(Instant::now() < deadline, "{args:?} never served /healthz");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends SIGTERM and waits up to `within` for the exit; its status, or `None` if still running.
    async fn terminate_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn sigterm_ends_the_gateway_despite_a_half_sent_request() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = addr.to_string();
    let mut gateway = Herald::start(
        herald(),
        &[
            "gateway",
            "--listen",
            &listen,
            "--broker",
            "memory://",
            // Longer than the test waits: only the shutdown timeout can end it.
            "--header-read-timeout",
            "10m",
            "--shutdown-timeout",
            "2s",
        ],
        addr,
    )
    .await;
    let mut half = connect_from(loopback(1), addr).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: her")
        .await
        .unwrap();
    // A WebSocket client that never reads anything.
    let _silent = connect(&format!("ws://{addr}/ws")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = gateway
        .terminate_within(Duration::from_secs(60))
        .await
        .expect("the gateway did not exit after SIGTERM while a request was half sent");
    // Success: the gateway's own bounded shutdown ended it, not the process's last-resort deadline.
    assert!(status.success(), "{status}");
    wait_closed(&mut half, "the half-sent request").await;
}

#[tokio::test]
async fn sigterm_ends_the_gateway_despite_a_client_that_never_reads() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = addr.to_string();
    let mut gateway = Herald::start(
        herald(),
        &[
            "gateway",
            "--listen",
            &listen,
            "--broker",
            "memory://",
            "--api-key",
            "test-key",
            // Neither a slow-consumer kick nor a write timeout comes to the rescue.
            "--client-queue",
            "1000000",
            "--write-timeout",
            "10m",
            "--shutdown-timeout",
            "2s",
        ],
        addr,
    )
    .await;
    // Subscribed to `events`, then never reads a byte again.
    let mut stuck = connect_from(loopback(1), addr).await;
    stuck
        .write_all(upgrade_request("/ws/notifications", "").as_bytes())
        .await
        .unwrap();
    assert_eq!(status_of(&read_head(&mut stuck).await), Some("101"));
    // Far more than the socket buffers hold: the gateway's writes to it block.
    let payload = "x".repeat(60_000);
    for _ in 0..400 {
        let (status, body) = herald_testkit::post_json(
            addr,
            "/api/publish",
            Some("test-key"),
            &serde_json::json!({ "channel": "events", "data": payload }),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let status = gateway
        .terminate_within(Duration::from_secs(60))
        .await
        .expect("the gateway did not exit after SIGTERM while a client did not read");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn with_few_file_descriptors_excess_clients_are_refused_at_once_and_health_answers() {
    // 256 descriptors: 128 reserved, 32 overflow slots, 96 connections.
    const CAP: usize = 96;
    const CLIENTS: usize = 300;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = addr.to_string();
    let herald = herald().to_str().unwrap();
    let _gateway = Herald::start(
        Path::new("prlimit"),
        &[
            "--nofile=256:256",
            herald,
            "gateway",
            "--listen",
            &listen,
            "--broker",
            "memory://",
            "--max-connections-per-ip",
            "0",
        ],
        addr,
    )
    .await;

    let url = format!("ws://{addr}/ws");
    let attempts = (0..CLIENTS).map(|_| {
        let url = url.clone();
        async move {
            let request = url.into_client_request().unwrap();
            tokio::time::timeout(
                Duration::from_secs(15),
                tokio_tungstenite::connect_async(request),
            )
            .await
        }
    });
    let results = join_all(attempts).await;
    let mut connected = Vec::new();
    let (mut refused_503, mut closed, mut hung) = (0, 0, 0);
    for result in results {
        match result {
            Ok(Ok((ws, _))) => connected.push(ws),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response)))
                if response.status() == 503 =>
            {
                refused_503 += 1
            }
            Ok(Err(_)) => closed += 1,
            Err(_) => hung += 1,
        }
    }
    assert_eq!(
        hung, 0,
        "clients past the cap must be refused at once, not left waiting"
    );
    assert!(
        connected.len() <= CAP,
        "{} connected: more than the open-file limit allows",
        connected.len()
    );
    assert!(
        connected.len() >= CAP - 8,
        "only {} connected below the cap",
        connected.len()
    );
    assert!(
        refused_503 > 0,
        "no client got the documented 503 (closed: {closed})"
    );

    // At the cap, the health probe still answers.
    let (status, body) = get(addr, "/healthz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["connections"], connected.len(), "{body}");
}

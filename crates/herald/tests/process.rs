//! The `herald` process as an operator meets it: its log output and its errors.
//!
//! - A log pipe whose reader has gone (a dead log shipper; `… 2>&1 | head -1`)
//!   must not stop a service from serving or from exiting on SIGTERM.
//! - A configuration error is one line naming the flag and the reason — no
//!   backtrace, even with `RUST_BACKTRACE=1`, and a non-zero exit status.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use herald_testkit::{RedisServer, connect, free_port, get};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn herald() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_herald"))
}

/// A generous wait for something the process must do by itself; never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(60);

/// A `herald` child whose stdout and stderr are pipes nobody reads any more. Killed on drop.
struct Orphaned(Child);

impl Orphaned {
    /// Starts `herald ARGS…` logging at debug level into pipes whose reading ends are closed at once.
    fn start(args: &[&str]) -> Orphaned {
        let mut child = Command::new(herald())
            .args(args)
            .env("HERALD_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The log shipper dies: every write to these pipes now fails with EPIPE.
        drop(child.stdout.take());
        drop(child.stderr.take());
        Orphaned(child)
    }

    /// Waits until `GET http://ADDR/PATH` answers 200.
    async fn wait_serving(&mut self, addr: SocketAddr, path: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok((200, _)) = get(addr, path).await {
                return;
            }
            assert!(
                matches!(self.0.try_wait(), Ok(None)),
                "the process died with its log pipe closed: {:?}",
                self.0.try_wait()
            );
            assert!(Instant::now() < deadline, "GET {path} never answered 200");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit status; `None` if it is still running after [`PATIENCE`].
    async fn terminate(&mut self) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Orphaned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn loopback_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

#[tokio::test]
async fn a_gateway_with_a_closed_log_pipe_serves_and_exits_on_sigterm() {
    let addr = loopback_addr();
    let listen = addr.to_string();
    let mut gateway = Orphaned::start(&[
        "gateway",
        "--listen",
        &listen,
        "--broker",
        "memory://",
        "--shutdown-timeout",
        "5s",
    ]);
    gateway.wait_serving(addr, "/healthz").await;
    // Plenty of log lines, every one of them failing to be written.
    for _ in 0..20 {
        let mut ws = connect(&format!("ws://{addr}/ws")).await;
        herald_testkit::next_json(&mut ws).await;
    }
    gateway.wait_serving(addr, "/healthz").await;
    let status = gateway
        .terminate()
        .await
        .expect("the gateway did not exit on SIGTERM with its log pipe closed");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_gateway_whose_log_reader_stalls_keeps_serving_and_exits_on_sigterm() {
    let addr = loopback_addr();
    let listen = addr.to_string();
    let mut child = Command::new(herald())
        .args(["gateway", "--listen", &listen, "--broker", "memory://"])
        .args(["--shutdown-timeout", "5s"])
        .env("HERALD_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log shipper hangs: it holds the pipe open and never reads, so the
    // pipe's buffer fills and every further write would block.
    let _stalled = child.stderr.take();
    let mut gateway = Orphaned(child);
    gateway.wait_serving(addr, "/healthz").await;
    for _ in 0..50 {
        let mut ws = connect(&format!("ws://{addr}/ws")).await;
        herald_testkit::next_json(&mut ws).await;
        gateway.wait_serving(addr, "/healthz").await;
    }
    let status = gateway
        .terminate()
        .await
        .expect("the gateway did not exit on SIGTERM with its log reader stalled");
    assert!(status.success(), "{status}");
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("herald-process-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
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
async fn a_content_service_with_a_closed_log_pipe_serves_and_exits_on_sigterm() {
    let redis = RedisServer::start().await;
    let dir = TempDir::new("content");
    let database = format!("sqlite://{}", dir.0.join("content.db").display());
    let addr = loopback_addr();
    let listen = addr.to_string();
    let broker = redis.url();
    let mut content = Orphaned::start(&[
        "content",
        "--listen",
        &listen,
        "--broker",
        &broker,
        "--database",
        &database,
        "--shutdown-timeout",
        "2s",
    ]);
    content.wait_serving(addr, "/api/content").await;
    // A client that never finishes its request must not hold the shutdown up either.
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /api/content HTTP/1.1\r\nHost: her")
        .await
        .unwrap();
    let status = content
        .terminate()
        .await
        .expect("the content service did not exit on SIGTERM with its log pipe closed");
    assert!(status.success(), "{status}");
}

/// Runs `herald ARGS…` with `RUST_BACKTRACE=1` and the default log level; its exit
/// status and stderr. Fails if it does not exit within [`PATIENCE`].
fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(herald())
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env_remove("HERALD_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("herald {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn configuration_errors_are_one_line_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "gateway",
                "--listen",
                "127.0.0.1:0",
                "--broker",
                "rediss://localhost:16399",
            ],
            "--broker rediss://localhost:16399",
        ),
        (
            &[
                "gateway",
                "--listen",
                "127.0.0.1:0",
                "--broker",
                "bogus://x",
            ],
            "--broker bogus://x",
        ),
        (&["gateway", "--ping-interval", "soon"], "--ping-interval"),
        (
            &["gateway", "--header-read-timeout", "0s"],
            "--header-read-timeout",
        ),
        (
            &[
                "gateway",
                "--listen",
                "127.0.0.1:0",
                "--trusted-proxy",
                "proxy.local",
            ],
            "--trusted-proxy",
        ),
        (&["--log", "a[[", "gateway"], "--log"),
        (
            &[
                "content",
                "--listen",
                "127.0.0.1:0",
                "--broker",
                "rediss://localhost:1",
            ],
            "--broker rediss://localhost:1",
        ),
    ];
    for (args, flag) in cases {
        let (status, stderr) = run_to_exit(args);
        assert!(!status.success(), "herald {args:?} succeeded");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "herald {args:?} said more than one line:\n{stderr}"
        );
        let line = lines[0];
        assert!(line.starts_with("herald: "), "{line}");
        assert!(line.contains(flag), "{line} does not name {flag}");
        for noise in ["backtrace", "Caused by", "panicked", "Error:"] {
            assert!(!line.contains(noise), "{line} contains {noise:?}");
        }
    }
}

#[test]
fn the_broker_error_names_its_cause_once() {
    let (_, stderr) = run_to_exit(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--broker",
        "rediss://localhost:16399",
    ]);
    let line = stderr.trim();
    let cause = "can't connect with TLS";
    assert_eq!(line.matches(cause).count(), 1, "{line}");
    assert!(!line.ends_with(':'), "an empty cause: {line}");
}

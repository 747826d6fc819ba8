//! The chaos test's clients, and the one record of what each of them saw.
//!
//! Three kinds take part: Rust clients speaking `/ws` (reconnecting to the next
//! gateway and resubscribing with `since`, as docs/protocol.md tells a client
//! to), TypeScript clients (`@herald/client` from `clients/typescript/dist`)
//! run by the Node driver `clients/typescript/test/chaos/driver.mjs` in
//! separate processes, and tutorial clients on `/ws/notifications`. None of
//! them judges anything: they write down every message, every `subscribed`,
//! every signal and every disconnect, and the test compares that with what was
//! published.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// A history position as the protocol carries it.
pub(crate) type Pos = (u64, String);

/// One message a client received on a history channel.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) offset: u64,
    pub(crate) epoch: String,
    pub(crate) data: Value,
}

/// Everything one client saw.
#[derive(Debug, Default)]
pub(crate) struct ClientLog {
    /// The position each channel was at when this client first subscribed to it.
    pub(crate) first_position: BTreeMap<String, Option<Pos>>,
    /// The messages of each channel, in arrival order.
    pub(crate) received: BTreeMap<String, Vec<Received>>,
    /// Resubscribes with `since` answered `recovered: true`.
    pub(crate) recovered: u64,
    /// Gaps the gateway or client announced: `recovered: false`, an epoch or gap signal.
    pub(crate) announced_gaps: Vec<String>,
    /// Error frames and unexpected frames, for the report.
    pub(crate) errors: Vec<String>,
    /// `internal` error frames ("retry later"), each followed by a new subscribe.
    pub(crate) internal_errors: u64,
    /// Each disconnect seen (close code, or 1006 for a dropped connection).
    pub(crate) disconnects: Vec<u16>,
    /// Connections that reached `connected`.
    pub(crate) connections: u64,
    /// Tutorial clients only: every text received.
    pub(crate) texts: Vec<String>,
    /// TypeScript clients only: duplicates the client library dropped itself, per channel.
    pub(crate) dropped_by_client: Option<BTreeMap<String, u64>>,
}

impl ClientLog {
    /// The last position this client has for `channel`: its last message, else its first subscribe.
    pub(crate) fn last_offset(&self, channel: &str) -> Option<u64> {
        self.received
            .get(channel)
            .and_then(|r| r.last())
            .map(|r| r.offset)
            .or_else(|| {
                self.first_position
                    .get(channel)
                    .and_then(|p| p.as_ref())
                    .map(|p| p.0)
            })
    }
}

/// The record of every client, by id. A std mutex: it is held only to push a line, never across an await.
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<BTreeMap<String, ClientLog>>>);

impl Logs {
    /// Runs `f` on the log of client `id`.
    pub(crate) fn with<R>(&self, id: &str, f: impl FnOnce(&mut ClientLog) -> R) -> R {
        let mut logs = self.0.lock().unwrap();
        f(logs.entry(id.to_owned()).or_default())
    }

    /// Runs `f` on every log.
    pub(crate) fn all<R>(&self, f: impl FnOnce(&BTreeMap<String, ClientLog>) -> R) -> R {
        f(&self.0.lock().unwrap())
    }

    /// Records one `subscribed` frame (or the TypeScript client's event for it).
    fn subscribed(&self, id: &str, channel: &str, position: &Value, recovered: &Value) {
        let pos = position_of(position);
        self.with(id, |log| {
            log.first_position
                .entry(channel.to_owned())
                .or_insert(pos.clone());
            match recovered.as_bool() {
                Some(true) => log.recovered += 1,
                Some(false) => log.announced_gaps.push(format!(
                    "{channel}: subscribed with recovered:false at {position}"
                )),
                None => {}
            }
        });
    }

    /// Records one message of a history channel.
    fn message(&self, id: &str, channel: &str, offset: &Value, epoch: &Value, data: Value) {
        let (Some(offset), Some(epoch)) = (offset.as_u64(), epoch.as_str()) else {
            self.with(id, |log| {
                log.errors
                    .push(format!("{channel}: a message without a position: {data}"))
            });
            return;
        };
        self.with(id, |log| {
            log.received
                .entry(channel.to_owned())
                .or_default()
                .push(Received {
                    offset,
                    epoch: epoch.to_owned(),
                    data,
                })
        });
    }
}

fn position_of(value: &Value) -> Option<Pos> {
    Some((
        value.get("offset")?.as_u64()?,
        value.get("epoch")?.as_str()?.to_owned(),
    ))
}

// ------------------------------------------------------------------ Rust /ws clients

/// A Rust client of `/ws`: connects to `urls` in turn, subscribes to `channels`,
/// and after every disconnect reconnects to the next URL and resubscribes with
/// `since` = the last position it has. Runs until `stop`.
pub(crate) async fn rust_client(
    id: String,
    urls: Vec<String>,
    channels: Vec<String>,
    logs: Logs,
    stop: CancellationToken,
) {
    let mut attempt = 0usize;
    while !stop.is_cancelled() {
        let url = &urls[attempt % urls.len()];
        attempt += 1;
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            c = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url.as_str())) => c,
        };
        let Ok(Ok((mut ws, _))) = connected else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let code = rust_session(&id, &mut ws, &channels, &logs, &stop).await;
        if stop.is_cancelled() {
            let _ = ws.close(None).await;
            return;
        }
        logs.with(&id, |log| log.disconnects.push(code));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One connection's life; returns the close code (1006 when it just dropped).
async fn rust_session(
    id: &str,
    ws: &mut herald_testkit::Ws,
    channels: &[String],
    logs: &Logs,
    stop: &CancellationToken,
) -> u16 {
    if ws
        .send(Message::text(
            subscribe_frame(id, channels, logs).to_string(),
        ))
        .await
        .is_err()
    {
        return 1006;
    }
    // Channels answered `internal` ("retry later"): subscribed again after a pause.
    let mut retry: BTreeSet<String> = BTreeSet::new();
    let mut retry_at = tokio::time::Instant::now();
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return 1000,
            () = tokio::time::sleep_until(retry_at), if !retry.is_empty() => {
                let channels: Vec<String> = std::mem::take(&mut retry).into_iter().collect();
                let frame = subscribe_frame(id, &channels, logs);
                if ws.send(Message::text(frame.to_string())).await.is_err() {
                    return 1006;
                }
                continue;
            }
            next = ws.next() => next,
        };
        let text = match next {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                return frame.map_or(1005, |f| u16::from(f.code));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return 1006,
        };
        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
            logs.with(id, |log| log.errors.push(format!("not JSON: {text}")));
            continue;
        };
        let channel = frame["channel"].as_str().unwrap_or_default();
        match frame["type"].as_str().unwrap_or_default() {
            "connected" => logs.with(id, |log| log.connections += 1),
            "subscribed" => logs.subscribed(id, channel, &frame["position"], &frame["recovered"]),
            "message" => logs.message(
                id,
                channel,
                &frame["offset"],
                &frame["epoch"],
                frame["data"].clone(),
            ),
            "error" if frame["code"] == "internal" && !channel.is_empty() => {
                logs.with(id, |log| log.internal_errors += 1);
                retry.insert(channel.to_owned());
                retry_at = tokio::time::Instant::now() + Duration::from_millis(200);
            }
            "error" => logs.with(id, |log| log.errors.push(frame.to_string())),
            "pong" | "unsubscribed" => {}
            // A frame this client does not know: whatever tells a client its
            // positions are no longer good (a new epoch, a gap) is an announced gap.
            _ => logs.with(id, |log| {
                log.announced_gaps
                    .push(format!("unknown frame (a signal): {frame}"))
            }),
        }
    }
}

/// `subscribe` for `channels`, each with `since` = the last position this client has, if any.
fn subscribe_frame(id: &str, channels: &[String], logs: &Logs) -> Value {
    let entries: Vec<Value> = channels
        .iter()
        .map(|channel| {
            let since = logs.with(id, |log| {
                let offset = log.last_offset(channel)?;
                let epoch = log
                    .received
                    .get(channel)
                    .and_then(|r| r.last())
                    .map(|r| r.epoch.clone())
                    .or_else(|| {
                        log.first_position
                            .get(channel)
                            .and_then(|p| p.as_ref())
                            .map(|p| p.1.clone())
                    })?;
                Some(json!({"offset": offset, "epoch": epoch}))
            });
            match since {
                Some(since) => json!({"channel": channel, "since": since}),
                None => json!({"channel": channel}),
            }
        })
        .collect();
    json!({"type": "subscribe", "id": 1, "channels": entries})
}

// ------------------------------------------------------------------ tutorial clients

/// A tutorial client of `/ws/notifications`: every text frame written down,
/// reconnecting to the next URL whenever the connection ends. Runs until `stop`.
pub(crate) async fn tutorial_client(
    id: String,
    urls: Vec<String>,
    logs: Logs,
    stop: CancellationToken,
) {
    let mut attempt = 0usize;
    while !stop.is_cancelled() {
        let url = &urls[attempt % urls.len()];
        attempt += 1;
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            c = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url.as_str())) => c,
        };
        let Ok(Ok((mut ws, _))) = connected else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        logs.with(&id, |log| log.connections += 1);
        let code = loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = ws.next() => next,
            };
            match next {
                Some(Ok(Message::Text(text))) => {
                    logs.with(&id, |log| log.texts.push(text.to_string()))
                }
                Some(Ok(Message::Close(frame))) => break frame.map_or(1005, |f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break 1006,
            }
        };
        logs.with(&id, |log| log.disconnects.push(code));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------ TypeScript clients

/// `node`, the Node driver and the built TypeScript client, or a clear message on how to get them.
pub(crate) fn node_setup() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let client = root.join("clients/typescript");
    let driver = client.join("test/chaos/driver.mjs");
    let node = std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("node"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "the chaos test needs Node.js >= 20 on PATH (the TypeScript clients run under it)"
            )
        });
    assert!(
        client.join("dist/index.js").is_file(),
        "the chaos test needs the built TypeScript client: run `npm ci && npm run build` in {}",
        client.display()
    );
    assert!(
        client.join("node_modules/ws").is_dir(),
        "the chaos test needs the TypeScript client's dev dependencies (`ws` for Node 20): run `npm ci` in {}",
        client.display()
    );
    assert!(driver.is_file(), "{} is missing", driver.display());
    (node, driver)
}

/// One Node process running several TypeScript clients.
pub(crate) struct NodeDriver {
    child: Child,
    stdin: Option<ChildStdin>,
    reader: tokio::task::JoinHandle<()>,
}

impl NodeDriver {
    /// Starts the driver with `clients` (id, urls, channels); every line it prints goes into `logs`.
    pub(crate) fn start(
        name: &str,
        clients: &[(String, Vec<String>, Vec<String>)],
        logs: Logs,
    ) -> NodeDriver {
        let (node, driver) = node_setup();
        let plan = json!({"clients": clients.iter().map(|(id, urls, channels)| json!({
            "id": id, "urls": urls, "channels": channels,
        })).collect::<Vec<_>>()});
        let mut child = Command::new(node)
            .arg(driver)
            .arg(plan.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start the Node driver {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                record_driver_line(&logs, &line);
            }
        });
        NodeDriver {
            child,
            stdin,
            reader,
        }
    }

    /// The process id, to SIGSTOP and SIGCONT it.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }

    /// Asks every client of the driver for its counters (recorded as `dropped_by_client`).
    pub(crate) async fn request_stats(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(b"stats\n").await;
            let _ = stdin.flush().await;
        }
    }

    /// Closes stdin (the driver closes its clients and exits) and waits for its last lines.
    pub(crate) async fn stop(mut self) {
        self.stdin = None;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = self.child.kill().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.reader).await;
    }
}

fn record_driver_line(logs: &Logs, line: &str) {
    let Ok(event) = serde_json::from_str::<Value>(line) else {
        eprintln!("chaos: the Node driver printed a non-JSON line: {line}");
        return;
    };
    let id = event["c"].as_str().unwrap_or("?").to_owned();
    let channel = event["ch"].as_str().unwrap_or_default();
    match event["t"].as_str().unwrap_or_default() {
        "msg" => logs.message(&id, channel, &event["o"], &event["e"], event["d"].clone()),
        "subscribed" => logs.subscribed(&id, channel, &event["pos"], &event["rec"]),
        // The same verdict as `subscribed`'s `rec`, already counted there.
        "recovered" => {}
        "state" => match event["state"].as_str() {
            Some("connected") => logs.with(&id, |log| log.connections += 1),
            Some("disconnected") => {
                let code = event["code"].as_u64().unwrap_or(0) as u16;
                logs.with(&id, |log| log.disconnects.push(code))
            }
            _ => {}
        },
        // `internal` means "retry later", and the client does.
        "error" if event["frame"]["code"] == "internal" => {
            logs.with(&id, |log| log.internal_errors += 1)
        }
        "error" => logs.with(&id, |log| log.errors.push(event["frame"].to_string())),
        "signal" => logs.with(&id, |log| {
            log.announced_gaps.push(format!("client signal: {event}"))
        }),
        "stats" => {
            let dropped = event["dropped"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default();
            logs.with(&id, |log| log.dropped_by_client = Some(dropped));
        }
        other => eprintln!("chaos: unknown driver line type {other:?}: {line}"),
    }
}

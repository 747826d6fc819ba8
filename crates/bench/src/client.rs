//! One simulated WebSocket client: connect, then read frames until told to stop.
//!
//! Each client is one tokio task that owns its socket and its
//! [`ClientStats`]: the receive path parses a frame, flips a bit and records a
//! latency, with no lock, channel or allocation of its own. The only shared
//! state is touched once per client, not per message: the connect gate (a
//! semaphore bounding concurrent handshakes), one connect report, and one
//! decrement of [`Progress`] when the client has everything (or is gone).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::payload::now_us;
use crate::tracker::ClientStats;

/// How long one WebSocket handshake may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a client waits for the server's answer to its close frame at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Read buffer per connection: big enough to read many small frames per
/// syscall, small enough that 10,000 connections need only 40 MiB.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// A client only ever writes pongs and a close frame: write them at once.
const WRITE_BUFFER_BYTES: usize = 0;
/// Upper bound of the write buffer (must exceed [`WRITE_BUFFER_BYTES`]).
const MAX_WRITE_BUFFER_BYTES: usize = 64 * 1024;
/// The largest frame or message a client accepts; the bench's own payloads are far smaller.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The WebSocket settings every client uses: small buffers so that many thousands fit in memory.
pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

/// Counts the clients that still wait for messages, and wakes the bench when none does.
#[derive(Debug)]
pub(crate) struct Progress {
    /// Clients neither complete nor gone.
    remaining: AtomicUsize,
    /// Notified when `remaining` reaches zero.
    all_done: Notify,
}

impl Progress {
    /// Progress for `clients` clients, none finished.
    pub(crate) fn new(clients: usize) -> Self {
        Progress {
            remaining: AtomicUsize::new(clients),
            all_done: Notify::new(),
        }
    }

    /// One client has all its messages, failed to connect, or was disconnected.
    fn finished_one(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_done.notify_one();
        }
    }

    /// How many clients still wait for messages.
    pub(crate) fn remaining(&self) -> usize {
        self.remaining.load(Ordering::Acquire)
    }

    /// Resolves once every client has finished.
    pub(crate) async fn wait_all(&self) {
        while self.remaining() > 0 {
            self.all_done.notified().await;
        }
    }
}

/// How a client's connection ended before the bench told it to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Disconnect {
    /// The close code the server sent, if it sent a close frame.
    pub(crate) code: Option<u16>,
    /// The close reason, or the error that ended the connection.
    pub(crate) reason: String,
}

/// Everything one client task hands back at the end.
#[derive(Debug)]
pub(crate) struct ClientOutcome {
    /// The handshake's duration, or why it failed.
    pub(crate) connect: Result<Duration, String>,
    /// What it received.
    pub(crate) stats: ClientStats,
    /// Set if the connection ended before the bench stopped it.
    pub(crate) disconnect: Option<Disconnect>,
}

/// What a client needs besides its statistics.
#[derive(Debug, Clone)]
pub(crate) struct ClientContext {
    /// Bounds concurrent handshakes.
    pub(crate) connect_gate: Arc<Semaphore>,
    /// Receives one connect result per client.
    pub(crate) connected: mpsc::UnboundedSender<Result<Duration, String>>,
    /// Becomes true (or is dropped) when the bench is over.
    pub(crate) stop: watch::Receiver<bool>,
    /// Shared completion count.
    pub(crate) progress: Arc<Progress>,
}

/// Runs one client against `url` until the bench stops it or the server closes the connection.
pub(crate) async fn run_client(
    url: Arc<str>,
    ctx: ClientContext,
    stats: ClientStats,
) -> ClientOutcome {
    let ClientContext {
        connect_gate,
        connected,
        mut stop,
        progress,
    } = ctx;
    let connect = {
        // A closed semaphore only means the bench is being torn down: connect anyway.
        let _permit = connect_gate.acquire().await.ok();
        let started = Instant::now();
        match tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async_with_config(&*url, Some(ws_config()), true),
        )
        .await
        {
            Ok(Ok((ws, _response))) => Ok((ws, started.elapsed())),
            Ok(Err(e)) => Err(format!("{url}: {e}")),
            Err(_) => Err(format!(
                "{url}: handshake timed out after {CONNECT_TIMEOUT:?}"
            )),
        }
    };
    let (mut ws, took) = match connect {
        Ok(ok) => ok,
        Err(e) => {
            progress.finished_one();
            let _ = connected.send(Err(e.clone()));
            return ClientOutcome {
                connect: Err(e),
                stats,
                disconnect: None,
            };
        }
    };
    let _ = connected.send(Ok(took));
    drop(connected);

    let mut stats = stats;
    let mut finished = stats.seqs.is_complete();
    if finished {
        progress.finished_one();
    }
    let mut disconnect = None;
    let stopped = async {
        // Ends when the flag turns true or the bench drops the sender.
        let _ = stop.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if stats.on_frame(text.as_bytes(), now_us()) && !finished {
                        finished = true;
                        progress.finished_one();
                    }
                }
                Some(Ok(Message::Binary(_))) => stats.invalid_frames += 1,
                Some(Ok(Message::Close(frame))) => {
                    disconnect = Some(match frame {
                        Some(f) => Disconnect { code: Some(u16::from(f.code)), reason: f.reason.to_string() },
                        None => Disconnect { code: None, reason: "close frame without code".into() },
                    });
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    disconnect = Some(Disconnect { code: None, reason: e.to_string() });
                    break;
                }
                None => {
                    disconnect = Some(Disconnect { code: None, reason: "connection ended".into() });
                    break;
                }
            },
            _ = &mut stopped => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    if ws.close(None).await.is_ok() {
                        while let Some(Ok(_)) = ws.next().await {}
                    }
                })
                .await;
                break;
            }
        }
    }
    if !finished {
        progress.finished_one();
    }
    ClientOutcome {
        connect: Ok(took),
        stats,
        disconnect,
    }
}

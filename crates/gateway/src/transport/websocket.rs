//! WebSocket: the upgrade, the per-connection task and the tutorial endpoint.
//!
//! One task per connection owns the socket. It waits on four things at once:
//! its queue of frames from the hub, the client's frames, the ping timer and
//! a kick (shutdown, slow consumer). Frames that are already queued are
//! written together and flushed once, so a burst costs one syscall rather than
//! one per message. Every way the connection can end maps to one close code
//! from [`CloseCode`].

use std::collections::VecDeque;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use herald_protocol::{ChannelName, CloseCode, TUTORIAL_CHANNEL};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, timeout};
use tracing::debug;

use crate::client::{ClientReceiver, Frame, client};
use crate::config::GatewayConfig;
use crate::error::ApiError;
use crate::state::AppState;

/// How long a closing handshake may take once the close frame is out.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// `GET /ws/notifications`: the tutorial's endpoint.
///
/// Every message published on the `events` channel reaches the client as one
/// text frame holding exactly the published payload (a binary frame if the
/// payload is not UTF-8). The endpoint only sends; text frames from the client
/// are read and ignored (some clients send keep-alive text), binary frames
/// close the connection with 1003.
pub async fn tutorial_notifications(
    State(state): State<AppState>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection_response(&rejection),
    };
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        let token = state.tasks.token();
        return configure(upgrade, &state.config).on_upgrade(move |mut socket| async move {
            let _token = token;
            close(&mut socket, CloseCode::TooManyConnections, CLOSE_GRACE).await;
        });
    };
    // Subscribed before the handshake completes: once the client sees the
    // upgrade, every message the hub gets from then on reaches it.
    let channel = tutorial_channel();
    let (sender, receiver) = client(state.config.client_queue);
    let id = sender.id;
    state.hub.subscribe(&channel, &sender);
    drop(sender);
    let token = state.tasks.token();
    let hub = state.hub.clone();
    let failed_channel = channel.clone();
    configure(upgrade, &state.config)
        .on_failed_upgrade(move |error| {
            hub.unsubscribe(&failed_channel, id);
            debug!(client = %id, %error, "websocket upgrade failed");
        })
        .on_upgrade(move |socket| async move {
            let _token = token;
            serve_tutorial(socket, state, channel, receiver, permit).await;
        })
}

fn tutorial_channel() -> ChannelName {
    match ChannelName::new(TUTORIAL_CHANNEL) {
        Ok(channel) => channel,
        Err(_) => unreachable!("the tutorial channel name is a valid constant"),
    }
}

/// Applies the instance's limits to an upgrade: small buffers, bounded client frames.
pub fn configure(upgrade: WebSocketUpgrade, config: &GatewayConfig) -> WebSocketUpgrade {
    upgrade
        .read_buffer_size(config.read_buffer_bytes)
        .write_buffer_size(config.write_buffer_bytes)
        // Beyond this the write path errors instead of buffering without bound.
        .max_write_buffer_size(config.write_buffer_bytes.saturating_mul(64).max(1 << 20))
        .max_message_size(config.max_client_message_bytes)
        .max_frame_size(config.max_client_message_bytes)
}

/// The answer to a plain HTTP request on a WebSocket route: a JSON error, not a bare string.
pub fn rejection_response(rejection: &WebSocketUpgradeRejection) -> Response {
    if rejection.status() == StatusCode::METHOD_NOT_ALLOWED {
        return ApiError::MethodNotAllowed(rejection.body_text()).into_response();
    }
    ApiError::UpgradeRequired(rejection.body_text()).into_response()
}

async fn serve_tutorial(
    mut socket: WebSocket,
    state: AppState,
    channel: ChannelName,
    receiver: ClientReceiver,
    _permit: OwnedSemaphorePermit,
) {
    let id = receiver.id;
    debug!(client = %id, "tutorial client connected");
    let ended = drive(&mut socket, receiver, &state, |_text| None).await;
    state.hub.unsubscribe(&channel, id);
    if let Ended::Close(code) = ended {
        debug!(client = %id, %code, "closing");
        // A slow consumer's socket is full: give the close frame as long as any write.
        let grace = if code == CloseCode::SlowConsumer {
            state.config.write_timeout
        } else {
            CLOSE_GRACE
        };
        close(&mut socket, code, grace).await;
    }
    debug!(client = %id, "tutorial client gone");
}

/// How a connection's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client left or its socket failed: nothing more can be said to it.
    Gone,
    /// The server ends the connection with this code.
    Close(CloseCode),
}

/// Runs one connection until it ends: writes queued frames, reads client frames, pings.
///
/// `on_text` sees every text frame the client sends and may end the connection
/// by returning a close code. The client's queue is closed before this returns,
/// so a connection that is still saying goodbye holds no frames.
pub async fn drive(
    socket: &mut WebSocket,
    receiver: ClientReceiver,
    state: &AppState,
    mut on_text: impl FnMut(Utf8Bytes) -> Option<CloseCode>,
) -> Ended {
    let config = &state.config;
    let mut ping =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    // Registered once, not on every turn of the loop.
    let shutdown = state.shutdown.cancelled();
    tokio::pin!(shutdown);
    // Frames taken from the queue; empty (and unallocated) while the client is idle.
    let mut batch = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return Ended::Close(CloseCode::GoingAway),
            taken = receiver.take(&mut batch) => {
                if let Err(code) = taken {
                    return Ended::Close(code);
                }
                match timeout(config.write_timeout, write_batch(socket, &mut batch)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Ended::Gone,
                    Err(_) => return Ended::Close(CloseCode::SlowConsumer),
                }
            }
            incoming = socket.recv() => {
                last_heard = Instant::now();
                match incoming {
                    None | Some(Ok(Message::Close(_))) => return Ended::Gone,
                    Some(Ok(Message::Text(text))) => {
                        if let Some(code) = on_text(text) {
                            return Ended::Close(code);
                        }
                    }
                    Some(Ok(Message::Binary(_))) => return Ended::Close(CloseCode::UnsupportedData),
                    // The library answers pings itself; a pong only proves the client is alive.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Err(error)) => return classify(error).map_or(Ended::Gone, Ended::Close),
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > config.ping_interval + config.pong_timeout {
                    return Ended::Close(CloseCode::PingTimeout);
                }
                match timeout(config.write_timeout, socket.send(Message::Ping(bytes::Bytes::new()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Ended::Gone,
                    Err(_) => return Ended::Close(CloseCode::SlowConsumer),
                }
            }
        }
    }
}

/// Writes every taken frame, then flushes once: a burst costs one write, not one per frame.
async fn write_batch(
    socket: &mut WebSocket,
    batch: &mut VecDeque<Frame>,
) -> Result<(), axum::Error> {
    while let Some(frame) = batch.pop_front() {
        socket.feed(to_message(frame)).await?;
    }
    socket.flush().await
}

fn to_message(frame: Frame) -> Message {
    match frame {
        Frame::Text(text) => Message::Text(text),
        Frame::Binary(bytes) => Message::Binary(bytes),
    }
}

/// Maps a read error to the close code it deserves; `None` when the peer is simply gone.
fn classify(error: axum::Error) -> Option<CloseCode> {
    let Ok(error) = error.into_inner().downcast::<tungstenite::Error>() else {
        return None;
    };
    match *error {
        tungstenite::Error::Capacity(_) => Some(CloseCode::MessageTooBig),
        tungstenite::Error::Utf8(_) => Some(CloseCode::InvalidPayload),
        tungstenite::Error::Protocol(_) => Some(CloseCode::ProtocolError),
        _ => None,
    }
}

/// Sends a close frame with `code` and waits briefly for the client's answer.
///
/// Waiting for the answer matters: closing a TCP socket with unread input makes
/// the kernel send a reset, and a reset can make the client lose the close frame.
pub async fn close(socket: &mut WebSocket, code: CloseCode, grace: Duration) {
    let frame = CloseFrame {
        code: code.code(),
        reason: Utf8Bytes::from_static(code.reason()),
    };
    if !matches!(
        timeout(grace, socket.send(Message::Close(Some(frame)))).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let _ = timeout(CLOSE_GRACE, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

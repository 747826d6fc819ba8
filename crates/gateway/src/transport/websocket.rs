//! WebSocket: the upgrade, the per-connection loop, and its two dialects.
//!
//! One task per connection owns the socket. It waits on five things at once:
//! the client's queue of deliveries from the hub, the client's frames, the
//! ping timer, the token's expiry and the server's shutdown. Deliveries
//! already queued are written together and flushed once, so a burst costs one
//! syscall rather than one per message. What differs between the tutorial's
//! endpoint and the Herald protocol — how a delivery is rendered, what a
//! client frame means — is a [`Session`]; every way a connection ends maps to
//! one code from [`CloseCode`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use herald_protocol::frames::decode_client_frame;
use herald_protocol::{
    ChannelName, ClientFrame, CloseCode, ErrorCode, PROTOCOL_VERSION, ServerFrame, TUTORIAL_CHANNEL,
};
use tokio::time::{Instant, timeout};
use tracing::debug;

use crate::auth::{AuthError, Identity, token_from};
use crate::client::{ClientReceiver, Frame, client};
use crate::config::GatewayConfig;
use crate::delivery::Delivery;
use crate::error::ApiError;
use crate::session::{RateLimit, Refusal, Subscriptions};
use crate::state::AppState;

/// How long a closing handshake may take once the close frame is out.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What a connection does with deliveries and client frames.
pub trait Session: Send {
    /// The message to send for `delivery`, or `None` to skip it (a repeat, or a
    /// channel the client has left since it was queued).
    fn render(&mut self, delivery: &Delivery) -> Option<Message>;

    /// A notice to send before `delivery`, rendered or not (a `gap` frame in the
    /// Herald protocol). The tutorial's dialect has none: it knows no positions.
    fn notice(&mut self, _delivery: &Delivery) -> Option<Message> {
        None
    }

    /// Handles one text frame from the client; may answer on `socket`. An error ends the connection.
    fn on_text(
        &mut self,
        text: Utf8Bytes,
        socket: &mut WebSocket,
        config: &GatewayConfig,
    ) -> impl Future<Output = Result<(), Ended>> + Send;
}

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
        return refuse(upgrade, &state, CloseCode::TooManyConnections);
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
        .on_upgrade(move |mut socket| async move {
            let _token = token;
            let _permit = permit;
            debug!(client = %id, "tutorial client connected");
            let ended = drive(&mut socket, receiver, &state, &mut TutorialSession, None).await;
            state.hub.unsubscribe(&channel, id);
            finish(&mut socket, ended, &state).await;
        })
}

fn tutorial_channel() -> ChannelName {
    match ChannelName::new(TUTORIAL_CHANNEL) {
        Ok(channel) => channel,
        Err(_) => unreachable!("the tutorial channel name is a valid constant"),
    }
}

/// The tutorial's dialect: raw payloads out, client text ignored.
struct TutorialSession;

impl Session for TutorialSession {
    fn render(&mut self, delivery: &Delivery) -> Option<Message> {
        Some(to_message(delivery.tutorial_frame()))
    }

    async fn on_text(
        &mut self,
        _text: Utf8Bytes,
        _socket: &mut WebSocket,
        _config: &GatewayConfig,
    ) -> Result<(), Ended> {
        Ok(())
    }
}

/// The `token` query parameter: how browsers, which cannot set headers on a WebSocket, pass a JWT.
fn query_token(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned())
}

/// `GET /ws`: the Herald protocol (`docs/protocol.md`).
pub async fn herald(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection_response(&rejection),
    };
    let query_token = query_token(query.as_deref());
    // Refused after the upgrade, with a close code, because a browser sees
    // nothing of an HTTP error on a WebSocket handshake.
    let identity = match state
        .config
        .auth
        .authenticate(token_from(&headers, query_token.as_deref()))
    {
        Ok(identity) => identity,
        Err(AuthError::Expired) => return refuse(upgrade, &state, CloseCode::TokenExpired),
        Err(AuthError::Invalid(why)) => {
            debug!(%why, "refusing a token");
            return refuse(upgrade, &state, CloseCode::Unauthorized);
        }
    };
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        return refuse(upgrade, &state, CloseCode::TooManyConnections);
    };
    let token = state.tasks.token();
    configure(upgrade, &state.config).on_upgrade(move |mut socket| async move {
        let _token = token;
        let _permit = permit;
        let (sender, receiver) = client(state.config.client_queue);
        let id = receiver.id;
        let connected = ServerFrame::Connected {
            protocol: PROTOCOL_VERSION,
            client_id: id.to_string(),
            instance_id: state.config.instance_id.clone(),
            user: identity.user.clone(),
            ping_interval_ms: u64::try_from(state.config.ping_interval.as_millis())
                .unwrap_or(u64::MAX),
        };
        if send_text(&mut socket, connected.to_json(), state.config.write_timeout)
            .await
            .is_err()
        {
            return;
        }
        let expires = identity.expires_in().map(|left| Instant::now() + left);
        let mut session = HeraldSession {
            subscriptions: Subscriptions::new(state.hub.clone(), sender),
            identity,
            state: state.clone(),
            limit: RateLimit::per_second(state.config.client_frame_rate),
        };
        debug!(client = %id, "herald client connected");
        let ended = drive(&mut socket, receiver, &state, &mut session, expires).await;
        drop(session);
        finish(&mut socket, ended, &state).await;
    })
}

/// The Herald protocol's dialect.
struct HeraldSession {
    subscriptions: Subscriptions,
    identity: Identity,
    state: AppState,
    limit: RateLimit,
}

impl Session for HeraldSession {
    fn render(&mut self, delivery: &Delivery) -> Option<Message> {
        self.subscriptions
            .admit(delivery)
            .then(|| Message::Text(delivery.herald_frame()))
    }

    fn notice(&mut self, delivery: &Delivery) -> Option<Message> {
        let gap = self.subscriptions.notice(delivery)?;
        Some(Message::Text(gap.to_json().into()))
    }

    async fn on_text(
        &mut self,
        text: Utf8Bytes,
        socket: &mut WebSocket,
        config: &GatewayConfig,
    ) -> Result<(), Ended> {
        if !self.limit.allow() {
            return Err(Ended::Close(CloseCode::TooManyRequests));
        }
        let frame =
            decode_client_frame(text.as_str()).map_err(|_| Ended::Close(CloseCode::BadFrame))?;
        let wait = config.write_timeout;
        match frame {
            ClientFrame::Subscribe { id, channels } => {
                if channels.is_empty() {
                    return send_text(
                        socket,
                        error_frame(
                            id,
                            None,
                            ErrorCode::BadRequest,
                            "subscribe names no channel",
                        ),
                        wait,
                    )
                    .await;
                }
                for wanted in channels {
                    match self
                        .subscriptions
                        .subscribe(
                            &self.state,
                            &self.identity,
                            &wanted.channel,
                            wanted.since.as_ref(),
                        )
                        .await
                    {
                        Ok(subscribed) => {
                            let frame = ServerFrame::Subscribed {
                                id,
                                channel: subscribed.channel.to_string(),
                                position: subscribed.position,
                                recovered: subscribed.recovered,
                            };
                            send_text(socket, frame.to_json(), wait).await?;
                            for missed in subscribed.missed {
                                send_text(socket, missed.herald_frame(), wait).await?;
                            }
                        }
                        Err(refusal) => {
                            send_text(socket, refusal_frame(id, &wanted.channel, refusal), wait)
                                .await?
                        }
                    }
                }
                Ok(())
            }
            ClientFrame::Unsubscribe { id, channels } => {
                for name in channels {
                    let reply = match self.subscriptions.unsubscribe(&name) {
                        Ok(channel) => ServerFrame::Unsubscribed {
                            id,
                            channel: channel.to_string(),
                        }
                        .to_json(),
                        Err(refusal) => refusal_frame(id, &name, refusal),
                    };
                    send_text(socket, reply, wait).await?;
                }
                Ok(())
            }
            ClientFrame::Ping { id } => {
                send_text(socket, ServerFrame::Pong { id }.to_json(), wait).await
            }
        }
    }
}

fn error_frame(id: Option<u64>, channel: Option<&str>, code: ErrorCode, message: &str) -> String {
    ServerFrame::Error {
        id,
        channel: channel.map(str::to_owned),
        code,
        message: message.to_owned(),
    }
    .to_json()
}

fn refusal_frame(id: Option<u64>, channel: &str, refusal: Refusal) -> String {
    // A name that is not a channel is not echoed back in full.
    let channel: String = channel
        .chars()
        .take(herald_protocol::channel::MAX_CHANNEL_LEN)
        .collect();
    error_frame(id, Some(&channel), refusal.code, &refusal.message)
}

async fn send_text(
    socket: &mut WebSocket,
    text: impl Into<Utf8Bytes>,
    wait: Duration,
) -> Result<(), Ended> {
    match timeout(wait, socket.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        // A failed socket cannot hear a close code.
        Ok(Err(_)) => Err(Ended::Gone),
        Err(_) => Err(Ended::Close(CloseCode::SlowConsumer)),
    }
}

/// Accepts the upgrade only to close it at once with `code`.
fn refuse(upgrade: WebSocketUpgrade, state: &AppState, code: CloseCode) -> Response {
    let token = state.tasks.token();
    configure(upgrade, &state.config).on_upgrade(move |mut socket| async move {
        let _token = token;
        close(&mut socket, code, CLOSE_GRACE).await;
    })
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

async fn finish(socket: &mut WebSocket, ended: Ended, state: &AppState) {
    if let Ended::Close(code) = ended {
        debug!(%code, "closing");
        state.metrics.closed(code);
        // A slow consumer's socket is full: give the close frame as long as any write.
        let grace = if code == CloseCode::SlowConsumer {
            state.config.write_timeout
        } else {
            CLOSE_GRACE
        };
        close(socket, code, grace).await;
    }
}

/// How a connection's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client left or its socket failed: nothing more can be said to it.
    Gone,
    /// The server ends the connection with this code.
    Close(CloseCode),
}

/// Runs one connection until it ends: writes queued deliveries, reads client frames, pings.
///
/// `expires` is when the client's token expires. The client's queue is closed
/// before this returns, so a connection that is still saying goodbye holds no
/// deliveries.
pub async fn drive(
    socket: &mut WebSocket,
    receiver: ClientReceiver,
    state: &AppState,
    session: &mut impl Session,
    expires: Option<Instant>,
) -> Ended {
    let config = &state.config;
    let mut ping =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    // Registered once, not on every turn of the loop.
    let shutdown = state.shutdown.cancelled();
    tokio::pin!(shutdown);
    let expiry = async move {
        match expires {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expiry);
    // Deliveries taken from the queue; empty (and unallocated) while the client is idle.
    let mut batch = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return Ended::Close(CloseCode::GoingAway),
            () = &mut expiry => return Ended::Close(CloseCode::TokenExpired),
            taken = receiver.take(&mut batch) => {
                if let Err(code) = taken {
                    return Ended::Close(code);
                }
                match timeout(config.write_timeout, write_batch(socket, &mut batch, session)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Ended::Gone,
                    Err(_) => return Ended::Close(CloseCode::SlowConsumer),
                }
            }
            incoming = socket.recv() => {
                last_heard = Instant::now();
                match incoming {
                    None => return Ended::Gone,
                    Some(Ok(Message::Close(_))) => {
                        // The library queued the echo of the client's close frame; send it, so
                        // the client sees a clean close with its own code.
                        let _ = timeout(CLOSE_GRACE, socket.flush()).await;
                        return Ended::Gone;
                    }
                    Some(Ok(Message::Text(text))) => {
                        if let Err(ended) = session.on_text(text, socket, config).await {
                            return ended;
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

/// Writes every taken delivery the session renders, then flushes once: a burst
/// costs one write, not one per message.
async fn write_batch(
    socket: &mut WebSocket,
    batch: &mut VecDeque<Arc<Delivery>>,
    session: &mut impl Session,
) -> Result<(), axum::Error> {
    while let Some(delivery) = batch.pop_front() {
        if let Some(notice) = session.notice(&delivery) {
            socket.feed(notice).await?;
        }
        // A gap notice is never rendered as a message, whatever the dialect.
        if delivery.is_gap() {
            continue;
        }
        if let Some(message) = session.render(&delivery) {
            socket.feed(message).await?;
        }
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

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

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use herald_protocol::frames::{SubscribeTo, decode_client_frame};
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

    /// A new expiry set by the last frame (an in-band `auth`): `Some(None)` when the
    /// connection no longer expires, `None` when nothing changed.
    fn renewed_deadline(&mut self) -> Option<Option<Instant>> {
        None
    }
}

/// `GET /ws/notifications`: the tutorial's endpoint.
///
/// Every message published on the `events` channel reaches the client as one
/// text frame holding exactly the published payload (a binary frame if the
/// payload is not UTF-8). The endpoint only sends; text frames from the client
/// are read and ignored (some clients send keep-alive text) within the same
/// rate and size limits as `/ws`, binary frames close the connection with 1003.
/// When a JWT key is configured, `events` is read under the same policy as on
/// `/ws` (see [`tutorial_admission`]).
pub async fn tutorial_notifications(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(refused) = state.config.allowed_origins.check(&headers) {
        return refused.into_response();
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection_response(&rejection),
    };
    let expires = match tutorial_admission(&state, &headers, query.as_deref()).await {
        Ok(identity) => identity.expires_in().map(|left| Instant::now() + left),
        Err(code) => return refuse(upgrade, &state, code),
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
            let mut session = TutorialSession {
                limit: RateLimit::per_second(state.config.client_frame_rate),
            };
            let ended = drive(&mut socket, receiver, &state, &mut session, expires).await;
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

/// Who a tutorial client is, or the close code that refuses it — the same codes as `/ws`.
///
/// Without a JWT key every client is anonymous and the endpoint is open, as
/// the tutorial expects. With one, reading `events` takes what subscribing to
/// it on `/ws` takes: a token (header or `?token=`) that grants it, or `events`
/// marked public. The refusal is a close code after the upgrade, as on `/ws`,
/// because a browser sees nothing of an HTTP error on a WebSocket handshake;
/// a client that may not read `events` gets 4004, like a client whose token
/// is refused.
async fn tutorial_admission(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Identity, CloseCode> {
    // Without a JWT key every client is anonymous: the tutorial's endpoint stays open.
    if !state.config.auth.is_configured() {
        return Ok(Identity::anonymous());
    }
    let query_token = query_token(query);
    let identity = match state
        .config
        .auth
        .verify(token_from(headers, query_token.as_deref()))
        .await
    {
        Ok(identity) => identity,
        Err(AuthError::Expired) => return Err(CloseCode::TokenExpired),
        Err(AuthError::Invalid(why)) => {
            debug!(%why, "refusing a tutorial client's token");
            return Err(CloseCode::Unauthorized);
        }
    };
    match state
        .config
        .channels
        .authorize(&identity, &tutorial_channel())
    {
        Ok(()) => Ok(identity),
        Err(why) => {
            debug!(%why, "refusing a tutorial client");
            Err(CloseCode::Unauthorized)
        }
    }
}

/// The tutorial's dialect: raw payloads out, client text ignored within the rate limit.
struct TutorialSession {
    /// Ignored frames still cost reading them: the same budget as on `/ws`.
    limit: RateLimit,
}

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
        if self.limit.allow() {
            Ok(())
        } else {
            Err(Ended::Close(CloseCode::TooManyRequests))
        }
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
    if let Err(refused) = state.config.allowed_origins.check(&headers) {
        return refused.into_response();
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection_response(&rejection),
    };
    let query_token = query_token(query.as_deref());
    // Refused after the upgrade, with a close code, because a browser sees
    // nothing of an HTTP error on a WebSocket handshake.
    let handshake =
        match handshake_from_request(&state, token_from(&headers, query_token.as_deref())).await {
            Ok(handshake) => handshake,
            Err(code) => return refuse(upgrade, &state, code),
        };
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        return refuse(upgrade, &state, CloseCode::TooManyConnections);
    };
    let token = state.tasks.token();
    configure(upgrade, &state.config).on_upgrade(move |mut socket| async move {
        let _token = token;
        let _permit = permit;
        let (identity, first) = match settle_identity(&mut socket, &state, handshake).await {
            Ok(settled) => settled,
            Err(ended) => return finish(&mut socket, ended, &state).await,
        };
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
        let expires = identity.deadline();
        let mut session = HeraldSession {
            subscriptions: Subscriptions::new(state.hub.clone(), sender),
            identity,
            state: state.clone(),
            limit: RateLimit::per_second(state.config.client_frame_rate),
            renewed: None,
        };
        debug!(client = %id, "herald client connected");
        if let Some(first) = first
            && let Err(ended) = session.on_first_frame(first, &mut socket).await
        {
            drop(session);
            return finish(&mut socket, ended, &state).await;
        }
        let ended = drive(&mut socket, receiver, &state, &mut session, expires).await;
        drop(session);
        finish(&mut socket, ended, &state).await;
    })
}

/// How a `/ws` connection's identity gets settled.
#[derive(Debug)]
enum Handshake {
    /// From the request (header or `?token=`), or anonymous where that is all there can be.
    Settled(Identity),
    /// From the client's first frame, awaited for `--auth-timeout`.
    FirstFrame,
}

/// Checks the request's token; without one, decides whether to wait for an `auth` frame.
///
/// The wait is only for a gateway with a key and no public channel: there an
/// anonymous client can read nothing, so no client of today loses anything by
/// it. Where channels are public, an anonymous client gets `connected` at once
/// (as it always did), and may still send `auth` as its first frame.
async fn handshake_from_request(
    state: &AppState,
    token: Option<&str>,
) -> Result<Handshake, CloseCode> {
    let auth = &state.config.auth;
    if token.is_none() && auth.is_configured() && state.config.channels.public.is_empty() {
        return Ok(Handshake::FirstFrame);
    }
    auth.verify(token)
        .await
        .map(Handshake::Settled)
        .map_err(refusal_code)
}

fn refusal_code(error: AuthError) -> CloseCode {
    match error {
        AuthError::Expired => CloseCode::TokenExpired,
        AuthError::Invalid(why) => {
            debug!(%why, "refusing a token");
            CloseCode::Unauthorized
        }
    }
}

/// The connection's identity, and a first client frame still to handle.
///
/// Waiting for the first frame: an `auth` frame with a token is verified (and
/// answered with `authenticated` after `connected`); `auth` without one, or any
/// other frame, makes the client anonymous, and that other frame is handled
/// once connected — so a client that subscribes at once keeps working.
async fn settle_identity(
    socket: &mut WebSocket,
    state: &AppState,
    handshake: Handshake,
) -> Result<(Identity, Option<Utf8Bytes>), Ended> {
    if let Handshake::Settled(identity) = handshake {
        return Ok((identity, None));
    }
    let deadline = Instant::now() + state.config.auth_timeout;
    loop {
        let next = tokio::select! {
            () = state.shutdown.cancelled() => return Err(Ended::Close(CloseCode::GoingAway)),
            next = tokio::time::timeout_at(deadline, socket.recv()) => next,
        };
        let Ok(next) = next else {
            return Err(Ended::Close(CloseCode::AuthTimeout));
        };
        match next {
            None | Some(Ok(Message::Close(_))) => return Err(Ended::Gone),
            Some(Ok(Message::Text(text))) => {
                let frame = decode_client_frame(text.as_str())
                    .map_err(|_| Ended::Close(CloseCode::BadFrame))?;
                return match frame {
                    ClientFrame::Auth {
                        token: Some(token), ..
                    } => state
                        .config
                        .auth
                        .verify(Some(&token))
                        .await
                        .map(|identity| (identity, Some(text)))
                        .map_err(|e| Ended::Close(refusal_code(e))),
                    _ => Ok((Identity::anonymous(), Some(text))),
                };
            }
            Some(Ok(Message::Binary(_))) => return Err(Ended::Close(CloseCode::UnsupportedData)),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Err(error)) => return Err(classify(error).map_or(Ended::Gone, Ended::Close)),
        }
    }
}

/// The Herald protocol's dialect.
struct HeraldSession {
    subscriptions: Subscriptions,
    identity: Identity,
    state: AppState,
    limit: RateLimit,
    /// A deadline changed by an in-band `auth`, not yet seen by the connection loop.
    renewed: Option<Option<Instant>>,
}

impl HeraldSession {
    /// Handles the frame that settled the identity: an `auth` frame already verified
    /// is only answered; any other frame is handled like every later one.
    async fn on_first_frame(
        &mut self,
        text: Utf8Bytes,
        socket: &mut WebSocket,
    ) -> Result<(), Ended> {
        if let Ok(ClientFrame::Auth { id, .. }) = decode_client_frame(text.as_str()) {
            return send_text(
                socket,
                self.authenticated(id),
                self.state.config.write_timeout,
            )
            .await;
        }
        let config = self.state.config.clone();
        self.on_text(text, socket, &config).await
    }

    /// An in-band `auth` after `connected`: the same rules as at connect; a token
    /// of another user is refused (the connection stays as it was).
    async fn reauthenticate(
        &mut self,
        id: Option<u64>,
        token: Option<String>,
        socket: &mut WebSocket,
    ) -> Result<(), Ended> {
        let wait = self.state.config.write_timeout;
        if let Some(token) = token {
            let identity = self
                .state
                .config
                .auth
                .verify(Some(&token))
                .await
                .map_err(|e| Ended::Close(refusal_code(e)))?;
            if self.identity.user.is_some() && self.identity.user != identity.user {
                let message = "a connection's user cannot change; reconnect with the other token";
                return send_text(
                    socket,
                    error_frame(id, None, ErrorCode::Forbidden, message),
                    wait,
                )
                .await;
            }
            self.renewed = Some(identity.deadline());
            self.identity = identity;
        }
        send_text(socket, self.authenticated(id), wait).await
    }

    fn authenticated(&self, id: Option<u64>) -> String {
        ServerFrame::Authenticated {
            id,
            user: self.identity.user.clone(),
            expires_in_ms: self
                .identity
                .expires_in()
                .map(|left| u64::try_from(left.as_millis()).unwrap_or(u64::MAX)),
        }
        .to_json()
    }
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
                let channels = match distinct_entries(channels, config.max_subscriptions) {
                    Ok(channels) => channels,
                    Err(why) => {
                        return send_text(
                            socket,
                            error_frame(id, None, ErrorCode::BadRequest, &why),
                            wait,
                        )
                        .await;
                    }
                };
                for (index, wanted) in channels.into_iter().enumerate() {
                    // The frame's own token paid for its first channel.
                    if index > 0 {
                        self.pace().await?;
                    }
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
            ClientFrame::Auth { id, token } => self.reauthenticate(id, token, socket).await,
        }
    }

    fn renewed_deadline(&mut self) -> Option<Option<Instant>> {
        self.renewed.take()
    }
}

impl HeraldSession {
    /// Charges one more channel of a `subscribe` to the client's rate budget,
    /// waiting for the token when the budget is spent (see [`RateLimit::take`]).
    async fn pace(&mut self) -> Result<(), Ended> {
        tokio::select! {
            biased;
            () = self.state.shutdown.cancelled() => Err(Ended::Close(CloseCode::GoingAway)),
            () = self.limit.take() => Ok(()),
        }
    }
}

/// The channels of one `subscribe` frame as they are served: each channel once,
/// the first entry naming it winning (its `since` is the one used), at most
/// `max` of them (a client cannot hold more). Each entry is one subscription
/// and possibly one history read, so a frame repeating a channel must not do
/// the work twice; a frame naming too many is refused whole, with nothing subscribed.
fn distinct_entries(entries: Vec<SubscribeTo>, max: usize) -> Result<Vec<SubscribeTo>, String> {
    if entries.is_empty() {
        return Err("subscribe names no channel".to_owned());
    }
    let mut seen = HashSet::new();
    let mut distinct = Vec::new();
    for entry in entries {
        if seen.contains(entry.channel.as_str()) {
            continue;
        }
        if distinct.len() == max {
            return Err(format!(
                "a subscribe frame may name at most {max} distinct channels"
            ));
        }
        seen.insert(entry.channel.clone());
        distinct.push(entry);
    }
    Ok(distinct)
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
    // Re-armed when an in-band `auth` renews the token; disarmed without an expiry.
    let mut expiring = expires.is_some();
    let expiry = tokio::time::sleep_until(expires.unwrap_or_else(Instant::now));
    tokio::pin!(expiry);
    // Deliveries taken from the queue; empty (and unallocated) while the client is idle.
    let mut batch = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return Ended::Close(CloseCode::GoingAway),
            () = &mut expiry, if expiring => return Ended::Close(CloseCode::TokenExpired),
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
                        if let Some(renewed) = session.renewed_deadline() {
                            expiring = renewed.is_some();
                            if let Some(at) = renewed {
                                expiry.as_mut().reset(at);
                            }
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
        if delivery.gap().is_some() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(channel: &str, since: Option<u64>) -> SubscribeTo {
        SubscribeTo {
            channel: channel.to_owned(),
            since: since.map(|offset| herald_protocol::Position::new(offset, "e")),
        }
    }

    #[test]
    fn a_subscribe_serves_each_channel_once_the_first_entry_winning() {
        let entries = vec![
            entry("news:a", Some(3)),
            entry("news:b", None),
            entry("news:a", Some(1)),
            entry("news:a", None),
        ];
        assert_eq!(
            distinct_entries(entries, 2).unwrap(),
            [entry("news:a", Some(3)), entry("news:b", None)]
        );
        // 200 copies of one channel are one channel, whatever the cap.
        let copies = vec![entry("news:amp", Some(0)); 200];
        assert_eq!(distinct_entries(copies, 1).unwrap().len(), 1);
    }

    #[test]
    fn a_subscribe_naming_too_many_or_no_channels_is_refused() {
        let three = vec![entry("a", None), entry("b", None), entry("c", None)];
        assert!(distinct_entries(three.clone(), 2).is_err());
        assert_eq!(distinct_entries(three, 3).unwrap().len(), 3);
        assert!(distinct_entries(Vec::new(), 3).is_err());
    }
}

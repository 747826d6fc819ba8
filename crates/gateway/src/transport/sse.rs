//! Server-Sent Events: the Herald protocol's subscriptions over a plain HTTP response.
//!
//! `GET /sse?channel=A&channel=B` streams `text/event-stream`. Every message
//! event's `id:` holds the position of every channel of the stream, so a
//! browser's `EventSource`, which sends the last id back as `Last-Event-ID`
//! when it reconnects, recovers everything it missed without any code on the
//! page. A task per stream does what the WebSocket loop does: drain the
//! client's queue, filter repeats, ping (as SSE comments, which also keep
//! proxies from closing an idle stream), and stop on shutdown or expiry — or
//! when a subscribe fails, so that `EventSource` reconnects instead of
//! holding a stream that will never deliver that channel.

use std::collections::VecDeque;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use herald_protocol::position::{decode_sse_id, encode_sse_id};
use herald_protocol::{ChannelName, PROTOCOL_VERSION, Position, ServerFrame};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::{Instant, timeout};
use tracing::debug;

use crate::auth::{AuthError, Identity, token_from};
use crate::client::client;
use crate::delivery::Delivery;
use crate::error::ApiError;
use crate::session::{Refusal, Subscriptions};
use crate::state::AppState;
use crate::transport::sse_event;

/// Chunks that may wait for the HTTP layer to write them; the byte bound per stream.
const STREAM_BUFFER: usize = 16;

/// How long `EventSource` waits before it reconnects a stream that ended, in milliseconds.
const RETRY_MS: u64 = 1000;

/// After a failed subscribe, the shortest wait before reconnecting, in milliseconds…
const RETRY_AFTER_REFUSAL_MS: u64 = 2000;

/// …plus up to this much at random, so the streams of an instance whose bus
/// failed do not all come back in the same instant.
const RETRY_JITTER_MS: u64 = 3000;

/// What the client asked for, validated.
struct Request {
    identity: Identity,
    channels: Vec<ChannelName>,
    /// Per channel, in order: where to recover from.
    since: Vec<Option<Position>>,
    /// The client gave a resume id that could not be read: report recovery as incomplete.
    unreadable_since: bool,
}

/// `GET /sse`.
pub async fn sse(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(refused) = state.config.allowed_origins.check(&headers) {
        return refused.into_response();
    }
    let request = match validate(&state, &headers, query.as_deref().unwrap_or("")).await {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        return ApiError::TooManyConnections.into_response();
    };
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_BUFFER);
    state
        .tasks
        .spawn(stream(state.clone(), request, tx, permit));
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
    }));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx would otherwise buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

async fn validate(state: &AppState, headers: &HeaderMap, query: &str) -> Result<Request, ApiError> {
    let mut names = Vec::new();
    let (mut token, mut since_param) = (None, None);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "channel" => names.push(value.into_owned()),
            "token" => token = Some(value.into_owned()),
            "since" => since_param = Some(value.into_owned()),
            _ => {}
        }
    }
    let identity = match state
        .config
        .auth
        .verify(token_from(headers, token.as_deref()))
        .await
    {
        Ok(identity) => identity,
        Err(AuthError::Expired) => return Err(ApiError::TokenExpired),
        Err(AuthError::Invalid(why)) => return Err(ApiError::Unauthorized(why)),
    };
    if names.is_empty() {
        return Err(ApiError::BadRequest(
            "name at least one channel: /sse?channel=NAME".to_owned(),
        ));
    }
    if names.len() > state.config.max_subscriptions {
        return Err(ApiError::Unprocessable(format!(
            "at most {} channels per client",
            state.config.max_subscriptions
        )));
    }
    let mut channels = Vec::with_capacity(names.len());
    for name in &names {
        let channel =
            ChannelName::new(name).map_err(|e| ApiError::InvalidChannel(e.to_string()))?;
        state
            .config
            .channels
            .authorize(&identity, &channel)
            .map_err(ApiError::Forbidden)?;
        if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    // The browser's own resume id wins over the one the page passed at first.
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(since_param);
    let (since, unreadable_since) = match resume {
        None => (vec![None; channels.len()], false),
        Some(id) => match decode_sse_id(&id, channels.len()) {
            Some(positions) => (positions, false),
            None => (vec![None; channels.len()], true),
        },
    };
    Ok(Request {
        identity,
        channels,
        since,
        unreadable_since,
    })
}

/// Feeds one stream until the client leaves, the token expires or the server stops.
async fn stream(
    state: AppState,
    request: Request,
    tx: mpsc::Sender<Bytes>,
    _permit: OwnedSemaphorePermit,
) {
    let wait = state.config.write_timeout;
    let send = |chunk: Bytes| {
        let tx = tx.clone();
        async move { matches!(timeout(wait, tx.send(chunk)).await, Ok(Ok(()))) }
    };
    let (sender, receiver) = client(state.config.client_queue);
    let id = receiver.id;
    let mut subscriptions = Subscriptions::new(state.hub.clone(), sender);
    let connected = json!({"protocol": PROTOCOL_VERSION, "client_id": id.to_string(), "instance_id": state.config.instance_id, "user": request.identity.user});
    if !send(sse_event::retry(RETRY_MS)).await
        || !send(sse_event::event("connected", &connected.to_string())).await
    {
        return;
    }
    for (channel, since) in request.channels.iter().zip(&request.since) {
        // Positions a channel had before this stream (from the resume id) count as sent.
        let wanted_recovery = since.is_some() || request.unreadable_since;
        match subscriptions
            .subscribe(&state, &request.identity, channel.as_str(), since.as_ref())
            .await
        {
            Ok(subscribed) => {
                let recovered = if request.unreadable_since {
                    Some(false)
                } else {
                    subscribed.recovered.filter(|_| wanted_recovery)
                };
                let frame = json!({"channel": channel.as_str(), "position": subscribed.position, "recovered": recovered});
                if !send(sse_event::event("subscribed", &frame.to_string())).await {
                    return;
                }
                for missed in subscribed.missed {
                    let line = id_line(
                        &subscriptions,
                        &request.channels,
                        &request.since,
                        Some((channel, missed.position())),
                    );
                    if !send(line).await || !send(missed.sse_event()).await {
                        return;
                    }
                }
            }
            Err(refusal) => {
                refused(channel, refusal, &send).await;
                return;
            }
        }
    }
    let mut ping = tokio::time::interval_at(
        Instant::now() + state.config.ping_interval,
        state.config.ping_interval,
    );
    // A token valid for longer than an `Instant` can count never expires in practice.
    let expires = request
        .identity
        .expires_in()
        .and_then(|left| Instant::now().checked_add(left));
    let expiry = async move {
        match expires {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expiry);
    let shutdown = state.shutdown.cancelled();
    tokio::pin!(shutdown);
    let mut batch = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = tx.closed() => break,
            () = &mut expiry => {
                let _ = send(sse_event::event("error", r#"{"type":"error","code":"token_expired","message":"token expired"}"#)).await;
                break;
            }
            taken = receiver.take(&mut batch) => {
                if taken.is_err() {
                    break;
                }
                while let Some(delivery) = batch.pop_front() {
                    if let Some(event) = gap_event(&mut subscriptions, &request, &delivery)
                        && !send(event).await
                    {
                        return;
                    }
                    if subscriptions.admit(&delivery) {
                        let line = id_line(&subscriptions, &request.channels, &request.since, None);
                        if !send(line).await || !send(delivery.sse_event()).await {
                            debug!(client = %id, "sse client too slow or gone");
                            return;
                        }
                    }
                }
            }
            _ = ping.tick() => {
                if !send(Bytes::from_static(b": ping\n\n")).await {
                    break;
                }
            }
        }
    }
    debug!(client = %id, "sse stream ended");
}

/// The `event: gap` to send before `delivery`, when the client's position on its
/// channel has become void; its `id:` already holds the position the gap announces,
/// so an `EventSource` that reconnects after it resumes from there.
fn gap_event(
    subscriptions: &mut Subscriptions,
    request: &Request,
    delivery: &Delivery,
) -> Option<Bytes> {
    let gap = subscriptions.notice(delivery)?;
    let mut event = id_line(subscriptions, &request.channels, &request.since, None).to_vec();
    event.extend_from_slice(&sse_event::event("gap", &gap.to_json()));
    Some(Bytes::from(event))
}

/// The `id:` line: every channel's position, with `overriding` one channel's (for recovered messages).
///
/// A channel not subscribed yet keeps the position the stream resumed from
/// (`since`): if the stream ends before that channel's subscribe (the bus
/// failed, the client left), the browser's next `Last-Event-ID` must still
/// recover it from there, not start it afresh.
fn id_line(
    subscriptions: &Subscriptions,
    channels: &[ChannelName],
    since: &[Option<Position>],
    overriding: Option<(&ChannelName, Option<&Position>)>,
) -> Bytes {
    let positions = channels
        .iter()
        .zip(since)
        .map(|(channel, since)| match overriding {
            Some((over, position)) if over == channel => position,
            _ => subscriptions.position(channel).or(since.as_ref()),
        });
    Bytes::from(format!("id: {}\n", encode_sse_id(positions)))
}

/// Ends a stream whose subscribe failed: the error event, then a `retry:` hint.
///
/// A subscribe on SSE fails only when the bus or the history cannot answer
/// (names, policy and limits were checked before the stream began). The
/// stream must not stay open without that channel: it would receive nothing
/// on it for as long as it lives, and `EventSource`, seeing pings, would never
/// reconnect. Ending it makes the browser come back after the hint, with the
/// `Last-Event-ID` of the last message it got, and recover everything from
/// there once the bus answers again.
async fn refused<F, Fut>(channel: &ChannelName, refusal: Refusal, send: &F)
where
    F: Fn(Bytes) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    debug!(%channel, code = ?refusal.code, "sse subscribe failed; ending the stream");
    let frame = ServerFrame::Error {
        id: None,
        channel: Some(channel.to_string()),
        code: refusal.code,
        message: refusal.message,
    };
    if send(sse_event::event("error", &frame.to_json())).await {
        let jitter =
            std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), channel.as_str())
                % RETRY_JITTER_MS;
        let _ = send(sse_event::retry(RETRY_AFTER_REFUSAL_MS + jitter)).await;
    }
}

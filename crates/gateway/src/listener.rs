//! Accepting and serving HTTP connections, within limits.
//!
//! Every client — a WebSocket, an SSE stream, a health probe, a half-open
//! socket from an attacker — first costs one TCP connection and one file
//! descriptor, before any handler runs. So the limits that keep an instance
//! alive live here, at the socket, not in the routes:
//!
//! - **Time.** A connection must deliver a complete request head within the
//!   header-read timeout (counted from accept, or from its first byte on a
//!   kept-alive connection), may sit idle between requests for the idle
//!   timeout, and must complete a WebSocket upgrade within the handshake
//!   timeout. A slowloris or an idle socket is closed, without an answer.
//! - **Count.** At most `http` connections are served, of every kind. The
//!   number is derived from the process's open-file limit so `accept` never
//!   runs out of descriptors first (see [`ConnectionBudget`]).
//! - **Per client address.** One address may hold at most
//!   `max_connections_per_ip`; the address is the TCP peer, or for a
//!   `--trusted-proxy` peer the client it forwards (counted per WebSocket or
//!   SSE request, because one proxy connection carries many clients).
//! - **Refusals are immediate.** Past the per-address cap the socket is closed
//!   at once. Past the global cap a few overflow slots still read one request:
//!   `/healthz`, `/readyz` and `/metrics` are answered (an instance at its
//!   cap is alive, and its probes must say so), anything else gets
//!   `503 too_many_connections` with `Retry-After`. Past those, the socket is
//!   closed at once. Nobody waits in the kernel's backlog for a slot.
//! - **Shutdown is bounded.** Idle connections close at once, requests in
//!   flight may finish, and whatever is still open at the shutdown timeout is
//!   dropped — a half-sent request cannot keep the process alive.
//!
//! Handlers still see `ConnectInfo<SocketAddr>`, inserted into each request
//! the way axum's `into_make_service_with_connect_info` does.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::error::ErrorBody;
use crate::peer::TrustedProxies;

/// File descriptors kept out of the connection budget for everything else the
/// process opens: the listener, the runtime, Redis connections, log output,
/// static files of the web app and upstream connections of the content proxy.
pub const RESERVED_FDS: u64 = 128;

/// Connections accepted past the cap only to answer them: probes are served,
/// everyone else gets a prompt 503. Their descriptors come out of the budget too.
pub const OVERFLOW_CONNECTIONS: usize = 32;

/// How long an overflow connection may take to send its one request.
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// `Retry-After` of a refusal, in seconds: long enough for slots to free up.
const RETRY_AFTER_SECONDS: &str = "5";

/// How long `accept` rests after a failure that is not one client's fault
/// (out of descriptors or memory), so a full table does not spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one log line per this period about failing `accept`s.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// The socket-level limits and timeouts of one gateway instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// How long a connection may take to send a complete request head, counted
    /// from accept (or from the first byte of a later request on a kept-alive
    /// connection). Slower ones are closed without an answer.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait between requests.
    pub idle_timeout: Duration,
    /// How long from accept (or the previous response) to a completed WebSocket upgrade.
    pub ws_handshake_timeout: Duration,
    /// Concurrent TCP connections of every kind; `None` derives it from the
    /// open-file limit, and a larger value is lowered to what that limit allows.
    pub max_http_connections: Option<usize>,
    /// Concurrent connections of one client address; 0 turns the cap off.
    pub max_connections_per_ip: usize,
    /// How long shutdown may take, from the signal to the last connection closed.
    pub shutdown_timeout: Duration,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ws_handshake_timeout: Duration::from_secs(10),
            max_http_connections: None,
            // Generous for one NAT'd office of browsers (a tab holds one or two
            // connections), small next to the tens of thousands an instance holds.
            max_connections_per_ip: 256,
            shutdown_timeout: Duration::from_secs(15),
        }
    }
}

/// How many connections this process can really hold.
///
/// Each connection is a file descriptor, and past the open-file limit
/// `accept` fails: new clients then wait in the backlog until their own
/// timeout, and the health probe with them. So both caps are lowered to
/// what the limit allows, after [`RESERVED_FDS`] and the overflow slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionBudget {
    /// TCP connections of every kind served normally.
    pub http: usize,
    /// WebSocket and SSE clients (`--max-connections`, closed with 4003 beyond it).
    pub streams: usize,
    /// The soft open-file limit read at start, if there is one.
    pub open_files: Option<u64>,
}

impl ConnectionBudget {
    /// The budget for the asked caps under this process's open-file limit.
    pub fn for_this_process(max_http: Option<usize>, max_streams: usize) -> (Self, Vec<String>) {
        Self::plan(max_http, max_streams, open_file_limit())
    }

    /// The budget for the asked caps under `open_files`, with a warning for each
    /// cap that asks for more than the limit allows.
    pub fn plan(
        max_http: Option<usize>,
        max_streams: usize,
        open_files: Option<u64>,
    ) -> (Self, Vec<String>) {
        let mut warnings = Vec::new();
        let allowed = open_files.map(|limit| {
            let spare = limit.saturating_sub(RESERVED_FDS + OVERFLOW_CONNECTIONS as u64);
            usize::try_from(spare).unwrap_or(usize::MAX).max(1)
        });
        let http = match (max_http, allowed) {
            (Some(asked), Some(allowed)) if asked > allowed => {
                warnings.push(format!(
                    "--max-http-connections {asked} is more than the open-file limit ({}) allows; \
                     holding at most {allowed} (raise `ulimit -n` to hold more)",
                    open_files.unwrap_or_default()
                ));
                allowed
            }
            (Some(asked), _) => asked,
            (None, Some(allowed)) => allowed,
            (None, None) => Semaphore::MAX_PERMITS,
        };
        let http = http.clamp(1, Semaphore::MAX_PERMITS);
        let streams = if max_streams > http {
            let why = match (max_http, open_files) {
                (Some(asked), _) if asked <= http => format!("--max-http-connections {http}"),
                (_, Some(limit)) => format!("the open-file limit ({limit})"),
                _ => format!("{http} connections"),
            };
            warnings.push(format!(
                "--max-connections {max_streams} is more than {why} allows; \
                 holding at most {http} WebSocket and SSE clients"
            ));
            http
        } else {
            max_streams
        };
        let budget = ConnectionBudget {
            http,
            streams,
            open_files,
        };
        (budget, warnings)
    }
}

/// The soft `RLIMIT_NOFILE` of this process; `None` when unlimited.
fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The timeouts a connection's watchdog enforces.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    /// Request head, from accept or first byte.
    header: Duration,
    /// Between requests.
    idle: Duration,
    /// From accept (or previous response) to a completed upgrade.
    handshake: Duration,
}

/// Everything the accept loop and its connections share.
#[derive(Debug)]
pub struct Listener {
    /// Timeouts of normal connections.
    timeouts: Timeouts,
    /// Bound on the whole shutdown.
    shutdown_timeout: Duration,
    /// One permit per normally served connection.
    http: Arc<Semaphore>,
    /// One permit per overflow connection (answered, then closed).
    overflow: Arc<Semaphore>,
    /// Concurrent connections per client address.
    per_ip: Arc<PerIp>,
    /// Whose forwarded client address is believed.
    trusted: TrustedProxies,
    /// The cap on normally served connections.
    capacity: usize,
}

impl Listener {
    /// Limits for `config` with `budget.http` connection slots.
    pub fn new(config: &ListenerConfig, budget: ConnectionBudget, trusted: TrustedProxies) -> Self {
        Listener {
            timeouts: Timeouts {
                header: config.header_read_timeout,
                idle: config.idle_timeout,
                handshake: config.ws_handshake_timeout,
            },
            shutdown_timeout: config.shutdown_timeout,
            http: Arc::new(Semaphore::new(budget.http)),
            overflow: Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS)),
            per_ip: Arc::new(PerIp {
                cap: config.max_connections_per_ip,
                counts: Mutex::new(HashMap::new()),
            }),
            trusted,
            capacity: budget.http,
        }
    }

    /// The cap on normally served TCP connections.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// TCP connections served now (not counting overflow ones).
    pub fn open_connections(&self) -> usize {
        self.capacity.saturating_sub(self.http.available_permits())
    }

    /// Accepts and serves connections on `listener` with `router` until `shutdown`
    /// fires; then stops accepting, lets open connections finish and drops the
    /// rest at the shutdown timeout. Returns that deadline, which the caller's own
    /// shutdown steps share.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        router: Router,
        shutdown: CancellationToken,
    ) -> Instant {
        let connections = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        let mut accept_errors = AcceptErrors::default();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.cancelled() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.admit(stream, peer, &router, &connections, &shutdown, &hard_stop);
                }
                Err(error) => accept_errors.rest(error).await,
            }
        }
        // Closing the listening socket refuses new clients at once; a load
        // balancer moves them elsewhere instead of letting them queue here.
        drop(listener);
        let deadline = Instant::now() + self.shutdown_timeout;
        connections.close();
        if tokio::time::timeout_at(deadline, connections.wait())
            .await
            .is_err()
        {
            warn!(
                open = connections.len(),
                "HTTP connections still open at the shutdown timeout; closing them"
            );
            hard_stop.cancel();
            connections.wait().await;
        }
        deadline
    }

    /// Decides what to do with a new connection: serve it, serve it as overflow, or close it.
    fn admit(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        router: &Router,
        connections: &TaskTracker,
        shutdown: &CancellationToken,
        hard_stop: &CancellationToken,
    ) {
        let ip = peer.ip().to_canonical();
        // A trusted proxy carries many clients; they are counted per request instead.
        let ip_slot = if self.trusted.is_trusted(ip) {
            IpSlot::default()
        } else {
            match self.per_ip.try_acquire(ip) {
                Some(slot) => slot,
                None => {
                    debug!(%peer, "connection refused: too many from this address");
                    return;
                }
            }
        };
        let (permit, overflow) = match self.http.clone().try_acquire_owned() {
            Ok(permit) => (permit, false),
            Err(_) => match self.overflow.clone().try_acquire_owned() {
                Ok(permit) => (permit, true),
                Err(_) => {
                    debug!(%peer, "connection refused: at the connection cap and overflow is full");
                    return;
                }
            },
        };
        let conn = Arc::new(Conn::new());
        let io = Tracked {
            stream,
            conn: conn.clone(),
            _permit: permit,
            _ip_slot: ip_slot,
        };
        let task = Connection {
            listener: self.clone(),
            router: router.clone(),
            conn,
            peer,
            overflow,
        };
        connections.spawn(task.run(io, shutdown.clone(), hard_stop.clone()));
    }
}

/// Failing `accept`s that are not one client's doing, logged at most every [`ACCEPT_LOG_EVERY`].
#[derive(Debug, Default)]
struct AcceptErrors {
    /// Failures since the last log line.
    unlogged: u64,
    /// When the last line was logged.
    logged_at: Option<Instant>,
}

impl AcceptErrors {
    /// Notes `error` and, unless it concerned only the one client, rests before the next accept.
    async fn rest(&mut self, error: io::Error) {
        // The client gave up between its connect and our accept: nothing to wait for.
        if matches!(
            error.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionRefused
        ) {
            return;
        }
        self.unlogged += 1;
        if self
            .logged_at
            .is_none_or(|at| at.elapsed() >= ACCEPT_LOG_EVERY)
        {
            warn!(%error, failures = self.unlogged, "accept failed; backing off");
            self.unlogged = 0;
            self.logged_at = Some(Instant::now());
        }
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }
}

/// Open connections per client address, for the per-address cap.
#[derive(Debug)]
struct PerIp {
    /// The cap; 0 means none.
    cap: usize,
    /// Holds only addresses with a connection open, so it is bounded by the connection cap.
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    /// A slot for one more connection of `ip`, or `None` if it holds its cap already.
    fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        if self.cap == 0 {
            return Some(IpSlot::default());
        }
        let mut counts = lock(&self.counts);
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            owner: Some((self.clone(), ip)),
        })
    }
}

/// One connection's place in the per-address count, given back on drop.
#[derive(Debug, Default)]
struct IpSlot {
    /// The counter and the address; `None` for an uncounted connection.
    owner: Option<(Arc<PerIp>, IpAddr)>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some((per_ip, ip)) = self.owner.take() {
            let mut counts = lock(&per_ip.counts);
            if let Some(count) = counts.get_mut(&ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}

/// Locks `mutex`; no code panics while holding these locks, so a poisoned one is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a connection's watchdog needs to know about its HTTP phase.
#[derive(Debug)]
struct Clock {
    /// Requests whose response has not been fully written.
    in_flight: usize,
    /// Since when the connection waits for a request: accept, or the end of the last response.
    idle_since: Instant,
    /// The first byte of the next request, once one arrived.
    first_byte: Option<Instant>,
    /// Whether a response was completed (then the wait is idle time, not header time).
    served: bool,
    /// When an upgrade request in flight must have completed.
    upgrade_by: Option<Instant>,
}

/// One connection's shared state: its clock, and the forwarded client's slot it may hold.
#[derive(Debug)]
struct Conn {
    /// The watchdog's inputs.
    clock: Mutex<Clock>,
    /// Wakes the watchdog when the clock changes.
    changed: Notify,
    /// Whether the HTTP phase is on (reads are then noted on the clock).
    watching: AtomicBool,
    /// A forwarded client's per-address slot, held for as long as an upgraded connection lives.
    held: Mutex<Option<IpSlot>>,
}

impl Conn {
    fn new() -> Self {
        Conn {
            clock: Mutex::new(Clock {
                in_flight: 0,
                idle_since: Instant::now(),
                first_byte: None,
                served: false,
                upgrade_by: None,
            }),
            changed: Notify::new(),
            watching: AtomicBool::new(true),
            held: Mutex::new(None),
        }
    }

    /// When the connection must be closed if nothing changes; `None` while a request is served.
    fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        let clock = lock(&self.clock);
        if clock.in_flight > 0 {
            return clock.upgrade_by;
        }
        Some(match clock.first_byte {
            Some(at) => at + timeouts.header,
            None if clock.served => clock.idle_since + timeouts.idle,
            None => clock.idle_since + timeouts.header,
        })
    }

    /// Bytes arrived: if no request is being served they start the next request's head.
    fn saw_bytes(&self) {
        if !self.watching.load(Ordering::Relaxed) {
            return;
        }
        let mut clock = lock(&self.clock);
        if clock.in_flight == 0 && clock.first_byte.is_none() {
            clock.first_byte = Some(Instant::now());
            drop(clock);
            self.changed.notify_one();
        }
    }

    /// A request head is complete and goes to the router.
    fn request_started(&self, upgrade: bool, handshake: Duration) {
        let mut clock = lock(&self.clock);
        clock.in_flight += 1;
        clock.first_byte = None;
        if upgrade {
            clock.upgrade_by = Some(clock.idle_since + handshake);
        }
        drop(clock);
        self.changed.notify_one();
    }

    /// Whether the upgrade in flight has missed its deadline.
    fn upgrade_expired(&self) -> bool {
        lock(&self.clock)
            .upgrade_by
            .is_some_and(|by| by <= Instant::now())
    }

    /// A response was fully written (or abandoned).
    fn request_finished(&self) {
        let mut clock = lock(&self.clock);
        clock.in_flight = clock.in_flight.saturating_sub(1);
        if clock.in_flight == 0 {
            clock.idle_since = Instant::now();
            clock.served = true;
            clock.upgrade_by = None;
        }
        drop(clock);
        self.changed.notify_one();
    }
}

/// A client's TCP stream, noting reads on the connection's clock and holding its slots.
///
/// After an upgrade the WebSocket owns this object, so the connection's
/// permit and per-address slot are given back only when the socket closes.
#[derive(Debug)]
struct Tracked {
    /// The socket.
    stream: TcpStream,
    /// The clock reads are noted on.
    conn: Arc<Conn>,
    /// The connection's place under the cap (or in overflow).
    _permit: OwnedSemaphorePermit,
    /// The connection's place under its address's cap.
    _ip_slot: IpSlot,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.saw_bytes();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// One accepted connection and what serving it needs.
#[derive(Debug)]
struct Connection {
    /// Limits and the per-address counter.
    listener: Arc<Listener>,
    /// The routes.
    router: Router,
    /// The clock.
    conn: Arc<Conn>,
    /// The TCP peer.
    peer: SocketAddr,
    /// Whether this connection came past the cap (probes only; one request, then closed).
    overflow: bool,
}

impl Connection {
    /// Serves HTTP on `io` until the client leaves, a timeout closes it, it is upgraded,
    /// or the shutdown timeout passes.
    async fn run(self, io: Tracked, shutdown: CancellationToken, hard_stop: CancellationToken) {
        let timeouts = if self.overflow {
            Timeouts {
                header: self.listener.timeouts.header.min(OVERFLOW_HEADER_TIMEOUT),
                ..self.listener.timeouts
            }
        } else {
            self.listener.timeouts
        };
        let conn = self.conn.clone();
        let peer = self.peer;
        let overflow = self.overflow;
        let this = Arc::new(self);
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let this = this.clone();
            async move { this.handle(request).await }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // The watchdog below times heads: hyper's own timer would also
            // count idle keep-alive time as header time.
            .header_read_timeout(None)
            // An overflow connection gets one answer, then its slot goes to the next prober.
            .keep_alive(!overflow);
        let served = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(served);
        let mut draining = false;
        loop {
            let deadline = conn.deadline(&timeouts);
            let expired = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = served.as_mut() => {
                    if let Err(error) = result {
                        debug!(%peer, %error, "connection ended with an error");
                    }
                    break;
                }
                () = expired => {
                    if conn.deadline(&timeouts).is_some_and(|at| at <= Instant::now()) {
                        debug!(%peer, "closing a connection that sent no complete request in time");
                        break;
                    }
                }
                () = conn.changed.notified() => {}
                () = shutdown.cancelled(), if !draining => {
                    draining = true;
                    served.as_mut().graceful_shutdown();
                }
                () = hard_stop.cancelled() => break,
            }
        }
        conn.watching.store(false, Ordering::Relaxed);
    }

    /// Serves one request: refuses it if this connection or its forwarded client is
    /// over a cap, else hands it to the router with `ConnectInfo` attached. An
    /// upgrade whose handshake time is already spent ends the connection unanswered.
    async fn handle(
        &self,
        mut request: Request<Incoming>,
    ) -> Result<Response<Guarded>, HandshakeExpired> {
        let upgrade = request.headers().contains_key(header::UPGRADE);
        self.conn
            .request_started(upgrade, self.listener.timeouts.handshake);
        let mut guard = RequestGuard {
            conn: self.conn.clone(),
            slot: None,
        };
        if upgrade && self.conn.upgrade_expired() {
            return Err(HandshakeExpired);
        }
        if self.overflow && !is_probe(request.uri().path()) {
            return Ok(refusal(
                "this instance is at its connection limit; retry later",
                guard,
            ));
        }
        let peer_ip = self.peer.ip().to_canonical();
        if self.listener.trusted.is_trusted(peer_ip) && is_stream(&request, upgrade) {
            let client = self.listener.trusted.client_ip(peer_ip, request.headers());
            match self.listener.per_ip.try_acquire(client) {
                Some(slot) => guard.slot = Some(slot),
                None => {
                    return Ok(refusal(
                        "too many connections from this client address; retry later",
                        guard,
                    ));
                }
            }
        }
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let response = match self.router.clone().oneshot(request.map(Body::new)).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The client now lives as long as the socket, not the (empty) response.
            *lock(&self.conn.held) = guard.slot.take();
        }
        Ok(response.map(|inner| Guarded {
            inner,
            _guard: guard,
        }))
    }
}

/// A WebSocket upgrade that arrived after its handshake time was spent; hyper
/// closes a connection whose service fails, without an answer.
#[derive(Debug, thiserror::Error)]
#[error("the WebSocket handshake took longer than the handshake timeout")]
struct HandshakeExpired;

/// The operational endpoints that must answer even at the connection cap.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Whether a request opens a long-lived stream (a WebSocket or SSE) that counts per client address.
fn is_stream<B>(request: &Request<B>, upgrade: bool) -> bool {
    upgrade
        || request.uri().path() == "/sse"
        || request
            .headers()
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok())
            .is_some_and(|accept| accept.contains("text/event-stream"))
}

/// `503 too_many_connections` with `Retry-After`, closing the connection.
fn refusal(message: &str, guard: RequestGuard) -> Response<Guarded> {
    let body = ErrorBody {
        error: "too_many_connections",
        message: message.to_owned(),
    };
    // Serializing two strings cannot fail; an empty body would still carry the status.
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = Response::new(Guarded {
        inner: Body::from(json),
        _guard: guard,
    });
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECONDS),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Marks its request finished when hyper is done with the response body, and
/// holds a forwarded client's per-address slot for as long as a stream lasts.
#[derive(Debug)]
struct RequestGuard {
    /// The connection whose clock is told.
    conn: Arc<Conn>,
    /// A forwarded client's slot (SSE: held by the streaming body).
    slot: Option<IpSlot>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.conn.request_finished();
    }
}

/// A response body that carries its request's [`RequestGuard`].
#[derive(Debug)]
struct Guarded {
    /// The router's body.
    inner: Body,
    /// Dropped with the body, when the response is written or abandoned.
    _guard: RequestGuard,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_follow_the_open_file_limit() {
        let (budget, warnings) = ConnectionBudget::plan(None, 100_000, Some(20_000));
        assert_eq!(budget.http, 20_000 - 128 - 32);
        assert_eq!(budget.streams, budget.http);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("--max-connections 100000"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_flag_within_the_limit_is_kept_without_warning() {
        let (budget, warnings) = ConnectionBudget::plan(Some(500), 400, Some(20_000));
        assert_eq!((budget.http, budget.streams), (500, 400));
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn a_flag_above_the_limit_is_lowered_with_a_warning() {
        let (budget, warnings) = ConnectionBudget::plan(Some(10_000), 10_000, Some(1_024));
        assert_eq!(budget.http, 1_024 - 160);
        assert_eq!(budget.streams, budget.http);
        assert!(
            warnings[0].contains("--max-http-connections 10000"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_tiny_limit_still_leaves_one_connection() {
        let (budget, _) = ConnectionBudget::plan(None, 10, Some(64));
        assert_eq!((budget.http, budget.streams), (1, 1));
    }

    #[test]
    fn per_address_slots_are_counted_and_given_back() {
        let per_ip = Arc::new(PerIp {
            cap: 2,
            counts: Mutex::new(HashMap::new()),
        });
        let a: IpAddr = "192.0.2.1".parse().expect("address");
        let b: IpAddr = "192.0.2.2".parse().expect("address");
        let first = per_ip.try_acquire(a).expect("first");
        let _second = per_ip.try_acquire(a).expect("second");
        assert!(
            per_ip.try_acquire(a).is_none(),
            "third from the same address"
        );
        let _other = per_ip
            .try_acquire(b)
            .expect("another address has its own cap");
        drop(first);
        let _again = per_ip.try_acquire(a).expect("a slot came back");
        drop(_again);
        drop(_second);
        drop(_other);
        assert!(
            lock(&per_ip.counts).is_empty(),
            "no entry outlives its connections"
        );
    }

    #[test]
    fn a_zero_cap_counts_nothing() {
        let per_ip = Arc::new(PerIp {
            cap: 0,
            counts: Mutex::new(HashMap::new()),
        });
        let ip: IpAddr = "192.0.2.1".parse().expect("address");
        let slots: Vec<_> = (0..1000).filter_map(|_| per_ip.try_acquire(ip)).collect();
        assert_eq!(slots.len(), 1000);
        assert!(lock(&per_ip.counts).is_empty());
    }
}

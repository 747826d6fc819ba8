//! The gateway's settings: every limit and timing in one typed struct.
//!
//! The binary fills it from flags and `HERALD_*` variables; tests build it
//! directly. Every field has a default chosen for tens of thousands of
//! mostly idle browser connections on a small machine.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Authenticator;
use crate::listener::ListenerConfig;
use crate::origin::AllowedOrigins;
use crate::peer::TrustedProxies;
use crate::policy::ChannelPolicy;

/// Settings of one gateway instance.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The name this instance reports to clients and in `/healthz`, so a user can tell instances apart.
    pub instance_id: String,
    /// Connections beyond this are closed at once with close code 4003, so an instance
    /// under a connection storm keeps serving the clients it already has.
    pub max_connections: usize,
    /// Frames that may wait for one client's socket. A client whose queue is full
    /// is a slow consumer: it is disconnected rather than allowed to hold memory
    /// or delay anyone else.
    pub client_queue: usize,
    /// The largest frame or message a client may send, in bytes; larger ones close the
    /// connection with 1009. Clients only ever send small control frames.
    pub max_client_message_bytes: usize,
    /// How often the server pings each client.
    pub ping_interval: Duration,
    /// How long past a ping the client may stay silent before it is dropped with 4001.
    pub pong_timeout: Duration,
    /// How long one batched write (or a close frame) may take before the client is
    /// dropped as a slow consumer.
    pub write_timeout: Duration,
    /// Per-connection read buffer. The WebSocket library's default is 128 KiB per
    /// connection, which alone would cost over a GiB at 10,000 idle clients.
    /// Clients send only small control frames, and the library zero-fills this
    /// buffer before every read attempt, so small is cheaper twice: 1 KiB measured
    /// 3.8 KiB per idle connection against 6.8 KiB with 4 KiB (`docs/benchmarks.md`).
    pub read_buffer_bytes: usize,
    /// Outgoing bytes buffered before a write reaches the socket; several queued
    /// frames are flushed together up to this size.
    pub write_buffer_bytes: usize,
    /// Checks client tokens; anonymous-only by default.
    pub auth: Arc<Authenticator>,
    /// Which channels are public and which keep history.
    pub channels: ChannelPolicy,
    /// Bearer keys that may use the publish API; with none, the API refuses everyone.
    pub api_keys: Vec<String>,
    /// How long a publish's idempotency key is remembered.
    pub idempotency_window: Duration,
    /// Channels one client may hold at once.
    pub max_subscriptions: usize,
    /// Frames per second a client may send on average (bursts of twice that pass);
    /// beyond it the connection closes with 4006.
    pub client_frame_rate: u32,
    /// The largest publish API request body, in bytes.
    pub max_publish_bytes: usize,
    /// How long a subscribe may wait for the bus to confirm before it fails with `internal`.
    pub subscribe_timeout: Duration,
    /// Proxies whose `X-Forwarded-For` names the real client (for per-IP limits and
    /// the headers sent upstream); nobody's by default.
    pub trusted_proxies: TrustedProxies,
    /// How long a `/ws` connection that must authenticate in-band (auth configured,
    /// no token in the request, no public channel) may take to send its first frame
    /// before it is closed with 4007.
    pub auth_timeout: Duration,
    /// History reads for recovery that may run at once on this instance; more queue,
    /// so a reconnect storm cannot flood the history store.
    pub max_concurrent_recoveries: usize,
    /// Browser origins, besides the request's own host, whose pages may open the
    /// WebSocket and SSE routes.
    pub allowed_origins: AllowedOrigins,
    /// Socket-level timeouts and caps: header read, idle, handshake, connections, shutdown.
    pub listener: ListenerConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            instance_id: "herald".to_owned(),
            max_connections: 100_000,
            client_queue: 1024,
            max_client_message_bytes: 64 * 1024,
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            read_buffer_bytes: 1024,
            write_buffer_bytes: 32 * 1024,
            auth: Arc::new(Authenticator::anonymous_only()),
            channels: ChannelPolicy::default(),
            api_keys: Vec::new(),
            idempotency_window: Duration::from_secs(300),
            max_subscriptions: 128,
            client_frame_rate: 20,
            max_publish_bytes: 64 * 1024,
            subscribe_timeout: Duration::from_secs(5),
            trusted_proxies: TrustedProxies::default(),
            auth_timeout: Duration::from_secs(5),
            max_concurrent_recoveries: crate::recovery::DEFAULT_MAX_CONCURRENT_RECOVERIES,
            allowed_origins: AllowedOrigins::default(),
            listener: ListenerConfig::default(),
        }
    }
}

/// This machine's host name, for the default instance id; `herald` if it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "herald".to_owned())
}

//! `herald gateway`: flags, defaults and start-up of one gateway instance.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use herald_broker::RedisBrokerConfig;
use herald_gateway::listener::ListenerConfig;
use herald_gateway::{Gateway, GatewayConfig};

use crate::signals::cancel_on_signal;

/// Flags of `herald gateway`.
#[derive(Debug, Args)]
pub(crate) struct GatewayArgs {
    /// Address to listen on.
    #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,

    /// The event bus: `memory://` (this process only) or `redis://HOST:PORT[/DB]`.
    #[arg(long, env = "HERALD_BROKER", default_value = "memory://")]
    pub(crate) broker: String,

    /// Name of this instance, shown to clients and in /healthz [default: HOSTNAME:PORT].
    #[arg(long, env = "HERALD_INSTANCE_ID")]
    pub(crate) instance_id: Option<String>,

    /// Most WebSocket and SSE clients this instance holds; more are closed with code 4003
    /// (lowered to what the open-file limit allows).
    #[arg(long, env = "HERALD_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub(crate) max_connections: usize,

    /// Frames that may wait for one client; a client whose queue overflows is closed with 4000 (slow consumer).
    #[arg(long, env = "HERALD_CLIENT_QUEUE", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) client_queue: u32,

    /// Largest message a client may send, in bytes; larger ones close the connection with 1009.
    #[arg(long, env = "HERALD_MAX_CLIENT_MESSAGE_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(128..=16_777_216))]
    pub(crate) max_client_message_bytes: u32,

    /// How often the server pings each client (e.g. `25s`).
    #[arg(long, env = "HERALD_PING_INTERVAL", default_value = "25s", value_parser = positive_duration)]
    pub(crate) ping_interval: Duration,

    /// How long past a ping a silent client is kept before it is closed with 4001.
    #[arg(long, env = "HERALD_PONG_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub(crate) pong_timeout: Duration,

    /// How long one write to a client may take before it is closed as a slow consumer.
    #[arg(long, env = "HERALD_WRITE_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub(crate) write_timeout: Duration,

    /// Per-connection read buffer in bytes (the main per-connection memory cost).
    #[arg(long, env = "HERALD_READ_BUFFER_BYTES", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(512..=1_048_576))]
    pub(crate) read_buffer_bytes: u32,

    /// How often the Redis subscriber connection is pinged to prove it is alive.
    #[arg(long, env = "HERALD_BROKER_PING_INTERVAL", default_value = "3s", value_parser = positive_duration)]
    pub(crate) broker_ping_interval: Duration,

    /// How long any Redis command (ping, subscribe, publish) may take before the connection is deemed dead.
    #[arg(long, env = "HERALD_BROKER_TIMEOUT", default_value = "2s", value_parser = positive_duration)]
    pub(crate) broker_timeout: Duration,

    /// Authentication, channels, history and publishing.
    #[command(flatten)]
    pub(crate) protocol: crate::protocol_flags::ProtocolArgs,

    /// The longest wait between two reconnect attempts to Redis (waits double from 100ms, with jitter).
    #[arg(long, env = "HERALD_BROKER_RECONNECT_MAX", default_value = "5s", value_parser = positive_duration)]
    pub(crate) broker_reconnect_max: Duration,

    /// Address or network (`10.0.0.0/8`) of a proxy in front of the gateway whose
    /// `X-Forwarded-For` names the real client; repeatable. Others' headers are ignored.
    #[arg(
        long = "trusted-proxy",
        env = "HERALD_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub(crate) trusted_proxies: Vec<String>,

    /// How long a connection may take to send a complete request head; slower ones are closed.
    #[arg(long, env = "HERALD_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub(crate) header_read_timeout: Duration,

    /// How long a kept-alive HTTP connection may wait for its next request before it is closed.
    #[arg(long, env = "HERALD_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = positive_duration)]
    pub(crate) http_idle_timeout: Duration,

    /// How long from accepting a connection to a completed WebSocket upgrade.
    #[arg(long, env = "HERALD_WS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub(crate) ws_handshake_timeout: Duration,

    /// Most TCP connections of every kind (WebSocket, SSE, plain HTTP) [default: open-file limit - 160].
    #[arg(long, env = "HERALD_MAX_HTTP_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_http_connections: Option<u64>,

    /// Most concurrent connections from one client address (behind --trusted-proxy, the forwarded one); 0 = no cap.
    #[arg(long, env = "HERALD_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub(crate) max_connections_per_ip: usize,

    /// The web app and the content proxy.
    #[command(flatten)]
    pub(crate) edge: crate::edge_flags::EdgeArgs,
}

/// Parses a duration like `250ms`, `25s` or `1m`, refusing zero.
pub(crate) fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 500ms, 25s, 1m)"))?;
    if duration.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(duration)
}

impl GatewayArgs {
    fn gateway_config(&self, shutdown_timeout: Duration) -> Result<GatewayConfig> {
        let protocol = &self.protocol;
        Ok(GatewayConfig {
            auth: protocol.authenticator()?,
            channels: protocol.channel_policy()?,
            api_keys: protocol.api_keys.clone(),
            idempotency_window: protocol.idempotency_window,
            max_subscriptions: protocol.max_subscriptions as usize,
            client_frame_rate: protocol.client_frame_rate,
            max_publish_bytes: protocol.max_publish_bytes as usize,
            auth_timeout: protocol.auth_timeout,
            instance_id: self.instance_id.clone().unwrap_or_else(|| {
                format!(
                    "{}:{}",
                    herald_gateway::config::hostname(),
                    self.listen.port()
                )
            }),
            max_connections: self.max_connections,
            client_queue: self.client_queue as usize,
            max_client_message_bytes: self.max_client_message_bytes as usize,
            ping_interval: self.ping_interval,
            pong_timeout: self.pong_timeout,
            write_timeout: self.write_timeout,
            read_buffer_bytes: self.read_buffer_bytes as usize,
            trusted_proxies: herald_gateway::peer::TrustedProxies::parse(
                self.trusted_proxies.iter().map(String::as_str),
            )
            .context("--trusted-proxy")?,
            max_concurrent_recoveries: protocol.max_concurrent_recoveries as usize,
            allowed_origins: protocol.allowed_origins()?,
            listener: ListenerConfig {
                header_read_timeout: self.header_read_timeout,
                idle_timeout: self.http_idle_timeout,
                ws_handshake_timeout: self.ws_handshake_timeout,
                max_http_connections: self
                    .max_http_connections
                    .map(|cap| usize::try_from(cap).unwrap_or(usize::MAX)),
                max_connections_per_ip: self.max_connections_per_ip,
                shutdown_timeout,
            },
            ..GatewayConfig::default()
        })
    }

    fn broker_config(&self) -> RedisBrokerConfig {
        RedisBrokerConfig {
            ping_interval: self.broker_ping_interval,
            command_timeout: self.broker_timeout,
            connect_timeout: self.broker_timeout,
            reconnect_max: self.broker_reconnect_max,
            ..RedisBrokerConfig::default()
        }
    }
}

/// Runs a gateway until SIGINT or SIGTERM.
pub(crate) async fn run(args: GatewayArgs, shutdown_timeout: Duration) -> Result<()> {
    let (broker, inbox) = herald_broker::connect(&args.broker, args.broker_config())
        .with_context(|| format!("--broker {}", args.broker))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let gateway = Gateway::new(args.gateway_config(shutdown_timeout)?, broker, inbox);
    cancel_on_signal(gateway.shutdown_token());
    let router = gateway
        .router()
        .merge(args.edge.router(&gateway.state().config)?);
    gateway.serve(listener, router).await.context("serving")?;
    Ok(())
}

//! The command-line surface of `herald bench`, and the checks that turn
//! nonsensical settings into a clear error before any socket is opened.

use std::collections::BTreeSet;

use tokio_tungstenite::tungstenite::http::Uri;

use crate::BenchError;

/// The gateway endpoint used when no `--url` is given.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:8080/ws/notifications";
/// The most clients one bench process opens.
///
/// Each client is one socket, and a process may hold about 19,500 of them
/// here (its open-file limit is 20,000, and a few are needed for Redis and
/// the runtime). For more clients, run several bench processes side by side.
pub const MAX_CLIENTS_PER_PROCESS: usize = 19_500;
/// The most memory the per-client loss bitsets (one bit per message per client) may take.
pub const MAX_BITSET_BYTES: u64 = 2 << 30;

/// Settings of one bench run; every flag can also come from a `HERALD_BENCH_*` variable.
///
/// One process holds at most [`MAX_CLIENTS_PER_PROCESS`] clients (about
/// 19,500 sockets); for more, run several bench processes at once, each with
/// its own share of `--clients`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Gateway WebSocket URL; repeat it (or give a comma-separated list) to spread clients round-robin over several.
    #[arg(long = "url", env = "HERALD_BENCH_URL", value_delimiter = ',', default_value = DEFAULT_URL)]
    pub urls: Vec<String>,
    /// How many WebSocket clients to connect.
    #[arg(long, env = "HERALD_BENCH_CLIENTS", default_value_t = 1000)]
    pub clients: usize,
    /// Messages published per second.
    #[arg(long, env = "HERALD_BENCH_RATE", default_value_t = 1000.0)]
    pub rate: f64,
    /// How many messages to publish in total.
    #[arg(long, env = "HERALD_BENCH_MESSAGES", default_value_t = 10_000)]
    pub messages: u64,
    /// Size of each payload in bytes (raised to the smallest size that holds the sequence number and timestamp).
    #[arg(long, env = "HERALD_BENCH_PAYLOAD_BYTES", default_value_t = 100)]
    pub payload_bytes: usize,
    /// The Redis server the gateway subscribes to.
    #[arg(
        long,
        env = "HERALD_BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// The Redis channel to publish on.
    #[arg(long, env = "HERALD_BENCH_CHANNEL", default_value = "events")]
    pub channel: String,
    /// Process id of a gateway whose memory and CPU to measure; repeat for several.
    #[arg(
        long = "server-pid",
        env = "HERALD_BENCH_SERVER_PID",
        value_delimiter = ','
    )]
    pub server_pids: Vec<u32>,
    /// Print one JSON object instead of a table.
    #[arg(long, env = "HERALD_BENCH_JSON")]
    pub json: bool,
    /// How many WebSocket handshakes may be in progress at once.
    #[arg(long, env = "HERALD_BENCH_CONNECT_CONCURRENCY", default_value_t = 200)]
    pub connect_concurrency: usize,
    /// After the last publish, how long to wait for outstanding deliveries.
    #[arg(long, env = "HERALD_BENCH_DRAIN_TIMEOUT_SECS", default_value_t = 10)]
    pub drain_timeout_secs: u64,
    /// Pause between subscriptions being live and the first publish, in milliseconds.
    #[arg(long, env = "HERALD_BENCH_WARMUP_MS", default_value_t = 500)]
    pub warmup_ms: u64,
    /// How long to wait for the gateways' Redis subscriptions before giving up.
    #[arg(
        long,
        env = "HERALD_BENCH_SUBSCRIBE_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub subscribe_timeout_secs: u64,
}

impl BenchArgs {
    /// Checks the settings; returns how many distinct `host:port` endpoints the URLs name
    /// (each runs one gateway, so one Redis subscriber is expected per endpoint).
    pub fn validate(&self) -> Result<usize, BenchError> {
        let bad = |msg: String| Err(BenchError::InvalidArgs(msg));
        if self.urls.is_empty() {
            return bad("at least one --url is needed".into());
        }
        let mut endpoints = BTreeSet::new();
        for url in &self.urls {
            endpoints.insert(endpoint(url)?);
        }
        if self.clients == 0 {
            return bad("--clients must be at least 1".into());
        }
        if self.clients > MAX_CLIENTS_PER_PROCESS {
            return bad(format!(
                "--clients {} exceeds the {MAX_CLIENTS_PER_PROCESS} sockets one process may hold; \
                 run several bench processes with fewer clients each",
                self.clients
            ));
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return bad(format!(
                "--rate must be a positive number, not {}",
                self.rate
            ));
        }
        if self.messages == 0 {
            return bad("--messages must be at least 1".into());
        }
        if self.connect_concurrency == 0 {
            return bad("--connect-concurrency must be at least 1".into());
        }
        if self.channel.is_empty() {
            return bad("--channel must not be empty".into());
        }
        let bitsets = (self.clients as u64).saturating_mul(self.messages.div_ceil(64) * 8);
        if bitsets > MAX_BITSET_BYTES {
            return bad(format!(
                "--clients × --messages needs {} MiB of loss-tracking bitsets (limit {} MiB); \
                 lower one of them or split the run over several processes",
                bitsets >> 20,
                MAX_BITSET_BYTES >> 20
            ));
        }
        Ok(endpoints.len())
    }
}

/// The `host:port` a `ws://` URL connects to (port 80 if none is given).
fn endpoint(url: &str) -> Result<String, BenchError> {
    let bad = |why: &str| BenchError::InvalidArgs(format!("--url {url:?}: {why}"));
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("ws") {
        return Err(bad("only ws:// URLs are supported"));
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host"))?;
    Ok(format!(
        "{}:{}",
        host.to_ascii_lowercase(),
        uri.port_u16().unwrap_or(80)
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(argv: &[&str]) -> BenchArgs {
        Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()))
            .expect("arguments parse")
            .args
    }

    #[test]
    fn defaults_match_the_documentation() {
        let a = parse(&[]);
        assert_eq!(a.urls, vec![DEFAULT_URL.to_owned()]);
        assert_eq!(a.clients, 1000);
        assert_eq!(a.rate, 1000.0);
        assert_eq!(a.messages, 10_000);
        assert_eq!(a.payload_bytes, 100);
        assert_eq!(a.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(a.channel, "events");
        assert!(a.server_pids.is_empty());
        assert!(!a.json);
        assert_eq!(a.connect_concurrency, 200);
        assert_eq!(a.drain_timeout_secs, 10);
        assert_eq!(a.validate().expect("defaults are valid"), 1);
    }

    #[test]
    fn repeated_urls_and_pids() {
        let a = parse(&[
            "--url",
            "ws://127.0.0.1:1/ws",
            "--url",
            "ws://127.0.0.1:2/ws,ws://127.0.0.1:2/other",
            "--server-pid",
            "1",
            "--server-pid",
            "2",
            "--json",
        ]);
        assert_eq!(a.urls.len(), 3);
        assert_eq!(a.server_pids, vec![1, 2]);
        assert!(a.json);
        assert_eq!(a.validate().expect("valid"), 2, "two distinct host:port");
    }

    #[test]
    fn rejects_nonsense() {
        for argv in [
            &["--clients", "0"][..],
            &["--clients", "20000"],
            &["--rate", "0"],
            &["--messages", "0"],
            &["--connect-concurrency", "0"],
            &["--url", "http://127.0.0.1/ws"],
            &["--url", "ws:///nohost"],
            &["--clients", "19000", "--messages", "10000000"],
        ] {
            assert!(
                parse(argv).validate().is_err(),
                "{argv:?} should be rejected"
            );
        }
    }

    #[test]
    fn endpoint_defaults_to_port_80() {
        assert_eq!(
            endpoint("ws://LocalHost/ws").expect("valid"),
            "localhost:80"
        );
        assert_eq!(
            endpoint("ws://127.0.0.1:9/x?y=1").expect("valid"),
            "127.0.0.1:9"
        );
    }
}

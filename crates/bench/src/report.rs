//! The bench's result: one [`Report`] that prints as a table for people or as
//! one JSON object for scripts, plus the helpers that fold per-client numbers into it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::Disconnect;

/// Everything one bench run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Clients the bench was asked to connect.
    pub clients_requested: usize,
    /// Clients whose WebSocket handshake succeeded.
    pub clients_connected: usize,
    /// Clients whose handshake failed or timed out.
    pub connect_failures: usize,
    /// The first handshake error, if any.
    pub first_connect_error: Option<String>,
    /// The gateway URLs the clients were spread over, round-robin.
    pub urls: Vec<String>,
    /// How long connecting took.
    pub connect: ConnectTimes,
    /// `PUBSUB NUMSUB` of the channel once subscriptions were live.
    pub redis_subscribers: u64,
    /// The Redis channel published on.
    pub channel: String,
    /// The size of each published payload, in bytes.
    pub payload_bytes: usize,
    /// Messages handed to Redis.
    pub messages_published: u64,
    /// Messages whose PUBLISH failed.
    pub publish_failures: u64,
    /// Messages Redis delivered to no subscriber at all.
    pub publishes_without_subscriber: u64,
    /// The requested rate, in messages per second.
    pub target_rate: f64,
    /// The achieved rate, in messages per second (none with fewer than two messages).
    pub publish_rate: Option<f64>,
    /// Messages published times clients connected.
    pub expected_deliveries: u64,
    /// Distinct (client, message) pairs delivered.
    pub delivered: u64,
    /// Expected deliveries that never arrived (including those of clients disconnected early).
    pub lost: u64,
    /// Deliveries of a message a client already had.
    pub duplicates: u64,
    /// Deliveries that arrived after a later message on the same client.
    pub out_of_order: u64,
    /// Frames that were not a bench payload.
    pub invalid_frames: u64,
    /// From the first publish to the last delivery, in milliseconds.
    pub delivery_window_ms: Option<f64>,
    /// Deliveries per second over that window.
    pub deliveries_per_sec: Option<f64>,
    /// Whether the drain timeout ended the wait before everything arrived.
    pub drain_timed_out: bool,
    /// Delivery latency (receive time minus send time), over all deliveries.
    pub latency_ms: Option<Latency>,
    /// Memory and CPU of each `--server-pid`.
    pub servers: Vec<ServerUsage>,
    /// Server RSS growth from before connecting to after connecting, per connected client, in KiB.
    pub rss_per_connection_kib: Option<f64>,
    /// Server CPU time (user + system, all pids) per delivery, from the first publish to the end of the drain, in microseconds.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// The bench's own CPU time per delivery over the same window, in microseconds.
    pub bench_cpu_us_per_delivery: Option<f64>,
    /// Clients whose connection ended before the bench stopped them.
    pub disconnects: u64,
    /// Those disconnects grouped by close code.
    pub disconnect_codes: Vec<DisconnectGroup>,
    /// Clock ticks per second that CPU times were converted with.
    pub clock_ticks_per_sec: u64,
}

/// Handshake durations.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConnectTimes {
    /// From the first handshake started to the last one finished, in milliseconds.
    pub total_ms: f64,
    /// Median handshake duration, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile handshake duration, in milliseconds.
    pub p99_ms: f64,
    /// Longest handshake, in milliseconds.
    pub max_ms: f64,
}

/// Latency percentiles, in milliseconds (1% resolution).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The largest latency seen (exact).
    pub max: f64,
}

/// One gateway process's resource use.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerUsage {
    /// The process id.
    pub pid: u32,
    /// RSS before any client connected, in KiB.
    pub rss_before_kib: u64,
    /// RSS once every client connected and subscriptions were live, in KiB.
    pub rss_connected_kib: u64,
    /// RSS after the drain, in KiB (none if the process was gone by then).
    pub rss_after_kib: Option<u64>,
    /// CPU time used from the first publish to the end of the drain, in milliseconds
    /// (none if the process was gone by then).
    pub cpu_ms: Option<f64>,
}

/// Disconnects that share a close code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DisconnectGroup {
    /// The close code, or none when the connection ended without a close frame.
    pub code: Option<u16>,
    /// How many clients.
    pub count: u64,
    /// One of their close reasons (or errors).
    pub example_reason: String,
}

impl Report {
    /// The report as a human-readable, aligned two-column table.
    pub fn render_table(&self) -> String {
        let mut t = Table::default();
        t.row(
            "clients",
            format!(
                "{} connected of {} requested",
                self.clients_connected, self.clients_requested
            ),
        );
        if self.connect_failures > 0 {
            t.row("connect failures", self.connect_failures.to_string());
            if let Some(e) = &self.first_connect_error {
                t.row("  first error", e.clone());
            }
        }
        t.row("urls", self.urls.join(", "));
        t.row(
            "connect time",
            format!(
                "total {:.1} ms, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                self.connect.total_ms,
                self.connect.p50_ms,
                self.connect.p99_ms,
                self.connect.max_ms
            ),
        );
        t.row(
            "redis subscribers",
            format!("{} on channel {:?}", self.redis_subscribers, self.channel),
        );
        t.row("payload", format!("{} bytes", self.payload_bytes));
        t.row("messages published", self.messages_published.to_string());
        if self.publish_failures > 0 {
            t.row("publish failures", self.publish_failures.to_string());
        }
        if self.publishes_without_subscriber > 0 {
            t.row(
                "published to nobody",
                self.publishes_without_subscriber.to_string(),
            );
        }
        t.row(
            "publish rate",
            format!(
                "{} msg/s (target {})",
                opt(self.publish_rate, 0),
                num(self.target_rate, 0)
            ),
        );
        t.row("expected deliveries", self.expected_deliveries.to_string());
        t.row("delivered", self.delivered.to_string());
        t.row("lost", self.lost.to_string());
        t.row("duplicates", self.duplicates.to_string());
        t.row("out of order", self.out_of_order.to_string());
        if self.invalid_frames > 0 {
            t.row("invalid frames", self.invalid_frames.to_string());
        }
        t.row(
            "deliveries/s",
            format!(
                "{} (over {} ms)",
                opt(self.deliveries_per_sec, 0),
                opt(self.delivery_window_ms, 1)
            ),
        );
        if self.drain_timed_out {
            t.row("drain", "timed out before every message arrived".to_owned());
        }
        match &self.latency_ms {
            Some(l) => t.row(
                "latency (ms)",
                format!(
                    "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                    l.p50, l.p90, l.p99, l.p999, l.max
                ),
            ),
            None => t.row("latency (ms)", "no delivery".to_owned()),
        }
        for s in &self.servers {
            t.row(
                &format!("server {} rss", s.pid),
                format!(
                    "{} KiB before, {} KiB connected, {} KiB after",
                    s.rss_before_kib,
                    s.rss_connected_kib,
                    s.rss_after_kib
                        .map_or_else(|| "n/a".to_owned(), |k| k.to_string())
                ),
            );
            t.row(
                &format!("server {} cpu", s.pid),
                format!("{} ms", opt(s.cpu_ms, 0)),
            );
        }
        if !self.servers.is_empty() {
            t.row(
                "rss per connection",
                format!("{} KiB", opt(self.rss_per_connection_kib, 2)),
            );
            t.row(
                "server cpu/delivery",
                format!("{} µs", opt(self.server_cpu_us_per_delivery, 3)),
            );
        }
        t.row(
            "bench cpu/delivery",
            format!("{} µs", opt(self.bench_cpu_us_per_delivery, 3)),
        );
        t.row("disconnects", self.disconnects.to_string());
        for g in &self.disconnect_codes {
            let code = g
                .code
                .map_or_else(|| "no code".to_owned(), |c| c.to_string());
            t.row(
                &format!("  {code}"),
                format!("{} ({})", g.count, g.example_reason),
            );
        }
        t.finish()
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

/// Builds the aligned two-column table.
#[derive(Default)]
struct Table {
    /// (label, value) rows in order.
    rows: Vec<(String, String)>,
}

impl Table {
    /// Adds a row.
    fn row(&mut self, label: &str, value: String) {
        self.rows.push((label.to_owned(), value));
    }

    /// Renders the rows, labels padded to the widest one.
    fn finish(self) -> String {
        let width = self
            .rows
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (label, value) in &self.rows {
            let _ = writeln!(out, "{label:<width$}  {value}");
        }
        out
    }
}

/// `n` with `decimals` decimals.
fn num(n: f64, decimals: usize) -> String {
    format!("{n:.decimals$}")
}

/// An optional number with `decimals` decimals, or `n/a`.
fn opt(n: Option<f64>, decimals: usize) -> String {
    n.map_or_else(|| "n/a".to_owned(), |n| num(n, decimals))
}

/// Median, 99th percentile and maximum of handshake durations (all zero if none).
pub(crate) fn connect_times(mut durations: Vec<Duration>, total: Duration) -> ConnectTimes {
    durations.sort_unstable();
    let at = |q: f64| -> f64 {
        if durations.is_empty() {
            return 0.0;
        }
        let index = ((durations.len() - 1) as f64 * q).round() as usize;
        ms(durations[index.min(durations.len() - 1)])
    };
    ConnectTimes {
        total_ms: ms(total),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

/// A duration in fractional milliseconds.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Latency percentiles of a merged histogram in microseconds; `None` if it is empty.
pub(crate) fn latency(histogram: &Histogram<u64>, exact_max_us: u64) -> Option<Latency> {
    if histogram.is_empty() {
        return None;
    }
    // A histogram bucket reports its highest value, which may pass the exact maximum.
    let q = |q: f64| histogram.value_at_quantile(q).min(exact_max_us) as f64 / 1e3;
    Some(Latency {
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        p999: q(0.999),
        max: exact_max_us as f64 / 1e3,
    })
}

/// Groups disconnects by close code, most frequent first.
pub(crate) fn group_disconnects<'a>(
    disconnects: impl IntoIterator<Item = &'a Disconnect>,
) -> Vec<DisconnectGroup> {
    let mut groups: BTreeMap<Option<u16>, DisconnectGroup> = BTreeMap::new();
    for d in disconnects {
        groups
            .entry(d.code)
            .or_insert_with(|| DisconnectGroup {
                code: d.code,
                count: 0,
                example_reason: d.reason.clone(),
            })
            .count += 1;
    }
    let mut groups: Vec<_> = groups.into_values().collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then(a.code.cmp(&b.code)));
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            clients_requested: 1000,
            clients_connected: 998,
            connect_failures: 2,
            first_connect_error: Some("ws://127.0.0.1:1/ws: refused".into()),
            urls: vec!["ws://127.0.0.1:8080/ws/notifications".into()],
            connect: ConnectTimes {
                total_ms: 812.5,
                p50_ms: 1.25,
                p99_ms: 9.5,
                max_ms: 12.0,
            },
            redis_subscribers: 1,
            channel: "events".into(),
            payload_bytes: 100,
            messages_published: 10_000,
            publish_failures: 0,
            publishes_without_subscriber: 0,
            target_rate: 1000.0,
            publish_rate: Some(999.7),
            expected_deliveries: 9_980_000,
            delivered: 9_979_000,
            lost: 1000,
            duplicates: 0,
            out_of_order: 3,
            invalid_frames: 0,
            delivery_window_ms: Some(10_001.0),
            deliveries_per_sec: Some(997_800.2),
            drain_timed_out: true,
            latency_ms: Some(Latency {
                p50: 0.8,
                p90: 1.5,
                p99: 4.25,
                p999: 9.0,
                max: 15.125,
            }),
            servers: vec![ServerUsage {
                pid: 4242,
                rss_before_kib: 10_000,
                rss_connected_kib: 30_000,
                rss_after_kib: Some(31_000),
                cpu_ms: Some(4_500.0),
            }],
            rss_per_connection_kib: Some(20.04),
            server_cpu_us_per_delivery: Some(0.451),
            bench_cpu_us_per_delivery: Some(0.7),
            disconnects: 1,
            disconnect_codes: vec![DisconnectGroup {
                code: Some(4000),
                count: 1,
                example_reason: "slow consumer".into(),
            }],
            clock_ticks_per_sec: 100,
        }
    }

    #[test]
    fn table_shows_every_headline_number_aligned() {
        let table = sample().render_table();
        for needle in [
            "998 connected of 1000 requested",
            "connect failures",
            "p50 1.25 ms, p99 9.50 ms",
            "messages published   10000",
            "1000 msg/s (target 1000)",
            "expected deliveries  9980000",
            "lost                 1000",
            "out of order         3",
            "997800 (over 10001.0 ms)",
            "p50 0.800  p90 1.500  p99 4.250  p99.9 9.000  max 15.125",
            "10000 KiB before, 30000 KiB connected",
            "20.04 KiB",
            "0.451 µs",
            "timed out",
            "  4000",
            "1 (slow consumer)",
        ] {
            assert!(table.contains(needle), "missing {needle:?} in\n{table}");
        }
        let column = |prefix: &str| {
            let line = table
                .lines()
                .find(|l| l.starts_with(prefix))
                .expect("row exists");
            line.len() - line[prefix.len()..].trim_start().len()
        };
        assert_eq!(column("lost"), column("delivered"));
        assert_eq!(column("lost"), column("clients"));
    }

    #[test]
    fn table_handles_missing_numbers() {
        let mut r = sample();
        r.latency_ms = None;
        r.publish_rate = None;
        r.servers.clear();
        r.rss_per_connection_kib = None;
        r.disconnect_codes.clear();
        let table = r.render_table();
        assert!(table.contains("no delivery"));
        assert!(table.contains("n/a msg/s"));
        assert!(!table.contains("rss per connection"));
    }

    #[test]
    fn json_has_the_documented_fields() {
        let json: serde_json::Value =
            serde_json::from_str(&sample().to_json().expect("serializes")).expect("is JSON");
        assert_eq!(json["delivered"], 9_979_000);
        assert_eq!(json["latency_ms"]["p99"], 4.25);
        assert_eq!(json["servers"][0]["pid"], 4242);
        assert_eq!(json["disconnect_codes"][0]["code"], 4000);
        assert_eq!(json["connect"]["p99_ms"], 9.5);
    }

    #[test]
    fn connect_time_percentiles() {
        let d: Vec<_> = (1..=100).map(Duration::from_millis).collect();
        let c = connect_times(d, Duration::from_secs(2));
        assert_eq!(c.total_ms, 2000.0);
        assert!((50.0..=51.0).contains(&c.p50_ms));
        assert_eq!(c.p99_ms, 99.0);
        assert_eq!(c.max_ms, 100.0);
        assert_eq!(
            connect_times(Vec::new(), Duration::ZERO),
            ConnectTimes::default()
        );
    }

    #[test]
    fn disconnects_grouped_by_code() {
        let d = |code, reason: &str| Disconnect {
            code,
            reason: reason.into(),
        };
        let list = [
            d(Some(4000), "slow"),
            d(None, "reset"),
            d(Some(4000), "slow"),
            d(Some(1001), "bye"),
        ];
        let groups = group_disconnects(&list);
        assert_eq!(groups.len(), 3);
        assert_eq!((groups[0].code, groups[0].count), (Some(4000), 2));
        assert_eq!(groups[1].code, None);
    }
}

//! `herald bench`: a load generator that measures what a Herald gateway
//! delivers, how fast, and at what cost.
//!
//! It connects many WebSocket clients to one or more gateways, waits until the
//! gateways' Redis subscriptions are live, publishes numbered, timestamped
//! payloads on a Redis channel at a fixed rate, and has every client account
//! for every message: deliveries, loss, duplicates, reordering and latency.
//! Given the gateways' process ids it also reports their memory per
//! connection and CPU time per delivery, read from `/proc`.
//!
//! The bench shares its machine with the gateway, so the receive path is lean:
//! one task per client, no lock, channel or allocation per message beyond what
//! tungstenite does, small per-connection buffers. One process holds at most
//! [`MAX_CLIENTS_PER_PROCESS`] clients (about 19,500 sockets); run several
//! bench processes for more. Everything is bounded: handshakes, the wait for
//! subscriptions and the drain after publishing all time out, and clients only
//! ever connect to the URLs given.
//!
//! The binary calls [`run_cli`] (or [`run`] then [`print`]) inside its
//! multi-threaded tokio runtime.

mod args;
mod client;
mod payload;
mod proc_stats;
mod publisher;
mod report;
mod tracker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{info, warn};

pub use args::{BenchArgs, DEFAULT_URL, MAX_BITSET_BYTES, MAX_CLIENTS_PER_PROCESS};
pub use payload::{Stamp, decode, encode_into, minimal_len, now_us};
pub use report::{ConnectTimes, DisconnectGroup, Latency, Report, ServerUsage};

use client::{ClientContext, ClientOutcome, Progress};
use proc_stats::ProcSample;
use publisher::PublishPlan;
use tracker::{ClientStats, LATENCY_SIGFIG, MAX_TRACKED_LATENCY_US};

/// Why a bench run could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flag has a value the bench cannot work with.
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    /// `/proc/PID` of a `--server-pid` could not be read.
    #[error("cannot read /proc/{pid} (is --server-pid right and the gateway running?): {source}")]
    Proc {
        /// The process id.
        pid: u32,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// Not a single WebSocket client could connect.
    #[error("no client could connect; first error: {first_error}")]
    NoClientConnected {
        /// The first handshake error.
        first_error: String,
    },
    /// Redis could not be reached.
    #[error("cannot connect to Redis at {url}: {source}")]
    Redis {
        /// The Redis URL.
        url: String,
        /// What went wrong.
        #[source]
        source: redis::RedisError,
    },
    /// A Redis command failed.
    #[error("Redis command failed: {0}")]
    Publish(#[source] redis::RedisError),
    /// The gateways did not subscribe to the channel in time.
    #[error(
        "timed out after {waited:?} waiting for {want} subscriber(s) on Redis channel {channel:?} \
         (PUBSUB NUMSUB says {got}); are the gateways up and using the same Redis and channel?"
    )]
    SubscribeTimeout {
        /// The channel.
        channel: String,
        /// Subscribers expected: one per distinct gateway `host:port`.
        want: u64,
        /// Subscribers seen last.
        got: u64,
        /// How long the bench waited.
        waited: Duration,
    },
    /// A client task panicked or was cancelled.
    #[error("a client task failed: {0}")]
    ClientTask(#[from] tokio::task::JoinError),
    /// The latency histogram could not be set up.
    #[error("latency histogram: {0}")]
    Histogram(String),
    /// The report could not be serialized.
    #[error("cannot serialize the report: {0}")]
    Json(#[from] serde_json::Error),
}

/// Runs the bench and prints its report as `args.json` asks; the binary's whole `bench` command.
pub async fn run_cli(args: BenchArgs) -> Result<Report, BenchError> {
    let json = args.json;
    let report = run(args).await?;
    print(&report, json)?;
    Ok(report)
}

/// Prints `report` to standard output: one JSON object if `json`, else the table.
pub fn print(report: &Report, json: bool) -> Result<(), BenchError> {
    use std::io::Write as _;
    if json {
        // A closed stdout (`| head`) must not panic the bench after its run.
        let _ = writeln!(std::io::stdout(), "{}", report.to_json()?);
    } else {
        let _ = write!(std::io::stdout(), "{}", report.render_table());
    }
    Ok(())
}

/// Runs one bench: connect, wait for subscriptions, publish, drain, measure.
///
/// Must run inside a multi-threaded tokio runtime: every client is a task.
pub async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    let endpoints = args.validate()?;
    let clock_ticks = proc_stats::clock_ticks_per_sec();
    let before = sample_servers(&args.server_pids)?;

    // Connect every client, at most `connect_concurrency` handshakes at a time.
    // Dropping `stop_tx` (on any early return) also stops every client.
    let histogram =
        ClientStats::empty_histogram().map_err(|e| BenchError::Histogram(e.to_string()))?;
    let progress = Arc::new(Progress::new(args.clients));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (connected_tx, mut connected_rx) = mpsc::unbounded_channel();
    let ctx = ClientContext {
        connect_gate: Arc::new(Semaphore::new(args.connect_concurrency)),
        connected: connected_tx,
        stop: stop_rx,
        progress: Arc::clone(&progress),
    };
    let urls: Vec<Arc<str>> = args.urls.iter().map(|u| Arc::from(u.as_str())).collect();
    info!(clients = args.clients, urls = urls.len(), "connecting");
    let connect_started = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let url = Arc::clone(&urls[i % urls.len()]);
        let stats = ClientStats::new(args.messages, &histogram);
        tasks.push(tokio::spawn(client::run_client(url, ctx.clone(), stats)));
    }
    drop(ctx);
    let mut connect_durations = Vec::with_capacity(args.clients);
    let mut connect_failures = 0;
    let mut first_connect_error = None;
    while let Some(result) = connected_rx.recv().await {
        match result {
            Ok(took) => connect_durations.push(took),
            Err(e) => {
                connect_failures += 1;
                if first_connect_error.is_none() {
                    warn!(error = %e, "a client could not connect");
                    first_connect_error = Some(e);
                }
            }
        }
    }
    let connect = report::connect_times(connect_durations.clone(), connect_started.elapsed());
    let connected = connect_durations.len();
    if connected == 0 {
        return Err(BenchError::NoClientConnected {
            first_error: first_connect_error.unwrap_or_else(|| "no client reported".into()),
        });
    }
    info!(
        connected,
        failed = connect_failures,
        total_ms = connect.total_ms,
        "connected"
    );

    // Wait until every gateway has subscribed, then let things settle.
    let mut redis = publisher::connect(&args.redis_url).await?;
    let redis_subscribers = publisher::wait_for_subscribers(
        &mut redis,
        &args.channel,
        endpoints as u64,
        Duration::from_secs(args.subscribe_timeout_secs),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(args.warmup_ms)).await;
    let at_connected = sample_servers(&args.server_pids)?;
    let bench_cpu_before = proc_stats::sample(std::process::id()).ok();

    // Publish, then wait for the last deliveries.
    let plan = PublishPlan {
        channel: args.channel.clone(),
        rate: args.rate,
        messages: args.messages,
        payload_bytes: args.payload_bytes,
    };
    info!(messages = plan.messages, rate = plan.rate, "publishing");
    let published = publisher::publish(&redis, &plan).await;
    info!(
        published = published.published,
        failed = published.failed,
        "published; draining"
    );
    let drain_timed_out = tokio::time::timeout(
        Duration::from_secs(args.drain_timeout_secs),
        progress.wait_all(),
    )
    .await
    .is_err();
    if drain_timed_out {
        warn!(
            clients_waiting = progress.remaining(),
            "drain timeout passed"
        );
    }
    let after: Vec<Option<ProcSample>> = args
        .server_pids
        .iter()
        .map(|&pid| proc_stats::sample(pid).ok())
        .collect();
    let bench_cpu_after = proc_stats::sample(std::process::id()).ok();

    // Stop the clients and collect what each saw.
    let _ = stop_tx.send(true);
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await?);
    }

    let payload_bytes = args
        .payload_bytes
        .max(payload::minimal_len(0, published.first_us));
    let totals = Totals::gather(&outcomes)?;
    let delivered = totals.delivered;
    let per_delivery_us = |ticks: u64| {
        (delivered > 0).then(|| ticks as f64 * 1e6 / clock_ticks as f64 / delivered as f64)
    };
    let servers: Vec<ServerUsage> = args
        .server_pids
        .iter()
        .enumerate()
        .map(|(i, &pid)| ServerUsage {
            pid,
            rss_before_kib: before[i].rss_kib,
            rss_connected_kib: at_connected[i].rss_kib,
            rss_after_kib: after[i].map(|s| s.rss_kib),
            cpu_ms: after[i].map(|s| {
                s.cpu_ticks.saturating_sub(at_connected[i].cpu_ticks) as f64 * 1e3
                    / clock_ticks as f64
            }),
        })
        .collect();
    let rss_growth: i64 = before
        .iter()
        .zip(&at_connected)
        .map(|(b, c)| c.rss_kib as i64 - b.rss_kib as i64)
        .sum();
    let server_cpu_ticks: Option<u64> = after
        .iter()
        .zip(&at_connected)
        .map(|(a, c)| a.map(|a| a.cpu_ticks.saturating_sub(c.cpu_ticks)))
        .sum();
    let window_us = totals.last_delivery_us.saturating_sub(published.first_us);
    let publish_span_us = published.last_us.saturating_sub(published.first_us);
    let expected_deliveries = published.published * connected as u64;

    Ok(Report {
        clients_requested: args.clients,
        clients_connected: connected,
        connect_failures,
        first_connect_error,
        urls: args.urls.clone(),
        connect,
        redis_subscribers,
        channel: args.channel.clone(),
        payload_bytes,
        messages_published: published.published,
        publish_failures: published.failed,
        publishes_without_subscriber: published.without_subscriber,
        target_rate: args.rate,
        publish_rate: (published.published > 1 && publish_span_us > 0)
            .then(|| (published.published - 1) as f64 * 1e6 / publish_span_us as f64),
        expected_deliveries,
        delivered,
        lost: totals.lost,
        duplicates: totals.duplicates,
        out_of_order: totals.out_of_order,
        invalid_frames: totals.invalid_frames,
        delivery_window_ms: (window_us > 0 && delivered > 0).then(|| window_us as f64 / 1e3),
        deliveries_per_sec: (window_us > 0 && delivered > 0)
            .then(|| delivered as f64 * 1e6 / window_us as f64),
        drain_timed_out,
        latency_ms: report::latency(&totals.latency_us, totals.max_latency_us),
        rss_per_connection_kib: (!servers.is_empty()).then(|| rss_growth as f64 / connected as f64),
        server_cpu_us_per_delivery: if servers.is_empty() {
            None
        } else {
            server_cpu_ticks.and_then(per_delivery_us)
        },
        bench_cpu_us_per_delivery: bench_cpu_before
            .zip(bench_cpu_after)
            .and_then(|(b, a)| per_delivery_us(a.cpu_ticks.saturating_sub(b.cpu_ticks))),
        servers,
        disconnects: totals.disconnects.len() as u64,
        disconnect_codes: report::group_disconnects(totals.disconnects.iter().copied()),
        clock_ticks_per_sec: clock_ticks,
    })
}

/// Samples every server process; fails on the first one that cannot be read.
fn sample_servers(pids: &[u32]) -> Result<Vec<ProcSample>, BenchError> {
    pids.iter()
        .map(|&pid| proc_stats::sample(pid).map_err(|source| BenchError::Proc { pid, source }))
        .collect()
}

/// The connected clients' numbers, added up.
struct Totals<'a> {
    /// Distinct deliveries.
    delivered: u64,
    /// Messages never delivered.
    lost: u64,
    /// Repeated deliveries.
    duplicates: u64,
    /// Deliveries after a later message.
    out_of_order: u64,
    /// Frames that were not bench payloads.
    invalid_frames: u64,
    /// Every latency, in microseconds.
    latency_us: Histogram<u64>,
    /// The exact largest latency, in microseconds.
    max_latency_us: u64,
    /// The last first delivery on any client, in microseconds since the epoch.
    last_delivery_us: u64,
    /// Early disconnects.
    disconnects: Vec<&'a client::Disconnect>,
}

impl<'a> Totals<'a> {
    /// Adds up the outcomes of clients that connected.
    fn gather(outcomes: &'a [ClientOutcome]) -> Result<Self, BenchError> {
        let mut totals = Totals {
            delivered: 0,
            lost: 0,
            duplicates: 0,
            out_of_order: 0,
            invalid_frames: 0,
            latency_us: Histogram::new_with_bounds(1, MAX_TRACKED_LATENCY_US, LATENCY_SIGFIG)
                .map_err(|e| BenchError::Histogram(e.to_string()))?,
            max_latency_us: 0,
            last_delivery_us: 0,
            disconnects: Vec::new(),
        };
        for outcome in outcomes.iter().filter(|o| o.connect.is_ok()) {
            let s = &outcome.stats;
            totals.delivered += s.seqs.unique();
            totals.lost += s.seqs.lost();
            totals.duplicates += s.seqs.duplicates();
            totals.out_of_order += s.seqs.out_of_order();
            totals.invalid_frames += s.invalid_frames;
            for v in s.latency_us.iter_recorded() {
                totals
                    .latency_us
                    .saturating_record_n(v.value_iterated_to(), u64::from(v.count_at_value()));
            }
            totals.max_latency_us = totals.max_latency_us.max(s.max_latency_us);
            totals.last_delivery_us = totals.last_delivery_us.max(s.last_delivery_us);
            totals.disconnects.extend(outcome.disconnect.as_ref());
        }
        Ok(totals)
    }
}

//! The load `scripts/soak.sh` puts on two gateways for an hour (not run in CI).
//!
//! - Steady clients stay on `/ws`, subscribed to one history channel, and check
//!   every message arrives once and in order (offsets without gaps).
//! - Churning clients connect to a random gateway (`/ws` or `/sse`), subscribe
//!   and unsubscribe channels from a bounded pool, and leave after a few seconds.
//! - A publisher posts to the history channel and to pool channels through
//!   `POST /api/publish`, alternating gateways.
//!
//! At the end it prints one line of totals; it exits non-zero if a steady client
//! lost or repeated a message.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
struct Args {
    /// Gateway addresses (`host:port`), comma-separated.
    #[arg(long, value_delimiter = ',')]
    gateways: Vec<String>,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 3600)]
    seconds: u64,
    /// Clients that stay connected and check every message.
    #[arg(long, default_value_t = 20)]
    steady: usize,
    /// Clients that keep connecting, subscribing, unsubscribing and leaving.
    #[arg(long, default_value_t = 200)]
    churning: usize,
    /// Messages published per second.
    #[arg(long, default_value_t = 50)]
    rate: u64,
    /// The publish API key the gateways accept.
    #[arg(long, default_value = "soak-key")]
    api_key: String,
    /// Pool channels churning clients pick from.
    #[arg(long, default_value_t = 500)]
    pool: u32,
}

const STEADY_CHANNEL: &str = "news:soak";

#[derive(Default)]
struct Totals {
    published: AtomicU64,
    published_steady: AtomicU64,
    publish_errors: AtomicU64,
    connections: AtomicU64,
    connect_errors: AtomicU64,
    subscribes: AtomicU64,
    sse_streams: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.gateways.is_empty() {
        bail!("give --gateways HOST:PORT[,HOST:PORT…]");
    }
    let args = Arc::new(args);
    let totals = Arc::new(Totals::default());
    let end = Instant::now() + Duration::from_secs(args.seconds);

    let mut steady = Vec::new();
    for i in 0..args.steady {
        let gateway = args.gateways[i % args.gateways.len()].clone();
        steady.push(tokio::spawn(steady_client(gateway, end)));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut churners = Vec::new();
    for i in 0..args.churning {
        churners.push(tokio::spawn(churning_client(
            args.clone(),
            totals.clone(),
            end,
            i as u64,
        )));
    }
    publisher(&args, &totals, end).await;
    for task in churners {
        task.await?;
    }
    let published = totals.published.load(Ordering::Relaxed);
    let mut lost_or_repeated = 0u64;
    let mut delivered = 0u64;
    for task in steady {
        let report = task.await?;
        delivered += report.received;
        lost_or_repeated += report.gaps + report.repeats;
        if report.gaps + report.repeats > 0 || report.error.is_some() {
            eprintln!("steady client: {report:?}");
        }
    }
    println!(
        "soak driver: published {published} ({} to {STEADY_CHANNEL}; errors {}), delivered {delivered} to {} steady clients, lost or repeated {lost_or_repeated}; churn: {} connections ({} refused), {} subscribes, {} SSE streams",
        totals.published_steady.load(Ordering::Relaxed),
        totals.publish_errors.load(Ordering::Relaxed),
        args.steady,
        totals.connections.load(Ordering::Relaxed),
        totals.connect_errors.load(Ordering::Relaxed),
        totals.subscribes.load(Ordering::Relaxed),
        totals.sse_streams.load(Ordering::Relaxed),
    );
    let expected = totals.published_steady.load(Ordering::Relaxed) * args.steady as u64;
    if lost_or_repeated > 0 || delivered != expected {
        bail!("steady clients received {delivered} messages, expected {expected}");
    }
    Ok(())
}

#[derive(Debug, Default)]
struct SteadyReport {
    received: u64,
    gaps: u64,
    repeats: u64,
    error: Option<String>,
}

/// Stays subscribed to the history channel until `end`, counting gaps and repeats in its offsets.
async fn steady_client(gateway: String, end: Instant) -> SteadyReport {
    let mut report = SteadyReport::default();
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(format!("ws://{gateway}/ws")).await
    else {
        report.error = Some("connect failed".to_owned());
        return report;
    };
    let subscribe = json!({"type": "subscribe", "channels": [{"channel": STEADY_CHANNEL}]});
    if ws.send(Message::text(subscribe.to_string())).await.is_err() {
        report.error = Some("subscribe failed".to_owned());
        return report;
    }
    let mut last: Option<(String, u64)> = None;
    // Read a little past the end so the last messages published still arrive.
    let deadline = end + Duration::from_secs(5);
    loop {
        let next = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return report,
            Ok(next) => next,
        };
        let text = match next {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            other => {
                report.error = Some(format!("connection ended: {other:?}"));
                return report;
            }
        };
        let frame: Value = serde_json::from_str(&text).unwrap_or_default();
        if frame["type"] == "subscribed" {
            let position = &frame["position"];
            last = Some((
                position["epoch"].as_str().unwrap_or_default().to_owned(),
                position["offset"].as_u64().unwrap_or_default(),
            ));
            continue;
        }
        if frame["type"] != "message" {
            continue;
        }
        report.received += 1;
        let epoch = frame["epoch"].as_str().unwrap_or_default().to_owned();
        let offset = frame["offset"].as_u64().unwrap_or_default();
        match &last {
            Some((last_epoch, last_offset)) if *last_epoch == epoch => {
                if offset <= *last_offset {
                    report.repeats += 1;
                } else {
                    report.gaps += offset - last_offset - 1;
                }
            }
            _ => {}
        }
        last = Some((epoch, offset));
    }
}

/// Connects, subscribes and unsubscribes pool channels, leaves; again until `end`.
async fn churning_client(args: Arc<Args>, totals: Arc<Totals>, end: Instant, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while Instant::now() < end {
        let gateway = &args.gateways[rng.random_range(0..args.gateways.len())];
        let channel = format!("news:pool-{}", rng.random_range(0..args.pool));
        let stay = Duration::from_millis(rng.random_range(500..5000));
        if rng.random_range(0..10) == 0 {
            sse_visit(gateway, &channel, stay, &totals).await;
            continue;
        }
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(format!("ws://{gateway}/ws")).await
        else {
            totals.connect_errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        totals.connections.fetch_add(1, Ordering::Relaxed);
        let leave_at = Instant::now() + stay;
        // A few subscribe/unsubscribe rounds, well inside the frame-rate limit.
        while Instant::now() < leave_at {
            let channel = format!("news:pool-{}", rng.random_range(0..args.pool));
            let subscribe = json!({"type": "subscribe", "channels": [{"channel": channel}]});
            let unsubscribe = json!({"type": "unsubscribe", "channels": [channel]});
            if ws.send(Message::text(subscribe.to_string())).await.is_err() {
                break;
            }
            totals.subscribes.fetch_add(1, Ordering::Relaxed);
            drain_for(&mut ws, Duration::from_millis(rng.random_range(100..600))).await;
            if ws
                .send(Message::text(unsubscribe.to_string()))
                .await
                .is_err()
            {
                break;
            }
            drain_for(&mut ws, Duration::from_millis(100)).await;
        }
        let _ = ws.close(None).await;
        drain_for(&mut ws, Duration::from_millis(200)).await;
    }
}

/// Reads (and drops) whatever arrives for `wait`.
async fn drain_for<S>(ws: &mut S, wait: Duration)
where
    S: StreamExt + Unpin,
{
    let until = Instant::now() + wait;
    while let Ok(Some(_)) = tokio::time::timeout_at(until, ws.next()).await {}
}

/// Opens an SSE stream on `channel`, reads it for `stay`, and leaves.
async fn sse_visit(gateway: &str, channel: &str, stay: Duration, totals: &Totals) {
    let url = format!("http://{gateway}/sse?channel={channel}");
    let Ok(mut response) = reqwest::Client::new().get(url).send().await else {
        totals.connect_errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    totals.sse_streams.fetch_add(1, Ordering::Relaxed);
    let until = Instant::now() + stay;
    while let Ok(Ok(Some(_))) = tokio::time::timeout_at(until, response.chunk()).await {}
}

/// Publishes at `rate` per second until `end`: mostly to the steady channel, some to pool channels.
async fn publisher(args: &Args, totals: &Totals, end: Instant) {
    let client = reqwest::Client::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::MAX);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        let gateway = &args.gateways[(n as usize) % args.gateways.len()];
        let channel = if n.is_multiple_of(4) {
            format!("news:pool-{}", rng.random_range(0..args.pool))
        } else {
            STEADY_CHANNEL.to_owned()
        };
        let sent = client
            .post(format!("http://{gateway}/api/publish"))
            .bearer_auth(&args.api_key)
            .json(&json!({"channel": channel, "data": {"n": n, "pad": "x".repeat(100)}}))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                totals.published.fetch_add(1, Ordering::Relaxed);
                if channel == STEADY_CHANNEL {
                    totals.published_steady.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                totals.publish_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        n += 1;
    }
}

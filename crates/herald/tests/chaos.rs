//! The promise, proven under faults: every client of a history channel
//! receives exactly the messages published after it first subscribed — none
//! lost, none twice, in order — and is never told of a gap, while gateways,
//! Redis, a notifier and a client are killed, restarted and frozen around it.
//!
//! Real processes only: a `redis-server` with an append-only file
//! (`appendfsync always`, so a crash loses no acknowledged write), the content
//! service, two notifiers, two gateways, 26 TypeScript clients in four Node
//! processes (`clients/typescript/test/chaos/driver.mjs` over the built
//! `@herald/client`), 20 Rust `/ws` clients and 4 tutorial clients on
//! `/ws/notifications`. Publishing goes on the whole time through
//! `POST /api/publish` (idempotency keys, retried until they succeed), the
//! Rust publisher (`herald-publisher`, same) and content creation, which the
//! notifiers turn into `news:content` messages. Meanwhile: Redis is SIGKILLed
//! and, while it is down, gateway `a` too (its clients reconnect to `b`);
//! Redis is started again on its data, and later crashed and restarted once
//! more with every client connected; notifier `n1` is SIGKILLed between
//! publishing an event's notifications and acknowledging it; and one Node
//! process is SIGSTOPped past the write and ping timeouts, then resumed.
//!
//! The reference is the channels' history in Redis, itself checked against
//! what every publisher was told: each published message is there exactly
//! once, at the offset its publisher got. Tutorial clients have no positions
//! and no recovery: their gaps are counted and reported, not asserted.
//!
//! Ignored in the plain `cargo test` run because it needs Node and the built
//! TypeScript client; `scripts/test.sh` runs it after building them
//! (`cargo test -p herald --test chaos nothing_is_lost -- --ignored`), and then a missing
//! Node or client fails it.
#![allow(clippy::unwrap_used)]

#[path = "chaos/participants.rs"]
mod participants;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_testkit::{ChildProcess, DurableRedis, GatewayProcess, free_port};
use participants::{ClientLog, Logs, NodeDriver, rust_client, tutorial_client};
use redis::streams::StreamPendingCountReply;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The history rule of every gateway and publisher; the notifier's own (`news:*=1000/24h`).
const HISTORY: &str = "news:*=1000/24h";
/// Channels the API and the Rust publisher write to.
const PUBLISHED: [&str; 3] = ["news:chaos-a", "news:chaos-b", "news:chaos-c"];
/// The channel the notifiers write to.
const CONTENT: &str = "news:content";
const API_KEY: &str = "chaos-test-key";
/// How long publishing goes on; the faults happen inside it.
const RUN: Duration = Duration::from_secs(40);

fn herald() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_herald"))
}

fn channels() -> Vec<String> {
    PUBLISHED
        .iter()
        .chain([&CONTENT])
        .map(|c| (*c).to_owned())
        .collect()
}

/// A message a publisher was told was published, at the position it was told.
#[derive(Debug, Clone)]
struct Sent {
    channel: String,
    offset: u64,
    epoch: String,
    data: Value,
}

/// What every publisher did: shared by the publishing tasks and the final check.
#[derive(Default)]
struct Outbox {
    sent: Mutex<Vec<Sent>>,
    /// Content created: (id, title).
    content: Mutex<Vec<(String, String)>>,
    /// Attempts that failed and were retried (with the same idempotency key).
    retries: AtomicU64,
    /// Retries answered `duplicate: true`: the first attempt had published after all.
    duplicates_answered: AtomicU64,
    /// Content creations that failed (not retried: creating content is not idempotent).
    content_failures: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Node and the built TypeScript client: scripts/test.sh runs it with --ignored after `npm run build`"]
async fn nothing_is_lost_duplicated_or_reordered_through_gateway_redis_notifier_and_client_faults()
{
    // Fail at once, with the fix, when Node or the TypeScript client is missing.
    participants::node_setup();
    let dir = std::env::temp_dir().join(format!("herald-chaos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // ---------------------------------------------------------------- the system
    let mut redis = DurableRedis::start("always").await;
    let url = redis.url();
    let content_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let database = format!("sqlite://{}/content.db", dir.display());
    let mut content = ChildProcess::start(
        herald(),
        "content",
        &[
            "content",
            "--listen",
            &content_addr.to_string(),
            "--broker",
            &url,
            "--database",
            &database,
        ],
    );
    content
        .wait_http(content_addr, "/api/content?limit=1", 200)
        .await;
    let mut notifiers: Vec<ChildProcess> = ["n1", "n2"]
        .iter()
        .map(|name| {
            ChildProcess::start(
                herald(),
                name,
                &[
                    "notifier",
                    "--broker",
                    &url,
                    "--consumer",
                    name,
                    "--reclaim-idle",
                    "2s",
                    "--claim-interval",
                    "250ms",
                ],
            )
        })
        .collect();
    let gateway_flags = [
        "--history",
        HISTORY,
        "--api-key",
        API_KEY,
        "--public-channel",
        "news:*",
        // Low, so that the frozen client is dropped within its freeze.
        "--write-timeout",
        "2s",
        "--ping-interval",
        "1s",
        "--pong-timeout",
        "1s",
    ];
    let mut gateways = Vec::new();
    for name in ["a", "b"] {
        gateways.push(GatewayProcess::start(herald(), &url, name, &gateway_flags).await);
    }
    for gateway in &gateways {
        gateway.wait_readyz(200).await;
    }
    let ws_url = |g: &GatewayProcess| format!("ws://{}/ws", g.addr);
    let a_first = vec![ws_url(&gateways[0]), ws_url(&gateways[1])];
    let b_first = vec![ws_url(&gateways[1]), ws_url(&gateways[0])];

    // ---------------------------------------------------------------- the clients
    let logs = Logs::default();
    let stop_clients = CancellationToken::new();
    let mut client_tasks = Vec::new();
    let mut ids_on_a = BTreeSet::new();
    let mut ws_ids = Vec::new();
    for i in 0..20 {
        let id = format!("rs{i:02}");
        let urls = if i % 2 == 0 { &a_first } else { &b_first };
        if i % 2 == 0 {
            ids_on_a.insert(id.clone());
        }
        ws_ids.push(id.clone());
        client_tasks.push(tokio::spawn(rust_client(
            id,
            urls.clone(),
            channels(),
            logs.clone(),
            stop_clients.clone(),
        )));
    }
    let mut tutorial_ids = Vec::new();
    for i in 0..4 {
        let id = format!("tu{i}");
        tutorial_ids.push(id.clone());
        let urls: Vec<String> = [&gateways[i % 2], &gateways[(i + 1) % 2]]
            .iter()
            .map(|g| g.tutorial_url())
            .collect();
        client_tasks.push(tokio::spawn(tutorial_client(
            id,
            urls,
            logs.clone(),
            stop_clients.clone(),
        )));
    }
    // 26 TypeScript clients: three processes of 8 and the one to freeze, with 2.
    let mut drivers = Vec::new();
    let mut paused_ids = Vec::new();
    let mut ts = 0;
    for (process, count) in [8, 8, 8, 2].into_iter().enumerate() {
        let mut plan = Vec::new();
        for _ in 0..count {
            let id = format!("ts{ts:02}");
            let urls = if ts % 2 == 0 { &a_first } else { &b_first };
            if ts % 2 == 0 {
                ids_on_a.insert(id.clone());
            }
            if process == 3 {
                paused_ids.push(id.clone());
            }
            ws_ids.push(id.clone());
            plan.push((id, urls.clone(), channels()));
            ts += 1;
        }
        drivers.push(NodeDriver::start(
            &format!("node{process}"),
            &plan,
            logs.clone(),
        ));
    }
    // Everyone has subscribed (and so has a first position) before anything is published.
    let ready = || {
        logs.all(|all| {
            let lacking: Vec<String> = ws_ids
                .iter()
                .filter(|id| {
                    !all.get(*id).is_some_and(|log| {
                        channels()
                            .iter()
                            .all(|c| log.first_position.contains_key(c))
                    })
                })
                .chain(
                    tutorial_ids
                        .iter()
                        .filter(|id| all.get(*id).is_none_or(|log| log.connections == 0)),
                )
                .map(|id| {
                    let errors = all
                        .get(id)
                        .map(|log| log.errors.clone())
                        .unwrap_or_default();
                    format!("{id} {errors:?}")
                })
                .collect();
            lacking
        })
    };
    let all_ready = wait_for(60, || async { ready().is_empty() }).await;
    assert!(
        all_ready,
        "clients not connected or not subscribed to every channel after 60 s: {:?}",
        ready()
    );
    wait_events_subscribers(&redis, 2).await;

    // ---------------------------------------------------------------- publishing
    let outbox = Arc::new(Outbox::default());
    let stop_publishing = CancellationToken::new();
    let gateway_addrs: Vec<SocketAddr> = gateways.iter().map(|g| g.addr).collect();
    let publishers = vec![
        tokio::spawn(api_publisher(
            gateway_addrs,
            outbox.clone(),
            stop_publishing.clone(),
        )),
        tokio::spawn(rust_publisher(
            url.clone(),
            outbox.clone(),
            stop_publishing.clone(),
        )),
        tokio::spawn(content_creator(
            content_addr,
            outbox.clone(),
            stop_publishing.clone(),
            0,
            Duration::from_millis(400),
        )),
    ];
    let started = Instant::now();
    let at =
        |seconds: u64| tokio::time::sleep_until((started + Duration::from_secs(seconds)).into());

    // ---------------------------------------------------------------- the faults
    // Gateway a dies while Redis is down: its clients reconnect to b, which cannot
    // read history yet.
    at(6).await;
    eprintln!("chaos: t={:?} SIGKILL redis", started.elapsed());
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!(
        "chaos: t={:?} SIGKILL gateway a (redis is down)",
        started.elapsed()
    );
    let dead_gateway = gateways.remove(0);
    drop(dead_gateway);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.start_again().await;
    eprintln!("chaos: t={:?} redis is back on its AOF", started.elapsed());

    // Redis crashes again with every client connected: the gateway fills the gap itself.
    at(14).await;
    eprintln!("chaos: t={:?} SIGKILL redis", started.elapsed());
    redis.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.start_again().await;
    eprintln!("chaos: t={:?} redis is back on its AOF", started.elapsed());

    at(21).await;
    // Content keeps coming fast, so n1 has events in hand; it is killed at a
    // moment it has published an event's notifications but not acknowledged it.
    let stop_rush = CancellationToken::new();
    let rush = tokio::spawn(content_creator(
        content_addr,
        outbox.clone(),
        stop_rush.clone(),
        100_000,
        Duration::from_millis(20),
    ));
    let mid_work = kill_mid_work(&redis, &mut notifiers[0], "n1").await;
    stop_rush.cancel();
    rush.await.unwrap();
    eprintln!(
        "chaos: t={:?} SIGKILL notifier n1: {mid_work:?}",
        started.elapsed()
    );

    at(27).await;
    let frozen = drivers[3].pid();
    eprintln!(
        "chaos: t={:?} SIGSTOP node3 ({paused_ids:?})",
        started.elapsed()
    );
    signal(frozen, "-STOP");
    let disconnects_before: usize =
        logs.all(|all| paused_ids.iter().map(|id| dropped(&all[id])).sum());
    tokio::time::sleep(Duration::from_secs(6)).await;
    signal(frozen, "-CONT");
    eprintln!("chaos: t={:?} SIGCONT node3", started.elapsed());

    tokio::time::sleep_until((started + RUN).into()).await;
    stop_publishing.cancel();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    eprintln!(
        "chaos: t={:?} publishing stopped; waiting for delivery",
        started.elapsed()
    );

    // ---------------------------------------------------------------- the reference
    let created: Vec<(String, String)> = outbox.content.lock().unwrap().clone();
    let expected_content: BTreeSet<String> = created.iter().map(|(id, _)| id.clone()).collect();
    let mut problems = Vec::new();
    // Every created item reaches news:content (n2 takes over what n1 held after 2 s).
    let content_arrived = wait_for(30, || async {
        let history = read_history(&redis, CONTENT).await;
        let ids: BTreeSet<String> = history
            .iter()
            .filter_map(|(_, d)| d["id"].as_str().map(str::to_owned))
            .collect();
        expected_content.is_subset(&ids)
    })
    .await;
    if !content_arrived {
        problems.push("not every created content item reached news:content".to_owned());
    }
    let mut history = BTreeMap::new();
    let mut epochs = BTreeMap::new();
    for channel in channels() {
        history.insert(channel.clone(), read_history(&redis, &channel).await);
        epochs.insert(channel.clone(), read_epoch(&redis, &channel).await);
    }
    let tops: BTreeMap<String, u64> = history
        .iter()
        .map(|(c, h)| (c.clone(), h.last().map_or(0, |(o, _)| *o)))
        .collect();
    // Wait for every /ws client to reach every channel's top.
    let converged = wait_for(30, || async {
        logs.all(|all| {
            ws_ids.iter().all(|id| {
                tops.iter()
                    .all(|(c, top)| all[id].last_offset(c).unwrap_or(0) >= *top)
            })
        })
    })
    .await;
    if !converged {
        problems.push("not every /ws client reached the top of every channel within 30 s".into());
    }
    for driver in &mut drivers {
        driver.request_stats().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_clients.cancel();
    for task in client_tasks {
        let _ = task.await;
    }
    for driver in drivers {
        driver.stop().await;
    }

    // ---------------------------------------------------------------- the verdict
    check_history(&outbox, &created, &history, &epochs, &mut problems);
    let mut totals = Totals {
        published: history.values().map(Vec::len).sum(),
        ..Totals::default()
    };
    logs.all(|all| {
        for id in &ws_ids {
            check_client(id, &all[id], &history, &epochs, &mut totals, &mut problems);
        }
        for id in &tutorial_ids {
            count_tutorial(&all[id], &created, &mut totals);
        }
        // The faults reached the clients they were aimed at.
        for id in &ids_on_a {
            if all[id].connections < 2 {
                problems.push(format!(
                    "{id} started on gateway a but never connected again after it was killed"
                ));
            }
        }
        let disconnects_after: usize = paused_ids.iter().map(|id| dropped(&all[id])).sum();
        for id in &paused_ids {
            eprintln!("chaos: frozen client {id} disconnects (close codes): {:?}", all[id].disconnects);
        }
        if disconnects_after <= disconnects_before {
            problems.push(format!(
                "the frozen clients {paused_ids:?} were never dropped by the gateway (write/ping timeout)"
            ));
        }
    });
    println!(
        "chaos totals: published={} (api+publisher={}, content={}) delivered={} recovered={} announced_gaps={} duplicates={} (dropped by the TS client itself: {}) internal_errors_retried={} publish_retries={} (answered duplicate: {}) | tutorial: received={} gaps={} duplicates={} | n1 killed between publish and ack: {} (holding {}, after {} looks)",
        totals.published,
        outbox.sent.lock().unwrap().len(),
        created.len(),
        totals.delivered,
        totals.recovered,
        totals.announced_gaps,
        totals.duplicates,
        totals.dropped_by_client,
        totals.internal_errors,
        outbox.retries.load(Ordering::Relaxed),
        outbox.duplicates_answered.load(Ordering::Relaxed),
        totals.tutorial_received,
        totals.tutorial_gaps,
        totals.tutorial_duplicates,
        mid_work.between_publish_and_ack,
        mid_work.held,
        mid_work.looks,
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems
            .iter()
            .take(60)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---------------------------------------------------------------------- publishers

/// `POST /api/publish` round robin over the gateways, each message with its own
/// idempotency key, retried (on the other gateway, with the same key) until it succeeds.
async fn api_publisher(gateways: Vec<SocketAddr>, outbox: Arc<Outbox>, stop: CancellationToken) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut gateway = 0;
    let mut n = 0u64;
    while !stop.is_cancelled() {
        let channel = PUBLISHED[(n % 3) as usize];
        let data = json!({"src": "api", "n": n});
        let body =
            json!({"channel": channel, "data": data, "idempotency_key": format!("chaos-api-{n}")});
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut attempt = 0;
        loop {
            let addr = gateways[gateway % gateways.len()];
            let answer = http
                .post(format!("http://{addr}/api/publish"))
                .bearer_auth(API_KEY)
                .json(&body)
                .send()
                .await;
            if let Ok(response) = answer
                && response.status().as_u16() == 200
                && let Ok(reply) = response.json::<Value>().await
            {
                record(
                    &outbox,
                    channel,
                    &reply["offset"],
                    &reply["epoch"],
                    data,
                    attempt > 0 && reply["duplicate"] == true,
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "POST /api/publish of message {n} kept failing for 60 s"
            );
            attempt += 1;
            outbox.retries.fetch_add(1, Ordering::Relaxed);
            gateway += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
}

/// The Rust publisher (`herald-publisher`), straight to Redis, retried with the same key until it succeeds.
async fn rust_publisher(url: String, outbox: Arc<Outbox>, stop: CancellationToken) {
    let publisher = herald_publisher::Publisher::connect(&url, &[HISTORY]).unwrap();
    let mut n = 0u64;
    while !stop.is_cancelled() {
        let channel = PUBLISHED[(n % 3) as usize];
        let data = json!({"src": "publisher", "n": n});
        let key = format!("chaos-publisher-{n}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut attempt = 0;
        loop {
            let once = publisher.publish_once(channel, &data, &key, Duration::from_secs(300));
            if let Ok(Ok(published)) = tokio::time::timeout(Duration::from_secs(5), once).await {
                let position = published.position.expect("news:* keeps history");
                record(
                    &outbox,
                    channel,
                    &json!(position.offset),
                    &json!(position.epoch),
                    data,
                    attempt > 0 && published.duplicate,
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the Rust publisher kept failing for 60 s on message {n}"
            );
            attempt += 1;
            outbox.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

fn record(
    outbox: &Outbox,
    channel: &str,
    offset: &Value,
    epoch: &Value,
    data: Value,
    duplicate: bool,
) {
    if duplicate {
        outbox.duplicates_answered.fetch_add(1, Ordering::Relaxed);
    }
    outbox.sent.lock().unwrap().push(Sent {
        channel: channel.to_owned(),
        offset: offset
            .as_u64()
            .unwrap_or_else(|| panic!("publish answer without an offset: {offset}")),
        epoch: epoch.as_str().unwrap_or_default().to_owned(),
        data,
    });
}

/// Creates content on the content service every `every` until `stop` (with
/// `every` zero: a burst of 20 at once). Each becomes a `news:content` message.
async fn content_creator(
    addr: SocketAddr,
    outbox: Arc<Outbox>,
    stop: CancellationToken,
    first: u64,
    every: Duration,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let create = |n: u64| {
        let http = http.clone();
        let outbox = outbox.clone();
        async move {
            let title = format!("chaos content {n}");
            let answer = http
                .post(format!("http://{addr}/api/content"))
                .json(&json!({"title": title, "body": "created by tests/chaos.rs"}))
                .send()
                .await;
            match answer {
                Ok(response) if response.status().as_u16() == 201 => {
                    let item: Value = response.json().await.unwrap();
                    let id = item["id"].as_str().unwrap().to_owned();
                    outbox.content.lock().unwrap().push((id, title));
                }
                other => outbox
                    .content_failures
                    .lock()
                    .unwrap()
                    .push(format!("{title}: {other:?}")),
            }
        }
    };
    if every.is_zero() {
        futures_util::future::join_all((first..first + 20).map(create)).await;
        return;
    }
    let mut n = first;
    while !stop.is_cancelled() {
        create(n).await;
        n += 1;
        tokio::time::sleep(every).await;
    }
}

// ---------------------------------------------------------------------- faults

/// Where a notifier was when it was killed.
#[derive(Debug)]
struct MidWork {
    /// It had published the notifications of an event it had not acknowledged:
    /// the one moment a redelivery could publish them twice.
    between_publish_and_ack: bool,
    /// Events it held (read, unacknowledged) when it died.
    held: usize,
    /// How often it was frozen to look.
    looks: u32,
}

/// SIGKILLs notifier `name` between publishing an event's notifications and
/// acknowledging it. It is frozen (SIGSTOP) at varying moments and looked at:
/// when one of the events it holds already has its `news:content`
/// notification, it is killed there; otherwise thawed and tried again. After
/// 15 s it is killed wherever it is (the report says so).
async fn kill_mid_work(redis: &DurableRedis, notifier: &mut ChildProcess, name: &str) -> MidWork {
    let mut conn = redis.connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut looks = 0u32;
    loop {
        notifier.pause();
        looks += 1;
        let pending: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg("herald:domain-events")
            .arg("notifiers")
            .arg("-")
            .arg("+")
            .arg(100)
            .arg(name)
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut published = false;
        if !pending.ids.is_empty() {
            let notified: BTreeSet<String> = read_history(redis, CONTENT)
                .await
                .iter()
                .filter_map(|(_, d)| d["id"].as_str().map(str::to_owned))
                .collect();
            for entry in &pending.ids {
                let events: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                    .arg("herald:domain-events")
                    .arg(&entry.id)
                    .arg(&entry.id)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let content_id = events
                    .first()
                    .and_then(|(_, fields)| fields.iter().find(|(f, _)| f == "event"))
                    .and_then(|(_, text)| serde_json::from_str::<Value>(text).ok())
                    .and_then(|event| event["id"].as_str().map(str::to_owned));
                published |= content_id.is_some_and(|id| notified.contains(&id));
            }
        }
        if published || Instant::now() > deadline {
            notifier.kill();
            return MidWork {
                between_publish_and_ack: published,
                held: pending.ids.len(),
                looks,
            };
        }
        notifier.resume();
        tokio::time::sleep(Duration::from_micros(u64::from(looks % 7) * 500)).await;
    }
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

// ---------------------------------------------------------------------- Redis reads

/// A channel's whole history: (offset, data), in offset order.
async fn read_history(redis: &DurableRedis, channel: &str) -> Vec<(u64, Value)> {
    let mut conn = redis.connection().await.unwrap();
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("herald:{{{channel}}}:stream"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    entries
        .into_iter()
        .map(|(id, fields)| {
            let offset = id.strip_prefix("0-").unwrap().parse().unwrap();
            let data = fields
                .iter()
                .find(|(name, _)| name == "d")
                .map(|(_, d)| serde_json::from_str(d).unwrap())
                .unwrap_or(Value::Null);
            (offset, data)
        })
        .collect()
}

async fn read_epoch(redis: &DurableRedis, channel: &str) -> String {
    let mut conn = redis.connection().await.unwrap();
    redis::cmd("HGET")
        .arg(format!("herald:{{{channel}}}:meta"))
        .arg("epoch")
        .query_async::<Option<String>>(&mut conn)
        .await
        .unwrap()
        .unwrap_or_default()
}

async fn wait_events_subscribers(redis: &DurableRedis, n: i64) {
    let conn = redis.connection().await.unwrap();
    let reached = wait_for(20, || {
        let mut conn = conn.clone();
        async move {
            let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("events")
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            counts.first().map(|(_, c)| *c) == Some(n)
        }
    })
    .await;
    assert!(reached, "the tutorial channel never had {n} subscribers");
}

// ---------------------------------------------------------------------- checks

#[derive(Default)]
struct Totals {
    published: usize,
    delivered: usize,
    recovered: u64,
    announced_gaps: usize,
    duplicates: usize,
    dropped_by_client: u64,
    internal_errors: u64,
    tutorial_received: usize,
    tutorial_gaps: usize,
    tutorial_duplicates: usize,
}

/// History is what the publishers were told: each message once, at its offset, in one epoch, with no hole.
fn check_history(
    outbox: &Outbox,
    created: &[(String, String)],
    history: &BTreeMap<String, Vec<(u64, Value)>>,
    epochs: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
) {
    for failure in outbox.content_failures.lock().unwrap().iter() {
        problems.push(format!("creating content failed: {failure}"));
    }
    for (channel, entries) in history {
        let offsets: Vec<u64> = entries.iter().map(|(o, _)| *o).collect();
        let contiguous: Vec<u64> = (1..=offsets.len() as u64).collect();
        if offsets != contiguous {
            problems.push(format!(
                "{channel}: history offsets are not 1..={}: a hole or a trim ({:?}…)",
                offsets.len(),
                &offsets[..offsets.len().min(10)]
            ));
        }
        let mut seen = BTreeMap::new();
        for (offset, data) in entries {
            if let Some(first) = seen.insert(data.to_string(), *offset) {
                problems.push(format!(
                    "{channel}: {data} is in history twice, at {first} and {offset}"
                ));
            }
        }
    }
    let sent = outbox.sent.lock().unwrap();
    for message in sent.iter() {
        let entries = &history[&message.channel];
        let at = entries.iter().find(|(o, _)| *o == message.offset);
        if at.map(|(_, d)| d) != Some(&message.data) {
            problems.push(format!(
                "{}: {} was acknowledged at offset {} but history has {:?} there",
                message.channel,
                message.data,
                message.offset,
                at.map(|(_, d)| d)
            ));
        }
        if message.epoch != epochs[&message.channel] {
            problems.push(format!(
                "{}: {} was acknowledged in epoch {} but the channel is in epoch {}",
                message.channel, message.data, message.epoch, epochs[&message.channel]
            ));
        }
    }
    for channel in PUBLISHED {
        let acknowledged = sent.iter().filter(|m| m.channel == channel).count();
        if acknowledged != history[channel].len() {
            problems.push(format!(
                "{channel}: {acknowledged} messages acknowledged, {} in history",
                history[channel].len()
            ));
        }
    }
    // One news:content notification per created item: a notifier killed mid-work duplicates nothing.
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, data) in &history[CONTENT] {
        *per_id
            .entry(data["id"].as_str().unwrap_or("?"))
            .or_default() += 1;
    }
    for (id, title) in created {
        match per_id.get(id.as_str()) {
            Some(1) => {}
            count => problems.push(format!(
                "news:content: {title:?} ({id}) notified {count:?} times, not once"
            )),
        }
    }
    if per_id.len() != created.len() {
        problems.push(format!(
            "news:content holds {} items, {} were created",
            per_id.len(),
            created.len()
        ));
    }
}

/// A /ws client received exactly the messages after its first subscribe, in order, once, with no gap announced.
fn check_client(
    id: &str,
    log: &ClientLog,
    history: &BTreeMap<String, Vec<(u64, Value)>>,
    epochs: &BTreeMap<String, String>,
    totals: &mut Totals,
    problems: &mut Vec<String>,
) {
    totals.recovered += log.recovered;
    totals.internal_errors += log.internal_errors;
    totals.announced_gaps += log.announced_gaps.len();
    for gap in &log.announced_gaps {
        problems.push(format!("{id}: announced gap: {gap}"));
    }
    if let Some(dropped) = &log.dropped_by_client {
        totals.dropped_by_client += dropped.values().sum::<u64>();
    }
    for (channel, entries) in history {
        let Some(Some((first, first_epoch))) = log.first_position.get(channel) else {
            problems.push(format!("{id}: {channel}: never subscribed with a position"));
            continue;
        };
        // A client that subscribed before the channel's first publish holds offset 0
        // of a one-off epoch (a read creates none): every message is after it.
        if first_epoch != &epochs[channel] && *first != 0 {
            problems.push(format!(
                "{id}: {channel}: first subscribed in epoch {first_epoch}, the channel is in {}",
                epochs[channel]
            ));
        }
        let expected: Vec<&(u64, Value)> = entries.iter().filter(|(o, _)| o > first).collect();
        let received = log
            .received
            .get(channel)
            .map(Vec::as_slice)
            .unwrap_or_default();
        totals.delivered += received.len();
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for r in received {
            *counts.entry(r.offset).or_default() += 1;
        }
        let duplicates: Vec<u64> = counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(o, _)| *o)
            .collect();
        totals.duplicates += counts.values().map(|n| n - 1).sum::<usize>();
        let missing: Vec<u64> = expected
            .iter()
            .map(|(o, _)| *o)
            .filter(|o| !counts.contains_key(o))
            .collect();
        let unexpected: Vec<u64> = counts
            .keys()
            .copied()
            .filter(|o| !expected.iter().any(|(e, _)| e == o))
            .collect();
        let in_order = received.windows(2).all(|w| w[0].offset < w[1].offset);
        let wrong_data = received
            .iter()
            .filter(|r| {
                entries
                    .iter()
                    .find(|(o, _)| *o == r.offset)
                    .is_some_and(|(_, d)| *d != r.data)
            })
            .count();
        let wrong_epoch = received
            .iter()
            .filter(|r| r.epoch != epochs[channel])
            .count();
        if !missing.is_empty()
            || !duplicates.is_empty()
            || !unexpected.is_empty()
            || !in_order
            || wrong_data > 0
            || wrong_epoch > 0
        {
            problems.push(format!(
                "{id}: {channel}: first subscribed at {first}, expected {} messages, received {}: missing {} {:?}, duplicated {:?}, unexpected {:?}, in order: {in_order}, wrong data: {wrong_data}, wrong epoch: {wrong_epoch}; disconnects {:?}",
                expected.len(),
                received.len(),
                missing.len(),
                summarize(&missing),
                summarize(&duplicates),
                summarize(&unexpected),
                log.disconnects,
            ));
        }
    }
    for error in &log.errors {
        problems.push(format!("{id}: error: {error}"));
    }
}

/// How often a client was disconnected by anything but its own clean close (1000, at the end of the test).
fn dropped(log: &ClientLog) -> usize {
    log.disconnects.iter().filter(|code| **code != 1000).count()
}

/// Tutorial clients: counted, not asserted (no positions, no recovery on that route).
fn count_tutorial(log: &ClientLog, created: &[(String, String)], totals: &mut Totals) {
    totals.tutorial_received += log.texts.len();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for text in &log.texts {
        *counts.entry(text.as_str()).or_default() += 1;
    }
    for (_, title) in created {
        match counts.get(format!("Content published: {title}").as_str()) {
            None => totals.tutorial_gaps += 1,
            Some(n) => totals.tutorial_duplicates += n - 1,
        }
    }
}

/// Offsets as ranges, `[3..=7, 12]`, so a report stays readable.
fn summarize(offsets: &[u64]) -> String {
    let mut parts = Vec::new();
    let mut iter = offsets.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}..={end}")
        });
    }
    format!("[{}]", parts.join(", "))
}

// ---------------------------------------------------------------------- waiting

/// Waits (polling) until `done()` resolves true; false after `seconds`.
async fn wait_for<F, Fut>(seconds: u64, done: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if done().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------- everysec

/// With `appendfsync everysec` a machine crash may lose the last second of
/// acknowledged writes: Redis comes back *behind* what clients have seen, in the
/// same epoch, and the next publishes reuse offsets clients already hold for
/// other messages. That must reach clients as a new epoch or a gap signal,
/// never silently (docs/protocol.md, "The guarantee"). The lost second is
/// simulated exactly: the data directory is copied after an fsync and put back
/// after more publishes.
#[tokio::test]
#[ignore = "fails on main: history set back by lost writes keeps its epoch and offsets are reused silently (reported in issue #7 part C); un-ignore with the broker fix"]
async fn history_set_back_by_lost_writes_is_announced_not_reused_silently() {
    use herald_testkit::{connect, expect_frame, post_json, send_json};

    let mut redis = DurableRedis::start("everysec").await;
    let gateway = GatewayProcess::start(
        herald(),
        &redis.url(),
        "a",
        &[
            "--history",
            HISTORY,
            "--api-key",
            API_KEY,
            "--public-channel",
            "news:*",
        ],
    )
    .await;
    gateway.wait_readyz(200).await;
    let channel = "news:set-back";
    let publish = |n: u64| async move {
        let body = json!({"channel": channel, "data": {"n": n}});
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, reply) =
                post_json(gateway.addr, "/api/publish", Some(API_KEY), &body).await;
            if status == 200 {
                return reply;
            }
            assert!(Instant::now() < deadline, "publish {n}: {status} {reply}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };

    // A stays connected throughout.
    let url = format!("ws://{}/ws", gateway.addr);
    let mut a = connect(&url).await;
    expect_frame(&mut a, "connected").await;
    send_json(
        &mut a,
        json!({"type":"subscribe","id":1,"channels":[{"channel": channel}]}),
    )
    .await;
    expect_frame(&mut a, "subscribed").await;
    for n in 1..=5 {
        publish(n).await;
        expect_frame(&mut a, "message").await;
    }
    // Past the once-a-second fsync: these five are on disk.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let on_disk = redis.snapshot();
    let mut epoch = String::new();
    for n in 6..=10 {
        let reply = publish(n).await;
        epoch = reply["epoch"].as_str().unwrap().to_owned();
        let message = expect_frame(&mut a, "message").await;
        assert_eq!(message["offset"], n);
    }

    // The machine crashes; the last five acknowledged publishes were not fsynced.
    redis.restore(&on_disk).await;
    gateway.wait_readyz(200).await;
    let mut after = Vec::new();
    for n in 11..=16 {
        after.push(publish(n).await);
    }

    // A client that held offset 10 of the old history, resubscribing as the protocol says,
    // must not be told that it missed only what came after 10.
    let mut b = connect(&url).await;
    expect_frame(&mut b, "connected").await;
    send_json(
        &mut b,
        json!({"type":"subscribe","id":1,"channels":[{"channel": channel, "since": {"offset": 10, "epoch": epoch}}]}),
    )
    .await;
    let subscribed = expect_frame(&mut b, "subscribed").await;
    let told_b =
        subscribed["recovered"] == false || subscribed["position"]["epoch"] != epoch.as_str();

    // A must see all six new messages, and either in a new epoch or after a signal.
    let mut told_a = false;
    let mut silently_reused = Vec::new();
    let mut received = Vec::new();
    while received.len() < 6 {
        let frame = match herald_testkit::next_seen(&mut a, Duration::from_secs(5)).await {
            Ok(herald_testkit::Seen::Text(text)) => serde_json::from_str::<Value>(&text).unwrap(),
            Ok(other) => {
                received.push(json!(format!("{other:?}")));
                break;
            }
            Err(_) => {
                received.push(json!("nothing more within 5 s"));
                break;
            }
        };
        if frame["type"] != "message" {
            told_a = true;
            continue;
        }
        let offset = frame["offset"].as_u64().unwrap_or(0);
        if !told_a && frame["epoch"] == epoch.as_str() && offset <= 10 {
            silently_reused.push(frame.clone());
        }
        received.push(frame);
    }
    let messages = received.iter().filter(|f| f["type"] == "message").count();
    let mut failures = Vec::new();
    if !told_b {
        failures.push(format!(
            "a client resubscribing with since=10 in epoch {epoch} was told {subscribed}, although offsets 6..=10 now hold other messages"
        ));
    }
    if messages != 6 {
        failures.push(format!(
            "the connected client received {messages} of the 6 messages published after the loss (told of it: {told_a}): {received:?}"
        ));
    }
    if !silently_reused.is_empty() {
        failures.push(format!(
            "the connected client got offsets it already had, in the same epoch, with no signal: {silently_reused:?}"
        ));
    }
    assert!(
        failures.is_empty(),
        "{}\n(the publishes after the loss answered {after:?})",
        failures.join("\n")
    );
}

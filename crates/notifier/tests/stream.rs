//! The consumer-group runtime against a real `redis-server`: sharing, reclaiming, dead letters.
//!
//! Every test starts its own Redis on a free loopback port, appends domain
//! events with the real producer ([`RedisEventLog`]), runs real notifier
//! instances, and counts what a plain Redis Pub/Sub subscriber receives.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use herald_broker::{Broker, MemoryBroker};
use herald_notifier::stream_consumer::ensure_group;
use herald_notifier::{
    CONSUMER_GROUP, ContentCreated, DEAD_LETTER_STREAM, DOMAIN_EVENTS_STREAM, EventLog,
    NotifierConfig, RedisEventLog, StreamConsumerConfig, run, run_stream_consumer,
};
use herald_testkit::RedisServer;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Timings that make a test take seconds, not minutes: claims after 2 s of idleness.
fn fast(url: &str, consumer: &str) -> NotifierConfig {
    let mut config = NotifierConfig::new(url, consumer);
    config.stream = fast_stream(consumer);
    config
}

fn fast_stream(consumer: &str) -> StreamConsumerConfig {
    let mut stream = StreamConsumerConfig::new(consumer);
    stream.block = Duration::from_millis(100);
    stream.claim_interval = Duration::from_millis(200);
    // Far longer than a live member holds an entry (one small batch), even on a loaded CI machine.
    stream.batch_size = 16;
    stream.min_idle = Duration::from_secs(2);
    stream.command_timeout = Duration::from_millis(500);
    stream.reconnect_initial = Duration::from_millis(50);
    stream.reconnect_max = Duration::from_millis(200);
    stream
}

fn event(i: usize) -> String {
    ContentCreated {
        id: format!("c{i}"),
        title: format!("title {i}"),
        body: String::new(),
        created_at: "2026-01-01T00:00:00Z".into(),
        event_id: format!("e{i}"),
    }
    .to_json()
}

fn events(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(event).collect()
}

async fn setup() -> (RedisServer, MultiplexedConnection) {
    let redis = RedisServer::start().await;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // The group starts at `$`: create it before producing, as a deployed notifier would have.
    ensure_group(&mut conn, CONSUMER_GROUP).await.unwrap();
    (redis, conn)
}

/// A plain Pub/Sub subscriber on both notification channels.
struct Listener {
    /// (channel, payload) of every message, in arrival order.
    rx: mpsc::Receiver<(String, String)>,
    /// The task reading the subscription; aborted on drop.
    task: JoinHandle<()>,
}

impl Listener {
    async fn start(redis: &RedisServer) -> Listener {
        let mut pubsub = redis::Client::open(redis.url())
            .unwrap()
            .get_async_pubsub()
            .await
            .unwrap();
        pubsub.subscribe(&["events", "news:content"]).await.unwrap();
        let (tx, rx) = mpsc::channel(10_000);
        let task = tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                // `news:content` keeps history and travels enveloped; the bus message opens it.
                let channel = herald_protocol::ChannelName::new(msg.get_channel_name()).unwrap();
                let message =
                    herald_broker::BusMessage::from_wire(channel, msg.get_payload_bytes());
                let item = (
                    msg.get_channel_name().to_owned(),
                    String::from_utf8(message.payload.to_vec()).unwrap(),
                );
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        });
        Listener { rx, task }
    }

    /// Waits for `n` messages (at most `within`), then keeps listening a while to catch duplicates.
    async fn collect(&mut self, n: usize, within: Duration) -> Vec<(String, String)> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while got.len() < n {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(item)) => got.push(item),
                _ => break,
            }
        }
        while let Ok(Some(item)) =
            tokio::time::timeout(Duration::from_millis(1500), self.rx.recv()).await
        {
            got.push(item);
        }
        got
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Each event in `range` caused exactly one message on each channel, and nothing else arrived.
fn assert_exactly_once(got: &[(String, String)], range: std::ops::Range<usize>) {
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    for (channel, payload) in got {
        let key = if channel == "news:content" {
            let v: serde_json::Value = serde_json::from_str(payload).unwrap();
            assert_eq!(v["type"], "content.created");
            (channel.clone(), v["id"].as_str().unwrap().to_owned())
        } else {
            (channel.clone(), payload.clone())
        };
        *counts.entry(key).or_default() += 1;
    }
    let mut missing = Vec::new();
    let mut doubled = Vec::new();
    for i in range.clone() {
        for key in [
            ("events".to_owned(), format!("Content published: title {i}")),
            ("news:content".to_owned(), format!("c{i}")),
        ] {
            match counts.get(&key).copied().unwrap_or(0) {
                0 => missing.push(key),
                1 => {}
                _ => doubled.push(key),
            }
        }
    }
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert!(doubled.is_empty(), "doubled: {doubled:?}");
    assert_eq!(got.len(), 2 * range.len(), "unexpected extra messages");
}

async fn pending_total(conn: &mut MultiplexedConnection) -> i64 {
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(DOMAIN_EVENTS_STREAM)
        .arg(CONSUMER_GROUP)
        .query_async(conn)
        .await
        .unwrap();
    match summary {
        redis::Value::Array(parts) => match parts.first() {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("unexpected XPENDING summary {other:?}"),
        },
        other => panic!("unexpected XPENDING reply {other:?}"),
    }
}

async fn pending_of(conn: &mut MultiplexedConnection, consumer: &str) -> usize {
    let reply: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(DOMAIN_EVENTS_STREAM)
        .arg(CONSUMER_GROUP)
        .arg("-")
        .arg("+")
        .arg(10_000)
        .arg(consumer)
        .query_async(conn)
        .await
        .unwrap();
    reply.ids.len()
}

async fn dead_letters(conn: &mut MultiplexedConnection) -> Vec<HashMap<String, String>> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(DEAD_LETTER_STREAM)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    reply
        .ids
        .into_iter()
        .map(|entry| {
            entry
                .map
                .into_iter()
                .map(|(k, v)| (k, redis::from_redis_value::<String>(v).unwrap()))
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn two_instances_share_the_stream_and_publish_each_event_once_even_when_one_stops() {
    let (redis, mut conn) = setup().await;
    let mut listener = Listener::start(&redis).await;
    let cancel_a = CancellationToken::new();
    let cancel_b = CancellationToken::new();
    let a = tokio::spawn(run(fast(&redis.url(), "notifier-a"), cancel_a.clone()));
    let b = tokio::spawn(run(fast(&redis.url(), "notifier-b"), cancel_b.clone()));

    let log = RedisEventLog::open(&redis.url()).unwrap();
    let all = events(0..200);
    for (n, chunk) in all.chunks(10).enumerate() {
        log.append(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
        if n == 10 {
            // Stop one instance mid-stream; whatever it read and did not reach is claimed by the other.
            cancel_a.cancel();
        }
    }

    let got = listener.collect(400, Duration::from_secs(30)).await;
    assert_exactly_once(&got, 0..200);
    assert_eq!(pending_total(&mut conn).await, 0);
    assert!(dead_letters(&mut conn).await.is_empty());

    cancel_b.cancel();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
}

#[tokio::test]
async fn entries_of_dead_consumers_are_reclaimed_none_lost_none_doubled() {
    let (redis, mut conn) = setup().await;
    let mut listener = Listener::start(&redis).await;
    let log = RedisEventLog::open(&redis.url()).unwrap();
    log.append(&events(0..200)).await.unwrap();

    // A notifier that dies holding entries: it reads a batch, its publishes
    // fail (its in-process bus is already shut down), and it is killed before
    // it retries. Its long backoff keeps it from redelivering meanwhile.
    let (dead_bus, _inbox) = MemoryBroker::new();
    dead_bus.shutdown().await;
    let mut dying = fast_stream("notifier-dying");
    dying.batch_size = 64;
    dying.reconnect_initial = Duration::from_secs(60);
    dying.reconnect_max = Duration::from_secs(60);
    let kill = CancellationToken::new();
    let doomed = tokio::spawn({
        let url = redis.url();
        let kill = kill.clone();
        async move { run_stream_consumer(&url, dying, Arc::new(dead_bus), kill).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pending_of(&mut conn, "notifier-dying").await < 64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dying notifier never read its batch"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill.cancel();
    doomed.await.unwrap().unwrap();

    // A consumer that crashed right after reading: 30 more entries pending, never acknowledged.
    let _read: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(CONSUMER_GROUP)
        .arg("crashed")
        .arg("COUNT")
        .arg(30)
        .arg("STREAMS")
        .arg(DOMAIN_EVENTS_STREAM)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending_of(&mut conn, "crashed").await, 30);

    // The survivor handles the 106 fresh entries at once and claims the 94 abandoned ones after `min_idle`.
    let cancel = CancellationToken::new();
    let survivor = tokio::spawn(run(fast(&redis.url(), "notifier-survivor"), cancel.clone()));
    let got = listener.collect(400, Duration::from_secs(30)).await;
    assert_exactly_once(&got, 0..200);
    assert_eq!(pending_total(&mut conn).await, 0);
    assert_eq!(pending_of(&mut conn, "notifier-dying").await, 0);
    assert_eq!(pending_of(&mut conn, "crashed").await, 0);
    assert!(dead_letters(&mut conn).await.is_empty());

    cancel.cancel();
    survivor.await.unwrap().unwrap();
}

#[tokio::test]
async fn poison_events_are_dead_lettered_and_later_events_still_flow() {
    let (redis, mut conn) = setup().await;
    let mut listener = Listener::start(&redis).await;
    let cancel = CancellationToken::new();
    let notifier = tokio::spawn(run(fast(&redis.url(), "notifier-p"), cancel.clone()));

    let log = RedisEventLog::open(&redis.url()).unwrap();
    log.append(&events(0..3)).await.unwrap();
    let poison = [
        "this is not json".to_owned(),
        r#"{"type":"content.created","id":"bad","created_at":"x"}"#.to_owned(),
        r#"{"type":"user.deleted","id":"u1"}"#.to_owned(),
    ];
    log.append(&poison).await.unwrap();
    let _id: String = redis::cmd("XADD")
        .arg(DOMAIN_EVENTS_STREAM)
        .arg("*")
        .arg("foreign")
        .arg("field")
        .query_async(&mut conn)
        .await
        .unwrap();
    log.append(&events(3..10)).await.unwrap();

    let got = listener.collect(20, Duration::from_secs(15)).await;
    assert_exactly_once(&got, 0..10);
    assert_eq!(pending_total(&mut conn).await, 0);

    let dead = dead_letters(&mut conn).await;
    assert_eq!(
        dead.len(),
        3,
        "unknown types are skipped, not dead-lettered: {dead:?}"
    );
    assert_eq!(dead[0]["event"], "this is not json");
    assert!(
        dead[0]["reason"].contains("not valid JSON"),
        "{:?}",
        dead[0]
    );
    assert!(
        dead[1]["reason"].contains("\"title\" is missing"),
        "{:?}",
        dead[1]
    );
    assert!(
        dead[2]["reason"].contains("no \"event\" field"),
        "{:?}",
        dead[2]
    );
    for entry in &dead {
        assert_eq!(entry["consumer"], "notifier-p");
        assert!(entry.contains_key("entry"));
    }

    cancel.cancel();
    notifier.await.unwrap().unwrap();
}

#[tokio::test]
async fn entries_redelivered_too_often_are_dead_lettered() {
    let (redis, mut conn) = setup().await;
    let mut listener = Listener::start(&redis).await;
    let log = RedisEventLog::open(&redis.url()).unwrap();
    log.append(&events(0..2)).await.unwrap();
    // Delivered once to a consumer that never acknowledges it.
    let _read: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(CONSUMER_GROUP)
        .arg("flaky")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(DOMAIN_EVENTS_STREAM)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();

    let mut config = fast(&redis.url(), "notifier-limit");
    config.stream.max_deliveries = 1;
    let cancel = CancellationToken::new();
    let notifier = tokio::spawn(run(config, cancel.clone()));

    // The second event flows; the first, once idle, has used up its one delivery.
    let got = listener.collect(2, Duration::from_secs(10)).await;
    assert_exactly_once(&got, 1..2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let dead = dead_letters(&mut conn).await;
        if !dead.is_empty() || tokio::time::Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["event"], event(0));
    assert!(
        dead[0]["reason"].contains("after 1 deliveries"),
        "{:?}",
        dead[0]
    );
    assert_eq!(pending_total(&mut conn).await, 0);

    cancel.cancel();
    notifier.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_restarted_consumer_resumes_its_own_pending_entries_at_once() {
    let (redis, mut conn) = setup().await;
    let mut listener = Listener::start(&redis).await;
    let log = RedisEventLog::open(&redis.url()).unwrap();
    log.append(&events(0..5)).await.unwrap();
    // The previous life of "notifier-r" read everything and died.
    let _read: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(CONSUMER_GROUP)
        .arg("notifier-r")
        .arg("STREAMS")
        .arg(DOMAIN_EVENTS_STREAM)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();

    let mut config = fast(&redis.url(), "notifier-r");
    config.stream.min_idle = Duration::from_secs(60);
    let cancel = CancellationToken::new();
    let notifier = tokio::spawn(run(config, cancel.clone()));
    // Well before `min_idle`: no claim is involved.
    let got = listener.collect(10, Duration::from_secs(5)).await;
    assert_exactly_once(&got, 0..5);
    assert_eq!(pending_total(&mut conn).await, 0);

    cancel.cancel();
    notifier.await.unwrap().unwrap();
}

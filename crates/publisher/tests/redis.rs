//! The publisher against a real Redis: positions, history and idempotency,
//! read back the way a gateway reads them.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use herald_broker::RedisBrokerConfig;
use herald_protocol::ChannelName;
use herald_publisher::{PublishError, Publisher};
use herald_testkit::RedisServer;
use serde_json::json;

#[tokio::test]
async fn published_messages_land_in_history_with_positions_and_retries_publish_once() {
    let redis = RedisServer::start().await;
    let publisher = Publisher::connect(&redis.url(), &["news:*=100"]).unwrap();

    let first = publisher.publish("news:a", &json!({"n": 1})).await.unwrap();
    let second = publisher
        .publish_once("news:a", &json!({"n": 2}), "k-2", Duration::from_secs(60))
        .await
        .unwrap();
    let retry = publisher
        .publish_once("news:a", &json!({"n": 2}), "k-2", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(first.position.as_ref().unwrap().offset, 1);
    assert_eq!(second.position.as_ref().unwrap().offset, 2);
    assert!(retry.duplicate);
    assert_eq!(retry.position, second.position);

    // What a gateway recovering from offset 0 would find.
    let (reader, _inbox) =
        herald_broker::connect(&redis.url(), RedisBrokerConfig::default()).unwrap();
    let channel = ChannelName::new("news:a").unwrap();
    let since = herald_protocol::Position::new(0, first.position.unwrap().epoch);
    let recovery = reader.recover(&channel, Some(&since), 100).await.unwrap();
    assert!(recovery.complete);
    let data: Vec<serde_json::Value> = recovery
        .messages
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    assert_eq!(data, [json!({"n": 1}), json!({"n": 2})]);

    // A channel without a history rule is published live only.
    assert_eq!(
        publisher
            .publish("events", "Content published: x")
            .await
            .unwrap()
            .position,
        None
    );
}

#[tokio::test]
async fn bad_input_is_refused_before_it_reaches_redis() {
    let redis = RedisServer::start().await;
    let publisher = Publisher::connect(&redis.url(), &[]).unwrap();
    assert!(matches!(
        publisher.publish("bad channel", &1).await,
        Err(PublishError::InvalidChannel(_))
    ));
    assert!(matches!(
        publisher
            .publish_once("news:a", &1, "", Duration::from_secs(1))
            .await,
        Err(PublishError::BadIdempotencyKey)
    ));
    assert!(matches!(
        Publisher::connect(&redis.url(), &["news:*"]),
        Err(PublishError::HistoryRule(_))
    ));
    assert!(matches!(
        Publisher::connect("kafka://x", &[]),
        Err(PublishError::Broker(_))
    ));
}

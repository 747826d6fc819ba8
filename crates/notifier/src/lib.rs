//! Herald's notification function: domain events in, live notifications out.
//!
//! The tutorial's content service publishes `Content published: <title>`
//! straight to Pub/Sub. Herald splits that in two, FaaS style: the content
//! service records a durable domain event (`content.created`), and this
//! function turns domain events into notifications and publishes them through
//! the [`Broker`](herald_broker::Broker). The function itself is a pure
//! handler; the runtimes around it decide where events come from.
//!
//! # Layout
//!
//! - [`event`]: the domain-event envelope and the `content.created` schema producers write.
//! - [`handler`]: the pure function, `handle(&DomainEvent) -> Result<Vec<Notification>, Rejection>`.
//! - [`event_log`]: the [`EventLog`] contract producers append to, and its stream names.
//! - [`redis_log`]: the event log as the Redis Stream `herald:domain-events`.
//! - [`memory_log`]: the event log as a bounded channel, for the one-process demo.
//! - [`deliver`]: handle one event and publish its notifications; shared by every runtime.
//! - [`stream_consumer`]: the consumer-group runtime (claims, dead letters, delivery limits).
//! - [`memory_consumer`]: the runtime that drains the in-memory log.
//! - [`invoke`]: the HTTP trigger, `POST /invoke`.
//! - [`api_key`]: bearer API keys, how the services behind the gateway trust their callers.
//! - [`runtime`]: `herald notifier` as a whole: [`NotifierConfig`] and [`run`].

// Tests may unwrap: a panic there is a failed test with its message.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api_key;
pub mod deliver;
pub mod event;
pub mod event_log;
pub mod handler;
pub mod invoke;
pub mod memory_consumer;
pub mod memory_log;
pub mod redis_log;
pub mod runtime;
pub mod stream_consumer;
mod stream_entry;

pub use api_key::{ApiKeys, KeyRefusal};
pub use event::{CONTENT_CREATED, ContentCreated, DomainEvent};
pub use event_log::{DEAD_LETTER_STREAM, DOMAIN_EVENTS_STREAM, EventLog, EventLogError};
pub use handler::{CONTENT_CHANNEL, Notification, Rejection, handle};
pub use memory_consumer::run_memory_consumer;
pub use memory_log::{MemoryEventLog, MemoryEvents};
pub use redis_log::RedisEventLog;
pub use runtime::{Notifier, NotifierConfig, NotifierError, run};
pub use stream_consumer::{
    CONSUMER_GROUP, StreamConsumerConfig, StreamConsumerError, run_stream_consumer,
};

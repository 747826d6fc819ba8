//! `herald notifier`: the notification function as its own process.
//!
//! Thin wiring over [`herald_notifier::run`]: flags in, a [`NotifierConfig`]
//! out, SIGINT/SIGTERM to stop. Run two or more (each with its own
//! `--consumer`): they share the work of the stream `herald:domain-events`,
//! and when one dies the others take over its unacknowledged events after
//! `--reclaim-idle`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use herald_notifier::{ApiKeys, NotifierConfig, StreamConsumerConfig};
use tokio_util::sync::CancellationToken;

use crate::gateway::positive_duration;
use crate::signals::cancel_on_signal;

/// Flags of `herald notifier`.
#[derive(Debug, Args)]
pub(crate) struct NotifierArgs {
    /// The Redis holding `herald:domain-events` and carrying the notifications: `redis://HOST:PORT[/DB]`.
    #[arg(long, env = "HERALD_BROKER", default_value = "redis://127.0.0.1:6379")]
    pub(crate) broker: String,

    /// This instance's name in the consumer group: unique per running notifier, stable across its restarts [default: HOSTNAME].
    #[arg(long, env = "HERALD_CONSUMER")]
    pub(crate) consumer: Option<String>,

    /// Also serve the function's HTTP trigger, `POST /invoke`, on this address (needs `--api-key`
    /// or `--insecure-open-invoke`).
    #[arg(long, env = "HERALD_LISTEN")]
    pub(crate) listen: Option<SocketAddr>,

    /// A key `POST /invoke` accepts as `Authorization: Bearer KEY`; repeatable.
    #[arg(
        long = "api-key",
        env = "HERALD_NOTIFIER_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) api_keys: Vec<String>,

    /// Serve `POST /invoke` to anyone when no `--api-key` is given (anyone could then publish notifications).
    #[arg(long, env = "HERALD_INSECURE_OPEN_INVOKE")]
    pub(crate) insecure_open_invoke: bool,

    /// How long an event may stay unacknowledged by its notifier before another one takes it over (at least 2s).
    #[arg(long, env = "HERALD_RECLAIM_IDLE", default_value = "30s", value_parser = reclaim_idle)]
    pub(crate) reclaim_idle: Duration,

    /// How often to look for events other notifiers left unacknowledged.
    #[arg(long, env = "HERALD_CLAIM_INTERVAL", default_value = "5s", value_parser = positive_duration)]
    pub(crate) claim_interval: Duration,

    /// After this many deliveries without an acknowledgement an event goes to `herald:dead-letter`.
    #[arg(long, env = "HERALD_MAX_DELIVERIES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) max_deliveries: u32,
}

/// Parses `--reclaim-idle`: at least the stream commands' timeout, so a live but slow
/// notifier's events are not taken over (and published twice) while it still works on them.
fn reclaim_idle(text: &str) -> Result<Duration, String> {
    let duration = positive_duration(text)?;
    let floor = StreamConsumerConfig::new("x").command_timeout;
    if duration < floor {
        return Err(format!(
            "must be at least {} (the Redis command timeout)",
            humantime::format_duration(floor)
        ));
    }
    Ok(duration)
}

impl NotifierArgs {
    fn config(&self) -> NotifierConfig {
        let consumer = self
            .consumer
            .clone()
            .unwrap_or_else(herald_gateway::config::hostname);
        let mut config = NotifierConfig::new(self.broker.clone(), consumer);
        config.listen = self.listen;
        config.invoke_keys = ApiKeys::new(self.api_keys.iter().map(String::as_str));
        config.open_invoke = self.insecure_open_invoke;
        config.stream.min_idle = self.reclaim_idle;
        config.stream.claim_interval = self.claim_interval;
        config.stream.max_deliveries = self.max_deliveries as usize;
        config
    }
}

/// Runs a notifier until SIGINT or SIGTERM.
pub(crate) async fn run(args: NotifierArgs, shutdown_timeout: Duration) -> Result<()> {
    let mut config = args.config();
    config.shutdown_timeout = shutdown_timeout;
    let consumer = config.stream.consumer.clone();
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    herald_notifier::run(config, cancel)
        .await
        .with_context(|| format!("notifier {consumer:?} (--broker {})", args.broker))
}

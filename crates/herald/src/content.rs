//! `herald content`: the content service as its own process.
//!
//! Thin wiring over [`herald_content::serve`]: flags in, a
//! [`ContentConfig`] out, SIGINT/SIGTERM to stop. Behind a gateway started
//! with `--content-upstream http://THIS_ADDR`, browsers reach it on the
//! gateway's origin.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use herald_broker::backoff::Backoff;
use herald_content::ContentConfig;
use herald_notifier::stream_consumer::ensure_group;
use herald_notifier::{ApiKeys, CONSUMER_GROUP};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::signals::cancel_on_signal;

/// Flags of `herald content`.
#[derive(Debug, Args)]
pub(crate) struct ContentArgs {
    /// Address to serve the content API on (`/api/content`).
    #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:8090")]
    pub(crate) listen: SocketAddr,

    /// The Redis whose stream `herald:domain-events` receives the domain events: `redis://HOST:PORT[/DB]`.
    #[arg(long, env = "HERALD_BROKER", default_value = "redis://127.0.0.1:6379")]
    pub(crate) broker: String,

    /// The database: `sqlite://PATH` (file and directory created if missing) or `postgres://…`.
    #[arg(
        long,
        env = "HERALD_DATABASE",
        default_value = "sqlite://herald-content.db"
    )]
    pub(crate) database: String,

    /// A key `POST /api/content` requires as `Authorization: Bearer KEY` (give the gateway the
    /// same one as `--content-api-key`); repeatable. Without any, anyone may create content.
    #[arg(
        long = "api-key",
        env = "HERALD_CONTENT_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) api_keys: Vec<String>,
}

/// Runs the content service until SIGINT or SIGTERM.
pub(crate) async fn run(args: ContentArgs, shutdown_timeout: Duration) -> Result<()> {
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    let tasks = TaskTracker::new();
    tasks.spawn(prepare_consumer_group(args.broker.clone(), cancel.clone()));
    tasks.close();
    let mut config = ContentConfig::new(args.listen, args.broker.clone(), args.database.clone());
    config.api_keys = ApiKeys::new(args.api_keys.iter().map(String::as_str));
    config.shutdown_timeout = shutdown_timeout;
    let served = herald_content::serve(config, cancel.clone())
        .await
        .with_context(|| {
            format!(
                "content service (--listen {} --broker {} --database {})",
                args.listen, args.broker, args.database
            )
        });
    cancel.cancel();
    tasks.wait().await;
    served
}

/// Creates the notifiers' consumer group if no notifier has yet, retrying until Redis answers.
///
/// A new group starts at the end of the stream, so without this the events
/// of content created before the first notifier ever started would never be
/// notified. Once the group exists, events wait in the stream for the
/// notifiers however late they come.
pub(crate) async fn prepare_consumer_group(redis_url: String, cancel: CancellationToken) {
    let client = match redis::Client::open(redis_url.as_str()) {
        Ok(client) => client,
        // serve() reports the bad URL; nothing to add here.
        Err(_) => return,
    };
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let attempt = async {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            ensure_group(&mut conn, CONSUMER_GROUP).await
        };
        let result = tokio::select! {
            result = attempt => result,
            () = cancel.cancelled() => return,
        };
        match result {
            Ok(()) => {
                info!(group = CONSUMER_GROUP, "notifier consumer group ready");
                return;
            }
            Err(e) => warn!(error = %e, "cannot create the notifier consumer group yet; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_wait()) => {}
            () = cancel.cancelled() => return,
        }
    }
}

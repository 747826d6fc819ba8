//! `herald demo`: the whole system in one process, for a newcomer's first five minutes.
//!
//! One command starts what a deployment runs as separate processes — the
//! gateway, the content service, the notifier and the web app — on one port
//! and, by default, with nothing else installed: the bus is `memory://`, the
//! database a SQLite file in the current directory. Open the printed URL in
//! two tabs, create content in one, and it appears in both.
//!
//! The wiring is the in-process one the crates describe: the content
//! service's relay appends to a [`MemoryEventLog`], the notifier drains it
//! with [`run_memory_consumer`] and publishes through the gateway's own
//! broker, and the gateway mounts the content routes directly (no proxy).
//! With `--broker redis://…` the bus is Redis, the event log the Redis Stream
//! `herald:domain-events`, and the notifier a member of its consumer group,
//! still publishing through the gateway's broker.
//!
//! Creating content is open to anyone who can reach the port, because the
//! page's form posts anonymously; the banner says so in one line, and
//! `--content-api-key` closes it (then only callers sending that key may
//! create content, and the page's form is refused).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use herald_broker::{Broker, HistoryRules, RedisBrokerConfig};
use herald_content::{ContentService, RelayConfig};
use herald_gateway::edge::web_app;
use herald_gateway::policy::ChannelPolicy;
use herald_gateway::{Gateway, GatewayConfig};
use herald_notifier::deliver::NOTIFICATION_HISTORY;
use herald_notifier::memory_log::DEFAULT_MEMORY_LOG_CAPACITY;
use herald_notifier::{
    ApiKeys, MemoryEventLog, StreamConsumerConfig, run_memory_consumer, run_stream_consumer,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

use crate::edge_flags::DEFAULT_WEB_DIR;
use crate::signals::cancel_on_signal;

/// Prints a line for the person running the demo. A closed stdout
/// (`herald demo | head -1`) must not panic the demo, so write errors are ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Flags of `herald demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Address to listen on; open it in a browser.
    #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,

    /// The bus: `memory://` (nothing else needed) or `redis://HOST:PORT[/DB]`.
    #[arg(long, env = "HERALD_BROKER", default_value = "memory://")]
    pub(crate) broker: String,

    /// The content database: `sqlite://PATH` (created if missing) or `postgres://…`.
    #[arg(
        long,
        env = "HERALD_DATABASE",
        default_value = "sqlite://herald-demo.db"
    )]
    pub(crate) database: String,

    /// The built web app to serve at `/`.
    #[arg(long, env = "HERALD_WEB_DIR", default_value = DEFAULT_WEB_DIR)]
    pub(crate) web_dir: PathBuf,

    /// Do not run `npm ci && npm run build` when the web app is not built.
    #[arg(long, env = "HERALD_NO_WEB_BUILD")]
    pub(crate) no_web_build: bool,

    /// Name of this instance, shown in the page and in /healthz.
    #[arg(long, env = "HERALD_INSTANCE_ID", default_value = "demo")]
    pub(crate) instance_id: String,

    /// Require this key (`Authorization: Bearer KEY`) to create content; repeatable.
    /// Without one, anyone who can reach the demo may create content.
    #[arg(
        long = "content-api-key",
        env = "HERALD_CONTENT_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) content_api_keys: Vec<String>,
}

/// Runs the whole system in this process until SIGINT or SIGTERM.
pub(crate) async fn run(args: DemoArgs) -> Result<()> {
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    if !args.no_web_build {
        build_web_if_missing(&args.web_dir, &cancel).await;
    }
    if cancel.is_cancelled() {
        return Ok(());
    }

    let redis_url = redis_url(&args.broker)?;
    // The web app subscribes anonymously over `/ws` to `news:content` (structured,
    // kept in history so a reconnecting tab recovers what it missed) and to the
    // tutorial's `events`: both must be public, and `news:*` must keep the
    // history the notifier publishes it with.
    let channels = ChannelPolicy {
        public: vec!["news:*".into(), "events".into()],
        history: HistoryRules::parse([NOTIFICATION_HISTORY])?,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let (broker, inbox) = herald_broker::connect(&args.broker, RedisBrokerConfig::default())
        .with_context(|| format!("--broker {}", args.broker))?;

    // The content service and the notifier: the notifier publishes through `broker`,
    // the very instance the gateway below fans out from.
    let tasks = TaskTracker::new();
    let background = CancellationToken::new();
    let opened = match &redis_url {
        None => {
            let (log, events) = MemoryEventLog::channel(DEFAULT_MEMORY_LOG_CAPACITY);
            let opened =
                ContentService::open(&args.database, Arc::new(log), RelayConfig::default()).await;
            if opened.is_ok() {
                tasks.spawn(run_memory_consumer(
                    events,
                    broker.clone(),
                    background.clone(),
                ));
            }
            opened.with_context(|| format!("--database {}", args.database))
        }
        Some(url) => open_with_redis(url, &args, &broker, &tasks, &background, &cancel).await,
    };
    let content = match opened {
        Ok(content) => content.with_write_keys(ApiKeys::new(
            args.content_api_keys.iter().map(String::as_str),
        )),
        Err(e) => {
            background.cancel();
            tasks.close();
            tasks.wait().await;
            broker.shutdown().await;
            return Err(e);
        }
    };

    let config = GatewayConfig {
        instance_id: args.instance_id.clone(),
        channels,
        ..GatewayConfig::default()
    };
    let gateway = Gateway::new(config, broker, inbox);
    let shutdown = gateway.shutdown_token();
    tasks.spawn({
        let (cancel, shutdown) = (cancel.clone(), shutdown.clone());
        async move {
            tokio::select! {
                () = cancel.cancelled() => shutdown.cancel(),
                () = shutdown.cancelled() => {}
            }
        }
    });
    tasks.close();

    let router = gateway
        .router()
        .merge(content.router())
        .merge(web_app(args.web_dir.clone()));
    print_banner(&listener, &args, content.state().writes_are_open());
    let served = gateway.serve(listener, router).await;

    // The gateway is down: no request creates content any more.
    content.shutdown().await;
    background.cancel();
    tasks.wait().await;
    served.context("serving")?;
    say!("herald demo stopped");
    Ok(())
}

/// Opens the content service on the Redis Stream event log and starts a stream-consumer notifier.
async fn open_with_redis(
    url: &str,
    args: &DemoArgs,
    broker: &Arc<dyn Broker>,
    tasks: &TaskTracker,
    background: &CancellationToken,
    cancel: &CancellationToken,
) -> Result<ContentService> {
    let log =
        herald_notifier::event_log::connect(url).with_context(|| format!("--broker {url}"))?;
    // The group must exist before the relay appends, or the first events are skipped.
    let prepared = crate::content::prepare_consumer_group(url.to_owned(), cancel.clone());
    if tokio::time::timeout(Duration::from_secs(5), prepared)
        .await
        .is_err()
    {
        warn!("Redis did not answer within 5s; content created before it does may not be notified");
    }
    let content = ContentService::open(&args.database, log, RelayConfig::default())
        .await
        .with_context(|| format!("--database {}", args.database))?;
    let consumer =
        StreamConsumerConfig::new(format!("demo@{}", herald_gateway::config::hostname()));
    let (url, broker, stop) = (url.to_owned(), broker.clone(), background.clone());
    tasks.spawn(async move {
        if let Err(e) = run_stream_consumer(&url, consumer, broker, stop).await {
            error!(error = %e, "the notifier stopped");
        }
    });
    Ok(content)
}

/// `Some(url)` for a Redis broker, `None` for `memory://`; an error for anything else.
fn redis_url(broker: &str) -> Result<Option<String>> {
    if broker == "memory://" || broker == "memory" {
        return Ok(None);
    }
    if broker.starts_with("redis://")
        || broker.starts_with("rediss://")
        || broker.starts_with("redis+unix://")
    {
        return Ok(Some(broker.to_owned()));
    }
    bail!("--broker {broker:?}: write memory:// or redis://HOST:PORT[/DB]")
}

/// The banner's line about who may create content.
pub(crate) const OPEN_NOTICE: &str = "Content creation is OPEN: anyone who can reach this address may POST /api/content. Close it with --content-api-key KEY.";

/// The banner's line when `--content-api-key` is given.
pub(crate) const CLOSED_NOTICE: &str = "Content creation needs Authorization: Bearer KEY (--content-api-key); the page's form is refused.";

/// Tells the person at the terminal where to look, and whether strangers may write.
fn print_banner(listener: &tokio::net::TcpListener, args: &DemoArgs, writes_open: bool) {
    let mut addr = listener.local_addr().unwrap_or(args.listen);
    if addr.ip().is_unspecified() {
        addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let built = args.web_dir.join("index.html").is_file();
    say!();
    say!("  Herald demo is running: http://{addr}/");
    say!();
    say!("  Open it in two browser tabs, create content in one, and watch it appear in both.");
    if writes_open {
        say!("  {OPEN_NOTICE}");
        warn!("{OPEN_NOTICE}");
    } else {
        say!("  {CLOSED_NOTICE}");
    }
    if !built {
        say!(
            "  (The web app is not built: the page says how. Build it with `cd web && npm ci && npm run build`.)"
        );
    }
    say!(
        "  Bus: {}   Database: {}   Stop: Ctrl-C",
        args.broker,
        args.database
    );
    say!();
}

/// Builds the web app with npm when `web_dir` has no `index.html`, printing what it does.
///
/// Failure is not fatal: the demo still serves the API, the WebSocket and a
/// page saying how to build the app.
async fn build_web_if_missing(web_dir: &Path, cancel: &CancellationToken) {
    if web_dir.join("index.html").is_file() {
        return;
    }
    let Some(project) = web_dir
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .filter(|p| p.join("package.json").is_file())
    else {
        say!(
            "The web app is not built ({} has no index.html) and its sources are not next to it; the page at / says how to build it.",
            web_dir.display()
        );
        return;
    };
    let Some(npm) = find_on_path("npm") else {
        say!(
            "The web app is not built and npm is not installed; the page at / says how to build it."
        );
        return;
    };
    say!(
        "The web app is not built yet ({} has no index.html); building it (skip with --no-web-build):",
        web_dir.display()
    );
    for step in [&["ci"][..], &["run", "build"][..]] {
        say!("  $ (cd {} && npm {})", project.display(), step.join(" "));
        let spawned = tokio::process::Command::new(&npm)
            .args(step)
            .current_dir(project)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                say!("  could not run npm: {e}; the page at / says how to build the app.");
                return;
            }
        };
        tokio::select! {
            status = child.wait() => match status {
                Ok(status) if status.success() => {}
                Ok(status) => {
                    say!("  npm {} failed ({status}); the page at / says how to build the app.", step.join(" "));
                    return;
                }
                Err(e) => {
                    say!("  npm {} failed: {e}", step.join(" "));
                    return;
                }
            },
            () = cancel.cancelled() => {
                let _ = child.kill().await;
                return;
            }
        }
    }
    say!("  built {}", web_dir.display());
}

/// The first executable file named `name` on `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

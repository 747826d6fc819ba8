//! `herald`: the one binary — every Herald service and tool is a subcommand.
//!
//! Each flag can also be set with a `HERALD_*` environment variable (shown in
//! `--help`), so the same binary configures the same way on a laptop, in a
//! `Procfile` and in a container.

mod content;
mod demo;
mod edge_flags;
mod gateway;
mod notifier;
mod protocol_flags;
mod signals;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Real-time notifications over WebSocket, fanned out through Redis.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, long_about = None)]
struct Cli {
    /// Log filter, in `RUST_LOG` syntax (e.g. `info`, `herald_gateway=debug`).
    #[arg(long, global = true, env = "HERALD_LOG", default_value = "info")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once at start-up: the size of the largest variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run a gateway: hold client connections and deliver every bus message to them.
    Gateway(gateway::GatewayArgs),
    /// Measure a running gateway: connect clients, publish through Redis, report loss and latency.
    Bench(herald_bench::BenchArgs),
    /// Run the content service: the content API, its database and the outbox relay to Redis.
    Content(content::ContentArgs),
    /// Run a notifier: turn domain events from the Redis Stream into live notifications.
    Notifier(notifier::NotifierArgs),
    /// Run the whole system in one process (gateway, content, notifier, web app) and print the URL to open.
    Demo(demo::DemoArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .map_err(|e| anyhow::anyhow!("--log {:?}: {e}", cli.log))?,
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs piped to files, containers and CI stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Gateway(args) => gateway::run(args).await,
            Command::Bench(args) => {
                herald_bench::run_cli(args).await?;
                Ok(())
            }
            Command::Content(args) => content::run(args).await,
            Command::Notifier(args) => notifier::run(args).await,
            Command::Demo(args) => demo::run(args).await,
        }
    })
}

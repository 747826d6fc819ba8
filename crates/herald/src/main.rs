//! `herald`: the one binary — every Herald service and tool is a subcommand.
//!
//! Each flag can also be set with a `HERALD_*` environment variable (shown in
//! `--help`), so the same binary configures the same way on a laptop, in a
//! `Procfile` and in a container.

mod gateway;
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
enum Command {
    /// Run a gateway: hold client connections and deliver every bus message to them.
    Gateway(gateway::GatewayArgs),
    /// Measure a running gateway: connect clients, publish through Redis, report loss and latency.
    Bench(herald_bench::BenchArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .map_err(|e| anyhow::anyhow!("--log {:?}: {e}", cli.log))?,
        )
        .with_writer(std::io::stderr)
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
        }
    })
}

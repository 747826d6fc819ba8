//! `herald`: the one binary — every Herald service and tool is a subcommand.
//!
//! Each flag can also be set with a `HERALD_*` environment variable (shown in
//! `--help`), so the same binary configures the same way on a laptop, in a
//! `Procfile` and in a container.

mod content;
mod demo;
mod edge_flags;
mod gateway;
mod logging;
mod notifier;
mod protocol_flags;
mod signals;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Real-time notifications over WebSocket, fanned out through Redis.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, long_about = None)]
struct Cli {
    /// Log filter, in `RUST_LOG` syntax (e.g. `info`, `herald_gateway=debug`).
    #[arg(long, global = true, env = "HERALD_LOG", default_value = "info")]
    log: String,

    /// Longest a shutdown may take after SIGTERM or SIGINT; what is still open then is dropped.
    #[arg(long, global = true, env = "HERALD_SHUTDOWN_TIMEOUT", default_value = "15s", value_parser = gateway::positive_duration)]
    shutdown_timeout: Duration,

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

/// Exit status of a command line that could not be parsed (as clap's own errors).
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    let logs = match logging::init(&cli.log) {
        Ok(logs) => logs,
        Err(error) => {
            report(&error);
            return ExitCode::from(USAGE_ERROR);
        }
    };
    signals::set_shutdown_timeout(cli.shutdown_timeout);
    let result = run(cli);
    // Through the log queue, after the lines already in it: the error is the
    // last thing said, and a stalled stderr cannot hold the exit.
    let status = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            logs.say(format!("herald: {}\n", one_line(&error)));
            ExitCode::FAILURE
        }
    };
    drop(logs);
    status
}

/// Runs the chosen subcommand on a fresh runtime.
fn run(cli: Cli) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let shutdown_timeout = cli.shutdown_timeout;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Gateway(args) => gateway::run(args, shutdown_timeout).await,
            Command::Bench(args) => {
                herald_bench::run_cli(args).await?;
                Ok(())
            }
            Command::Content(args) => content::run(args, shutdown_timeout).await,
            Command::Notifier(args) => notifier::run(args, shutdown_timeout).await,
            Command::Demo(args) => demo::run(args).await,
        }
    });
    // Tasks a bounded shutdown abandoned must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Prints `herald: <what>: <why>: …` on one line of stderr (before logging is up), ignoring a closed stderr.
fn report(error: &anyhow::Error) {
    let _ = writeln!(std::io::stderr(), "herald: {}", one_line(error));
}

/// The cause chain of `error` on one line. A cause whose text its parent already
/// shows (`redis: X` caused by `X`) or that says nothing is left out.
fn one_line(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() || parts.last().is_some_and(|last| last.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// A command line clap refused: help and version as clap prints them, errors on one line.
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        error.exit();
    }
    let rendered = error.render().to_string();
    // Drop clap's trailer (usage, "for more information") and join what is left.
    let message = rendered
        .split("\n\n")
        .take_while(|part| !part.starts_with("Usage:") && !part.starts_with("For more information"))
        .flat_map(str::lines)
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    let _ = writeln!(std::io::stderr(), "herald: {message} (see --help)");
    ExitCode::from(USAGE_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_repeating_its_parent_is_said_once() {
        let inner = std::io::Error::other("can't connect with TLS");
        let error = anyhow::Error::new(inner)
            .context("redis: can't connect with TLS")
            .context("--broker rediss://localhost:1");
        assert_eq!(
            one_line(&error),
            "--broker rediss://localhost:1: redis: can't connect with TLS"
        );
    }

    #[test]
    fn empty_and_multi_line_causes_stay_on_one_line() {
        let error = anyhow::anyhow!("bad\nvalue")
            .context("")
            .context("--flag x");
        assert_eq!(one_line(&error), "--flag x: bad value");
    }
}

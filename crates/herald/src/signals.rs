//! Turns SIGINT and SIGTERM into a cancellation, so every service shuts down the same
//! orderly way — and makes sure that way ends.
//!
//! Each service bounds its own shutdown by `--shutdown-timeout`. As the last
//! line of defence against anything that still hangs (a blocking call, a
//! task that ignores its token), the first signal also starts a plain thread
//! that ends the process [`EXIT_GRACE`] after that timeout, whatever it is
//! doing. That thread is the one thing not stopped by shutdown: it is what stops.

use std::sync::OnceLock;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

/// How long past `--shutdown-timeout` the process is given before it is ended anyway.
pub(crate) const EXIT_GRACE: Duration = Duration::from_secs(2);

/// How long the last log line is given to reach stderr before a forced exit.
const LAST_WORDS: Duration = Duration::from_millis(200);

/// The exit status of a shutdown that had to be cut short.
const FORCED_EXIT: i32 = 1;

/// `--shutdown-timeout`, set once at start.
static SHUTDOWN_TIMEOUT: OnceLock<Duration> = OnceLock::new();

/// Records `--shutdown-timeout` for [`cancel_on_signal`]'s deadline.
pub(crate) fn set_shutdown_timeout(timeout: Duration) {
    let _ = SHUTDOWN_TIMEOUT.set(timeout);
}

/// Cancels `token` on the first SIGINT (Ctrl-C) or SIGTERM, and ends the process
/// if it has not exited `--shutdown-timeout` + [`EXIT_GRACE`] later.
pub(crate) fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
            () = token.cancelled() => return,
        }
        arm_exit_deadline();
        info!("signal received; shutting down");
        token.cancel();
    });
}

/// Starts the thread that ends the process if shutdown overruns.
fn arm_exit_deadline() {
    let timeout = SHUTDOWN_TIMEOUT
        .get()
        .copied()
        .unwrap_or(Duration::from_secs(15));
    let spawned = std::thread::Builder::new()
        .name("herald-exit-deadline".to_owned())
        .spawn(move || {
            std::thread::sleep(timeout + EXIT_GRACE);
            // Through the log queue: a direct write could block on a stalled stderr.
            tracing::error!(
                "shutdown did not finish within --shutdown-timeout {}; exiting",
                humantime::format_duration(timeout)
            );
            std::thread::sleep(LAST_WORDS);
            std::process::exit(FORCED_EXIT);
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the shutdown deadline thread");
    }
}

//! Turns SIGINT and SIGTERM into a cancellation, so every service shuts down the same orderly way.

use tokio_util::sync::CancellationToken;
use tracing::info;

/// Cancels `token` on the first SIGINT (Ctrl-C) or SIGTERM.
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
        info!("signal received; shutting down");
        token.cancel();
    });
}

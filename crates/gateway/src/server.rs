//! Starting and stopping one gateway instance.
//!
//! [`Gateway`] wires the pieces — broker, hub, state, router, listener — and
//! owns every task it starts. Shutdown follows one order: stop accepting, tell
//! every connection to close with 1001 and wait for them, stop the hub, then
//! the broker. Every step shares one deadline, `shutdown_timeout` after the
//! signal: whatever has not finished by then is abandoned with a warning, so
//! no client — a half-sent request, a reader that never reads — can keep the
//! process alive. [`Gateway::serve`] returns by that deadline.

use std::sync::Arc;

use axum::Router;
use herald_broker::{Broker, Inbox};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::GatewayConfig;
use crate::hub::Hub;
use crate::listener::{ConnectionBudget, Listener};
use crate::metrics::Metrics;
use crate::recovery::Recoveries;
use crate::routes;
use crate::state::AppState;

/// One gateway instance: its hub, its broker and its tasks.
#[derive(Debug)]
pub struct Gateway {
    /// Shared with every handler.
    state: AppState,
    /// Owns the hub's fan-out task.
    background: TaskTracker,
    /// Accepts connections within the socket-level limits.
    listener: Arc<Listener>,
}

impl Gateway {
    /// A gateway over `broker`, whose messages arrive in `inbox`. Starts the fan-out task.
    ///
    /// The connection caps are lowered to what the open-file limit allows,
    /// with a warning for each one the configuration asked more of.
    pub fn new(mut config: GatewayConfig, broker: Arc<dyn Broker>, inbox: Inbox) -> Self {
        let (budget, warnings) = ConnectionBudget::for_this_process(
            config.listener.max_http_connections,
            config.max_connections,
        );
        for warning in warnings {
            warn!("{warning}");
        }
        config.max_connections = budget.streams;
        let listener = Arc::new(Listener::new(
            &config.listener,
            budget,
            config.trusted_proxies.clone(),
        ));
        let hub = Arc::new(Hub::new(broker));
        let shutdown = CancellationToken::new();
        let background = TaskTracker::new();
        background.spawn(hub.clone().run(inbox, shutdown.clone()));
        let recoveries = Arc::new(Recoveries::new(
            config.max_concurrent_recoveries,
            shutdown.clone(),
        ));
        let state = AppState {
            hub,
            connections: Arc::new(Semaphore::new(config.max_connections)),
            config: Arc::new(config),
            shutdown,
            tasks: TaskTracker::new(),
            metrics: Arc::new(Metrics::default()),
            recoveries,
        };
        Gateway {
            state,
            background,
            listener,
        }
    }

    /// The shared state, e.g. to mount more routes on the same instance.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The gateway's own routes.
    pub fn router(&self) -> Router {
        routes::router(self.state.clone())
    }

    /// A token that shuts the gateway down when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    /// TCP connections of every kind open now (WebSocket, SSE and plain HTTP).
    pub fn open_http_connections(&self) -> usize {
        self.listener.open_connections()
    }

    /// Serves `router` (the gateway's own, possibly merged with others) on `listener`
    /// until the shutdown token fires, then shuts down in order within the shutdown timeout.
    pub async fn serve(self, listener: TcpListener, router: Router) -> std::io::Result<()> {
        let shutdown = self.state.shutdown.clone();
        let addr = listener.local_addr()?;
        info!(
            %addr,
            instance = %self.state.config.instance_id,
            max_http_connections = self.listener.capacity(),
            max_connections = self.state.config.max_connections,
            "gateway listening"
        );
        let deadline = self
            .listener
            .clone()
            .serve(listener, router, shutdown.clone())
            .await;
        // Whatever ended the server, every connection is now told to leave.
        shutdown.cancel();
        self.state.tasks.close();
        if tokio::time::timeout_at(deadline, self.state.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                open = self.state.tasks.len(),
                "client connections still open at the shutdown timeout; abandoning them"
            );
        }
        self.background.close();
        let stopped = async {
            self.background.wait().await;
            self.state.hub.broker().shutdown().await;
        };
        if tokio::time::timeout_at(deadline, stopped).await.is_err() {
            warn!("the hub or the broker did not stop by the shutdown timeout; abandoning them");
        }
        info!("gateway stopped");
        Ok(())
    }
}

//! Starting and stopping one gateway instance.
//!
//! [`Gateway`] wires the pieces — broker, hub, state, router — and owns every
//! task it starts. Shutdown follows one order: stop accepting, tell every
//! connection to close with 1001 and wait for them, stop the hub, then the
//! broker. Nothing is left running when [`Gateway::serve`] returns.

use std::sync::Arc;

use axum::Router;
use herald_broker::{Broker, Inbox};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::GatewayConfig;
use crate::hub::Hub;
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
}

impl Gateway {
    /// A gateway over `broker`, whose messages arrive in `inbox`. Starts the fan-out task.
    pub fn new(config: GatewayConfig, broker: Arc<dyn Broker>, inbox: Inbox) -> Self {
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
        Gateway { state, background }
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

    /// Serves `router` (the gateway's own, possibly merged with others) on `listener`
    /// until the shutdown token fires, then shuts down in order.
    pub async fn serve(self, listener: TcpListener, router: Router) -> std::io::Result<()> {
        let shutdown = self.state.shutdown.clone();
        let addr = listener.local_addr()?;
        info!(%addr, instance = %self.state.config.instance_id, "gateway listening");
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;
        // Whatever ended the server, every connection is now told to leave.
        shutdown.cancel();
        self.state.tasks.close();
        self.state.tasks.wait().await;
        self.background.close();
        self.background.wait().await;
        self.state.hub.broker().shutdown().await;
        info!("gateway stopped");
        served
    }
}

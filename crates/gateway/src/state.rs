//! What every handler and connection task of one instance shares, passed as axum state.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::GatewayConfig;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::recovery::Recoveries;

/// Shared state of one gateway instance; cheap to clone (every field is a handle).
#[derive(Clone, Debug)]
pub struct AppState {
    /// The fan-out hub and, through it, the broker.
    pub hub: Arc<Hub>,
    /// Limits and timings.
    pub config: Arc<GatewayConfig>,
    /// One permit per open client connection; caps them at `max_connections`.
    pub connections: Arc<Semaphore>,
    /// Fires when the instance shuts down; every connection task watches it.
    pub shutdown: CancellationToken,
    /// Owns every connection task, so shutdown can wait until each has said goodbye.
    pub tasks: TaskTracker,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// History reads for recovery: bounded in number, shared between clients asking the same.
    pub recoveries: Arc<Recoveries>,
}

impl AppState {
    /// How many client connections are open now.
    pub fn open_connections(&self) -> usize {
        self.config
            .max_connections
            .saturating_sub(self.connections.available_permits())
    }
}

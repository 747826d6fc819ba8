//! The Herald gateway: holds client connections and fans bus messages out to them.
//!
//! # Layout
//!
//! - [`hub`]: the subscriber registry and the encode-once fan-out; tells the broker about first and last subscribers.
//! - [`client`]: a connected client as the hub sees it — a bounded queue of shared frames and a kick switch.
//! - [`transport`]: how clients connect; [`transport::websocket`] holds the connection loop and the tutorial endpoint.
//! - [`routes`]: the HTTP surface (`/ws/notifications`, `/healthz`, `/readyz`).
//! - [`server`]: [`Gateway`], which starts the pieces and shuts them down in order.
//! - [`state`], [`config`], [`error`]: what handlers share, the limits, and the one HTTP error shape.
//!
//! The bus itself lives in `herald-broker`; the wire vocabulary (close codes,
//! channel names) in `herald-protocol`.

pub mod client;
pub mod config;
pub mod error;
pub mod hub;
pub mod routes;
pub mod server;
pub mod state;
pub mod transport;

pub use config::GatewayConfig;
pub use server::Gateway;
pub use state::AppState;

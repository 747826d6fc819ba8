//! The Herald gateway: holds client connections and fans bus messages out to them.
//!
//! # Layout
//!
//! - [`hub`]: the subscriber registry and the encode-once fan-out; tells the broker about first and last subscribers.
//! - [`client`]: a connected client as the hub sees it — a bounded queue of shared deliveries and a kick switch.
//! - [`delivery`]: one bus message with its encodings (tutorial, Herald, SSE), each built once and shared.
//! - [`transport`]: how clients connect; [`transport::websocket`] holds the connection loop and the tutorial endpoint.
//! - [`edge`]: one origin for the browser — the built web app at `/` and a proxy forwarding `/api/content` to the content service.
//! - [`gap`]: when a live client's stored position becomes void, and the `gap` frame that says so.
//! - [`session`]: a Herald-protocol client's subscriptions and recovery, shared by WebSocket and SSE.
//! - [`recovery`]: history reads for recovery, bounded per instance and shared by clients asking the same.
//! - [`origin`]: the `Origin` check that keeps other sites' pages off the WebSocket and SSE routes.
//! - [`auth`], [`policy`]: who a client is (JWT), and which channels it may read or that keep history.
//! - [`jwks`]: the signing keys of a JWKS URL, cached and fetched again (rate limited) for an unknown `kid`.
//! - [`peer`]: the client's real address, believing `X-Forwarded-For` only from `--trusted-proxy` peers.
//! - [`publish`]: `POST /api/publish`, for services that publish over HTTP with an API key.
//! - [`metrics`]: `GET /metrics` in Prometheus' text format, from atomics the hot path already keeps.
//! - [`listener`]: accepting and serving HTTP connections within limits — timeouts, connection caps from the open-file limit, per-address caps, bounded shutdown.
//! - [`routes`]: the HTTP surface (`/ws/notifications`, `/healthz`, `/readyz`).
//! - [`server`]: [`Gateway`], which starts the pieces and shuts them down in order.
//! - [`state`], [`config`], [`error`]: what handlers share, the limits, and the one HTTP error shape.
//!
//! The bus itself lives in `herald-broker`; the wire vocabulary (close codes,
//! channel names) in `herald-protocol`.

pub mod auth;
pub mod client;
pub mod config;
pub mod delivery;
pub mod edge;
pub mod error;
pub mod gap;
pub mod hub;
pub mod jwks;
pub mod listener;
pub mod metrics;
pub mod origin;
pub mod peer;
pub mod policy;
pub mod publish;
pub mod recovery;
pub mod routes;
pub mod server;
pub mod session;
pub mod state;
pub mod transport;

pub use config::GatewayConfig;
pub use server::Gateway;
pub use state::AppState;

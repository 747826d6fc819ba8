//! Herald's wire vocabulary, shared by the gateway, the clients and the tools.
//!
//! Nothing here does I/O: these are the words both ends of a connection
//! must agree on, kept in one crate so they cannot drift apart.
//!
//! # Layout
//!
//! - [`close`]: the one table of WebSocket close codes and what a client must do after each.
//! - [`channel`]: the channel-name grammar, checked once at the edge.
//! - [`position`]: offsets and epochs in a channel's history, and the SSE id that carries them.
//! - [`frames`]: the Herald protocol's client and server frames.
//! - [`envelope`]: how a message published through Herald travels on the bus, next to raw payloads.

pub mod channel;
pub mod close;
pub mod envelope;
pub mod frames;
pub mod position;

pub use channel::{ChannelName, ChannelNameError};
pub use close::{CloseCode, ReconnectAdvice};
pub use frames::{ClientFrame, ErrorCode, GapReason, PROTOCOL_VERSION, ServerFrame};
pub use position::Position;

/// The channel the tutorial's publisher writes to and `/ws/notifications` reads from.
pub const TUTORIAL_CHANNEL: &str = "events";

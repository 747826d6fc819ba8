//! The ways a client can be connected to the hub.
//!
//! Each transport turns a client's queue of shared [`Frame`](crate::client::Frame)s
//! into bytes on its own kind of socket and maps everything that can go wrong
//! onto the close-code table of `herald-protocol`.
//!
//! - [`websocket`]: WebSocket, including the tutorial's `/ws/notifications`.

pub mod websocket;

//! The ways a client can be connected to the hub.
//!
//! Each transport turns a client's queue of shared [`Frame`](crate::client::Frame)s
//! into bytes on its own kind of socket and maps everything that can go wrong
//! onto the close-code table of `herald-protocol`.
//!
//! - [`websocket`]: WebSocket: the tutorial's `/ws/notifications` and the Herald protocol's `/ws`.
//! - [`sse`]: Server-Sent Events: `/sse`, resumable through `Last-Event-ID`.
//! - [`sse_event`]: the event-stream encoding, valid per the SSE spec whatever the data holds.

pub mod sse;
pub mod sse_event;
pub mod websocket;

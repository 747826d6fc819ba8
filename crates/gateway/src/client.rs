//! One connected client as the hub sees it: a bounded queue and a way to kick it.
//!
//! The hub never writes to a socket. It pushes shared, already-encoded frames
//! into each client's bounded queue with `try_send`, which never waits; the
//! client's own task drains the queue into its socket. When a queue is full
//! the hub kicks the client as a slow consumer instead of waiting for it, so
//! one stalled reader can never delay the others.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use futures_util::task::AtomicWaker;

use crate::delivery::Delivery;
use herald_protocol::CloseCode;

/// A unique id per connection within one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(u64);

impl ClientId {
    /// A fresh id, never handed out before in this process.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ClientId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// A frame ready for the wire, encoded once and shared by every client that receives it.
///
/// Cloning is a reference-count increment: both variants are `Bytes` underneath.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame (the payload is valid UTF-8).
    Text(Utf8Bytes),
    /// A binary frame, for payloads that are not UTF-8 and must still arrive intact.
    Binary(Bytes),
}

impl Frame {
    /// The frame for a raw published payload: text when it is UTF-8, binary otherwise.
    pub fn from_payload(payload: Bytes) -> Self {
        match Utf8Bytes::try_from(payload.clone()) {
            Ok(text) => Frame::Text(text),
            Err(_) => Frame::Binary(payload),
        }
    }
}

/// A client's outbound queue and kick switch in one small allocation.
///
/// Not a channel: the hub pushes under a short lock and the connection task
/// takes *everything* queued in one go (swapping two `VecDeque`s), which is
/// both the batching the writer wants and far less memory per idle client
/// than a channel, whose first block is allocated up front.
#[derive(Debug)]
pub struct Outbox {
    /// How many frames may wait; one more makes the client a slow consumer.
    capacity: usize,
    /// The queue and the kick, under one lock that is held only for a push or a swap.
    state: Mutex<OutboxState>,
    /// The connection task, woken when the queue turns non-empty or the client is kicked.
    waker: AtomicWaker,
}

#[derive(Debug, Default)]
struct OutboxState {
    /// Frames not yet taken by the connection task.
    frames: VecDeque<Arc<Delivery>>,
    /// Set once: why the connection must close.
    kicked: Option<CloseCode>,
    /// The connection task is gone; nothing more is accepted.
    closed: bool,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        // Only pushes and swaps happen under this lock; neither can leave the state half-done.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn offer(&self, frame: Arc<Delivery>) -> Offer {
        let mut state = self.lock();
        if state.closed || state.kicked.is_some() {
            return Offer::Gone;
        }
        if state.frames.len() >= self.capacity {
            state.kicked = Some(CloseCode::SlowConsumer);
            // The client will never get these; free them now.
            state.frames = VecDeque::new();
            drop(state);
            self.waker.wake();
            return Offer::Overflowed;
        }
        let was_empty = state.frames.is_empty();
        state.frames.push_back(frame);
        drop(state);
        if was_empty {
            self.waker.wake();
        }
        Offer::Queued
    }

    fn kick(&self, code: CloseCode) {
        let mut state = self.lock();
        if state.kicked.is_none() {
            state.kicked = Some(code);
            state.frames = VecDeque::new();
            drop(state);
            self.waker.wake();
        }
    }

    /// Moves every queued frame into `into` (which must be empty), or reports the kick.
    fn poll_take(
        &self,
        cx: &mut Context<'_>,
        into: &mut VecDeque<Arc<Delivery>>,
    ) -> Poll<Result<(), CloseCode>> {
        // Register first, then look: a push between the two still wakes us.
        self.waker.register(cx.waker());
        let mut state = self.lock();
        if let Some(code) = state.kicked {
            return Poll::Ready(Err(code));
        }
        if state.frames.is_empty() {
            return Poll::Pending;
        }
        std::mem::swap(&mut state.frames, into);
        Poll::Ready(Ok(()))
    }

    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.frames = VecDeque::new();
    }
}

/// What the hub keeps per subscribed client: where to push frames and how to kick it.
#[derive(Debug, Clone)]
pub struct ClientSender {
    /// The connection's id, to unsubscribe it later.
    pub id: ClientId,
    /// Shared with the connection task.
    outbox: Arc<Outbox>,
}

/// Result of offering a frame to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued.
    Queued,
    /// The queue was full: the client has been kicked as a slow consumer.
    Overflowed,
    /// The client is already gone or leaving.
    Gone,
}

impl ClientSender {
    /// Queues `frame` without waiting; a full queue kicks the client.
    pub fn offer(&self, frame: Arc<Delivery>) -> Offer {
        self.outbox.offer(frame)
    }

    /// Asks the connection to close with `code` (the first code asked for wins).
    pub fn kick(&self, code: CloseCode) {
        self.outbox.kick(code);
    }
}

/// The connection task's half of a client; closes the outbox when dropped.
#[derive(Debug)]
pub struct ClientReceiver {
    /// The connection's id.
    pub id: ClientId,
    /// Shared with the hub's [`ClientSender`]s.
    outbox: Arc<Outbox>,
}

impl ClientReceiver {
    /// Resolves with every frame queued so far (moved into `into`, which must be
    /// empty), or with the close code once the client has been kicked.
    pub fn take<'a>(
        &'a self,
        into: &'a mut VecDeque<Arc<Delivery>>,
    ) -> impl Future<Output = Result<(), CloseCode>> + 'a {
        std::future::poll_fn(move |cx| self.outbox.poll_take(cx, into))
    }

    /// The close code the client was kicked with, if any.
    pub fn kicked(&self) -> Option<CloseCode> {
        self.outbox.lock().kicked
    }
}

impl Drop for ClientReceiver {
    fn drop(&mut self) {
        self.outbox.close();
    }
}

/// A new client whose queue holds at most `capacity` frames.
pub fn client(capacity: usize) -> (ClientSender, ClientReceiver) {
    let id = ClientId::next();
    let outbox = Arc::new(Outbox {
        capacity: capacity.max(1),
        state: Mutex::new(OutboxState::default()),
        waker: AtomicWaker::new(),
    });
    (
        ClientSender {
            id,
            outbox: outbox.clone(),
        },
        ClientReceiver { id, outbox },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &'static str) -> Arc<Delivery> {
        let channel = herald_protocol::ChannelName::new("events").unwrap();
        Arc::new(Delivery::from(herald_broker::BusMessage::raw(
            channel,
            Bytes::from_static(text.as_bytes()),
        )))
    }

    fn texts(batch: &VecDeque<Arc<Delivery>>) -> Vec<Frame> {
        batch.iter().map(|d| d.tutorial_frame()).collect()
    }

    #[tokio::test]
    async fn the_writer_takes_everything_queued_in_one_go() {
        let (sender, receiver) = client(8);
        for text in ["a", "b", "c"] {
            assert_eq!(sender.offer(frame(text)), Offer::Queued);
        }
        let mut batch = VecDeque::new();
        receiver.take(&mut batch).await.unwrap();
        assert_eq!(
            texts(&batch),
            [frame("a"), frame("b"), frame("c")]
                .iter()
                .map(|d| d.tutorial_frame())
                .collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn a_full_queue_kicks_the_client_as_a_slow_consumer() {
        let (sender, receiver) = client(2);
        assert_eq!(sender.offer(frame("1")), Offer::Queued);
        assert_eq!(sender.offer(frame("2")), Offer::Queued);
        assert_eq!(receiver.kicked(), None);
        assert_eq!(sender.offer(frame("3")), Offer::Overflowed);
        assert_eq!(receiver.kicked(), Some(CloseCode::SlowConsumer));
        // The kick wins over the frames still queued, and the first reason sticks.
        sender.kick(CloseCode::GoingAway);
        assert_eq!(
            receiver.take(&mut VecDeque::new()).await,
            Err(CloseCode::SlowConsumer)
        );
        assert_eq!(sender.offer(frame("4")), Offer::Gone);
    }

    #[test]
    fn a_departed_client_accepts_nothing() {
        let (sender, receiver) = client(2);
        drop(receiver);
        assert_eq!(sender.offer(frame("late")), Offer::Gone);
    }

    #[test]
    fn non_utf8_payloads_travel_as_binary() {
        assert!(matches!(
            Frame::from_payload(Bytes::from_static(b"ok")),
            Frame::Text(_)
        ));
        assert!(matches!(
            Frame::from_payload(Bytes::from_static(&[0xff, 0xfe])),
            Frame::Binary(_)
        ));
    }
}

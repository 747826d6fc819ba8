//! A Herald-protocol client's subscriptions, independent of its transport.
//!
//! WebSocket and SSE clients subscribe, recover and filter the same way, so
//! the logic lives here once. The order of a subscribe is what makes recovery
//! exact: join the hub first (live messages start queuing), wait until the bus
//! confirms, read history second, send what was missed, and from then on
//! deliver only messages positioned after the last one sent. Anything that
//! arrived live while history was read is then either already sent from
//! history or new — no gap, no duplicate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use herald_protocol::{ChannelName, ErrorCode, Position, ServerFrame};
use tokio::time::{Instant, timeout};

use crate::auth::Identity;
use crate::client::ClientSender;
use crate::delivery::Delivery;
use crate::hub::Hub;
use crate::state::AppState;

/// A refused request, answered with an `error` frame (the connection stays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The stable code.
    pub code: ErrorCode,
    /// For a person.
    pub message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// The answer to one subscribe.
#[derive(Debug)]
pub struct Subscribed {
    /// The validated channel.
    pub channel: ChannelName,
    /// The channel's position now; `None` without history.
    pub position: Option<Position>,
    /// Present when recovery was asked for: whether it is complete.
    pub recovered: Option<bool>,
    /// The missed messages to send right after the `subscribed` frame, in order.
    pub missed: Vec<Arc<Delivery>>,
}

/// One client's channels and the last position it was sent on each.
pub struct Subscriptions {
    /// Where subscriptions are registered.
    hub: Arc<Hub>,
    /// This client, as the hub holds it.
    sender: ClientSender,
    /// Channel → last position sent (`None` before the first positioned message).
    channels: HashMap<ChannelName, Option<Position>>,
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriptions")
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

impl Subscriptions {
    /// No subscriptions yet, for the client `sender`.
    pub fn new(hub: Arc<Hub>, sender: ClientSender) -> Self {
        Subscriptions {
            hub,
            sender,
            channels: HashMap::new(),
        }
    }

    /// Subscribes to `name`, recovering from `since` when given.
    pub async fn subscribe(
        &mut self,
        state: &AppState,
        identity: &Identity,
        name: &str,
        since: Option<&Position>,
    ) -> Result<Subscribed, Refusal> {
        let channel = ChannelName::new(name)
            .map_err(|e| Refusal::new(ErrorCode::InvalidChannel, e.to_string()))?;
        state
            .config
            .channels
            .authorize(identity, &channel)
            .map_err(|why| Refusal::new(ErrorCode::Forbidden, why))?;
        let fresh = !self.channels.contains_key(&channel);
        if fresh && self.channels.len() >= state.config.max_subscriptions {
            return Err(Refusal::new(
                ErrorCode::TooManySubscriptions,
                format!(
                    "at most {} channels per client",
                    state.config.max_subscriptions
                ),
            ));
        }
        if fresh {
            self.hub.subscribe(&channel, &self.sender);
            self.channels.insert(channel.clone(), None);
        }
        match self.recover(state, &channel, since).await {
            Ok(subscribed) => Ok(subscribed),
            Err(refusal) => {
                if fresh {
                    self.drop_channel(&channel);
                }
                Err(refusal)
            }
        }
    }

    async fn recover(
        &mut self,
        state: &AppState,
        channel: &ChannelName,
        since: Option<&Position>,
    ) -> Result<Subscribed, Refusal> {
        let broker = self.hub.broker().clone();
        let wait = state.config.subscribe_timeout;
        match timeout(wait, broker.until_subscribed(channel)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(Refusal::new(
                    ErrorCode::Internal,
                    format!("the bus is unavailable: {e}"),
                ));
            }
            Err(_) => {
                return Err(Refusal::new(
                    ErrorCode::Internal,
                    format!("the bus did not confirm the subscription within {wait:?}"),
                ));
            }
        }
        // Every message published from here on reaches this client live, so a history
        // read that starts after this point misses nothing: it may be shared.
        let confirmed = state.recoveries.ticket();
        if state.config.channels.history(channel).is_none() {
            return Ok(Subscribed {
                channel: channel.clone(),
                position: None,
                recovered: since.map(|_| false),
                missed: Vec::new(),
            });
        }
        let recovery = state
            .recoveries
            .recover(&broker, channel, since, confirmed, wait)
            .await
            .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
        // From here on only messages after the channel's current position are new.
        self.channels
            .insert(channel.clone(), Some(recovery.position.clone()));
        Ok(Subscribed {
            channel: channel.clone(),
            position: Some(recovery.position.clone()),
            recovered: since.map(|_| recovery.complete),
            // Copies of pointers: the deliveries, and their encodings, are shared.
            missed: recovery.messages.clone(),
        })
    }

    /// Unsubscribes from `name`.
    pub fn unsubscribe(&mut self, name: &str) -> Result<ChannelName, Refusal> {
        let channel = ChannelName::new(name)
            .map_err(|e| Refusal::new(ErrorCode::InvalidChannel, e.to_string()))?;
        if !self.channels.contains_key(&channel) {
            return Err(Refusal::new(
                ErrorCode::NotSubscribed,
                format!("not subscribed to {channel}"),
            ));
        }
        self.drop_channel(&channel);
        Ok(channel)
    }

    fn drop_channel(&mut self, channel: &ChannelName) {
        self.channels.remove(channel);
        self.hub.unsubscribe(channel, self.sender.id);
    }

    /// Whether `delivery` goes out: the client holds the channel and the message
    /// comes after the last one sent. Records it as sent. A gap never goes out as
    /// a message: it is a notice ([`Subscriptions::notice`]).
    pub fn admit(&mut self, delivery: &Delivery) -> bool {
        if delivery.gap().is_some() {
            return false;
        }
        let Some(last) = self.channels.get_mut(delivery.channel()) else {
            return false;
        };
        if let Some(position) = delivery.position() {
            if let Some(last) = last
                && !position.is_after(last)
            {
                return false;
            }
            *last = Some(position.clone());
        }
        true
    }

    /// The `gap` frame to send before `delivery`, when the client's position on
    /// its channel has become void (see [`crate::gap`]); adopts the new position.
    pub fn notice(&mut self, delivery: &Delivery) -> Option<ServerFrame> {
        let last = self.channels.get_mut(delivery.channel())?;
        crate::gap::notice(last, delivery)
    }

    /// The last position sent on `channel`.
    pub fn position(&self, channel: &ChannelName) -> Option<&Position> {
        self.channels.get(channel).and_then(Option::as_ref)
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        // However the connection ended, the hub forgets it.
        for channel in self.channels.keys() {
            self.hub.unsubscribe(channel, self.sender.id);
        }
    }
}

/// A token bucket: `rate` frames per second on average, bursts of `2 × rate`.
#[derive(Debug)]
pub struct RateLimit {
    /// Tokens per second.
    rate: f64,
    /// Most tokens held.
    burst: f64,
    /// Tokens now.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

impl RateLimit {
    /// A full bucket.
    pub fn per_second(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        RateLimit {
            rate,
            burst: rate * 2.0,
            tokens: rate * 2.0,
            updated: Instant::now(),
        }
    }

    /// Takes one token; `false` when the client is over its rate.
    pub fn allow(&mut self) -> bool {
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes one token, waiting for it when the bucket is empty.
    ///
    /// For work a single frame asks for (the channels of one `subscribe`): a
    /// legitimate client resubscribing many channels at once is slowed to the
    /// rate, never refused, and the wait ends as soon as a token is due.
    pub async fn take(&mut self) {
        self.refill();
        if self.tokens < 1.0 {
            let due = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
            tokio::time::sleep(due).await;
            self.refill();
        }
        // Sleep may wake a hair early; the token is due, so never go below zero by more.
        self.tokens = (self.tokens - 1.0).max(0.0);
    }

    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.updated).as_secs_f64() * self.rate)
            .min(self.burst);
        self.updated = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_allows_bursts_then_refills() {
        let mut limit = RateLimit::per_second(5);
        for _ in 0..10 {
            assert!(limit.allow());
        }
        assert!(!limit.allow());
        tokio::time::advance(std::time::Duration::from_millis(400)).await;
        assert!(limit.allow() && limit.allow());
        assert!(!limit.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn taking_past_the_burst_waits_for_the_rate() {
        let mut limit = RateLimit::per_second(5);
        let start = Instant::now();
        for _ in 0..10 {
            limit.take().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        for _ in 0..5 {
            limit.take().await;
        }
        // Five more tokens at five a second.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(990) && waited <= Duration::from_millis(1010),
            "{waited:?}"
        );
        assert!(!limit.allow(), "the paced tokens were spent");
    }
}

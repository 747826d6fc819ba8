//! What the hub wants from the bus, and what the bus has confirmed.
//!
//! The hub declares *wanted* channels; a broker's connection task confirms
//! them on the bus and records them as *active*. Keeping the two sets apart
//! makes the broker level-triggered: after a reconnect it simply subscribes
//! to everything wanted, and a subscribe racing an unsubscribe of the same
//! channel settles on whatever the hub wants last.

use std::collections::HashSet;
use std::sync::Mutex;

use herald_protocol::ChannelName;
use tokio::sync::{Notify, watch};

/// The wanted and active channel sets of one broker.
#[derive(Debug)]
pub struct Interest {
    /// Channels the hub has local subscribers for.
    wanted: Mutex<HashSet<ChannelName>>,
    /// Channels the bus has confirmed on the current connection; emptied when it drops.
    active: watch::Sender<HashSet<ChannelName>>,
    /// Wakes the connection task when `wanted` changed.
    changed: Notify,
}

/// The difference the connection task has to apply to the bus.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Wanted but not yet active.
    pub subscribe: Vec<ChannelName>,
    /// Active but no longer wanted.
    pub unsubscribe: Vec<ChannelName>,
}

impl Delta {
    /// Whether the bus already matches what is wanted.
    pub fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty()
    }
}

impl Default for Interest {
    fn default() -> Self {
        Interest {
            wanted: Mutex::new(HashSet::new()),
            active: watch::Sender::new(HashSet::new()),
            changed: Notify::new(),
        }
    }
}

impl Interest {
    /// Adds `channel` to the wanted set and wakes the connection task.
    pub fn want(&self, channel: &ChannelName) {
        if self.lock_wanted().insert(channel.clone()) {
            self.changed.notify_one();
        }
    }

    /// Removes `channel` from the wanted set and wakes the connection task.
    pub fn unwant(&self, channel: &ChannelName) {
        if self.lock_wanted().remove(channel) {
            self.changed.notify_one();
        }
    }

    /// Whether `channel` is wanted now.
    pub fn is_wanted(&self, channel: &ChannelName) -> bool {
        self.lock_wanted().contains(channel)
    }

    /// Resolves when `wanted` may have changed; a change made before the call is not lost.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// What the bus must do to match the wanted set.
    pub fn delta(&self) -> Delta {
        let wanted = self.lock_wanted();
        let active = self.active.borrow();
        Delta {
            subscribe: wanted.difference(&active).cloned().collect(),
            unsubscribe: active.difference(&wanted).cloned().collect(),
        }
    }

    /// How many channels are wanted.
    pub fn wanted_count(&self) -> usize {
        self.lock_wanted().len()
    }

    /// Records that the bus confirmed these subscriptions and wakes whoever waits for them.
    pub fn confirm_subscribed(&self, channels: &[ChannelName]) {
        self.active
            .send_modify(|active| active.extend(channels.iter().cloned()));
    }

    /// Records that the bus dropped these subscriptions.
    pub fn confirm_unsubscribed(&self, channels: &[ChannelName]) {
        self.active.send_modify(|active| {
            for c in channels {
                active.remove(c);
            }
        });
    }

    /// Forgets every confirmation: the connection that held them is gone.
    pub fn connection_lost(&self) {
        self.active.send_modify(HashSet::clear);
    }

    /// Whether the bus has confirmed `channel`.
    pub fn is_active(&self, channel: &ChannelName) -> bool {
        self.active.borrow().contains(channel)
    }

    /// Resolves once the bus has confirmed `channel`.
    pub async fn until_active(&self, channel: &ChannelName) {
        let mut rx = self.active.subscribe();
        // The sender lives as long as `self`, which outlives this borrow, so
        // `wait_for` can only return once the predicate holds.
        let _ = rx.wait_for(|active| active.contains(channel)).await;
    }

    fn lock_wanted(&self) -> std::sync::MutexGuard<'_, HashSet<ChannelName>> {
        // A panic while holding this lock leaves a plain set behind, still consistent.
        self.wanted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    #[test]
    fn delta_is_what_is_wanted_minus_what_is_active() {
        let interest = Interest::default();
        interest.want(&ch("a"));
        interest.want(&ch("b"));
        let mut delta = interest.delta();
        delta.subscribe.sort();
        assert_eq!(
            delta,
            Delta {
                subscribe: vec![ch("a"), ch("b")],
                unsubscribe: vec![]
            }
        );

        interest.confirm_subscribed(&[ch("a"), ch("b")]);
        interest.unwant(&ch("a"));
        assert_eq!(
            interest.delta(),
            Delta {
                subscribe: vec![],
                unsubscribe: vec![ch("a")]
            }
        );

        interest.confirm_unsubscribed(&[ch("a")]);
        assert!(interest.delta().is_empty());
    }

    #[test]
    fn a_lost_connection_makes_everything_wanted_again() {
        let interest = Interest::default();
        interest.want(&ch("a"));
        interest.confirm_subscribed(&[ch("a")]);
        assert!(interest.delta().is_empty());
        interest.connection_lost();
        assert_eq!(interest.delta().subscribe, vec![ch("a")]);
    }

    #[tokio::test]
    async fn until_active_waits_for_the_confirmation() {
        let interest = std::sync::Arc::new(Interest::default());
        let waiter = {
            let interest = interest.clone();
            tokio::spawn(async move { interest.until_active(&ch("a")).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        interest.confirm_subscribed(&[ch("a")]);
        waiter.await.unwrap();
    }
}

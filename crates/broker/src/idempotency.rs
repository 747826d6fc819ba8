//! The in-process broker's memory of idempotency keys: bounded, oldest first out.
//!
//! A publish with an idempotency key is answered with the first publish's
//! result when the same key comes again within its window. On Redis every key
//! is a `SET … PX window` and Redis bounds and expires them. In process the
//! records live in this store, and anyone allowed to publish could otherwise
//! fill it with fresh keys: so it holds at most [`IDEMPOTENCY_CAP`] records and
//! forgets the oldest first, and every operation does O(1) amortized work —
//! records leave from the front of an insertion-ordered queue, never by a
//! sweep over all of them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use herald_protocol::ChannelName;
use tokio::time::Instant;

use crate::Published;

/// The most idempotency keys the in-process broker remembers at once.
///
/// Past it the oldest key is forgotten before its window ends, so a retry of
/// that publish would publish again. 100,000 keys take about 40 MiB at worst
/// (128-byte keys), 20 MiB for typical ones, and cover 300 keyed publishes a
/// second over the default 5-minute window.
pub const IDEMPOTENCY_CAP: usize = 100_000;

/// A key is per channel: the same key on two channels names two publishes.
/// Shared by the map and the queue, so each key is stored once.
type Key = Arc<(ChannelName, String)>;

/// The first result of a key and when the key is forgotten.
#[derive(Debug)]
struct Record {
    first: Published,
    expires: Instant,
    /// Which entry of `order` this record belongs to; an older entry of the same
    /// key (from before it expired and came again) must not remove it.
    seq: u64,
}

/// Idempotency records in insertion order, at most `cap` of them.
#[derive(Debug)]
pub(crate) struct IdempotencyStore {
    cap: usize,
    records: HashMap<Key, Record>,
    /// Every insertion, oldest first; an entry whose record was replaced is stale
    /// and skipped when it reaches the front. Never longer than `cap`, so
    /// neither is `records`.
    order: VecDeque<(u64, Key)>,
    next_seq: u64,
}

impl Default for IdempotencyStore {
    fn default() -> Self {
        IdempotencyStore::with_cap(IDEMPOTENCY_CAP)
    }
}

impl IdempotencyStore {
    /// A store remembering at most `cap` keys (at least one).
    pub(crate) fn with_cap(cap: usize) -> Self {
        IdempotencyStore {
            cap: cap.max(1),
            records: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
        }
    }

    /// The first result published under `key` on `channel`, if the key is still in its window.
    pub(crate) fn get(
        &mut self,
        channel: &ChannelName,
        key: &str,
        now: Instant,
    ) -> Option<Published> {
        self.expire(now);
        self.records
            .get(&(channel.clone(), key.to_owned()))
            .filter(|record| record.expires > now)
            .map(|record| record.first.clone())
    }

    /// Remembers `first` as the result of `key` on `channel` until `expires`,
    /// forgetting the oldest key when the store is full.
    pub(crate) fn insert(
        &mut self,
        channel: &ChannelName,
        key: &str,
        first: Published,
        expires: Instant,
        now: Instant,
    ) {
        self.expire(now);
        while self.order.len() >= self.cap {
            self.pop_front();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = Arc::new((channel.clone(), key.to_owned()));
        self.records.insert(
            Arc::clone(&id),
            Record {
                first,
                expires,
                seq,
            },
        );
        self.order.push_back((seq, id));
    }

    /// How many keys are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.records.len()
    }

    /// Forgets keys from the front while they are stale or past their window.
    ///
    /// With one window for every key (the gateway's `--idempotency-window`) the
    /// front is always the first to expire; a key with a shorter window behind a
    /// longer one waits for its turn, but `get` never answers with it.
    fn expire(&mut self, now: Instant) {
        while let Some((seq, id)) = self.order.front() {
            match self.records.get(id) {
                Some(record) if record.seq == *seq && record.expires > now => break,
                _ => self.pop_front(),
            }
        }
    }

    /// Drops the oldest entry and, unless it is stale, its record.
    fn pop_front(&mut self) {
        if let Some((seq, id)) = self.order.pop_front()
            && self
                .records
                .get(&id)
                .is_some_and(|record| record.seq == seq)
        {
            self.records.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use herald_protocol::Position;

    use super::*;

    fn ch(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    fn result(offset: u64) -> Published {
        Published {
            position: Some(Position::new(offset, "e")),
            time_ms: offset,
            duplicate: false,
        }
    }

    const WINDOW: Duration = Duration::from_secs(60);

    #[test]
    fn a_key_inside_its_window_is_a_duplicate_and_an_expired_one_is_not() {
        let mut store = IdempotencyStore::with_cap(10);
        let news = ch("news");
        let t0 = Instant::now();
        store.insert(&news, "k", result(1), t0 + WINDOW, t0);
        assert_eq!(store.get(&news, "k", t0 + WINDOW / 2), Some(result(1)));
        // Per channel: the same key elsewhere is another publish.
        assert_eq!(store.get(&ch("other"), "k", t0), None);
        assert_eq!(store.get(&news, "k", t0 + WINDOW), None);
        assert_eq!(store.len(), 0, "an expired key is forgotten, not kept");
    }

    #[test]
    fn the_cap_is_respected_and_the_oldest_key_goes_first() {
        let mut store = IdempotencyStore::with_cap(3);
        let news = ch("news");
        let t0 = Instant::now();
        for (n, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
            store.insert(&news, key, result(n as u64), t0 + WINDOW, t0);
            assert!(store.len() <= 3);
        }
        assert_eq!(store.len(), 3);
        assert_eq!(store.get(&news, "a", t0), None, "the oldest was evicted");
        for (n, key) in ["b", "c", "d"].into_iter().enumerate() {
            assert_eq!(store.get(&news, key, t0), Some(result(n as u64 + 1)));
        }
    }

    #[test]
    fn a_key_that_comes_back_after_its_window_is_remembered_anew() {
        let mut store = IdempotencyStore::with_cap(3);
        let news = ch("news");
        let t0 = Instant::now();
        // "long" outlives "k"'s first window and keeps it behind in the queue.
        store.insert(&news, "long", result(0), t0 + 10 * WINDOW, t0);
        store.insert(&news, "k", result(1), t0 + WINDOW, t0);
        let t1 = t0 + 2 * WINDOW;
        assert_eq!(store.get(&news, "k", t1), None);
        store.insert(&news, "k", result(2), t1 + WINDOW, t1);
        // Evicting the stale first entry of "k" must not forget its second one.
        store.insert(&news, "x", result(3), t1 + WINDOW, t1);
        store.insert(&news, "y", result(4), t1 + WINDOW, t1);
        assert_eq!(store.get(&news, "k", t1), Some(result(2)));
        assert!(store.order.len() <= 3 && store.len() <= 3);
    }

    #[test]
    fn many_keys_stay_within_the_cap() {
        let mut store = IdempotencyStore::with_cap(1000);
        let news = ch("news");
        let t0 = Instant::now();
        for n in 0..10_000u64 {
            let now = t0 + Duration::from_millis(n);
            store.insert(&news, &n.to_string(), result(n), now + WINDOW, now);
            assert!(store.order.len() <= 1000);
        }
        assert_eq!(store.get(&news, "9999", t0 + WINDOW), Some(result(9999)));
        assert_eq!(store.get(&news, "8999", t0 + WINDOW), None);
    }
}

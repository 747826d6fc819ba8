//! What one client keeps about the messages it received: which sequence
//! numbers (to find loss, duplicates and reordering) and how late each was.
//!
//! Each client task owns its own [`ClientStats`], so the receive path takes no
//! lock and sends nothing to another task; the bench merges them once at the
//! end. The memory is small and fixed up front: one bit per published message
//! and one compact latency histogram per client.

use hdrhistogram::Histogram;

use crate::payload;

/// Latencies are recorded in microseconds up to this value; later ones are clamped to it
/// (the exact maximum is kept apart, see [`ClientStats::max_latency_us`]).
pub(crate) const MAX_TRACKED_LATENCY_US: u64 = 60_000_000;
/// Significant decimal digits of the latency histograms: 2 keeps each client's
/// histogram near 10 KiB, so 10,000 clients fit, at a 1% resolution.
pub(crate) const LATENCY_SIGFIG: u8 = 2;

/// What [`SeqTracker::record`] made of one sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The first delivery of this number.
    New,
    /// This number had already been delivered.
    Duplicate,
    /// The number is not one the bench published.
    OutOfRange,
}

/// Which sequence numbers `0..expected` a client received, as a bitset.
#[derive(Debug, Clone)]
pub(crate) struct SeqTracker {
    /// Bit `seq` is set once `seq` has been delivered.
    bits: Vec<u64>,
    /// How many messages are published: valid numbers are `0..expected`.
    expected: u64,
    /// Distinct numbers delivered.
    unique: u64,
    /// Deliveries of a number that had already been delivered.
    duplicates: u64,
    /// First deliveries of a number lower than one delivered before it.
    out_of_order: u64,
    /// The highest number delivered so far.
    highest: Option<u64>,
}

impl SeqTracker {
    /// A tracker for messages numbered `0..expected`.
    pub(crate) fn new(expected: u64) -> Self {
        let words = usize::try_from(expected.div_ceil(64)).unwrap_or(usize::MAX);
        SeqTracker {
            bits: vec![0; words],
            expected,
            unique: 0,
            duplicates: 0,
            out_of_order: 0,
            highest: None,
        }
    }

    /// Records one delivery of `seq`.
    #[inline]
    pub(crate) fn record(&mut self, seq: u64) -> Seen {
        if seq >= self.expected {
            return Seen::OutOfRange;
        }
        // `seq < expected`, and `bits` has `expected / 64` words, so the index fits.
        let word = &mut self.bits[(seq / 64) as usize];
        let mask = 1u64 << (seq % 64);
        if *word & mask != 0 {
            self.duplicates += 1;
            return Seen::Duplicate;
        }
        *word |= mask;
        self.unique += 1;
        match self.highest {
            Some(high) if seq < high => self.out_of_order += 1,
            _ => self.highest = Some(seq),
        }
        Seen::New
    }

    /// Distinct numbers delivered.
    pub(crate) fn unique(&self) -> u64 {
        self.unique
    }

    /// Numbers never delivered.
    pub(crate) fn lost(&self) -> u64 {
        self.expected - self.unique
    }

    /// Deliveries of an already delivered number.
    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// First deliveries that came after a higher number.
    pub(crate) fn out_of_order(&self) -> u64 {
        self.out_of_order
    }

    /// Whether every number has been delivered.
    pub(crate) fn is_complete(&self) -> bool {
        self.unique == self.expected
    }
}

/// Everything one client measures on its receive path.
#[derive(Debug, Clone)]
pub(crate) struct ClientStats {
    /// Which messages arrived.
    pub(crate) seqs: SeqTracker,
    /// Latency of each first delivery, in microseconds.
    pub(crate) latency_us: Histogram<u32>,
    /// The exact largest latency, in microseconds (the histogram clamps).
    pub(crate) max_latency_us: u64,
    /// When the last first delivery arrived, in microseconds since the epoch (0: none yet).
    pub(crate) last_delivery_us: u64,
    /// Frames that were not a bench payload (binary frames, foreign text).
    pub(crate) invalid_frames: u64,
}

impl ClientStats {
    /// Empty statistics for `expected` messages, cloning `histogram` (an empty one) for the latencies.
    pub(crate) fn new(expected: u64, histogram: &Histogram<u32>) -> Self {
        ClientStats {
            seqs: SeqTracker::new(expected),
            latency_us: histogram.clone(),
            max_latency_us: 0,
            last_delivery_us: 0,
            invalid_frames: 0,
        }
    }

    /// An empty latency histogram with the bench's bounds, to clone for every client.
    pub(crate) fn empty_histogram() -> Result<Histogram<u32>, hdrhistogram::CreationError> {
        Histogram::new_with_bounds(1, MAX_TRACKED_LATENCY_US, LATENCY_SIGFIG)
    }

    /// Accounts one text frame received at `now_us`; returns true if it made the client complete.
    #[inline]
    pub(crate) fn on_frame(&mut self, frame: &[u8], now_us: u64) -> bool {
        let Some(stamp) = payload::decode(frame) else {
            self.invalid_frames += 1;
            return false;
        };
        match self.seqs.record(stamp.seq) {
            Seen::New => {
                let latency = now_us.saturating_sub(stamp.ts_us);
                self.latency_us.saturating_record(latency);
                self.max_latency_us = self.max_latency_us.max(latency);
                self.last_delivery_us = self.last_delivery_us.max(now_us);
                self.seqs.is_complete()
            }
            Seen::Duplicate => false,
            Seen::OutOfRange => {
                self.invalid_frames += 1;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_loss_duplicates_and_reordering() {
        let mut t = SeqTracker::new(130);
        let seen: Vec<Seen> = [0, 1, 2, 64, 3, 3, 129, 64, 200]
            .map(|seq| t.record(seq))
            .to_vec();
        assert_eq!(seen.iter().filter(|s| **s == Seen::OutOfRange).count(), 1);
        assert_eq!(t.unique(), 6);
        assert_eq!(t.duplicates(), 2);
        // 3 came after 64.
        assert_eq!(t.out_of_order(), 1);
        assert_eq!(t.lost(), 124);
        assert!(!t.is_complete());
    }

    #[test]
    fn complete_after_every_number_once() {
        let mut t = SeqTracker::new(200);
        for seq in (0..200).rev() {
            assert_eq!(t.record(seq), Seen::New);
        }
        assert!(t.is_complete());
        assert_eq!(t.lost(), 0);
        assert_eq!(t.out_of_order(), 199);
        assert_eq!(t.record(199), Seen::Duplicate);
        assert_eq!(t.record(200), Seen::OutOfRange);
    }

    #[test]
    fn zero_messages_is_complete_at_once() {
        let t = SeqTracker::new(0);
        assert!(t.is_complete());
        assert_eq!(t.lost(), 0);
    }

    #[test]
    fn client_stats_record_latency_and_completion() {
        let hist = ClientStats::empty_histogram().expect("bounds are valid");
        let mut stats = ClientStats::new(2, &hist);
        let mut buf = Vec::new();
        payload::encode_into(&mut buf, 0, 1_000, 64);
        assert!(!stats.on_frame(&buf, 3_000));
        assert!(
            !stats.on_frame(&buf, 9_000),
            "a duplicate completes nothing"
        );
        assert!(!stats.on_frame(b"not ours", 9_000));
        payload::encode_into(&mut buf, 1, 1_000, 64);
        assert!(stats.on_frame(&buf, 5_000));
        assert_eq!(stats.latency_us.len(), 2);
        assert_eq!(stats.max_latency_us, 4_000);
        assert_eq!(stats.last_delivery_us, 5_000);
        assert_eq!(stats.invalid_frames, 1);
        assert_eq!(stats.seqs.duplicates(), 1);
    }

    #[test]
    fn huge_latency_is_clamped_in_the_histogram_but_kept_as_max() {
        let hist = ClientStats::empty_histogram().expect("bounds are valid");
        let mut stats = ClientStats::new(1, &hist);
        let mut buf = Vec::new();
        payload::encode_into(&mut buf, 0, 0, 10);
        stats.on_frame(&buf, MAX_TRACKED_LATENCY_US * 10);
        assert_eq!(stats.max_latency_us, MAX_TRACKED_LATENCY_US * 10);
        assert!(stats.latency_us.max() <= MAX_TRACKED_LATENCY_US * 2);
    }
}

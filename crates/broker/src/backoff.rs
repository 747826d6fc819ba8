//! Capped exponential backoff with full jitter.
//!
//! Every retry loop in Herald waits with this, so that a Redis restart does not
//! make a hundred gateways reconnect in the same millisecond ("full jitter":
//! a uniformly random wait between zero and the current cap).

use std::time::Duration;

use rand::Rng;

/// The waits of one retry loop; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The cap of the first wait.
    initial: Duration,
    /// No wait is ever longer than this.
    max: Duration,
    /// How many failures in a row so far.
    attempt: u32,
}

impl Backoff {
    /// A backoff whose caps start at `initial` and double up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The cap for the next wait, before jitter: `initial * 2^attempt`, at most `max`.
    pub fn cap(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next wait: uniformly random in `[0, cap]`, then the cap doubles.
    pub fn next_wait(&mut self) -> Duration {
        let cap = self.cap();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    /// Forgets past failures.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_until_the_cap_and_never_exceed_it() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut caps = Vec::new();
        for _ in 0..8 {
            caps.push(b.cap());
            assert!(b.next_wait() <= Duration::from_secs(2));
        }
        assert_eq!(caps[0], Duration::from_millis(100));
        assert_eq!(caps[1], Duration::from_millis(200));
        assert_eq!(caps[4], Duration::from_millis(1600));
        assert_eq!(caps[5], Duration::from_secs(2));
        assert_eq!(caps[7], Duration::from_secs(2));
        b.reset();
        assert_eq!(b.cap(), Duration::from_millis(100));
    }

    #[test]
    fn survives_very_many_failures() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_secs(30));
        for _ in 0..1000 {
            assert!(b.next_wait() <= Duration::from_secs(30));
        }
    }
}

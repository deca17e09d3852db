//! Exponential backoff between retries: the wait doubles after every failure, up to a
//! cap, and starts over after a success. One helper for every retry loop of the agent
//! (remote clients, peer applies, our Node's annotations).

use std::time::Duration;

/// Delays between attempts: `min`, `2 min`, `4 min`, … up to `max`; jittered, each is
/// drawn between the delay and twice it, so many agents do not retry in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    jitter: Option<std::collections::hash_map::RandomState>,
    draws: u64,
}

impl Backoff {
    /// A backoff that starts at `min` and never waits longer than `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            next: min,
            jitter: None,
            draws: 0,
        }
    }

    /// The same, with jitter.
    pub fn jittered(mut self) -> Self {
        self.jitter = Some(std::collections::hash_map::RandomState::new());
        self
    }

    /// The wait before the next attempt; the one after waits twice as long (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        match &self.jitter {
            None => delay,
            Some(seed) => {
                use std::hash::BuildHasher as _;
                self.draws += 1;
                let r = seed.hash_one(self.draws) % 1024;
                delay + delay.mul_f64(r as f64 / 1024.0)
            }
        }
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// kube-runtime's watcher takes it as its retry policy.
impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_delay())
    }
}

impl kube::runtime::utils::Backoff for Backoff {
    fn reset(&mut self) {
        Backoff::reset(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_starts_over() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(5));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(delays, [s(1), s(2), s(4), s(5), s(5)]);
        b.reset();
        assert_eq!(b.next_delay(), s(1));
    }

    #[test]
    fn jitter_stays_between_the_delay_and_twice_it() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(4)).jittered();
        let delays: Vec<_> = (0..40).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let base = s(1 << i.min(2));
            assert!(*d >= base && *d < base * 2, "{i}: {d:?}");
        }
        assert!(delays[3..].windows(2).any(|w| w[0] != w[1]), "no jitter");
    }
}

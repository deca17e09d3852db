//! How much handshake work one source may cause, as the kernel's `ratelimiter.c` bounds it.
//!
//! A handshake initiation with a valid MAC costs the responder two Diffie-Hellman
//! operations (tens of microseconds) before it knows whether the sender is a peer. Under
//! load (more than [`LOAD_THRESHOLD`] initiations in the current second) initiations must
//! carry a valid cookie MAC (boringtun's `RateLimiter` checks it and answers with cookie
//! replies), and then each source address may cause at most [`PER_SECOND`] handshakes a
//! second, in bursts of [`BURST`]: a token bucket per IPv4 address or IPv6 /64. Everything
//! before the bucket's decision is a few hashes, so a flood from one host is turned away
//! for about a microsecond a packet and cannot starve data or other peers' handshakes.
//!
//! Owned by the inbound thread alone: no locks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Initiations per second above which the interface counts as under load (boringtun's
/// device and this crate's cookie limiter use the same figure).
pub(crate) const LOAD_THRESHOLD: u64 = 100;

/// Handshakes a second one source may cause under load (kernel: `INITIATIONS_PER_SECOND`).
pub(crate) const PER_SECOND: u64 = 20;

/// Handshakes one source may cause at once after being quiet (kernel:
/// `INITIATIONS_BURSTABLE`).
pub(crate) const BURST: u64 = 5;

/// Sources tracked at most; beyond that, a new source under load is turned away (kernel:
/// the table's fixed size).
const MAX_SOURCES: usize = 16_384;

/// Nanoseconds one token is worth.
const TOKEN_NS: u64 = 1_000_000_000 / PER_SECOND;

/// A bucket: its tokens in nanoseconds and when they were last topped up.
#[derive(Clone, Copy)]
struct Bucket {
    tokens_ns: u64,
    updated: Instant,
}

/// The interface's load and the per-source buckets.
pub(crate) struct HandshakeGuard {
    /// Initiations in the current second, and when it started.
    count: u64,
    second: Instant,
    buckets: HashMap<u64, Bucket, foldhash::fast::RandomState>,
    last_gc: Instant,
}

impl Default for HandshakeGuard {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            count: 0,
            second: now,
            buckets: HashMap::default(),
            last_gc: now,
        }
    }
}

/// What the guard says of one initiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Go on with the handshake.
    Allow,
    /// Drop it: its source has had its share.
    Limited,
}

impl HandshakeGuard {
    /// Counts one initiation; true when the interface is under load (this one included).
    pub(crate) fn count_initiation(&mut self, now: Instant) -> bool {
        if now.duration_since(self.second) >= Duration::from_secs(1) {
            self.second = now;
            self.count = 0;
        }
        self.count += 1;
        self.count > LOAD_THRESHOLD
    }

    /// True when `src` has no token left (under load): its initiation can be dropped
    /// before any MAC is checked. Only initiations whose MACs passed ever take tokens, so
    /// a source address that others spoof cannot be emptied this way.
    #[inline]
    pub(crate) fn exhausted(&self, src: IpAddr, now: Instant) -> bool {
        self.buckets.get(&source_key(src)).is_some_and(|b| {
            let earned = now.duration_since(b.updated).as_nanos();
            (b.tokens_ns as u128 + earned) < TOKEN_NS as u128
        })
    }

    /// Takes a token from `src`'s bucket (call only under load, after the MACs passed).
    pub(crate) fn allow(&mut self, src: IpAddr, now: Instant) -> Verdict {
        if now.duration_since(self.last_gc) >= Duration::from_secs(1) {
            self.gc(now);
        }
        let full = BURST * TOKEN_NS;
        let key = source_key(src);
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&key) {
            return Verdict::Limited;
        }
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            tokens_ns: full,
            updated: now,
        });
        let earned = now.duration_since(bucket.updated).as_nanos();
        bucket.tokens_ns = (bucket.tokens_ns as u128 + earned).min(full as u128) as u64;
        bucket.updated = now;
        if bucket.tokens_ns >= TOKEN_NS {
            bucket.tokens_ns -= TOKEN_NS;
            Verdict::Allow
        } else {
            Verdict::Limited
        }
    }

    /// Forgets sources whose buckets have refilled: they behave as new ones anyway.
    fn gc(&mut self, now: Instant) {
        self.last_gc = now;
        let refill = Duration::from_nanos(BURST * TOKEN_NS);
        self.buckets
            .retain(|_, b| now.duration_since(b.updated) < refill);
    }

    /// Sources tracked now.
    #[cfg(test)]
    fn sources(&self) -> usize {
        self.buckets.len()
    }
}

/// One bucket per IPv4 address or IPv6 /64 (a host usually has a whole /64). The two
/// families cannot collide: an IPv4 key has its top bits clear, and a /64 that would
/// look like one is `::/64`, not a routable source.
fn source_key(src: IpAddr) -> u64 {
    match src {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u64::from(u32::from(v4)),
            None => (u128::from(v6) >> 64) as u64,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn load_starts_above_the_threshold_and_ends_with_the_second() {
        let mut g = HandshakeGuard::default();
        let t0 = Instant::now();
        for _ in 0..LOAD_THRESHOLD {
            assert!(!g.count_initiation(t0));
        }
        assert!(g.count_initiation(t0));
        assert!(!g.count_initiation(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_source_gets_a_burst_then_its_rate() {
        let mut g = HandshakeGuard::default();
        let t0 = Instant::now();
        let allowed = (0..100)
            .filter(|_| g.allow(ip("192.0.2.1"), t0) == Verdict::Allow)
            .count();
        assert_eq!(allowed, BURST as usize);
        // Over one more second: PER_SECOND more (one every 50 ms), not more.
        let mut later = 0;
        for ms in (10..=1000).step_by(10) {
            if g.allow(ip("192.0.2.1"), t0 + Duration::from_millis(ms)) == Verdict::Allow {
                later += 1;
            }
        }
        assert_eq!(later, PER_SECOND as usize);
        // Another source is not held back by the first.
        assert_eq!(g.allow(ip("192.0.2.2"), t0), Verdict::Allow);
        // An empty bucket says so without taking anything; it refills with time.
        let t1 = t0 + Duration::from_millis(1000);
        assert!(g.exhausted(ip("192.0.2.1"), t1));
        assert!(!g.exhausted(ip("192.0.2.1"), t1 + Duration::from_millis(50)));
        assert!(!g.exhausted(ip("192.0.2.9"), t1), "an unknown source");
    }

    #[test]
    fn an_ipv6_host_is_one_source_per_64() {
        let mut g = HandshakeGuard::default();
        let t0 = Instant::now();
        for i in 0..BURST {
            let src = ip(&format!("2001:db8:1:2::{}", i + 1));
            assert_eq!(g.allow(src, t0), Verdict::Allow);
        }
        assert_eq!(g.allow(ip("2001:db8:1:2::ffff"), t0), Verdict::Limited);
        assert_eq!(g.allow(ip("2001:db8:1:3::1"), t0), Verdict::Allow);
        // A v4-mapped source is its IPv4 address.
        assert_eq!(
            source_key(ip("::ffff:192.0.2.9")),
            source_key(ip("192.0.2.9"))
        );
    }

    #[test]
    fn idle_sources_are_forgotten_and_the_table_is_bounded() {
        let mut g = HandshakeGuard::default();
        let t0 = Instant::now();
        for i in 0..MAX_SOURCES as u32 {
            g.allow(IpAddr::V4(i.into()), t0);
        }
        assert_eq!(
            g.allow(ip("198.51.100.1"), t0),
            Verdict::Limited,
            "table full"
        );
        let later = t0 + Duration::from_secs(2);
        assert_eq!(g.allow(ip("198.51.100.1"), later), Verdict::Allow);
        assert_eq!(g.sources(), 1);
    }
}

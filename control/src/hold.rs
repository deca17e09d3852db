//! Large removals wait. If one apply would remove more than half of a remote's current
//! peers (and at least [`MIN_HELD`]), the removals are held for a grace period while
//! additions and updates still apply. A remote whose nodes all lose our annotations at once
//! (credentials for the wrong cluster, a renamed cluster) then cannot wipe a node's
//! tunnel in one step; when the grace period ends, or the nodes come back, it resolves by
//! itself. The precedent is the Kubernetes node lifecycle controller, which stops
//! evicting when a large share of a zone's nodes go unready at once. A single node's
//! deletion still applies at once.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;

use crate::peers::DesiredPeer;

/// Removals held only when at least this many would go at once.
pub const MIN_HELD: usize = 3;

/// Default `massRemovalGracePeriod` (the config owns it).
pub use crate::config::DEFAULT_MASS_REMOVAL_GRACE as DEFAULT_GRACE;

/// What one remote's hold decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Keys to keep in the tunnel although no node asks for them any more.
    pub keys: Vec<[u8; 32]>,
    /// When the hold ends on its own (`None`: nothing held).
    pub until: Option<Instant>,
}

/// The hold of one remote.
#[derive(Debug)]
pub struct RemovalHold {
    grace: Duration,
    since: Option<Instant>,
}

impl RemovalHold {
    /// A hold with `grace` (zero: never hold).
    pub fn new(grace: Duration) -> Self {
        Self { grace, since: None }
    }

    /// Given the keys the tunnel has now and the peers wanted, which keys to keep.
    pub fn plan(&mut self, current: &[[u8; 32]], desired: &[DesiredPeer], now: Instant) -> Held {
        let wanted: HashSet<[u8; 32]> = desired.iter().map(|p| p.public_key).collect();
        let removed: Vec<[u8; 32]> = current
            .iter()
            .filter(|k| !wanted.contains(*k))
            .copied()
            .collect();
        let mass = removed.len() >= MIN_HELD && removed.len() * 2 > current.len();
        if self.grace.is_zero() || !mass {
            self.since = None;
            return Held {
                keys: Vec::new(),
                until: None,
            };
        }
        let since = *self.since.get_or_insert(now);
        let until = since + self.grace;
        if now >= until {
            // The grace period is over: the removals go through.
            return Held {
                keys: Vec::new(),
                until: None,
            };
        }
        Held {
            keys: removed,
            until: Some(until),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> DesiredPeer {
        DesiredPeer {
            node: format!("n{n}"),
            public_key: [n; 32],
            endpoint: "192.0.2.1:51820".parse().unwrap(),
            allowed_ips: Vec::new(),
            persistent_keepalive: Duration::from_secs(25),
        }
    }

    fn keys(ns: &[u8]) -> Vec<[u8; 32]> {
        ns.iter().map(|n| [*n; 32]).collect()
    }

    #[test]
    fn more_than_half_at_once_is_held_until_the_grace_ends() {
        let mut h = RemovalHold::new(Duration::from_secs(300));
        let t0 = Instant::now();
        let current = keys(&[1, 2, 3, 4, 5]);
        // Three of five go, and a new node comes: the new one applies, the three wait.
        let held = h.plan(&current, &[peer(1), peer(2), peer(9)], t0);
        assert_eq!(held.keys, keys(&[3, 4, 5]));
        assert_eq!(held.until, Some(t0 + Duration::from_secs(300)));
        // Still held later on, counted from the first time.
        let later = h.plan(&current, &[peer(1), peer(2)], t0 + Duration::from_secs(100));
        assert_eq!(later.until, Some(t0 + Duration::from_secs(300)));
        // Released when the grace period ends.
        let end = h.plan(&current, &[peer(1), peer(2)], t0 + Duration::from_secs(300));
        assert!(end.keys.is_empty());
    }

    #[test]
    fn small_or_partial_removals_and_returning_nodes_are_not_held() {
        let mut h = RemovalHold::new(Duration::from_secs(300));
        let t0 = Instant::now();
        // One node deleted: at once.
        assert!(h.plan(&keys(&[1, 2]), &[peer(1)], t0).keys.is_empty());
        // Two of three: fewer than MIN_HELD.
        assert!(h.plan(&keys(&[1, 2, 3]), &[peer(1)], t0).keys.is_empty());
        // Half exactly: not more than half.
        assert!(
            h.plan(&keys(&[1, 2, 3, 4, 5, 6]), &[peer(1), peer(2), peer(3)], t0)
                .keys
                .is_empty()
        );
        // Held, then the nodes come back: nothing held, and a later mass removal starts
        // a new grace period.
        let current = keys(&[1, 2, 3, 4]);
        assert_eq!(h.plan(&current, &[peer(1)], t0).keys.len(), 3);
        let all: Vec<_> = (1..=4).map(peer).collect();
        assert!(
            h.plan(&current, &all, t0 + Duration::from_secs(10))
                .keys
                .is_empty()
        );
        let again = h.plan(&current, &[peer(1)], t0 + Duration::from_secs(20));
        assert_eq!(again.until, Some(t0 + Duration::from_secs(320)));
    }

    #[test]
    fn a_zero_grace_never_holds() {
        let mut h = RemovalHold::new(Duration::ZERO);
        assert!(
            h.plan(&keys(&[1, 2, 3, 4]), &[], Instant::now())
                .keys
                .is_empty()
        );
    }
}

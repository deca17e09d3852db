//! The live peer table: one slot per peer (its boringtun `Tunn`, endpoint and counters),
//! lookups by public key, by receiver index and by inner address (cryptokey routing).
//! A new table is built on every `apply`; peers whose key and preshared key are
//! unchanged are carried over, sessions and all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use boringtun::noise::Tunn;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::x25519;

use crate::allowed_ips::AllowedIps;
use crate::config::TunnelConfig;
use crate::key::Key;
use crate::stats::PeerCounters;

/// Handshake initiations per second before cookies are demanded (as boringtun's device).
const HANDSHAKE_RATE_LIMIT: u64 = 100;

/// One configured peer and its protocol state.
pub(crate) struct Peer {
    pub(crate) key: Key,
    pub(crate) preshared_key: Option<Key>,
    /// Our 24-bit slot index: boringtun's receiver indices are `index << 8 | session`.
    pub(crate) index: u32,
    tunn: Mutex<Tunn>,
    endpoint: Mutex<Option<SocketAddr>>,
    keepalive: AtomicU16,
    last_handshake: Mutex<Option<SystemTime>>,
    /// Milliseconds since the tunnel's epoch when we last sent anything to this peer.
    last_sent_ms: AtomicU64,
    /// Set by `apply` when a keepalive must go out at the next timer tick.
    pub(crate) keepalive_due: AtomicBool,
    pub(crate) counters: Arc<PeerCounters>,
}

impl Peer {
    /// Locks the protocol state. Poisoning is ignored: `Tunn` stays usable.
    #[inline]
    pub(crate) fn tunn(&self) -> MutexGuard<'_, Tunn> {
        self.tunn.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[inline]
    pub(crate) fn endpoint(&self) -> Option<SocketAddr> {
        *self.endpoint.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Roaming: the endpoint follows the source of the last authenticated packet.
    #[inline]
    pub(crate) fn set_endpoint(&self, addr: SocketAddr) {
        let mut ep = self.endpoint.lock().unwrap_or_else(|e| e.into_inner());
        if *ep != Some(addr) {
            *ep = Some(addr);
        }
    }

    pub(crate) fn keepalive(&self) -> u16 {
        self.keepalive.load(Relaxed)
    }

    #[inline]
    pub(crate) fn mark_sent(&self, now_ms: u64) {
        self.last_sent_ms.store(now_ms, Relaxed);
    }

    pub(crate) fn last_sent_ms(&self) -> u64 {
        self.last_sent_ms.load(Relaxed)
    }

    /// Absolute time of the last completed handshake (kept after sessions expire, as
    /// the kernel does).
    pub(crate) fn last_handshake(&self) -> Option<SystemTime> {
        *self
            .last_handshake
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn handshake_completed(&self) {
        *self
            .last_handshake
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(SystemTime::now());
    }
}

/// Our static keys and the interface-wide handshake rate limiter.
pub(crate) struct Identity {
    pub(crate) secret: x25519::StaticSecret,
    pub(crate) public: x25519::PublicKey,
    pub(crate) rate_limiter: Arc<RateLimiter>,
}

/// An immutable snapshot that the packet paths read once per batch.
#[derive(Default)]
pub(crate) struct PeerTable {
    pub(crate) identity: Option<Arc<Identity>>,
    pub(crate) peers: Vec<Arc<Peer>>,
    by_key: HashMap<Key, usize>,
    /// Keyed by a number the sender of each packet chooses, and read once per packet:
    /// foldhash is several times cheaper than SipHash, and its per-process seed keeps
    /// the layout unknown to a sender.
    by_index: HashMap<u32, usize, foldhash::fast::RandomState>,
    pub(crate) routes: AllowedIps<usize>,
}

impl PeerTable {
    /// Position of the peer with this static key.
    pub(crate) fn by_key(&self, key: &Key) -> Option<&Arc<Peer>> {
        self.by_key.get(key).map(|&i| &self.peers[i])
    }

    /// The peer owning boringtun receiver index `receiver`.
    #[inline]
    pub(crate) fn by_receiver(&self, receiver: u32) -> Option<(usize, &Arc<Peer>)> {
        let pos = *self.by_index.get(&(receiver >> 8))?;
        Some((pos, &self.peers[pos]))
    }

    /// Builds the table for `config` (already validated), reusing peers of `old` whose
    /// identity is unchanged. `epoch_ms` is "now" on the tunnel's clock.
    pub(crate) fn build(
        old: &Self,
        old_config: &TunnelConfig,
        config: &TunnelConfig,
        next_index: &mut dyn FnMut() -> u32,
        force_endpoint: &dyn Fn(&Key) -> bool,
    ) -> Self {
        let same_identity = old_config.private_key == config.private_key && old.identity.is_some();
        let identity = match (&config.private_key, same_identity) {
            (None, _) => None,
            (Some(_), true) => old.identity.clone(),
            (Some(sk), false) => {
                let secret = sk.secret();
                let public = x25519::PublicKey::from(&secret);
                Some(Arc::new(Identity {
                    rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
                    secret,
                    public,
                }))
            }
        };
        let mut table = Self {
            identity: identity.clone(),
            ..Self::default()
        };
        let Some(identity) = identity else {
            return table;
        };
        let mut routes = Vec::new();
        let used: std::collections::HashSet<u32> = old.by_index.keys().copied().collect();
        for (pos, pc) in config.peers.iter().enumerate() {
            let previous = old.by_key(&pc.public_key);
            let old_pc = old_config
                .peers
                .iter()
                .find(|p| p.public_key == pc.public_key);
            let reuse = previous.filter(|p| same_identity && p.preshared_key == pc.preshared_key);
            let peer = match reuse {
                Some(p) => Arc::clone(p),
                None => {
                    let mut index = next_index();
                    while used.contains(&index) || table.by_index.contains_key(&index) {
                        index = next_index();
                    }
                    let tunn = Tunn::new(
                        identity.secret.clone(),
                        x25519::PublicKey::from(pc.public_key.0),
                        pc.preshared_key.map(|k| k.0),
                        None,
                        index,
                        // One limiter (and cookie secret) for the interface, reset by the
                        // timer task.
                        Some(Arc::clone(&identity.rate_limiter)),
                    );
                    Arc::new(Peer {
                        key: pc.public_key,
                        preshared_key: pc.preshared_key,
                        index,
                        tunn: Mutex::new(tunn),
                        endpoint: Mutex::new(previous.and_then(|p| p.endpoint()).or(pc.endpoint)),
                        keepalive: AtomicU16::new(0),
                        last_handshake: Mutex::new(previous.and_then(|p| p.last_handshake())),
                        last_sent_ms: AtomicU64::new(0),
                        keepalive_due: AtomicBool::new(false),
                        counters: previous
                            .map(|p| Arc::clone(&p.counters))
                            .unwrap_or_default(),
                    })
                }
            };
            // An endpoint given in the config wins when it changed (or the peer is new);
            // otherwise the roamed endpoint stays.
            if let Some(ep) = pc.endpoint
                && (old_pc.and_then(|o| o.endpoint) != Some(ep)
                    || previous.is_none()
                    || force_endpoint(&pc.public_key))
            {
                peer.set_endpoint(ep);
            }
            let keepalive = pc.persistent_keepalive.unwrap_or(0);
            let before = peer.keepalive.swap(keepalive, Relaxed);
            if keepalive != 0 && (before == 0 || reuse.is_none()) {
                peer.keepalive_due.store(true, Relaxed);
            }
            routes.extend(pc.allowed_ips.iter().map(|net| (*net, pos)));
            table.by_key.insert(pc.public_key, pos);
            table.by_index.insert(peer.index, pos);
            table.peers.push(peer);
        }
        table.routes = routes.into_iter().collect();
        table
    }
}

/// Milliseconds on a monotonic clock shared by one tunnel's tasks.
///
/// The packet paths read a coarse copy that the timer task refreshes on every tick. They
/// only stamp when a peer was last sent to, which the timer task compares on its ticks
/// anyway, and reading the system clock on every batch costs a cold cache line or two
/// (the kernel rewrites the clock page on every timer interrupt) per idle wake-up.
pub(crate) struct Clock {
    epoch: Instant,
    coarse: AtomicU64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            coarse: AtomicU64::new(1),
        }
    }

    /// Now. +1 so that 0 can mean "never".
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Refreshes the coarse copy and returns it (the timer task, once per tick).
    pub(crate) fn tick(&self) -> u64 {
        let now = self.now_ms();
        self.coarse.store(now, Relaxed);
        now
    }

    /// Now, as of the last [`Clock::tick`]: at most one timer tick old.
    #[inline]
    pub(crate) fn coarse_ms(&self) -> u64 {
        self.coarse.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_moves_only_on_ticks() {
        let clock = Clock::new();
        assert_eq!(clock.coarse_ms(), 1, "not 0, which means never");
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(clock.coarse_ms(), 1);
        let t = clock.tick();
        assert!(t >= 6, "{t}");
        assert_eq!(clock.coarse_ms(), t);
        assert!(clock.now_ms() >= t);
    }
}

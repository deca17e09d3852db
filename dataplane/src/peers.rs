//! The live peer table: one slot per peer (its boringtun `Tunn`, endpoint and counters),
//! lookups by public key, by receiver index and by inner address (cryptokey routing).
//! A new table is built on every `apply`; peers whose key and preshared key are
//! unchanged are carried over, sessions and all.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use boringtun::noise::Tunn;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::x25519;

use crate::allowed_ips::AllowedIps;
use crate::batch::Batch;
use crate::config::TunnelConfig;
use crate::key::Key;
use crate::stats::{DeviceCounters, PeerCounters};
use crate::timers::PeerTimers;

/// Handshake initiations per second before cookies are demanded (as boringtun's device).
const HANDSHAKE_RATE_LIMIT: u64 = crate::ratelimit::LOAD_THRESHOLD;

/// One configured peer and its protocol state.
pub(crate) struct Peer {
    pub(crate) key: Key,
    pub(crate) preshared_key: Option<Key>,
    /// Our 24-bit slot index: boringtun's receiver indices are `index << 8 | session`.
    pub(crate) index: u32,
    tunn: Mutex<Tunn>,
    path: Mutex<Path>,
    pub(crate) timers: PeerTimers,
    pub(crate) counters: Arc<PeerCounters>,
}

/// Where a peer is and how we reach it ("sticky sockets", as the kernel keeps them): its
/// endpoint, and our address its last authenticated packet was sent to, which we answer
/// from so that the peer sees one stable endpoint of ours on a host with several.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Path {
    /// Where to send to.
    pub(crate) endpoint: Option<SocketAddr>,
    /// Our address to send from; `None`: the kernel's choice.
    pub(crate) source: Option<IpAddr>,
    /// Our address and interface the peer's last authenticated packet arrived at.
    pub(crate) seen_at: Option<(IpAddr, u32)>,
    /// The tick has yet to check `source` against the route (see `tick.rs`).
    pub(crate) unchecked: bool,
    /// When the tick checks `source` again (tunnel clock, ms).
    pub(crate) recheck_ms: u64,
}

impl Peer {
    /// Locks the protocol state. Poisoning is ignored: `Tunn` stays usable.
    #[inline]
    pub(crate) fn tunn(&self) -> MutexGuard<'_, Tunn> {
        self.tunn.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[inline]
    fn lock_path(&self) -> MutexGuard<'_, Path> {
        self.path.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[inline]
    pub(crate) fn endpoint(&self) -> Option<SocketAddr> {
        self.lock_path().endpoint
    }

    /// Where to send to, and from which of our addresses.
    #[inline]
    pub(crate) fn path(&self) -> Path {
        *self.lock_path()
    }

    /// A configured endpoint: what we knew of our source for the old one no longer holds.
    pub(crate) fn set_endpoint(&self, addr: SocketAddr) {
        let mut path = self.lock_path();
        if path.endpoint != Some(addr) {
            *path = Path {
                endpoint: Some(addr),
                ..Path::default()
            };
        }
    }

    /// Roaming: the endpoint follows the source of the last authenticated packet, and our
    /// source follows the address it was sent to (`seen_at`: that address and the
    /// interface it arrived on, when the transport tells). A new one is used at once, as
    /// the kernel does, and checked against the route by the tick.
    #[inline]
    pub(crate) fn roam(&self, addr: SocketAddr, seen_at: Option<(IpAddr, u32)>) {
        let mut path = self.lock_path();
        if path.endpoint != Some(addr) {
            path.endpoint = Some(addr);
        }
        if seen_at.is_some() && path.seen_at != seen_at {
            path.seen_at = seen_at;
            path.source = seen_at.map(|(ip, _)| ip);
            path.unchecked = true;
        }
    }

    /// The kernel refused our source (the address left the host): the kernel's choice
    /// from now on, until the peer's next packet teaches us again.
    pub(crate) fn forget_source(&self) {
        let mut path = self.lock_path();
        path.source = None;
        path.seen_at = None;
        path.unchecked = false;
    }

    /// The tick's verdict on the source: keep it (recheck at `recheck_ms`) or drop it for
    /// the kernel's choice. Ignored if the path changed since it was read (`was`).
    pub(crate) fn source_checked(&self, was: Path, keep: bool, recheck_ms: u64) {
        let mut path = self.lock_path();
        if path.seen_at != was.seen_at || path.source != was.source {
            return;
        }
        path.unchecked = false;
        path.recheck_ms = recheck_ms;
        if !keep {
            path.source = None;
        }
    }
}

/// Our static keys and the interface-wide handshake rate limiter.
pub(crate) struct Identity {
    pub(crate) secret: x25519::StaticSecret,
    pub(crate) public: x25519::PublicKey,
    /// Checks the MACs of every initiation before any other work and counts the load
    /// (the inbound path calls it once per initiation; the tick resets its count).
    pub(crate) rate_limiter: Arc<RateLimiter>,
    /// Handed to every `Tunn`, whose `decapsulate` checks the MACs again: never under
    /// load, so an initiation is counted once, by `rate_limiter`, and a cookie is never
    /// asked for twice with two secrets.
    tunn_limiter: Arc<RateLimiter>,
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
    /// Counts a batch after its send: what the socket accepted, for the interface and for
    /// each packet's peer (its tag is the peer's position in this table); what it did not,
    /// as send errors.
    pub(crate) fn count_sent(&self, batch: &Batch, counters: &DeviceCounters) {
        let (mut packets, mut bytes, mut failed) = (0u64, 0u64, 0u64);
        for i in 0..batch.len() {
            if batch.failed(i) {
                failed += 1;
                continue;
            }
            let len = batch.packet(i).len();
            packets += 1;
            bytes += len as u64;
            if let Some(peer) = self.peers.get(batch.tag(i) as usize) {
                peer.counters.sent(len);
                if batch.source_refused(i) {
                    peer.forget_source();
                }
            }
        }
        counters.sent(packets, bytes, failed);
    }

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
    /// identity is unchanged. `next_index` draws slot indices; `force_endpoint` names the
    /// peers whose configured endpoint wins over a roamed one even when unchanged.
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
                    tunn_limiter: Arc::new(RateLimiter::new(&public, u64::MAX)),
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
        let old_endpoints: HashMap<Key, Option<SocketAddr>> = old_config
            .peers
            .iter()
            .map(|p| (p.public_key, p.endpoint))
            .collect();
        for (pos, pc) in config.peers.iter().enumerate() {
            let previous = old.by_key(&pc.public_key);
            let old_endpoint = old_endpoints.get(&pc.public_key).copied().flatten();
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
                        Some(Arc::clone(&identity.tunn_limiter)),
                    );
                    Arc::new(Peer {
                        key: pc.public_key,
                        preshared_key: pc.preshared_key,
                        index,
                        tunn: Mutex::new(tunn),
                        path: Mutex::new(match previous {
                            Some(p) => p.path(),
                            None => Path {
                                endpoint: pc.endpoint,
                                ..Path::default()
                            },
                        }),
                        timers: PeerTimers::new(previous.and_then(|p| p.timers.last_handshake())),
                        counters: previous
                            .map(|p| Arc::clone(&p.counters))
                            .unwrap_or_default(),
                    })
                }
            };
            // An endpoint given in the config wins when it changed (or the peer is new);
            // otherwise the roamed endpoint stays.
            if let Some(ep) = pc.endpoint
                && (old_endpoint != Some(ep)
                    || previous.is_none()
                    || force_endpoint(&pc.public_key))
            {
                peer.set_endpoint(ep);
            }
            peer.timers
                .on_keepalive_configured(pc.persistent_keepalive.unwrap_or(0), reuse.is_none());
            routes.extend(pc.allowed_ips.iter().map(|net| (*net, pos)));
            table.by_key.insert(pc.public_key, pos);
            table.by_index.insert(peer.index, pos);
            table.peers.push(peer);
        }
        table.routes = routes.into_iter().collect();
        table
    }
}

//! What a running interface reports ([`DeviceStatus`]) and the operations the UAPI server
//! and the controller use on it ([`Device`]), independent of its transports.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use ip_network::IpNetwork;

use crate::config::TunnelConfig;
use crate::error::ConfigError;
use crate::key::{Key, PrivateKey};
use crate::peers::PeerTable;
use crate::stats::DeviceCounters;

/// What a running interface reports: the configuration plus live state per peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceStatus {
    /// Our private key, if set.
    pub private_key: Option<PrivateKey>,
    /// The port actually bound (0 when no socket).
    pub listen_port: u16,
    /// `SO_MARK` (0 = none).
    pub fwmark: u32,
    /// Peers in configuration order.
    pub peers: Vec<PeerStatus>,
}

/// Live state of one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's public key.
    pub public_key: Key,
    /// Its preshared key.
    pub preshared_key: Option<Key>,
    /// The current (possibly roamed) endpoint.
    pub endpoint: Option<SocketAddr>,
    /// When the last handshake completed.
    pub last_handshake: Option<SystemTime>,
    /// WireGuard bytes received from this peer.
    pub rx_bytes: u64,
    /// WireGuard bytes sent to this peer.
    pub tx_bytes: u64,
    /// Datagrams received.
    pub rx_packets: u64,
    /// Datagrams sent.
    pub tx_packets: u64,
    /// Persistent keepalive interval in seconds.
    pub persistent_keepalive: Option<u16>,
    /// The peer's allowed IPs.
    pub allowed_ips: Vec<IpNetwork>,
}

impl PeerStatus {
    /// A peer with only a key: no endpoint, no handshake, zero counters.
    pub fn new(public_key: Key) -> Self {
        Self {
            public_key,
            preshared_key: None,
            endpoint: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_packets: 0,
            tx_packets: 0,
            persistent_keepalive: None,
            allowed_ips: Vec::new(),
        }
    }
}

/// The operations the UAPI server (and anything else) needs from an interface. Object
/// safe, so one server type serves tunnels over any transport.
pub trait Device: Send + Sync + 'static {
    /// Interface name.
    fn name(&self) -> &str;
    /// Replaces the whole configuration (the single write path).
    fn apply(&self, config: TunnelConfig) -> Result<(), ConfigError>;
    /// The current configuration.
    fn config(&self) -> TunnelConfig;
    /// Configuration plus live peer state.
    fn status(&self) -> DeviceStatus;
    /// Interface counters.
    fn counters(&self) -> &DeviceCounters;
    /// Read-modify-write under the write lock: `edit` gets a copy of the configuration
    /// and the result is applied atomically (nothing changes if either step fails).
    /// Peers listed in `set_endpoints` take their configured endpoint even if it equals
    /// the previous configuration (an explicit `wg set … endpoint` undoes roaming).
    fn update(
        &self,
        edit: &mut dyn FnMut(&mut TunnelConfig) -> Result<(), ConfigError>,
        set_endpoints: &[Key],
    ) -> Result<(), ConfigError>;
}

impl std::fmt::Debug for dyn Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({})", self.name())
    }
}

/// The status of an interface configured with `config`, with live peer state from
/// `table` and `listen_port` bound.
pub(crate) fn status(config: TunnelConfig, table: &PeerTable, listen_port: u16) -> DeviceStatus {
    let peers = config
        .peers
        .iter()
        .map(|pc| {
            let live = table.by_key(&pc.public_key);
            let c = live.map(|p| &*p.counters);
            PeerStatus {
                public_key: pc.public_key,
                preshared_key: pc.preshared_key,
                endpoint: live.and_then(|p| p.endpoint()).or(pc.endpoint),
                last_handshake: live.and_then(|p| p.timers.last_handshake()),
                rx_bytes: c.map_or(0, |c| c.rx_bytes.load(Relaxed)),
                tx_bytes: c.map_or(0, |c| c.tx_bytes.load(Relaxed)),
                rx_packets: c.map_or(0, |c| c.rx_packets.load(Relaxed)),
                tx_packets: c.map_or(0, |c| c.tx_packets.load(Relaxed)),
                persistent_keepalive: pc.persistent_keepalive,
                allowed_ips: pc.allowed_ips.clone(),
            }
        })
        .collect();
    DeviceStatus {
        private_key: config.private_key,
        listen_port,
        fwmark: config.fwmark,
        peers,
    }
}

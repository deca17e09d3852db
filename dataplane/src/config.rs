//! The desired state of one interface: what `Tunnel::apply` takes and `Tunnel::config`
//! returns. Plain data plus validation; no I/O.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use ip_network::IpNetwork;

use crate::error::ConfigError;
use crate::key::{Key, PrivateKey};

/// The whole desired state of an interface. `apply` makes the tunnel carry exactly this.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunnelConfig {
    /// Our static private key; without one, the interface carries no traffic.
    pub private_key: Option<PrivateKey>,
    /// UDP port to listen on; 0 picks a free port.
    pub listen_port: u16,
    /// `SO_MARK` for outgoing UDP; 0 means none.
    pub fwmark: u32,
    /// The peers, in the order they were configured.
    pub peers: Vec<PeerConfig>,
}

/// One peer of an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's static public key: its identity.
    pub public_key: Key,
    /// Optional preshared key mixed into the handshake.
    pub preshared_key: Option<Key>,
    /// Where to send to until the peer roams.
    pub endpoint: Option<SocketAddr>,
    /// Inner prefixes routed to this peer and accepted from it.
    pub allowed_ips: Vec<IpNetwork>,
    /// Seconds between keepalives when otherwise idle; `None` is off.
    pub persistent_keepalive: Option<u16>,
}

impl PeerConfig {
    /// A peer with only a public key.
    pub fn new(public_key: Key) -> Self {
        Self {
            public_key,
            preshared_key: None,
            endpoint: None,
            allowed_ips: Vec::new(),
            persistent_keepalive: None,
        }
    }
}

impl TunnelConfig {
    /// Checks the invariants `apply` relies on: unique peers, no peer with our own key,
    /// each allowed IP owned by one peer. Allowed IPs are normalised (host bits cleared,
    /// duplicates inside one peer dropped).
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        let own = self.private_key.as_ref().map(PrivateKey::public_key);
        let mut keys: HashMap<Key, ()> = HashMap::with_capacity(self.peers.len());
        let mut owners: HashMap<IpNetwork, Key> = HashMap::new();
        for peer in &mut self.peers {
            if keys.insert(peer.public_key, ()).is_some() {
                return Err(ConfigError::DuplicatePeer(peer.public_key.to_base64()));
            }
            if Some(peer.public_key) == own {
                return Err(ConfigError::PeerIsSelf(peer.public_key.to_base64()));
            }
            let mut seen = Vec::with_capacity(peer.allowed_ips.len());
            for net in &peer.allowed_ips {
                let net = normalize(*net);
                match owners.insert(net, peer.public_key) {
                    None => seen.push(net),
                    // A duplicate inside one peer is dropped.
                    Some(first) if first == peer.public_key => {}
                    Some(first) => {
                        return Err(ConfigError::AllowedIpConflict {
                            prefix: net.to_string(),
                            first: first.to_base64(),
                            second: peer.public_key.to_base64(),
                        });
                    }
                }
            }
            peer.allowed_ips = seen;
        }
        Ok(())
    }
}

/// Clears host bits: `10.0.0.1/24` becomes `10.0.0.0/24`.
pub fn normalize(net: IpNetwork) -> IpNetwork {
    IpNetwork::new_truncate(net.network_address(), net.netmask()).unwrap_or(net)
}

/// Parses `addr/len` (or a bare address as a host route), clearing host bits.
pub fn parse_prefix(s: &str) -> Result<IpNetwork, ConfigError> {
    let bad = || ConfigError::InvalidPrefix(s.to_string());
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => {
            let l = l.trim();
            if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            l.parse::<u8>().map_err(|_| bad())?
        }
        None => max,
    };
    if len > max {
        return Err(bad());
    }
    IpNetwork::new_truncate(addr, len).map_err(|_| bad())
}

/// Parses `ip:port` or `[ipv6]:port` (and `[ipv6%zone]:port` without the zone).
pub fn parse_endpoint(s: &str) -> Result<SocketAddr, ConfigError> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(canonical(addr));
    }
    Err(ConfigError::InvalidEndpoint(s.to_string()))
}

/// An IPv4-mapped IPv6 address becomes a plain IPv4 one.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// IPv4-mapped IPv6 socket addresses become plain IPv4 ones.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Key {
        Key([n; 32])
    }

    #[test]
    fn prefixes_parse_and_normalise() {
        assert_eq!(
            parse_prefix("10.1.2.3/16").unwrap().to_string(),
            "10.1.0.0/16"
        );
        assert_eq!(parse_prefix("fd00::1/64").unwrap().to_string(), "fd00::/64");
        assert_eq!(
            parse_prefix("192.168.1.1").unwrap().to_string(),
            "192.168.1.1/32"
        );
        assert_eq!(parse_prefix("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "x/8",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "",
        ] {
            assert!(parse_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            parse_endpoint("1.2.3.4:51820").unwrap().to_string(),
            "1.2.3.4:51820"
        );
        assert_eq!(
            parse_endpoint("[fd00::1]:5").unwrap().to_string(),
            "[fd00::1]:5"
        );
        assert_eq!(
            parse_endpoint("[::ffff:1.2.3.4]:7").unwrap().to_string(),
            "1.2.3.4:7"
        );
        assert!(parse_endpoint("fd00::1:5").is_err());
        assert!(parse_endpoint("host:5").is_err());
    }

    #[test]
    fn validation_rejects_duplicates_and_conflicts() {
        let mut c = TunnelConfig::default();
        c.peers.push(PeerConfig::new(key(1)));
        c.peers.push(PeerConfig::new(key(1)));
        assert!(matches!(c.validate(), Err(ConfigError::DuplicatePeer(_))));

        let mut c = TunnelConfig::default();
        let mut a = PeerConfig::new(key(1));
        a.allowed_ips.push(parse_prefix("10.0.0.0/24").unwrap());
        let mut b = PeerConfig::new(key(2));
        b.allowed_ips.push(parse_prefix("10.0.0.9/24").unwrap());
        c.peers = vec![a, b];
        assert!(matches!(
            c.validate(),
            Err(ConfigError::AllowedIpConflict { .. })
        ));
    }

    #[test]
    fn validation_rejects_self_and_dedups() {
        let sk = PrivateKey::generate();
        let mut c = TunnelConfig {
            private_key: Some(sk.clone()),
            ..Default::default()
        };
        c.peers.push(PeerConfig::new(sk.public_key()));
        assert!(matches!(c.validate(), Err(ConfigError::PeerIsSelf(_))));

        let mut c = TunnelConfig::default();
        let mut a = PeerConfig::new(key(1));
        a.allowed_ips = vec![
            parse_prefix("10.0.0.1/24").unwrap(),
            parse_prefix("10.0.0.0/24").unwrap(),
        ];
        c.peers.push(a);
        c.validate().unwrap();
        assert_eq!(c.peers[0].allowed_ips.len(), 1);
    }
}

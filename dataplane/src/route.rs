//! What the kernel would choose for a destination, asked without netlink: the preferred
//! source address (a connected UDP socket's local address) and the interface that
//! address is on (the host's address list). The sticky-source check of the tick uses it
//! to follow the kernel's rule: keep answering from the address a peer wrote to only
//! while the route back leaves through the interface that packet arrived on.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the host's address list is trusted before it is read again.
const ADDRESSES_TTL: Duration = Duration::from_secs(1);

/// Every address of this host's interfaces (in this network namespace), with the index
/// of its interface.
pub(crate) fn host_addresses() -> HashMap<IpAddr, u32> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return HashMap::new();
    };
    addrs
        .filter_map(|a| {
            let s = a.address?;
            let ip = s
                .as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))?;
            let index = nix::net::if_::if_nametoindex(a.interface_name.as_str()).ok()?;
            Some((ip, index))
        })
        .collect()
}

/// Answers "where would the kernel send from" for one socket's destinations.
#[derive(Default)]
pub(crate) struct RouteProbe {
    addresses: Mutex<Option<(Instant, HashMap<IpAddr, u32>)>>,
}

impl RouteProbe {
    /// The kernel's source address towards `to` and the interface it belongs to, or
    /// `None` when there is no route. `fwmark` is the socket's `SO_MARK` (policy routing
    /// may depend on it).
    pub(crate) fn source_towards(&self, to: SocketAddr, fwmark: u32) -> Option<(IpAddr, u32)> {
        let any: SocketAddr = match to {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let probe = UdpSocket::bind(any).ok()?;
        if fwmark != 0 {
            socket2::SockRef::from(&probe).set_mark(fwmark).ok()?;
        }
        probe.connect(to).ok()?;
        let ip = probe.local_addr().ok()?.ip();
        Some((ip, self.interface_of(ip)?))
    }

    /// The interface holding address `ip`, from a list at most [`ADDRESSES_TTL`] old.
    fn interface_of(&self, ip: IpAddr) -> Option<u32> {
        let mut cached = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = cached
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < ADDRESSES_TTL);
        if !fresh {
            *cached = Some((Instant::now(), host_addresses()));
        }
        cached.as_ref()?.1.get(&ip).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_reached_from_loopback() {
        let probe = RouteProbe::default();
        let (ip, index) = probe
            .source_towards("127.0.0.1:9".parse().unwrap(), 0)
            .expect("a route to loopback");
        assert_eq!(ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(host_addresses().get(&ip), Some(&index));
        assert!(index > 0);
    }
}

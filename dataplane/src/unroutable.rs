//! Packets read from the TUN that the tunnel will not carry, screened before routing:
//!
//! - **Our own datagrams coming back.** When a peer's endpoint is routed through the
//!   tunnel itself (or two tunnels' endpoints through each other), every sealed datagram
//!   re-enters a TUN as an inner packet. Sealing it again would feed the loop, and once a
//!   datagram outgrows the MTU the kernel fragments it and the loop multiplies. A UDP
//!   packet from one of this process's WireGuard ports, from one of this host's addresses,
//!   carrying a WireGuard message is ours: it is dropped (`routing_loop`), and so are the
//!   later fragments of a first fragment dropped that way.
//! - **Destinations no peer covers** and **packets too large for a WireGuard message**:
//!   dropped, answered with an ICMP error back into the TUN (`icmp.rs`).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::batch::{Batch, TUN_HEADROOM};
use crate::icmp::{self, IcmpLimiter, Problem};
use crate::packet::{self, IpHeader};

/// The largest inner packet one WireGuard data message can carry over IPv4: 65535 bytes
/// of IP datagram, less 20 of IPv4 header, 8 of UDP header and 32 of WireGuard overhead.
pub const MAX_INNER_PACKET: usize = 65_535 - 20 - 8 - 32;

/// How long the host's addresses are trusted before they are read again.
const ADDRESSES_TTL: Duration = Duration::from_secs(1);

/// First fragments of our own datagrams remembered, to drop their later fragments too.
const FRAGMENTS: usize = 32;

/// The UDP ports this process's tunnels are bound to (two tunnels can loop into each
/// other, so each must recognise the other's datagrams).
static OWN_PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

fn own_ports() -> MutexGuard<'static, Vec<u16>> {
    OWN_PORTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers a bound port (a socket bound twice to one port counts twice).
pub(crate) fn port_bound(port: u16) {
    own_ports().push(port);
}

/// Unregisters a port when its socket goes.
pub(crate) fn port_released(port: u16) {
    let mut ports = own_ports();
    if let Some(i) = ports.iter().position(|p| *p == port) {
        ports.swap_remove(i);
    }
}

/// The outbound path's screen: its ICMP errors waiting for the TUN and what it
/// remembers between batches.
pub(crate) struct Screen {
    icmp: Batch,
    limiter: IcmpLimiter,
    /// (source, destination, IP identification) of our own fragmented datagrams.
    fragments: [Option<(IpAddr, IpAddr, u32)>; FRAGMENTS],
    next_fragment: usize,
    local: HashSet<IpAddr>,
    local_read: Option<Instant>,
}

/// What the screen says of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Screened {
    /// Route it.
    Pass,
    /// One of our own datagrams: drop it.
    Loop,
    /// Too large to seal: dropped, with an ICMP error queued.
    TooBig,
}

impl Screen {
    pub(crate) fn new() -> Self {
        Self {
            icmp: Batch::with_headroom(8, 1280 + TUN_HEADROOM + 64, TUN_HEADROOM),
            limiter: IcmpLimiter::default(),
            fragments: [None; FRAGMENTS],
            next_fragment: 0,
            local: HashSet::new(),
            local_read: None,
        }
    }

    /// Looks at a packet before it is routed.
    #[inline]
    pub(crate) fn check(&mut self, packet: &[u8], header: &IpHeader) -> Screened {
        if packet.len() > MAX_INNER_PACKET {
            self.answer(
                packet,
                Problem::TooBig {
                    mtu: MAX_INNER_PACKET as u16,
                },
            );
            return Screened::TooBig;
        }
        match packet::udp_view(packet) {
            Some(udp) if self.is_ours(header, &udp) => Screened::Loop,
            _ => Screened::Pass,
        }
    }

    /// Queues an ICMP "unreachable" for a packet no peer's allowed IPs cover.
    pub(crate) fn unreachable(&mut self, packet: &[u8]) {
        self.answer(packet, Problem::Unreachable);
    }

    fn answer(&mut self, packet: &[u8], problem: Problem) {
        if self.icmp.is_full() || !self.limiter.allow(Instant::now()) {
            return;
        }
        if let Some(slot) = self.icmp.next_slot()
            && let Some(n) = icmp::error_for(packet, problem, slot)
        {
            self.icmp.commit(n, unspecified(), 0);
        }
    }

    /// The ICMP errors queued since the last call, to write into the TUN.
    pub(crate) fn take_errors(&mut self) -> Option<&mut Batch> {
        (!self.icmp.is_empty()).then_some(&mut self.icmp)
    }

    fn is_ours(&mut self, header: &IpHeader, udp: &packet::UdpView<'_>) -> bool {
        let key = (header.src, header.dst, udp.fragment_id);
        if udp.later_fragment {
            return self.fragments.contains(&Some(key));
        }
        let Some(payload) = udp.payload else {
            return false;
        };
        if packet::message(payload).is_none() || !own_ports().contains(&udp.src_port) {
            return false;
        }
        // A nested WireGuard behind this node (a pod using the same port number) has a
        // source address that is not the host's.
        if !self.is_local(header.src) {
            return false;
        }
        if udp.first_fragment {
            self.fragments[self.next_fragment] = Some(key);
            self.next_fragment = (self.next_fragment + 1) % FRAGMENTS;
        }
        true
    }

    fn is_local(&mut self, addr: IpAddr) -> bool {
        let stale = self.local_read.is_none_or(|t| t.elapsed() >= ADDRESSES_TTL);
        if stale {
            self.local = crate::route::host_addresses().into_keys().collect();
            self.local_read = Some(Instant::now());
        }
        self.local.contains(&addr)
    }
}

fn unspecified() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([0, 0, 0, 0], 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ipv4_packet;

    fn udp(src_port: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&src_port.to_be_bytes());
        u.extend_from_slice(&51820u16.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    fn keepalive() -> Vec<u8> {
        let mut m = vec![0u8; 32];
        m[0] = 4;
        m
    }

    #[test]
    fn our_own_datagrams_are_recognised_with_their_fragments() {
        let mut s = Screen::new();
        port_bound(7);
        let mut p = ipv4_packet([127, 0, 0, 1], [10, 0, 0, 2], &udp(7, &keepalive()));
        p[9] = 17;
        let h = packet::ip_header(&p).unwrap();
        assert_eq!(s.check(&p, &h), Screened::Loop);
        // The same from a port no tunnel holds, or not WireGuard, or not from this host.
        let mut other = ipv4_packet([127, 0, 0, 1], [10, 0, 0, 2], &udp(8, &keepalive()));
        other[9] = 17;
        assert_eq!(s.check(&other, &h), Screened::Pass);
        let mut junk = ipv4_packet([127, 0, 0, 1], [10, 0, 0, 2], &udp(7, b"hello"));
        junk[9] = 17;
        assert_eq!(s.check(&junk, &h), Screened::Pass);
        let mut pod = ipv4_packet([10, 9, 9, 9], [10, 0, 0, 2], &udp(7, &keepalive()));
        pod[9] = 17;
        let hp = packet::ip_header(&pod).unwrap();
        assert_eq!(s.check(&pod, &hp), Screened::Pass);
        // A first fragment of ours (MF set, id 77), then a later one without a UDP header.
        let mut first = p.clone();
        first[4..6].copy_from_slice(&77u16.to_be_bytes());
        first[6] = 0x20;
        assert_eq!(s.check(&first, &h), Screened::Loop);
        let mut later = ipv4_packet([127, 0, 0, 1], [10, 0, 0, 2], &[0xaa; 40]);
        later[9] = 17;
        later[4..6].copy_from_slice(&77u16.to_be_bytes());
        later[7] = 185;
        assert_eq!(s.check(&later, &h), Screened::Loop);
        later[4..6].copy_from_slice(&78u16.to_be_bytes());
        assert_eq!(
            s.check(&later, &h),
            Screened::Pass,
            "another datagram's fragment"
        );
        port_released(7);
        assert_eq!(s.check(&p, &h), Screened::Pass, "port released");
    }

    #[test]
    fn oversized_packets_are_refused_with_an_error() {
        let mut s = Screen::new();
        let mut p = ipv4_packet([10, 0, 0, 1], [10, 0, 0, 2], &vec![0u8; MAX_INNER_PACKET]);
        p[6] = 0x40;
        let h = packet::ip_header(&p).unwrap();
        assert_eq!(s.check(&p, &h), Screened::TooBig);
        let errors = s.take_errors().expect("an ICMP error queued");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors.packet(0)[20..22], [3, 4]);
        let small = ipv4_packet([10, 0, 0, 1], [10, 0, 0, 2], &[0u8; 100]);
        assert_eq!(s.check(&small, &h), Screened::Pass);
    }
}

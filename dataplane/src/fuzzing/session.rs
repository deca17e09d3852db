//! The receive path with an established session: the fuzzer's bytes become inner
//! packets that the peer seals (or forged and tampered datagrams), and go through
//! `receive_datagram` into production-sized TUN batches. Checked: nothing reaches the TUN
//! that was not sealed by the peer, and everything that does has an inner source inside
//! the peer's allowed IPs.
//!
//! With `SWG_FUZZ_TUN=1` (as root) the batches are written to a real TUN device with
//! offload, in a network namespace of the fuzzing process's own, so tun-rs's GRO
//! coalescing runs on them as in production; otherwise they are checked and discarded.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;

use super::{OUR_KEY, PEER_KEYS, two_peer_table};
use crate::Batch;
use crate::batch::{BATCH_SIZE, SLOT_SIZE, TUN_HEADROOM};
use crate::inbound::{Outputs, receive_datagram};
use crate::io::TunIo;
use crate::packet;
use crate::peers::PeerTable;
use crate::ratelimit::HandshakeGuard;
use crate::stats::DeviceCounters;
use crate::tun::TunDevice;

/// Where the peer's datagrams come from.
const PEER_ADDR: &str = "192.0.2.22:51820";

struct Session {
    table: PeerTable,
    counters: DeviceCounters,
    out: Outputs,
    guard: HandshakeGuard,
    peer: Tunn,
    tun: Option<TunDevice>,
    scratch: Vec<u8>,
}

impl Session {
    fn new() -> Self {
        let ours = x25519::PublicKey::from(&x25519::StaticSecret::from(OUR_KEY));
        let peer = Tunn::new(
            x25519::StaticSecret::from(PEER_KEYS[0]),
            ours,
            None,
            None,
            1,
            None,
        );
        let mut s = Self {
            table: two_peer_table(),
            counters: DeviceCounters::default(),
            out: Outputs {
                to_tun: Batch::with_headroom(BATCH_SIZE, SLOT_SIZE, TUN_HEADROOM),
                to_net: Batch::packed(BATCH_SIZE, 1500),
                wrote_tun: false,
            },
            guard: HandshakeGuard::default(),
            peer,
            tun: std::env::var_os("SWG_FUZZ_TUN").map(|_| real_tun()),
            scratch: vec![0u8; SLOT_SIZE],
        };
        s.handshake();
        s
    }

    /// Initiation from the peer, our response back, the peer's keepalive confirming it.
    fn handshake(&mut self) {
        let mut buf = [0u8; 256];
        let TunnResult::WriteToNetwork(init) =
            self.peer.format_handshake_initiation(&mut buf, false)
        else {
            panic!("no initiation");
        };
        let init = init.to_vec();
        self.receive(&init);
        assert_eq!(self.out.to_net.len(), 1, "no handshake response");
        let response = self.out.to_net.packet(0).to_vec();
        self.out.to_net.clear();
        let ip = peer_addr().ip();
        let mut out = [0u8; 256];
        let TunnResult::WriteToNetwork(keepalive) =
            self.peer.decapsulate(Some(ip), &response, &mut out)
        else {
            panic!("the peer did not take our response");
        };
        let keepalive = keepalive.to_vec();
        self.receive(&keepalive);
        assert_eq!(self.counters.handshakes(), 1, "session not confirmed");
    }

    fn receive(&mut self, datagram: &[u8]) {
        if self.out.to_tun.is_full() || self.out.to_net.is_full() {
            self.flush();
        }
        let mut routes = crate::allowed_ips::LookupCache::default();
        let _ = receive_datagram(
            &self.table,
            datagram,
            peer_addr(),
            None,
            &mut self.out,
            &self.counters,
            1,
            &mut routes,
            &mut self.guard,
        );
    }

    /// Checks what reached the TUN batch, then writes it out (or drops it).
    fn flush(&mut self) {
        DELIVERED.fetch_add(self.out.to_tun.len() as u64, Relaxed);
        let allowed: ip_network::IpNetwork = "10.0.0.0/16".parse().expect("prefix");
        for i in 0..self.out.to_tun.len() {
            let p = self.out.to_tun.packet(i);
            let header = packet::ip_header(p).expect("an IP packet reached the TUN");
            assert!(
                allowed.contains(header.src) && matches!(header.src, IpAddr::V4(_)),
                "inner source {} outside the peer's allowed IPs",
                header.src
            );
        }
        if let Some(tun) = &self.tun {
            tun.send_batch(&mut self.out.to_tun);
        }
        self.out.to_tun.clear();
        self.out.to_net.clear();
    }

    /// The peer seals `inner`; `tamper` flips one bit of the result first.
    fn sealed(&mut self, inner: &[u8], tamper: Option<usize>) {
        let len = match self.peer.encapsulate(inner, &mut self.scratch) {
            TunnResult::WriteToNetwork(d) => d.len(),
            _ => return,
        };
        let mut datagram = self.scratch[..len].to_vec();
        let before = self.out.to_tun.len();
        if let Some(bit) = tamper {
            let at = 16 + (bit / 8) % (len - 16);
            datagram[at] ^= 1 << (bit % 8);
        }
        self.receive(&datagram);
        if tamper.is_some() {
            assert!(
                self.out.to_tun.len() <= before,
                "a tampered datagram was delivered"
            );
        }
    }

    fn forged(&mut self, datagram: &[u8]) {
        let before = self.out.to_tun.len();
        self.receive(datagram);
        assert!(
            self.out.to_tun.len() <= before,
            "a forged datagram was delivered"
        );
    }
}

/// Packets delivered to the TUN side so far (all inputs).
static DELIVERED: AtomicU64 = AtomicU64::new(0);

/// Packets delivered to the TUN side so far, for tests of the harness itself.
#[cfg(test)]
pub(super) fn delivered() -> u64 {
    DELIVERED.load(Relaxed)
}

fn peer_addr() -> SocketAddr {
    PEER_ADDR.parse().expect("address")
}

/// A TUN device with offload, in a network namespace of this process's own.
fn real_tun() -> TunDevice {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("SWG_FUZZ_TUN needs root (unshare)");
    let tun = TunDevice::create("swgfuzz0", 65_000, true).expect("TUN device");
    assert!(tun.offload(), "TUN offload refused");
    tun
}

/// Records `[op][len: u16 LE][bytes]`: op % 3 = 0 the peer seals the bytes as an inner
/// packet; 1 the bytes are sent as they are; 2 sealed, then one bit flipped (chosen by
/// the op byte's upper bits and the length).
pub fn inbound_session(data: &[u8]) {
    static SESSION: OnceLock<Mutex<Session>> = OnceLock::new();
    let mut s = SESSION
        .get_or_init(|| Mutex::new(Session::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut rest = data;
    while rest.len() >= 3 {
        let op = rest[0];
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let bytes = &rest[3..3 + len];
        rest = &rest[3 + len..];
        match op % 3 {
            0 => s.sealed(bytes, None),
            1 => s.forged(bytes),
            _ => s.sealed(bytes, Some(usize::from(op / 3) * 131 + len)),
        }
    }
    s.flush();
}

//! Entry points for the cargo-fuzz targets in `fuzz/`, kept here so the committed seed
//! corpus also runs as an ordinary test on stable Rust.
//!
//! - `uapi_request`, `inbound_datagrams` (this file): the UAPI parser; the receive path
//!   of an interface fed forged datagrams.
//! - `session.rs`: the receive path with an established session (decryption, the
//!   allowed-IPs source check, delivery into the TUN).
//! - `apply.rs`: sequences of UAPI requests applied to a running tunnel.
//! - `tun_split.rs`: TUN reads with offload: super-packets split into batch slots.

mod apply;
#[cfg(test)]
mod seeds;
mod session;
mod tun_split;

pub use apply::uapi_sequence;
pub use session::inbound_session;
pub use tun_split::tun_super_packet;

use std::net::SocketAddr;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;

use crate::config::{TunnelConfig, parse_prefix};
use crate::inbound::{Outputs, receive_datagram};
use crate::key::PrivateKey;
use crate::peers::PeerTable;
use crate::stats::DeviceCounters;
use crate::uapi::command::{Request, parse_request};
use crate::uapi::merge::merge_set;
use crate::uapi::text::format_set;
use crate::{Batch, PeerConfig};

/// Our fixed static key and two peers' keys, so seeds stay valid across runs.
const OUR_KEY: [u8; 32] = [0x11; 32];
const PEER_KEYS: [[u8; 32]; 2] = [[0x22; 32], [0x33; 32]];

/// The interface of every harness: our key, two peers with `10.<i>.0.0/16`.
fn two_peer_table() -> PeerTable {
    let mut config = TunnelConfig {
        private_key: Some(PrivateKey::from_bytes(OUR_KEY)),
        ..Default::default()
    };
    for (i, k) in PEER_KEYS.iter().enumerate() {
        let mut p = PeerConfig::new(PrivateKey::from_bytes(*k).public_key());
        p.allowed_ips
            .push(parse_prefix(&format!("10.{i}.0.0/16")).expect("valid prefix"));
        config.peers.push(p);
    }
    let mut n = 0;
    PeerTable::build(
        &PeerTable::default(),
        &TunnelConfig::default(),
        &config,
        &mut || {
            n += 1;
            n
        },
        &|_| false,
    )
}

/// UAPI parser: never panics; a parsed `set` formats and re-parses to itself, and
/// merging it into a configuration keeps the configuration valid.
pub fn uapi_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split('\n').take_while(|l| !l.is_empty()).collect();
    let Ok(req) = parse_request(&lines) else {
        return;
    };
    let Request::Set(set) = req else { return };
    let again = format_set(&set);
    let lines2: Vec<&str> = again.split('\n').take_while(|l| !l.is_empty()).collect();
    assert_eq!(
        parse_request(&lines2),
        Ok(Request::Set(set.clone())),
        "set did not round-trip"
    );
    let mut cfg = TunnelConfig::default();
    merge_set(&mut cfg, &set);
    cfg.validate()
        .expect("a merged set is always a valid configuration");
}

/// An interface with two configured peers, fed arbitrary datagrams.
pub struct InboundHarness {
    table: PeerTable,
    counters: DeviceCounters,
    out: Outputs,
    guard: crate::ratelimit::HandshakeGuard,
}

impl Default for InboundHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl InboundHarness {
    /// Builds the interface.
    pub fn new() -> Self {
        Self {
            table: two_peer_table(),
            counters: DeviceCounters::default(),
            out: Outputs {
                to_tun: Batch::with_capacity(4, 2048),
                to_net: Batch::with_capacity(8, 2048),
                wrote_tun: false,
            },
            guard: Default::default(),
        }
    }

    /// Feeds one datagram. Panics if anything unauthenticated reaches the TUN side.
    pub fn feed(&mut self, datagram: &[u8]) {
        let src: SocketAddr = "192.0.2.7:51820".parse().expect("valid address");
        self.out.to_tun.clear();
        self.out.to_net.clear();
        let mut routes = crate::allowed_ips::LookupCache::default();
        let _ = receive_datagram(
            &self.table,
            datagram,
            src,
            None,
            &mut self.out,
            &self.counters,
            1,
            &mut routes,
            &mut self.guard,
        );
        assert!(
            self.out.to_tun.is_empty(),
            "a forged datagram reached the TUN"
        );
    }
}

/// Inbound path: a sequence of datagrams (each prefixed by a 2-byte length) never panics
/// and never delivers anything to the TUN.
pub fn inbound_datagrams(data: &[u8]) {
    let mut h = InboundHarness::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        h.feed(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
}

/// Valid messages to seed the inbound corpus: a handshake initiation from each peer.
pub fn inbound_seeds() -> Vec<Vec<u8>> {
    let ours = x25519::PublicKey::from(&x25519::StaticSecret::from(OUR_KEY));
    PEER_KEYS
        .iter()
        .enumerate()
        .filter_map(|(i, k)| {
            let mut t = Tunn::new(
                x25519::StaticSecret::from(*k),
                ours,
                None,
                None,
                i as u32 + 7,
                None,
            );
            let mut buf = [0u8; 256];
            match t.format_handshake_initiation(&mut buf, false) {
                TunnResult::WriteToNetwork(p) => {
                    let mut framed = (p.len() as u16).to_le_bytes().to_vec();
                    framed.extend_from_slice(p);
                    Some(framed)
                }
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            out.push(std::fs::read(e.unwrap().path()).unwrap());
        }
        assert!(!out.is_empty(), "empty corpus {target}");
        out
    }

    #[test]
    fn uapi_corpus_runs_clean() {
        for input in corpus("uapi_request") {
            uapi_request(&input);
        }
    }

    #[test]
    fn inbound_corpus_runs_clean() {
        for input in corpus("inbound_datagram") {
            inbound_datagrams(&input);
        }
    }

    #[test]
    fn session_corpus_runs_clean() {
        for input in corpus("inbound_session") {
            inbound_session(&input);
        }
    }

    #[test]
    fn uapi_sequence_corpus_runs_clean() {
        for input in corpus("uapi_sequence") {
            uapi_sequence(&input);
        }
    }

    #[test]
    fn tun_super_packet_corpus_runs_clean() {
        for input in corpus("tun_super_packet") {
            tun_super_packet(&input);
        }
    }

    #[test]
    fn an_allowed_sealed_packet_is_delivered_and_a_spoofed_one_is_not() {
        let before = session::delivered();
        inbound_session(&seeds::session_record(
            0,
            &seeds::ipv4([10, 0, 0, 5], [10, 9, 0, 1]),
        ));
        assert_eq!(session::delivered(), before + 1);
        inbound_session(&seeds::session_record(
            0,
            &seeds::ipv4([10, 1, 0, 5], [10, 9, 0, 1]),
        ));
        assert_eq!(session::delivered(), before + 1, "another peer's source");
    }

    #[test]
    fn a_valid_handshake_is_answered_not_delivered() {
        let seeds = inbound_seeds();
        assert_eq!(seeds.len(), 2);
        let mut h = InboundHarness::new();
        h.feed(&seeds[0][2..]);
        assert_eq!(h.out.to_net.len(), 1, "handshake response expected");
        assert_eq!(h.out.to_net.packet(0).len(), 92);
    }

    /// A tool, not a test: regenerates the handshake seeds of the inbound corpus.
    #[test]
    #[ignore = "a tool: cargo test -p dataplane write_seed_corpus -- --ignored regenerates the seeds"]
    fn write_seed_corpus() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let write = |target: &str, name: &str, bytes: &[u8]| {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        };
        for (i, s) in inbound_seeds().iter().enumerate() {
            write("inbound_datagram", &format!("handshake-init-{i}"), s);
        }
        for (name, bytes) in seeds::session() {
            write("inbound_session", name, &bytes);
        }
        for (name, bytes) in seeds::uapi_sequences() {
            write("uapi_sequence", name, bytes.as_bytes());
        }
        for (name, bytes) in seeds::super_packets() {
            write("tun_super_packet", name, &bytes);
        }
    }
}

//! The UDP → TUN path.
//!
//! ```text
//! UDP ──recv_batch──► classify (type, exact length)
//!        handshake initiation: interface MACs/cookie check, decrypt the sender's static key
//!        other messages:       peer by receiver index (index >> 8)
//!     ─► Tunn::decapsulate ─► data: inner source must be in the sender's allowed IPs ─► TUN
//!                           └► handshake reply / queued packets ──────────────────────► UDP
//! ```
//! Every authenticated message moves the peer's endpoint to its source (roaming).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};

use crate::allowed_ips::LookupCache;
use crate::batch::{BATCH_SIZE, Batch, SLOT_SIZE, TUN_HEADROOM};
use crate::datapath::DataPath;
use crate::io::{TunIo, UdpIo};
use crate::key::Key;
use crate::outbound::{self, Handoff};
use crate::packet::{self, MSG_DATA, MSG_HANDSHAKE_INIT, MSG_HANDSHAKE_RESPONSE, Message};
use crate::peers::PeerTable;
use crate::ratelimit::{HandshakeGuard, Verdict};
use crate::stats::{DeviceCounters, DropReason};
use crate::wake::{Token, Waiter};

const STOP: Token = Token::new(0);
const SOCKET_CHANGED: Token = Token::new(1);
const GIVEN_BACK: Token = Token::new(2);
const SOCKET: Token = Token::new(3);
const TUN: Token = Token::new(4);

/// The inbound thread: returns when `data.stop` is set. Follows the socket through
/// rebinds (`data.socket_changed` rings after each). While it reads the TUN (see
/// `handoff.rs`) it waits for that too.
pub(crate) fn run<T: TunIo, S: UdpIo>(
    data: &DataPath<S>,
    handoff: &Handoff,
    tun: &T,
) -> io::Result<()> {
    let mut input = Batch::new();
    let mut out = Outputs {
        to_tun: Batch::with_headroom(BATCH_SIZE, SLOT_SIZE, TUN_HEADROOM),
        to_net: Batch::packed(BATCH_SIZE, 1500),
        wrote_tun: false,
    };
    let mut socket = data.socket();
    let mut waiter = Waiter::new()?;
    let mut guard = HandshakeGuard::default();
    let mut drained = true;
    loop {
        let (mut udp_ready, mut tun_ready) = (!drained, false);
        if drained {
            let reads_tun = handoff.inbound_reads();
            let ready = {
                let mut fds = [
                    (STOP, data.stop.fd()),
                    (SOCKET_CHANGED, data.socket_changed.fd()),
                    (GIVEN_BACK, handoff.given_back_fd()),
                    (STOP, data.stop.fd()),
                    (STOP, data.stop.fd()),
                ];
                let mut n = 3;
                if let Some(s) = &socket {
                    fds[n] = (SOCKET, s.readiness());
                    n += 1;
                }
                if reads_tun {
                    fds[n] = (TUN, tun.readiness());
                    n += 1;
                }
                waiter.readable(&fds[..n], None)?
            };
            if ready.has(GIVEN_BACK) {
                // Looked at again on the next wait, through `inbound_reads`.
                handoff.drain_given_back();
            }
            if ready.has(SOCKET_CHANGED) {
                // Drain before looking: a later change rings again.
                data.socket_changed.drain();
                socket = data.socket();
                // The new socket may have the old one's number.
                waiter.reset();
            }
            udp_ready = ready.has(SOCKET);
            tun_ready = ready.has(TUN);
        }
        if data.stop.is_set() {
            return Ok(());
        }
        if tun_ready {
            handoff.read_as_inbound(|buffers| outbound::pump(data, tun, buffers))?;
        }
        let Some(socket) = &socket else {
            drained = true;
            continue;
        };
        if !udp_ready {
            continue;
        }
        input.clear();
        drained = match socket.recv_batch(&mut input) {
            Ok(drained) => drained,
            Err(e) => {
                tracing::debug!(device = %data.name, error = %e, "UDP receive failed");
                std::thread::sleep(Duration::from_millis(10));
                true
            }
        };
        if input.is_empty() {
            continue;
        }
        let table = data.table();
        let mut routes = LookupCache::default();
        let now_ms = data.clock.coarse_ms();
        data.counters
            .received(input.datagrams().count() as u64, input.bytes());
        for (datagram, src, seen_at) in input.received() {
            if out.to_tun.is_full() || out.to_net.is_full() {
                out.flush(tun, &**socket, &table, &data.counters);
            }
            let mut more = receive_datagram(
                &table,
                datagram,
                src,
                seen_at,
                &mut out,
                &data.counters,
                now_ms,
                &mut routes,
                &mut guard,
            );
            while let Some(pos) = more {
                out.flush(tun, &**socket, &table, &data.counters);
                let peer = &table.peers[pos];
                let path = peer.path();
                let dst = path.endpoint.unwrap_or(src);
                more = drain_into(&mut peer.tunn(), pos, dst, path.source, &mut out.to_net)
                    .then_some(pos);
            }
        }
        out.flush(tun, &**socket, &table, &data.counters);
        if std::mem::take(&mut out.wrote_tun)
            && let Err(e) = handoff.reply_inline(|buffers| outbound::pump(data, tun, buffers))
        {
            // Whoever reads the TUN sees the same error and ends the tunnel.
            tracing::debug!(device = %data.name, error = %e, "TUN read failed");
        }
    }
}

/// Where decapsulation results go.
pub(crate) struct Outputs {
    pub(crate) to_tun: Batch,
    pub(crate) to_net: Batch,
    /// Set when a flush wrote to the TUN.
    pub(crate) wrote_tun: bool,
}

impl Outputs {
    fn flush<T: TunIo, U: UdpIo>(
        &mut self,
        tun: &T,
        udp: &U,
        table: &PeerTable,
        counters: &DeviceCounters,
    ) {
        if !self.to_tun.is_empty() {
            let failed = tun.send_batch(&mut self.to_tun);
            counters.drop_packets(DropReason::SendError, failed as u64);
            self.to_tun.clear();
            self.wrote_tun = true;
        }
        if !self.to_net.is_empty() {
            udp.send_batch(&mut self.to_net);
            table.count_sent(&self.to_net, counters);
            self.to_net.clear();
        }
    }
}

/// Receives one datagram from `src`: authenticates it, delivers its packet or answers it.
/// Needs one free slot in each output batch. Returns the peer's position when its queue
/// of held packets did not fit into `to_net`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn receive_datagram<'t>(
    table: &'t PeerTable,
    datagram: &[u8],
    src: SocketAddr,
    seen_at: Option<(IpAddr, u32)>,
    out: &mut Outputs,
    counters: &DeviceCounters,
    now_ms: u64,
    routes: &mut LookupCache<'t, usize>,
    guard: &mut HandshakeGuard,
) -> Option<usize> {
    let Some(identity) = &table.identity else {
        counters.drop_packets(DropReason::NoKey, 1);
        return None;
    };
    let Some(message) = packet::message(datagram) else {
        counters.drop_packets(DropReason::Malformed, 1);
        return None;
    };
    let (pos, peer, kind, receiver) = match message {
        Message::HandshakeInit => {
            let now = Instant::now();
            let under_load = guard.count_initiation(now);
            // A source that already used up its share is turned away before any hashing.
            if under_load && guard.exhausted(src.ip(), now) {
                counters.drop_packets(DropReason::RateLimited, 1);
                return None;
            }
            let slot = out.to_net.next_slot()?;
            // The MACs first (a few hashes): under load, a valid cookie MAC is required
            // and a missing one is answered with a cookie reply instead of any DH.
            let init = match identity
                .rate_limiter
                .verify_packet(Some(src.ip()), datagram, slot)
            {
                Ok(Packet::HandshakeInit(init)) => init,
                Err(TunnResult::WriteToNetwork(cookie)) => {
                    let n = cookie.len();
                    out.to_net.commit(n, src, 0);
                    return None;
                }
                _ => {
                    counters.drop_packets(DropReason::Rejected, 1);
                    return None;
                }
            };
            // Then the source's share, before the Diffie-Hellman work.
            if under_load && guard.allow(src.ip(), now) == Verdict::Limited {
                counters.drop_packets(DropReason::RateLimited, 1);
                return None;
            }
            let key = match parse_handshake_anon(&identity.secret, &identity.public, &init) {
                Ok(half) => Key(half.peer_static_public),
                Err(_) => {
                    counters.drop_packets(DropReason::Rejected, 1);
                    return None;
                }
            };
            let Some(peer) = table.by_key(&key) else {
                counters.drop_packets(DropReason::UnknownPeer, 1);
                return None;
            };
            let (pos, _) = table.by_receiver(peer.index << 8)?;
            (pos, peer, MSG_HANDSHAKE_INIT, 0)
        }
        Message::ToIndex { kind, receiver } => match table.by_receiver(receiver) {
            Some((pos, peer)) => (pos, peer, kind, receiver),
            None => {
                counters.drop_packets(DropReason::UnknownPeer, 1);
                return None;
            }
        },
    };

    let mut tunn = peer.tunn();
    if kind == MSG_DATA {
        let slot = out.to_tun.next_slot()?;
        let delivered = match tunn.decapsulate(Some(src.ip()), datagram, slot) {
            TunnResult::WriteToTunnelV4(p, ip) => Some((p.len(), IpAddr::V4(ip))),
            TunnResult::WriteToTunnelV6(p, ip) => Some((p.len(), IpAddr::V6(ip))),
            // A keepalive: authenticated, nothing to deliver.
            TunnResult::Done => None,
            TunnResult::WriteToNetwork(_) | TunnResult::Err(_) => {
                counters.drop_packets(DropReason::Rejected, 1);
                return None;
            }
        };
        peer.counters.received(datagram.len());
        peer.roam(src, seen_at);
        peer.timers.on_authenticated_packet_received();
        if peer.timers.on_data_received(receiver) {
            // The first data in the session we answered for: the handshake is confirmed.
            counters.handshake_completed();
            peer.timers.on_handshake_complete();
        }
        if let Some((len, inner_src)) = delivered {
            // boringtun trusts the length field: a total length below the header's own
            // size leaves a truncated packet (the kernel drops it as dishonest too).
            let header = if inner_src.is_ipv4() { 20 } else { 40 };
            if len < header {
                counters.drop_packets(DropReason::Malformed, 1);
            // Cryptokey routing, inbound: the inner source must route back to this peer.
            } else if table.routes.lookup_cached(inner_src, routes) == Some(&pos) {
                out.to_tun.commit(len, src, 0);
            } else {
                counters.drop_packets(DropReason::SourceNotAllowed, 1);
            }
        }
    } else {
        let slot = out.to_net.next_slot()?;
        match tunn.decapsulate(Some(src.ip()), datagram, slot) {
            TunnResult::WriteToNetwork(reply) => {
                let (n, reply_kind) = (reply.len(), reply.first().copied());
                let sender_index = reply
                    .get(4..8)
                    .map(|b| u32::from_le_bytes(b.try_into().expect("four bytes")));
                // Answered from the address the message was sent to.
                out.to_net
                    .commit_path(n, src, seen_at.map(|(ip, _)| ip), 0, pos as u32);
                // Only a handshake message answered authenticates the sender; a cookie
                // reply (the peer's Tunn under load) proves nothing about `src`.
                match (kind, reply_kind) {
                    (MSG_HANDSHAKE_INIT, Some(MSG_HANDSHAKE_RESPONSE)) => {
                        // Complete once the initiator uses the new session.
                        if let Some(index) = sender_index {
                            peer.timers.on_response_sent(index);
                        }
                    }
                    (MSG_HANDSHAKE_RESPONSE, Some(MSG_DATA)) => {
                        counters.handshake_completed();
                        peer.timers.on_handshake_complete();
                    }
                    _ => return None,
                }
                peer.counters.received(datagram.len());
                peer.roam(src, seen_at);
                peer.timers.on_authenticated_packet_received();
            }
            // A cookie reply was taken in; no endpoint change.
            TunnResult::Done => return None,
            _ => {
                counters.drop_packets(DropReason::Rejected, 1);
                return None;
            }
        }
    }
    peer.timers.on_authenticated_packet_traversal(now_ms);
    // A new or newly current session may release packets queued during the handshake.
    let from = peer.path().source;
    drain_into(&mut tunn, pos, src, from, &mut out.to_net).then_some(pos)
}

/// Moves packets queued in `tunn` (the peer at `pos`) into `to_net` for `dst`, from our
/// address `from`; true if it stopped because `to_net` is full (call again after
/// flushing).
fn drain_into(
    tunn: &mut Tunn,
    pos: usize,
    dst: SocketAddr,
    from: Option<IpAddr>,
    to_net: &mut Batch,
) -> bool {
    while let Some(slot) = to_net.next_slot() {
        match tunn.decapsulate(None, &[], slot) {
            TunnResult::WriteToNetwork(p) => {
                let n = p.len();
                to_net.commit_path(n, dst, from, 0, pos as u32);
            }
            _ => return false,
        }
    }
    true
}

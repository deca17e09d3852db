//! The tick: every 250 ms (or at once when `apply` asks), drive each peer's boringtun
//! timers (handshake retransmission, rekey, passive keepalive, expiry) and send the
//! persistent keepalives that `timers.rs` finds due.
//!
//! It runs as a tokio task and never blocks its worker: its sends do not wait for room in
//! the socket buffer (what does not fit is counted as dropped; boringtun retransmits a
//! lost handshake initiation, and the next keepalive follows at its interval).
//!
//! It also checks the sticky sources the inbound path learns (`Path` in `peers.rs`), as
//! the kernel does on every send: we answer a peer from the address it wrote to while the
//! route back leaves through the interface its packet arrived on; otherwise, and when
//! that address is the kernel's own choice anyway, the kernel picks.

use std::sync::Arc;
use std::time::Duration;

use boringtun::noise::TunnResult;
use boringtun::noise::errors::WireGuardError;

use crate::batch::{BATCH_SIZE, Batch};
use crate::datapath::DataPath;
use crate::io::UdpIo;
use crate::peers::{Path, PeerTable};

const TICK: Duration = Duration::from_millis(250);

/// Sticky sources checked at most per tick (each check is a few system calls).
const SOURCE_CHECKS: usize = 64;

/// How often a sticky source in use is checked against the route again.
const SOURCE_RECHECK_MS: u64 = 10_000;

/// Runs until the task is aborted (the tunnel is dropped).
pub(crate) async fn run<S: UdpIo>(data: Arc<DataPath<S>>) {
    // Handshake and keepalive messages only (at most 148 bytes): a packed batch of small
    // slots, not 128 full-size ones.
    let mut out = Batch::packed_with(BATCH_SIZE, BATCH_SIZE * 256, 256);
    let mut last_reset = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = data.tick_now.notified() => {}
        }
        // Stamps from the packet paths are copies of this value, so idle times below are
        // whole ticks: a keepalive is never more than one tick early or late.
        let now_ms = data.clock.tick();
        let table = data.table();
        if last_reset.elapsed() >= Duration::from_secs(1) {
            last_reset = tokio::time::Instant::now();
            if let Some(identity) = &table.identity {
                identity.rate_limiter.reset_count();
            }
        }
        let Some(socket) = data.socket() else {
            continue;
        };
        out.clear();
        let mut checks = 0;
        for (pos, peer) in table.peers.iter().enumerate() {
            let path = peer.path();
            if path.source.is_some()
                && (path.unchecked || now_ms >= path.recheck_ms)
                && checks < SOURCE_CHECKS
            {
                checks += 1;
                let keep = keep_source(&*socket, &path);
                if path.unchecked {
                    tracing::debug!(device = %data.name, peer = %peer.key, source = ?path.source, seen_at = ?path.seen_at, keep, "sticky source checked");
                }
                peer.source_checked(path, keep, now_ms + SOURCE_RECHECK_MS);
            }
            if out.capacity() - out.len() < 3 {
                flush(&data, &table, &*socket, &mut out);
            }
            let path = peer.path();
            let endpoint = path.endpoint;
            let mut tunn = peer.tunn();
            let mut sent = false;
            if peer.timers.handshake_requested()
                && let (Some(ep), Some(slot)) = (endpoint, out.next_slot())
                && let TunnResult::WriteToNetwork(p) = tunn.format_handshake_initiation(slot, false)
            {
                let n = p.len();
                out.commit_path(n, ep, path.source, 0, pos as u32);
                sent = true;
            }
            if let Some(slot) = out.next_slot() {
                match tunn.update_timers(slot) {
                    TunnResult::WriteToNetwork(p) => {
                        let n = p.len();
                        if let Some(ep) = endpoint {
                            out.commit_path(n, ep, path.source, 0, pos as u32);
                            sent = true;
                        }
                    }
                    TunnResult::Err(WireGuardError::ConnectionExpired) => {
                        peer.timers.on_handshake_given_up();
                    }
                    TunnResult::Done => {}
                    TunnResult::Err(e) => {
                        tracing::debug!(device = %data.name, peer = %peer.key, error = ?e, "timer")
                    }
                    _ => {}
                }
            }
            if peer.timers.persistent_keepalive_due(now_ms, sent)
                && let (Some(ep), Some(slot)) = (endpoint, out.next_slot())
                && let TunnResult::WriteToNetwork(p) = tunn.encapsulate(&[], slot)
            {
                let n = p.len();
                out.commit_path(n, ep, path.source, 0, pos as u32);
                sent = true;
            }
            if sent {
                peer.timers.on_authenticated_packet_traversal(now_ms);
            }
        }
        flush(&data, &table, &*socket, &mut out);
    }
}

/// Whether to keep answering from the address the peer wrote to: only when it is not the
/// kernel's choice anyway and the route back leaves through the interface the peer's
/// packet arrived on (the kernel's rule for `src_if4` / `src_if6`).
fn keep_source<S: UdpIo>(socket: &S, path: &Path) -> bool {
    let (Some(endpoint), Some((ours, arrived_on))) = (path.endpoint, path.seen_at) else {
        return false;
    };
    match socket.route_source(endpoint) {
        Some((kernel, _)) if kernel == ours => false,
        Some((_, interface)) => interface == arrived_on,
        None => false,
    }
}

/// Sends what the tick produced without waiting for room in the socket buffer.
fn flush<S: UdpIo>(data: &DataPath<S>, table: &PeerTable, socket: &S, out: &mut Batch) {
    if !out.is_empty() {
        socket.try_send_batch(out);
        table.count_sent(out, &data.counters);
        out.clear();
    }
}

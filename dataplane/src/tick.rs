//! The tick: every 250 ms (or at once when `apply` asks), drive each peer's boringtun
//! timers (handshake retransmission, rekey, passive keepalive, expiry) and send the
//! persistent keepalives that `timers.rs` finds due.
//!
//! It runs as a tokio task and never blocks its worker: its sends do not wait for room in
//! the socket buffer (what does not fit is counted as dropped; boringtun retransmits a
//! lost handshake initiation, and the next keepalive follows at its interval).

use std::sync::Arc;
use std::time::Duration;

use boringtun::noise::TunnResult;
use boringtun::noise::errors::WireGuardError;

use crate::batch::Batch;
use crate::datapath::DataPath;
use crate::io::UdpIo;
use crate::peers::PeerTable;

const TICK: Duration = Duration::from_millis(250);

/// Runs until the task is aborted (the tunnel is dropped).
pub(crate) async fn run<S: UdpIo>(data: Arc<DataPath<S>>) {
    let mut out = Batch::new();
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
        for (pos, peer) in table.peers.iter().enumerate() {
            if out.capacity() - out.len() < 2 {
                flush(&data, &table, &*socket, &mut out);
            }
            let endpoint = peer.endpoint();
            let mut tunn = peer.tunn();
            let mut sent = false;
            if let Some(slot) = out.next_slot() {
                match tunn.update_timers(slot) {
                    TunnResult::WriteToNetwork(p) => {
                        let n = p.len();
                        if let Some(ep) = endpoint {
                            out.commit_tagged(n, ep, 0, pos as u32);
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
                out.commit_tagged(n, ep, 0, pos as u32);
                sent = true;
            }
            if sent {
                peer.timers.on_authenticated_packet_traversal(now_ms);
            }
        }
        flush(&data, &table, &*socket, &mut out);
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

//! The timer tick: every 250 ms (or at once when `apply` asks), drive each peer's
//! handshake, rekey, keepalive and expiry timers, and send persistent keepalives.
//!
//! Persistent keepalive is kept here rather than inside `Tunn` so that changing the
//! interval never resets a peer's sessions: a keepalive goes out when nothing was sent to
//! the peer for the interval, and once right away when the interval is switched on.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use boringtun::noise::TunnResult;
use boringtun::noise::errors::WireGuardError;

use crate::batch::Batch;
use crate::io::{UdpBinder, UdpIo};
use crate::tunnel::Shared;

const TICK: Duration = Duration::from_millis(250);

pub(crate) async fn run<B: UdpBinder>(shared: Arc<Shared<B>>) -> io::Result<()> {
    let mut out = Batch::new();
    let mut last_reset = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shared.kick.notified() => {}
        }
        // Stamps from the packet paths are copies of this value, so idle times below are
        // whole ticks: a keepalive is never more than one tick early or late.
        let now_ms = shared.clock.tick();
        let table = shared.table();
        if last_reset.elapsed() >= Duration::from_secs(1) {
            last_reset = tokio::time::Instant::now();
            if let Some(identity) = &table.identity {
                identity.rate_limiter.reset_count();
            }
        }
        let Some(socket) = shared.socket() else {
            continue;
        };
        out.clear();
        for peer in &table.peers {
            if out.capacity() - out.len() < 2 {
                flush(&shared, &*socket, &mut out);
            }
            let endpoint = peer.endpoint();
            let mut tunn = peer.tunn();
            let mut sent = false;
            if let Some(slot) = out.next_slot() {
                match tunn.update_timers(slot) {
                    TunnResult::WriteToNetwork(p) => {
                        let n = p.len();
                        if let Some(ep) = endpoint {
                            out.commit(n, ep, 0);
                            peer.counters.sent(n);
                            sent = true;
                        }
                    }
                    TunnResult::Err(WireGuardError::ConnectionExpired) | TunnResult::Done => {}
                    TunnResult::Err(e) => {
                        tracing::debug!(device = %shared.name, peer = %peer.key, error = ?e, "timer")
                    }
                    _ => {}
                }
            }
            let interval = u64::from(peer.keepalive());
            let due = peer.keepalive_due.swap(false, Relaxed);
            let idle = Duration::from_millis(now_ms.saturating_sub(peer.last_sent_ms().max(1)));
            let keepalive_due = interval > 0
                && !sent
                && (due || peer.last_sent_ms() == 0 || idle >= Duration::from_secs(interval));
            if keepalive_due
                && let (Some(ep), Some(slot)) = (endpoint, out.next_slot())
                && let TunnResult::WriteToNetwork(p) = tunn.encapsulate(&[], slot)
            {
                let n = p.len();
                out.commit(n, ep, 0);
                peer.counters.sent(n);
                sent = true;
            }
            if sent {
                peer.mark_sent(now_ms);
            }
        }
        flush(&shared, &*socket, &mut out);
    }
}

/// A plain (bounded) blocking send from the timer task: its batches are a handful of
/// handshake and keepalive messages, and a full socket buffer is rare.
fn flush<B: UdpBinder>(shared: &Shared<B>, socket: &B::Socket, out: &mut Batch) {
    if !out.is_empty() {
        let failed = socket.send_batch(out);
        shared.counters.sent_batch(out, failed);
        out.clear();
    }
}

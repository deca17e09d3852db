//! The TUN → UDP path.
//!
//! ```text
//! TUN ──recv_batch──► route each packet by destination (allowed IPs, longest prefix)
//!                     ─► group by peer (stable: one flow keeps its order)
//!                     ─► per peer: lock Tunn once, encapsulate the group
//!                     ─► send_batch ──► UDP
//! ```
//! A packet for a peer without a session is queued inside its `Tunn`, which emits a
//! handshake initiation instead; the queue is flushed when the handshake completes.

use std::io;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use boringtun::noise::TunnResult;

use crate::allowed_ips::LookupCache;
use crate::batch::{BATCH_SIZE, Batch};
use crate::io::{TunIo, UdpBinder, UdpIo};
use crate::packet;
use crate::peers::PeerTable;
use crate::stats::{DeviceCounters, DropReason};
use crate::tunnel::Shared;
use crate::wake;

/// The TUN → UDP path's buffers, held by whichever thread is sealing: the thread that
/// owns the TUN (see [`run`]), or the inbound thread picking up a reply the inner stack
/// produced inline.
pub(crate) struct Sealer {
    input: Batch,
    /// Sealed datagrams back to back, so a peer's run goes out as one GSO send.
    output: Batch,
    order: Vec<(usize, usize)>,
}

impl Sealer {
    pub(crate) fn new() -> Self {
        let input = Batch::new();
        let order = Vec::with_capacity(input.capacity());
        Self {
            input,
            output: Batch::packed(BATCH_SIZE, 1500),
            order,
        }
    }
}

/// How long the TUN stays with the outbound thread after it last had packets.
const KEEP_TUN: Duration = Duration::from_millis(4);

/// A pump reading at least this many packets means outbound load: the inbound thread
/// hands the TUN to the outbound thread.
pub(crate) const HANDOFF_PACKETS: usize = 8;

/// The outbound thread: returns when `shared.stop` is set, or with the error that ended
/// the TUN device.
///
/// While traffic is light the inbound thread reads the TUN too, so a request and its
/// reply are handled by one warm thread and nobody else is woken. Under outbound load it
/// hands the TUN over (`tx_owns_tun`, `tx_bell`); this thread keeps it until it has been
/// quiet for [`KEEP_TUN`], then hands it back (`rx_bell`). Only the owner changes the
/// flag, and the TUN is level-triggered, so no packet waits through a handover.
pub(crate) fn run<T: TunIo, B: UdpBinder>(shared: &Shared<B>, tun: &T) -> io::Result<()> {
    // One wait set while idle, one while owning the TUN: no re-registration on handover.
    let (mut idle, mut owning) = (wake::Waiter::new()?, wake::Waiter::new()?);
    loop {
        idle.readable(&[shared.tx_bell.fd(), shared.stop.fd()], None)?;
        shared.tx_bell.drain();
        if shared.stop.is_set() {
            return Ok(());
        }
        if !shared.tx_owns_tun.load(SeqCst) {
            continue;
        }
        let mut drained = false;
        loop {
            if drained {
                let ready =
                    owning.readable(&[tun.readiness(), shared.stop.fd()], Some(KEEP_TUN))?;
                if ready == 0 {
                    shared.tx_owns_tun.store(false, SeqCst);
                    shared.rx_bell.ring();
                    break;
                }
            }
            if shared.stop.is_set() {
                return Ok(());
            }
            drained = pump(shared, tun, &mut shared.sealer())?.drained;
        }
    }
}

/// What one [`pump`] did.
pub(crate) struct Pumped {
    /// The TUN had nothing more to read.
    pub(crate) drained: bool,
    /// Packets read.
    pub(crate) packets: usize,
}

/// Reads one batch from the TUN (until it is drained or the batch is full), seals it and
/// sends it.
pub(crate) fn pump<T: TunIo, B: UdpBinder>(
    shared: &Shared<B>,
    tun: &T,
    sealer: &mut Sealer,
) -> io::Result<Pumped> {
    let Sealer {
        input,
        output,
        order,
    } = sealer;
    input.clear();
    let drained = tun.recv_batch(input)?;
    let done = Pumped {
        drained,
        packets: input.len(),
    };
    if input.is_empty() {
        return Ok(done);
    }
    let table = shared.table();
    let Some(socket) = shared.socket() else {
        shared
            .counters
            .drop_packets(DropReason::SendError, input.len() as u64);
        return Ok(done);
    };
    route(&table, input, order, &shared.counters);
    output.clear();
    encapsulate(
        &table,
        input,
        order,
        output,
        &shared.counters,
        shared.clock.coarse_ms(),
    );
    if !output.is_empty() {
        let failed = socket.send_batch(output);
        shared.counters.sent_batch(output, failed);
    }
    Ok(done)
}

/// Fills `order` with `(peer position, packet index)` for every routable packet of
/// `input`, sorted by peer (stable), and counts the rest as dropped.
pub(crate) fn route(
    table: &PeerTable,
    input: &Batch,
    order: &mut Vec<(usize, usize)>,
    counters: &DeviceCounters,
) {
    order.clear();
    let mut cache = LookupCache::default();
    for i in 0..input.len() {
        let Some(header) = packet::ip_header(input.packet(i)) else {
            counters.drop_packets(DropReason::NotIp, 1);
            continue;
        };
        match table.routes.lookup_cached(header.dst, &mut cache) {
            Some(&pos) => order.push((pos, i)),
            None => counters.drop_packets(DropReason::NoRoute, 1),
        }
    }
    order.sort_by_key(|&(pos, _)| pos);
}

/// Encapsulates routed packets peer by peer into `output` (one datagram at most per
/// packet), taking each peer's lock once.
pub(crate) fn encapsulate(
    table: &PeerTable,
    input: &Batch,
    order: &[(usize, usize)],
    output: &mut Batch,
    counters: &DeviceCounters,
    now_ms: u64,
) {
    for group in order.chunk_by(|a, b| a.0 == b.0) {
        let peer = &table.peers[group[0].0];
        let Some(endpoint) = peer.endpoint() else {
            counters.drop_packets(DropReason::NoEndpoint, group.len() as u64);
            continue;
        };
        let mut tunn = peer.tunn();
        let mut sent = false;
        for &(_, i) in group {
            let Some(slot) = output.next_slot() else {
                counters.drop_packets(DropReason::SendError, 1);
                continue;
            };
            match tunn.encapsulate(input.packet(i), slot) {
                TunnResult::WriteToNetwork(datagram) => {
                    let n = datagram.len();
                    output.commit(n, endpoint, 0);
                    peer.counters.sent(n);
                    sent = true;
                }
                TunnResult::Err(e) => {
                    tracing::debug!(peer = %peer.key, error = ?e, "encapsulate failed");
                    counters.drop_packets(DropReason::Rejected, 1);
                }
                _ => {}
            }
        }
        if sent {
            peer.mark_sent(now_ms);
        }
    }
}

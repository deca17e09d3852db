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

use boringtun::noise::TunnResult;

use crate::allowed_ips::LookupCache;
use crate::batch::{BATCH_SIZE, Batch};
use crate::io::{TunIo, UdpBinder, UdpIo};
use crate::packet;
use crate::peers::PeerTable;
use crate::stats::{DeviceCounters, DropReason};
use crate::tunnel::Shared;
use crate::wake;

/// The TUN → UDP path's buffers, owned by whichever thread is sealing: the outbound
/// thread, or the inbound thread picking up a reply the inner stack produced inline.
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

/// The outbound thread: returns when `shared.stop` is set, or with the error that ended
/// the TUN device.
pub(crate) fn run<T: TunIo, B: UdpBinder>(shared: &Shared<B>, tun: &T) -> io::Result<()> {
    let mut drained = true;
    loop {
        if drained {
            wake::readable(&[tun.readiness(), shared.stop.fd()], None)?;
        }
        if shared.stop.is_set() {
            return Ok(());
        }
        drained = pump(shared, tun, &mut shared.sealer())?;
    }
}

/// Reads one batch from the TUN (until it is drained or the batch is full), seals it and
/// sends it; returns whether the TUN was drained.
pub(crate) fn pump<T: TunIo, B: UdpBinder>(
    shared: &Shared<B>,
    tun: &T,
    sealer: &mut Sealer,
) -> io::Result<bool> {
    let Sealer {
        input,
        output,
        order,
    } = sealer;
    input.clear();
    let drained = tun.recv_batch(input)?;
    if input.is_empty() {
        return Ok(drained);
    }
    let table = shared.table();
    let Some(socket) = shared.socket() else {
        shared
            .counters
            .drop_packets(DropReason::SendError, input.len() as u64);
        return Ok(drained);
    };
    route(&table, input, order, &shared.counters);
    output.clear();
    encapsulate(
        &table,
        input,
        order,
        output,
        &shared.counters,
        shared.clock.now_ms(),
    );
    if !output.is_empty() {
        let failed = socket.send_batch(output);
        shared.counters.sent_batch(output, failed);
    }
    Ok(drained)
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

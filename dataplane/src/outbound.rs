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
use crate::datapath::DataPath;
use crate::handoff::{KEEP_TUN, Load, TunHandoff};
use crate::io::{TunIo, UdpIo};
use crate::packet;
use crate::peers::PeerTable;
use crate::stats::{DeviceCounters, DropReason};
use crate::unroutable::{Screen, Screened};
use crate::wake::{Token, Waiter};

/// The TUN → UDP path's buffers, held by whichever thread is sealing (see `handoff.rs`).
pub(crate) struct OutboundBuffers {
    input: Batch,
    /// Sealed datagrams back to back, so a peer's run goes out as one GSO send.
    output: Batch,
    order: Vec<(usize, usize)>,
    screen: Screen,
}

impl OutboundBuffers {
    pub(crate) fn new() -> Self {
        let input = Batch::new();
        let order = Vec::with_capacity(input.capacity());
        Self {
            input,
            output: Batch::packed(BATCH_SIZE, 1500),
            order,
            screen: Screen::new(),
        }
    }
}

/// The handoff between the packet threads, with the outbound buffers it guards.
pub(crate) type Handoff = TunHandoff<OutboundBuffers>;

const STOP: Token = Token::new(0);
const HANDED_OVER: Token = Token::new(1);
const TUN: Token = Token::new(2);

/// The outbound thread: reads and seals while it has the TUN (see `handoff.rs`). Returns
/// when `data.stop` is set, or with the error that ended the TUN device.
pub(crate) fn run<T: TunIo, S: UdpIo>(
    data: &DataPath<S>,
    handoff: &Handoff,
    tun: &T,
) -> io::Result<()> {
    // One wait set while idle, one while reading the TUN: no re-registration on handover.
    let (mut idle, mut reading) = (Waiter::new()?, Waiter::new()?);
    loop {
        idle.readable(
            &[
                (STOP, data.stop.fd()),
                (HANDED_OVER, handoff.handed_over_fd()),
            ],
            None,
        )?;
        if data.stop.is_set() {
            return Ok(());
        }
        if !handoff.take() {
            continue;
        }
        let mut drained = false;
        loop {
            if drained {
                let ready = reading.readable(
                    &[(TUN, tun.readiness()), (STOP, data.stop.fd())],
                    Some(KEEP_TUN),
                )?;
                if ready.is_empty() {
                    handoff.give_back();
                    break;
                }
            }
            if data.stop.is_set() {
                return Ok(());
            }
            drained = handoff
                .read_as_outbound(|buffers| pump(data, tun, buffers))?
                .drained;
        }
    }
}

/// Reads one batch from the TUN (until it is drained or the batch is full), seals it and
/// sends it.
pub(crate) fn pump<T: TunIo, S: UdpIo>(
    data: &DataPath<S>,
    tun: &T,
    buffers: &mut OutboundBuffers,
) -> io::Result<Load> {
    let OutboundBuffers {
        input,
        output,
        order,
        screen,
    } = buffers;
    input.clear();
    let drained = tun.recv_batch(input)?;
    let load = Load {
        drained,
        packets: input.len(),
    };
    if input.is_empty() {
        return Ok(load);
    }
    let table = data.table();
    let Some(socket) = data.socket() else {
        data.counters
            .drop_packets(DropReason::SendError, input.len() as u64);
        return Ok(load);
    };
    route(&table, input, order, screen, &data.counters);
    if let Some(errors) = screen.take_errors() {
        let failed = tun.send_batch(errors);
        data.counters
            .drop_packets(DropReason::SendError, failed as u64);
        errors.clear();
    }
    output.clear();
    let mut send = |output: &mut Batch| {
        socket.send_batch(output);
        table.count_sent(output, &data.counters);
        output.clear();
    };
    encapsulate(
        &table,
        input,
        order,
        output,
        &data.counters,
        data.clock.coarse_ms(),
        &mut send,
    );
    if !output.is_empty() {
        send(output);
    }
    Ok(load)
}

/// Fills `order` with `(peer position, packet index)` for every routable packet of
/// `input`, sorted by peer (stable), and counts the rest as dropped (with an ICMP error
/// for the sender where one is due, see `unroutable.rs`).
pub(crate) fn route(
    table: &PeerTable,
    input: &Batch,
    order: &mut Vec<(usize, usize)>,
    screen: &mut Screen,
    counters: &DeviceCounters,
) {
    order.clear();
    let mut cache = LookupCache::default();
    for i in 0..input.len() {
        let packet = input.packet(i);
        let Some(header) = packet::ip_header(packet) else {
            counters.drop_packets(DropReason::NotIp, 1);
            continue;
        };
        match screen.check(packet, &header) {
            Screened::Pass => {}
            Screened::Loop => {
                counters.drop_packets(DropReason::RoutingLoop, 1);
                continue;
            }
            Screened::TooBig => {
                counters.drop_packets(DropReason::TooBig, 1);
                continue;
            }
        }
        match table.routes.lookup_cached(header.dst, &mut cache) {
            Some(&pos) => order.push((pos, i)),
            None => {
                counters.drop_packets(DropReason::NoRoute, 1);
                screen.unreachable(packet);
            }
        }
    }
    order.sort_by_key(|&(pos, _)| pos);
}

/// Encapsulates routed packets peer by peer into `output` (one datagram at most per
/// packet), taking each peer's lock once. When `output` fills up (large packets), `send`
/// empties it and sealing goes on.
pub(crate) fn encapsulate(
    table: &PeerTable,
    input: &Batch,
    order: &[(usize, usize)],
    output: &mut Batch,
    counters: &DeviceCounters,
    now_ms: u64,
    send: &mut dyn FnMut(&mut Batch),
) {
    for group in order.chunk_by(|a, b| a.0 == b.0) {
        let peer = &table.peers[group[0].0];
        let path = peer.path();
        let Some(endpoint) = path.endpoint else {
            counters.drop_packets(DropReason::NoEndpoint, group.len() as u64);
            continue;
        };
        peer.timers.on_data_queued();
        let mut tunn = peer.tunn();
        let mut sent = false;
        for &(pos, i) in group {
            if output.is_full() {
                send(output);
            }
            let Some(slot) = output.next_slot() else {
                counters.drop_packets(DropReason::SendError, 1);
                continue;
            };
            match tunn.encapsulate(input.packet(i), slot) {
                TunnResult::WriteToNetwork(datagram) => {
                    let n = datagram.len();
                    output.commit_path(n, endpoint, path.source, 0, pos as u32);
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
            peer.timers.on_authenticated_packet_traversal(now_ms);
        }
    }
}

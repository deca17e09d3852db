//! Counters: per interface and per peer, updated with relaxed atomics on the hot paths and
//! read as snapshots for the UAPI and metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a packet was dropped. The metric label of each reason is its name in snake case
/// ([`DropReason::as_str`]), derived from the variant itself, so a new reason always gets
/// its own label and counter.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumIter, strum::EnumCount,
)]
#[strum(serialize_all = "snake_case")]
#[non_exhaustive]
pub enum DropReason {
    /// Outbound packet whose destination is in no peer's allowed IPs.
    NoRoute,
    /// Outbound packet for a peer without a known endpoint.
    NoEndpoint,
    /// Outbound bytes that are not an IP packet.
    NotIp,
    /// Inbound datagram that is not a well-formed WireGuard message, or whose decrypted
    /// packet is not a well-formed IP packet (a length field shorter than its header).
    Malformed,
    /// Inbound message for a receiver index or static key we do not know.
    UnknownPeer,
    /// Inbound message that failed authentication, replay or timestamp checks.
    Rejected,
    /// Decrypted packet whose inner source is not in the sender's allowed IPs.
    SourceNotAllowed,
    /// No private key configured.
    NoKey,
    /// The UDP or TUN write failed.
    SendError,
    /// A handshake initiation under load from a source that had its share (`ratelimit.rs`).
    RateLimited,
    /// One of our own sealed datagrams, routed back into the TUN (`unroutable.rs`).
    RoutingLoop,
    /// An outbound packet larger than a WireGuard message can carry.
    TooBig,
}

impl DropReason {
    /// Every reason, for exporting all series.
    pub fn all() -> impl Iterator<Item = Self> {
        <Self as strum::IntoEnumIterator>::iter()
    }

    /// Stable label for metrics.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The reason's counter: variants are numbered from 0 in order.
    fn slot(self) -> usize {
        self as usize
    }
}

/// Number of drop reasons.
const REASONS: usize = <DropReason as strum::EnumCount>::COUNT;

/// Interface-wide counters.
#[derive(Default, Debug)]
pub struct DeviceCounters {
    drops: [AtomicU64; REASONS],
    handshakes_completed: AtomicU64,
    rx_bytes: AtomicU64,
    rx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    tx_packets: AtomicU64,
}

/// A snapshot of an interface's outer traffic (WireGuard datagrams on the UDP socket).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Datagrams received.
    pub rx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Datagrams sent.
    pub tx_packets: u64,
}

impl DeviceCounters {
    /// Counts `n` drops for `reason`.
    #[inline]
    pub fn drop_packets(&self, reason: DropReason, n: u64) {
        self.drops[reason.slot()].fetch_add(n, Relaxed);
    }

    /// Drops so far for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.slot()].load(Relaxed)
    }

    pub(crate) fn handshake_completed(&self) {
        self.handshakes_completed.fetch_add(1, Relaxed);
    }

    #[inline]
    pub(crate) fn received(&self, packets: u64, bytes: u64) {
        self.rx_packets.fetch_add(packets, Relaxed);
        self.rx_bytes.fetch_add(bytes, Relaxed);
    }

    /// Records datagrams the socket accepted, and those it did not as send errors.
    #[inline]
    pub(crate) fn sent(&self, packets: u64, bytes: u64, failed: u64) {
        if failed > 0 {
            self.drop_packets(DropReason::SendError, failed);
        }
        self.tx_packets.fetch_add(packets, Relaxed);
        self.tx_bytes.fetch_add(bytes, Relaxed);
    }

    /// Outer traffic so far.
    pub fn traffic(&self) -> Traffic {
        Traffic {
            rx_bytes: self.rx_bytes.load(Relaxed),
            rx_packets: self.rx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
        }
    }

    /// Handshakes completed (either side initiating) since start.
    pub fn handshakes(&self) -> u64 {
        self.handshakes_completed.load(Relaxed)
    }
}

/// Per-peer traffic counters (bytes are WireGuard datagram bytes, as the kernel counts).
#[derive(Default, Debug)]
pub struct PeerCounters {
    pub(crate) rx_bytes: AtomicU64,
    pub(crate) tx_bytes: AtomicU64,
    pub(crate) rx_packets: AtomicU64,
    pub(crate) tx_packets: AtomicU64,
}

impl PeerCounters {
    #[inline]
    pub(crate) fn received(&self, bytes: usize) {
        self.rx_bytes.fetch_add(bytes as u64, Relaxed);
        self.rx_packets.fetch_add(1, Relaxed);
    }

    #[inline]
    pub(crate) fn sent(&self, bytes: usize) {
        self.tx_bytes.fetch_add(bytes as u64, Relaxed);
        self.tx_packets.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_counters_are_separate() {
        let c = DeviceCounters::default();
        c.drop_packets(DropReason::NoRoute, 2);
        c.drop_packets(DropReason::SourceNotAllowed, 1);
        assert_eq!(c.drops(DropReason::NoRoute), 2);
        assert_eq!(c.drops(DropReason::SourceNotAllowed), 1);
        assert_eq!(c.drops(DropReason::Malformed), 0);
        let labels: std::collections::HashSet<_> = DropReason::all().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), REASONS);
        assert!(labels.contains("source_not_allowed"), "{labels:?}");
        // Every reason has a counter of its own.
        for r in DropReason::all() {
            c.drop_packets(r, 100);
        }
        for r in DropReason::all() {
            assert!(c.drops(r) >= 100 && c.drops(r) <= 102, "{r:?}");
        }
    }
}

//! The two transports the packet paths are generic over. Real implementations live in
//! `tun.rs` and `udp.rs`; in-memory ones for tests in `testing.rs`. Static dispatch: the
//! loops are monomorphised per transport, no `dyn` on the hot path.

use std::future::Future;
use std::io;

use crate::batch::Batch;

/// The inner side: a TUN device carrying IP packets.
pub trait TunIo: Send + Sync + 'static {
    /// Waits for at least one packet, then fills the rest of `batch` with packets that are
    /// already queued, without waiting. An error means the device is gone.
    fn recv_batch(&self, batch: &mut Batch) -> impl Future<Output = io::Result<()>> + Send;

    /// Writes every filled slot of `batch` as one packet; returns how many failed. The
    /// batch's headroom and slots may be used as scratch space (headers, coalescing).
    fn send_batch(&self, batch: &mut Batch) -> impl Future<Output = usize> + Send;
}

/// The outer side: one bound UDP socket carrying WireGuard messages.
pub trait UdpIo: Send + Sync + 'static {
    /// The bound port.
    fn local_port(&self) -> u16;

    /// Changes `SO_MARK` (0 clears it).
    fn set_fwmark(&self, mark: u32) -> io::Result<()>;

    /// Waits for at least one datagram, then fills the rest of `batch` without waiting.
    /// Slot addresses are sources; a slot may hold GRO-coalesced datagrams (see
    /// [`Batch::stride`]).
    fn recv_batch(&self, batch: &mut Batch) -> impl Future<Output = io::Result<()>> + Send;

    /// Sends every filled slot to its address; returns how many failed.
    fn send_batch(&self, batch: &Batch) -> impl Future<Output = usize> + Send;
}

/// Opens UDP sockets: the tunnel rebinds when its listen port changes.
pub trait UdpBinder: Send + Sync + 'static {
    /// The socket type.
    type Socket: UdpIo;

    /// Binds `port` (0 = any) on all addresses, IPv4 and IPv6, with `SO_MARK` `fwmark`.
    fn bind(&self, port: u16, fwmark: u32) -> io::Result<Self::Socket>;
}

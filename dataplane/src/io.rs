//! The two transports the packet paths are generic over. Real implementations live in
//! `tun.rs` and `udp.rs`; in-memory ones for tests in `testing.rs`. Static dispatch: the
//! loops are monomorphised per transport, no `dyn` on the hot path.
//!
//! The paths run on their own threads: each sleeps in `epoll_wait` on a transport's
//! [`readiness`](TunIo::readiness) descriptor, then reads without blocking until the
//! transport is drained, so a packet costs one wake-up of the thread that handles it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{BorrowedFd, OwnedFd};

use crate::batch::Batch;

/// The inner side: a TUN device carrying IP packets.
pub trait TunIo: Send + Sync + 'static {
    /// Readable while packets wait to be read.
    fn readiness(&self) -> BorrowedFd<'_>;

    /// Fills `batch` with packets that are already queued, without waiting. Returns true
    /// when it stopped because nothing more was queued (false: the batch filled up). An
    /// error means the device is gone.
    fn recv_batch(&self, batch: &mut Batch) -> io::Result<bool>;

    /// Writes every filled slot of `batch` as one packet; returns how many failed. The
    /// batch's headroom and slots may be used as scratch space (headers, coalescing).
    fn send_batch(&self, batch: &mut Batch) -> usize;
}

/// A shared TUN device (a process that may hand its interface over keeps a handle).
impl<T: TunIo> TunIo for std::sync::Arc<T> {
    #[inline]
    fn readiness(&self) -> BorrowedFd<'_> {
        (**self).readiness()
    }

    #[inline]
    fn recv_batch(&self, batch: &mut Batch) -> io::Result<bool> {
        (**self).recv_batch(batch)
    }

    #[inline]
    fn send_batch(&self, batch: &mut Batch) -> usize {
        (**self).send_batch(batch)
    }
}

/// The outer side: one bound UDP socket carrying WireGuard messages.
pub trait UdpIo: Send + Sync + 'static {
    /// The bound port.
    fn local_port(&self) -> u16;

    /// Another descriptor of the socket, for a successor process (see `takeover.rs`).
    /// Transports that are not kernel sockets cannot be handed over.
    fn duplicate_fd(&self) -> io::Result<OwnedFd> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Changes `SO_MARK` (0 clears it).
    fn set_fwmark(&self, mark: u32) -> io::Result<()>;

    /// The address the kernel would send from towards `to`, and the interface it is on;
    /// `None` without a route.
    fn route_source(&self, to: SocketAddr) -> Option<(IpAddr, u32)>;

    /// Readable while datagrams wait to be read.
    fn readiness(&self) -> BorrowedFd<'_>;

    /// Fills `batch` with datagrams that are already queued, without waiting; returns
    /// true when the socket was drained. Slot addresses are sources, [`Batch::local`] our
    /// address each was sent to; a slot may hold GRO-coalesced datagrams (see
    /// [`Batch::stride`]).
    fn recv_batch(&self, batch: &mut Batch) -> io::Result<bool>;

    /// Sends every filled slot to its address, from its [`Batch::local`] address if set;
    /// returns how many failed, and marks them ([`Batch::failed`]). A local address the
    /// kernel refuses is dropped for its choice and marked ([`Batch::source_refused`]).
    /// Waits (briefly, bounded) for room in the socket buffer.
    fn send_batch(&self, batch: &mut Batch) -> usize;

    /// Like [`UdpIo::send_batch`], but never waits: what meets a full socket buffer counts
    /// as failed. For senders that must not block (the tick runs on a tokio worker).
    fn try_send_batch(&self, batch: &mut Batch) -> usize;
}

/// Opens UDP sockets: the tunnel rebinds when its listen port changes.
pub trait UdpBinder: Send + Sync + 'static {
    /// The socket type.
    type Socket: UdpIo;

    /// Binds `port` (0 = any) on all addresses, IPv4 and IPv6, with `SO_MARK` `fwmark`.
    fn bind(&self, port: u16, fwmark: u32) -> io::Result<Self::Socket>;
}

//! [`UdpIo`] for a real socket: one dual-stack UDP socket (IPv4 + IPv6 outer), set up
//! with socket2 and driven by quinn-udp (`recvmmsg`, GRO where the kernel offers it).

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use socket2::{Socket, Type};

use crate::batch::Batch;
mod bind;

use crate::config::{canonical, canonical_ip};
use crate::io::UdpIo;
use crate::route::RouteProbe;
pub use bind::{InheritedUdp, SystemUdp};

/// Socket buffer size asked for on both directions.
const SOCKET_BUFFER: usize = 8 << 20;

/// Sets a bound socket up for the packet paths: mark, non-blocking, fragmentation, buffers.
pub(crate) fn finish(sock: Socket, dual: bool, fwmark: u32) -> io::Result<UdpSocket> {
    if fwmark != 0 {
        sock.set_mark(fwmark)?;
    }
    sock.set_nonblocking(true)?;
    let sock: std::net::UdpSocket = sock.into();
    let state = UdpSocketState::new((&sock).into())?;
    crate::sys::allow_fragmentation(sock.as_fd(), dual)?;
    // With CAP_NET_ADMIN the buffers may exceed net.core.*mem_max; otherwise ask for
    // what the sysctl allows.
    if crate::sys::force_buffers(sock.as_fd(), SOCKET_BUFFER).is_err() {
        let _ = state.set_recv_buffer_size((&sock).into(), SOCKET_BUFFER);
        let _ = state.set_send_buffer_size((&sock).into(), SOCKET_BUFFER);
    }
    let port = sock.local_addr()?.port();
    let gso = AtomicBool::new(state.max_gso_segments() > 1);
    Ok(UdpSocket {
        sock,
        state,
        port,
        dual,
        gso,
        gso_max_segment: AtomicUsize::new(usize::MAX),
        fwmark: AtomicU32::new(fwmark),
        probe: RouteProbe::default(),
        quiet: AtomicBool::new(true),
    })
}

impl std::fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpSocket")
            .field("port", &self.port)
            .finish()
    }
}

/// A bound UDP socket.
pub struct UdpSocket {
    /// Non-blocking: the inbound path waits for it in its `epoll` set.
    sock: std::net::UdpSocket,
    state: UdpSocketState,
    port: u16,
    dual: bool,
    /// Cleared when the kernel refuses a GSO send; single datagrams from then on.
    gso: AtomicBool,
    /// Datagrams larger than this go out one by one: the kernel refuses a GSO send whose
    /// segments exceed the path MTU (`EMSGSIZE`), while a lone datagram is fragmented.
    /// Learnt from the first refusal; jumbo inner MTUs over a smaller underlay meet it.
    gso_max_segment: AtomicUsize,
    /// `SO_MARK`, which policy routing may depend on.
    fwmark: AtomicU32,
    probe: RouteProbe,
    /// The last receive found fewer than [`QUIET_SLOTS`] datagrams.
    quiet: AtomicBool,
}

/// Slots offered to the first `recvmmsg` of a wake-up after a quiet one. A burst that
/// fills them is read on at the full batch size.
const QUIET_SLOTS: usize = 4;

/// Largest UDP payload one GSO send may carry.
const GSO_MAX_BYTES: usize = 65_000;

/// How long a send waits for room in a full socket buffer before the datagrams count as
/// dropped (the inbound path must not stall behind a peer that is gone).
const SEND_WAIT: Duration = Duration::from_millis(100);

impl UdpSocket {
    /// The `SO_MARK` in effect.
    pub(crate) fn fwmark(&self) -> u32 {
        self.fwmark.load(Relaxed)
    }

    /// Another descriptor of this socket, to hand to a successor process: the port stays
    /// bound while either is open.
    pub fn duplicate(&self) -> io::Result<OwnedFd> {
        self.sock.as_fd().try_clone_to_owned()
    }

    /// Takes over a bound UDP socket that another process handed over.
    pub fn adopt(fd: OwnedFd) -> io::Result<Self> {
        let sock = Socket::from(fd);
        let not_udp = || io::Error::new(io::ErrorKind::InvalidInput, "not a bound UDP socket");
        if sock.r#type()? != Type::DGRAM {
            return Err(not_udp());
        }
        let local = sock.local_addr()?;
        let dual = match local.as_socket() {
            Some(SocketAddr::V6(_)) => !sock.only_v6()?,
            Some(SocketAddr::V4(_)) => false,
            None => return Err(not_udp()),
        };
        let fwmark = sock.mark().unwrap_or(0);
        finish(sock, dual, fwmark)
    }

    fn destination(&self, addr: SocketAddr) -> SocketAddr {
        match addr {
            SocketAddr::V4(v4) if self.dual => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            other => other,
        }
    }
}

impl UdpSocket {
    /// One `recvmmsg` into at most `N` free slots; returns (messages, offered, datagrams):
    /// with GRO one message may hold many datagrams.
    fn recv_some<const N: usize>(&self, batch: &mut Batch) -> io::Result<(usize, usize, usize)> {
        let mut meta = [RecvMeta::default(); N];
        let free = batch.free_slots();
        let offered = free.len().min(N);
        let mut iovs: [IoSliceMut<'_>; N] = std::array::from_fn(|_| IoSliceMut::new(&mut []));
        for (iov, slot) in iovs.iter_mut().zip(free.iter_mut()) {
            *iov = IoSliceMut::new(&mut slot[..]);
        }
        let n = self.state.recv(
            (&self.sock).into(),
            &mut iovs[..offered],
            &mut meta[..offered],
        )?;
        let mut datagrams = 0;
        for m in &meta[..n] {
            let stride = if m.stride < m.len { m.stride } else { 0 };
            datagrams += if stride > 0 {
                m.len.div_ceil(stride)
            } else {
                1
            };
            batch.commit(m.len, canonical(m.addr), stride);
            let local = m.dst_ip.map(canonical_ip);
            batch.set_received_at(batch.len() - 1, local, m.interface_index.unwrap_or(0));
        }
        Ok((n, offered, datagrams))
    }

    /// Sends one datagram (or one GSO train) from our address `from` (`None`: the
    /// kernel's choice); with `wait`, waits up to [`SEND_WAIT`] for room in a full socket
    /// buffer, otherwise fails at once with `TimedOut`. When the kernel refuses `from`
    /// (the address left the host), sends from its own choice instead and returns true.
    fn send_one(
        &self,
        contents: &[u8],
        to: SocketAddr,
        from: Option<IpAddr>,
        segment_size: Option<usize>,
        wait: bool,
    ) -> io::Result<bool> {
        match self.send_from(contents, to, from, segment_size, wait) {
            // A source that is not the host's: EINVAL (IPv4 socket), ENETUNREACH (an IPv4
            // destination on a dual-stack socket), EADDRNOTAVAIL (IPv6).
            Err(e)
                if from.is_some()
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::EADDRNOTAVAIL | libc::ENETUNREACH)
                    ) =>
            {
                self.send_from(contents, to, None, segment_size, wait)
                    .map(|()| true)
            }
            r => r.map(|()| false),
        }
    }

    fn send_from(
        &self,
        contents: &[u8],
        to: SocketAddr,
        from: Option<IpAddr>,
        segment_size: Option<usize>,
        wait: bool,
    ) -> io::Result<()> {
        let transmit = Transmit {
            destination: self.destination(to),
            ecn: None,
            contents,
            segment_size,
            src_ip: from,
        };
        let r = loop {
            match self.state.try_send((&self.sock).into(), &transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !wait => {
                    break Err(io::ErrorKind::TimedOut.into());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match crate::wake::writable(self.sock.as_fd(), SEND_WAIT) {
                        Ok(true) => continue,
                        Ok(false) => break Err(io::ErrorKind::TimedOut.into()),
                        Err(e) => break Err(e),
                    }
                }
                r => break r,
            }
        };
        if let Err(e) = &r {
            tracing::debug!(destination = %to, error = %e, "UDP send failed");
        }
        r
    }
}

/// The socket buffer stayed full (for [`SEND_WAIT`], or at all when not waiting): the
/// rest of the batch is dropped rather than waited for datagram by datagram.
fn stalled(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
}

/// How many datagrams from `start` can go out as one GSO send: same destination and
/// source, equal size (a shorter one may end the run), at most `max_segments` and
/// [`GSO_MAX_BYTES`].
pub(crate) fn gso_run(batch: &Batch, start: usize, max_segments: usize) -> usize {
    let (dst, size) = (batch.addr(start), batch.packet(start).len());
    let from = batch.local(start);
    let mut n = 1;
    while start + n < batch.len() && n < max_segments && (n + 1) * size <= GSO_MAX_BYTES {
        let (a, len) = (batch.addr(start + n), batch.packet(start + n).len());
        if a != dst || len > size || len == 0 || batch.local(start + n) != from {
            break;
        }
        n += 1;
        if len < size {
            break;
        }
    }
    n
}

impl UdpIo for UdpSocket {
    fn local_port(&self) -> u16 {
        self.port
    }

    fn duplicate_fd(&self) -> io::Result<OwnedFd> {
        self.duplicate()
    }

    fn set_fwmark(&self, mark: u32) -> io::Result<()> {
        socket2::SockRef::from(&self.sock).set_mark(mark)?;
        self.fwmark.store(mark, Relaxed);
        Ok(())
    }

    fn route_source(&self, to: SocketAddr) -> Option<(IpAddr, u32)> {
        self.probe.source_towards(to, self.fwmark.load(Relaxed))
    }

    fn readiness(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    fn recv_batch(&self, batch: &mut Batch) -> io::Result<bool> {
        // After a quiet wake-up (a ping, a keepalive) the next one starts with a short
        // receive: quinn-udp prepares, and we initialise, one header per slot offered.
        let mut quiet = self.quiet.load(Relaxed);
        let mut received = 0;
        let drained = loop {
            if batch.is_full() {
                break Ok(false);
            }
            let got = if quiet {
                self.recv_some::<QUIET_SLOTS>(batch)
            } else {
                self.recv_some::<{ quinn_udp::BATCH_SIZE }>(batch)
            };
            quiet = false;
            match got {
                Ok((n, offered, datagrams)) => {
                    received += datagrams;
                    if n < offered {
                        // recvmmsg returns what was queued: the socket is drained.
                        break Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(true),
                Err(e) => break Err(e),
            }
        };
        self.quiet.store(received < QUIET_SLOTS, Relaxed);
        drained
    }

    fn send_batch(&self, batch: &mut Batch) -> usize {
        self.send_all(batch, true)
    }

    fn try_send_batch(&self, batch: &mut Batch) -> usize {
        self.send_all(batch, false)
    }
}

impl UdpSocket {
    /// Sends a batch (see [`UdpIo::send_batch`]); returns how many datagrams failed.
    fn send_all(&self, batch: &mut Batch, wait: bool) -> usize {
        let mut failed = 0;
        let mut i = 0;
        while i < batch.len() {
            let fits = batch.packet(i).len() <= self.gso_max_segment.load(Relaxed);
            let max_segments = if fits && self.gso.load(Relaxed) {
                self.state.max_gso_segments()
            } else {
                1
            };
            let run = gso_run(batch, i, max_segments);
            // Runs of a packed batch already lie back to back: one sendmsg with
            // UDP_SEGMENT, no copy. Anything else goes datagram by datagram.
            let from = batch.local(i);
            let sent = match batch.run(i, run).filter(|_| run > 1) {
                Some(bytes) => {
                    let size = batch.packet(i).len();
                    match self.send_one(bytes, batch.addr(i), from, Some(size), wait) {
                        Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                            // Segments over the path MTU: send this size and larger alone.
                            tracing::debug!(
                                segment = size,
                                "UDP GSO segments exceed the path MTU; sending such datagrams one by one"
                            );
                            self.gso_max_segment.fetch_min(size - 1, Relaxed);
                            continue;
                        }
                        Err(e) if matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) => {
                            // The device or kernel cannot segment: fall back for good.
                            tracing::info!(error = %e, "UDP GSO refused; sending datagrams one by one");
                            self.gso.store(false, Relaxed);
                            continue;
                        }
                        r => r.map(|refused| (run, refused)),
                    }
                }
                None => self
                    .send_one(batch.packet(i), batch.addr(i), from, None, wait)
                    .map(|refused| (1, refused)),
            };
            match sent {
                Ok((n, refused)) => {
                    if refused {
                        batch.mark_source_refused(i, n);
                    }
                    i += n;
                }
                Err(e) if stalled(&e) => {
                    // The rest of the batch is dropped rather than waited for.
                    let rest = batch.len() - i;
                    batch.mark_failed(i, rest);
                    return failed + rest;
                }
                Err(_) => {
                    let n = if run > 1 && batch.run(i, run).is_some() {
                        run
                    } else {
                        1
                    };
                    batch.mark_failed(i, n);
                    failed += n;
                    i += n;
                }
            }
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gso_runs_group_equal_sizes_to_one_destination() {
        let a: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:1".parse().unwrap();
        let mut batch = Batch::with_capacity(8, 2000);
        for (len, to) in [
            (100, a),
            (100, a),
            (100, a),
            (60, a),
            (100, a),
            (100, b),
            (120, b),
            (120, b),
        ] {
            batch.push(&vec![7u8; len], to);
        }
        // 3 equal + 1 shorter closes the run.
        assert_eq!(gso_run(&batch, 0, 64), 4);
        // A new destination starts a new run.
        assert_eq!(gso_run(&batch, 4, 64), 1);
        // A longer datagram cannot join.
        assert_eq!(gso_run(&batch, 5, 64), 1);
        assert_eq!(gso_run(&batch, 6, 64), 2);
        // Without GSO every datagram goes alone.
        assert_eq!(gso_run(&batch, 0, 1), 1);
    }
}

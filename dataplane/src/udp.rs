//! [`UdpIo`] for a real socket: one dual-stack UDP socket (IPv4 + IPv6 outer), set up
//! with socket2 and driven by quinn-udp (`recvmmsg`, GRO where the kernel offers it).

use std::io::{self, IoSliceMut};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;

use crate::batch::Batch;
use crate::config::canonical;
use crate::io::{UdpBinder, UdpIo};

/// Socket buffer size asked for on both directions.
const SOCKET_BUFFER: usize = 4 << 20;

/// Binds real UDP sockets.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemUdp;

impl UdpBinder for SystemUdp {
    type Socket = UdpSocket;

    fn bind(&self, port: u16, fwmark: u32) -> io::Result<UdpSocket> {
        // Dual-stack first; fall back to IPv4 only where IPv6 is disabled.
        let (sock, dual) = match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)) {
            Ok(s) => {
                s.set_only_v6(false)?;
                let addr = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
                match s.bind(&addr.into()) {
                    Ok(()) => (s, true),
                    Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => bind_v4(port)?,
                    Err(e) => return Err(e),
                }
            }
            Err(_) => bind_v4(port)?,
        };
        if fwmark != 0 {
            sock.set_mark(fwmark)?;
        }
        sock.set_nonblocking(true)?;
        let std_sock: std::net::UdpSocket = sock.into();
        let sock = tokio::net::UdpSocket::from_std(std_sock)?;
        let state = UdpSocketState::new((&sock).into())?;
        crate::sys::allow_fragmentation(std::os::fd::AsFd::as_fd(&sock), dual)?;
        // Best effort: unprivileged processes are capped by net.core.*mem_max.
        let _ = state.set_recv_buffer_size((&sock).into(), SOCKET_BUFFER);
        let _ = state.set_send_buffer_size((&sock).into(), SOCKET_BUFFER);
        let port = sock.local_addr()?.port();
        Ok(UdpSocket {
            sock,
            state,
            port,
            dual,
        })
    }
}

fn bind_v4(port: u16) -> io::Result<(Socket, bool)> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())?;
    Ok((s, false))
}

/// A bound UDP socket.
pub struct UdpSocket {
    sock: tokio::net::UdpSocket,
    state: UdpSocketState,
    port: u16,
    dual: bool,
}

impl UdpSocket {
    fn destination(&self, addr: SocketAddr) -> SocketAddr {
        match addr {
            SocketAddr::V4(v4) if self.dual => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            other => other,
        }
    }
}

impl UdpIo for UdpSocket {
    fn local_port(&self) -> u16 {
        self.port
    }

    fn set_fwmark(&self, mark: u32) -> io::Result<()> {
        socket2::SockRef::from(&self.sock).set_mark(mark)
    }

    async fn recv_batch(&self, batch: &mut Batch) -> io::Result<()> {
        let start = batch.len;
        let free = &mut batch.slots[start..];
        let mut meta = vec![RecvMeta::default(); free.len()];
        let mut iovs: Vec<IoSliceMut<'_>> = free
            .iter_mut()
            .map(|s| IoSliceMut::new(&mut s[..]))
            .collect();
        let n = self
            .sock
            .async_io(Interest::READABLE, || {
                self.state.recv((&self.sock).into(), &mut iovs, &mut meta)
            })
            .await?;
        drop(iovs);
        for m in &meta[..n] {
            let stride = if m.stride < m.len { m.stride } else { 0 };
            batch.commit(m.len, canonical(m.addr), stride);
        }
        Ok(())
    }

    async fn send_batch(&self, batch: &Batch) -> usize {
        let mut failed = 0;
        for i in 0..batch.len() {
            let transmit = Transmit {
                destination: self.destination(batch.addr(i)),
                ecn: None,
                contents: batch.packet(i),
                segment_size: None,
                src_ip: None,
            };
            let r = self
                .sock
                .async_io(Interest::WRITABLE, || {
                    self.state.try_send((&self.sock).into(), &transmit)
                })
                .await;
            if let Err(e) = r {
                tracing::debug!(destination = %batch.addr(i), error = %e, "UDP send failed");
                failed += 1;
            }
        }
        failed
    }
}

//! How a tunnel gets its UDP socket: a new dual-stack bind ([`SystemUdp`]), or the socket
//! a predecessor process handed over ([`InheritedUdp`], see `takeover.rs`).

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::OwnedFd;

use socket2::{Domain, Protocol, Socket, Type};

use super::{UdpSocket, finish};
use crate::io::{UdpBinder, UdpIo};

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
        finish(sock, dual, fwmark)
    }
}

/// Binds like [`SystemUdp`], except that a socket handed over by the process this one
/// takes over from (see `takeover.rs`) is used for its port instead of a new bind: the
/// port never closes, and datagrams queued in it are read by the successor.
#[derive(Debug, Default)]
pub struct InheritedUdp {
    held: std::sync::Mutex<Option<UdpSocket>>,
}

impl InheritedUdp {
    /// `fd`: a bound UDP socket (from [`UdpSocket::duplicate`] in the other process).
    pub fn new(fd: Option<OwnedFd>) -> io::Result<Self> {
        let held = fd.map(UdpSocket::adopt).transpose()?;
        Ok(Self {
            held: std::sync::Mutex::new(held),
        })
    }

    /// The port of the socket not yet taken, if any.
    pub fn held_port(&self) -> Option<u16> {
        self.lock().as_ref().map(UdpIo::local_port)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<UdpSocket>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl UdpBinder for InheritedUdp {
    type Socket = UdpSocket;

    fn bind(&self, port: u16, fwmark: u32) -> io::Result<UdpSocket> {
        let held = self.lock().take();
        match held {
            Some(sock) if port == 0 || port == sock.local_port() => {
                if sock.fwmark() != fwmark {
                    sock.set_fwmark(fwmark)?;
                }
                Ok(sock)
            }
            // Another port was asked for: the handed-over socket closes.
            _ => SystemUdp.bind(port, fwmark),
        }
    }
}

fn bind_v4(port: u16) -> io::Result<(Socket, bool)> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())?;
    Ok((s, false))
}

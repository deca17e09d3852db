//! In-memory transports so tunnels can be tested and benchmarked without root: a TUN pair
//! made of channels and a tiny UDP "network" that delivers datagrams between bound
//! addresses (and lets a test inject datagrams from any source).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::batch::Batch;
use crate::io::{TunIo, UdpBinder, UdpIo};

/// The tunnel's end of an in-memory TUN device.
pub struct MemTun {
    from_host: tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>,
    to_host: mpsc::Sender<Vec<u8>>,
}

/// The "kernel" end of an in-memory TUN device.
pub struct MemTunHost {
    /// Packets written here are read by the tunnel, as if routed into the device.
    pub to_tunnel: mpsc::Sender<Vec<u8>>,
    /// Packets the tunnel delivered (decrypted inbound traffic).
    pub from_tunnel: mpsc::Receiver<Vec<u8>>,
}

/// A connected TUN pair.
pub fn mem_tun() -> (MemTun, MemTunHost) {
    let (to_tunnel, from_host) = mpsc::channel(1024);
    let (to_host, from_tunnel) = mpsc::channel(1024);
    (
        MemTun {
            from_host: tokio::sync::Mutex::new(from_host),
            to_host,
        },
        MemTunHost {
            to_tunnel,
            from_tunnel,
        },
    )
}

impl TunIo for MemTun {
    async fn recv_batch(&self, batch: &mut Batch) -> io::Result<()> {
        let mut rx = self.from_host.lock().await;
        let first = rx
            .recv()
            .await
            .ok_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))?;
        let any = SocketAddr::from(([0, 0, 0, 0], 0));
        batch.push(&first, any);
        while !batch.is_full() {
            match rx.try_recv() {
                Ok(p) => {
                    batch.push(&p, any);
                }
                Err(_) => break,
            }
        }
        Ok(())
    }

    async fn send_batch(&self, batch: &mut Batch) -> usize {
        let mut failed = 0;
        for i in 0..batch.len() {
            if self.to_host.send(batch.packet(i).to_vec()).await.is_err() {
                failed += 1;
            }
        }
        failed
    }
}

type Inbox = mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>;

/// A lossless in-memory UDP network.
#[derive(Clone, Default)]
pub struct MemNet {
    sockets: Arc<Mutex<HashMap<SocketAddr, Inbox>>>,
}

impl MemNet {
    /// A new, empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// A binder for sockets on host address `ip`.
    pub fn host(&self, ip: IpAddr) -> MemUdpBinder {
        MemUdpBinder {
            net: self.clone(),
            ip,
        }
    }

    /// Delivers `bytes` to `to` as if sent from `from`; false if nothing listens there.
    pub fn inject(&self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) -> bool {
        let inbox = self
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&to)
            .cloned();
        inbox.is_some_and(|tx| tx.send((from, bytes.to_vec())).is_ok())
    }

    /// Binds a raw socket at `addr` for a test to observe or forge traffic.
    pub fn listen(
        &self,
        addr: SocketAddr,
    ) -> io::Result<mpsc::UnboundedReceiver<(SocketAddr, Vec<u8>)>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut map = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(&addr) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        map.insert(addr, tx);
        Ok(rx)
    }

    fn unbind(&self, addr: SocketAddr) {
        self.sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr);
    }
}

/// Binds [`MemUdp`] sockets on one host address of a [`MemNet`].
#[derive(Clone)]
pub struct MemUdpBinder {
    net: MemNet,
    ip: IpAddr,
}

impl UdpBinder for MemUdpBinder {
    type Socket = MemUdp;

    fn bind(&self, port: u16, _fwmark: u32) -> io::Result<MemUdp> {
        let port = if port != 0 {
            port
        } else {
            let map = self.net.sockets.lock().unwrap_or_else(|e| e.into_inner());
            (40000..u16::MAX)
                .find(|p| !map.contains_key(&SocketAddr::new(self.ip, *p)))
                .ok_or(io::ErrorKind::AddrInUse)?
        };
        let addr = SocketAddr::new(self.ip, port);
        let rx = self.net.listen(addr)?;
        Ok(MemUdp {
            net: self.net.clone(),
            addr,
            rx: tokio::sync::Mutex::new(rx),
        })
    }
}

/// An in-memory UDP socket.
pub struct MemUdp {
    net: MemNet,
    addr: SocketAddr,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<(SocketAddr, Vec<u8>)>>,
}

impl Drop for MemUdp {
    fn drop(&mut self) {
        self.net.unbind(self.addr);
    }
}

impl UdpIo for MemUdp {
    fn local_port(&self) -> u16 {
        self.addr.port()
    }

    fn set_fwmark(&self, _mark: u32) -> io::Result<()> {
        Ok(())
    }

    async fn recv_batch(&self, batch: &mut Batch) -> io::Result<()> {
        let mut rx = self.rx.lock().await;
        let (from, first) = rx
            .recv()
            .await
            .ok_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))?;
        batch.push(&first, from);
        while !batch.is_full() {
            match rx.try_recv() {
                Ok((from, p)) => {
                    batch.push(&p, from);
                }
                Err(_) => break,
            }
        }
        Ok(())
    }

    async fn send_batch(&self, batch: &Batch) -> usize {
        (0..batch.len())
            .filter(|&i| !self.net.inject(self.addr, batch.addr(i), batch.packet(i)))
            .count()
    }
}

/// Builds a minimal IPv4 packet (20-byte header, no options) with `payload`.
pub fn ipv4_packet(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let sum = checksum(&p[..20]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p[20..].copy_from_slice(payload);
    p
}

/// Builds a minimal IPv6 packet with `payload` (next header 17).
pub fn ipv6_packet(src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40 + payload.len()];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src);
    p[24..40].copy_from_slice(&dst);
    p[40..].copy_from_slice(payload);
    p
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

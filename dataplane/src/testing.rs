//! In-memory transports so tunnels can be tested and benchmarked without root: a TUN pair
//! made of channels and a tiny UDP "network" that delivers datagrams between bound
//! addresses (and lets a test inject datagrams from any source).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::batch::Batch;
use crate::io::{TunIo, UdpBinder, UdpIo};
use crate::wake::Doorbell;

/// An unbounded queue whose [`Doorbell`] rings while it may hold items, so a tunnel's
/// path thread can wait for it like for a real descriptor.
struct Inbox<T> {
    queue: Mutex<VecDeque<T>>,
    bell: Doorbell,
    closed: AtomicBool,
}

impl<T> Inbox<T> {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(VecDeque::new()),
            bell: Doorbell::new().expect("socketpair for an in-memory queue"),
            closed: AtomicBool::new(false),
        })
    }

    /// Queues `item`, ringing only when the queue was empty: a non-empty queue is either
    /// already ringing or about to be looked at by a reader that drained the bell (and
    /// which rings again for whatever it leaves behind).
    fn push(&self, item: T) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = queue.is_empty();
        queue.push_back(item);
        drop(queue);
        if was_empty {
            self.bell.ring();
        }
    }

    /// Queues `item` without ringing: only a reader that looks anyway sees it (a later
    /// [`Inbox::push`] does not ring for it either while it is queued).
    fn push_quiet(&self, item: T) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(item);
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.bell.ring();
    }

    /// Moves queued items into `batch` through `put` until the queue is empty (true) or
    /// the batch is full; an error once the queue is empty and closed.
    fn take(&self, batch: &mut Batch, put: impl Fn(&mut Batch, T)) -> io::Result<bool> {
        // Drain first: a push after this rings again and wakes the next wait.
        self.bell.drain();
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        while !batch.is_full() {
            match queue.pop_front() {
                Some(item) => put(batch, item),
                None if self.closed.load(Ordering::SeqCst) && batch.is_empty() => {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
                None => return Ok(true),
            }
        }
        // Items left behind: keep the bell ringing for them.
        if !queue.is_empty() {
            self.bell.ring();
        }
        Ok(false)
    }
}

/// The inner stack's inline answer to a packet written to the device, if any.
type Answer = Box<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// The tunnel's end of an in-memory TUN device.
pub struct MemTun {
    from_host: Arc<Inbox<Vec<u8>>>,
    to_host: mpsc::UnboundedSender<Vec<u8>>,
    answer: Option<Answer>,
    readers: Readers,
}

/// The "kernel" end of an in-memory TUN device.
pub struct MemTunHost {
    /// Packets written here are read by the tunnel, as if routed into the device.
    pub to_tunnel: HostTx,
    /// Packets the tunnel delivered (decrypted inbound traffic).
    pub from_tunnel: mpsc::UnboundedReceiver<Vec<u8>>,
    readers: Readers,
}

/// Names of the threads that read packets from an in-memory TUN, in order, each run of
/// reads by one thread recorded once.
type Readers = Arc<Mutex<Vec<String>>>;

impl MemTunHost {
    /// Which threads read packets from the device, in order (a run of reads by one
    /// thread appears once).
    pub fn readers(&self) -> Vec<String> {
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Writes packets into an in-memory TUN device. Dropping it is like deleting the
/// device: the tunnel's outbound path stops once it has read what was queued.
pub struct HostTx {
    inbox: Arc<Inbox<Vec<u8>>>,
}

impl HostTx {
    /// Queues `packet` for the tunnel to read (never waits: the queue is unbounded).
    pub async fn send(&self, packet: Vec<u8>) -> Result<(), io::Error> {
        self.inbox.push(packet);
        Ok(())
    }
}

impl Drop for HostTx {
    fn drop(&mut self) {
        self.inbox.close();
    }
}

/// A connected TUN pair.
pub fn mem_tun() -> (MemTun, MemTunHost) {
    let inbox = Inbox::new();
    let (to_host, from_tunnel) = mpsc::unbounded_channel();
    let readers = Readers::default();
    (
        MemTun {
            from_host: Arc::clone(&inbox),
            to_host,
            answer: None,
            readers: Arc::clone(&readers),
        },
        MemTunHost {
            to_tunnel: HostTx { inbox },
            from_tunnel,
            readers,
        },
    )
}

/// A TUN pair whose inner stack answers packets during the write, as the kernel answers a
/// ping or acknowledges TCP data before a TUN `write` returns: for every packet the
/// tunnel delivers, `answer` may return a reply. A reply is queued for the tunnel to read
/// *without* waking the device's readiness descriptor, so it only leaves if the writing
/// thread reads it back at once; the packets answered do not reach the host side.
pub fn mem_tun_answering(
    answer: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync + 'static,
) -> (MemTun, MemTunHost) {
    let (mut tun, host) = mem_tun();
    tun.answer = Some(Box::new(answer));
    (tun, host)
}

fn any() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

impl TunIo for MemTun {
    fn readiness(&self) -> BorrowedFd<'_> {
        self.from_host.bell.fd()
    }

    fn recv_batch(&self, batch: &mut Batch) -> io::Result<bool> {
        let before = batch.len();
        let drained = self.from_host.take(batch, |b, p| {
            b.push(&p, any());
        })?;
        if batch.len() > before {
            let name = std::thread::current().name().unwrap_or("").to_string();
            let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
            if readers.last() != Some(&name) {
                readers.push(name);
            }
        }
        Ok(drained)
    }

    fn send_batch(&self, batch: &mut Batch) -> usize {
        (0..batch.len())
            .filter(|&i| {
                let packet = batch.packet(i);
                match self.answer.as_ref().and_then(|answer| answer(packet)) {
                    Some(reply) => {
                        self.from_host.push_quiet(reply);
                        false
                    }
                    None => self.to_host.send(packet.to_vec()).is_err(),
                }
            })
            .count()
    }
}

type Datagram = (SocketAddr, Vec<u8>);

/// Decides whether the network loses a datagram: `(from, to, bytes) -> lose it`.
type Loss = Box<dyn Fn(SocketAddr, SocketAddr, &[u8]) -> bool + Send + Sync>;

/// An in-memory UDP network: lossless unless told otherwise ([`MemNet::lose_when`]).
#[derive(Clone, Default)]
pub struct MemNet {
    sockets: Arc<Mutex<HashMap<SocketAddr, Arc<Inbox<Datagram>>>>>,
    loss: Arc<Mutex<Option<Loss>>>,
    sent: Arc<Mutex<HashMap<SocketAddr, u64>>>,
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

    /// From now on, datagrams for which `lose` returns true are lost on the way (the
    /// sender sees a successful send).
    pub fn lose_when(
        &self,
        lose: impl Fn(SocketAddr, SocketAddr, &[u8]) -> bool + Send + Sync + 'static,
    ) {
        *self.loss.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(lose));
    }

    /// Datagrams sent to `to` so far, delivered or not.
    pub fn sent_to(&self, to: SocketAddr) -> u64 {
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&to)
            .copied()
            .unwrap_or(0)
    }

    /// Sends `bytes` from a bound socket: counted, maybe lost, else delivered; false if
    /// nothing listens at `to`.
    fn send(&self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) -> bool {
        *self
            .sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(to)
            .or_default() += 1;
        let lost = self
            .loss
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|lose| lose(from, to, bytes));
        lost || self.inject(from, to, bytes)
    }

    /// Delivers `bytes` to `to` as if sent from `from`; false if nothing listens there.
    pub fn inject(&self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) -> bool {
        let inbox = self
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&to)
            .cloned();
        inbox
            .map(|inbox| inbox.push((from, bytes.to_vec())))
            .is_some()
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<Arc<Inbox<Datagram>>> {
        let mut map = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(&addr) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        let inbox = Inbox::new();
        map.insert(addr, Arc::clone(&inbox));
        Ok(inbox)
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
        let inbox = self.net.bind(addr)?;
        Ok(MemUdp {
            net: self.net.clone(),
            addr,
            inbox,
        })
    }
}

/// An in-memory UDP socket.
pub struct MemUdp {
    net: MemNet,
    addr: SocketAddr,
    inbox: Arc<Inbox<Datagram>>,
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

    /// The in-memory host has one address on one interface (index 1).
    fn route_source(&self, _to: SocketAddr) -> Option<(IpAddr, u32)> {
        Some((self.addr.ip(), 1))
    }

    fn readiness(&self) -> BorrowedFd<'_> {
        self.inbox.bell.fd()
    }

    fn recv_batch(&self, batch: &mut Batch) -> io::Result<bool> {
        let local = self.addr.ip();
        self.inbox.take(batch, |b, (from, p)| {
            if b.push(&p, from) {
                b.set_received_at(b.len() - 1, Some(local), 1);
            }
        })
    }

    fn send_batch(&self, batch: &mut Batch) -> usize {
        let mut failed = 0;
        for i in 0..batch.len() {
            if !self.net.send(self.addr, batch.addr(i), batch.packet(i)) {
                batch.mark_failed(i, 1);
                failed += 1;
            }
        }
        failed
    }

    /// The in-memory network never fills up, so this never has to wait either.
    fn try_send_batch(&self, batch: &mut Batch) -> usize {
        self.send_batch(batch)
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

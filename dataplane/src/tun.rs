//! [`TunIo`] for a real Linux TUN device (tun-rs, no packet-information header).
//!
//! With offload (`IFF_VNET_HDR` + TSO4/TSO6, and USO where the kernel has it, probed at
//! open, falling back cleanly where refused) the kernel hands us TCP super-packets of up
//! to 64 KiB: tun-rs splits each straight into per-segment batch slots (checksums fixed).
//! On the way back, decrypted segments of one flow are coalesced (tun-rs's GRO table) and
//! written as one GSO packet the kernel accepts.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Mutex, MutexGuard};

use tun_rs::{DeviceBuilder, ExpandBuffer, GROTable, SyncDevice, VIRTIO_NET_HDR_LEN};

use crate::batch::Batch;
use crate::error::Error;
use crate::io::TunIo;

/// Largest read with a virtio header: a 64 KiB super-packet plus the header.
const SUPER_PACKET: usize = 65_536 + VIRTIO_NET_HDR_LEN;

/// Transmit queue of the device (the kernel default is 500): bursts from the inner stack
/// wait here instead of being dropped while a batch is being sealed.
const TX_QUEUE_LEN: u32 = 5_000;

/// State of the coalescing writer.
struct Writer {
    gro: GROTable,
    bufs: Vec<Vec<u8>>,
}

/// A TUN device opened by this process.
pub struct TunDevice {
    /// Non-blocking: the packet paths wait for it in their `epoll` sets.
    dev: SyncDevice,
    name: String,
    offload: bool,
    read_buf: Mutex<Vec<u8>>,
    writer: Mutex<Writer>,
}

impl TunDevice {
    /// Creates (or attaches to) the TUN device `name` with `mtu`; `up` also sets the link up.
    pub fn create(name: &str, mtu: u16, up: bool) -> Result<Self, Error> {
        Self::open(name, mtu, up, false)
    }

    /// Like [`TunDevice::create`], but the device is made persistent: it stays, with its
    /// addresses and routes, when this process exits, and a restarted process attaches to
    /// it again (packets routed to it meanwhile are dropped, not misrouted).
    pub fn create_persistent(name: &str, mtu: u16, up: bool) -> Result<Self, Error> {
        Self::open(name, mtu, up, true)
    }

    /// Like [`TunDevice::create`], without offload: one packet per read and write, as
    /// with `SWG_DISABLE_OFFLOAD`.
    pub fn create_without_offload(name: &str, mtu: u16, up: bool) -> Result<Self, Error> {
        Self::open_with(name, clamp_mtu(name, mtu), up, false, false)
    }

    fn open(name: &str, mtu: u16, up: bool, persist: bool) -> Result<Self, Error> {
        let mtu = clamp_mtu(name, mtu);
        // SWG_DISABLE_OFFLOAD forces the fallback (for tests and for kernels that
        // misbehave with offload).
        let refused = match std::env::var_os("SWG_DISABLE_OFFLOAD") {
            Some(_) => "disabled by SWG_DISABLE_OFFLOAD".to_string(),
            None => match Self::open_with(name, mtu, up, persist, true) {
                Ok(dev) => return Ok(dev),
                Err(e) => e.to_string(),
            },
        };
        tracing::info!(device = name, reason = %refused, "TUN offload refused; using plain reads and writes");
        Self::open_with(name, mtu, up, persist, false)
    }

    /// Makes the device outlive this process (on), or go with it (off). A process that
    /// hands its interface to a successor makes it persistent while neither holds it.
    pub fn set_persistent(&self, on: bool) -> io::Result<()> {
        crate::sys::set_tun_persist(self.dev.as_fd(), on)
    }

    /// True when the device runs with `IFF_VNET_HDR` and segmentation offload.
    pub fn offload(&self) -> bool {
        self.offload
    }

    fn open_with(
        name: &str,
        mtu: u16,
        up: bool,
        persist: bool,
        offload: bool,
    ) -> Result<Self, Error> {
        let err = |source: io::Error| Error::Tun {
            name: name.to_string(),
            source,
        };
        if name.is_empty()
            || name.len() > 15
            || name.contains('/')
            || name.contains(char::is_whitespace)
        {
            return Err(err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "interface names are 1 to 15 bytes without '/' or spaces",
            )));
        }
        let mut builder = DeviceBuilder::new()
            .name(name)
            .mtu(mtu)
            .packet_information(false)
            .offload(offload)
            .tx_queue_len(TX_QUEUE_LEN);
        if up {
            builder = builder.enable(true);
        }
        let dev = builder.build_sync().map_err(err)?;
        dev.set_nonblocking(true).map_err(err)?;
        if persist {
            dev.persist().map_err(err)?;
        }
        let name = dev.name().map_err(err)?;
        let offload = offload && dev.tcp_gso();
        Ok(Self {
            dev,
            name,
            offload,
            read_buf: Mutex::new(if offload {
                vec![0u8; SUPER_PACKET]
            } else {
                Vec::new()
            }),
            writer: Mutex::new(Writer {
                gro: GROTable::new(),
                bufs: Vec::new(),
            }),
        })
    }

    /// Writes a batch through tun-rs's coalescer: segments of one flow become one GSO write.
    fn send_coalesced(&self, batch: &mut Batch) -> io::Result<usize> {
        let headroom = batch.headroom();
        let mut w = lock(&self.writer);
        let Writer { gro, bufs } = &mut *w;
        if headroom >= VIRTIO_NET_HDR_LEN {
            // The virtio header goes into the headroom and segments coalesce inside the
            // batch's own slots: the packets are not copied again.
            let mut slots: Vec<SlotBuf<'_>> = batch
                .filled_slots_mut()
                .map(|(buf, len)| SlotBuf { buf, len })
                .collect();
            self.dev.send_multiple(gro, &mut slots, headroom)
        } else {
            // tun-rs only coalesces into a buffer whose capacity already holds the whole
            // super-packet, so every buffer gets a 64 KiB allocation once (and is kept).
            if bufs.len() < batch.len() {
                bufs.resize_with(batch.len(), || {
                    Vec::with_capacity(SUPER_PACKET + VIRTIO_NET_HDR_LEN)
                });
            }
            let bufs = &mut bufs[..batch.len()];
            for (i, buf) in bufs.iter_mut().enumerate() {
                buf.clear();
                buf.resize(VIRTIO_NET_HDR_LEN, 0);
                buf.extend_from_slice(batch.packet(i));
            }
            self.dev.send_multiple(gro, bufs, VIRTIO_NET_HDR_LEN)
        }
    }

    /// The kernel's name for the device.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl TunIo for TunDevice {
    fn readiness(&self) -> BorrowedFd<'_> {
        self.dev.as_fd()
    }

    fn recv_batch(&self, batch: &mut Batch) -> io::Result<bool> {
        if !self.offload {
            return self.recv_plain(batch);
        }
        let mut read_buf = lock(&self.read_buf);
        let mut sizes = [0usize; 128];
        // A super-packet may split into up to 64 KiB / MSS segments: only read while that
        // many slots are free.
        while batch.capacity() - batch.len() >= 64 {
            let free = batch.free_slots();
            let n_free = free.len().min(sizes.len());
            let r =
                self.dev
                    .recv_multiple(&mut read_buf, &mut free[..n_free], &mut sizes[..n_free], 0);
            let n = match r {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.raw_os_error().is_none() => {
                    // A malformed super-packet: drop it, keep what we have.
                    tracing::debug!(device = %self.name, error = %e, "dropping an unsplittable TUN packet");
                    continue;
                }
                Err(e) => return Err(e),
            };
            for &len in &sizes[..n] {
                batch.commit(len, unspecified(), 0);
            }
        }
        Ok(false)
    }

    fn send_batch(&self, batch: &mut Batch) -> usize {
        if !self.offload {
            return self.send_plain(batch);
        }
        let headroom = batch.headroom();
        let sent = if headroom >= VIRTIO_NET_HDR_LEN && batch.len() == 1 {
            // A lone packet (a ping, an ACK) has nothing to coalesce with: it goes out
            // behind a zeroed virtio header (no GSO, checksum complete), which is what
            // tun-rs's coalescer writes for such a packet, without a pass through it.
            let (buf, len) = batch.filled_slots_mut().next().expect("one packet");
            let start = headroom - VIRTIO_NET_HDR_LEN;
            buf[start..headroom].fill(0);
            self.dev.send(&buf[start..len])
        } else {
            self.send_coalesced(batch)
        };
        match sent {
            Ok(_) => 0,
            Err(e) => {
                tracing::debug!(device = %self.name, error = %e, "TUN batch write failed");
                batch.len()
            }
        }
    }
}

/// The largest MTU a WireGuard message can carry (an IPv4 datagram holds at most 65535
/// bytes); a larger one is lowered to it, with a warning.
fn clamp_mtu(name: &str, mtu: u16) -> u16 {
    let max = crate::unroutable::MAX_INNER_PACKET as u16;
    if mtu > max {
        tracing::warn!(
            device = name,
            asked = mtu,
            mtu = max,
            "MTU lowered to the largest a WireGuard message carries"
        );
    }
    mtu.min(max)
}

/// Only one thread reads and one writes, so these locks are never contended; a panic
/// while holding one leaves plain buffers behind, which are fine to reuse.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A batch slot as tun-rs's coalescer sees it: the whole slot is capacity, the first
/// `len` bytes (headroom + packet) are in use. Coalescing appends to it in place.
struct SlotBuf<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl AsRef<[u8]> for SlotBuf<'_> {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl AsMut<[u8]> for SlotBuf<'_> {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
}

impl ExpandBuffer for SlotBuf<'_> {
    fn buf_capacity(&self) -> usize {
        self.buf.len()
    }

    // tun-rs checks `buf_capacity` before it grows a buffer, so these never run out of
    // room; should one ever be asked to, it stops at the slot's end rather than panic.
    fn buf_resize(&mut self, new_len: usize, value: u8) {
        debug_assert!(new_len <= self.buf.len());
        let new_len = new_len.min(self.buf.len());
        if new_len > self.len {
            self.buf[self.len..new_len].fill(value);
        }
        self.len = new_len;
    }

    fn buf_extend_from_slice(&mut self, src: &[u8]) {
        debug_assert!(self.len + src.len() <= self.buf.len());
        let end = (self.len + src.len()).min(self.buf.len());
        self.buf[self.len..end].copy_from_slice(&src[..end - self.len]);
        self.len = end;
    }
}

impl TunDevice {
    fn recv_plain(&self, batch: &mut Batch) -> io::Result<bool> {
        while let Some(slot) = batch.next_slot() {
            match self.dev.recv(slot) {
                Ok(n) => batch.commit(n, unspecified(), 0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    fn send_plain(&self, batch: &Batch) -> usize {
        let mut failed = 0;
        for i in 0..batch.len() {
            if let Err(e) = self.dev.send(batch.packet(i)) {
                tracing::debug!(device = %self.name, error = %e, "TUN write failed");
                failed += 1;
            }
        }
        failed
    }
}

fn unspecified() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([0, 0, 0, 0], 0))
}

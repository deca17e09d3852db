//! Fixed-size packet batches: slots allocated once and reused for every batch, so the hot
//! paths allocate nothing per packet.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// Packets per batch on every path: one 64 KiB TCP super-packet from an offloading TUN
/// splits into up to ~48 segments, so a batch holds two of them.
pub const BATCH_SIZE: usize = 128;
/// Size of one slot: the largest UDP payload or IP packet plus room for WireGuard overhead.
pub const SLOT_SIZE: usize = 65_536 + 64;

const UNSPECIFIED: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// A batch of packets: `len` filled slots, each with a length, an address (UDP peer, or
/// unused for TUN) and a segment size (for GRO-coalesced datagrams; 0 = one datagram).
pub struct Batch {
    pub(crate) slots: Vec<Box<[u8]>>,
    pub(crate) lens: Vec<usize>,
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) strides: Vec<usize>,
    pub(crate) len: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// A batch of [`BATCH_SIZE`] empty slots of [`SLOT_SIZE`] bytes.
    pub fn new() -> Self {
        Self::with_capacity(BATCH_SIZE, SLOT_SIZE)
    }

    /// A batch with `n` slots of `size` bytes.
    pub fn with_capacity(n: usize, size: usize) -> Self {
        Self {
            slots: (0..n).map(|_| vec![0u8; size].into_boxed_slice()).collect(),
            lens: vec![0; n],
            addrs: vec![UNSPECIFIED; n],
            strides: vec![0; n],
            len: 0,
        }
    }

    /// Number of filled slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no slot is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when every slot is filled.
    pub fn is_full(&self) -> bool {
        self.len == self.slots.len()
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Empties the batch (slots stay allocated).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Total bytes in filled slots.
    pub fn bytes(&self) -> u64 {
        self.lens[..self.len].iter().map(|&l| l as u64).sum()
    }

    /// The bytes of filled slot `i`.
    pub fn packet(&self, i: usize) -> &[u8] {
        &self.slots[i][..self.lens[i]]
    }

    /// The address of filled slot `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    /// The GRO segment size of filled slot `i` (0 = a single datagram).
    pub fn stride(&self, i: usize) -> usize {
        self.strides[i]
    }

    /// The whole buffer of the next free slot, to be written and then [`Batch::commit`]ted.
    pub fn next_slot(&mut self) -> Option<&mut [u8]> {
        let i = self.len;
        self.slots.get_mut(i).map(|s| &mut s[..])
    }

    /// Marks the next free slot as filled with `len` bytes for `addr`.
    pub fn commit(&mut self, len: usize, addr: SocketAddr, stride: usize) {
        let i = self.len;
        self.lens[i] = len;
        self.addrs[i] = addr;
        self.strides[i] = stride;
        self.len += 1;
    }

    /// Copies `bytes` into the next free slot; false when the batch is full.
    pub fn push(&mut self, bytes: &[u8], addr: SocketAddr) -> bool {
        match self.next_slot() {
            Some(slot) if slot.len() >= bytes.len() => {
                slot[..bytes.len()].copy_from_slice(bytes);
                self.commit(bytes.len(), addr, 0);
                true
            }
            _ => false,
        }
    }

    /// Iterates the datagrams of filled slots, splitting GRO-coalesced slots by stride.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        (0..self.len).flat_map(move |i| {
            let pkt = self.packet(i);
            let stride = match self.strides[i] {
                0 => pkt.len().max(1),
                s => s,
            };
            pkt.chunks(stride).map(move |c| (c, self.addrs[i]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_commit_and_split() {
        let mut b = Batch::with_capacity(2, 16);
        let a: SocketAddr = "1.2.3.4:5".parse().unwrap();
        assert!(b.push(b"hello", a));
        let slot = b.next_slot().unwrap();
        slot[..6].copy_from_slice(b"aabbcc");
        b.commit(6, a, 2);
        assert!(b.is_full());
        assert!(!b.push(b"x", a));
        let got: Vec<&[u8]> = b.datagrams().map(|(d, _)| d).collect();
        assert_eq!(got, vec![&b"hello"[..], b"aa", b"bb", b"cc"]);
        b.clear();
        assert!(b.is_empty());
        assert!(!b.push(&[0u8; 17], a));
    }
}

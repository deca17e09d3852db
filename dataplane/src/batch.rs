//! Fixed-size packet batches: slots allocated once and reused for every batch, so the hot
//! paths allocate nothing per packet.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

/// Packets per batch on every path: one 64 KiB TCP super-packet from an offloading TUN
/// splits into up to ~48 segments, so a batch holds two of them.
pub const BATCH_SIZE: usize = 128;
/// Size of one slot: the largest UDP payload or IP packet plus room for WireGuard overhead.
pub const SLOT_SIZE: usize = 65_536 + 64;

/// Free bytes kept in front of every packet of a batch bound for a TUN device, where a
/// virtio-net header (10 bytes) is written without moving the packet.
pub const TUN_HEADROOM: usize = 16;

const UNSPECIFIED: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// A batch of packets: `len` filled slots, each with a length, an address (UDP peer, or
/// unused for TUN) and a segment size (for GRO-coalesced datagrams; 0 = one datagram).
///
/// A batch is either *slotted* (one fixed buffer per packet, for receiving) or *packed*
/// (one buffer, packets stored back to back). A packed batch of sealed datagrams hands
/// runs of equal-size datagrams to a GSO send without copying them again.
pub struct Batch {
    slots: Vec<Box<[u8]>>,
    /// Per packet: where it starts, its length, address and stride, side by side so a
    /// packet's bookkeeping is one cache line rather than one in each of four arrays.
    meta: Vec<Meta>,
    len: usize,
    /// Bytes left free in front of each packet (slotted batches).
    headroom: usize,
    /// Packed: the most packets, the end of the stored bytes, and the smallest free tail
    /// handed out as a slot. `None` for a slotted batch.
    packed: Option<Packed>,
}

#[derive(Clone, Copy)]
struct Meta {
    offset: u32,
    len: u32,
    /// Who the packet is for ([`NO_TAG`]: nobody in particular): senders count by it.
    tag: u32,
    /// Received: the interface the datagram arrived on (0: unknown).
    ifindex: u32,
    /// GRO segment size (kernel `gso_size` is 16 bits).
    stride: u16,
    /// [`FAILED`], [`SOURCE_REFUSED`]: what a send made of this packet.
    flags: u8,
    /// Our address: where a received datagram was sent to, or where to send one from
    /// (`None`: the kernel's choice).
    local: Option<IpAddr>,
    /// The remote address: where a datagram came from or goes to.
    addr: SocketAddr,
}

/// A send failed for this packet.
const FAILED: u8 = 1;
/// The kernel refused this packet's local address (gone from the host): it was sent from
/// the kernel's choice instead.
const SOURCE_REFUSED: u8 = 2;

/// The tag of a packet that belongs to no peer (a cookie reply, a received packet).
pub const NO_TAG: u32 = u32::MAX;

const EMPTY: Meta = Meta {
    offset: 0,
    len: 0,
    tag: NO_TAG,
    ifindex: 0,
    stride: 0,
    flags: 0,
    local: None,
    addr: UNSPECIFIED,
};

#[derive(Clone, Copy)]
struct Packed {
    max: usize,
    end: usize,
    min_free: usize,
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
            meta: vec![EMPTY; n],
            len: 0,
            headroom: 0,
            packed: None,
        }
    }

    /// A slotted batch whose packets start `headroom` bytes into their slots.
    pub fn with_headroom(n: usize, size: usize, headroom: usize) -> Self {
        assert!(headroom < size, "headroom must leave room for a packet");
        Self {
            headroom,
            ..Self::with_capacity(n, size)
        }
    }

    /// Bytes free in front of each packet.
    pub fn headroom(&self) -> usize {
        self.headroom
    }

    /// A packed batch of up to `n` packets sharing one buffer: [`BATCH_SIZE`] packets of
    /// `typical` bytes fit, and every slot handed out has at least [`SLOT_SIZE`] bytes.
    pub fn packed(n: usize, typical: usize) -> Self {
        Self::packed_with(n, n * typical + SLOT_SIZE, SLOT_SIZE)
    }

    /// A packed batch of up to `n` packets in `bytes`, handing out slots of at least
    /// `min_free` bytes.
    pub fn packed_with(n: usize, bytes: usize, min_free: usize) -> Self {
        Self {
            slots: vec![vec![0u8; bytes.max(min_free)].into_boxed_slice()],
            meta: vec![EMPTY; n],
            len: 0,
            headroom: 0,
            packed: Some(Packed {
                max: n,
                end: 0,
                min_free,
            }),
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

    /// True when no further slot can be handed out.
    pub fn is_full(&self) -> bool {
        match self.packed {
            None => self.len == self.slots.len(),
            Some(p) => self.len == p.max || self.slots[0].len() - p.end < p.min_free,
        }
    }

    /// Most packets the batch holds.
    pub fn capacity(&self) -> usize {
        self.meta.len()
    }

    /// Empties the batch (buffers stay allocated).
    pub fn clear(&mut self) {
        self.len = 0;
        if let Some(p) = &mut self.packed {
            p.end = 0;
        }
    }

    /// Total bytes in filled slots.
    pub fn bytes(&self) -> u64 {
        self.meta[..self.len].iter().map(|m| u64::from(m.len)).sum()
    }

    /// The bytes of filled slot `i`.
    #[inline]
    pub fn packet(&self, i: usize) -> &[u8] {
        let buf = if self.packed.is_some() {
            &self.slots[0]
        } else {
            &self.slots[i]
        };
        let m = &self.meta[i];
        &buf[m.offset as usize..(m.offset + m.len) as usize]
    }

    /// Packets `i..i + n` as one byte string, if they lie back to back (packed batches).
    pub fn run(&self, i: usize, n: usize) -> Option<&[u8]> {
        self.packed?;
        let run = &self.meta[i..i + n];
        let (first, last) = (run[0], run[n - 1]);
        let (start, end) = (first.offset as usize, (last.offset + last.len) as usize);
        let sum: usize = run.iter().map(|m| m.len as usize).sum();
        (end - start == sum).then(|| &self.slots[0][start..end])
    }

    /// The address of filled slot `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.meta[i].addr
    }

    /// The GRO segment size of filled slot `i` (0 = a single datagram).
    pub fn stride(&self, i: usize) -> usize {
        usize::from(self.meta[i].stride)
    }

    /// The tag filled slot `i` was committed with ([`NO_TAG`] if none).
    #[inline]
    pub fn tag(&self, i: usize) -> u32 {
        self.meta[i].tag
    }

    /// Our address for filled slot `i`: where it was received, or where to send it from.
    #[inline]
    pub fn local(&self, i: usize) -> Option<IpAddr> {
        self.meta[i].local
    }

    /// The interface filled slot `i` was received on (0: unknown).
    pub fn ifindex(&self, i: usize) -> u32 {
        self.meta[i].ifindex
    }

    /// Sets where filled slot `i` was received: our address and the interface.
    pub fn set_received_at(&mut self, i: usize, local: Option<IpAddr>, ifindex: u32) {
        self.meta[i].local = local;
        self.meta[i].ifindex = ifindex;
    }

    /// Marks packets `i..i + n` as not sent (senders call this).
    pub fn mark_failed(&mut self, i: usize, n: usize) {
        for m in &mut self.meta[i..i + n] {
            m.flags |= FAILED;
        }
    }

    /// True when a send failed for filled slot `i`.
    #[inline]
    pub fn failed(&self, i: usize) -> bool {
        self.meta[i].flags & FAILED != 0
    }

    /// Marks packets `i..i + n` as sent from the kernel's choice of address because the
    /// one asked for was refused.
    pub fn mark_source_refused(&mut self, i: usize, n: usize) {
        for m in &mut self.meta[i..i + n] {
            m.flags |= SOURCE_REFUSED;
        }
    }

    /// True when the local address of filled slot `i` was refused by the kernel.
    #[inline]
    pub fn source_refused(&self, i: usize) -> bool {
        self.meta[i].flags & SOURCE_REFUSED != 0
    }

    /// The whole buffer of the next free slot, to be written and then [`Batch::commit`]ted.
    #[inline]
    pub fn next_slot(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        match self.packed {
            None => Some(&mut self.slots[self.len][self.headroom..]),
            Some(p) => Some(&mut self.slots[0][p.end..]),
        }
    }

    /// The free slots of a slotted batch, for a vectored receive that then commits them
    /// in order.
    pub(crate) fn free_slots(&mut self) -> &mut [Box<[u8]>] {
        assert!(
            self.packed.is_none() && self.headroom == 0,
            "receiving into a packed batch or one with headroom"
        );
        &mut self.slots[self.len..]
    }

    /// The filled slots of a slotted batch, whole (headroom included), with the end of
    /// each packet: for writers that prepend a header in the headroom.
    pub(crate) fn filled_slots_mut(&mut self) -> impl Iterator<Item = (&mut [u8], usize)> {
        assert!(self.packed.is_none(), "a packed batch has no slots");
        let n = self.len;
        self.slots[..n]
            .iter_mut()
            .zip(&self.meta[..n])
            .map(|(s, m)| (&mut s[..], (m.offset + m.len) as usize))
    }

    /// Marks the next free slot as filled with `len` bytes for `addr`.
    #[inline]
    pub fn commit(&mut self, len: usize, addr: SocketAddr, stride: usize) {
        self.commit_tagged(len, addr, stride, NO_TAG);
    }

    /// Like [`Batch::commit`], for a packet tagged `tag` (the peer it goes to).
    #[inline]
    pub fn commit_tagged(&mut self, len: usize, addr: SocketAddr, stride: usize, tag: u32) {
        self.commit_path(len, addr, None, stride, tag);
    }

    /// Like [`Batch::commit_tagged`], sent from our address `local` (`None`: the kernel
    /// picks).
    #[inline]
    pub fn commit_path(
        &mut self,
        len: usize,
        addr: SocketAddr,
        local: Option<IpAddr>,
        stride: usize,
        tag: u32,
    ) {
        let offset = match &mut self.packed {
            None => self.headroom,
            Some(p) => {
                let at = p.end;
                p.end += len;
                at
            }
        };
        // Slots and packed buffers are far below 4 GiB.
        self.meta[self.len] = Meta {
            offset: offset as u32,
            len: len as u32,
            tag,
            ifindex: 0,
            stride: stride.min(usize::from(u16::MAX)) as u16,
            flags: 0,
            local,
            addr,
        };
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
        self.received().map(|(d, from, _)| (d, from))
    }

    /// Like [`Batch::datagrams`], with where each arrived: our address and the interface
    /// (when the transport knows them).
    pub fn received(&self) -> impl Iterator<Item = (&[u8], SocketAddr, Option<(IpAddr, u32)>)> {
        (0..self.len).flat_map(move |i| {
            let m = &self.meta[i];
            let (pkt, addr) = (self.packet(i), m.addr);
            let local = m.local.map(|ip| (ip, m.ifindex));
            let stride = match usize::from(m.stride) {
                0 => pkt.len().max(1),
                s => s,
            };
            pkt.chunks(stride).map(move |c| (c, addr, local))
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

    #[test]
    fn packed_batches_store_packets_back_to_back() {
        let a: SocketAddr = "1.2.3.4:5".parse().unwrap();
        let b: SocketAddr = "1.2.3.4:6".parse().unwrap();
        let mut p = Batch::packed_with(8, 64, 16);
        assert!(p.push(b"0123456789", a));
        assert!(p.push(b"abcdefghij", a));
        assert!(p.push(b"xyz", b));
        assert_eq!(p.packet(1), b"abcdefghij");
        assert_eq!(p.run(0, 2), Some(&b"0123456789abcdefghij"[..]));
        assert_eq!(p.run(1, 2), Some(&b"abcdefghijxyz"[..]));
        // 23 of 64 bytes used: the next tail (41) is still at least 16.
        assert_eq!(p.next_slot().map(|s| s.len()), Some(41));
        assert!(p.push(&[1u8; 30], a));
        // 11 bytes left, below the smallest slot handed out.
        assert!(p.is_full());
        assert!(p.next_slot().is_none());
        p.clear();
        assert_eq!(p.next_slot().map(|s| s.len()), Some(64));
        // A slotted batch never claims a run.
        let mut s = Batch::with_capacity(2, 16);
        s.push(b"ab", a);
        s.push(b"cd", a);
        assert_eq!(s.run(0, 2), None);
    }

    #[test]
    fn headroom_stays_free_in_front_of_packets() {
        let a: SocketAddr = "1.2.3.4:5".parse().unwrap();
        let mut b = Batch::with_headroom(2, 32, 10);
        assert_eq!(b.next_slot().map(|s| s.len()), Some(22));
        assert!(b.push(b"hello", a));
        assert_eq!(b.packet(0), b"hello");
        let (slot, end) = b.filled_slots_mut().next().unwrap();
        assert_eq!((slot.len(), end), (32, 15));
        assert_eq!(&slot[10..end], b"hello");
    }
}

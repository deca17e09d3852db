//! TUN reads with offload: what `TunDevice::recv_batch` does with each read, a virtio-net
//! header and a super-packet split into the free slots of a production batch (tun-rs's
//! `gso_split`). Checked: no panic, and every segment fits its slot and is committed as
//! the batch expects.

use tun_rs::{VIRTIO_NET_HDR_LEN, VirtioNetHdr, gso_split};

use crate::Batch;

/// Input: a virtio-net header (10 bytes) and the packet after it, as read from a TUN.
pub fn tun_super_packet(data: &[u8]) {
    if data.len() <= VIRTIO_NET_HDR_LEN {
        return;
    }
    let Ok(hdr) = VirtioNetHdr::decode(&data[..VIRTIO_NET_HDR_LEN]) else {
        return;
    };
    let mut packet = data[VIRTIO_NET_HDR_LEN..].to_vec();
    let mut batch = Batch::new();
    let mut sizes = [0usize; 128];
    let free = batch.free_slots();
    let n_free = free.len().min(sizes.len());
    let v6 = hdr.gso_type == tun_rs::VIRTIO_NET_HDR_GSO_TCPV6;
    if hdr.gso_type == 0 {
        return;
    }
    let Ok(n) = gso_split(
        &mut packet,
        hdr,
        &mut free[..n_free],
        &mut sizes[..n_free],
        0,
        v6,
    ) else {
        return;
    };
    assert!(n <= n_free, "more segments than slots");
    for &len in &sizes[..n] {
        assert!(
            len <= crate::batch::SLOT_SIZE,
            "a segment larger than its slot"
        );
        batch.commit(len, "0.0.0.0:0".parse().expect("address"), 0);
    }
    assert_eq!(batch.len(), n);
}

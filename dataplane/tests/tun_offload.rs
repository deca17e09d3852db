//! tun-rs's TSO splitter, as `TunDevice` uses it on offload reads: IPv4 and IPv6
//! super-packets split into the right segments with valid checksums (no root needed).

use tun_rs::{VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VirtioNetHdr, gso_split};

/// Ones'-complement sum, folded.
fn sum(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

fn tcp_ok(src: &[u8], dst: &[u8], tcp: &[u8]) -> bool {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(src);
    pseudo.extend_from_slice(dst);
    if src.len() == 4 {
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    } else {
        pseudo.extend_from_slice(&(tcp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 6]);
    }
    sum(tcp, sum(&pseudo, 0)) == 0xffff
}

/// A TSO super-packet as the kernel hands it over: IP + TCP header, `payload`, the TCP
/// checksum left partial (NEEDS_CSUM).
fn super_packet(v6: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    if v6 {
        p.extend_from_slice(&[0x60, 0, 0, 0]);
        p.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[6, 64]);
        p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    } else {
        p.extend_from_slice(&[0x45, 0]);
        p.extend_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    }
    // TCP: ports 5201 -> 40000, seq 1000, ack 1, data offset 5, ACK|PSH, window.
    p.extend_from_slice(&[0x14, 0x51, 0x9c, 0x40]);
    p.extend_from_slice(&1000u32.to_be_bytes());
    p.extend_from_slice(&1u32.to_be_bytes());
    p.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    p.extend_from_slice(payload);
    p
}

fn split(v6: bool) {
    let payload: Vec<u8> = (0..3500u32).map(|i| (i % 251) as u8).collect();
    let mut input = super_packet(v6, &payload);
    let ip_len = if v6 { 40 } else { 20 };
    let hdr = VirtioNetHdr {
        flags: 1, // NEEDS_CSUM
        gso_type: if v6 {
            VIRTIO_NET_HDR_GSO_TCPV6
        } else {
            VIRTIO_NET_HDR_GSO_TCPV4
        },
        hdr_len: (ip_len + 20) as u16,
        gso_size: 1000,
        csum_start: ip_len as u16,
        csum_offset: 16,
    };
    let mut out = vec![vec![0u8; 2000]; 8];
    let mut sizes = vec![0usize; 8];
    let n = gso_split(&mut input, hdr, &mut out, &mut sizes, 0, v6).unwrap();
    assert_eq!(n, 4, "3500 bytes at MSS 1000");
    let mut rebuilt = Vec::new();
    for (i, seg) in out.iter().take(n).enumerate() {
        let seg = &seg[..sizes[i]];
        let data_len = if i < 3 { 1000 } else { 500 };
        assert_eq!(seg.len(), ip_len + 20 + data_len);
        let (src, dst) = if v6 {
            (&seg[8..24], &seg[24..40])
        } else {
            (&seg[12..16], &seg[16..20])
        };
        if v6 {
            assert_eq!(u16::from_be_bytes([seg[4], seg[5]]) as usize, 20 + data_len);
        } else {
            assert_eq!(u16::from_be_bytes([seg[2], seg[3]]) as usize, seg.len());
            assert_eq!(
                sum(&seg[..20], 0),
                0xffff,
                "IPv4 header checksum of segment {i}"
            );
        }
        let tcp = &seg[ip_len..];
        assert!(tcp_ok(src, dst, tcp), "TCP checksum of segment {i}");
        assert_eq!(
            u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            1000 + 1000 * i as u32
        );
        rebuilt.extend_from_slice(&tcp[20..]);
    }
    assert_eq!(rebuilt, payload);
}

#[test]
fn tso_super_packets_split_with_valid_checksums_v4() {
    split(false);
}

#[test]
fn tso_super_packets_split_with_valid_checksums_v6() {
    split(true);
}

//! Seed inputs for the fuzz targets (written by the ignored `write_seed_corpus` tool).

use crate::testing::ipv4_packet;

/// A UDP-in-IPv4 packet from `src` to `dst`.
pub(super) fn ipv4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut p = ipv4_packet(
        src,
        dst,
        &[0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0, 0, 1, 2, 3, 4],
    );
    p[9] = 17;
    p
}

/// One record of the session target.
pub(super) fn session_record(op: u8, bytes: &[u8]) -> Vec<u8> {
    let mut r = vec![op];
    r.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    r.extend_from_slice(bytes);
    r
}

pub(super) fn session() -> Vec<(&'static str, Vec<u8>)> {
    let allowed = ipv4([10, 0, 0, 5], [10, 9, 0, 1]);
    let spoofed = ipv4([10, 1, 0, 5], [10, 9, 0, 1]);
    let mut mixed = session_record(0, &allowed);
    mixed.extend(session_record(1, b"\x04\0\0\0garbage that is no message"));
    mixed.extend(session_record(2, &allowed));
    mixed.extend(session_record(0, &spoofed));
    vec![
        ("sealed-allowed", session_record(0, &allowed)),
        ("sealed-spoofed", session_record(0, &spoofed)),
        ("mixed", mixed),
    ]
}

pub(super) fn uapi_sequences() -> Vec<(&'static str, String)> {
    let k = |b: u8| crate::key::Key([b; 32]).to_hex();
    vec![
        (
            "set-move-remove",
            format!(
                "set=1\nprivate_key={}\nlisten_port=7\npublic_key={}\nendpoint=192.0.2.1:51820\n\
                 allowed_ip=10.0.0.0/24\n\nset=1\npublic_key={}\nallowed_ip=10.0.0.0/24\n\n\
                 set=1\npublic_key={}\nremove=true\n\nget=1\n\n",
                k(1),
                k(2),
                k(3),
                k(2)
            ),
        ),
        (
            "refused-then-fine",
            format!(
                "set=1\npublic_key={}\nallowed_ip=10.0.0.0/24\npublic_key={}\nallowed_ip=nope\n\n\
                 set=1\nreplace_peers=true\npublic_key={}\npersistent_keepalive_interval=25\n\n",
                k(4),
                k(5),
                k(6)
            ),
        ),
    ]
}

pub(super) fn super_packets() -> Vec<(&'static str, Vec<u8>)> {
    // TSO, IPv4: 3000 bytes of payload at MSS 1000, checksum partial.
    let mut p = vec![1u8, 1]; // NEEDS_CSUM, GSO_TCPV4
    p.extend_from_slice(&40u16.to_le_bytes()); // hdr_len
    p.extend_from_slice(&1000u16.to_le_bytes()); // gso_size
    p.extend_from_slice(&20u16.to_le_bytes()); // csum_start
    p.extend_from_slice(&16u16.to_le_bytes()); // csum_offset
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(40u16 + 3000).to_be_bytes());
    p.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    p.extend_from_slice(&[0x14, 0x51, 0x9c, 0x40, 0, 0, 3, 232, 0, 0, 0, 1]);
    p.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    p.extend(std::iter::repeat_n(7u8, 3000));
    vec![("tso-v4", p)]
}

//! Checked read-only views of the bytes the dataplane routes: inner IP headers (source and
//! destination) and the WireGuard message header (type and receiver index).
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// WireGuard message types (the first byte; the next three are zero).
pub const MSG_HANDSHAKE_INIT: u8 = 1;
/// Handshake response.
pub const MSG_HANDSHAKE_RESPONSE: u8 = 2;
/// Cookie reply.
pub const MSG_COOKIE_REPLY: u8 = 3;
/// Transport data.
pub const MSG_DATA: u8 = 4;
/// Bytes a data message adds to its plaintext: header (16) and Poly1305 tag (16).
pub const DATA_OVERHEAD: usize = 32;

/// The addresses of an inner IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpHeader {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
}

/// Reads the source and destination of an IPv4 or IPv6 packet; `None` when the bytes are
/// too short or not IP.
pub fn ip_header(pkt: &[u8]) -> Option<IpHeader> {
    match pkt.first()? >> 4 {
        4 => {
            let src: [u8; 4] = pkt.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = pkt.get(16..20)?.try_into().ok()?;
            Some(IpHeader {
                src: Ipv4Addr::from(src).into(),
                dst: Ipv4Addr::from(dst).into(),
            })
        }
        6 => {
            let src: [u8; 16] = pkt.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = pkt.get(24..40)?.try_into().ok()?;
            Some(IpHeader {
                src: Ipv6Addr::from(src).into(),
                dst: Ipv6Addr::from(dst).into(),
            })
        }
        _ => None,
    }
}

/// The UDP facts of an inner packet that `unroutable.rs` needs to recognise a datagram
/// of ours, fragmented or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpView<'a> {
    /// Source port (0 in a later fragment, which has no UDP header).
    pub src_port: u16,
    /// The UDP payload (as far as this fragment holds it); `None` in a later fragment.
    pub payload: Option<&'a [u8]>,
    /// The IP identification of a fragmented datagram.
    pub fragment_id: u32,
    /// A first fragment: more follow.
    pub first_fragment: bool,
    /// A fragment other than the first.
    pub later_fragment: bool,
}

/// The UDP view of an IPv4 or IPv6 packet (directly after the IP header, or after an
/// IPv6 fragment header); `None` when it is not UDP or too short.
pub fn udp_view(pkt: &[u8]) -> Option<UdpView<'_>> {
    let (proto, start, id, offset, more) = match pkt.first()? >> 4 {
        4 => {
            let ihl = usize::from(pkt.first()? & 0x0f) * 4;
            let frag = u16::from_be_bytes(pkt.get(6..8)?.try_into().ok()?);
            let id = u16::from_be_bytes(pkt.get(4..6)?.try_into().ok()?);
            (
                *pkt.get(9)?,
                ihl,
                u32::from(id),
                frag & 0x1fff,
                frag & 0x2000 != 0,
            )
        }
        6 => match *pkt.get(6)? {
            44 => {
                let frag = u16::from_be_bytes(pkt.get(42..44)?.try_into().ok()?);
                let id = u32::from_be_bytes(pkt.get(44..48)?.try_into().ok()?);
                (*pkt.get(40)?, 48, id, frag >> 3, frag & 1 != 0)
            }
            next => (next, 40, 0, 0, false),
        },
        _ => return None,
    };
    if proto != 17 {
        return None;
    }
    if offset != 0 {
        return Some(UdpView {
            src_port: 0,
            payload: None,
            fragment_id: id,
            first_fragment: false,
            later_fragment: true,
        });
    }
    let header = pkt.get(start..start.checked_add(8)?)?;
    Some(UdpView {
        src_port: u16::from_be_bytes(header.get(0..2)?.try_into().ok()?),
        payload: pkt.get(start + 8..),
        fragment_id: id,
        first_fragment: more,
        later_fragment: false,
    })
}

/// The routing-relevant part of a WireGuard message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// Handshake initiation: the sender is found by decrypting its static key.
    HandshakeInit,
    /// A message addressed to one of our session indices.
    ToIndex {
        /// Message type.
        kind: u8,
        /// Our receiver index (peer slot index << 8 | session).
        receiver: u32,
    },
}

/// Classifies a datagram by type and exact length; `None` for anything that is not a
/// well-formed WireGuard message.
pub fn message(datagram: &[u8]) -> Option<Message> {
    let head: [u8; 4] = datagram.get(0..4)?.try_into().ok()?;
    if head[1..] != [0, 0, 0] {
        return None;
    }
    let receiver = || -> Option<u32> {
        let off = if head[0] == MSG_HANDSHAKE_RESPONSE {
            8
        } else {
            4
        };
        Some(u32::from_le_bytes(
            datagram.get(off..off + 4)?.try_into().ok()?,
        ))
    };
    match (head[0], datagram.len()) {
        (MSG_HANDSHAKE_INIT, 148) => Some(Message::HandshakeInit),
        (MSG_HANDSHAKE_RESPONSE, 92) | (MSG_COOKIE_REPLY, 64) => Some(Message::ToIndex {
            kind: head[0],
            receiver: receiver()?,
        }),
        (MSG_DATA, n) if n >= DATA_OVERHEAD => Some(Message::ToIndex {
            kind: MSG_DATA,
            receiver: receiver()?,
        }),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_and_ipv6_headers() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[12..16].copy_from_slice(&[10, 0, 0, 1]);
        v4[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let h = ip_header(&v4).unwrap();
        assert_eq!(h.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(h.dst, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(ip_header(&v4[..19]), None);

        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[23] = 1;
        v6[39] = 2;
        let h = ip_header(&v6).unwrap();
        assert_eq!(h.src, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(h.dst, "::2".parse::<IpAddr>().unwrap());
        assert_eq!(ip_header(&[]), None);
        assert_eq!(ip_header(&[0x50; 60]), None);
    }

    #[test]
    fn udp_views_of_whole_and_fragmented_packets() {
        let mut v4 = vec![0u8; 40];
        v4[0] = 0x45;
        v4[9] = 17;
        v4[20..22].copy_from_slice(&51820u16.to_be_bytes());
        v4[28] = 4;
        let u = udp_view(&v4).unwrap();
        assert_eq!((u.src_port, u.payload.map(<[u8]>::len)), (51820, Some(12)));
        assert!(!u.first_fragment && !u.later_fragment);
        v4[4..6].copy_from_slice(&9u16.to_be_bytes());
        v4[6] = 0x20;
        assert!(udp_view(&v4).unwrap().first_fragment);
        v4[6] = 0;
        v4[7] = 100;
        let later = udp_view(&v4).unwrap();
        assert!(later.later_fragment && later.payload.is_none() && later.fragment_id == 9);
        v4[9] = 6;
        assert_eq!(udp_view(&v4), None, "TCP");
        let mut v6 = vec![0u8; 60];
        v6[0] = 0x60;
        v6[6] = 44;
        v6[40] = 17;
        v6[43] = 1;
        v6[44..48].copy_from_slice(&5u32.to_be_bytes());
        v6[48..50].copy_from_slice(&7u16.to_be_bytes());
        let u = udp_view(&v6).unwrap();
        assert_eq!((u.src_port, u.fragment_id, u.first_fragment), (7, 5, true));
        assert_eq!(udp_view(&v6[..50]), None, "short");
    }

    #[test]
    fn message_classification() {
        let mut init = [0u8; 148];
        init[0] = 1;
        assert_eq!(message(&init), Some(Message::HandshakeInit));
        assert_eq!(message(&init[..147]), None);
        let mut resp = [0u8; 92];
        resp[0] = 2;
        resp[8..12].copy_from_slice(&0x1234_5600u32.to_le_bytes());
        assert_eq!(
            message(&resp),
            Some(Message::ToIndex {
                kind: 2,
                receiver: 0x1234_5600
            })
        );
        let mut data = [0u8; 32];
        data[0] = 4;
        data[4] = 7;
        assert_eq!(
            message(&data),
            Some(Message::ToIndex {
                kind: 4,
                receiver: 7
            })
        );
        data[1] = 1;
        assert_eq!(message(&data), None);
        assert_eq!(message(&[4, 0, 0]), None);
    }
}

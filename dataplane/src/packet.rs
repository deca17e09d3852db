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

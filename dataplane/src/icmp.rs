//! ICMP errors for packets the tunnel cannot carry, written back into the TUN as the
//! kernel's WireGuard sends them: destination unreachable (IPv4 host unreachable, IPv6
//! address unreachable) for a destination no peer's allowed IPs cover, and "fragmentation
//! needed" / "packet too big" for a packet larger than a WireGuard message can hold.
//!
//! A userspace interface cannot answer from one of the host's own addresses: a packet
//! written into the TUN with a local source is a martian and dropped. So the error comes
//! from the packet's own destination (`From 10.4.9.9 ... Destination Host Unreachable`),
//! which also passes strict reverse-path filtering, since that address routes through
//! the TUN. Never in answer to an ICMP error, a fragment other than the first, or a
//! multicast, broadcast or unspecified address (RFC 1122 3.2.2, RFC 4443 2.4), and at
//! most [`PER_SECOND`] a second (bursts of [`BURST`]).
#![deny(clippy::indexing_slicing)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

/// ICMP errors a second at most (the kernel's default `icmp_msgs_per_sec` is 1000 for
/// the whole host; this is one interface).
pub(crate) const PER_SECOND: u32 = 100;
/// Errors sent at once after a quiet spell.
pub(crate) const BURST: u32 = 20;

/// Bytes of the offending packet quoted in an ICMPv4 error: the whole error stays within
/// the 576 bytes every IPv4 host accepts (RFC 1812 4.3.2.3).
const QUOTE_V4: usize = 576 - 20 - 8;
/// The same for ICMPv6: within the minimum IPv6 MTU of 1280 (RFC 4443 2.4 (c)).
const QUOTE_V6: usize = 1280 - 40 - 8;

/// What went wrong with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    /// No peer's allowed IPs cover its destination.
    Unreachable,
    /// It is larger than `mtu` (the largest packet a WireGuard message can carry).
    TooBig {
        /// The most the path carries.
        mtu: u16,
    },
}

/// A token bucket for the errors sent.
pub(crate) struct IcmpLimiter {
    tokens: u32,
    updated: Option<Instant>,
}

impl Default for IcmpLimiter {
    fn default() -> Self {
        Self {
            tokens: BURST,
            updated: None,
        }
    }
}

impl IcmpLimiter {
    /// Takes a token if there is one.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        let earned = self.updated.map_or(0, |t| {
            let ms = now.duration_since(t).as_millis();
            (ms * u128::from(PER_SECOND) / 1000).min(u128::from(BURST)) as u32
        });
        if earned > 0 || self.updated.is_none() {
            self.tokens = (self.tokens + earned).min(BURST);
            self.updated = Some(now);
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// Writes into `out` the ICMP error that answers `packet` for `problem`; returns its
/// length, or `None` when no error may be sent for it (or `out` is too small).
pub(crate) fn error_for(packet: &[u8], problem: Problem, out: &mut [u8]) -> Option<usize> {
    match packet.first()? >> 4 {
        4 => v4(packet, problem, out),
        6 => v6(packet, problem, out),
        _ => None,
    }
}

fn v4(packet: &[u8], problem: Problem, out: &mut [u8]) -> Option<usize> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    if ihl < 20 || packet.len() < ihl {
        return None;
    }
    let src = Ipv4Addr::from(<[u8; 4]>::try_from(packet.get(12..16)?).ok()?);
    let dst = Ipv4Addr::from(<[u8; 4]>::try_from(packet.get(16..20)?).ok()?);
    let frag = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]);
    let (dont_fragment, offset) = (frag & 0x4000 != 0, frag & 0x1fff);
    let proto = *packet.get(9)?;
    let no_answer = |a: Ipv4Addr| a.is_unspecified() || a.is_multicast() || a.is_broadcast();
    if offset != 0 || no_answer(src) || no_answer(dst) || src.is_loopback() {
        return None;
    }
    if proto == 1 {
        // Never an error about an error: only echo requests and the like are answered.
        let icmp_type = *packet.get(ihl)?;
        if matches!(icmp_type, 3 | 4 | 5 | 11 | 12) {
            return None;
        }
    }
    let (code, mtu) = match problem {
        Problem::Unreachable => (1, 0),
        // Without DF the sender lets routers fragment: it has no use for a PMTU hint.
        Problem::TooBig { mtu } if dont_fragment => (4, mtu),
        Problem::TooBig { .. } => return None,
    };
    let quote = packet.len().min(QUOTE_V4);
    let total = 20 + 8 + quote;
    let out = out.get_mut(..total)?;
    out.fill(0);
    // IPv4 header: version 4, IHL 5, total length, TTL 64, protocol ICMP.
    out.get_mut(0..4)?.copy_from_slice(&[0x45, 0, 0, 0]);
    out.get_mut(2..4)?
        .copy_from_slice(&(total as u16).to_be_bytes());
    *out.get_mut(8)? = 64;
    *out.get_mut(9)? = 1;
    out.get_mut(12..16)?.copy_from_slice(&dst.octets());
    out.get_mut(16..20)?.copy_from_slice(&src.octets());
    let sum = checksum(out.get(0..20)?, 0);
    out.get_mut(10..12)?.copy_from_slice(&sum.to_be_bytes());
    // ICMP: type 3 (destination unreachable), the code, the next-hop MTU for code 4.
    *out.get_mut(20)? = 3;
    *out.get_mut(21)? = code;
    out.get_mut(26..28)?.copy_from_slice(&mtu.to_be_bytes());
    out.get_mut(28..)?.copy_from_slice(packet.get(..quote)?);
    let sum = checksum(out.get(20..)?, 0);
    out.get_mut(22..24)?.copy_from_slice(&sum.to_be_bytes());
    Some(total)
}

fn v6(packet: &[u8], problem: Problem, out: &mut [u8]) -> Option<usize> {
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(packet.get(8..24)?).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(packet.get(24..40)?).ok()?);
    if src.is_unspecified() || src.is_multicast() || dst.is_multicast() || src.is_loopback() {
        return None;
    }
    match *packet.get(6)? {
        // An ICMPv6 error (types below 128) is never answered.
        58 if *packet.get(40)? < 128 => return None,
        // A fragment other than the first.
        44 if u16::from_be_bytes([*packet.get(42)?, *packet.get(43)?]) & 0xfff8 != 0 => {
            return None;
        }
        _ => {}
    }
    let (icmp_type, code, word) = match problem {
        Problem::Unreachable => (1u8, 3u8, 0u32),
        Problem::TooBig { mtu } => (2, 0, u32::from(mtu)),
    };
    let quote = packet.len().min(QUOTE_V6);
    let body = 8 + quote;
    let total = 40 + body;
    let out = out.get_mut(..total)?;
    out.fill(0);
    *out.get_mut(0)? = 0x60;
    out.get_mut(4..6)?
        .copy_from_slice(&(body as u16).to_be_bytes());
    *out.get_mut(6)? = 58;
    *out.get_mut(7)? = 64;
    out.get_mut(8..24)?.copy_from_slice(&dst.octets());
    out.get_mut(24..40)?.copy_from_slice(&src.octets());
    *out.get_mut(40)? = icmp_type;
    *out.get_mut(41)? = code;
    out.get_mut(44..48)?.copy_from_slice(&word.to_be_bytes());
    out.get_mut(48..)?.copy_from_slice(packet.get(..quote)?);
    // The checksum covers a pseudo-header: addresses, length, next header.
    let mut pseudo = [0u8; 40];
    pseudo.get_mut(0..16)?.copy_from_slice(&dst.octets());
    pseudo.get_mut(16..32)?.copy_from_slice(&src.octets());
    pseudo
        .get_mut(32..36)?
        .copy_from_slice(&(body as u32).to_be_bytes());
    *pseudo.get_mut(39)? = 58;
    let sum = checksum(out.get(40..)?, sum_words(&pseudo));
    out.get_mut(42..44)?.copy_from_slice(&sum.to_be_bytes());
    Some(total)
}

/// The 16-bit ones'-complement sum of `data`, unfolded.
fn sum_words(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| {
            u32::from(u16::from_be_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ]))
        })
        .sum()
}

/// The Internet checksum of `data` on top of a partial sum.
fn checksum(data: &[u8], partial: u32) -> u16 {
    let mut sum = u64::from(partial) + u64::from(sum_words(data));
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testing::{ipv4_packet, ipv6_packet};

    fn verify(data: &[u8], partial: u32) -> bool {
        checksum(data, partial) == 0
    }

    #[test]
    fn an_unreachable_ipv4_host_gets_an_icmp_error_from_it() {
        let ping = {
            let mut p = ipv4_packet([10, 2, 0, 5], [10, 4, 9, 9], &[8, 0, 0, 0, 0, 1, 0, 1]);
            p[9] = 1;
            p
        };
        let mut out = [0u8; 1500];
        let n = error_for(&ping, Problem::Unreachable, &mut out).unwrap();
        let e = &out[..n];
        assert_eq!(n, 20 + 8 + ping.len());
        assert_eq!(&e[12..16], &[10, 4, 9, 9], "from the unreachable address");
        assert_eq!(&e[16..20], &[10, 2, 0, 5], "to the sender");
        assert_eq!((e[9], e[20], e[21]), (1, 3, 1), "ICMP host unreachable");
        assert!(verify(&e[..20], 0), "IPv4 header checksum");
        assert!(verify(&e[20..], 0), "ICMP checksum");
        assert_eq!(&e[28..], &ping[..], "the packet quoted");
    }

    #[test]
    fn an_unreachable_ipv6_address_gets_an_icmpv6_error() {
        let src = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let dst = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        let p = ipv6_packet(src, dst, &[0u8; 2000]);
        let mut out = [0u8; 2000];
        let n = error_for(&p, Problem::Unreachable, &mut out).unwrap();
        assert_eq!(n, 1280, "quoted up to the minimum MTU");
        let e = &out[..n];
        assert_eq!((&e[8..24], &e[24..40]), (&dst[..], &src[..]));
        assert_eq!(
            (e[6], e[40], e[41]),
            (58, 1, 3),
            "ICMPv6 address unreachable"
        );
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&e[8..40]);
        pseudo.extend_from_slice(&((n - 40) as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        assert!(verify(&e[40..], sum_words(&pseudo)), "ICMPv6 checksum");
    }

    #[test]
    fn too_big_carries_the_mtu_and_needs_df_on_ipv4() {
        let mut p = ipv4_packet([10, 0, 0, 1], [10, 0, 0, 2], &[0u8; 100]);
        let mut out = [0u8; 1500];
        assert_eq!(
            error_for(&p, Problem::TooBig { mtu: 1400 }, &mut out),
            None,
            "no DF"
        );
        p[6] = 0x40;
        let n = error_for(&p, Problem::TooBig { mtu: 1400 }, &mut out).unwrap();
        assert_eq!((out[20], out[21]), (3, 4), "fragmentation needed");
        assert_eq!(u16::from_be_bytes([out[26], out[27]]), 1400);
        assert!(verify(&out[20..n], 0));
        let v6 = ipv6_packet([0xfd; 16], [0xfe; 16], &[0u8; 100]);
        let n = error_for(&v6, Problem::TooBig { mtu: 1400 }, &mut out).unwrap();
        assert_eq!(out[40], 2, "packet too big");
        assert_eq!(
            u32::from_be_bytes([out[44], out[45], out[46], out[47]]),
            1400
        );
        assert!(n > 48);
    }

    #[test]
    fn no_error_about_errors_fragments_or_group_addresses() {
        let mut out = [0u8; 1500];
        let mut icmp_err = ipv4_packet([10, 0, 0, 1], [10, 0, 0, 2], &[3, 1, 0, 0, 0, 0, 0, 0]);
        icmp_err[9] = 1;
        assert_eq!(error_for(&icmp_err, Problem::Unreachable, &mut out), None);
        let mut later_fragment = ipv4_packet([10, 0, 0, 1], [10, 0, 0, 2], &[0; 8]);
        later_fragment[7] = 10;
        assert_eq!(
            error_for(&later_fragment, Problem::Unreachable, &mut out),
            None
        );
        let multicast = ipv4_packet([10, 0, 0, 1], [224, 0, 0, 1], &[0; 8]);
        assert_eq!(error_for(&multicast, Problem::Unreachable, &mut out), None);
        let mut v6_err = ipv6_packet([0xfd; 16], [0xfe; 16], &[1, 0, 0, 0]);
        v6_err[6] = 58;
        assert_eq!(error_for(&v6_err, Problem::Unreachable, &mut out), None);
        assert_eq!(
            error_for(&[0x45, 0, 0], Problem::Unreachable, &mut out),
            None,
            "short"
        );
        assert_eq!(error_for(&[], Problem::Unreachable, &mut out), None);
    }

    #[test]
    fn errors_are_rate_limited() {
        let mut l = IcmpLimiter::default();
        let t0 = Instant::now();
        let burst = (0..1000).filter(|_| l.allow(t0)).count();
        assert_eq!(burst, BURST as usize);
        let second = (1..=100)
            .filter(|i| l.allow(t0 + Duration::from_millis(i * 10)))
            .count();
        assert_eq!(second, PER_SECOND as usize);
    }
}

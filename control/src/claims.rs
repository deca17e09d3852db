//! Who may route which addresses: remote nodes claim prefixes (their pod CIDRs), and two
//! claims that share any address cannot both hold, or one node would take part of
//! another's traffic. The first claim keeps it: claims are offered oldest node first
//! (creation time, then name), and a later one that equals, contains or lies inside an
//! accepted prefix is refused, naming the node that holds it.
//!
//! Accepted prefixes are kept disjoint, as address ranges ordered by start, so a claim is
//! checked with one ordered-map lookup.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ip_network::IpNetwork;

/// The prefixes accepted so far.
#[derive(Debug, Default)]
pub struct Claims {
    /// (family, first address) → (last address, holder).
    ranges: BTreeMap<(u8, u128), (u128, String)>,
}

/// A prefix refused because another node holds addresses of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The prefix asked for.
    pub prefix: IpNetwork,
    /// The node that holds an overlapping prefix.
    pub holder: String,
}

fn range(net: &IpNetwork) -> (u8, u128, u128) {
    match net {
        IpNetwork::V4(v4) => {
            let start = u32::from(v4.network_address());
            let size = if v4.netmask() == 0 {
                u32::MAX
            } else {
                (1u32 << (32 - v4.netmask())) - 1
            };
            (4, u128::from(start), u128::from(start) + u128::from(size))
        }
        IpNetwork::V6(v6) => {
            let start = u128::from(v6.network_address());
            let size = if v6.netmask() == 0 {
                u128::MAX
            } else {
                (1u128 << (128 - v6.netmask())) - 1
            };
            (6, start, start.saturating_add(size))
        }
    }
}

impl Claims {
    /// No claims.
    pub fn new() -> Self {
        Self::default()
    }

    /// The holder of a prefix overlapping `net`, if any.
    pub fn overlapping(&self, net: &IpNetwork) -> Option<&str> {
        let (family, start, end) = range(net);
        let (&(f, _), (last, holder)) = self.ranges.range(..=(family, end)).next_back()?;
        (f == family && *last >= start).then_some(holder.as_str())
    }

    /// Accepts all of `nets` for `holder`, or none: the first conflict is returned.
    pub fn claim(&mut self, holder: &str, nets: &[IpNetwork]) -> Result<(), Conflict> {
        for (i, net) in nets.iter().enumerate() {
            if let Some(other) = self.overlapping(net) {
                return Err(Conflict {
                    prefix: *net,
                    holder: other.to_string(),
                });
            }
            // Two prefixes of one claim may not overlap either.
            if let Some(earlier) = nets[..i].iter().find(|e| crate::config::overlaps(e, net)) {
                return Err(Conflict {
                    prefix: *earlier,
                    holder: holder.to_string(),
                });
            }
        }
        for net in nets {
            let (family, start, end) = range(net);
            self.ranges
                .insert((family, start), (end, holder.to_string()));
        }
        Ok(())
    }

    /// True when `ip` lies in an accepted prefix.
    pub fn covers(&self, ip: IpAddr) -> bool {
        let net = IpNetwork::from(ip);
        self.overlapping(&net).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> IpNetwork {
        crate::config::parse_cidr(s).unwrap()
    }

    #[test]
    fn the_first_claim_keeps_a_prefix() {
        let mut c = Claims::new();
        c.claim("a", &[p("10.4.1.0/24")]).unwrap();
        for (net, what) in [
            ("10.4.1.0/24", "equal"),
            ("10.4.0.0/16", "containing"),
            ("10.4.1.128/25", "inside"),
        ] {
            let e = c.claim("b", &[p(net)]).unwrap_err();
            assert_eq!(e.holder, "a", "{what}");
            assert_eq!(e.prefix, p(net));
        }
        c.claim("b", &[p("10.4.2.0/24"), p("fd00::/64")]).unwrap();
        assert_eq!(c.overlapping(&p("10.4.2.7/32")), Some("b"));
        assert_eq!(c.overlapping(&p("10.4.3.0/24")), None);
        assert!(c.covers("fd00::1".parse().unwrap()));
        assert!(!c.covers("10.4.0.1".parse().unwrap()));
    }

    #[test]
    fn a_refused_claim_takes_nothing() {
        let mut c = Claims::new();
        c.claim("a", &[p("10.4.1.0/24")]).unwrap();
        assert!(c.claim("b", &[p("10.4.2.0/24"), p("10.4.1.0/25")]).is_err());
        assert_eq!(c.overlapping(&p("10.4.2.0/24")), None, "all or nothing");
        // A claim overlapping itself is refused too.
        assert!(c.claim("c", &[p("10.5.0.0/16"), p("10.5.1.0/24")]).is_err());
    }

    #[test]
    fn the_whole_space_and_families_apart() {
        let mut c = Claims::new();
        c.claim("v6", &[p("::/0")]).unwrap();
        c.claim("v4", &[p("0.0.0.0/0")]).unwrap();
        assert_eq!(c.overlapping(&p("255.255.255.255/32")), Some("v4"));
        assert_eq!(
            c.overlapping(&p("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128")),
            Some("v6")
        );
    }

    /// Against a linear check over random claims.
    #[test]
    fn agrees_with_a_linear_scan() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut c = Claims::new();
        let mut accepted: Vec<IpNetwork> = Vec::new();
        for i in 0..3000 {
            let len = 8 + (next() % 17) as u8;
            let addr = std::net::Ipv4Addr::from(0x0a00_0000 | (next() as u32 & 0x00ff_ffff));
            let net = IpNetwork::new_truncate(addr, len).unwrap();
            let linear = accepted.iter().any(|a| crate::config::overlaps(a, &net));
            let got = c.claim(&format!("n{i}"), &[net]);
            assert_eq!(got.is_err(), linear, "{net}");
            if !linear {
                accepted.push(net);
            }
        }
    }
}

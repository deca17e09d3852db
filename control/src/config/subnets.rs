//! A remote's address space: its pod subnet, one prefix per address family
//! (`"10.4.0.0/16"` as in the original, or `"10.4.0.0/16,fd00:4::/48"` for dual-stack),
//! and its `extraSubnets` (a service CIDR, a node subnet) that its nodes may claim parts of.
//! Everything here is routed through the remote's device.

use ip_network::IpNetwork;

use super::{ConfigError, overlaps, parse_cidr};

/// What a remote's nodes may be given as allowed IPs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnets {
    /// The pod subnet: at most one prefix per family.
    pub pod: Vec<IpNetwork>,
    /// `extraSubnets`: disjoint from each other and from the pod subnet.
    pub extra: Vec<IpNetwork>,
}

impl Subnets {
    /// A single-family pod subnet and no extra subnets (the original's configuration).
    pub fn pod_only(pod: IpNetwork) -> Self {
        Self {
            pod: vec![pod],
            extra: Vec::new(),
        }
    }

    /// Every prefix routed through the device: the pod subnet, then the extra subnets.
    pub fn routed(&self) -> impl Iterator<Item = &IpNetwork> {
        self.pod.iter().chain(&self.extra)
    }

    /// The pod subnet of `net`'s family, if the remote has one.
    pub fn pod_of_family(&self, net: &IpNetwork) -> Option<&IpNetwork> {
        self.pod.iter().find(|p| p.is_ipv4() == net.is_ipv4())
    }

    /// True when `net` lies inside one of the extra subnets.
    pub fn extra_contains(&self, net: &IpNetwork) -> bool {
        self.extra.iter().any(|e| contains(e, net))
    }
}

/// True when `inner` lies inside `outer` (or equals it).
pub fn contains(outer: &IpNetwork, inner: &IpNetwork) -> bool {
    outer.is_ipv4() == inner.is_ipv4()
        && outer.netmask() <= inner.netmask()
        && outer.contains(inner.network_address())
}

/// `podSubnet`: one prefix, or one per family separated by a comma.
pub(super) fn parse_pod_subnet(at: &str, value: &str) -> Result<Vec<IpNetwork>, ConfigError> {
    let field = format!("{at}.podSubnet");
    let mut out: Vec<IpNetwork> = Vec::new();
    for part in value.split(',') {
        let net = parse_cidr(part).ok_or_else(|| ConfigError::InvalidCidr {
            field: field.clone(),
            value: value.to_string(),
        })?;
        if out.iter().any(|p| p.is_ipv4() == net.is_ipv4()) {
            return Err(ConfigError::PodSubnetFamilies {
                field,
                value: value.to_string(),
            });
        }
        out.push(net);
    }
    Ok(out)
}

/// `extraSubnets`: prefixes that share no address with each other or the pod subnet.
pub(super) fn parse_extra(
    at: &str,
    values: &[String],
    pod: &[IpNetwork],
) -> Result<Vec<IpNetwork>, ConfigError> {
    let mut out: Vec<IpNetwork> = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let field = format!("{at}.extraSubnets[{i}]");
        let net = parse_cidr(v).ok_or_else(|| ConfigError::InvalidCidr {
            field: field.clone(),
            value: v.clone(),
        })?;
        let taken = pod
            .iter()
            .map(|p| (p, format!("{at}.podSubnet")))
            .chain(
                out.iter()
                    .enumerate()
                    .map(|(j, e)| (e, format!("{at}.extraSubnets[{j}]"))),
            )
            .find(|(p, _)| overlaps(p, &net));
        if let Some((other_subnet, other)) = taken {
            return Err(ConfigError::OverlappingSubnets {
                field,
                subnet: net,
                other_subnet: *other_subnet,
                other,
            });
        }
        out.push(net);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> IpNetwork {
        parse_cidr(s).unwrap()
    }

    #[test]
    fn one_prefix_per_family() {
        assert_eq!(
            parse_pod_subnet("r", "10.4.0.0/16").unwrap(),
            [p("10.4.0.0/16")]
        );
        assert_eq!(
            parse_pod_subnet("r", " 10.4.0.0/16 , fd00:4::/48").unwrap(),
            [p("10.4.0.0/16"), p("fd00:4::/48")]
        );
        let e = parse_pod_subnet("r", "10.4.0.0/16,10.5.0.0/16").unwrap_err();
        assert!(e.to_string().contains("r.podSubnet"), "{e}");
        assert!(matches!(e, ConfigError::PodSubnetFamilies { .. }));
        assert!(matches!(
            parse_pod_subnet("r", "10.4.0.0/16,").unwrap_err(),
            ConfigError::InvalidCidr { .. }
        ));
    }

    #[test]
    fn extra_subnets_are_disjoint() {
        let pod = [p("10.4.0.0/16")];
        let ok = parse_extra("r", &["10.96.0.0/12".into(), "192.168.5.0/24".into()], &pod);
        assert_eq!(ok.unwrap(), [p("10.96.0.0/12"), p("192.168.5.0/24")]);
        let e = parse_extra("r", &["10.4.8.0/24".into()], &pod).unwrap_err();
        assert_eq!(
            e.to_string(),
            "r.extraSubnets[0]: 10.4.8.0/24 overlaps 10.4.0.0/16 of r.podSubnet"
        );
        let e = parse_extra("r", &["10.96.0.0/12".into(), "10.100.0.0/16".into()], &pod);
        assert!(e.unwrap_err().to_string().ends_with("of r.extraSubnets[0]"));
        assert!(parse_extra("r", &["nope".into()], &pod).is_err());
    }

    #[test]
    fn containment() {
        let s = Subnets {
            pod: vec![p("10.4.0.0/16"), p("fd00:4::/48")],
            extra: vec![p("10.96.0.0/12")],
        };
        assert!(contains(&p("10.4.0.0/16"), &p("10.4.1.0/24")));
        assert!(!contains(&p("10.4.1.0/24"), &p("10.4.0.0/16")));
        assert_eq!(
            s.pod_of_family(&p("fd00:4:1::/64")),
            Some(&p("fd00:4::/48"))
        );
        assert!(s.extra_contains(&p("10.96.0.0/24")));
        assert!(!s.extra_contains(&p("10.95.0.0/24")));
        assert!(!s.extra_contains(&p("10.96.0.0/8")));
        assert_eq!(s.routed().count(), 3);
    }
}

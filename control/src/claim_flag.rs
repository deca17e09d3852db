//! `--advertise-cidrs` (`SWG_ADVERTISE_CIDRS`): the prefixes this node serves for other
//! clusters, published as `<remote>.wireguard.semaphore.uw.io/extraCIDRs` and given to our
//! peer by every remote whose `extraSubnets` hold them. Comma-separated; a bare prefix is
//! claimed towards every remote, `<remote>=<prefix>` towards that one only.

use ip_network::IpNetwork;

use crate::config::{overlaps, parse_cidr};

/// The parsed flag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdvertisedCidrs {
    /// (remote, or every remote; prefix), in the order given.
    entries: Vec<(Option<String>, IpNetwork)>,
}

impl std::str::FromStr for AdvertisedCidrs {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut entries: Vec<(Option<String>, IpNetwork)> = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (remote, prefix) = match item.split_once('=') {
                Some((r, p)) if !r.trim().is_empty() => (Some(r.trim().to_string()), p.trim()),
                Some(_) => return Err(format!("{item:?}: no remote name before '='")),
                None => (None, item),
            };
            let net = parse_cidr(prefix).ok_or_else(|| {
                format!("{item:?}: {prefix:?} is not a CIDR (for example 10.96.0.0/12)")
            })?;
            let clash = entries.iter().find(|(r, n)| {
                (r.is_none() || remote.is_none() || *r == remote) && overlaps(n, &net)
            });
            if let Some((_, other)) = clash {
                return Err(format!(
                    "{item:?} overlaps {other}, claimed earlier in the list"
                ));
            }
            entries.push((remote, net));
        }
        Ok(Self { entries })
    }
}

impl AdvertisedCidrs {
    /// The prefixes claimed towards `remote`.
    pub fn for_remote(&self, remote: &str) -> Vec<IpNetwork> {
        self.entries
            .iter()
            .filter(|(r, _)| r.as_deref().is_none_or(|r| r == remote))
            .map(|(_, n)| *n)
            .collect()
    }

    /// A remote named in the flag that is not configured, if any (a typo would otherwise
    /// claim nothing, silently).
    pub fn unknown_remote<'a>(&self, remotes: impl IntoIterator<Item = &'a str>) -> Option<String> {
        let known: Vec<&str> = remotes.into_iter().collect();
        self.entries
            .iter()
            .filter_map(|(r, _)| r.as_deref())
            .find(|r| !known.contains(r))
            .map(str::to_string)
    }

    /// True when nothing is claimed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> IpNetwork {
        parse_cidr(s).unwrap()
    }

    #[test]
    fn bare_and_per_remote_prefixes() {
        let a: AdvertisedCidrs = "10.96.0.0/12, gcp=192.168.7.0/24,azr=192.168.7.0/24"
            .parse()
            .unwrap();
        assert_eq!(
            a.for_remote("gcp"),
            [p("10.96.0.0/12"), p("192.168.7.0/24")]
        );
        assert_eq!(
            a.for_remote("azr"),
            [p("10.96.0.0/12"), p("192.168.7.0/24")]
        );
        assert_eq!(a.for_remote("aws"), [p("10.96.0.0/12")]);
        assert_eq!(a.unknown_remote(["gcp", "azr"]), None);
        assert_eq!(a.unknown_remote(["gcp"]).as_deref(), Some("azr"));
        assert!("".parse::<AdvertisedCidrs>().unwrap().is_empty());
    }

    #[test]
    fn bad_lists_are_refused_with_the_item() {
        for (bad, says) in [
            ("10.96.0.0/33", "is not a CIDR"),
            ("=10.0.0.0/8", "no remote name"),
            ("gcp=", "is not a CIDR"),
            ("10.96.0.0/12,10.96.1.0/24", "overlaps 10.96.0.0/12"),
            ("gcp=10.1.0.0/16,10.1.2.0/24", "overlaps 10.1.0.0/16"),
        ] {
            let e = bad.parse::<AdvertisedCidrs>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        // The same prefix towards two different remotes is fine.
        assert!(
            "gcp=10.1.0.0/16,azr=10.1.0.0/16"
                .parse::<AdvertisedCidrs>()
                .is_ok()
        );
    }
}

//! Cryptokey routing: longest-prefix match from an inner IP address to a peer slot, for
//! IPv4 and IPv6. Built whole on every `apply` and read without locks by the packet paths.

use std::net::IpAddr;

use ip_network::IpNetwork;
use ip_network_table::IpNetworkTable;

/// Prefix → value table with longest-prefix lookup.
pub struct AllowedIps<T> {
    table: IpNetworkTable<T>,
}

/// The last lookup of one [`AllowedIps`] table; borrowing the table ties the cache's
/// lifetime to it, so a new table cannot be read through a stale cache.
pub struct LookupCache<'a, T> {
    last: Option<(IpAddr, Option<&'a T>)>,
}

impl<T> Default for LookupCache<'_, T> {
    fn default() -> Self {
        Self { last: None }
    }
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        Self {
            table: IpNetworkTable::new(),
        }
    }
}

impl<T> AllowedIps<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `net` to `value`, returning the previous value for exactly that prefix.
    pub fn insert(&mut self, net: IpNetwork, value: T) -> Option<T> {
        self.table.insert(net, value)
    }

    /// Removes exactly `net`.
    pub fn remove(&mut self, net: IpNetwork) -> Option<T> {
        self.table.remove(net)
    }

    /// The value of the longest prefix holding `ip`.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Option<&T> {
        match ip {
            IpAddr::V4(v4) => self.table.longest_match_ipv4(v4).map(|(_, v)| v),
            IpAddr::V6(v6) => self.table.longest_match_ipv6(v6).map(|(_, v)| v),
        }
    }

    /// Like [`AllowedIps::lookup`], remembering the last answer in `cache`: the packets
    /// of one batch mostly belong to one flow, so most lookups become one comparison.
    /// A cache is only valid for the table it was filled from (clear it per batch).
    #[inline]
    pub fn lookup_cached<'a>(
        &'a self,
        ip: IpAddr,
        cache: &mut LookupCache<'a, T>,
    ) -> Option<&'a T> {
        if let Some((last, hit)) = cache.last
            && last == ip
        {
            return hit;
        }
        let hit = self.lookup(ip);
        cache.last = Some((ip, hit));
        hit
    }

    /// Number of prefixes (IPv4 + IPv6).
    pub fn len(&self) -> usize {
        let (v4, v6) = self.table.len();
        v4 + v6
    }

    /// True when no prefix is present.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// All prefixes and their values.
    pub fn iter(&self) -> impl Iterator<Item = (IpNetwork, &T)> {
        self.table.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The obviously-correct model: a list scanned linearly.
    #[derive(Default)]
    struct Naive(Vec<(IpNetwork, u32)>);

    impl Naive {
        fn insert(&mut self, net: IpNetwork, v: u32) {
            self.0.retain(|(n, _)| *n != net);
            self.0.push((net, v));
        }
        fn remove(&mut self, net: IpNetwork) {
            self.0.retain(|(n, _)| *n != net);
        }
        fn lookup(&self, ip: IpAddr) -> Option<u32> {
            self.0
                .iter()
                .filter(|(n, _)| n.contains(ip))
                .max_by_key(|(n, _)| n.netmask())
                .map(|(_, v)| *v)
        }
    }

    fn random_v4(rng: &mut StdRng) -> IpAddr {
        // A narrow space so prefixes overlap often.
        IpAddr::V4(Ipv4Addr::new(
            10,
            rng.gen_range(0..4),
            rng.gen_range(0..8),
            rng.r#gen(),
        ))
    }

    fn random_v6(rng: &mut StdRng) -> IpAddr {
        let mut seg = [0u16; 8];
        seg[0] = 0xfd00;
        seg[1] = rng.gen_range(0..4);
        seg[7] = rng.gen_range(0..16);
        seg[4] = rng.gen_range(0..2);
        IpAddr::V6(Ipv6Addr::from(seg))
    }

    fn random_net(rng: &mut StdRng, v6: bool) -> IpNetwork {
        let (ip, len) = if v6 {
            (random_v6(rng), rng.gen_range(0..=128))
        } else {
            (random_v4(rng), rng.gen_range(0..=32))
        };
        IpNetwork::new_truncate(ip, len).unwrap()
    }

    fn differential(v6: bool, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut table = AllowedIps::new();
        let mut model = Naive::default();
        let mut inserted = Vec::new();
        for step in 0..4000u32 {
            match rng.gen_range(0..10) {
                0..=3 => {
                    let net = random_net(&mut rng, v6);
                    table.insert(net, step);
                    model.insert(net, step);
                    inserted.push(net);
                }
                4 if !inserted.is_empty() => {
                    let net = inserted.swap_remove(rng.gen_range(0..inserted.len()));
                    table.remove(net);
                    model.remove(net);
                }
                _ => {
                    let ip = if v6 {
                        random_v6(&mut rng)
                    } else {
                        random_v4(&mut rng)
                    };
                    assert_eq!(
                        table.lookup(ip).copied(),
                        model.lookup(ip),
                        "lookup {ip} at step {step}"
                    );
                }
            }
        }
        assert_eq!(table.len(), model.0.len());
    }

    #[test]
    fn matches_naive_model_v4() {
        for seed in 0..4 {
            differential(false, seed);
        }
    }

    #[test]
    fn matches_naive_model_v6() {
        for seed in 0..4 {
            differential(true, seed);
        }
    }

    #[test]
    fn v4_and_v6_are_separate() {
        let mut t = AllowedIps::new();
        t.insert("0.0.0.0/0".parse().unwrap(), 4);
        assert_eq!(t.lookup("::1".parse().unwrap()), None);
        t.insert("::/0".parse().unwrap(), 6);
        assert_eq!(t.lookup("::1".parse().unwrap()), Some(&6));
        assert_eq!(t.lookup("1.1.1.1".parse().unwrap()), Some(&4));
    }
}

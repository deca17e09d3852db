//! Cryptokey routing: longest-prefix match from an inner IP address to a peer slot, for
//! IPv4 and IPv6. Built whole on every `apply` and read without locks by the packet paths.
//!
//! The table is immutable once built, so it is compiled into a sorted array of address
//! ranges: nested prefixes are flattened into disjoint intervals, each holding the value of
//! the most specific prefix covering it, and a lookup is one binary search over the
//! interval starts. For the handful of pod CIDRs a node sees, that is one or two cache
//! lines per lookup where a trie walks a node per 4 bits of address.

use std::net::IpAddr;

use ip_network::IpNetwork;

/// Prefix → value table with longest-prefix lookup, built once from a list of prefixes.
pub struct AllowedIps<T> {
    v4: Ranges<u32, T>,
    v6: Ranges<u128, T>,
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
            v4: Ranges::default(),
            v6: Ranges::default(),
        }
    }
}

/// Builds the table; when a prefix appears more than once, the last value wins.
impl<T: Clone> FromIterator<(IpNetwork, T)> for AllowedIps<T> {
    fn from_iter<I: IntoIterator<Item = (IpNetwork, T)>>(nets: I) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (net, value) in nets {
            match net {
                IpNetwork::V4(n) => {
                    let start = u32::from(n.network_address());
                    let host = u32::MAX.checked_shr(n.netmask().into()).unwrap_or(0);
                    v4.push((start, start | host, value));
                }
                IpNetwork::V6(n) => {
                    let start = u128::from(n.network_address());
                    let host = u128::MAX.checked_shr(n.netmask().into()).unwrap_or(0);
                    v6.push((start, start | host, value));
                }
            }
        }
        Self {
            v4: Ranges::build(v4),
            v6: Ranges::build(v6),
        }
    }
}

impl<T> AllowedIps<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of the longest prefix holding `ip`.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Option<&T> {
        match ip {
            IpAddr::V4(v4) => self.v4.get(u32::from(v4)),
            IpAddr::V6(v6) => self.v6.get(u128::from(v6)),
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

    /// Number of distinct prefixes (IPv4 + IPv6).
    pub fn len(&self) -> usize {
        self.v4.prefixes + self.v6.prefixes
    }

    /// True when no prefix is present.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An address as an unsigned integer.
trait Addr: Copy + Ord {
    const MAX: Self;
    /// The next address; never called on `MAX`.
    fn succ(self) -> Self;
}

impl Addr for u32 {
    const MAX: Self = u32::MAX;
    fn succ(self) -> Self {
        self + 1
    }
}

impl Addr for u128 {
    const MAX: Self = u128::MAX;
    fn succ(self) -> Self {
        self + 1
    }
}

/// Disjoint intervals of one address family: interval `i` runs from `starts[i]` up to
/// `starts[i + 1] - 1` (or the end of the space) and maps to `values[i]`. Addresses below
/// `starts[0]` map to nothing.
struct Ranges<K, T> {
    starts: Vec<K>,
    values: Vec<Option<T>>,
    prefixes: usize,
}

impl<K, T> Default for Ranges<K, T> {
    fn default() -> Self {
        Self {
            starts: Vec::new(),
            values: Vec::new(),
            prefixes: 0,
        }
    }
}

impl<K: Addr, T> Ranges<K, T> {
    #[inline]
    fn get(&self, addr: K) -> Option<&T> {
        let after = self.starts.partition_point(|&s| s <= addr);
        self.values.get(after.checked_sub(1)?)?.as_ref()
    }
}

impl<K: Addr, T: Clone> Ranges<K, T> {
    /// Flattens `(first, last, value)` prefixes, given in insertion order, into intervals.
    /// CIDR prefixes either nest or are disjoint, so a sweep in address order with a stack
    /// of the prefixes still open (innermost last) sees every boundary.
    fn build(mut nets: Vec<(K, K, T)>) -> Self {
        // By first address, wider prefixes before the ones they contain; stable, so copies
        // of one prefix keep their insertion order.
        nets.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut out = Self::default();
        let mut open: Vec<(K, T)> = Vec::new();
        let mut i = 0;
        while i < nets.len() {
            let (first, last) = (nets[i].0, nets[i].1);
            while i + 1 < nets.len() && nets[i + 1].0 == first && nets[i + 1].1 == last {
                i += 1;
            }
            let value = nets[i].2.clone();
            i += 1;
            out.prefixes += 1;
            out.close(&mut open, Some(first));
            out.push(first, Some(value.clone()));
            open.push((last, value));
        }
        out.close(&mut open, None);
        out
    }

    /// Closes every open prefix that ends before `next` (all of them for `None`); the
    /// address after each one falls back to the prefix around it.
    fn close(&mut self, open: &mut Vec<(K, T)>, next: Option<K>) {
        while let Some(&(last, _)) = open.last() {
            if next.is_some_and(|n| last >= n) {
                break;
            }
            open.pop();
            // A prefix ending at the top of the space is only inside others that do too.
            if last != K::MAX {
                self.push(last.succ(), open.last().map(|(_, v)| v.clone()));
            }
        }
    }

    /// Starts an interval at `start`; one already starting there is replaced, since the
    /// later call describes a more specific prefix (or the space after a closed one).
    fn push(&mut self, start: K, value: Option<T>) {
        if self.starts.last() == Some(&start) {
            *self.values.last_mut().expect("values match starts") = value;
        } else {
            self.starts.push(start);
            self.values.push(value);
        }
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

    /// Random inserts (with repeats of one prefix), removals and lookups; the table is
    /// rebuilt from the insertion log after every change, as `apply` rebuilds it.
    fn differential(v6: bool, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut log: Vec<(IpNetwork, u32)> = Vec::new();
        let mut model = Naive::default();
        let mut table = AllowedIps::new();
        let mut dirty = false;
        let mut inserted = Vec::new();
        for step in 0..3000u32 {
            match rng.gen_range(0..10) {
                0..=2 => {
                    // Now and then the same prefix again, with a new value.
                    let net = match inserted.len() {
                        0 => random_net(&mut rng, v6),
                        n if rng.gen_range(0..8) == 0 => inserted[rng.gen_range(0..n)],
                        _ => random_net(&mut rng, v6),
                    };
                    log.push((net, step));
                    model.insert(net, step);
                    inserted.push(net);
                    dirty = true;
                }
                3 if !inserted.is_empty() => {
                    let net = inserted.swap_remove(rng.gen_range(0..inserted.len()));
                    log.retain(|(n, _)| *n != net);
                    inserted.retain(|n| *n != net);
                    model.remove(net);
                    dirty = true;
                }
                _ => {
                    if dirty {
                        table = log.iter().copied().collect();
                        assert_eq!(table.len(), model.0.len(), "prefix count at step {step}");
                        dirty = false;
                    }
                    for _ in 0..4 {
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
        }
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

    fn build(nets: &[(&str, u32)]) -> AllowedIps<u32> {
        nets.iter().map(|(n, v)| (n.parse().unwrap(), *v)).collect()
    }

    fn get(t: &AllowedIps<u32>, ip: &str) -> Option<u32> {
        t.lookup(ip.parse().unwrap()).copied()
    }

    #[test]
    fn v4_and_v6_are_separate() {
        let t = build(&[("0.0.0.0/0", 4)]);
        assert_eq!(get(&t, "::1"), None);
        let t = build(&[("0.0.0.0/0", 4), ("::/0", 6)]);
        assert_eq!(get(&t, "::1"), Some(6));
        assert_eq!(get(&t, "1.1.1.1"), Some(4));
    }

    #[test]
    fn the_ends_of_the_address_space() {
        let t = build(&[
            ("0.0.0.0/0", 1),
            ("255.255.255.255/32", 2),
            ("0.0.0.0/32", 3),
            ("255.255.255.0/24", 4),
        ]);
        assert_eq!(get(&t, "0.0.0.0"), Some(3));
        assert_eq!(get(&t, "0.0.0.1"), Some(1));
        assert_eq!(get(&t, "255.255.254.255"), Some(1));
        assert_eq!(get(&t, "255.255.255.0"), Some(4));
        assert_eq!(get(&t, "255.255.255.254"), Some(4));
        assert_eq!(get(&t, "255.255.255.255"), Some(2));
        let t = build(&[("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", 7)]);
        assert_eq!(get(&t, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"), None);
        assert_eq!(get(&t, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), Some(7));
        assert_eq!(get(&t, "::"), None);
    }

    #[test]
    fn nested_prefixes_fall_back_to_the_one_around_them() {
        let t = build(&[
            ("10.0.0.0/8", 1),
            ("10.1.0.0/16", 2),
            ("10.1.2.0/24", 3),
            ("10.1.2.128/25", 4),
            ("10.1.255.0/24", 5),
        ]);
        assert_eq!(get(&t, "9.255.255.255"), None);
        assert_eq!(get(&t, "10.0.0.1"), Some(1));
        assert_eq!(get(&t, "10.1.1.255"), Some(2));
        assert_eq!(get(&t, "10.1.2.127"), Some(3));
        assert_eq!(get(&t, "10.1.2.200"), Some(4));
        assert_eq!(get(&t, "10.1.3.0"), Some(2));
        assert_eq!(get(&t, "10.1.255.255"), Some(5));
        assert_eq!(get(&t, "10.2.0.0"), Some(1));
        assert_eq!(get(&t, "11.0.0.0"), None);
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn a_repeated_prefix_keeps_its_last_value() {
        let t = build(&[("10.0.0.0/24", 1), ("10.0.0.0/24", 2), ("10.0.0.0/24", 3)]);
        assert_eq!(get(&t, "10.0.0.9"), Some(3));
        assert_eq!(t.len(), 1);
    }
}

//! Criterion benches of the dataplane's per-packet work: cryptokey-routing lookups, header
//! parsing, and boringtun seal/open of a batch of 1420-byte packets.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dataplane::allowed_ips::AllowedIps;
use dataplane::packet;
use dataplane::testing::ipv4_packet;
use ip_network::IpNetwork;

fn table(n: u32) -> AllowedIps<u32> {
    // Distinct /24s spread over 10.0.0.0/8, as pod CIDRs are.
    (0..n)
        .map(|i| {
            let ip = Ipv4Addr::from(0x0a00_0000 | ((i % 65_536) << 8));
            (IpNetwork::new_truncate(ip, 24).unwrap(), i)
        })
        .collect()
}

fn allowed_ips(c: &mut Criterion) {
    let mut g = c.benchmark_group("allowed_ips_lookup");
    for n in [10u32, 1_000, 65_536] {
        let t = table(n);
        let probes: Vec<IpAddr> = (0..1024u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | ((i * 7919) % (n << 8)))))
            .collect();
        g.throughput(Throughput::Elements(probes.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &probes, |b, probes| {
            b.iter(|| probes.iter().filter(|ip| t.lookup(**ip).is_some()).count())
        });
    }
    g.finish();
}

fn header_parse(c: &mut Criterion) {
    let p = ipv4_packet([10, 0, 0, 1], [10, 0, 0, 2], &[0u8; 1400]);
    c.bench_function("ip_header", |b| b.iter(|| packet::ip_header(black_box(&p))));
}

/// Two `Tunn`s with an established session.
fn session() -> (Tunn, Tunn) {
    let (ka, kb) = (StaticSecret::from([1u8; 32]), StaticSecret::from([2u8; 32]));
    let (pa, pb) = (PublicKey::from(&ka), PublicKey::from(&kb));
    let mut a = Tunn::new(ka, pb, None, None, 1, None);
    let mut b = Tunn::new(kb, pa, None, None, 2, None);
    let (mut x, mut y) = ([0u8; 2048], [0u8; 2048]);
    let TunnResult::WriteToNetwork(init) = a.format_handshake_initiation(&mut x, false) else {
        panic!()
    };
    let TunnResult::WriteToNetwork(resp) = b.decapsulate(None, init, &mut y) else {
        panic!()
    };
    let TunnResult::WriteToNetwork(ka_msg) = a.decapsulate(None, resp, &mut x) else {
        panic!()
    };
    let _ = b.decapsulate(None, ka_msg, &mut y);
    (a, b)
}

fn seal_open(c: &mut Criterion) {
    const BATCH: usize = 32;
    let (mut a, mut b) = session();
    let p = ipv4_packet([10, 0, 0, 1], [10, 0, 0, 2], &[0u8; 1400]);
    let mut sealed = vec![vec![0u8; 2048]; BATCH];
    let mut opened = vec![0u8; 2048];
    let mut g = c.benchmark_group("batch_1420B");
    g.throughput(Throughput::Bytes((BATCH * p.len()) as u64));
    g.bench_function("seal", |bench| {
        bench.iter(|| {
            for out in sealed.iter_mut() {
                let _ = black_box(a.encapsulate(&p, out));
            }
        })
    });
    g.bench_function("seal_open", |bench| {
        bench.iter(|| {
            for out in sealed.iter_mut() {
                let TunnResult::WriteToNetwork(msg) = a.encapsulate(&p, out) else {
                    panic!()
                };
                let n = msg.len();
                let r = b.decapsulate(None, &out[..n], &mut opened);
                assert!(matches!(r, TunnResult::WriteToTunnelV4(..)));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, allowed_ips, header_parse, seal_open);
criterion_main!(benches);

//! An in-memory tunnel pair end to end: packets written into A's TUN come out of B's
//! TUN after routing, encryption, the (in-memory) network and decryption. Reports
//! packets/s and bytes/s for batches of 1420-byte packets.

use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dataplane::config::parse_prefix;
use dataplane::testing::{MemNet, ipv4_packet, mem_tun};
use dataplane::{PeerConfig, PrivateKey, Tunnel, TunnelConfig};

const BURST: usize = 256;

fn pair(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let net = MemNet::new();
    let (ka, kb) = (
        PrivateKey::from_bytes([1; 32]),
        PrivateKey::from_bytes([2; 32]),
    );
    let b_udp: SocketAddr = "192.0.2.2:51820".parse().unwrap();
    let peer = |k: &PrivateKey, ep: Option<SocketAddr>, ip: &str| {
        let mut p = PeerConfig::new(k.public_key());
        p.endpoint = ep;
        p.allowed_ips = vec![parse_prefix(ip).unwrap()];
        p
    };
    let (tun_a, host_a) = mem_tun();
    let (tun_b, mut host_b) = mem_tun();
    let (_a, _b) = rt.block_on(async {
        let a = Tunnel::spawn(
            "bench-a",
            tun_a,
            net.host("192.0.2.1".parse().unwrap()),
            TunnelConfig {
                private_key: Some(ka.clone()),
                listen_port: 51820,
                fwmark: 0,
                peers: vec![peer(&kb, Some(b_udp), "10.0.0.2/32")],
            },
        )
        .unwrap();
        let b = Tunnel::spawn(
            "bench-b",
            tun_b,
            net.host("192.0.2.2".parse().unwrap()),
            TunnelConfig {
                private_key: Some(kb.clone()),
                listen_port: 51820,
                fwmark: 0,
                peers: vec![peer(&ka, None, "10.0.0.1/32")],
            },
        )
        .unwrap();
        // Handshake once, outside the measurement.
        host_a
            .to_tunnel
            .send(ipv4_packet([10, 0, 0, 1], [10, 0, 0, 2], b"hi"))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), host_b.from_tunnel.recv())
            .await
            .unwrap()
            .unwrap();
        (a, b)
    });
    let packet = ipv4_packet([10, 0, 0, 1], [10, 0, 0, 2], &[0u8; 1400]);
    let mut g = c.benchmark_group("tunnel_pair_1420B");
    g.throughput(Throughput::Bytes((BURST * packet.len()) as u64));
    g.sample_size(20);
    g.bench_function("a_to_b", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                for _ in 0..BURST {
                    host_a.to_tunnel.send(packet.clone()).await.unwrap();
                }
                for _ in 0..BURST {
                    host_b.from_tunnel.recv().await.unwrap();
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, pair);
criterion_main!(benches);

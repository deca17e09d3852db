//! The controller's pure part at scale: remote Nodes → desired peers (with the conflict
//! and key checks) → the tunnel configuration, validated, → the tunnel's peer table, as
//! one apply does it, at 10, 1 000 and 5 000 nodes.

use std::collections::BTreeMap;
use std::hint::black_box;

use base64::Engine as _;
use control::config::{Subnets, parse_cidr};
use control::peers::{AnnotationKeys, desired_peers};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dataplane::testing::{MemNet, mem_tun};
use dataplane::{Key, PeerConfig, PrivateKey, Tunnel, TunnelConfig};
use k8s_openapi::api::core::v1::{Node, NodeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn nodes(n: u32) -> Vec<Node> {
    let keys = AnnotationKeys::for_cluster("aws");
    (0..n)
        .map(|i| {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            key[31] = 1;
            let mut ann = BTreeMap::new();
            ann.insert(
                keys.public_key.clone(),
                base64::engine::general_purpose::STANDARD.encode(key),
            );
            ann.insert(
                keys.endpoint.clone(),
                format!("10.250.{}.{}:51820", i / 250, i % 250 + 1),
            );
            Node {
                metadata: ObjectMeta {
                    name: Some(format!("gcp{i}")),
                    annotations: Some(ann),
                    ..Default::default()
                },
                spec: Some(NodeSpec {
                    pod_cidr: Some(format!("10.4.{}.{}/32", i / 256, i % 256)),
                    ..Default::default()
                }),
                status: None,
            }
        })
        .collect()
}

fn peer_config(p: &control::peers::DesiredPeer) -> PeerConfig {
    let mut c = PeerConfig::new(Key(p.public_key));
    c.endpoint = Some(p.endpoint);
    c.allowed_ips = p.allowed_ips.clone();
    c.persistent_keepalive = Some(25);
    c
}

fn pure(c: &mut Criterion) {
    let keys = AnnotationKeys::for_cluster("aws");
    let subnet = Subnets::pod_only(parse_cidr("10.4.0.0/16").unwrap());
    let own = PrivateKey::from_bytes([9; 32]);
    let mut g = c.benchmark_group("nodes_to_tunnel_config");
    for n in [10u32, 1_000, 5_000] {
        let ns = nodes(n);
        g.throughput(Throughput::Elements(u64::from(n)));
        g.bench_with_input(BenchmarkId::from_parameter(n), &ns, |b, ns| {
            b.iter(|| {
                let (peers, skipped) =
                    desired_peers(ns.iter(), &keys, &subnet, Some(own.public_key().0));
                assert!(skipped.is_empty());
                let mut cfg = TunnelConfig {
                    private_key: Some(own.clone()),
                    peers: peers.iter().map(peer_config).collect(),
                    ..Default::default()
                };
                cfg.validate().unwrap();
                black_box(cfg)
            })
        });
    }
    g.finish();
}

/// The same configuration applied to a running tunnel (its peer table rebuilt), as a
/// resync with one changed node does.
fn apply(c: &mut Criterion) {
    let keys = AnnotationKeys::for_cluster("aws");
    let subnet = Subnets::pod_only(parse_cidr("10.4.0.0/16").unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("apply_to_tunnel");
    for n in [10u32, 1_000, 5_000] {
        let (tun, _host) = mem_tun();
        let own = PrivateKey::from_bytes([9; 32]);
        let tunnel = rt
            .block_on(async {
                Tunnel::spawn(
                    "bench0",
                    tun,
                    MemNet::new().host("192.0.2.1".parse().unwrap()),
                    TunnelConfig {
                        private_key: Some(own.clone()),
                        ..Default::default()
                    },
                )
            })
            .unwrap();
        let (peers, _) = desired_peers(nodes(n).iter(), &keys, &subnet, None);
        let mut cfg = tunnel.config();
        cfg.peers = peers.iter().map(peer_config).collect();
        tunnel.apply(cfg.clone()).unwrap();
        let mut flip = false;
        g.throughput(Throughput::Elements(u64::from(n)));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                // One node's endpoint changes, as between two syncs.
                flip = !flip;
                cfg.peers[0].endpoint = Some(if flip {
                    "10.251.0.1:51820".parse().unwrap()
                } else {
                    "10.250.0.1:51820".parse().unwrap()
                });
                tunnel.apply(cfg.clone()).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, pure, apply);
criterion_main!(benches);

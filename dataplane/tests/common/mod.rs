//! Shared by the in-memory tunnel tests: nodes on a `MemNet`, packets in and out.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use dataplane::config::parse_prefix;
use dataplane::testing::{MemNet, MemTun, MemTunHost, MemUdpBinder, ipv4_packet, mem_tun};
use dataplane::{PeerConfig, PrivateKey, Tunnel, TunnelConfig};
use tokio::time::timeout;

pub struct Node {
    pub tunnel: Tunnel<MemUdpBinder>,
    pub host: MemTunHost,
    pub key: PrivateKey,
    pub udp: SocketAddr,
}

pub fn peer(key: &PrivateKey, endpoint: Option<SocketAddr>, allowed: &[&str]) -> PeerConfig {
    let mut p = PeerConfig::new(key.public_key());
    p.endpoint = endpoint;
    p.allowed_ips = allowed.iter().map(|a| parse_prefix(a).unwrap()).collect();
    p
}

pub fn node(
    net: &MemNet,
    host_ip: &str,
    key: PrivateKey,
    port: u16,
    peers: Vec<PeerConfig>,
) -> Node {
    node_on(mem_tun(), net, host_ip, key, port, peers)
}

pub fn node_on(
    (tun, host): (MemTun, MemTunHost),
    net: &MemNet,
    host_ip: &str,
    key: PrivateKey,
    port: u16,
    peers: Vec<PeerConfig>,
) -> Node {
    let ip: IpAddr = host_ip.parse().unwrap();
    let config = TunnelConfig {
        private_key: Some(key.clone()),
        listen_port: port,
        fwmark: 0,
        peers,
    };
    let tunnel = Tunnel::spawn("mem0", tun, net.host(ip), config).unwrap();
    Node {
        tunnel,
        host,
        key,
        udp: SocketAddr::new(ip, port),
    }
}

pub const A_IN: [u8; 4] = [10, 0, 0, 1];
pub const B_IN: [u8; 4] = [10, 0, 0, 2];

/// Two nodes that know each other; B has no endpoint for A (it learns it).
pub fn pair(net: &MemNet) -> (Node, Node) {
    let ka = PrivateKey::generate();
    let kb = PrivateKey::generate();
    let b_udp: SocketAddr = "192.0.2.2:51820".parse().unwrap();
    let a = node(
        net,
        "192.0.2.1",
        ka.clone(),
        51820,
        vec![peer(&kb, Some(b_udp), &["10.0.0.2/32", "fd00::2/128"])],
    );
    let b = node(
        net,
        "192.0.2.2",
        kb,
        51820,
        vec![peer(&ka, None, &["10.0.0.1/32", "fd00::1/128"])],
    );
    (a, b)
}

pub async fn send(from: &Node, pkt: Vec<u8>) {
    from.host.to_tunnel.send(pkt).await.unwrap();
}

pub async fn recv(to: &mut Node) -> Vec<u8> {
    timeout(Duration::from_secs(5), to.host.from_tunnel.recv())
        .await
        .expect("no packet within 5 s")
        .unwrap()
}

/// Sends every packet from `from`, then expects them all at `to`, in order.
pub async fn send_all_in_order(from: &Node, to: &mut Node, packets: &[Vec<u8>]) {
    for p in packets {
        send(from, p.clone()).await;
    }
    for p in packets {
        assert_eq!(&recv(to).await, p);
    }
}

pub async fn nothing(to: &mut Node) {
    assert!(
        timeout(Duration::from_millis(600), to.host.from_tunnel.recv())
            .await
            .is_err(),
        "unexpected packet"
    );
}

pub async fn exchange(a: &mut Node, b: &mut Node, payload: &[u8]) {
    let p = ipv4_packet(A_IN, B_IN, payload);
    send(a, p.clone()).await;
    assert_eq!(recv(b).await, p);
    let q = ipv4_packet(B_IN, A_IN, payload);
    send(b, q.clone()).await;
    assert_eq!(recv(a).await, q);
}

/// Waits until `cond` holds, checking every 10 ms; fails after 5 s naming `what`.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

//! A tunnel handed to a successor (in one process here, over real loopback UDP sockets,
//! no root needed): the socket and its port carry on, the peers come along with the
//! endpoints they roamed to, and after one handshake traffic flows again, also towards a
//! peer that only receives.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{A_IN, B_IN, peer, wait_until};
use dataplane::io::{UdpBinder, UdpIo};
use dataplane::testing::{MemTunHost, ipv4_packet, mem_tun};
use dataplane::udp::{InheritedUdp, SystemUdp};
use dataplane::{PrivateKey, Tunnel, TunnelConfig};
use tokio::time::timeout;

fn config(key: &PrivateKey, peers: Vec<dataplane::PeerConfig>) -> TunnelConfig {
    TunnelConfig {
        private_key: Some(key.clone()),
        listen_port: 0,
        fwmark: 0,
        peers,
    }
}

async fn deliver(to: &mut MemTunHost, from: &MemTunHost, pkt: Vec<u8>) {
    from.to_tunnel.send(pkt.clone()).await.unwrap();
    let got = timeout(Duration::from_secs(5), to.from_tunnel.recv())
        .await
        .expect("no packet within 5 s")
        .unwrap();
    assert_eq!(got, pkt);
}

#[tokio::test]
async fn a_released_tunnel_carries_on_in_its_successor() {
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let (tun_b, mut host_b) = mem_tun();
    // B knows no endpoint for A: it learns it from A's handshake.
    let b = Tunnel::spawn(
        "b",
        tun_b,
        InheritedUdp::default(),
        config(&kb, vec![peer(&ka, None, &["10.0.0.1/32"])]),
    )
    .unwrap();
    let b_port = b.listen_port();
    let b_udp: SocketAddr = ([127, 0, 0, 1], b_port).into();
    let (tun_a, mut host_a) = mem_tun();
    let a = Tunnel::spawn(
        "a",
        tun_a,
        SystemUdp,
        config(&ka, vec![peer(&kb, Some(b_udp), &["10.0.0.2/32"])]),
    )
    .unwrap();
    deliver(&mut host_b, &host_a, ipv4_packet(A_IN, B_IN, b"before")).await;
    deliver(&mut host_a, &host_b, ipv4_packet(B_IN, A_IN, b"reply")).await;

    let released = b.release();
    let a_udp = a.status().listen_port;
    let learnt = released.config.peers[0]
        .endpoint
        .expect("the roamed endpoint came along");
    assert_eq!(learnt.port(), a_udp);
    assert_eq!(released.config.listen_port, b_port, "the bound port, not 0");
    let socket = released.socket.unwrap().expect("a bound socket");
    // The port stays taken while the handed-over descriptor is open.
    assert!(SystemUdp.bind(b_port, 0).is_err());

    let (tun_b2, mut host_b2) = mem_tun();
    let binder = InheritedUdp::new(Some(socket)).unwrap();
    assert_eq!(binder.held_port(), Some(b_port));
    let b2 = Tunnel::spawn("b", tun_b2, binder, released.config).unwrap();
    assert_eq!(b2.listen_port(), b_port, "the same socket");
    b2.handshake_now();
    // A only sends; B2 has no session. Without B2's handshake A would go on sealing for
    // a session that left with B's process.
    wait_until("the successor's handshake completes", || {
        b2.status().peers[0].last_handshake.is_some()
    })
    .await;
    deliver(&mut host_b2, &host_a, ipv4_packet(A_IN, B_IN, b"after")).await;
    deliver(&mut host_a, &host_b2, ipv4_packet(B_IN, A_IN, b"and back")).await;
    drop(host_b);
}

#[test]
fn asking_for_another_port_closes_the_handed_socket() {
    let held = SystemUdp.bind(0, 0).unwrap();
    let port = held.local_port();
    let binder = InheritedUdp::new(Some(held.duplicate().unwrap())).unwrap();
    drop(held);
    let other = binder.bind(0, 0).map(|s| s.local_port()).unwrap();
    assert_eq!(other, port, "port 0 takes the handed socket");
    // Taken once: the next bind is a new socket.
    let again = binder.bind(0, 0).unwrap();
    assert_ne!(again.local_port(), port);
}

#[test]
fn only_a_bound_udp_socket_is_adopted() {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let e = InheritedUdp::new(Some(std::os::fd::OwnedFd::from(tcp))).unwrap_err();
    assert!(e.to_string().contains("not a bound UDP socket"), "{e}");
}

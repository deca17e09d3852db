//! The packet threads over in-memory transports, no root needed: following a new
//! socket, stopping, freeing the port, the inline reply pickup and the TUN hand-off.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use dataplane::testing::{MemNet, ipv4_packet, mem_tun, mem_tun_answering};
use dataplane::{PrivateKey, Tunnel, TunnelConfig};
use tokio::time::timeout;

#[tokio::test]
async fn asking_for_the_bound_port_keeps_the_socket() {
    let net = MemNet::new();
    let (tun, _host) = mem_tun();
    let t = Tunnel::spawn(
        "mem1",
        tun,
        net.host("192.0.2.5".parse().unwrap()),
        TunnelConfig::default(),
    )
    .unwrap();
    let port = t.listen_port();
    assert_ne!(port, 0);
    let mut cfg = t.config();
    cfg.listen_port = port;
    t.apply(cfg).unwrap();
    assert_eq!(t.listen_port(), port);
}

#[tokio::test]
async fn a_new_listen_port_carries_traffic_at_once() {
    let net = MemNet::new();
    let (mut a, mut b) = pair(&net);
    exchange(&mut a, &mut b, b"before").await;
    // B moves to another port; A is told where B went. B's receiving thread must follow
    // the new socket without any traffic on the old one to wake it.
    let mut cfg = b.tunnel.config();
    cfg.listen_port = 51821;
    b.tunnel.apply(cfg).unwrap();
    assert_eq!(b.tunnel.listen_port(), 51821);
    let mut cfg = a.tunnel.config();
    cfg.peers[0].endpoint = Some("192.0.2.2:51821".parse().unwrap());
    a.tunnel.apply(cfg).unwrap();
    exchange(&mut a, &mut b, b"after").await;
}

#[tokio::test]
async fn a_deleted_device_stops_the_tunnel() {
    let net = MemNet::new();
    let (a, _b) = pair(&net);
    let Node { tunnel, host, .. } = a;
    // Dropping the host side is the in-memory TUN being deleted.
    drop(host);
    timeout(Duration::from_secs(5), tunnel.stopped())
        .await
        .expect("the outbound path reports the lost device");
}

#[tokio::test]
async fn a_dropped_tunnel_frees_its_port_at_once() {
    let net = MemNet::new();
    for round in 0..3 {
        let (tun, _host) = mem_tun();
        let config = TunnelConfig {
            listen_port: 51999,
            ..TunnelConfig::default()
        };
        let t = Tunnel::spawn("mem2", tun, net.host("192.0.2.7".parse().unwrap()), config)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(t.listen_port(), 51999);
        drop(t);
    }
}

#[tokio::test]
async fn a_reply_queued_during_a_tun_write_leaves_at_once() {
    // B's inner stack answers every packet inline, the way the kernel answers a ping
    // during the TUN write, and (unlike the kernel) without waking B's outbound thread:
    // only the receiving thread's pickup can send the answers.
    let net = MemNet::new();
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let b_udp: SocketAddr = "192.0.2.2:51820".parse().unwrap();
    let mut a = node(
        &net,
        "192.0.2.1",
        ka.clone(),
        51820,
        vec![peer(&kb, Some(b_udp), &["10.0.0.2/32"])],
    );
    let answering = mem_tun_answering(|p| {
        let mut reply = b"pong:".to_vec();
        reply.extend_from_slice(&p[20..]);
        Some(ipv4_packet(B_IN, A_IN, &reply))
    });
    let _b = node_on(
        answering,
        &net,
        "192.0.2.2",
        kb,
        51820,
        vec![peer(&ka, None, &["10.0.0.1/32"])],
    );
    for i in 0..20u8 {
        let ping = [b'p', i];
        send(&a, ipv4_packet(A_IN, B_IN, &ping)).await;
        let pong = recv(&mut a).await;
        assert_eq!(
            pong,
            ipv4_packet(B_IN, A_IN, &[b'p', b'o', b'n', b'g', b':', b'p', i])
        );
    }
}

#[tokio::test]
async fn the_tun_changes_hands_under_load_and_back() {
    let net = MemNet::new();
    let (mut a, mut b) = pair(&net);
    // Light traffic: the receiving thread reads the TUN too (one warm thread per round trip).
    exchange(&mut a, &mut b, b"light").await;
    assert_eq!(a.host.readers(), ["rx-mem0"]);
    // A burst: the sending thread takes the TUN over; nothing is lost or reordered.
    let burst: Vec<Vec<u8>> = (0..300u16)
        .map(|i| ipv4_packet(A_IN, B_IN, &i.to_be_bytes()))
        .collect();
    send_all_in_order(&a, &mut b, &burst).await;
    assert!(
        a.host.readers().iter().any(|r| r == "tx-mem0"),
        "the burst went to the sending thread: {:?}",
        a.host.readers()
    );
    // Quiet again (the sending thread keeps the TUN for 4 ms after its last packet): the
    // TUN returns to the receiving thread and traffic still flows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for round in 0u8.. {
        tokio::time::sleep(Duration::from_millis(10)).await;
        exchange(&mut a, &mut b, &[b'q', round]).await;
        if a.host.readers().last().map(String::as_str) == Some("rx-mem0") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the TUN never came back: {:?}",
            a.host.readers()
        );
    }
    for round in 0..3u8 {
        exchange(&mut a, &mut b, &[b'r', round]).await;
    }
    assert_eq!(a.host.readers().last().map(String::as_str), Some("rx-mem0"));
    send_all_in_order(&a, &mut b, &burst).await;
}

//! Tunnels over in-memory TUN and UDP transports, no root needed: the protocol as a
//! user sees it (handshakes, data, roaming, cryptokey routing, reconfiguration).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use dataplane::config::parse_prefix;
use dataplane::testing::{MemNet, ipv4_packet, ipv6_packet};
use dataplane::{DropReason, PrivateKey};
use tokio::time::timeout;

#[tokio::test]
async fn handshake_and_data_both_ways_v4_and_v6() {
    let net = MemNet::new();
    let (mut a, mut b) = pair(&net);
    exchange(&mut a, &mut b, b"hello").await;

    let mut v6a = [0u8; 16];
    v6a[0] = 0xfd;
    v6a[15] = 1;
    let mut v6b = v6a;
    v6b[15] = 2;
    let p = ipv6_packet(v6b, v6a, b"six");
    send(&b, p.clone()).await;
    assert_eq!(recv(&mut a).await, p);

    let st = a.tunnel.status();
    assert_eq!(st.listen_port, 51820);
    let pa = &st.peers[0];
    assert!(pa.last_handshake.is_some());
    assert!(pa.rx_bytes > 0 && pa.tx_bytes > 0);
    // B learned A's endpoint from the handshake.
    assert_eq!(b.tunnel.status().peers[0].endpoint, Some(a.udp));
    assert!(a.tunnel.counters().handshakes() + b.tunnel.counters().handshakes() >= 2);
    let t = a.tunnel.counters().traffic();
    assert!(
        t.rx_packets >= 3 && t.tx_packets >= 2 && t.rx_bytes >= pa.rx_bytes,
        "{t:?}"
    );
}

#[tokio::test]
async fn large_batches_arrive_in_order() {
    let net = MemNet::new();
    let (mut a, mut b) = pair(&net);
    exchange(&mut a, &mut b, b"warm up").await;
    let packets: Vec<Vec<u8>> = (0..300u32)
        .map(|i| ipv4_packet(A_IN, B_IN, &i.to_be_bytes().repeat(300)))
        .collect();
    send_all_in_order(&a, &mut b, &packets).await;
}

#[tokio::test]
async fn endpoint_roams_to_the_new_source_port() {
    let net = MemNet::new();
    let (mut a, mut b) = pair(&net);
    exchange(&mut a, &mut b, b"1").await;
    assert_eq!(b.tunnel.status().peers[0].endpoint, Some(a.udp));
    // A moves to another port; B follows after A's next authenticated packet.
    let mut cfg = a.tunnel.config();
    cfg.listen_port = 40001;
    a.tunnel.apply(cfg).unwrap();
    assert_eq!(a.tunnel.listen_port(), 40001);
    exchange(&mut a, &mut b, b"2").await;
    assert_eq!(
        b.tunnel.status().peers[0].endpoint,
        Some("192.0.2.1:40001".parse().unwrap())
    );
}

#[tokio::test]
async fn spoofed_inner_source_is_dropped() {
    let net = MemNet::new();
    let (mut a, mut b) = pair(&net);
    exchange(&mut a, &mut b, b"1").await;
    // B lets 10.9.0.0/16 out towards A, but A does not accept it from B.
    let mut cfg = b.tunnel.config();
    cfg.peers[0]
        .allowed_ips
        .push(parse_prefix("10.9.0.0/16").unwrap());
    b.tunnel.apply(cfg).unwrap();
    send(&b, ipv4_packet([10, 9, 9, 9], A_IN, b"spoof")).await;
    nothing(&mut a).await;
    assert_eq!(a.tunnel.counters().drops(DropReason::SourceNotAllowed), 1);
    exchange(&mut a, &mut b, b"still fine").await;
}

#[tokio::test]
async fn removed_peer_gets_nothing_through() {
    let net = MemNet::new();
    let (mut a, mut b) = pair(&net);
    exchange(&mut a, &mut b, b"1").await;
    let mut cfg = b.tunnel.config();
    cfg.peers.clear();
    b.tunnel.apply(cfg).unwrap();
    send(&a, ipv4_packet(A_IN, B_IN, b"after removal")).await;
    nothing(&mut b).await;
    assert!(b.tunnel.counters().drops(DropReason::UnknownPeer) >= 1);
    // B has no route back either.
    send(&b, ipv4_packet(B_IN, A_IN, b"x")).await;
    wait_until("B counts the unroutable packet", || {
        b.tunnel.counters().drops(DropReason::NoRoute) > 0
    })
    .await;
    assert_eq!(b.tunnel.counters().drops(DropReason::NoRoute), 1);
}

#[tokio::test]
async fn allowed_ip_moves_between_peers() {
    let net = MemNet::new();
    let (ka, kb, kc) = (
        PrivateKey::generate(),
        PrivateKey::generate(),
        PrivateKey::generate(),
    );
    let (ua, ub, uc): (SocketAddr, SocketAddr, SocketAddr) = (
        "192.0.2.1:1000".parse().unwrap(),
        "192.0.2.2:1000".parse().unwrap(),
        "192.0.2.3:1000".parse().unwrap(),
    );
    let mut a = node(
        &net,
        "192.0.2.1",
        ka.clone(),
        1000,
        vec![
            peer(&kb, Some(ub), &["10.0.0.2/32", "10.0.0.99/32"]),
            peer(&kc, Some(uc), &["10.0.0.3/32"]),
        ],
    );
    let mut b = node(
        &net,
        "192.0.2.2",
        kb.clone(),
        1000,
        vec![peer(&ka, Some(ua), &["10.0.0.0/24"])],
    );
    let mut c = node(
        &net,
        "192.0.2.3",
        kc.clone(),
        1000,
        vec![peer(&ka, Some(ua), &["10.0.0.0/24"])],
    );
    let to99 = ipv4_packet(A_IN, [10, 0, 0, 99], b"for 99");
    send(&a, to99.clone()).await;
    assert_eq!(recv(&mut b).await, to99);

    // Move 10.0.0.99 from B to C through the single write path.
    let mut cfg = a.tunnel.config();
    cfg.peers[0]
        .allowed_ips
        .retain(|n| n.to_string() != "10.0.0.99/32");
    cfg.peers[1]
        .allowed_ips
        .push(parse_prefix("10.0.0.99/32").unwrap());
    let before = a.tunnel.status().peers[0].last_handshake;
    a.tunnel.apply(cfg).unwrap();
    send(&a, to99.clone()).await;
    assert_eq!(recv(&mut c).await, to99);
    nothing(&mut b).await;
    // B's session survived the apply (same key): no new handshake was needed.
    assert_eq!(a.tunnel.status().peers[0].last_handshake, before);
    // And B may no longer source 10.0.0.99 towards A.
    send(&b, ipv4_packet([10, 0, 0, 99], A_IN, b"x")).await;
    nothing(&mut a).await;
    assert_eq!(a.tunnel.counters().drops(DropReason::SourceNotAllowed), 1);
    // Conflicting claims through apply are refused and change nothing.
    let mut bad = a.tunnel.config();
    bad.peers[0]
        .allowed_ips
        .push(parse_prefix("10.0.0.3/32").unwrap());
    assert!(a.tunnel.apply(bad).is_err());
    let to3 = ipv4_packet(A_IN, [10, 0, 0, 3], b"c");
    send(&a, to3.clone()).await;
    assert_eq!(recv(&mut c).await, to3);
}

#[tokio::test]
async fn new_private_key_rekeys() {
    let net = MemNet::new();
    let (mut a, mut b) = pair(&net);
    exchange(&mut a, &mut b, b"old key").await;
    let old_pub = a.key.public_key();
    let new = PrivateKey::generate();
    let mut cfg = a.tunnel.config();
    cfg.private_key = Some(new.clone());
    a.tunnel.apply(cfg).unwrap();
    let mut cfg = b.tunnel.config();
    cfg.peers[0].public_key = new.public_key();
    b.tunnel.apply(cfg).unwrap();
    a.key = new;
    assert_ne!(old_pub, a.key.public_key());
    exchange(&mut a, &mut b, b"new key").await;
}

#[tokio::test]
async fn restarted_peer_with_keepalive_reconnects() {
    let net = MemNet::new();
    let (mut a, b) = pair(&net);
    let mut b = b;
    exchange(&mut a, &mut b, b"before").await;
    let kb = b.key.clone();
    // Dropping a tunnel joins its threads and frees its port: B can come back at once.
    drop(b);
    // Same key, fresh state, persistent keepalive on: it handshakes at once.
    let mut pa = peer(&a.key, Some(a.udp), &["10.0.0.1/32"]);
    pa.persistent_keepalive = Some(25);
    let mut b = node(&net, "192.0.2.2", kb, 51820, vec![pa]);
    // Like ping: packets sent on A's stale session before B's handshake lands are lost,
    // the first one after it gets through.
    let p = ipv4_packet(A_IN, B_IN, b"after");
    let mut delivered = false;
    for _ in 0..20 {
        send(&a, p.clone()).await;
        if let Ok(Some(got)) = timeout(Duration::from_millis(250), b.host.from_tunnel.recv()).await
        {
            assert_eq!(got, p);
            delivered = true;
            break;
        }
    }
    assert!(delivered, "A never reached the restarted B");
    exchange(&mut a, &mut b, b"after").await;
}

#[tokio::test]
async fn garbage_datagrams_are_counted_not_fatal() {
    let net = MemNet::new();
    let (mut a, mut b) = pair(&net);
    let junk: SocketAddr = "198.51.100.1:9".parse().unwrap();
    for d in [
        &b""[..],
        b"\x04\0\0\0short",
        &[1u8; 148],
        &[2u8; 92],
        &[4, 0, 0, 0, 1, 2, 3, 4].repeat(8),
    ] {
        net.inject(junk, b.udp, d);
    }
    exchange(&mut a, &mut b, b"alive").await;
    let c = b.tunnel.counters();
    assert!(
        c.drops(DropReason::Malformed)
            + c.drops(DropReason::UnknownPeer)
            + c.drops(DropReason::Rejected)
            >= 4
    );
}

#[tokio::test]
async fn keepalive_change_keeps_session() {
    let net = MemNet::new();
    let (mut a, mut b) = pair(&net);
    exchange(&mut a, &mut b, b"1").await;
    let hs = a.tunnel.counters().handshakes() + b.tunnel.counters().handshakes();
    let mut cfg = a.tunnel.config();
    cfg.peers[0].persistent_keepalive = Some(1);
    a.tunnel.apply(cfg).unwrap();
    let rx0 = b.tunnel.status().peers[0].rx_bytes;
    // Keepalives arrive (32-byte data messages, one a second) without a new handshake.
    wait_until("two keepalives reach B", || {
        b.tunnel.status().peers[0].rx_bytes >= rx0 + 64
    })
    .await;
    assert_eq!(
        a.tunnel.counters().handshakes() + b.tunnel.counters().handshakes(),
        hs
    );
    exchange(&mut a, &mut b, b"2").await;
}

#[tokio::test]
async fn packets_held_during_the_handshake_all_arrive_in_order() {
    let net = MemNet::new();
    let (a, mut b) = pair(&net);
    // More than one output batch worth, sent before any session exists.
    let packets: Vec<Vec<u8>> = (0..100u32)
        .map(|i| ipv4_packet(A_IN, B_IN, &i.to_be_bytes()))
        .collect();
    send_all_in_order(&a, &mut b, &packets).await;
}

#[tokio::test]
async fn an_explicit_endpoint_overrides_a_roamed_one() {
    let net = MemNet::new();
    let (mut a, mut b) = pair(&net);
    exchange(&mut a, &mut b, b"1").await;
    // B moves; A follows it.
    let mut cfg = b.tunnel.config();
    cfg.listen_port = 40002;
    b.tunnel.apply(cfg).unwrap();
    let p = ipv4_packet(B_IN, A_IN, b"from the new port");
    send(&b, p.clone()).await;
    assert_eq!(recv(&mut a).await, p);
    let roamed: SocketAddr = "192.0.2.2:40002".parse().unwrap();
    assert_eq!(a.tunnel.status().peers[0].endpoint, Some(roamed));
    // Re-applying the unchanged configuration keeps the roamed endpoint ...
    a.tunnel.apply(a.tunnel.config()).unwrap();
    assert_eq!(a.tunnel.status().peers[0].endpoint, Some(roamed));
    // ... but `wg set … endpoint <same as configured>` puts it back.
    let set = format!(
        "set=1\npublic_key={}\nendpoint={}",
        b.key.public_key().to_hex(),
        b.udp
    );
    let lines: Vec<String> = set.lines().map(str::to_string).collect();
    assert_eq!(
        dataplane::uapi::handle(&*a.tunnel.device(), &lines),
        "errno=0\n\n"
    );
    assert_eq!(a.tunnel.status().peers[0].endpoint, Some(b.udp));
}

#[tokio::test]
async fn a_full_batch_of_jumbo_packets_all_arrive() {
    let net = MemNet::new();
    let (mut a, mut b) = pair(&net);
    exchange(&mut a, &mut b, b"warm").await;
    // More sealed bytes than one output buffer holds (128 packets of 9000 and 65000 bytes):
    // the sender must flush and go on sealing, not drop the rest.
    for size in [9_000usize, 65_000] {
        let burst: Vec<Vec<u8>> = (0..128u32)
            .map(|i| {
                let mut payload = vec![(i % 251) as u8; size - 28];
                payload[..4].copy_from_slice(&i.to_be_bytes());
                ipv4_packet(A_IN, B_IN, &payload)
            })
            .collect();
        send_all_in_order(&a, &mut b, &burst).await;
    }
    assert_eq!(a.tunnel.counters().drops(DropReason::SendError), 0);
}

#[tokio::test]
async fn only_datagrams_the_socket_took_count_as_sent() {
    let net = MemNet::new();
    let kb = PrivateKey::generate();
    // Nothing listens at the peer's endpoint: every send fails.
    let nowhere: SocketAddr = "192.0.2.99:51820".parse().unwrap();
    let a = node(
        &net,
        "192.0.2.1",
        PrivateKey::generate(),
        51820,
        vec![peer(&kb, Some(nowhere), &["10.0.0.2/32"])],
    );
    send(&a, ipv4_packet(A_IN, B_IN, b"lost")).await;
    wait_until("the failed handshake initiation is counted", || {
        a.tunnel.counters().drops(DropReason::SendError) > 0
    })
    .await;
    let status = a.tunnel.status();
    assert_eq!(
        (status.peers[0].tx_bytes, status.peers[0].tx_packets),
        (0, 0)
    );
    let t = a.tunnel.counters().traffic();
    assert_eq!((t.tx_bytes, t.tx_packets), (0, 0));
}

#[tokio::test]
async fn an_unroutable_destination_gets_an_icmp_error_back() {
    let net = MemNet::new();
    let (mut a, mut b) = pair(&net);
    exchange(&mut a, &mut b, b"up").await;
    let stray = ipv4_packet(A_IN, [10, 0, 0, 99], b"anyone there?");
    send(&a, stray.clone()).await;
    let err = recv(&mut a).await;
    assert_eq!(
        &err[12..16],
        &[10, 0, 0, 99],
        "from the unreachable address"
    );
    assert_eq!(&err[16..20], &A_IN, "to the sender");
    assert_eq!(
        (err[9], err[20], err[21]),
        (1, 3, 1),
        "ICMP host unreachable"
    );
    assert_eq!(&err[28..], &stray[..], "quoting the packet");
    assert_eq!(a.tunnel.counters().drops(DropReason::NoRoute), 1);
    // IPv6: address unreachable.
    let fd = |last: u8| {
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[15] = last;
        a
    };
    send(&a, ipv6_packet(fd(1), fd(99), b"v6?")).await;
    let err = recv(&mut a).await;
    assert_eq!((err[6], err[40], err[41]), (58, 1, 3));
    // A packet too large for one WireGuard message, with DF: "fragmentation needed".
    let mut huge = ipv4_packet(A_IN, B_IN, &vec![0u8; 65_480]);
    huge[6] = 0x40;
    send(&a, huge).await;
    let err = recv(&mut a).await;
    assert_eq!((err[20], err[21]), (3, 4));
    assert_eq!(u16::from_be_bytes([err[26], err[27]]), 65_475);
    assert_eq!(a.tunnel.counters().drops(DropReason::TooBig), 1);
    nothing(&mut b).await;
}

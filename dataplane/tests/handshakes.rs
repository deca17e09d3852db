//! Handshakes over in-memory transports, no root needed: when a handshake counts as
//! complete, floods of initiations from one source, and peers that never answer.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use common::*;
use dataplane::io::{UdpBinder, UdpIo};
use dataplane::testing::{MemNet, ipv4_packet};
use dataplane::{Batch, DropReason, PrivateKey};
use tokio::time::timeout;

const HANDSHAKE_RESPONSE: u8 = 2;
const DATA: u8 = 4;

#[tokio::test]
async fn the_responder_counts_a_handshake_when_the_first_data_arrives() {
    let net = MemNet::new();
    let hold_data = Arc::new(AtomicBool::new(true));
    let held = Arc::clone(&hold_data);
    let b_udp: SocketAddr = "192.0.2.2:51820".parse().unwrap();
    // Everything A sends to B in a session (data and keepalives) is lost while held.
    net.lose_when(move |_, to, bytes| {
        to == b_udp && bytes.first() == Some(&DATA) && held.load(Ordering::SeqCst)
    });
    let (mut a, mut b) = pair(&net);
    send(&a, ipv4_packet(A_IN, B_IN, b"first")).await;
    wait_until("A completes the handshake", || {
        a.tunnel.counters().handshakes() == 1
    })
    .await;
    // B answered the initiation, but nothing confirms the session yet.
    assert_eq!(b.tunnel.counters().handshakes(), 0);
    assert_eq!(b.tunnel.status().peers[0].last_handshake, None);
    assert!(a.tunnel.status().peers[0].last_handshake.is_some());
    hold_data.store(false, Ordering::SeqCst);
    exchange(&mut a, &mut b, b"now").await;
    assert_eq!(b.tunnel.counters().handshakes(), 1);
    assert!(b.tunnel.status().peers[0].last_handshake.is_some());
}

#[tokio::test]
async fn a_retransmitted_initiation_is_not_a_second_handshake() {
    let net = MemNet::new();
    let a_udp: SocketAddr = "192.0.2.1:51820".parse().unwrap();
    let lost_one = Arc::new(AtomicBool::new(false));
    let lost = Arc::clone(&lost_one);
    // B's first response is lost: A retransmits its initiation after 5 s (REKEY_TIMEOUT).
    net.lose_when(move |_, to, bytes| {
        to == a_udp
            && bytes.first() == Some(&HANDSHAKE_RESPONSE)
            && !lost.swap(true, Ordering::SeqCst)
    });
    let (mut a, mut b) = pair(&net);
    let p = ipv4_packet(A_IN, B_IN, b"after a retry");
    send(&a, p.clone()).await;
    let got = timeout(Duration::from_secs(15), b.host.from_tunnel.recv())
        .await
        .expect("delivered after the retransmission")
        .unwrap();
    assert_eq!(got, p);
    assert!(lost_one.load(Ordering::SeqCst), "a response was lost");
    exchange(&mut a, &mut b, b"then").await;
    // B answered two initiations; one handshake completed on each side.
    assert_eq!(b.tunnel.counters().handshakes(), 1);
    assert_eq!(a.tunnel.counters().handshakes(), 1);
}

/// Sends handshake initiations with a valid MAC from one source for `for_how_long`,
/// answering cookie replies so that its cookie MACs are valid too. Returns how many.
fn flood(net: &MemNet, target: &PrivateKey, to: SocketAddr, for_how_long: Duration) -> u64 {
    let from: SocketAddr = "198.51.100.7:9999".parse().unwrap();
    let mut sock = net.host(from.ip()).bind(from.port(), 0).unwrap();
    let mut attacker = Tunn::new(
        x25519::StaticSecret::random_from_rng(rand::thread_rng()),
        x25519::PublicKey::from(target.public_key().0),
        None,
        None,
        1,
        None,
    );
    let (mut buf, mut batch) = ([0u8; 256], Batch::new());
    let (start, mut sent) = (Instant::now(), 0);
    while start.elapsed() < for_how_long {
        if let TunnResult::WriteToNetwork(init) =
            attacker.format_handshake_initiation(&mut buf, true)
        {
            net.inject(from, to, init);
            sent += 1;
        }
        // Take in a cookie reply if one came back for this initiation.
        std::thread::sleep(Duration::from_micros(200));
        batch.clear();
        let _ = sock.recv_batch(&mut batch);
        for (reply, _) in batch.datagrams() {
            let mut out = [0u8; 256];
            let _ = attacker.decapsulate(Some(to.ip()), reply, &mut out);
        }
    }
    let _ = &mut sock;
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_source_is_limited_and_other_peers_get_through() {
    let net = MemNet::new();
    let (ka, kb, kc) = (
        PrivateKey::generate(),
        PrivateKey::generate(),
        PrivateKey::generate(),
    );
    let b_udp: SocketAddr = "192.0.2.2:51820".parse().unwrap();
    let mut b = node(
        &net,
        "192.0.2.2",
        kb.clone(),
        51820,
        vec![
            peer(&ka, None, &["10.0.0.1/32"]),
            peer(&kc, None, &["10.0.0.3/32"]),
        ],
    );
    let a = node(
        &net,
        "192.0.2.1",
        ka,
        51820,
        vec![peer(&kb, Some(b_udp), &["10.0.0.2/32"])],
    );
    let c = node(
        &net,
        "192.0.2.3",
        kc,
        51820,
        vec![peer(&kb, Some(b_udp), &["10.0.0.2/32"])],
    );
    let attack = {
        let (net, kb) = (net.clone(), kb.clone());
        tokio::task::spawn_blocking(move || flood(&net, &kb, b_udp, FLOOD))
    };
    // During the flood, two other peers complete their handshakes and are heard. Under
    // load their first initiations get cookie replies; they get through on the retry
    // with the cookie, 5 s later (REKEY_TIMEOUT), as with the kernel and wireguard-go.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let started = Instant::now();
    // Each unanswered try queues one more copy, all sent once the handshake completes: a
    // copy of an earlier peer's packet may still arrive while the next peer is tried.
    let mut earlier: Vec<Vec<u8>> = Vec::new();
    for (from, src) in [(&a, A_IN), (&c, [10, 0, 0, 3])] {
        let p = ipv4_packet(src, B_IN, b"through the flood");
        let mut delivered = false;
        while !delivered && started.elapsed() < Duration::from_secs(8) {
            send(from, p.clone()).await;
            while let Ok(Some(got)) =
                timeout(Duration::from_millis(500), b.host.from_tunnel.recv()).await
            {
                if got == p {
                    delivered = true;
                    break;
                }
                assert!(earlier.contains(&got), "an unexpected packet: {got:?}");
            }
        }
        earlier.push(p);
        assert!(
            delivered,
            "a peer's handshake did not get through the flood within one retry"
        );
    }
    let sent = attack.await.unwrap();
    let counters = b.tunnel.counters();
    let limited = counters.drops(DropReason::RateLimited);
    // Initiations that got as far as the Diffie-Hellman work (the attacker's key is no
    // peer's): at most the unloaded share of each second plus the source's bucket.
    let dh_work = counters.drops(DropReason::UnknownPeer);
    let secs = FLOOD.as_secs() + 1;
    assert!(limited > 0, "nothing was rate limited ({sent} sent)");
    assert!(
        dh_work <= secs * (100 + 20) + 5,
        "{dh_work} of {sent} initiations cost a Diffie-Hellman"
    );
    eprintln!("{sent} initiations sent, {dh_work} cost a Diffie-Hellman, {limited} limited");
}

const FLOOD: Duration = Duration::from_secs(9);

/// Slow: boringtun retries an unanswered handshake for 90 s before giving up.
#[tokio::test]
#[ignore = "slow (about 2 min): scripts/test.sh runs it beside the netns tests"]
async fn a_peer_that_never_answers_costs_nothing_after_90_s_and_is_reached_again() {
    let net = MemNet::new();
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let gone: SocketAddr = "192.0.2.2:51820".parse().unwrap();
    let mut to_b = peer(&kb, Some(gone), &["10.0.0.2/32"]);
    to_b.persistent_keepalive = Some(25);
    let mut a = node(&net, "192.0.2.1", ka.clone(), 51820, vec![to_b]);
    // Switching the keepalive on starts a handshake, retried every 5 s for 90 s.
    wait_until("the first initiation", || net.sent_to(gone) > 0).await;
    tokio::time::sleep(Duration::from_secs(95)).await;
    let tried = net.sent_to(gone);
    assert!((15..=22).contains(&tried), "{tried} initiations in 95 s");
    // Then nothing, past a whole keepalive interval.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        net.sent_to(gone),
        tried,
        "a silent peer still costs packets"
    );
    // Data for the peer starts a handshake at once.
    let held = ipv4_packet(A_IN, B_IN, b"anyone?");
    send(&a, held.clone()).await;
    wait_until("a new initiation for data", || net.sent_to(gone) > tried).await;
    // The peer comes back (its own keepalive initiates): the held packet arrives and both
    // ways work again.
    let mut to_a = peer(&ka, Some(a.udp), &["10.0.0.1/32"]);
    to_a.persistent_keepalive = Some(25);
    let mut b = node(&net, "192.0.2.2", kb, 51820, vec![to_a]);
    let got = timeout(Duration::from_secs(10), b.host.from_tunnel.recv())
        .await
        .expect("the held packet")
        .unwrap();
    assert_eq!(got, held);
    exchange(&mut a, &mut b, b"back").await;
}

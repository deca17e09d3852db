//! The real UDP socket over loopback, without root: GSO trains out, GRO-coalesced reads
//! in, canonical source addresses, IPv4 and IPv6.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dataplane::Batch;
use dataplane::io::{UdpBinder, UdpIo};
use dataplane::udp::{SystemUdp, UdpSocket};

/// Receives until `n` datagrams arrived (or 5 s passed); returns them with their sources
/// and the GRO strides of the slots they came in.
fn receive(sock: &UdpSocket, n: usize) -> (Vec<(Vec<u8>, SocketAddr)>, Vec<usize>) {
    let (mut got, mut strides) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut batch = Batch::new();
    while got.len() < n && Instant::now() < deadline {
        batch.clear();
        sock.recv_batch(&mut batch).expect("receive");
        if batch.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        strides.extend((0..batch.len()).map(|i| batch.stride(i)));
        got.extend(batch.datagrams().map(|(d, from)| (d.to_vec(), from)));
    }
    (got, strides)
}

fn train(to: SocketAddr, sizes: &[usize]) -> Batch {
    let mut out = Batch::packed(128, 1500);
    for (i, &len) in sizes.iter().enumerate() {
        assert!(out.push(&vec![i as u8; len], to));
    }
    out
}

fn round_trip(loopback: &str) {
    let (a, b) = (SystemUdp.bind(0, 0).unwrap(), SystemUdp.bind(0, 0).unwrap());
    let to: SocketAddr = format!("{loopback}:{}", b.local_port()).parse().unwrap();
    let from: SocketAddr = format!("{loopback}:{}", a.local_port()).parse().unwrap();
    // 20 equal datagrams to one destination: one GSO train (a shorter last one may join).
    let mut sizes = vec![1200; 19];
    sizes.push(700);
    assert_eq!(a.send_batch(&mut train(to, &sizes)), 0, "nothing failed");
    let (got, strides) = receive(&b, sizes.len());
    assert_eq!(got.len(), sizes.len(), "every datagram arrived");
    for (i, (d, src)) in got.iter().enumerate() {
        assert_eq!(
            d,
            &vec![i as u8; sizes[i]],
            "datagram {i} intact and in order"
        );
        assert_eq!(*src, from, "canonical source");
    }
    // The train arrived coalesced: GRO hands the socket segments of 1200 bytes in one read.
    assert!(
        strides.contains(&1200),
        "no GRO-coalesced read (strides {strides:?})"
    );
}

#[test]
fn a_gso_train_arrives_whole_and_gro_coalesced_over_ipv4() {
    round_trip("127.0.0.1");
}

#[test]
fn a_gso_train_arrives_whole_and_gro_coalesced_over_ipv6() {
    round_trip("[::1]");
}

#[test]
fn mixed_sizes_and_destinations_all_arrive() {
    let (a, b, c) = (
        SystemUdp.bind(0, 0).unwrap(),
        SystemUdp.bind(0, 0).unwrap(),
        SystemUdp.bind(0, 0).unwrap(),
    );
    let to_b: SocketAddr = ([127, 0, 0, 1], b.local_port()).into();
    let to_c: SocketAddr = format!("[::1]:{}", c.local_port()).parse().unwrap();
    let mut out = Batch::packed(128, 1500);
    let plan = [
        (to_b, 100),
        (to_b, 100),
        (to_c, 1400),
        (to_b, 60),
        (to_c, 1400),
        (to_c, 32),
    ];
    for (i, &(to, len)) in plan.iter().enumerate() {
        out.push(&vec![i as u8; len], to);
    }
    assert_eq!(
        a.try_send_batch(&mut out),
        0,
        "room in an idle socket buffer"
    );
    let (at_b, _) = receive(&b, 3);
    let (at_c, _) = receive(&c, 3);
    let lens =
        |v: &[(Vec<u8>, SocketAddr)]| v.iter().map(|(d, _)| (d[0], d.len())).collect::<Vec<_>>();
    assert_eq!(lens(&at_b), [(0, 100), (1, 100), (3, 60)]);
    assert_eq!(lens(&at_c), [(2, 1400), (4, 1400), (5, 32)]);
}

#[test]
fn binding_a_taken_port_fails_with_addr_in_use() {
    let a = SystemUdp.bind(0, 0).unwrap();
    let e = SystemUdp
        .bind(a.local_port(), 0)
        .expect_err("the port is taken");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
}

#[test]
fn a_failed_send_is_marked_and_the_rest_go_out() {
    let (a, b) = (SystemUdp.bind(0, 0).unwrap(), SystemUdp.bind(0, 0).unwrap());
    let to_b: SocketAddr = ([127, 0, 0, 1], b.local_port()).into();
    // Port 0 is no destination: the kernel refuses that one datagram.
    let nowhere: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut out = Batch::packed(128, 1500);
    for (i, to) in [to_b, to_b, nowhere, to_b].into_iter().enumerate() {
        out.push(&[i as u8; 200], to);
    }
    assert_eq!(a.send_batch(&mut out), 1);
    let failed: Vec<bool> = (0..out.len()).map(|i| out.failed(i)).collect();
    assert_eq!(failed, [false, false, true, false]);
    let (got, _) = receive(&b, 3);
    let firsts: Vec<u8> = got.iter().map(|(d, _)| d[0]).collect();
    assert_eq!(firsts, [0, 1, 3]);
}

#[test]
fn received_datagrams_say_where_they_arrived() {
    for (loopback, ip) in [("127.0.0.1", "127.0.0.1"), ("[::1]", "::1")] {
        let (a, b) = (SystemUdp.bind(0, 0).unwrap(), SystemUdp.bind(0, 0).unwrap());
        let to: SocketAddr = format!("{loopback}:{}", b.local_port()).parse().unwrap();
        assert_eq!(a.send_batch(&mut train(to, &[100])), 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut batch = Batch::new();
        while batch.is_empty() && Instant::now() < deadline {
            b.recv_batch(&mut batch).unwrap();
        }
        let (_, _, seen_at) = batch.received().next().expect("a datagram");
        let (local, ifindex) = seen_at.expect("the destination address is reported");
        assert_eq!(local, ip.parse::<std::net::IpAddr>().unwrap());
        assert!(ifindex > 0, "the interface is reported");
    }
}

#[test]
fn a_datagram_leaves_from_the_source_asked_for_or_the_kernels_choice() {
    let (a, b) = (SystemUdp.bind(0, 0).unwrap(), SystemUdp.bind(0, 0).unwrap());
    let to: SocketAddr = ([127, 0, 0, 1], b.local_port()).into();
    let mut out = Batch::packed(8, 1500);
    // 127.0.0.2 is this host's (all of 127/8 is); 192.0.2.77 is not: refused, then sent
    // from the kernel's choice.
    for (i, from) in ["127.0.0.2", "192.0.2.77"].iter().enumerate() {
        let slot = out.next_slot().unwrap();
        slot[..10].fill(i as u8);
        out.commit_path(10, to, Some(from.parse().unwrap()), 0, 0);
    }
    assert_eq!(a.send_batch(&mut out), 0);
    assert!(!out.source_refused(0));
    assert!(out.source_refused(1));
    let (got, _) = receive(&b, 2);
    let sources: Vec<_> = got.iter().map(|(_, from)| from.ip().to_string()).collect();
    assert_eq!(sources, ["127.0.0.2", "127.0.0.1"]);
}

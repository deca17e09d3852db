//! `TunDevice` against the kernel. Root only (creating a TUN needs CAP_NET_ADMIN): every
//! test runs its devices in network namespaces of its own, made with `unshare` on the
//! threads that use them, so nothing is left behind. `scripts/test.sh` runs them as root
//! with `--ignored`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dataplane::Batch;
use dataplane::batch::{BATCH_SIZE, SLOT_SIZE, TUN_HEADROOM};
use dataplane::io::TunIo;
use dataplane::testing::ipv4_packet;
use dataplane::tun::TunDevice;
use nix::sched::{CloneFlags, unshare};

/// Moves the calling thread into a new, empty network namespace with loopback up.
fn enter_new_netns() {
    unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET): run as root");
    ip(&["link", "set", "lo", "up"]);
}

/// Runs `ip` in the calling thread's network namespace (a child inherits it).
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(bytes, packets)` that the device moved in `dir` ("rx": written by us, "tx": read
/// by us), from `ip -s -j link show`.
fn link_stats(dev: &str, dir: &str) -> (u64, u64) {
    let json = ip(&["-s", "-j", "link", "show", "dev", dev]);
    let at = json
        .find(&format!("\"{dir}\":{{"))
        .expect("stats in ip's output");
    let num = |key: &str| -> u64 {
        let rest = &json[at..];
        let start = rest.find(&format!("\"{key}\":")).expect(key) + key.len() + 3;
        rest[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .expect("a number")
    };
    (num("bytes"), num("packets"))
}

/// Reads from `tun` until `want` accepts a packet or 5 s pass.
fn read_until(tun: &TunDevice, want: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut batch = Batch::new();
    while Instant::now() < deadline {
        batch.clear();
        tun.recv_batch(&mut batch).expect("TUN read");
        if let Some(p) = (0..batch.len()).map(|i| batch.packet(i)).find(|p| want(p)) {
            return p.to_vec();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("nothing matching read from the TUN");
}

fn udp_round_trip(offload: bool) {
    std::thread::spawn(move || {
        enter_new_netns();
        let tun = if offload {
            TunDevice::create("swgt0", 1420, true)
        } else {
            TunDevice::create_without_offload("swgt0", 1420, true)
        }
        .expect("TUN device");
        assert_eq!(tun.offload(), offload);
        ip(&["addr", "add", "10.77.0.1/24", "dev", "swgt0"]);
        let sock = UdpSocket::bind("10.77.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.send_to(b"hello", "10.77.0.2:9999").unwrap();
        // The datagram is routed into the device and read from it.
        let out = read_until(&tun, |p| {
            p.len() >= 28 && p[0] == 0x45 && p[9] == 17 && p[16..20] == [10, 77, 0, 2]
        });
        assert_eq!(&out[28..], b"hello");
        assert_eq!(u16::from_be_bytes([out[22], out[23]]), 9999);
        // An answer written to the device reaches the socket.
        let mut udp = Vec::new();
        udp.extend_from_slice(&9999u16.to_be_bytes());
        udp.extend_from_slice(&out[20..22]);
        udp.extend_from_slice(&(8u16 + 5).to_be_bytes());
        udp.extend_from_slice(&[0, 0]); // no checksum (IPv4)
        udp.extend_from_slice(b"world");
        let mut batch = Batch::with_headroom(4, 2048, TUN_HEADROOM);
        batch.push(
            &ipv4_packet([10, 77, 0, 2], [10, 77, 0, 1], &udp),
            unspecified(),
        );
        assert_eq!(tun.send_batch(&mut batch), 0);
        let mut buf = [0u8; 64];
        let (n, from) = sock.recv_from(&mut buf).expect("the answer arrives");
        assert_eq!(&buf[..n], b"world");
        assert_eq!(from, "10.77.0.2:9999".parse::<SocketAddr>().unwrap());
    })
    .join()
    .unwrap();
}

fn unspecified() -> SocketAddr {
    (Ipv4Addr::UNSPECIFIED, 0).into()
}

#[test]
#[ignore = "needs root (CAP_NET_ADMIN): sudo cargo test -p dataplane --test tun_device -- --ignored"]
fn a_datagram_goes_in_and_out_with_offload() {
    udp_round_trip(true);
}

#[test]
#[ignore = "needs root (CAP_NET_ADMIN): sudo cargo test -p dataplane --test tun_device -- --ignored"]
fn a_datagram_goes_in_and_out_without_offload() {
    udp_round_trip(false);
}

/// One end of the TCP test: a namespace with device `dev` at `local`, peer `remote`.
fn tcp_end(dev: &'static str, local: &str, remote: &str) -> TunDevice {
    enter_new_netns();
    let tun = TunDevice::create(dev, 1420, true).expect("TUN device");
    assert!(tun.offload(), "this kernel refused TUN offload");
    ip(&["addr", "add", local, "peer", remote, "dev", dev]);
    tun
}

/// Copies packets from one device to the other until `stop`.
fn relay(a: &TunDevice, b: &TunDevice, stop: &AtomicBool) {
    let mut input = Batch::new();
    let mut output = Batch::with_headroom(BATCH_SIZE, SLOT_SIZE, TUN_HEADROOM);
    while !stop.load(Ordering::Relaxed) {
        let mut moved = false;
        for (from, to) in [(a, b), (b, a)] {
            input.clear();
            from.recv_batch(&mut input).expect("TUN read");
            if input.is_empty() {
                continue;
            }
            moved = true;
            output.clear();
            for i in 0..input.len() {
                output.push(input.packet(i), unspecified());
            }
            assert_eq!(to.send_batch(&mut output), 0, "TUN write");
        }
        if !moved {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

#[test]
#[ignore = "needs root (CAP_NET_ADMIN): sudo cargo test -p dataplane --test tun_device -- --ignored"]
fn tcp_crosses_two_offloading_devices_as_super_packets() {
    const BYTES: usize = 8 << 20;
    let pattern = |i: usize| (i % 251) as u8;
    let (tun_tx, tun_rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let tun = tcp_end("swgta", "10.77.1.1", "10.77.1.2");
        let listener = TcpListener::bind("10.77.1.1:5000").unwrap();
        tun_tx.send(tun).unwrap();
        ready_tx.send(()).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut got = Vec::with_capacity(BYTES);
        conn.read_to_end(&mut got).unwrap();
        (got, link_stats("swgta", "rx"))
    });
    let tun_a = tun_rx.recv().unwrap();
    let (tun_tx, tun_rx) = mpsc::channel();
    let client = std::thread::spawn(move || {
        let tun = tcp_end("swgtb", "10.77.1.2", "10.77.1.1");
        tun_tx.send(tun).unwrap();
        ready_rx.recv().unwrap();
        let to: SocketAddr = "10.77.1.1:5000".parse().unwrap();
        let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(10)).unwrap();
        conn.set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let data: Vec<u8> = (0..BYTES).map(pattern).collect();
        conn.write_all(&data).unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
        link_stats("swgtb", "tx")
    });
    let tun_b = tun_rx.recv().unwrap();
    let stop = AtomicBool::new(false);
    let (received, written, read) = std::thread::scope(|s| {
        s.spawn(|| relay(&tun_a, &tun_b, &stop));
        let (got, written) = server.join().unwrap();
        let read = client.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        (got, written, read)
    });
    assert_eq!(received.len(), BYTES);
    assert!(
        received.iter().enumerate().all(|(i, b)| *b == pattern(i)),
        "data intact"
    );
    // The client's device handed us TSO super-packets, and our writes into the server's
    // device were coalesced: both average well above the 1420-byte MTU.
    assert!(read.0 / read.1 > 4000, "no super-packets read: {read:?}");
    assert!(
        written.0 / written.1 > 4000,
        "no coalesced writes: {written:?}"
    );
}

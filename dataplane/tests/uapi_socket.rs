//! The UAPI server over a real Unix socket (in a temporary directory, no root).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use dataplane::testing::{MemNet, mem_tun};
use dataplane::uapi::UapiServer;
use dataplane::{PrivateKey, Tunnel, TunnelConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("swg-uapi-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Reads one answer: lines up to the empty line after `errno=`.
async fn answer(r: &mut BufReader<tokio::net::unix::OwnedReadHalf>) -> String {
    let mut out = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed mid-answer: {out:?}");
        if line == "\n" && out.contains("errno=") {
            return out;
        }
        out.push_str(&line);
    }
}

#[tokio::test]
async fn several_requests_per_connection_and_garbage() {
    let dir = temp_dir("many");
    let net = MemNet::new();
    let (tun, _host) = mem_tun();
    let sk = PrivateKey::generate();
    let cfg = TunnelConfig {
        private_key: Some(sk.clone()),
        listen_port: 7000,
        ..Default::default()
    };
    let tunnel = Tunnel::spawn("uapi0", tun, net.host("192.0.2.9".parse().unwrap()), cfg).unwrap();
    let server = UapiServer::bind(&dir, tunnel.device()).await.unwrap();
    let path = server.path().to_path_buf();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let (r, mut w) = UnixStream::connect(&path).await.unwrap().into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"get=1\n\n").await.unwrap();
    let a = answer(&mut r).await;
    assert!(
        a.starts_with(&format!(
            "private_key={}\nlisten_port=7000\n",
            sk.expose().to_hex()
        )),
        "{a}"
    );
    assert!(a.ends_with("errno=0\n"));

    let peer = PrivateKey::generate().public_key();
    let set = format!(
        "set=1\npublic_key={}\nendpoint=[fd00::5]:9\nallowed_ip=10.1.0.0/16\n\n",
        peer.to_hex()
    );
    w.write_all(set.as_bytes()).await.unwrap();
    assert_eq!(answer(&mut r).await, "errno=0\n");

    w.write_all(b"this is not a request\n\n").await.unwrap();
    assert_eq!(answer(&mut r).await, "errno=22\n");
    w.write_all(b"set=1\nlisten_port=banana\n\n").await.unwrap();
    assert_eq!(answer(&mut r).await, "errno=22\n");
    w.write_all(b"\xff\xfe\x00garbage\n\n").await.unwrap();
    assert_eq!(answer(&mut r).await, "errno=22\n");

    w.write_all(b"get=1\n\n").await.unwrap();
    let a = answer(&mut r).await;
    assert!(
        a.contains(&format!("public_key={}\n", peer.to_hex())),
        "{a}"
    );
    assert!(a.contains("endpoint=[fd00::5]:9\n"));
    assert!(a.contains("allowed_ip=10.1.0.0/16\n"));
    assert!(a.contains("last_handshake_time_sec=0\n"));
    // A failed set changed nothing.
    assert_eq!(tunnel.config().listen_port, 7000);

    // An over-long line closes the connection without touching the device.
    let (mut r2, mut w2) = UnixStream::connect(&path).await.unwrap().into_split();
    w2.write_all(&vec![b'a'; 10_000]).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), r2.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest, b"errno=71\n\n");

    // The socket is removed when the server goes away.
    drop(server);
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_live_socket_is_not_stolen() {
    let dir = temp_dir("steal");
    let net = MemNet::new();
    let (tun, _h) = mem_tun();
    let t = Tunnel::spawn(
        "uapi1",
        tun,
        net.host("192.0.2.8".parse().unwrap()),
        TunnelConfig::default(),
    )
    .unwrap();
    let first = UapiServer::bind(&dir, t.device()).await.unwrap();
    assert!(UapiServer::bind(&dir, t.device()).await.is_err());
    assert!(!first.is_deleted());
    std::fs::remove_file(first.path()).unwrap();
    assert!(first.is_deleted());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tunnel with its TUN's host side (dropping that would delete the device).
fn tunnel_at(
    name: &str,
    ip: &str,
) -> (
    Tunnel<dataplane::testing::MemUdpBinder>,
    dataplane::testing::MemTunHost,
) {
    let (tun, host) = mem_tun();
    let net = MemNet::new();
    let t = Tunnel::spawn(
        name,
        tun,
        net.host(ip.parse().unwrap()),
        TunnelConfig::default(),
    );
    (t.unwrap(), host)
}

#[tokio::test]
async fn connections_are_bounded_and_idle_ones_closed() {
    let dir = temp_dir("limits");
    let (t, _host) = tunnel_at("uapi2", "192.0.2.10");
    let server = UapiServer::bind(&dir, t.device()).await.unwrap();
    let path = server.path().to_path_buf();
    // Every slot taken by a client that sends nothing.
    let mut idle = Vec::new();
    for _ in 0..dataplane::uapi::MAX_CONNECTIONS {
        idle.push(UnixStream::connect(&path).await.unwrap());
    }
    let (r, mut w) = UnixStream::connect(&path).await.unwrap().into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"get=1\n\n").await.unwrap();
    let mut line = String::new();
    let waited = tokio::time::timeout(Duration::from_millis(300), r.read_line(&mut line)).await;
    assert!(waited.is_err(), "served beyond the limit: {line:?}");
    // One slot frees up: the waiting client is served.
    drop(idle.pop());
    assert!(answer(&mut r).await.ends_with("errno=0\n"));
    // An idle connection is closed after uapi::IDLE.
    let mut quiet = idle.pop().unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        dataplane::uapi::IDLE + Duration::from_secs(5),
        quiet.read_to_end(&mut rest),
    )
    .await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_setconf_with_130_000_allowed_ips_is_taken_whole() {
    let dir = temp_dir("big");
    let (t, _host) = tunnel_at("uapi3", "192.0.2.11");
    let server = UapiServer::bind(&dir, t.device()).await.unwrap();
    let (r, mut w) = UnixStream::connect(server.path())
        .await
        .unwrap()
        .into_split();
    let mut r = BufReader::new(r);
    let peer = PrivateKey::generate().public_key();
    let mut req = format!("set=1\nreplace_peers=true\npublic_key={}\n", peer.to_hex());
    for i in 0..130_000u32 {
        req.push_str(&format!(
            "allowed_ip={}/32\n",
            std::net::Ipv4Addr::from(0x0a00_0000 + i)
        ));
    }
    req.push('\n');
    w.write_all(req.as_bytes()).await.unwrap();
    assert_eq!(answer(&mut r).await, "errno=0\n");
    assert_eq!(t.config().peers[0].allowed_ips.len(), 130_000);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

//! `semaphore-wireguard show [IFNAME]`: what `wg show` prints, read from the UAPI sockets,
//! so `kubectl exec` into the (tool-less) image can inspect the devices.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use dataplane::uapi::text::parse_get;
use dataplane::{DeviceStatus, PeerStatus};

/// Asks the interface behind `socket` for its state.
pub fn query(socket: &Path) -> anyhow::Result<DeviceStatus> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"get=1\n\n")?;
    let mut reader = BufReader::new(s);
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("{} closed the connection mid-answer", socket.display());
        }
        if line == "\n" && text.contains("errno=") {
            break;
        }
        text.push_str(&line);
    }
    parse_get(&text).map_err(|e| anyhow::anyhow!("{}: {e}", socket.display()))
}

/// The interfaces with a socket in `dir`, sorted.
pub fn interfaces(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".sock"))
                .map(str::to_string)
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Prints every interface (or just `only`) like `wg show`.
pub fn run(dir: &Path, only: Option<&str>) -> anyhow::Result<()> {
    let names = match only {
        Some(n) => vec![n.to_string()],
        None => interfaces(dir)?,
    };
    if names.is_empty() {
        return Ok(());
    }
    let mut out = String::new();
    for (i, name) in names.iter().enumerate() {
        let status = match query(&dir.join(format!("{name}.sock"))) {
            Ok(s) => s,
            Err(e) if only.is_none() => {
                eprintln!("semaphore-wireguard: skipping {name}: {e:#}");
                continue;
            }
            Err(e) => return Err(e),
        };
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format_show(name, &status, SystemTime::now()));
    }
    print!("{out}");
    Ok(())
}

/// `wg show` text for one interface.
pub fn format_show(name: &str, st: &DeviceStatus, now: SystemTime) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "interface: {name}");
    if let Some(sk) = &st.private_key {
        let _ = writeln!(s, "  public key: {}", sk.public_key());
        let _ = writeln!(s, "  private key: (hidden)");
    }
    if st.listen_port != 0 {
        let _ = writeln!(s, "  listening port: {}", st.listen_port);
    }
    if st.fwmark != 0 {
        let _ = writeln!(s, "  fwmark: 0x{:x}", st.fwmark);
    }
    // As `wg`: most recent handshake first, never-handshaken peers last.
    let mut peers: Vec<&PeerStatus> = st.peers.iter().collect();
    peers.sort_by_key(|p| std::cmp::Reverse(p.last_handshake));
    for p in peers {
        let _ = writeln!(s, "\npeer: {}", p.public_key);
        if p.preshared_key.is_some() {
            let _ = writeln!(s, "  preshared key: (hidden)");
        }
        if let Some(ep) = p.endpoint {
            let _ = writeln!(s, "  endpoint: {ep}");
        }
        let ips: Vec<String> = p.allowed_ips.iter().map(|n| n.to_string()).collect();
        let _ = writeln!(
            s,
            "  allowed ips: {}",
            if ips.is_empty() {
                "(none)".to_string()
            } else {
                ips.join(", ")
            }
        );
        if let Some(t) = p.last_handshake {
            let _ = writeln!(
                s,
                "  latest handshake: {}",
                ago(now.duration_since(t).unwrap_or_default())
            );
        }
        if p.rx_bytes > 0 || p.tx_bytes > 0 {
            let _ = writeln!(
                s,
                "  transfer: {} received, {} sent",
                bytes(p.rx_bytes),
                bytes(p.tx_bytes)
            );
        }
        if let Some(k) = p.persistent_keepalive {
            let _ = writeln!(s, "  persistent keepalive: every {}", units(u64::from(k)));
        }
    }
    s
}

fn units(mut secs: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (365 * 86400, "year"),
        (86400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let mut parts = Vec::new();
    for (size, name) in UNITS {
        let n = secs / size;
        secs %= size;
        if n > 0 {
            parts.push(format!("{n} {name}{}", if n == 1 { "" } else { "s" }));
        }
    }
    parts.join(", ")
}

fn ago(d: Duration) -> String {
    match d.as_secs() {
        0 => "Now".to_string(),
        s => format!("{} ago", units(s)),
    }
}

fn bytes(b: u64) -> String {
    const K: f64 = 1024.0;
    let f = b as f64;
    if f < K {
        format!("{b} B")
    } else if f < K * K {
        format!("{:.2} KiB", f / K)
    } else if f < K * K * K {
        format!("{:.2} MiB", f / (K * K))
    } else if f < K * K * K * K {
        format!("{:.2} GiB", f / (K * K * K))
    } else {
        format!("{:.2} TiB", f / (K * K * K * K))
    }
}

#[cfg(test)]
mod tests {
    use dataplane::{Key, PrivateKey};

    use super::*;

    #[test]
    fn formats_like_wg() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let sk = PrivateKey::from_bytes([1; 32]);
        let peer = |n: u8, hs: Option<u64>| PeerStatus {
            public_key: Key([n; 32]),
            preshared_key: None,
            endpoint: Some("192.168.240.3:51820".parse().unwrap()),
            last_handshake: hs.map(|s| now - Duration::from_secs(s)),
            rx_bytes: 3_376_128,
            tx_bytes: 768,
            rx_packets: 0,
            tx_packets: 0,
            persistent_keepalive: Some(25),
            allowed_ips: vec![dataplane::config::parse_prefix("10.4.1.0/24").unwrap()],
        };
        let st = DeviceStatus {
            private_key: Some(sk.clone()),
            listen_port: 51820,
            fwmark: 0,
            peers: vec![peer(2, None), peer(3, Some(65))],
        };
        let text = format_show("wireguard.gcp", &st, now);
        let want = format!(
            "interface: wireguard.gcp\n  public key: {}\n  private key: (hidden)\n  listening port: 51820\n\n\
             peer: {}\n  endpoint: 192.168.240.3:51820\n  allowed ips: 10.4.1.0/24\n  latest handshake: 1 minute, 5 seconds ago\n  \
             transfer: 3.22 MiB received, 768 B sent\n  persistent keepalive: every 25 seconds\n\n\
             peer: {}\n  endpoint: 192.168.240.3:51820\n  allowed ips: 10.4.1.0/24\n  \
             transfer: 3.22 MiB received, 768 B sent\n  persistent keepalive: every 25 seconds\n",
            sk.public_key(),
            Key([3; 32]),
            Key([2; 32])
        );
        assert_eq!(text, want);
        assert_eq!(ago(Duration::ZERO), "Now");
        assert_eq!(units(90061), "1 day, 1 hour, 1 minute, 1 second");
        assert_eq!(bytes(1536), "1.50 KiB");
    }
}

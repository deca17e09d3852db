//! The text of `get` answers (formatted for `wg`, and parsed back for `semaphore-wireguard
//! show`), and of `set` requests (formatted, for clients and round-trip tests).

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use super::command::{
    AllowedIpChange, EINVAL, EPROTO, SetRequest, UapiError, parse_key, parse_num, prefix,
};
use crate::config::parse_endpoint;
use crate::key::PrivateKey;
use crate::status::{DeviceStatus, PeerStatus};

/// Formats the body of a `get=1` answer (without the closing `errno=0` line).
pub fn format_get(status: &DeviceStatus) -> String {
    let mut s = String::with_capacity(256 + status.peers.len() * 320);
    if let Some(sk) = &status.private_key {
        let _ = writeln!(s, "private_key={}", sk.expose().to_hex());
    }
    if status.listen_port != 0 {
        let _ = writeln!(s, "listen_port={}", status.listen_port);
    }
    if status.fwmark != 0 {
        let _ = writeln!(s, "fwmark={}", status.fwmark);
    }
    for p in &status.peers {
        let _ = writeln!(s, "public_key={}", p.public_key.to_hex());
        let _ = writeln!(
            s,
            "preshared_key={}",
            p.preshared_key.unwrap_or_default().to_hex()
        );
        let _ = writeln!(s, "protocol_version=1");
        if let Some(ep) = p.endpoint {
            let _ = writeln!(s, "endpoint={ep}");
        }
        let since = p
            .last_handshake
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        let _ = writeln!(s, "last_handshake_time_sec={}", since.as_secs());
        let _ = writeln!(s, "last_handshake_time_nsec={}", since.subsec_nanos());
        let _ = writeln!(s, "tx_bytes={}", p.tx_bytes);
        let _ = writeln!(s, "rx_bytes={}", p.rx_bytes);
        let _ = writeln!(
            s,
            "persistent_keepalive_interval={}",
            p.persistent_keepalive.unwrap_or(0)
        );
        for net in &p.allowed_ips {
            let _ = writeln!(s, "allowed_ip={net}");
        }
    }
    s
}

/// Parses a `get=1` answer body (as [`format_get`] writes it) back into a status; packet
/// counts, which the protocol does not carry, come back as 0.
pub fn parse_get(text: &str) -> Result<DeviceStatus, UapiError> {
    let mut st = DeviceStatus {
        private_key: None,
        listen_port: 0,
        fwmark: 0,
        peers: Vec::new(),
    };
    let mut handshake = (0u64, 0u32);
    let finish = |st: &mut DeviceStatus, hs: &mut (u64, u32)| {
        if let Some(p) = st.peers.last_mut() {
            p.last_handshake = (*hs != (0, 0)).then(|| UNIX_EPOCH + Duration::new(hs.0, hs.1));
        }
        *hs = (0, 0);
    };
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| UapiError::new(EPROTO, "a line that is not key=value"))?;
        if k == "public_key" {
            finish(&mut st, &mut handshake);
            st.peers.push(PeerStatus::new(parse_key(k, v)?));
            continue;
        }
        match (k, st.peers.last_mut()) {
            ("private_key", None) => {
                st.private_key = Some(PrivateKey::from_bytes(parse_key(k, v)?.0))
            }
            ("listen_port", None) => st.listen_port = parse_num(k, v)?,
            ("fwmark", None) => st.fwmark = parse_num(k, v)?,
            ("errno", _) => {
                let n: i32 = v.parse().map_err(|_| UapiError::new(EPROTO, "bad errno"))?;
                if n != 0 {
                    return Err(UapiError::new(n, "the interface answered with an error"));
                }
            }
            ("preshared_key", Some(p)) => {
                p.preshared_key = Some(parse_key(k, v)?).filter(|k| !k.is_zero())
            }
            ("protocol_version", Some(_)) => {}
            ("endpoint", Some(p)) => {
                p.endpoint = Some(
                    parse_endpoint(v).map_err(|_| UapiError::new(EINVAL, "endpoint: invalid"))?,
                )
            }
            ("last_handshake_time_sec", Some(_)) => handshake.0 = parse_num(k, v)?,
            ("last_handshake_time_nsec", Some(_)) => handshake.1 = parse_num(k, v)?,
            ("tx_bytes", Some(p)) => p.tx_bytes = parse_num(k, v)?,
            ("rx_bytes", Some(p)) => p.rx_bytes = parse_num(k, v)?,
            ("persistent_keepalive_interval", Some(p)) => {
                p.persistent_keepalive = Some(parse_num(k, v)?).filter(|&n: &u16| n != 0)
            }
            ("allowed_ip", Some(p)) => p.allowed_ips.push(prefix(v)?),
            // Unknown keys are ignored, as `wg` does.
            _ => {}
        }
    }
    finish(&mut st, &mut handshake);
    Ok(st)
}

/// Formats a `set=1` request (with its terminating empty line), e.g. for a client.
pub fn format_set(req: &SetRequest) -> String {
    let mut s = String::from("set=1\n");
    if let Some(k) = req.private_key {
        let _ = writeln!(s, "private_key={}", k.to_hex());
    }
    if let Some(p) = req.listen_port {
        let _ = writeln!(s, "listen_port={p}");
    }
    if let Some(m) = req.fwmark {
        let _ = writeln!(s, "fwmark={m}");
    }
    if req.replace_peers {
        s.push_str("replace_peers=true\n");
    }
    for p in &req.peers {
        let _ = writeln!(s, "public_key={}", p.public_key.to_hex());
        if p.remove {
            s.push_str("remove=true\n");
        }
        if p.update_only {
            s.push_str("update_only=true\n");
        }
        if let Some(k) = p.preshared_key {
            let _ = writeln!(s, "preshared_key={}", k.to_hex());
        }
        if let Some(ep) = p.endpoint {
            let _ = writeln!(s, "endpoint={ep}");
        }
        if let Some(ka) = p.persistent_keepalive {
            let _ = writeln!(s, "persistent_keepalive_interval={ka}");
        }
        for c in &p.allowed_ips {
            match c {
                AllowedIpChange::Clear => s.push_str("replace_allowed_ips=true\n"),
                AllowedIpChange::Add(n) => {
                    let _ = writeln!(s, "allowed_ip={n}");
                }
                AllowedIpChange::Remove(n) => {
                    let _ = writeln!(s, "allowed_ip=-{n}");
                }
            }
        }
    }
    s.push('\n');
    s
}

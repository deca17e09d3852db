//! The cross-platform configuration protocol, pure: parsing `get=1` / `set=1` requests,
//! merging a set into a configuration, and formatting (and parsing) `get` answers.
//! Follows wireguard-go's `device/uapi.go` and wireguard-tools' `ipc-uapi.h`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use ip_network::IpNetwork;

use crate::config::{PeerConfig, TunnelConfig, parse_endpoint, parse_prefix};
use crate::error::ConfigError;
use crate::key::{Key, PrivateKey};
use crate::status::DeviceStatus;

/// `EIO`.
pub const EIO: i32 = 5;
/// `EINVAL`: a key or value the protocol does not allow.
pub const EINVAL: i32 = 22;
/// `EPROTO`: a line that is not `key=value`.
pub const EPROTO: i32 = 71;
/// `EADDRINUSE`: the listen port is taken.
pub const EADDRINUSE: i32 = 98;

/// A failed request: the errno to answer with and a message for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (errno {errno})")]
pub struct UapiError {
    /// Positive errno value written as `errno=N`.
    pub errno: i32,
    /// What was wrong.
    pub message: String,
}

impl UapiError {
    fn new(errno: i32, message: impl Into<String>) -> Self {
        Self {
            errno,
            message: message.into(),
        }
    }
}

impl From<ConfigError> for UapiError {
    fn from(e: ConfigError) -> Self {
        let errno = match e {
            ConfigError::PortInUse { .. } => EADDRINUSE,
            ConfigError::Bind { .. } => EIO,
            _ => EINVAL,
        };
        Self::new(errno, e.to_string())
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `get=1`.
    Get,
    /// `set=1` with its changes.
    Set(SetRequest),
}

/// The changes of one `set=1`, in protocol order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetRequest {
    /// `private_key`: all zeros removes the key.
    pub private_key: Option<Key>,
    /// `listen_port`.
    pub listen_port: Option<u16>,
    /// `fwmark` (0 clears).
    pub fwmark: Option<u32>,
    /// `replace_peers=true`.
    pub replace_peers: bool,
    /// Peer sections, each starting at a `public_key` line.
    pub peers: Vec<PeerSet>,
}

/// One peer section of a `set=1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSet {
    /// `public_key`.
    pub public_key: Key,
    /// `remove=true`.
    pub remove: bool,
    /// `update_only=true`: do not create the peer.
    pub update_only: bool,
    /// `preshared_key`: all zeros removes it.
    pub preshared_key: Option<Key>,
    /// `endpoint`.
    pub endpoint: Option<SocketAddr>,
    /// `persistent_keepalive_interval` (0 = off).
    pub persistent_keepalive: Option<u16>,
    /// `replace_allowed_ips` and `allowed_ip` lines, in order.
    pub allowed_ips: Vec<AllowedIpChange>,
}

/// One edit of a peer's allowed IPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedIpChange {
    /// `replace_allowed_ips=true`.
    Clear,
    /// `allowed_ip=prefix` (moves the prefix from any other peer).
    Add(IpNetwork),
    /// `allowed_ip=-prefix`.
    Remove(IpNetwork),
}

/// The flag keys take only `true`, as in wireguard-go.
fn parse_true(key: &str, v: &str) -> Result<bool, UapiError> {
    if v == "true" {
        Ok(true)
    } else {
        Err(UapiError::new(
            EINVAL,
            format!("{key}: the only valid value is true, got {v:?}"),
        ))
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, UapiError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UapiError::new(
            EINVAL,
            format!("{key}: invalid number {v:?}"),
        ));
    }
    v.parse()
        .map_err(|_| UapiError::new(EINVAL, format!("{key}: number out of range {v:?}")))
}

fn parse_key(key: &str, v: &str) -> Result<Key, UapiError> {
    Key::from_hex(v).map_err(|e| UapiError::new(EINVAL, format!("{key}: {e}")))
}

/// Parses one request: its operation line and the `key=value` lines after it (the
/// terminating empty line already stripped).
pub fn parse_request(lines: &[&str]) -> Result<Request, UapiError> {
    let (op, rest) = lines
        .split_first()
        .ok_or_else(|| UapiError::new(EINVAL, "empty request"))?;
    match *op {
        "get=1" => {
            if let Some(extra) = rest.first() {
                return Err(UapiError::new(
                    EINVAL,
                    format!("unexpected line after get=1: {extra:?}"),
                ));
            }
            Ok(Request::Get)
        }
        "set=1" => parse_set(rest).map(Request::Set),
        other => Err(UapiError::new(
            EINVAL,
            format!("invalid operation {other:?}"),
        )),
    }
}

fn parse_set(lines: &[&str]) -> Result<SetRequest, UapiError> {
    let mut req = SetRequest::default();
    for line in lines {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| UapiError::new(EPROTO, format!("line is not key=value: {line:?}")))?;
        if k == "public_key" {
            req.peers.push(PeerSet {
                public_key: parse_key(k, v)?,
                remove: false,
                update_only: false,
                preshared_key: None,
                endpoint: None,
                persistent_keepalive: None,
                allowed_ips: Vec::new(),
            });
            continue;
        }
        let Some(peer) = req.peers.last_mut() else {
            match k {
                "private_key" => req.private_key = Some(parse_key(k, v)?),
                "listen_port" => req.listen_port = Some(parse_num(k, v)?),
                "fwmark" => req.fwmark = Some(parse_num(k, v)?),
                "replace_peers" => req.replace_peers = parse_true(k, v)?,
                _ => {
                    return Err(UapiError::new(
                        EINVAL,
                        format!("invalid interface key {k:?}"),
                    ));
                }
            }
            continue;
        };
        match k {
            "remove" => peer.remove = parse_true(k, v)?,
            "update_only" => peer.update_only = parse_true(k, v)?,
            "preshared_key" => peer.preshared_key = Some(parse_key(k, v)?),
            "endpoint" => {
                peer.endpoint =
                    Some(parse_endpoint(v).map_err(|e| UapiError::new(EINVAL, e.to_string()))?)
            }
            "persistent_keepalive_interval" => peer.persistent_keepalive = Some(parse_num(k, v)?),
            "replace_allowed_ips" => {
                if parse_true(k, v)? {
                    peer.allowed_ips.push(AllowedIpChange::Clear);
                }
            }
            "allowed_ip" => {
                let change = match v.strip_prefix('-') {
                    Some(p) => AllowedIpChange::Remove(prefix(p)?),
                    None => AllowedIpChange::Add(prefix(v)?),
                };
                peer.allowed_ips.push(change);
            }
            "protocol_version" => {
                if v != "1" {
                    return Err(UapiError::new(
                        EINVAL,
                        format!("unsupported protocol_version {v:?}"),
                    ));
                }
            }
            _ => return Err(UapiError::new(EINVAL, format!("invalid peer key {k:?}"))),
        }
    }
    Ok(req)
}

fn prefix(v: &str) -> Result<IpNetwork, UapiError> {
    if !v.contains('/') {
        return Err(UapiError::new(
            EINVAL,
            format!("allowed_ip needs a prefix length: {v:?}"),
        ));
    }
    parse_prefix(v).map_err(|e| UapiError::new(EINVAL, e.to_string()))
}

/// Applies `req` to `config` with wireguard-go's semantics: a peer with our own key is
/// ignored, `update_only` never creates, an added allowed IP moves from its old owner.
pub fn merge_set(config: &mut TunnelConfig, req: &SetRequest) {
    if let Some(k) = req.private_key {
        config.private_key = (!k.is_zero()).then(|| PrivateKey::from_bytes(k.0));
        if let Some(own) = config.private_key.as_ref().map(PrivateKey::public_key) {
            config.peers.retain(|p| p.public_key != own);
        }
    }
    if let Some(p) = req.listen_port {
        config.listen_port = p;
    }
    if let Some(m) = req.fwmark {
        config.fwmark = m;
    }
    if req.replace_peers {
        config.peers.clear();
    }
    let own = config.private_key.as_ref().map(PrivateKey::public_key);
    for set in &req.peers {
        if Some(set.public_key) == own {
            continue;
        }
        if set.remove {
            config.peers.retain(|p| p.public_key != set.public_key);
            continue;
        }
        let pos = match config
            .peers
            .iter()
            .position(|p| p.public_key == set.public_key)
        {
            Some(i) => i,
            None if set.update_only => continue,
            None => {
                config.peers.push(PeerConfig::new(set.public_key));
                config.peers.len() - 1
            }
        };
        let peer = &mut config.peers[pos];
        if let Some(psk) = set.preshared_key {
            peer.preshared_key = (!psk.is_zero()).then_some(psk);
        }
        if let Some(ep) = set.endpoint {
            peer.endpoint = Some(ep);
        }
        if let Some(ka) = set.persistent_keepalive {
            peer.persistent_keepalive = (ka != 0).then_some(ka);
        }
        for change in &set.allowed_ips {
            match *change {
                AllowedIpChange::Clear => config.peers[pos].allowed_ips.clear(),
                AllowedIpChange::Remove(net) => config.peers[pos].allowed_ips.retain(|n| *n != net),
                AllowedIpChange::Add(net) => {
                    for (i, other) in config.peers.iter_mut().enumerate() {
                        if i != pos {
                            other.allowed_ips.retain(|n| *n != net);
                        }
                    }
                    let ips = &mut config.peers[pos].allowed_ips;
                    if !ips.contains(&net) {
                        ips.push(net);
                    }
                }
            }
        }
    }
}

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
            .ok_or_else(|| UapiError::new(EPROTO, format!("bad line {line:?}")))?;
        if k == "public_key" {
            finish(&mut st, &mut handshake);
            st.peers
                .push(crate::status::PeerStatus::new(parse_key(k, v)?));
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
                p.endpoint =
                    Some(parse_endpoint(v).map_err(|e| UapiError::new(EINVAL, e.to_string()))?)
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

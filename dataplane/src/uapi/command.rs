//! The cross-platform configuration protocol's requests, pure: the request types, their
//! errors, and a streaming parser that takes a request line by line, so memory stays
//! bounded by what the request asks for (with limits), never by its text. Follows
//! wireguard-go's `device/uapi.go` and wireguard-tools' `ipc-uapi.h`.
//!
//! Error messages name the key at fault and never quote a value: a line can hold a
//! private key, and the messages are logged.

use std::net::SocketAddr;

use ip_network::IpNetwork;

use crate::config::{parse_endpoint, parse_prefix};
use crate::error::ConfigError;
use crate::key::Key;

/// `EIO`.
pub const EIO: i32 = 5;
/// `EINVAL`: a key or value the protocol does not allow.
pub const EINVAL: i32 = 22;
/// `EPROTO`: a line that is not `key=value`.
pub const EPROTO: i32 = 71;
/// `EADDRINUSE`: the listen port is taken.
pub const EADDRINUSE: i32 = 98;
/// `E2BIG`: a request larger than the limits below.
pub const E2BIG: i32 = 7;

/// Most peer sections in one `set=1` (a whole cluster of nodes fits many times over).
pub const MAX_PEERS: usize = 100_000;
/// Most `allowed_ip` lines in one `set=1` (a `wg setconf` with 130 000 fits).
pub const MAX_ALLOWED_IPS: usize = 1 << 20;

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
    pub(crate) fn new(errno: i32, message: impl Into<String>) -> Self {
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
        // These messages name peers by public key, prefixes and ports: nothing secret.
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

/// A key name as it may appear in a message: short, printable.
fn name(k: &str) -> String {
    let mut n: String = k
        .chars()
        .take(32)
        .filter(|c| c.is_ascii_graphic())
        .collect();
    if k.len() > 32 {
        n.push('…');
    }
    n
}

/// The flag keys take only `true`, as in wireguard-go.
fn parse_true(key: &str, v: &str) -> Result<bool, UapiError> {
    if v == "true" {
        Ok(true)
    } else {
        Err(UapiError::new(
            EINVAL,
            format!("{key}: the only valid value is true"),
        ))
    }
}

pub(crate) fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, UapiError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UapiError::new(EINVAL, format!("{key}: invalid number")));
    }
    v.parse()
        .map_err(|_| UapiError::new(EINVAL, format!("{key}: number out of range")))
}

pub(crate) fn parse_key(key: &str, v: &str) -> Result<Key, UapiError> {
    Key::from_hex(v).map_err(|e| UapiError::new(EINVAL, format!("{key}: {e}")))
}

pub(crate) fn prefix(v: &str) -> Result<IpNetwork, UapiError> {
    if !v.contains('/') {
        return Err(UapiError::new(
            EINVAL,
            "allowed_ip: a prefix length is needed",
        ));
    }
    parse_prefix(v).map_err(|_| UapiError::new(EINVAL, "allowed_ip: invalid prefix"))
}

/// Parses one request from its lines, fed one at a time (the terminating empty line not
/// included). After the first error the rest of the request is read and ignored, so the
/// answer comes after the whole request, as the client expects.
#[derive(Debug, Default)]
pub struct RequestParser {
    request: Option<Request>,
    error: Option<UapiError>,
    lines: usize,
    allowed_ips: usize,
}

impl RequestParser {
    /// A parser before the operation line.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next line.
    pub fn line(&mut self, line: &str) {
        if self.error.is_some() {
            return;
        }
        self.lines += 1;
        if let Err(e) = self.take(line) {
            self.error = Some(e);
        }
    }

    fn take(&mut self, line: &str) -> Result<(), UapiError> {
        let Some(request) = &mut self.request else {
            self.request = Some(match line {
                "get=1" => Request::Get,
                "set=1" => Request::Set(SetRequest::default()),
                _ => return Err(UapiError::new(EINVAL, "invalid operation")),
            });
            return Ok(());
        };
        let Request::Set(req) = request else {
            return Err(UapiError::new(EINVAL, "unexpected line after get=1"));
        };
        let (k, v) = line.split_once('=').ok_or_else(|| {
            UapiError::new(EPROTO, format!("line {} is not key=value", self.lines))
        })?;
        if k == "public_key" {
            if req.peers.len() >= MAX_PEERS {
                return Err(UapiError::new(
                    E2BIG,
                    format!("more than {MAX_PEERS} peers"),
                ));
            }
            req.peers.push(PeerSet {
                public_key: parse_key(k, v)?,
                remove: false,
                update_only: false,
                preshared_key: None,
                endpoint: None,
                persistent_keepalive: None,
                allowed_ips: Vec::new(),
            });
            return Ok(());
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
                        format!("invalid interface key {}", name(k)),
                    ));
                }
            }
            return Ok(());
        };
        match k {
            "remove" => peer.remove = parse_true(k, v)?,
            "update_only" => peer.update_only = parse_true(k, v)?,
            "preshared_key" => peer.preshared_key = Some(parse_key(k, v)?),
            "endpoint" => {
                peer.endpoint = Some(
                    parse_endpoint(v).map_err(|_| UapiError::new(EINVAL, "endpoint: invalid"))?,
                )
            }
            "persistent_keepalive_interval" => peer.persistent_keepalive = Some(parse_num(k, v)?),
            "replace_allowed_ips" => {
                if parse_true(k, v)? {
                    peer.allowed_ips.push(AllowedIpChange::Clear);
                }
            }
            "allowed_ip" => {
                self.allowed_ips += 1;
                if self.allowed_ips > MAX_ALLOWED_IPS {
                    return Err(UapiError::new(
                        E2BIG,
                        format!("more than {MAX_ALLOWED_IPS} allowed IPs"),
                    ));
                }
                let change = match v.strip_prefix('-') {
                    Some(p) => AllowedIpChange::Remove(prefix(p)?),
                    None => AllowedIpChange::Add(prefix(v)?),
                };
                peer.allowed_ips.push(change);
            }
            "protocol_version" => {
                if v != "1" {
                    return Err(UapiError::new(EINVAL, "protocol_version: unsupported"));
                }
            }
            _ => {
                return Err(UapiError::new(
                    EINVAL,
                    format!("invalid peer key {}", name(k)),
                ));
            }
        }
        Ok(())
    }

    /// The request, or its first error.
    pub fn finish(self) -> Result<Request, UapiError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.request
            .ok_or_else(|| UapiError::new(EINVAL, "empty request"))
    }
}

/// Parses one whole request (its lines, the terminating empty line already stripped).
pub fn parse_request(lines: &[&str]) -> Result<Request, UapiError> {
    let mut p = RequestParser::new();
    for line in lines {
        p.line(line);
    }
    p.finish()
}

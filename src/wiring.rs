//! The one place that names both libraries: control's desired peers become dataplane
//! peer configurations, applied through the tunnel's single write path. The last applied
//! set is also written next to the key (`<device>.peers.json`), so a restarted agent can
//! restore its peers before the remote API answers.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use control::claims::Claims;
use control::peers::DesiredPeer;
use control::sync::{ApplyError, PeerSink};
use dataplane::{Key, PeerConfig};
use serde::Serialize;
use serde::ser::{SerializeMap as _, Serializer};
use serde_json::Value;

use crate::state::RemoteState;

/// Applies a remote's desired peers to its tunnel, whichever tunnel is running now.
pub struct TunnelSink {
    pub remote: Arc<RemoteState>,
    pub state_file: PathBuf,
    /// What was last written to `state_file` (a resync that changes nothing writes nothing).
    saved: Mutex<Vec<PeerConfig>>,
}

impl TunnelSink {
    pub fn new(remote: Arc<RemoteState>, state_file: PathBuf) -> Self {
        Self {
            remote,
            state_file,
            saved: Mutex::new(Vec::new()),
        }
    }
}

/// A desired peer as dataplane configuration.
pub fn peer_config(p: &DesiredPeer) -> PeerConfig {
    let mut c = PeerConfig::new(Key(p.public_key));
    c.endpoint = Some(p.endpoint);
    c.allowed_ips = p.allowed_ips.clone();
    c.persistent_keepalive = Some(p.persistent_keepalive.as_secs().min(u64::from(u16::MAX)) as u16);
    c
}

impl PeerSink for TunnelSink {
    fn apply(&self, peers: &[DesiredPeer], keep: &[[u8; 32]]) -> Result<(), ApplyError> {
        let device = self.remote.device().ok_or_else(|| {
            ApplyError(anyhow::anyhow!("{} is not up", self.remote.device).into())
        })?;
        let wanted: Vec<PeerConfig> = peers.iter().map(peer_config).collect();
        let keep: HashSet<[u8; 32]> = keep.iter().copied().collect();
        device
            .update(
                &mut |cfg| {
                    let kept = held_peers(&cfg.peers, &wanted, &keep);
                    cfg.peers = wanted.clone();
                    cfg.peers.extend(kept);
                    Ok(())
                },
                &[],
            )
            .map_err(|e| ApplyError(Box::new(e)))?;
        let applied = device.config().peers;
        let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        if *saved != applied {
            match save_peers(&self.state_file, &applied) {
                Ok(()) => *saved = applied,
                Err(e) => {
                    tracing::warn!(device = device.name(), error = %format!("{e:#}"), "could not save the peer set for restarts")
                }
            }
        }
        drop(saved);
        if peers.len() >= TRIM_AFTER_PEERS {
            crate::sys::release_free_memory();
        }
        Ok(())
    }

    fn current_keys(&self) -> Vec<[u8; 32]> {
        self.remote
            .device()
            .map(|d| d.config().peers.iter().map(|p| p.public_key.0).collect())
            .unwrap_or_default()
    }
}

/// The peers of `current` whose removal is held (`keep`), as they are, unless one of
/// `wanted` now claims any of their addresses.
fn held_peers(
    current: &[PeerConfig],
    wanted: &[PeerConfig],
    keep: &HashSet<[u8; 32]>,
) -> Vec<PeerConfig> {
    if keep.is_empty() {
        return Vec::new();
    }
    let mut claims = Claims::new();
    for p in wanted {
        // Wanted peers never overlap each other (control makes sure).
        let _ = claims.claim("wanted", &p.allowed_ips);
    }
    current
        .iter()
        .filter(|p| keep.contains(&p.public_key.0))
        .filter(|p| claims.claim("held", &p.allowed_ips).is_ok())
        .cloned()
        .collect()
}

/// Writes `peers` as JSON, whole or not at all (see `files.rs`).
pub fn save_peers(path: &Path, peers: &[PeerConfig]) -> anyhow::Result<()> {
    crate::files::write_private_with(path, |w| {
        serde_json::to_writer_pretty(w, &SavedPeers(peers)).map_err(std::io::Error::from)
    })
}

/// A peer set as JSON in the saved form (what a successor receives, see `takeover.rs`).
pub fn peers_to_json(peers: &[PeerConfig]) -> Value {
    serde_json::to_value(SavedPeers(peers)).unwrap_or_default()
}

/// Reads back [`peers_to_json`]; unlike a saved file, any bad entry is an error.
pub fn peers_from_json(v: &Value) -> anyhow::Result<Vec<PeerConfig>> {
    let list = v.as_array().context("not a list of peers")?;
    list.iter()
        .enumerate()
        .map(|(i, p)| peer_entry(p).with_context(|| format!("peer entry {i}")))
        .collect()
}

/// An apply of at least this many peers hands the memory it freed back to the kernel.
const TRIM_AFTER_PEERS: usize = 1000;

/// The saved form of a peer set, serialized straight into the file (`load_peers` reads
/// it back): one entry per peer with its key, endpoint, allowed IPs and keepalive.
struct SavedPeers<'a>(&'a [PeerConfig]);

impl Serialize for SavedPeers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(SavedPeer))
    }
}

struct SavedPeer<'a>(&'a PeerConfig);

impl Serialize for SavedPeer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("publicKey", &p.public_key.to_base64())?;
        m.serialize_entry("endpoint", &p.endpoint.map(|e| e.to_string()))?;
        m.serialize_entry("allowedIPs", &Displayed(p.allowed_ips.as_slice()))?;
        m.serialize_entry("persistentKeepalive", &p.persistent_keepalive)?;
        m.end()
    }
}

/// A list serialized as the strings its items display as.
struct Displayed<'a, T>(&'a [T]);

impl<T: std::fmt::Display> Serialize for Displayed<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|x| x.to_string()))
    }
}

/// Reads a saved peer set; a missing file is an empty set. An entry that does not parse
/// is skipped (and named in the returned warnings); the others are kept.
pub fn load_peers(path: &Path) -> anyhow::Result<(Vec<PeerConfig>, Vec<String>)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let list: Vec<Value> =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut out = Vec::with_capacity(list.len());
    let mut warnings = Vec::new();
    for (i, v) in list.iter().enumerate() {
        match peer_entry(v) {
            Ok(p) => out.push(p),
            Err(e) => warnings.push(format!("entry {i} skipped: {e:#}")),
        }
    }
    Ok((out, warnings))
}

fn peer_entry(v: &Value) -> anyhow::Result<PeerConfig> {
    let key = v["publicKey"].as_str().context("no publicKey")?;
    let mut p = PeerConfig::new(Key::from_base64(key)?);
    if let Some(ep) = v["endpoint"].as_str() {
        p.endpoint = Some(dataplane::config::parse_endpoint(ep)?);
    }
    for n in v["allowedIPs"].as_array().into_iter().flatten() {
        let n = n.as_str().context("an allowed IP that is not a string")?;
        p.allowed_ips.push(dataplane::config::parse_prefix(n)?);
    }
    p.persistent_keepalive = v["persistentKeepalive"]
        .as_u64()
        .map(|k| k.min(u64::from(u16::MAX)) as u16);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn saved_peers_load_back() {
        let path = std::env::temp_dir().join(format!("swg-peers-{}.json", std::process::id()));
        let d = DesiredPeer {
            node: "n1".into(),
            public_key: [7; 32],
            endpoint: "[fd00::1]:51820".parse().unwrap(),
            allowed_ips: vec![control::config::parse_cidr("10.4.1.0/24").unwrap()],
            persistent_keepalive: Duration::from_secs(25),
        };
        let peers = vec![peer_config(&d)];
        save_peers(&path, &peers).unwrap();
        assert_eq!(load_peers(&path).unwrap(), (peers, vec![]));
        std::fs::remove_file(&path).unwrap();
        assert!(load_peers(&path).unwrap().0.is_empty());
    }

    #[test]
    fn handed_over_peers_keep_every_field() {
        let mut a = PeerConfig::new(Key([7; 32]));
        a.endpoint = Some("192.168.1.2:51820".parse().unwrap());
        a.allowed_ips = vec![dataplane::config::parse_prefix("10.4.1.0/24").unwrap()];
        a.persistent_keepalive = Some(0);
        let mut b = PeerConfig::new(Key([8; 32]));
        b.persistent_keepalive = None;
        let peers = vec![a, b];
        assert_eq!(peers_from_json(&peers_to_json(&peers)).unwrap(), peers);
        let bad = serde_json::json!([{"publicKey": "x"}]);
        let e = peers_from_json(&bad).unwrap_err();
        assert!(format!("{e:#}").contains("peer entry 0"), "{e:#}");
    }

    #[test]
    fn one_bad_entry_skips_that_entry_only() {
        let path = std::env::temp_dir().join(format!("swg-peers-bad-{}.json", std::process::id()));
        let good = format!(
            "{{\"publicKey\": \"{}\", \"allowedIPs\": [\"10.4.1.0/24\"]}}",
            Key([7; 32]).to_base64()
        );
        let bad = r#"{"publicKey": "not a key"}"#;
        let bad_ip = format!(
            "{{\"publicKey\": \"{}\", \"allowedIPs\": [\"x\"]}}",
            Key([8; 32]).to_base64()
        );
        std::fs::write(&path, format!("[{good}, {bad}, {bad_ip}]")).unwrap();
        let (peers, warnings) = load_peers(&path).unwrap();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].public_key, Key([7; 32]));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("entry 1 skipped"));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn held_peers_give_way_to_wanted_claims() {
        let p = |k: u8, net: &str| {
            let mut c = PeerConfig::new(Key([k; 32]));
            c.allowed_ips = vec![dataplane::config::parse_prefix(net).unwrap()];
            c
        };
        let current = [
            p(1, "10.4.1.0/24"),
            p(2, "10.4.2.0/24"),
            p(3, "10.4.3.0/24"),
        ];
        let wanted = [p(9, "10.4.2.0/25")];
        let keep: HashSet<[u8; 32]> = [[1; 32], [2; 32]].into();
        let kept = held_peers(&current, &wanted, &keep);
        assert_eq!(
            kept,
            [current[0].clone()],
            "2 overlaps a wanted claim, 3 is not held"
        );
    }
}

//! The one place that names both libraries: control's desired peers become dataplane
//! peer configurations, applied through the tunnel's single write path. The last applied
//! set is also written next to the key (`<device>.peers.json`), so a restarted agent can
//! restore its peers before the remote API answers.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use control::peers::DesiredPeer;
use control::sync::{ApplyError, PeerSink};
use dataplane::{Device, Key, PeerConfig};
use serde_json::{Value, json};

/// Applies a remote's desired peers to its tunnel.
pub struct TunnelSink {
    pub device: Arc<dyn Device>,
    pub state_file: PathBuf,
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
    fn apply(&self, peers: &[DesiredPeer]) -> Result<(), ApplyError> {
        let wanted: Vec<PeerConfig> = peers.iter().map(peer_config).collect();
        self.device
            .update(
                &mut |cfg| {
                    cfg.peers = wanted.clone();
                    Ok(())
                },
                &[],
            )
            .map_err(|e| ApplyError(Box::new(e)))?;
        if let Err(e) = save_peers(&self.state_file, &wanted) {
            tracing::warn!(device = self.device.name(), error = %format!("{e:#}"), "could not save the peer set for restarts");
        }
        Ok(())
    }
}

/// Writes `peers` atomically as JSON.
pub fn save_peers(path: &PathBuf, peers: &[PeerConfig]) -> anyhow::Result<()> {
    let list: Vec<Value> = peers
        .iter()
        .map(|p| {
            json!({
                "publicKey": p.public_key.to_base64(),
                "endpoint": p.endpoint.map(|e| e.to_string()),
                "allowedIPs": p.allowed_ips.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                "persistentKeepalive": p.persistent_keepalive,
            })
        })
        .collect();
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&list)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads a saved peer set; a missing file is an empty set.
pub fn load_peers(path: &PathBuf) -> anyhow::Result<Vec<PeerConfig>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let list: Vec<Value> =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut out = Vec::with_capacity(list.len());
    for v in list {
        let key = v["publicKey"].as_str().context("peer without publicKey")?;
        let mut p = PeerConfig::new(Key::from_base64(key)?);
        if let Some(ep) = v["endpoint"].as_str() {
            p.endpoint = Some(dataplane::config::parse_endpoint(ep)?);
        }
        for n in v["allowedIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            p.allowed_ips.push(dataplane::config::parse_prefix(n)?);
        }
        p.persistent_keepalive = v["persistentKeepalive"]
            .as_u64()
            .map(|k| k.min(u64::from(u16::MAX)) as u16);
        out.push(p);
    }
    Ok(out)
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
        assert_eq!(load_peers(&path).unwrap(), peers);
        std::fs::remove_file(&path).unwrap();
        assert!(load_peers(&path).unwrap().is_empty());
    }
}

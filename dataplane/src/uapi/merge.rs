//! Merging a `set=1` request into a configuration, with wireguard-go's semantics, in time
//! linear in the request and the configuration (a `wg setconf` of 130 000 allowed IPs is
//! one pass, not one scan of every peer per line).

use std::collections::HashMap;

use ip_network::IpNetwork;

use super::command::{AllowedIpChange, EINVAL, PeerSet, SetRequest, UapiError};
use crate::config::{PeerConfig, TunnelConfig};
use crate::key::{Key, PrivateKey};

/// Applies `req` to `config` with wireguard-go's semantics: a peer with our own key is
/// ignored, `update_only` never creates, an added allowed IP moves from its old owner.
pub fn merge_set(config: &mut TunnelConfig, req: &SetRequest) {
    if let Some(k) = req.private_key {
        config.private_key = (!k.is_zero()).then(|| PrivateKey::from_bytes(k.0));
    }
    if let Some(p) = req.listen_port {
        config.listen_port = p;
    }
    if let Some(m) = req.fwmark {
        config.fwmark = m;
    }
    let mut work = Work::from(std::mem::take(&mut config.peers));
    if req.replace_peers {
        work = Work::default();
    }
    let own = config.private_key.as_ref().map(PrivateKey::public_key);
    if let Some(own) = own {
        work.remove_peer(&own);
    }
    for set in &req.peers {
        if Some(set.public_key) == own {
            continue;
        }
        if set.remove {
            work.remove_peer(&set.public_key);
            continue;
        }
        let pos = match work.by_key.get(&set.public_key) {
            Some(&i) => i,
            None if set.update_only => continue,
            None => work.add_peer(PeerConfig::new(set.public_key)),
        };
        let Some(peer) = work.peers[pos].as_mut() else {
            continue;
        };
        if let Some(psk) = set.preshared_key {
            peer.config.preshared_key = (!psk.is_zero()).then_some(psk);
        }
        if let Some(ep) = set.endpoint {
            peer.config.endpoint = Some(ep);
        }
        if let Some(ka) = set.persistent_keepalive {
            peer.config.persistent_keepalive = (ka != 0).then_some(ka);
        }
        for change in &set.allowed_ips {
            match *change {
                AllowedIpChange::Clear => work.clear_ips(pos),
                AllowedIpChange::Remove(net) => work.remove_ip(pos, net),
                AllowedIpChange::Add(net) => work.add_ip(pos, net),
            }
        }
    }
    config.peers = work.into_peers();
}

/// The `set=1` request that makes an empty interface carry `config` (what a successor
/// process receives in a takeover; it holds the private key).
pub fn set_request_for(config: &TunnelConfig) -> SetRequest {
    SetRequest {
        private_key: config.private_key.as_ref().map(|k| *k.expose()),
        listen_port: Some(config.listen_port),
        fwmark: Some(config.fwmark),
        replace_peers: true,
        peers: config
            .peers
            .iter()
            .map(|p| PeerSet {
                public_key: p.public_key,
                remove: false,
                update_only: false,
                preshared_key: p.preshared_key,
                endpoint: p.endpoint,
                persistent_keepalive: Some(p.persistent_keepalive.unwrap_or(0)),
                allowed_ips: std::iter::once(AllowedIpChange::Clear)
                    .chain(p.allowed_ips.iter().map(|n| AllowedIpChange::Add(*n)))
                    .collect(),
            })
            .collect(),
    }
}

/// Reads back the text of [`set_request_for`] (formatted by `text::format_set`).
pub fn config_from_set_text(text: &str) -> Result<TunnelConfig, UapiError> {
    let lines: Vec<&str> = text.lines().take_while(|l| !l.is_empty()).collect();
    match super::command::parse_request(&lines)? {
        super::command::Request::Set(req) => {
            let mut config = TunnelConfig::default();
            merge_set(&mut config, &req);
            Ok(config)
        }
        super::command::Request::Get => Err(UapiError::new(
            EINVAL,
            "a configuration must be a set=1 request",
        )),
    }
}

/// A peer during the merge: its allowed IPs in order, removed ones left as holes.
struct Entry {
    config: PeerConfig,
    ips: Vec<Option<IpNetwork>>,
}

/// The peers during the merge, indexed by key and by allowed IP, so that every line of
/// the request costs a hash lookup. Removed peers are holes until the end.
#[derive(Default)]
struct Work {
    peers: Vec<Option<Entry>>,
    by_key: HashMap<Key, usize>,
    /// Allowed IP → (peer, position in its list).
    owner: HashMap<IpNetwork, (usize, usize)>,
}

impl From<Vec<PeerConfig>> for Work {
    fn from(peers: Vec<PeerConfig>) -> Self {
        let mut work = Work::default();
        for mut p in peers {
            let ips = std::mem::take(&mut p.allowed_ips);
            let pos = work.add_peer(p);
            for net in ips {
                work.add_ip(pos, net);
            }
        }
        work
    }
}

impl Work {
    fn add_peer(&mut self, config: PeerConfig) -> usize {
        let pos = self.peers.len();
        self.by_key.insert(config.public_key, pos);
        self.peers.push(Some(Entry {
            config,
            ips: Vec::new(),
        }));
        pos
    }

    fn remove_peer(&mut self, key: &Key) {
        if let Some(pos) = self.by_key.remove(key) {
            self.clear_ips(pos);
            self.peers[pos] = None;
        }
    }

    fn clear_ips(&mut self, pos: usize) {
        if let Some(entry) = self.peers[pos].as_mut() {
            for net in entry.ips.drain(..).flatten() {
                self.owner.remove(&net);
            }
        }
    }

    fn remove_ip(&mut self, pos: usize, net: IpNetwork) {
        if let Some(&(owner, at)) = self.owner.get(&net)
            && owner == pos
        {
            self.owner.remove(&net);
            if let Some(entry) = self.peers[pos].as_mut() {
                entry.ips[at] = None;
            }
        }
    }

    /// Adds `net` to the peer at `pos`, taking it from any other peer.
    fn add_ip(&mut self, pos: usize, net: IpNetwork) {
        match self.owner.get(&net) {
            Some(&(owner, _)) if owner == pos => return,
            Some(&(owner, at)) => {
                if let Some(entry) = self.peers[owner].as_mut() {
                    entry.ips[at] = None;
                }
            }
            None => {}
        }
        if let Some(entry) = self.peers[pos].as_mut() {
            self.owner.insert(net, (pos, entry.ips.len()));
            entry.ips.push(Some(net));
        }
    }

    fn into_peers(self) -> Vec<PeerConfig> {
        self.peers
            .into_iter()
            .flatten()
            .map(|mut e| {
                e.config.allowed_ips = e.ips.into_iter().flatten().collect();
                e.config
            })
            .collect()
    }
}

//! Pure: remote Nodes → the desired peer set of one tunnel. A node without our
//! annotations is not a peer; a malformed one is skipped with a reason (the others still
//! apply, unlike the original, which blocked the whole remote). A peer's allowed IPs are
//! its pod CIDRs inside the remote's pod subnet (each family the subnet has), plus what it
//! claims of the remote's extra subnets with the `extraCIDRs` annotation; a claim that is
//! not inside them, or that another node holds, is refused on its own.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ip_network::IpNetwork;
use k8s_openapi::api::core::v1::Node;

use crate::claims::Claims;
use crate::config::{Subnets, contains, parse_cidr};
pub use crate::node::AnnotationKeys;
use crate::node::RemoteNode;

mod extra;
mod gateway;

use extra::extra_claims;
pub use extra::{RefuseKind, RefuseReason, Refused};

/// Keepalive for every peer, as in the original.
pub const PERSISTENT_KEEPALIVE: Duration = Duration::from_secs(25);

/// One peer the tunnel should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPeer {
    /// The node it came from.
    pub node: String,
    /// The peer's X25519 public key.
    pub public_key: [u8; 32],
    /// Where to reach it.
    pub endpoint: SocketAddr,
    /// Its pod CIDRs, then the extra prefixes it was granted.
    pub allowed_ips: Vec<IpNetwork>,
    /// Always [`PERSISTENT_KEEPALIVE`].
    pub persistent_keepalive: Duration,
}

/// Why an annotated node is not a peer. Each reason has a kind ([`SkipKind`]) whose
/// snake-case name is its metric label, derived from the variant itself.
#[derive(Debug, Clone, PartialEq, Eq, strum::EnumDiscriminants)]
#[strum_discriminants(
    name(SkipKind),
    derive(strum::IntoStaticStr, strum::EnumIter, strum::EnumCount),
    strum(serialize_all = "snake_case")
)]
pub enum SkipReason {
    /// Only one of the two annotations is present.
    PartialAnnotations,
    /// The public key is not 32 bytes of base64.
    InvalidPublicKey(String),
    /// The endpoint is not `ip:port`, `[ipv6]:port` or `ipv6:port`.
    InvalidEndpoint(String),
    /// Neither `spec.podCIDRs` nor `spec.podCIDR` is set.
    NoPodCidr,
    /// A pod CIDR does not parse.
    InvalidPodCidr(String),
    /// A pod CIDR lies outside the remote's `podSubnet` (it could capture local traffic).
    OutsidePodSubnet(String),
    /// Another node advertises the same public key.
    DuplicatePublicKey(String),
    /// The node advertises this node's own public key (copied, or a misconfiguration).
    OwnPublicKey,
    /// A gateway claim from a node without the gateway label.
    GatewayWithoutLabel,
    /// A gateway claim that is not an election time.
    InvalidGatewayClaim(String),
    /// A gateway claim older than another gateway's (a leftover of an earlier election).
    SupersededGateway(String),
    /// The remote runs in gateway mode: its other nodes are reached through the gateway.
    BehindGateway(String),
    /// A pod CIDR (or other claimed prefix) that equals, contains or lies inside a prefix
    /// an older node already holds.
    PodCidrConflict {
        /// The prefix refused.
        prefix: String,
        /// The node that holds it.
        holder: String,
    },
}

impl SkipKind {
    /// Every kind, in declaration order, for initialising metric series.
    pub fn all() -> impl Iterator<Item = Self> {
        <Self as strum::IntoEnumIterator>::iter()
    }

    /// Number of kinds.
    pub const COUNT: usize = <Self as strum::EnumCount>::COUNT;

    /// Stable label for metrics.
    pub fn label(self) -> &'static str {
        self.into()
    }

    /// Position in [`SkipKind::all`], for per-kind counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl SkipReason {
    /// What kind of reason this is.
    pub fn kind(&self) -> SkipKind {
        self.into()
    }

    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        self.kind().label()
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PartialAnnotations => {
                f.write_str("only one of the pubKey/endpoint annotations is set")
            }
            Self::InvalidPublicKey(v) => write!(f, "invalid public key {v:?}"),
            Self::InvalidEndpoint(v) => write!(f, "invalid endpoint {v:?}"),
            Self::NoPodCidr => f.write_str("the node has no pod CIDR"),
            Self::InvalidPodCidr(v) => write!(f, "invalid pod CIDR {v:?}"),
            Self::OutsidePodSubnet(v) => write!(f, "pod CIDR {v} is outside the remote pod subnet"),
            Self::DuplicatePublicKey(other) => {
                write!(f, "node {other} advertises the same public key")
            }
            Self::OwnPublicKey => f.write_str("the node advertises this node's own public key"),
            Self::GatewayWithoutLabel => {
                f.write_str("the node claims to be the gateway but lacks the gateway label")
            }
            Self::InvalidGatewayClaim(v) => write!(f, "invalid gateway claim {v:?}"),
            Self::SupersededGateway(by) => {
                write!(f, "an older gateway claim (node {by} was elected later)")
            }
            Self::BehindGateway(gw) => write!(f, "reached through the remote's gateway {gw}"),
            Self::PodCidrConflict { prefix, holder } => write!(
                f,
                "{prefix} overlaps a prefix of node {holder}, which claimed it first"
            ),
        }
    }
}

/// The outcome for a remote's nodes: the peers, the nodes left out, the claims refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPlan {
    /// Peers, sorted by node name.
    pub peers: Vec<DesiredPeer>,
    /// Annotated nodes left out, sorted by node name.
    pub skipped: Vec<Skipped>,
    /// Extra claims refused, by node name.
    pub refused: Vec<Refused>,
}

/// A node that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Node name.
    pub node: String,
    /// Reason.
    pub reason: SkipReason,
}

/// The peers for `nodes` (sorted by node name) and the annotated nodes that were skipped:
/// [`desired_peers_of`] on what the agent keeps of each node.
pub fn desired_peers<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    keys: &AnnotationKeys,
    subnets: &Subnets,
    own_key: Option<[u8; 32]>,
) -> (Vec<DesiredPeer>, Vec<Skipped>) {
    let remote: Vec<RemoteNode> = nodes
        .into_iter()
        .map(|n| RemoteNode::from_node(n, keys))
        .collect();
    desired_peers_of(remote.iter(), subnets, own_key)
}

/// The peers for `nodes` (sorted by node name) and the annotated nodes that were skipped
/// ([`plan_peers`] without the refused extra claims).
pub fn desired_peers_of<'a>(
    nodes: impl IntoIterator<Item = &'a RemoteNode>,
    subnets: &Subnets,
    own_key: Option<[u8; 32]>,
) -> (Vec<DesiredPeer>, Vec<Skipped>) {
    let plan = plan_peers(nodes, subnets, own_key);
    (plan.peers, plan.skipped)
}

/// The peers for `nodes`, the annotated nodes that were skipped and the extra claims that
/// were refused.
///
/// The set is always a valid tunnel configuration: keys unique and not `own_key`, allowed
/// IPs disjoint. A key advertised by two nodes is trusted for neither; a node advertising
/// our own key is skipped; of two nodes whose pod CIDRs overlap, the older one (creation
/// time, then name) keeps its peer and the other is skipped; of two overlapping extra
/// claims the older node's holds and the other is refused (`claims.rs`). A remote whose
/// nodes claim to be its gateway is reached through the newest such claim alone
/// (`gateway.rs`).
pub fn plan_peers<'a>(
    nodes: impl IntoIterator<Item = &'a RemoteNode>,
    subnets: &Subnets,
    own_key: Option<[u8; 32]>,
) -> PeerPlan {
    let nodes: Vec<&RemoteNode> = nodes.into_iter().collect();
    let gateway = gateway::choose(&nodes, subnets, own_key);
    let mut skipped = gateway.skipped;
    if let Some(gw) = gateway.peer {
        for n in &nodes {
            let advertises = n.public_key.is_some() || n.endpoint.is_some();
            if n.name != gw.node && advertises && !skipped.iter().any(|s| s.node == n.name) {
                skipped.push(Skipped {
                    node: n.name.clone(),
                    reason: SkipReason::BehindGateway(gw.node.clone()),
                });
            }
        }
        skipped.sort_by(|a, b| a.node.cmp(&b.node));
        return PeerPlan {
            peers: vec![gw],
            skipped,
            refused: Vec::new(),
        };
    }
    let mut candidates = Vec::new();
    let mut refused = Vec::new();
    for node in nodes {
        if skipped.iter().any(|s| s.node == node.name) {
            continue;
        }
        match peer_from(node, subnets) {
            Ok(Some(p)) => {
                let extra = extra_claims(node, subnets, &mut refused);
                candidates.push((node.created, p, extra));
            }
            Ok(None) => {}
            Err(reason) => skipped.push(Skipped {
                node: node.name.clone(),
                reason,
            }),
        }
    }
    // A key advertised by two nodes is trusted for neither.
    let mut by_key: HashMap<[u8; 32], Vec<String>> = HashMap::new();
    for (_, p, _) in &candidates {
        by_key.entry(p.public_key).or_default().push(p.node.clone());
    }
    candidates.retain(|(_, p, _)| {
        let sharing = &by_key[&p.public_key];
        let reason = if Some(p.public_key) == own_key {
            SkipReason::OwnPublicKey
        } else if sharing.len() > 1 {
            let other = sharing.iter().find(|n| **n != p.node).cloned();
            SkipReason::DuplicatePublicKey(other.unwrap_or_default())
        } else {
            return true;
        };
        skipped.push(Skipped {
            node: p.node.clone(),
            reason,
        });
        false
    });
    // The oldest claim to a prefix keeps it.
    candidates.sort_by(|(ta, a, _), (tb, b, _)| {
        // Nodes without a creation time (not from an API server) count as newest.
        (ta.is_none(), ta, &a.node).cmp(&(tb.is_none(), tb, &b.node))
    });
    let mut claims = Claims::new();
    let mut peers = Vec::with_capacity(candidates.len());
    for (_, mut p, extra) in candidates {
        if let Err(c) = claims.claim(&p.node, &p.allowed_ips) {
            skipped.push(Skipped {
                node: p.node,
                reason: SkipReason::PodCidrConflict {
                    prefix: c.prefix.to_string(),
                    holder: c.holder,
                },
            });
            continue;
        }
        // Extra claims one by one: a refused one leaves the node's others.
        for net in extra {
            match claims.claim(&p.node, &[net]) {
                Ok(()) => p.allowed_ips.push(net),
                Err(c) => refused.push(Refused {
                    node: p.node.clone(),
                    prefix: net.to_string(),
                    reason: RefuseReason::Conflict { holder: c.holder },
                }),
            }
        }
        peers.push(p);
    }
    peers.sort_by(|a, b| a.node.cmp(&b.node));
    skipped.sort_by(|a, b| a.node.cmp(&b.node));
    refused.sort_by(|a, b| a.node.cmp(&b.node));
    PeerPlan {
        peers,
        skipped,
        refused,
    }
}

/// One node: `Ok(None)` when it does not advertise to us at all.
pub fn peer_from_node(
    node: &Node,
    keys: &AnnotationKeys,
    subnets: &Subnets,
) -> Result<Option<DesiredPeer>, SkipReason> {
    peer_from(&RemoteNode::from_node(node, keys), subnets)
}

/// One node, as the agent keeps it, with its pod CIDRs as allowed IPs (no extra claims):
/// `Ok(None)` when it does not advertise to us at all. A pod CIDR of a family the remote's
/// pod subnet does not have is left out (a dual-stack node of a single-stack remote); one
/// of a family it has must lie inside it.
pub fn peer_from(node: &RemoteNode, subnets: &Subnets) -> Result<Option<DesiredPeer>, SkipReason> {
    let (key, endpoint) = match (&node.public_key, &node.endpoint) {
        (None, None) => return Ok(None),
        (Some(k), Some(e)) => (k, e),
        _ => return Err(SkipReason::PartialAnnotations),
    };
    let public_key =
        parse_public_key(key).ok_or_else(|| SkipReason::InvalidPublicKey(key.clone()))?;
    let endpoint =
        parse_endpoint(endpoint).ok_or_else(|| SkipReason::InvalidEndpoint(endpoint.clone()))?;
    if node.pod_cidrs.is_empty() {
        return Err(SkipReason::NoPodCidr);
    }
    let mut allowed_ips = Vec::with_capacity(node.pod_cidrs.len());
    let mut other_family = None;
    for c in &node.pod_cidrs {
        let net = parse_cidr(c).ok_or_else(|| SkipReason::InvalidPodCidr(c.clone()))?;
        match subnets.pod_of_family(&net) {
            Some(pod) if contains(pod, &net) => allowed_ips.push(net),
            Some(_) => return Err(SkipReason::OutsidePodSubnet(net.to_string())),
            None => other_family = Some(net),
        }
    }
    if let (true, Some(net)) = (allowed_ips.is_empty(), other_family) {
        // Nothing of the families the remote routes: as the original, outside the subnet.
        return Err(SkipReason::OutsidePodSubnet(net.to_string()));
    }
    Ok(Some(DesiredPeer {
        node: node.name.clone(),
        public_key,
        endpoint,
        allowed_ips,
        persistent_keepalive: PERSISTENT_KEEPALIVE,
    }))
}

/// A 32-byte key in standard base64.
pub fn parse_public_key(s: &str) -> Option<[u8; 32]> {
    STANDARD.decode(s.trim()).ok()?.try_into().ok()
}

/// `ip:port`, `[ipv6]:port`, or the original's unbracketed `ipv6:port`.
pub fn parse_endpoint(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let (ip, port) = s.rsplit_once(':')?;
    let ip: IpAddr = ip.parse().ok()?;
    if !ip.is_ipv6() || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(SocketAddr::new(ip, port.parse().ok()?))
}

/// The endpoint we advertise: `<ip>:<port>`, IPv6 bracketed.
pub fn format_endpoint(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

#[cfg(test)]
mod subnet_tests;
#[cfg(test)]
mod tests;

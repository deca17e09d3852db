//! A remote in gateway mode: one of its nodes, elected there, claims the whole remote
//! (`<us>.wireguard.semaphore.uw.io/gateway: <election time>`), and becomes our only peer
//! for it, with the remote's pod and extra subnets as allowed IPs. A claim counts only
//! from a node carrying the gateway label; of several, the newest election wins (a dead
//! gateway's leftover annotations cannot keep the traffic), and the other annotated nodes
//! are behind the gateway.

use k8s_openapi::jiff::Timestamp;

use super::{
    DesiredPeer, PERSISTENT_KEEPALIVE, SkipReason, Skipped, parse_endpoint, parse_public_key,
};
use crate::config::Subnets;
use crate::node::RemoteNode;

/// The gateway claims among a remote's nodes.
#[derive(Debug, Default)]
pub(super) struct GatewayChoice {
    /// The peer of the newest valid claim, if any.
    pub peer: Option<DesiredPeer>,
    /// Nodes whose claims were refused or superseded (left out of the peer set).
    pub skipped: Vec<Skipped>,
}

/// Looks at every claim among `nodes`.
pub(super) fn choose(
    nodes: &[&RemoteNode],
    subnets: &Subnets,
    own_key: Option<[u8; 32]>,
) -> GatewayChoice {
    let mut out = GatewayChoice::default();
    let mut claims: Vec<(Timestamp, &RemoteNode)> = Vec::new();
    for n in nodes {
        let Some(value) = &n.gateway_claim else {
            continue;
        };
        let reason = if !n.gateway_labelled {
            SkipReason::GatewayWithoutLabel
        } else {
            match value.trim().parse::<Timestamp>() {
                Ok(t) => {
                    claims.push((t, n));
                    continue;
                }
                Err(_) => SkipReason::InvalidGatewayClaim(value.clone()),
            }
        };
        out.skipped.push(Skipped {
            node: n.name.clone(),
            reason,
        });
    }
    // Newest election first; the name breaks ties.
    claims.sort_by(|(ta, a), (tb, b)| tb.cmp(ta).then_with(|| a.name.cmp(&b.name)));
    for (_, n) in claims {
        if let Some(chosen) = &out.peer {
            out.skipped.push(Skipped {
                node: n.name.clone(),
                reason: SkipReason::SupersededGateway(chosen.node.clone()),
            });
            continue;
        }
        match gateway_peer(n, subnets, own_key) {
            Ok(p) => out.peer = Some(p),
            Err(reason) => out.skipped.push(Skipped {
                node: n.name.clone(),
                reason,
            }),
        }
    }
    out
}

/// The peer of a gateway: its key and endpoint, the whole remote as allowed IPs.
fn gateway_peer(
    n: &RemoteNode,
    subnets: &Subnets,
    own_key: Option<[u8; 32]>,
) -> Result<DesiredPeer, SkipReason> {
    let (Some(key), Some(endpoint)) = (&n.public_key, &n.endpoint) else {
        return Err(SkipReason::PartialAnnotations);
    };
    let public_key =
        parse_public_key(key).ok_or_else(|| SkipReason::InvalidPublicKey(key.clone()))?;
    if Some(public_key) == own_key {
        return Err(SkipReason::OwnPublicKey);
    }
    let endpoint =
        parse_endpoint(endpoint).ok_or_else(|| SkipReason::InvalidEndpoint(endpoint.clone()))?;
    Ok(DesiredPeer {
        node: n.name.clone(),
        public_key,
        endpoint,
        allowed_ips: subnets.routed().copied().collect(),
        persistent_keepalive: PERSISTENT_KEEPALIVE,
    })
}

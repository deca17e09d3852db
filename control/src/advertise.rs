//! Our own Node's annotations: for every remote, `<remote>.wireguard.semaphore.uw.io/pubKey`
//! and `/endpoint` (`<address>:<port>`, IPv6 bracketed; the address is the first InternalIP
//! by default, see [`EndpointSource`]), and `/extraCIDRs` when this node claims prefixes
//! of the remote's extra subnets (removed when it no longer does). Patched at start, then
//! re-asserted whenever a watch of our Node shows them changed or removed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::peers::{AnnotationKeys, format_endpoint};

/// What we advertise to one remote cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// Remote cluster name (the annotation prefix).
    pub remote: String,
    /// Our public key for it, base64.
    pub public_key: String,
    /// Our UDP port for it.
    pub port: u16,
    /// The prefixes we claim towards it (`--advertise-cidrs`).
    pub extra_cidrs: Vec<ip_network::IpNetwork>,
    /// False while another node is this remote's gateway: every annotation of ours for it
    /// is removed.
    pub active: bool,
    /// In gateway mode, when we were elected (RFC 3339): the `gateway` claim.
    pub gateway_since: Option<String>,
    /// Leave this remote's annotations as they are: a gateway's tunnel handed over by
    /// the agent before us runs on, and the Lease is yet to confirm us (withdrawing the
    /// claim meanwhile would make the other cluster drop the gateway).
    pub hold: bool,
}

impl Advert {
    /// An active node-mode advert.
    pub fn node(
        remote: &str,
        public_key: String,
        port: u16,
        extra_cidrs: Vec<ip_network::IpNetwork>,
    ) -> Self {
        Self {
            remote: remote.to_string(),
            public_key,
            port,
            extra_cidrs,
            active: true,
            gateway_since: None,
            hold: false,
        }
    }
}

/// State of the advertiser, for health checks and metrics.
#[derive(Default, Debug)]
pub struct AdvertStatus {
    /// Our annotations are in place (set after the first successful patch).
    pub advertised: AtomicBool,
    /// Patches sent.
    pub patches: AtomicU64,
    /// Patch or read failures.
    pub failures: AtomicU64,
}

/// The first `InternalIP` of a node.
pub fn internal_ip(node: &Node) -> Option<IpAddr> {
    first_address(node, "InternalIP")
}

fn first_address(node: &Node, kind: &str) -> Option<IpAddr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == kind)
        .find_map(|a| a.address.parse().ok())
}

/// Which address of ours the remote clusters are told to send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndpointSource {
    /// The node's first `InternalIP` (the original's choice).
    #[default]
    InternalIp,
    /// The node's first `ExternalIP` (nodes whose internal addresses the other cluster
    /// cannot reach).
    ExternalIp,
    /// A fixed address, such as a load balancer or a NAT in front of the node; with a
    /// port, that port instead of each remote's listen port.
    Fixed(IpAddr, Option<u16>),
}

impl std::str::FromStr for EndpointSource {
    type Err = String;

    /// `internal`, `external`, an address, or an address with a port (`[v6]:port`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "internal" | "InternalIP" => Ok(Self::InternalIp),
            "external" | "ExternalIP" => Ok(Self::ExternalIp),
            _ => {
                if let Ok(ip) = s.parse::<IpAddr>() {
                    return Ok(Self::Fixed(ip, None));
                }
                match s.parse::<std::net::SocketAddr>() {
                    Ok(sa) if sa.port() != 0 => Ok(Self::Fixed(sa.ip(), Some(sa.port()))),
                    _ => Err(format!(
                        "{s:?} is not \"internal\", \"external\", an IP address or an address with a port"
                    )),
                }
            }
        }
    }
}

impl EndpointSource {
    /// Our address per this source, and the port that replaces the listen ports if any.
    pub fn address(&self, node: &Node) -> Option<(IpAddr, Option<u16>)> {
        match *self {
            Self::InternalIp => internal_ip(node).map(|ip| (ip, None)),
            Self::ExternalIp => first_address(node, "ExternalIP").map(|ip| (ip, None)),
            Self::Fixed(ip, port) => Some((ip, port)),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Self::InternalIp => "no InternalIP address",
            Self::ExternalIp => "no ExternalIP address",
            Self::Fixed(..) => "no address",
        }
    }
}

/// The annotations `adverts` call for on a node with address `ip` (`None`: must be
/// absent); `port`, if given, replaces every remote's listen port.
pub fn wanted_annotations(
    adverts: &[Advert],
    ip: IpAddr,
    port: Option<u16>,
) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    for a in adverts {
        if a.hold {
            continue;
        }
        let keys = AnnotationKeys::for_cluster(&a.remote);
        if !a.active {
            for k in [
                keys.public_key,
                keys.endpoint,
                keys.extra_cidrs,
                keys.gateway,
            ] {
                out.insert(k, None);
            }
            continue;
        }
        out.insert(keys.gateway, a.gateway_since.clone());
        out.insert(keys.public_key, Some(a.public_key.clone()));
        out.insert(
            keys.endpoint,
            Some(format_endpoint(ip, port.unwrap_or(a.port))),
        );
        let extra: Vec<String> = a.extra_cidrs.iter().map(ToString::to_string).collect();
        out.insert(
            keys.extra_cidrs,
            (!extra.is_empty()).then(|| extra.join(",")),
        );
    }
    out
}

/// The subset of `wanted` that `node` does not carry as wanted (a merge patch: `None`
/// removes the annotation).
pub fn missing(
    node: &Node,
    wanted: &BTreeMap<String, Option<String>>,
) -> BTreeMap<String, Option<String>> {
    let have = node.metadata.annotations.as_ref();
    wanted
        .iter()
        .filter(|(k, v)| have.and_then(|h| h.get(*k)) != v.as_ref())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Keeps our annotations on Node `node_name` until `shutdown` resolves. `adverts` may
/// change (a remote comes up later): every change is patched in.
pub async fn run(
    client: kube::Client,
    node_name: String,
    source: EndpointSource,
    mut adverts: watch::Receiver<Vec<Advert>>,
    status: Arc<AdvertStatus>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let api: Api<Node> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
    let mut events = watcher::watcher(api.clone(), config)
        .backoff(Backoff::new(Duration::from_millis(250), crate::sync::WATCH_RETRY_MAX).jittered())
        .boxed();
    tokio::pin!(shutdown);
    let mut node: Option<Node> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            changed = adverts.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            ev = events.next() => match ev {
                None => return,
                Some(Ok(Event::Apply(n) | Event::InitApply(n))) => node = Some(n),
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    status.failures.fetch_add(1, Relaxed);
                    tracing::warn!(node = %node_name, error = %crate::error_chain(&e), "watching our node failed; retrying");
                    continue;
                }
            },
        }
        let Some(n) = &node else {
            continue;
        };
        let Some((ip, port)) = source.address(n) else {
            status.failures.fetch_add(1, Relaxed);
            tracing::error!(node = %node_name, "our node has {}; cannot advertise an endpoint", source.describe());
            continue;
        };
        let wanted = wanted_annotations(&adverts.borrow_and_update(), ip, port);
        let patch = missing(n, &wanted);
        if patch.is_empty() {
            status.advertised.store(true, Relaxed);
            continue;
        }
        let body = serde_json::json!({ "metadata": { "annotations": patch } });
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            match api
                .patch(&node_name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(patched) => {
                    status.patches.fetch_add(1, Relaxed);
                    status.advertised.store(true, Relaxed);
                    tracing::info!(node = %node_name, annotations = ?patch.keys().collect::<Vec<_>>(), "advertised");
                    node = Some(patched);
                    break;
                }
                Err(e) => {
                    status.failures.fetch_add(1, Relaxed);
                    let delay = backoff.next_delay();
                    tracing::warn!(node = %node_name, error = %e, retry_in = ?delay, "patching our node failed");
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn node(addrs: &[(&str, &str)], ann: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n".into()),
                annotations: Some(
                    ann.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: None,
            status: Some(NodeStatus {
                addresses: Some(
                    addrs
                        .iter()
                        .map(|(t, a)| NodeAddress {
                            type_: t.to_string(),
                            address: a.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn first_internal_ip_wins() {
        let n = node(
            &[
                ("Hostname", "n"),
                ("ExternalIP", "1.1.1.1"),
                ("InternalIP", "10.0.0.5"),
                ("InternalIP", "10.0.0.6"),
            ],
            &[],
        );
        assert_eq!(internal_ip(&n), Some("10.0.0.5".parse().unwrap()));
        assert_eq!(internal_ip(&node(&[("Hostname", "n")], &[])), None);
    }

    #[test]
    fn the_endpoint_source_picks_the_address() {
        let n = node(
            &[
                ("InternalIP", "10.0.0.5"),
                ("ExternalIP", "203.0.113.9"),
                ("ExternalIP", "203.0.113.10"),
            ],
            &[],
        );
        let parse = |s: &str| s.parse::<EndpointSource>().unwrap();
        assert_eq!(
            parse("internal").address(&n),
            Some(("10.0.0.5".parse().unwrap(), None))
        );
        assert_eq!(
            parse("").address(&n),
            Some(("10.0.0.5".parse().unwrap(), None))
        );
        assert_eq!(
            parse("external").address(&n),
            Some(("203.0.113.9".parse().unwrap(), None))
        );
        assert_eq!(
            parse("198.51.100.1").address(&n),
            Some(("198.51.100.1".parse().unwrap(), None))
        );
        assert_eq!(
            parse("[2001:db8::1]:443").address(&n),
            Some(("2001:db8::1".parse().unwrap(), Some(443)))
        );
        assert_eq!(
            parse("external").address(&node(&[("InternalIP", "10.0.0.5")], &[])),
            None
        );
        for bad in ["internl", "1.2.3.4:0", "host.example:51820", "1.2.3.4:x"] {
            assert!(bad.parse::<EndpointSource>().is_err(), "{bad}");
        }
        let adverts = [Advert::node("gcp", "K".into(), 51820, Vec::new())];
        let w = wanted_annotations(&adverts, "198.51.100.1".parse().unwrap(), Some(443));
        assert_eq!(
            w["gcp.wireguard.semaphore.uw.io/endpoint"].as_deref(),
            Some("198.51.100.1:443")
        );
    }

    #[test]
    fn a_held_advert_leaves_its_annotations_alone() {
        let mut held = Advert::node("gcp", "K1".into(), 51820, Vec::new());
        held.active = false;
        held.hold = true;
        let adverts = vec![held, Advert::node("aws", "K2".into(), 51821, Vec::new())];
        let wanted = wanted_annotations(&adverts, "10.0.0.1".parse().unwrap(), None);
        assert!(
            wanted.keys().all(|k| !k.starts_with("gcp.")),
            "neither written nor removed: {wanted:?}"
        );
        assert_eq!(
            wanted["aws.wireguard.semaphore.uw.io/endpoint"].as_deref(),
            Some("10.0.0.1:51821")
        );
    }

    #[test]
    fn wanted_and_missing() {
        let adverts = vec![
            Advert::node("gcp", "K1".into(), 51820, Vec::new()),
            Advert::node(
                "aws",
                "K2".into(),
                51821,
                vec![
                    "10.96.0.0/12".parse().unwrap(),
                    "10.1.0.0/16".parse().unwrap(),
                ],
            ),
        ];
        let w = wanted_annotations(&adverts, "fd00::5".parse().unwrap(), None);
        assert_eq!(
            w["gcp.wireguard.semaphore.uw.io/pubKey"].as_deref(),
            Some("K1")
        );
        assert_eq!(
            w["aws.wireguard.semaphore.uw.io/endpoint"].as_deref(),
            Some("[fd00::5]:51821")
        );
        assert_eq!(
            w["aws.wireguard.semaphore.uw.io/extraCIDRs"].as_deref(),
            Some("10.96.0.0/12,10.1.0.0/16")
        );
        let n = node(
            &[],
            &[
                ("gcp.wireguard.semaphore.uw.io/pubKey", "K1"),
                ("gcp.wireguard.semaphore.uw.io/endpoint", "old"),
                ("gcp.wireguard.semaphore.uw.io/extraCIDRs", "10.9.0.0/16"),
            ],
        );
        let m = missing(&n, &w);
        // gcp's endpoint and stale claims, aws's key, endpoint and claims.
        assert_eq!(m.len(), 5, "{m:?}");
        assert!(!m.contains_key("gcp.wireguard.semaphore.uw.io/pubKey"));
        assert_eq!(
            m["gcp.wireguard.semaphore.uw.io/extraCIDRs"], None,
            "removed"
        );
        // An annotation that is absent and unwanted needs no patch.
        let n = node(&[], &[]);
        assert!(!missing(&n, &w).contains_key("gcp.wireguard.semaphore.uw.io/extraCIDRs"));
    }
}

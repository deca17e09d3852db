//! Gateway mode's view of our own cluster, for one remote: the nodes carrying the gateway
//! label (a watch with a label selector), their InternalIP and their `gateway` claim
//! towards the remote, and which of them is the active gateway (the newest election, as
//! the remote side decides too). The Lease that elects them is `election.rs`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use crate::advertise::internal_ip;
use crate::backoff::Backoff;
use crate::config::NodeLabel;
use crate::election::{ElectionTiming, Elector};
use crate::node::AnnotationKeys;

/// A labelled node of our cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its first InternalIP: where the other nodes route the remote.
    pub address: Option<IpAddr>,
    /// Its `gateway` claim towards the remote (when it was elected).
    pub elected: Option<Timestamp>,
}

/// The labelled nodes by name.
pub type Candidates = BTreeMap<String, Candidate>;

/// The name of the Lease that elects the gateway towards `remote`.
pub fn lease_name(remote: &str) -> String {
    format!("semaphore-wireguard-gateway-{remote}")
}

/// The elector of `identity` (our node name) for the gateway towards `remote`.
pub fn elector(
    client: kube::Client,
    namespace: &str,
    remote: &str,
    identity: &str,
    timing: ElectionTiming,
) -> Elector {
    Elector::new(
        Api::namespaced(client, namespace),
        &lease_name(remote),
        identity,
        timing,
    )
}

/// A claim as the annotation carries it: RFC 3339 with microseconds.
pub fn claim_text(elected: &Timestamp) -> String {
    format!("{elected:.6}")
}

/// The active gateway: the newest claim of a candidate with an address, other than
/// `except` (ourselves, whose claim may be a leftover); its name and address.
pub fn active(candidates: &Candidates, except: &str) -> Option<(String, IpAddr)> {
    candidates
        .iter()
        .filter(|(name, _)| name.as_str() != except)
        .filter_map(|(name, c)| Some((c.elected?, name, c.address?)))
        .max_by(|(ta, na, _), (tb, nb, _)| ta.cmp(tb).then_with(|| nb.cmp(na)))
        .map(|(_, name, ip)| (name.clone(), ip))
}

fn candidate(node: &Node, keys: &AnnotationKeys) -> (String, Candidate) {
    let elected = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&keys.gateway))
        .and_then(|v| v.trim().parse::<Timestamp>().ok());
    (
        node.metadata.name.clone().unwrap_or_default(),
        Candidate {
            address: internal_ip(node),
            elected,
        },
    )
}

/// Keeps `out` equal to the labelled nodes of our cluster and their claims towards
/// `remote`, until `shutdown`. Watch failures are retried with backoff (logged).
pub async fn watch_candidates(
    client: kube::Client,
    label: NodeLabel,
    remote: String,
    out: watch::Sender<Candidates>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let keys = AnnotationKeys::for_cluster(&remote);
    let config = watcher::Config::default().labels(&label.selector());
    let mut events = watcher::watcher(Api::<Node>::all(client), config)
        .backoff(Backoff::new(Duration::from_millis(250), crate::sync::WATCH_RETRY_MAX).jittered())
        .boxed();
    let mut listing: Option<Candidates> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            ev = events.next() => match ev {
                None => return,
                Some(Ok(Event::Init)) => listing = Some(Candidates::new()),
                Some(Ok(Event::InitApply(n))) => {
                    let (name, c) = candidate(&n, &keys);
                    listing.get_or_insert_with(Candidates::new).insert(name, c);
                }
                Some(Ok(Event::InitDone)) => {
                    let all = listing.take().unwrap_or_default();
                    out.send_replace(all);
                }
                Some(Ok(Event::Apply(n))) => {
                    let (name, c) = candidate(&n, &keys);
                    out.send_if_modified(|all| all.insert(name, c.clone()) != Some(c));
                }
                Some(Ok(Event::Delete(n))) => {
                    let name = n.metadata.name.unwrap_or_default();
                    out.send_if_modified(|all| all.remove(&name).is_some());
                }
                Some(Err(e)) => {
                    tracing::warn!(cluster = %remote, error = %crate::error_chain(&e), "watching the gateway candidates failed; retrying");
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(ip: &str, elected: Option<&str>) -> Candidate {
        Candidate {
            address: ip.parse().ok(),
            elected: elected.map(|t| t.parse().unwrap()),
        }
    }

    #[test]
    fn the_newest_claim_with_an_address_is_active() {
        let mut all = Candidates::new();
        all.insert("a".into(), c("10.0.0.1", Some("2026-12-03T10:00:00Z")));
        all.insert("b".into(), c("10.0.0.2", Some("2026-12-03T10:00:05Z")));
        all.insert("c".into(), c("none", Some("2026-12-03T11:00:00Z")));
        all.insert("d".into(), c("10.0.0.4", None));
        assert_eq!(
            active(&all, "x"),
            Some(("b".into(), "10.0.0.2".parse().unwrap()))
        );
        // Our own (leftover) claim never counts for us.
        assert_eq!(
            active(&all, "b"),
            Some(("a".into(), "10.0.0.1".parse().unwrap()))
        );
        assert_eq!(active(&Candidates::new(), "x"), None);
        let t: Timestamp = "2026-12-03T10:00:05.123456789Z".parse().unwrap();
        assert_eq!(claim_text(&t), "2026-12-03T10:00:05.123456Z");
    }
}

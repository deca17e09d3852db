//! What the agent keeps of a remote Node: its name and creation time, our annotations
//! (public key, endpoint, extra CIDRs), its pod CIDRs. A few hundred bytes instead of the whole object (status,
//! images, managed fields, every other annotation), so a remote of thousands of nodes is
//! cheap to hold, and a change to anything else of a Node is recognised as no change.

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;

/// The annotation keys under which a cluster's nodes advertise to `cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationKeys {
    /// `<cluster>.wireguard.semaphore.uw.io/pubKey`.
    pub public_key: String,
    /// `<cluster>.wireguard.semaphore.uw.io/endpoint`.
    pub endpoint: String,
    /// `<cluster>.wireguard.semaphore.uw.io/extraCIDRs`: prefixes of the cluster's
    /// `extraSubnets` the node serves (comma-separated).
    pub extra_cidrs: String,
    /// `<cluster>.wireguard.semaphore.uw.io/gateway`: the node is the elected gateway
    /// towards `cluster` since this time (RFC 3339).
    pub gateway: String,
    /// The label a node needs for its gateway claim to count (none: no claim counts).
    pub gateway_label: Option<crate::config::NodeLabel>,
}

impl AnnotationKeys {
    /// Keys for advertising to (or being advertised to by) `cluster`.
    pub fn for_cluster(cluster: &str) -> Self {
        Self {
            public_key: format!("{cluster}.wireguard.semaphore.uw.io/pubKey"),
            endpoint: format!("{cluster}.wireguard.semaphore.uw.io/endpoint"),
            extra_cidrs: format!("{cluster}.wireguard.semaphore.uw.io/extraCIDRs"),
            gateway: format!("{cluster}.wireguard.semaphore.uw.io/gateway"),
            gateway_label: None,
        }
    }

    /// The same keys; gateway claims count from nodes with `label`.
    pub fn with_gateway_label(mut self, label: crate::config::NodeLabel) -> Self {
        self.gateway_label = Some(label);
        self
    }

    /// What every key of this cluster starts with: `<cluster>.wireguard.semaphore.uw.io/`.
    pub fn prefix(&self) -> String {
        let end = self.public_key.rfind('/').map_or(0, |i| i + 1);
        self.public_key[..end].to_string()
    }
}

/// A remote Node, as far as the agent uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteNode {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.creationTimestamp` (the older node keeps a contested prefix).
    pub created: Option<Timestamp>,
    /// Our `pubKey` annotation, as written.
    pub public_key: Option<String>,
    /// Our `endpoint` annotation, as written.
    pub endpoint: Option<String>,
    /// Our `extraCIDRs` annotation, as written.
    pub extra_cidrs: Option<String>,
    /// Our `gateway` annotation (an election time), as written.
    pub gateway_claim: Option<String>,
    /// The node carries the gateway label.
    pub gateway_labelled: bool,
    /// `spec.podCIDRs`, or `spec.podCIDR` when that list is empty.
    pub pod_cidrs: Vec<String>,
}

impl RemoteNode {
    /// The parts of `node` the agent uses, with annotations under `keys`.
    pub fn from_node(node: &Node, keys: &AnnotationKeys) -> Self {
        let annotations = node.metadata.annotations.as_ref();
        let spec = node.spec.as_ref();
        let pod_cidrs = match spec
            .and_then(|s| s.pod_cidrs.as_ref())
            .filter(|v| !v.is_empty())
        {
            Some(v) => v.clone(),
            None => spec.and_then(|s| s.pod_cidr.clone()).into_iter().collect(),
        };
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            created: node.metadata.creation_timestamp.as_ref().map(|t| t.0),
            public_key: annotations.and_then(|a| a.get(&keys.public_key)).cloned(),
            endpoint: annotations.and_then(|a| a.get(&keys.endpoint)).cloned(),
            extra_cidrs: annotations.and_then(|a| a.get(&keys.extra_cidrs)).cloned(),
            gateway_claim: annotations.and_then(|a| a.get(&keys.gateway)).cloned(),
            gateway_labelled: keys
                .gateway_label
                .as_ref()
                .is_some_and(|l| l.matches(node.metadata.labels.as_ref())),
            pod_cidrs,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    #[test]
    fn only_what_is_used_is_kept_and_other_changes_are_no_change() {
        let keys = AnnotationKeys::for_cluster("aws");
        let mut ann = BTreeMap::new();
        ann.insert(keys.public_key.clone(), "K".to_string());
        ann.insert(keys.endpoint.clone(), "1.2.3.4:51820".to_string());
        ann.insert("other/big".to_string(), "x".repeat(100_000));
        let mut node = Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                creation_timestamp: Some(Time(Timestamp::from_second(1_700_000_000).unwrap())),
                annotations: Some(ann),
                labels: Some([("a".to_string(), "b".to_string())].into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: Some("10.4.1.0/24".into()),
                pod_cidrs: Some(vec!["10.4.1.0/24".into(), "fd00:4:1::/64".into()]),
                ..Default::default()
            }),
            status: Some(NodeStatus::default()),
        };
        let r = RemoteNode::from_node(&node, &keys);
        assert_eq!(r.name, "n1");
        assert_eq!(r.public_key.as_deref(), Some("K"));
        assert_eq!(r.endpoint.as_deref(), Some("1.2.3.4:51820"));
        assert_eq!(r.pod_cidrs, ["10.4.1.0/24", "fd00:4:1::/64"]);
        // A status update or another annotation changing: the same RemoteNode.
        node.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("other/big".into(), "y".into());
        node.status = None;
        assert_eq!(RemoteNode::from_node(&node, &keys), r);
        // podCIDR alone is used when podCIDRs is empty.
        node.spec.as_mut().unwrap().pod_cidrs = Some(vec![]);
        assert_eq!(
            RemoteNode::from_node(&node, &keys).pod_cidrs,
            ["10.4.1.0/24"]
        );
    }
}

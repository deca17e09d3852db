//! Entry points for the cargo-fuzz targets in `fuzz/` (config parser, node → peer
//! mapping); the committed seeds also run as ordinary tests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::config::{self, Subnets, contains, parse_cidr};
use crate::peers::{AnnotationKeys, desired_peers};

/// The config parser never panics, and what it accepts satisfies its own invariants.
pub fn config_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok((c, _)) = config::parse(&text) {
        assert!(!c.remotes.is_empty());
        for (i, r) in c.remotes.iter().enumerate() {
            assert!(r.device_name().len() <= config::MAX_IFNAME);
            for o in &c.remotes[..i] {
                assert_ne!(o.name, r.name);
                assert_ne!(o.listen_port, r.listen_port);
                for a in o.subnets.routed() {
                    assert!(!r.subnets.routed().any(|b| config::overlaps(a, b)));
                }
            }
        }
    }
}

/// Node → peer mapping on arbitrary nodes: a JSON Node list if the input is one, else
/// nodes whose annotations (key, endpoint, extra CIDRs) and pod CIDRs are lines of the
/// input; our own key is the last node's (so some inputs advertise it). The remote is
/// dual-stack with an extra subnet. Never panics, and the peer set is always a valid
/// tunnel configuration: keys unique and never our own, every prefix inside the pod or
/// extra subnets, no two prefixes sharing an address.
pub fn node_peers(data: &[u8]) {
    let keys = AnnotationKeys::for_cluster("aws");
    let p = |s| parse_cidr(s).expect("valid");
    let subnets = Subnets {
        pod: vec![p("10.4.0.0/16"), p("fd00:4::/32")],
        extra: vec![p("10.96.0.0/12")],
    };
    let nodes: Vec<Node> = serde_json::from_slice(data).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(data);
        let parts: Vec<&str> = text.split('\n').collect();
        parts
            .chunks(4)
            .enumerate()
            .map(|(i, c)| {
                let mut ann = BTreeMap::new();
                ann.insert(
                    keys.public_key.clone(),
                    c.first().copied().unwrap_or_default().to_string(),
                );
                ann.insert(
                    keys.endpoint.clone(),
                    c.get(1).copied().unwrap_or_default().to_string(),
                );
                if let Some(extra) = c.get(3) {
                    ann.insert(keys.extra_cidrs.clone(), extra.to_string());
                }
                Node {
                    metadata: ObjectMeta {
                        name: Some(format!("n{i}")),
                        annotations: Some(ann),
                        ..Default::default()
                    },
                    spec: Some(NodeSpec {
                        pod_cidrs: c.get(2).map(|s| s.split(',').map(str::to_string).collect()),
                        ..Default::default()
                    }),
                    status: None,
                }
            })
            .collect()
    });
    let own = nodes.last().and_then(|n| {
        let ann = n.metadata.annotations.as_ref()?;
        crate::peers::parse_public_key(ann.get(&keys.public_key)?)
    });
    let (peers, _) = desired_peers(nodes.iter(), &keys, &subnets, own);
    let mut seen = std::collections::HashSet::new();
    let mut prefixes = Vec::new();
    for p in &peers {
        assert!(seen.insert(p.public_key), "duplicate key in the peer set");
        assert!(Some(p.public_key) != own, "our own key in the peer set");
        for n in &p.allowed_ips {
            assert!(
                subnets.routed().any(|s| contains(s, n)),
                "{n} escapes the subnets"
            );
            assert!(
                !prefixes.iter().any(|q| crate::config::overlaps(q, n)),
                "{n} overlaps another peer's prefix"
            );
            prefixes.push(*n);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        assert!(!out.is_empty());
        out
    }

    #[test]
    fn config_corpus_runs_clean() {
        for c in corpus("config_parse") {
            super::config_parse(&c);
        }
    }

    #[test]
    fn node_peers_corpus_runs_clean() {
        for c in corpus("node_peers") {
            super::node_peers(&c);
        }
    }
}

//! How this node reaches a remote: `"topology": "node"` (every node peers with every remote
//! node, the original's model) or `"gateway"` (one elected node of this cluster runs the
//! tunnel for the remote and the others route through it), and `gatewayNodeLabel`, the
//! label that marks gateway nodes, ours and the remote's alike.

use super::ConfigError;

/// The label that marks gateway nodes when `gatewayNodeLabel` is not set.
pub const DEFAULT_GATEWAY_LABEL: &str = "semaphore.uw.io/gateway=true";

/// The per-remote mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Topology {
    /// Every node runs the tunnel and peers with the remote's nodes.
    #[default]
    Node,
    /// One elected candidate node runs the tunnel; the others route through it.
    Gateway,
}

/// A `key=value` node label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLabel {
    /// Label key (with its prefix, if any).
    pub key: String,
    /// Label value.
    pub value: String,
}

impl NodeLabel {
    /// As a label selector (`key=value`).
    pub fn selector(&self) -> String {
        format!("{}={}", self.key, self.value)
    }

    /// True when `labels` carry this label.
    pub fn matches(&self, labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
        labels.and_then(|l| l.get(&self.key)) == Some(&self.value)
    }
}

impl std::fmt::Display for NodeLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.selector())
    }
}

pub(super) fn parse_topology(at: &str, value: &str) -> Result<Topology, ConfigError> {
    match value {
        "" | "node" => Ok(Topology::Node),
        "gateway" => Ok(Topology::Gateway),
        other => Err(ConfigError::InvalidTopology {
            field: format!("{at}.topology"),
            value: other.to_string(),
        }),
    }
}

/// `key=value`, the key a Kubernetes label key (an optional DNS-subdomain prefix and `/`,
/// then a name of at most 63 characters), the value at most 63 characters.
pub(super) fn parse_label(at: &str, value: &str) -> Result<NodeLabel, ConfigError> {
    let text = if value.is_empty() {
        DEFAULT_GATEWAY_LABEL
    } else {
        value
    };
    let bad = || ConfigError::InvalidLabel {
        field: format!("{at}.gatewayNodeLabel"),
        value: value.to_string(),
    };
    let (key, val) = text.split_once('=').ok_or_else(bad)?;
    let name = key.rsplit_once('/').map_or(key, |(prefix, name)| {
        if prefix.is_empty() || prefix.len() > 253 {
            ""
        } else {
            name
        }
    });
    let part_ok = |s: &str, allow_empty: bool| {
        (allow_empty && s.is_empty())
            || (s.len() <= 63
                && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
    };
    if !part_ok(name, false) || !part_ok(val, true) {
        return Err(bad());
    }
    Ok(NodeLabel {
        key: key.to_string(),
        value: val.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topologies_and_labels() {
        assert_eq!(parse_topology("r", "").unwrap(), Topology::Node);
        assert_eq!(parse_topology("r", "gateway").unwrap(), Topology::Gateway);
        let e = parse_topology("r", "leader").unwrap_err().to_string();
        assert!(e.contains("r.topology") && e.contains("\"leader\""), "{e}");
        let l = parse_label("r", "").unwrap();
        assert_eq!(l.selector(), DEFAULT_GATEWAY_LABEL);
        let l = parse_label("r", "node-role/gw=").unwrap();
        assert_eq!((l.key.as_str(), l.value.as_str()), ("node-role/gw", ""));
        assert!(l.matches(Some(&[("node-role/gw".to_string(), String::new())].into())));
        assert!(!l.matches(None));
        for bad in ["gateway", "=x", "a/=x", "k=v w", "-k=v", "k=-v", "/k=v"] {
            assert!(parse_label("r", bad).is_err(), "{bad}");
        }
    }
}

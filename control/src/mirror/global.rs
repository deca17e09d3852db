//! The global Services being assembled: per global name, the clusters that have the
//! source Service, its ports and whether it is headless, and the annotations. As in the
//! original, ports and the topology annotation follow the cluster reconciled last, and
//! headless-ness is fixed by the first cluster (a cluster that disagrees is refused until
//! it agrees). Unlike the original, it is one value the caller keeps under a lock (the
//! original shared an unlocked map between goroutines), and a cluster that leaves keeps
//! the others' order.
//!
//! It also decides when stale global Services may be collected (the original never
//! collected them: a Service whose sources all went while it was down stayed for good):
//! once every cluster's first list is in, a global Service that none of them listed and
//! that has no source now is stale. Until then (say a remote is unreachable) nothing is
//! collected, so an outage cannot remove what it hides.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ServicePort;

use super::objects::{GLOBAL_CLUSTERS, TOPOLOGY_HINTS};

/// One global Service's sources.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalEntry {
    /// The source namespace.
    pub namespace: String,
    /// The source name.
    pub name: String,
    /// Ports of the last reconciled source.
    pub ports: Vec<ServicePort>,
    /// Fixed by the first source.
    pub headless: bool,
    /// [`GLOBAL_CLUSTERS`] and, when the last source matched the routing selector,
    /// [`TOPOLOGY_HINTS`].
    pub annotations: BTreeMap<String, String>,
    /// Clusters with the source, in order of arrival.
    pub clusters: Vec<String>,
}

/// A cluster's source disagrees with the first one about being headless.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Mismatch between existing headless service and requested")]
pub struct HeadlessMismatch;

/// Every global Service, by global name.
#[derive(Debug, Default)]
pub struct GlobalServices {
    entries: BTreeMap<String, GlobalEntry>,
    expected: BTreeSet<String>,
    listed: BTreeMap<String, BTreeSet<String>>,
    collected: bool,
}

impl GlobalServices {
    /// The clusters whose first lists must be in before anything is collected.
    pub fn expect_clusters<S: Into<String>>(&mut self, clusters: impl IntoIterator<Item = S>) {
        self.expected = clusters.into_iter().map(Into::into).collect();
    }

    /// Cluster `cluster`'s first list is in, naming `globals`. Once every expected
    /// cluster's is (and only that once), returns the global names to keep: every
    /// listed one and every one with a source now.
    pub fn first_list(
        &mut self,
        cluster: &str,
        globals: BTreeSet<String>,
    ) -> Option<BTreeSet<String>> {
        self.listed.insert(cluster.to_string(), globals);
        if self.collected
            || self.expected.is_empty()
            || !self.expected.iter().all(|c| self.listed.contains_key(c))
        {
            return None;
        }
        self.collected = true;
        let mut keep: BTreeSet<String> = self.listed.values().flatten().cloned().collect();
        keep.extend(self.entries.keys().cloned());
        Some(keep)
    }

    /// Cluster `cluster` has the source `namespace/name` (global name `global`).
    #[allow(clippy::too_many_arguments)]
    pub fn add_or_update(
        &mut self,
        global: &str,
        namespace: &str,
        name: &str,
        ports: Vec<ServicePort>,
        headless: bool,
        cluster: &str,
        topology: bool,
    ) -> Result<&GlobalEntry, HeadlessMismatch> {
        let mut annotations = BTreeMap::new();
        if topology {
            annotations.insert(TOPOLOGY_HINTS.to_string(), "auto".to_string());
        }
        let entry = self
            .entries
            .entry(global.to_string())
            .or_insert_with(|| GlobalEntry {
                namespace: namespace.to_string(),
                name: name.to_string(),
                ports: Vec::new(),
                headless,
                annotations: BTreeMap::new(),
                clusters: Vec::new(),
            });
        if entry.headless != headless {
            return Err(HeadlessMismatch);
        }
        if !entry.clusters.iter().any(|c| c == cluster) {
            entry.clusters.push(cluster.to_string());
        }
        annotations.insert(GLOBAL_CLUSTERS.to_string(), entry.clusters.join(","));
        entry.annotations = annotations;
        entry.ports = ports;
        Ok(entry)
    }

    /// Cluster `cluster` no longer has the source: the entry that remains, or `None` when
    /// no cluster has it any more (the global Service goes).
    pub fn remove_cluster(&mut self, global: &str, cluster: &str) -> Option<&GlobalEntry> {
        let entry = self.entries.get_mut(global)?;
        entry.clusters.retain(|c| c != cluster);
        if entry.clusters.is_empty() {
            self.entries.remove(global);
            return None;
        }
        let clusters = entry.clusters.join(",");
        entry
            .annotations
            .insert(GLOBAL_CLUSTERS.to_string(), clusters);
        self.entries.get(global)
    }

    /// The entry of `global`.
    pub fn get(&self, global: &str) -> Option<&GlobalEntry> {
        self.entries.get(global)
    }

    /// Every global name with at least one source.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(p: i32) -> Vec<ServicePort> {
        vec![ServicePort {
            port: p,
            ..Default::default()
        }]
    }

    /// The original's store tests: several clusters, fungible ports and topology, the
    /// headless mismatch, removal.
    #[test]
    fn clusters_join_and_leave() {
        let mut g = GlobalServices::default();
        let e = g
            .add_or_update(
                "gl-foo-73736d-web",
                "foo",
                "web",
                port(80),
                false,
                "a",
                true,
            )
            .unwrap();
        assert_eq!(e.annotations[GLOBAL_CLUSTERS], "a");
        assert_eq!(e.annotations[TOPOLOGY_HINTS], "auto");
        let e = g
            .add_or_update(
                "gl-foo-73736d-web",
                "foo",
                "web",
                port(8080),
                false,
                "b",
                false,
            )
            .unwrap();
        assert_eq!(e.annotations[GLOBAL_CLUSTERS], "a,b");
        assert!(
            !e.annotations.contains_key(TOPOLOGY_HINTS),
            "the last source decides"
        );
        assert_eq!(e.ports[0].port, 8080, "fungible");
        assert_eq!(
            g.add_or_update(
                "gl-foo-73736d-web",
                "foo",
                "web",
                port(80),
                true,
                "c",
                false
            ),
            Err(HeadlessMismatch)
        );
        assert_eq!(g.get("gl-foo-73736d-web").unwrap().clusters, ["a", "b"]);
        g.add_or_update(
            "gl-foo-73736d-web",
            "foo",
            "web",
            port(80),
            false,
            "local",
            false,
        )
        .unwrap();
        let e = g.remove_cluster("gl-foo-73736d-web", "a").unwrap();
        assert_eq!(e.annotations[GLOBAL_CLUSTERS], "b,local", "order kept");
        assert!(g.remove_cluster("gl-foo-73736d-web", "b").is_some());
        assert!(g.remove_cluster("gl-foo-73736d-web", "nope").is_some());
        assert!(g.remove_cluster("gl-foo-73736d-web", "local").is_none());
        assert!(g.get("gl-foo-73736d-web").is_none());
        assert!(g.remove_cluster("gl-foo-73736d-web", "local").is_none());
        assert_eq!(g.names().count(), 0);
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn stale_ones_are_named_once_every_cluster_has_listed() {
        let mut g = GlobalServices::default();
        assert_eq!(
            g.first_list("a", set(&["gl-x"])),
            None,
            "no cluster expected yet"
        );
        g.expect_clusters(["local", "a", "b"]);
        assert_eq!(g.first_list("a", set(&["gl-x"])), None);
        assert_eq!(g.first_list("local", set(&[])), None, "b has not listed");
        g.add_or_update("gl-new", "foo", "new", port(80), false, "local", false)
            .unwrap();
        assert_eq!(
            g.first_list("b", set(&["gl-y"])),
            Some(set(&["gl-new", "gl-x", "gl-y"]))
        );
        assert_eq!(g.first_list("b", set(&[])), None, "only once");
    }
}

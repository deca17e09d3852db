//! The node store: current objects, the global resourceVersion, the event
//! history kept for watch resumption, and the live event feed.
//!
//! Like etcd, every write bumps one global, monotonically increasing
//! resourceVersion and stamps it on the written object. Each write is recorded
//! as an event; the last `history` events are kept so a watch can resume from
//! any resourceVersion they cover, older ones answer 410 Expired.

use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::merge_patch::merge_patch;
use crate::status::ApiError;

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The node was created.
    Added,
    /// The node was changed.
    Modified,
    /// The node was removed.
    Deleted,
}

impl EventType {
    /// The watch wire name (`ADDED`, `MODIFIED`, `DELETED`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One recorded change.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The resourceVersion the change was committed at.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// The node after the change (for deletes: the last state, stamped with `rv`).
    pub object: Node,
    /// The node before the change, if it existed (used by selector filtering).
    pub prev: Option<Node>,
}

/// The events a new watch starts from.
pub struct Feed {
    /// Events to send before live ones (history or synthetic ADDEDs).
    pub backlog: Vec<Arc<StoredEvent>>,
    /// Live events committed after the backlog.
    pub live: broadcast::Receiver<Arc<StoredEvent>>,
    /// The resourceVersion the stream is consistent with once the backlog is sent.
    pub start_rv: u64,
}

/// Where a new watch starts.
pub enum WatchStart {
    /// The requested resourceVersion is older than the retained history.
    Expired {
        /// The oldest resourceVersion a watch can still resume from.
        oldest: u64,
    },
    /// The watch can be served.
    Ready(Feed),
}

/// All node state. Callers serialise access with a mutex.
pub struct Store {
    nodes: BTreeMap<String, Node>,
    rv: u64,
    history: VecDeque<Arc<StoredEvent>>,
    history_limit: usize,
    /// A watch from any resourceVersion >= this can be served from history.
    oldest_resumable: u64,
    feed: broadcast::Sender<Arc<StoredEvent>>,
    uid_seed: u64,
    uid_counter: u64,
}

impl Store {
    /// An empty store keeping `history_limit` events.
    pub fn new(history_limit: usize) -> Self {
        let (feed, _) = broadcast::channel(history_limit.clamp(64, 65_536));
        Store {
            nodes: BTreeMap::new(),
            rv: 0,
            history: VecDeque::new(),
            history_limit,
            oldest_resumable: 0,
            feed,
            uid_seed: RandomState::new().hash_one(std::process::id()),
            uid_counter: 0,
        }
    }

    /// The current global resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// Takes the next global resourceVersion for a write of another kind (a Lease).
    pub fn bump_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// The node called `name`.
    pub fn get(&self, name: &str) -> Option<Node> {
        self.nodes.get(name).cloned()
    }

    /// All nodes, ordered by name.
    pub fn list(&self) -> Vec<Node> {
        self.nodes.values().cloned().collect()
    }

    /// Creates or replaces a node, ignoring any resourceVersion it carries.
    pub fn upsert(&mut self, node: Node) -> Result<Node, ApiError> {
        let name = node_name(&node)?;
        let prev = self.nodes.get(&name).cloned();
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        let node = self.fill_defaults(node, prev.as_ref());
        Ok(self.commit(kind, name, node, prev))
    }

    /// Creates a node; 409 AlreadyExists if one with its name exists.
    pub fn create(&mut self, node: Node) -> Result<Node, ApiError> {
        let name = node_name(&node)?;
        if self.nodes.contains_key(&name) {
            return Err(ApiError::AlreadyExists {
                resource: "nodes".into(),
                name,
            });
        }
        self.upsert(node)
    }

    /// Replaces (or creates) the node `name`. A resourceVersion in the body
    /// must match the stored one (optimistic concurrency), as in Kubernetes.
    pub fn replace(&mut self, name: &str, node: Node) -> Result<Node, ApiError> {
        if node.metadata.name.as_deref() != Some(name) {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                node.metadata.name.as_deref().unwrap_or_default()
            )));
        }
        if let (Some(want), Some(current)) = (&node.metadata.resource_version, self.nodes.get(name))
            && current.metadata.resource_version.as_ref() != Some(want)
        {
            return Err(conflict(name));
        }
        self.upsert(node)
    }

    /// Applies a JSON merge patch to the node `name`.
    pub fn patch(&mut self, name: &str, patch: &Value) -> Result<Node, ApiError> {
        let current = self
            .nodes
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::node_not_found(name))?;
        if let Some(want) = patch
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            && current.metadata.resource_version.as_deref() != Some(want)
        {
            return Err(conflict(name));
        }
        let mut json = serde_json::to_value(&current)
            .map_err(|e| ApiError::Invalid(format!("serialising node: {e}")))?;
        merge_patch(&mut json, patch);
        let mut node: Node = serde_json::from_value(json)
            .map_err(|e| ApiError::Invalid(format!("patched object is not a valid Node: {e}")))?;
        if node.metadata.name.as_deref() != Some(name) {
            return Err(ApiError::Invalid(
                "metadata.name: field is immutable".into(),
            ));
        }
        node.metadata.uid.clone_from(&current.metadata.uid);
        let node = self.fill_defaults(node, Some(&current));
        Ok(self.commit(EventType::Modified, name.to_string(), node, Some(current)))
    }

    /// Deletes the node `name`, returning its final state.
    pub fn delete(&mut self, name: &str) -> Option<Node> {
        let prev = self.nodes.get(name).cloned()?;
        Some(self.commit(
            EventType::Deleted,
            name.to_string(),
            prev.clone(),
            Some(prev),
        ))
    }

    /// Forgets all history. The resourceVersion is bumped once so that every
    /// resourceVersion handed out before is now too old to watch from.
    pub fn compact(&mut self) {
        self.rv += 1;
        self.history.clear();
        self.oldest_resumable = self.rv;
    }

    /// Prepares a watch. `from == None` (resourceVersion unset or "0") starts
    /// now with a synthetic ADDED per current node; `Some(rv)` replays
    /// retained events newer than `rv`, or reports Expired.
    pub fn watch(&self, from: Option<u64>) -> WatchStart {
        let backlog = match from {
            None => self
                .nodes
                .values()
                .map(|node| {
                    Arc::new(StoredEvent {
                        rv: parse_rv(node),
                        kind: EventType::Added,
                        object: node.clone(),
                        prev: None,
                    })
                })
                .collect(),
            Some(rv) if rv < self.oldest_resumable => {
                return WatchStart::Expired {
                    oldest: self.oldest_resumable,
                };
            }
            Some(rv) => self.history.iter().filter(|e| e.rv > rv).cloned().collect(),
        };
        WatchStart::Ready(Feed {
            backlog,
            live: self.feed.subscribe(),
            start_rv: self.rv,
        })
    }

    fn commit(
        &mut self,
        kind: EventType,
        name: String,
        mut node: Node,
        prev: Option<Node>,
    ) -> Node {
        self.rv += 1;
        node.metadata.resource_version = Some(self.rv.to_string());
        if kind == EventType::Deleted {
            self.nodes.remove(&name);
        } else {
            self.nodes.insert(name, node.clone());
        }
        let event = Arc::new(StoredEvent {
            rv: self.rv,
            kind,
            object: node.clone(),
            prev,
        });
        self.history.push_back(Arc::clone(&event));
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.oldest_resumable = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.feed.send(event);
        node
    }

    fn fill_defaults(&mut self, mut node: Node, existing: Option<&Node>) -> Node {
        let meta = &mut node.metadata;
        if meta.uid.is_none() {
            meta.uid = match existing.and_then(|e| e.metadata.uid.clone()) {
                Some(uid) => Some(uid),
                None => Some(self.next_uid()),
            };
        }
        if meta.creation_timestamp.is_none() {
            meta.creation_timestamp = existing
                .and_then(|e| e.metadata.creation_timestamp.clone())
                .or_else(now);
        }
        node
    }

    fn next_uid(&mut self) -> String {
        self.uid_counter += 1;
        let seed = self.uid_seed;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            seed >> 32,
            (seed >> 16) & 0xffff,
            seed & 0xfff,
            (self.uid_counter >> 48) & 0xfff,
            self.uid_counter & 0xffff_ffff_ffff
        )
    }
}

/// The current time at second precision, as Kubernetes stores timestamps.
fn now() -> Option<Time> {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    let secs = i64::try_from(since_epoch.as_secs()).ok()?;
    k8s_openapi::jiff::Timestamp::new(secs, 0).ok().map(Time)
}

fn node_name(node: &Node) -> Result<String, ApiError> {
    match node.metadata.name.as_deref() {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(ApiError::BadRequest("metadata.name is required".into())),
    }
}

fn conflict(name: &str) -> ApiError {
    ApiError::Conflict(format!(
        "Operation cannot be fulfilled on nodes \"{name}\": the object has been modified; \
         please apply your changes to the latest version and try again"
    ))
}

/// The numeric resourceVersion of a stored node (0 if unset).
pub fn parse_rv(node: &Node) -> u64 {
    node.metadata
        .resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

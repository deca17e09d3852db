//! A store for the service mirror's kinds (Namespaces, Services, Endpoints,
//! EndpointSlices) as JSON objects: create, replace (optimistic concurrency when a
//! resourceVersion is given), delete, list, and a retained event history with a live feed
//! for watches. resourceVersions come from the node store's global counter, so they are
//! unique and increasing across every kind, as one etcd revision is. Services without a
//! cluster IP get one allocated (`10.96.x.y`); `None` (headless) is kept.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::kinds::Kind;
use crate::status::ApiError;
use crate::store::EventType;

/// (kind, namespace — empty for cluster-scoped kinds —, name).
pub type Key = (Kind, String, String);

/// One recorded change.
#[derive(Debug, Clone)]
pub struct ObjectEvent {
    /// The resourceVersion it was committed at.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// Which object.
    pub key: Key,
    /// The object after the change (for deletes: its last state).
    pub object: Value,
    /// The object before, if it existed.
    pub prev: Option<Value>,
}

/// All objects of the mirror's kinds. Callers serialise access with a mutex.
pub struct ObjectStore {
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<ObjectEvent>>,
    history_limit: usize,
    oldest_resumable: u64,
    feed: broadcast::Sender<Arc<ObjectEvent>>,
    next_ip: u32,
}

/// Where a watch starts: the events to send first, the live feed after them.
pub enum ObjectWatch {
    /// Asked for a resourceVersion older than the history.
    Expired(u64),
    /// The backlog and the live feed.
    Ready(Vec<Arc<ObjectEvent>>, broadcast::Receiver<Arc<ObjectEvent>>),
}

/// `metadata.name` of a JSON object.
pub fn name_of(v: &Value) -> &str {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `metadata.labels` of a JSON object.
pub fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn rv_of(v: &Value) -> Option<&str> {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
}

impl ObjectStore {
    /// An empty store keeping `history_limit` events.
    pub fn new(history_limit: usize) -> Self {
        let (feed, _) = broadcast::channel(history_limit.clamp(64, 65_536));
        Self {
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit,
            oldest_resumable: 0,
            feed,
            next_ip: 1,
        }
    }

    /// One object.
    pub fn get(&self, key: &Key) -> Option<Value> {
        self.objects.get(key).cloned()
    }

    /// The objects of `kind`, in `namespace` if given, ordered by namespace and name.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((k, ns, _), _)| *k == kind && namespace.is_none_or(|n| n == ns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Creates `object` at `key`; 409 AlreadyExists if it exists, 404 if its namespace
    /// does not.
    pub fn create(&mut self, key: Key, object: Value, rv: u64) -> Result<Value, ApiError> {
        self.check_namespace(&key)?;
        if self.objects.contains_key(&key) {
            return Err(ApiError::AlreadyExists {
                resource: key.0.resource().to_string(),
                name: key.2.clone(),
            });
        }
        let object = self.defaults(&key, object, None);
        Ok(self.commit(EventType::Added, key, object, None, rv))
    }

    /// Replaces the object at `key`: a resourceVersion in `object` must be the stored one;
    /// without one the update is unconditional. 404 if it does not exist.
    pub fn replace(&mut self, key: Key, object: Value, rv: u64) -> Result<Value, ApiError> {
        let Some(current) = self.objects.get(&key).cloned() else {
            return Err(not_found(&key));
        };
        if let Some(want) = rv_of(&object)
            && Some(want) != rv_of(&current)
        {
            return Err(ApiError::Conflict(format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                key.0.resource(),
                key.2
            )));
        }
        let object = self.defaults(&key, object, Some(&current));
        Ok(self.commit(EventType::Modified, key, object, Some(current), rv))
    }

    /// Deletes the object at `key`, returning its last state.
    pub fn delete(&mut self, key: Key, rv: u64) -> Result<Value, ApiError> {
        let Some(current) = self.objects.get(&key).cloned() else {
            return Err(not_found(&key));
        };
        Ok(self.commit(EventType::Deleted, key, current.clone(), Some(current), rv))
    }

    /// Where a watch of `kind` from `from` (None: now, with the current objects as ADDED)
    /// starts; the caller filters by kind, namespace and selector.
    pub fn watch(&self, kind: Kind, from: Option<u64>) -> ObjectWatch {
        let backlog = match from {
            None => self
                .objects
                .iter()
                .filter(|((k, _, _), _)| *k == kind)
                .map(|(key, v)| {
                    Arc::new(ObjectEvent {
                        rv: rv_of(v).and_then(|r| r.parse().ok()).unwrap_or(0),
                        kind: EventType::Added,
                        key: key.clone(),
                        object: v.clone(),
                        prev: None,
                    })
                })
                .collect(),
            Some(rv) if rv < self.oldest_resumable => {
                return ObjectWatch::Expired(self.oldest_resumable);
            }
            Some(rv) => self
                .history
                .iter()
                .filter(|e| e.rv > rv && e.key.0 == kind)
                .cloned()
                .collect(),
        };
        ObjectWatch::Ready(backlog, self.feed.subscribe())
    }

    fn check_namespace(&self, key: &Key) -> Result<(), ApiError> {
        if key.0.namespaced()
            && !self
                .objects
                .contains_key(&(Kind::Namespace, String::new(), key.1.clone()))
        {
            return Err(ApiError::NotFound(format!(
                "namespaces \"{}\" not found",
                key.1
            )));
        }
        Ok(())
    }

    /// apiVersion, kind, name, namespace, uid, creation time; a Service's cluster IP
    /// (allocated, or kept from the current object: it is immutable).
    fn defaults(&mut self, key: &Key, mut object: Value, current: Option<&Value>) -> Value {
        if !object.is_object() {
            object = json!({});
        }
        object["apiVersion"] = key.0.api_version().into();
        object["kind"] = key.0.name().into();
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        object["metadata"]["name"] = key.2.clone().into();
        if key.0.namespaced() {
            object["metadata"]["namespace"] = key.1.clone().into();
        }
        let keep = |field: &str| current.and_then(|c| c["metadata"].get(field)).cloned();
        object["metadata"]["uid"] = keep("uid")
            .unwrap_or_else(|| format!("uid-{}-{}-{}", key.0.plural(), key.1, key.2).into());
        object["metadata"]["creationTimestamp"] =
            keep("creationTimestamp").unwrap_or_else(|| "2026-01-01T00:00:00Z".into());
        if key.0 == Kind::Service {
            if !object["spec"].is_object() {
                object["spec"] = json!({});
            }
            let ip = match current.and_then(|c| c["spec"].get("clusterIP")).cloned() {
                Some(ip) => ip,
                None => match object["spec"].get("clusterIP").and_then(Value::as_str) {
                    Some(ip) if !ip.is_empty() => ip.into(),
                    _ => {
                        let n = self.next_ip;
                        self.next_ip += 1;
                        format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff).into()
                    }
                },
            };
            object["spec"]["clusterIP"] = ip;
        }
        object
    }

    fn commit(
        &mut self,
        kind: EventType,
        key: Key,
        mut object: Value,
        prev: Option<Value>,
        rv: u64,
    ) -> Value {
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        if kind == EventType::Deleted {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key.clone(), object.clone());
        }
        let event = Arc::new(ObjectEvent {
            rv,
            kind,
            key,
            object: object.clone(),
            prev,
        });
        self.history.push_back(Arc::clone(&event));
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.oldest_resumable = old.rv;
            }
        }
        let _ = self.feed.send(event);
        object
    }
}

fn not_found(key: &Key) -> ApiError {
    ApiError::NotFound(format!("{} \"{}\" not found", key.0.resource(), key.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: Kind, ns: &str, name: &str) -> Key {
        (kind, ns.into(), name.into())
    }

    #[test]
    fn namespaces_conflicts_and_cluster_ips() {
        let mut s = ObjectStore::new(100);
        let svc = json!({ "metadata": { "name": "a" }, "spec": { "ports": [{ "port": 80 }] } });
        let e = s
            .create(key(Kind::Service, "ns", "a"), svc.clone(), 1)
            .unwrap_err();
        assert_eq!(e.code(), 404, "no namespace yet");
        s.create(key(Kind::Namespace, "", "ns"), json!({}), 2)
            .unwrap();
        let a = s
            .create(key(Kind::Service, "ns", "a"), svc.clone(), 3)
            .unwrap();
        assert_eq!(a["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(a["metadata"]["resourceVersion"], "3");
        let headless = json!({ "spec": { "clusterIP": "None" } });
        let h = s
            .create(key(Kind::Service, "ns", "h"), headless, 4)
            .unwrap();
        assert_eq!(h["spec"]["clusterIP"], "None");
        assert_eq!(
            s.create(key(Kind::Service, "ns", "a"), svc, 5)
                .unwrap_err()
                .code(),
            409
        );
        // A stale resourceVersion conflicts; none is unconditional; the IP stays.
        let mut stale = a.clone();
        stale["metadata"]["resourceVersion"] = "1".into();
        assert_eq!(
            s.replace(key(Kind::Service, "ns", "a"), stale, 6)
                .unwrap_err()
                .code(),
            409
        );
        let b = s
            .replace(key(Kind::Service, "ns", "a"), json!({ "spec": {} }), 7)
            .unwrap();
        assert_eq!(b["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(s.list(Kind::Service, Some("ns")).len(), 2);
        assert_eq!(s.list(Kind::Service, Some("other")).len(), 0);
        s.delete(key(Kind::Service, "ns", "a"), 8).unwrap();
        assert_eq!(
            s.delete(key(Kind::Service, "ns", "a"), 9)
                .unwrap_err()
                .code(),
            404
        );
        let ObjectWatch::Ready(backlog, _) = s.watch(Kind::Service, Some(3)) else {
            panic!()
        };
        let rvs: Vec<u64> = backlog.iter().map(|e| e.rv).collect();
        assert_eq!(rvs, [4, 7, 8]);
    }
}

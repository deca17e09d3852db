//! Mirroring one remote's Services (its `mirrorSvcLabelSelector` ones) into the mirror
//! namespace as `<prefix>-<ns>-73736d-<name>`: a watch of the remote's Services keeps a
//! compact copy (ports, headless) per `ns/name` and queues the key of every change (a
//! relist queues the keys that vanished too, which the original could crash on); one
//! worker reconciles keys: no remote Service → delete the mirror; no mirror → create it;
//! else replace its ports and clear its selector, leaving everything else (labels added
//! locally survive, as in the original). With `serviceSync`, mirrors of this prefix whose
//! source is gone are deleted once the first list is in. A remote outage changes nothing
//! locally. A name over 63 characters is refused with a log line and counted, not retried.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Service, ServicePort};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use super::objects::{
    MIRROR_PREFIX, MIRRORED_SVC, is_headless, mirror_name, mirrored_ports, new_mirror_service,
};
use super::queue::{Outcome, WorkQueue};
use crate::backoff::Backoff;

/// What is kept of a remote Service.
#[derive(Debug, Clone, PartialEq)]
struct Source {
    ports: Vec<ServicePort>,
    headless: bool,
}

/// Counters of one remote's Service mirroring.
#[derive(Debug, Default)]
pub struct ServiceMirrorStatus {
    /// Mirrors created.
    pub created: AtomicU64,
    /// Mirrors updated.
    pub updated: AtomicU64,
    /// Mirrors deleted (source gone, or stale at start).
    pub deleted: AtomicU64,
    /// Sources whose mirror name would be over 63 characters.
    pub refused_names: AtomicU64,
    /// Reconciles that failed (retried).
    pub errors: AtomicU64,
}

/// One remote's Service mirroring.
pub struct ServiceMirror {
    /// The remote's name (logs).
    pub remote: String,
    /// Its `servicePrefix`.
    pub prefix: String,
    /// The mirror namespace.
    pub namespace: String,
    /// `mirrorSvcLabelSelector`.
    pub selector: String,
    /// `serviceSync`.
    pub gc_at_start: bool,
    /// `resyncPeriod`: every key queued again this often (zero: never).
    pub resync: Duration,
}

type Sources = Arc<Mutex<HashMap<String, Source>>>;

impl ServiceMirror {
    /// Runs until `shutdown`.
    pub async fn run(
        self,
        remote: kube::Client,
        local: kube::Client,
        status: Arc<ServiceMirrorStatus>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let this = Arc::new(self);
        let sources: Sources = Arc::default();
        let queue = Arc::new(WorkQueue::new());
        let worker = tokio::spawn(Arc::clone(&this).work(
            local.clone(),
            Arc::clone(&sources),
            Arc::clone(&queue),
            status,
        ));
        tokio::select! {
            _ = shutdown => {}
            _ = Arc::clone(&this).watch(remote, local, sources, queue) => {}
        }
        worker.abort();
    }

    async fn watch(
        self: Arc<Self>,
        remote: kube::Client,
        local: kube::Client,
        sources: Sources,
        queue: Arc<WorkQueue>,
    ) {
        let config = watcher::Config::default().labels(&self.selector);
        let mut events = watcher::watcher(Api::<Service>::all(remote), config)
            .backoff(Backoff::new(Duration::from_millis(250), Duration::from_secs(2)).jittered())
            .boxed();
        let mut listing: Option<HashMap<String, Source>> = None;
        let mut listed_once = false;
        let mut resync = (!self.resync.is_zero()).then(|| tokio::time::interval(self.resync));
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    None => return,
                    Some(Ok(Event::Init)) => listing = Some(HashMap::new()),
                    Some(Ok(Event::InitApply(s))) => {
                        let (key, src) = source(&s);
                        listing.get_or_insert_with(HashMap::new).insert(key, src);
                    }
                    Some(Ok(Event::InitDone)) => {
                        let fresh = listing.take().unwrap_or_default();
                        let count = fresh.len();
                        // Everything listed, and whatever vanished while we were away.
                        let keys: Vec<String> = {
                            let mut known = sources.lock().unwrap_or_else(|e| e.into_inner());
                            let keys = fresh.keys().chain(known.keys()).cloned().collect();
                            *known = fresh;
                            keys
                        };
                        for k in keys {
                            queue.add(&k);
                        }
                        if !listed_once {
                            listed_once = true;
                            tracing::info!(cluster = %self.remote, services = count, "remote services listed");
                            if self.gc_at_start {
                                self.collect_stale(&local, &sources).await;
                            }
                        }
                    }
                    Some(Ok(Event::Apply(s))) => {
                        let (key, src) = source(&s);
                        let changed = sources.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), src.clone()) != Some(src);
                        if changed {
                            queue.add(&key);
                        }
                    }
                    Some(Ok(Event::Delete(s))) => {
                        let (key, _) = source(&s);
                        sources.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
                        queue.add(&key);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(cluster = %self.remote, error = %crate::error_chain(&e), "watching the remote's services failed; retrying (mirrors stay as they are)");
                    }
                },
                _ = async { resync.as_mut().expect("guarded").tick().await }, if resync.is_some() && listed_once => {
                    let keys: Vec<String> = sources.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
                    for k in keys {
                        queue.add(&k);
                    }
                }
            }
        }
    }

    /// `serviceSync`: deletes this prefix's mirrors whose source is not listed.
    async fn collect_stale(&self, local: &kube::Client, sources: &Sources) {
        let expected: Vec<String> = sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter_map(|k| {
                let (ns, name) = k.split_once('/')?;
                mirror_name(&self.prefix, ns, name).ok()
            })
            .collect();
        let api: Api<Service> = Api::namespaced(local.clone(), &self.namespace);
        let labels = format!("{MIRRORED_SVC}=true,{MIRROR_PREFIX}={}", self.prefix);
        let listed = match api.list(&ListParams::default().labels(&labels)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(cluster = %self.remote, error = %e, "Error syncing services, skipping..");
                return;
            }
        };
        for s in listed.items {
            let name = s.metadata.name.unwrap_or_default();
            if expected.contains(&name) {
                continue;
            }
            tracing::info!(cluster = %self.remote, service = %name, "Deleting old service and related endpoint");
            if let Err(e) = api.delete(&name, &DeleteParams::default()).await
                && !is_not_found(&e)
            {
                tracing::warn!(cluster = %self.remote, service = %name, error = %e, "Error syncing services, skipping..");
            }
        }
    }

    async fn work(
        self: Arc<Self>,
        local: kube::Client,
        sources: Sources,
        queue: Arc<WorkQueue>,
        status: Arc<ServiceMirrorStatus>,
    ) {
        let api: Api<Service> = Api::namespaced(local, &self.namespace);
        loop {
            let key = queue.next().await;
            let outcome = match self.reconcile(&api, &key, &sources, &status).await {
                Ok(()) => Outcome::Success,
                Err(e) => {
                    status.errors.fetch_add(1, Relaxed);
                    tracing::warn!(cluster = %self.remote, key = %key, error = %e, "reconcile error");
                    Outcome::Retry
                }
            };
            queue.done(&key, outcome);
        }
    }

    async fn reconcile(
        &self,
        api: &Api<Service>,
        key: &str,
        sources: &Sources,
        status: &ServiceMirrorStatus,
    ) -> Result<(), kube::Error> {
        let Some((ns, name)) = key.split_once('/') else {
            return Ok(());
        };
        let mirror = match mirror_name(&self.prefix, ns, name) {
            Ok(m) => m,
            Err(e) => {
                status.refused_names.fetch_add(1, Relaxed);
                tracing::warn!(cluster = %self.remote, service = %key, error = %e, "not mirrored: the name is too long");
                return Ok(());
            }
        };
        let source = sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned();
        let Some(source) = source else {
            return match api.delete(&mirror, &DeleteParams::default()).await {
                Ok(_) => {
                    status.deleted.fetch_add(1, Relaxed);
                    tracing::info!(cluster = %self.remote, service = %mirror, "remote service not found, deleting local service");
                    Ok(())
                }
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(e),
            };
        };
        let remote = Service {
            spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
                ports: Some(source.ports.clone()),
                cluster_ip: source.headless.then(|| "None".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        match api.get_opt(&mirror).await? {
            None => {
                let svc = new_mirror_service(&mirror, &self.namespace, &self.prefix, &remote);
                api.create(&PostParams::default(), &svc).await?;
                status.created.fetch_add(1, Relaxed);
                tracing::info!(cluster = %self.remote, service = %mirror, "local service not found, creating service");
            }
            Some(mut current) => {
                let spec = current.spec.get_or_insert_with(Default::default);
                let ports = Some(mirrored_ports(&remote));
                if spec.ports == ports && spec.selector.is_none() {
                    return Ok(());
                }
                spec.ports = ports;
                spec.selector = None;
                api.replace(&mirror, &PostParams::default(), &current)
                    .await?;
                status.updated.fetch_add(1, Relaxed);
                tracing::info!(cluster = %self.remote, service = %mirror, "local service found, updating service");
            }
        }
        Ok(())
    }
}

fn source(s: &Service) -> (String, Source) {
    let key = format!(
        "{}/{}",
        s.metadata.namespace.as_deref().unwrap_or_default(),
        s.metadata.name.as_deref().unwrap_or_default()
    );
    (
        key,
        Source {
            ports: mirrored_ports(s),
            headless: is_headless(s),
        },
    )
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

//! Global Services: for one cluster (a remote, or the local cluster itself), its Services
//! matching `globalSvcLabelSelector` join the local `gl-<ns>-73736d-<name>` (the watch,
//! queue and worker are `runner.rs`; the assembly across clusters is `global.rs`, shared
//! by every cluster's runner under one lock). The global Service is selector-less,
//! labelled `global-svc: "true"`, headless when its first source is, with the ports of the
//! source reconciled last and the annotations `global-svc-clusters` and, when that source
//! matches the routing-strategy selector, `service.kubernetes.io/topology-aware-hints:
//! auto` (foreign annotations are replaced, as in the original). When the last cluster's
//! source goes, the global Service goes; with `serviceSync`, one whose sources all went
//! while the mirror was down goes once every cluster has listed (the original kept it).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

use super::global::{GlobalEntry, GlobalServices};
use super::metrics::{MirrorStatus, RunnerMetrics};
use super::objects::{GLOBAL_SVC, global_name, is_headless, mirrored_ports};
use super::runner::{Mirrored, RunnerConfig};
use super::selector::LabelSelector;
use super::writes;

/// What is kept of a source Service.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalSource {
    ports: Vec<ServicePort>,
    headless: bool,
    topology: bool,
}

/// One cluster's part in the global Services.
pub struct GlobalServiceMirror {
    /// The cluster (a remote's name, or the local cluster's).
    pub cluster: String,
    /// The mirror namespace.
    pub namespace: String,
    /// `globalSvcLabelSelector`.
    pub selector: String,
    /// `globalSvcRoutingStrategyLabel`, parsed.
    pub routing: LabelSelector,
    /// `serviceSync`: once every cluster's first list is in, collect the global Services
    /// none of them has (`global.rs`).
    pub gc_at_start: bool,
}

struct GlobalServicesOf {
    cluster: String,
    routing: LabelSelector,
    api: Api<Service>,
    store: Arc<Mutex<GlobalServices>>,
    status: Arc<MirrorStatus>,
}

impl GlobalServiceMirror {
    /// Runs until `shutdown`; `source` is the cluster's client (the local client for the
    /// local cluster), `store` shared by every cluster's runner.
    pub async fn run(
        self,
        source: kube::Client,
        local: kube::Client,
        store: Arc<Mutex<GlobalServices>>,
        runner: RunnerMetrics,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let config = RunnerConfig {
            watcher: format!("{}-serviceWatcher", self.cluster),
            kind: "service",
            queue: format!("{}-global-service", self.cluster),
            metrics: runner.clone(),
            remote: self.cluster.clone(),
            what: "global services",
            selector: self.selector,
            gc_at_start: self.gc_at_start,
            resync: Duration::ZERO,
        };
        let mirrored = Arc::new(GlobalServicesOf {
            cluster: self.cluster,
            routing: self.routing,
            api: Api::namespaced(local, &self.namespace),
            store,
            status: Arc::clone(&runner.status),
        });
        super::runner::run(config, mirrored, source, shutdown).await;
    }
}

impl GlobalServicesOf {
    /// Creates or replaces the global Service `global` as `entry` says.
    async fn write_once(&self, global: &str, entry: &GlobalEntry) -> Result<(), kube::Error> {
        let pp = PostParams::default();
        match self.api.get_opt(global).await? {
            None => {
                self.api
                    .create(&pp, &self.write(global, entry, None))
                    .await?;
                self.status.created.fetch_add(1, Relaxed);
            }
            Some(current) => {
                let wanted = self.write(global, entry, Some(current.clone()));
                if wanted != current {
                    self.api.replace(global, &pp, &wanted).await?;
                    self.status.updated.fetch_add(1, Relaxed);
                }
            }
        }
        Ok(())
    }

    fn write(&self, global: &str, entry: &GlobalEntry, current: Option<Service>) -> Service {
        match current {
            Some(mut s) => {
                s.metadata.annotations = Some(entry.annotations.clone());
                let spec = s.spec.get_or_insert_with(Default::default);
                spec.ports = Some(entry.ports.clone());
                spec.selector = None;
                s
            }
            None => Service {
                metadata: ObjectMeta {
                    name: Some(global.to_string()),
                    namespace: self.api.namespace().map(str::to_string),
                    labels: Some(BTreeMap::from([(
                        GLOBAL_SVC.to_string(),
                        "true".to_string(),
                    )])),
                    annotations: Some(entry.annotations.clone()),
                    ..Default::default()
                },
                spec: Some(ServiceSpec {
                    ports: Some(entry.ports.clone()),
                    cluster_ip: entry.headless.then(|| "None".to_string()),
                    ..Default::default()
                }),
                status: None,
            },
        }
    }
}

impl Mirrored for GlobalServicesOf {
    type Remote = Service;
    type Compact = GlobalSource;

    fn compact(&self, s: &Service) -> GlobalSource {
        GlobalSource {
            ports: mirrored_ports(s),
            headless: is_headless(s),
            topology: self.routing.matches(s.metadata.labels.as_ref()),
        }
    }

    async fn collect_stale(&self, keys: Vec<String>) {
        let globals = keys
            .iter()
            .filter_map(|k| k.split_once('/'))
            .filter_map(|(ns, name)| global_name(ns, name).ok())
            .collect();
        let keep = {
            let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
            store.first_list(&self.cluster, globals)
        };
        let Some(keep) = keep else { return };
        let listed = match self
            .api
            .list(&ListParams::default().labels(&format!("{GLOBAL_SVC}=true")))
            .await
        {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(cluster = %self.cluster, error = %e, "could not list global services to collect stale ones; skipping");
                return;
            }
        };
        for s in listed {
            let name = s.metadata.name.unwrap_or_default();
            // A source may have come since the first lists.
            let has_source = || {
                let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
                store.get(&name).is_some()
            };
            if keep.contains(&name) || has_source() {
                continue;
            }
            tracing::info!(cluster = %self.cluster, service = %name, "no cluster has the service: deleting the stale global service");
            if let Err(e) = writes::delete(&self.api, &name, &self.status).await {
                tracing::warn!(cluster = %self.cluster, service = %name, error = %e, "could not delete a stale global service");
            }
        }
    }

    async fn reconcile(&self, key: &str, source: Option<GlobalSource>) -> Result<(), kube::Error> {
        let Some((ns, name)) = key.split_once('/') else {
            return Ok(());
        };
        let global = match global_name(ns, name) {
            Ok(g) => g,
            Err(e) => {
                self.status.refused_names.fetch_add(1, Relaxed);
                tracing::warn!(cluster = %self.cluster, service = %key, error = %e, "no global service: the name is too long");
                return Ok(());
            }
        };
        let entry = {
            let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
            match source {
                None => store.remove_cluster(&global, &self.cluster).cloned(),
                Some(s) => match store.add_or_update(
                    &global,
                    ns,
                    name,
                    s.ports,
                    s.headless,
                    &self.cluster,
                    s.topology,
                ) {
                    Ok(e) => Some(e.clone()),
                    Err(e) => {
                        tracing::warn!(cluster = %self.cluster, service = %global, error = %e, "this cluster's service is not part of the global service");
                        return Ok(());
                    }
                },
            }
        };
        let Some(entry) = entry else {
            if writes::delete(&self.api, &global, &self.status).await? {
                tracing::info!(cluster = %self.cluster, service = %global, "no cluster has the service any more: deleting the global service");
            }
            return Ok(());
        };
        // Every cluster's runner writes the same global Service: one that loses a race
        // (409) writes again at once, with what the store holds by then.
        let mut entry = entry;
        let mut attempts = 0;
        loop {
            match self.write_once(&global, &entry).await {
                Err(kube::Error::Api(s)) if s.code == 409 && attempts < 3 => {
                    attempts += 1;
                    let latest = {
                        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
                        store.get(&global).cloned()
                    };
                    // Gone meanwhile: its last source's runner deletes it.
                    let Some(latest) = latest else { return Ok(()) };
                    entry = latest;
                }
                other => return other,
            }
        }
    }
}

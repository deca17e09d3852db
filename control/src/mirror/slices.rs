//! The endpoints of mirrored Services: each remote EndpointSlice of a mirrored Service
//! (the EndpointSlice controller copies a Service's labels onto its slices, so the mirror
//! selector finds them) becomes the local EndpointSlice `<prefix>-<ns>-<slice>`, bound to
//! the mirrored Service by `kubernetes.io/service-name` and marked
//! `endpointslice.kubernetes.io/managed-by: semaphore-service-mirror`, so Kubernetes' own
//! slice controllers leave it alone. Its endpoints and ports are the remote's, verbatim;
//! it is written whole (an unconditional replace).
//!
//! No v1 Endpoints are written: kube-proxy and CoreDNS read EndpointSlices, the Endpoints
//! API is deprecated since Kubernetes 1.33, and Endpoints of a selector-less Service would
//! make the EndpointSliceMirroring controller publish a second set of slices. The
//! original's mirrored Endpoints (labelled for this prefix) are deleted after the first
//! list, so that the slices mirrored from them go too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta};

use super::metrics::{MirrorStatus, RunnerMetrics};
use super::objects::{MANAGED_BY, MANAGER, SERVICE_NAME, mirror_labels, mirror_name};
use super::runner::{Mirrored, RunnerConfig};
use super::services::mirror_selector;
use super::writes::{self, is_not_found};

/// What is kept of a remote EndpointSlice.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSlice {
    service: Option<String>,
    address_type: String,
    endpoints: Vec<Endpoint>,
    ports: Option<Vec<EndpointPort>>,
}

/// One remote's EndpointSlice mirroring.
pub struct SliceMirror {
    /// The remote's name (logs).
    pub remote: String,
    /// Its `servicePrefix`.
    pub prefix: String,
    /// The mirror namespace.
    pub namespace: String,
    /// `mirrorSvcLabelSelector`.
    pub selector: String,
    /// `serviceSync`: collect stale slices (and the original's Endpoints) at start.
    pub gc_at_start: bool,
    /// `resyncPeriod`.
    pub resync: Duration,
}

struct Slices {
    remote: String,
    prefix: String,
    api: Api<EndpointSlice>,
    endpoints: Api<Endpoints>,
    status: Arc<MirrorStatus>,
}

/// The local name of remote slice `ns/name` of runner `prefix`.
pub fn local_slice_name(prefix: &str, namespace: &str, name: &str) -> Option<String> {
    let n = format!("{prefix}-{namespace}-{name}");
    (n.len() <= 253).then_some(n)
}

impl SliceMirror {
    /// Runs until `shutdown`.
    pub async fn run(
        self,
        remote: kube::Client,
        local: kube::Client,
        runner: RunnerMetrics,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let config = RunnerConfig {
            watcher: format!("{}-endpointsWatcher", self.remote),
            kind: "endpointslice",
            queue: format!("{}-endpoints", self.remote),
            metrics: runner.clone(),
            remote: self.remote.clone(),
            what: "endpointslices",
            selector: self.selector,
            gc_at_start: self.gc_at_start,
            resync: self.resync,
        };
        let mirrored = Arc::new(Slices {
            remote: self.remote,
            prefix: self.prefix,
            api: Api::namespaced(local.clone(), &self.namespace),
            endpoints: Api::namespaced(local, &self.namespace),
            status: Arc::clone(&runner.status),
        });
        super::runner::run(config, mirrored, remote, shutdown).await;
    }
}

impl Mirrored for Slices {
    type Remote = EndpointSlice;
    type Compact = SourceSlice;

    fn compact(&self, s: &EndpointSlice) -> SourceSlice {
        SourceSlice {
            service: s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME))
                .cloned(),
            address_type: s.address_type.clone(),
            endpoints: s.endpoints.clone(),
            ports: s.ports.clone(),
        }
    }

    async fn collect_stale(&self, keys: Vec<String>) {
        let expected: Vec<String> = keys
            .iter()
            .filter_map(|k| {
                let (ns, name) = k.split_once('/')?;
                local_slice_name(&self.prefix, ns, name)
            })
            .collect();
        let selector = mirror_selector(&self.prefix);
        writes::collect(
            &self.api,
            &selector,
            &expected,
            &self.remote,
            "endpointslices",
            &self.status,
        )
        .await;
        let lp = ListParams::default().labels(&selector);
        // The Go original's mirrored Endpoints: gone, so their mirrored slices go too.
        match self.endpoints.list(&lp).await {
            Ok(listed) => {
                for e in listed.items {
                    let name = e.metadata.name.unwrap_or_default();
                    tracing::info!(cluster = %self.remote, endpoints = %name, "deleting the original's mirrored Endpoints (EndpointSlices replace them)");
                    if let Err(e) = self.endpoints.delete(&name, &DeleteParams::default()).await
                        && !is_not_found(&e)
                    {
                        tracing::warn!(cluster = %self.remote, endpoints = %name, error = %e, "could not delete the original's Endpoints");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(cluster = %self.remote, error = %e, "could not list the original's mirrored Endpoints")
            }
        }
    }

    async fn reconcile(&self, key: &str, source: Option<SourceSlice>) -> Result<(), kube::Error> {
        let Some((ns, name)) = key.split_once('/') else {
            return Ok(());
        };
        let Some(local) = local_slice_name(&self.prefix, ns, name) else {
            self.status.refused_names.fetch_add(1, Relaxed);
            return Ok(());
        };
        let Some(source) = source else {
            return writes::delete(&self.api, &local, &self.status)
                .await
                .map(|_| ());
        };
        let Some(service) = &source.service else {
            tracing::warn!(cluster = %self.remote, endpointslice = %key, "remote endpointslice is missing kubernetes.io/service-name label");
            return Ok(());
        };
        let mirror = match mirror_name(&self.prefix, ns, service) {
            Ok(m) => m,
            // Its Service is not mirrored either (refused and counted there).
            Err(_) => return Ok(()),
        };
        let mut labels: BTreeMap<String, String> = mirror_labels(&self.prefix);
        labels.insert(SERVICE_NAME.to_string(), mirror);
        labels.insert(MANAGED_BY.to_string(), MANAGER.to_string());
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                name: Some(local.clone()),
                namespace: self.api_namespace(),
                labels: Some(labels),
                ..Default::default()
            },
            address_type: source.address_type,
            endpoints: source.endpoints,
            ports: source.ports,
        };
        writes::put(&self.api, &local, &slice, &self.status).await
    }
}

impl Slices {
    fn api_namespace(&self) -> Option<String> {
        self.api.namespace().map(str::to_string)
    }
}

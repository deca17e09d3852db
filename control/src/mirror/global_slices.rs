//! The endpoints of global Services: every EndpointSlice of a cluster (a remote, or the
//! local cluster) that carries `globalSvcLabelSelector` (its Service's labels) becomes the
//! local `gl-<slice>`, bound to `gl-<ns>-73736d-<service>`, with remote endpoints put in
//! zone `remote` and hinted for it, local ones keeping their zone and hinted for every local
//! zone (`objects.rs`). kube-proxy and CoreDNS join all slices of a Service, so the global
//! Service's endpoints are every cluster's. With `endpointSliceSync`, this cluster's stale
//! copies are deleted once its first list is in: listed in the *local* mirror namespace
//! (the original listed the remote's, so stale copies of remote slices were never found).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;

use super::metrics::{MirrorStatus, RunnerMetrics};
use super::objects::{
    MIRRORED_SLICE, SERVICE_NAME, SLICE_CLUSTER, global_name, global_slice, global_slice_name,
};
use super::runner::{Mirrored, RunnerConfig};
use super::writes;

/// What is kept of a source slice.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalSliceSource {
    service: Option<String>,
    slice: EndpointSlice,
}

/// One cluster's slices in the global Services.
pub struct GlobalSliceMirror {
    /// The cluster.
    pub cluster: String,
    /// The mirror namespace.
    pub namespace: String,
    /// `globalSvcLabelSelector`.
    pub selector: String,
    /// `endpointSliceSync`.
    pub gc_at_start: bool,
    /// The local cluster's zones (`localCluster.zones`) for the local cluster's runner;
    /// `None` for a remote.
    pub local_zones: Option<Vec<String>>,
}

struct SlicesOf {
    cluster: String,
    namespace: String,
    local_zones: Option<Vec<String>>,
    api: Api<EndpointSlice>,
    status: Arc<MirrorStatus>,
}

impl GlobalSliceMirror {
    /// Runs until `shutdown`; `source` is the cluster's client.
    pub async fn run(
        self,
        source: kube::Client,
        local: kube::Client,
        runner: RunnerMetrics,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let config = RunnerConfig {
            watcher: format!("{}-endpointSliceWatcher", self.cluster),
            kind: "endpointslice",
            queue: format!("{}-endpointslice", self.cluster),
            metrics: runner.clone(),
            remote: self.cluster.clone(),
            what: "global endpointslices",
            selector: self.selector,
            gc_at_start: self.gc_at_start,
            resync: std::time::Duration::ZERO,
        };
        let mirrored = Arc::new(SlicesOf {
            cluster: self.cluster,
            api: Api::namespaced(local, &self.namespace),
            namespace: self.namespace,
            local_zones: self.local_zones,
            status: Arc::clone(&runner.status),
        });
        super::runner::run(config, mirrored, source, shutdown).await;
    }
}

impl Mirrored for SlicesOf {
    type Remote = EndpointSlice;
    type Compact = GlobalSliceSource;

    fn compact(&self, s: &EndpointSlice) -> GlobalSliceSource {
        let slice = EndpointSlice {
            metadata: Default::default(),
            address_type: s.address_type.clone(),
            endpoints: s.endpoints.clone(),
            ports: s.ports.clone(),
        };
        GlobalSliceSource {
            service: s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME))
                .cloned(),
            slice,
        }
    }

    async fn collect_stale(&self, keys: Vec<String>) {
        let expected: Vec<String> = keys
            .iter()
            .filter_map(|k| global_slice_name(k.split_once('/')?.1).ok())
            .collect();
        let selector = format!("{MIRRORED_SLICE}=true,{SLICE_CLUSTER}={}", self.cluster);
        writes::collect(
            &self.api,
            &selector,
            &expected,
            &self.cluster,
            "global endpointslices",
            &self.status,
        )
        .await;
    }

    async fn reconcile(
        &self,
        key: &str,
        source: Option<GlobalSliceSource>,
    ) -> Result<(), kube::Error> {
        let Some((ns, name)) = key.split_once('/') else {
            return Ok(());
        };
        let Ok(local) = global_slice_name(name) else {
            self.status.refused_names.fetch_add(1, Relaxed);
            return Ok(());
        };
        let Some(source) = source else {
            return writes::delete(&self.api, &local, &self.status)
                .await
                .map(|_| ());
        };
        let Some(service) = &source.service else {
            tracing::warn!(cluster = %self.cluster, endpointslice = %key, "remote endpointslice is missing kubernetes.io/service-name label");
            return Ok(());
        };
        let Ok(target) = global_name(ns, service) else {
            return Ok(());
        };
        let slice = global_slice(
            &source.slice,
            &local,
            &self.namespace,
            &self.cluster,
            &target,
            self.local_zones.as_deref(),
        );
        writes::put(&self.api, &local, &slice, &self.status).await
    }
}

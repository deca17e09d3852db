//! Mirroring one remote's Services (its `mirrorSvcLabelSelector` ones) into the mirror
//! namespace as `<prefix>-<ns>-73736d-<name>` (the watch, queue and worker are
//! `runner.rs`): no remote Service → delete the mirror; no mirror → create it; else replace
//! its ports and clear its selector, leaving everything else (labels added locally
//! survive, as in the original). With `serviceSync`, mirrors of this prefix whose source
//! is gone are deleted once the first list is in. A name over 63 characters is refused
//! with a log line and counted, not retried.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use kube::api::{Api, PostParams};

use super::metrics::{MirrorStatus, RunnerMetrics};
use super::objects::{
    MIRROR_PREFIX, MIRRORED_SVC, is_headless, mirror_name, mirrored_ports, new_mirror_service,
};
use super::runner::{Mirrored, RunnerConfig};
use super::writes;

/// What is kept of a remote Service.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceService {
    ports: Vec<ServicePort>,
    headless: bool,
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

struct Services {
    remote: String,
    prefix: String,
    api: Api<Service>,
    status: Arc<MirrorStatus>,
}

impl ServiceMirror {
    /// Runs until `shutdown`.
    pub async fn run(
        self,
        remote: kube::Client,
        local: kube::Client,
        runner: RunnerMetrics,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let config = RunnerConfig {
            watcher: format!("{}-serviceWatcher", self.remote),
            kind: "service",
            queue: format!("{}-service", self.remote),
            metrics: runner.clone(),
            remote: self.remote.clone(),
            what: "services",
            selector: self.selector,
            gc_at_start: self.gc_at_start,
            resync: self.resync,
        };
        let mirrored = Arc::new(Services {
            remote: self.remote,
            prefix: self.prefix,
            api: Api::namespaced(local, &self.namespace),
            status: Arc::clone(&runner.status),
        });
        super::runner::run(config, mirrored, remote, shutdown).await;
    }
}

/// The labels that mark the copies of runner `prefix`, as a selector.
pub fn mirror_selector(prefix: &str) -> String {
    format!("{MIRRORED_SVC}=true,{MIRROR_PREFIX}={prefix}")
}

impl Mirrored for Services {
    type Remote = Service;
    type Compact = SourceService;

    fn compact(&self, s: &Service) -> SourceService {
        SourceService {
            ports: mirrored_ports(s),
            headless: is_headless(s),
        }
    }

    async fn collect_stale(&self, keys: Vec<String>) {
        let expected: Vec<String> = keys
            .iter()
            .filter_map(|k| {
                let (ns, name) = k.split_once('/')?;
                mirror_name(&self.prefix, ns, name).ok()
            })
            .collect();
        let selector = mirror_selector(&self.prefix);
        writes::collect(
            &self.api,
            &selector,
            &expected,
            &self.remote,
            "services",
            &self.status,
        )
        .await;
    }

    async fn reconcile(&self, key: &str, source: Option<SourceService>) -> Result<(), kube::Error> {
        let Some((ns, name)) = key.split_once('/') else {
            return Ok(());
        };
        let mirror = match mirror_name(&self.prefix, ns, name) {
            Ok(m) => m,
            Err(e) => {
                self.status.refused_names.fetch_add(1, Relaxed);
                tracing::warn!(cluster = %self.remote, service = %key, error = %e, "not mirrored: the name is too long");
                return Ok(());
            }
        };
        let Some(source) = source else {
            if writes::delete(&self.api, &mirror, &self.status).await? {
                tracing::info!(cluster = %self.remote, service = %mirror, "remote service not found, deleting local service");
            }
            return Ok(());
        };
        let namespace = self.api_namespace();
        match self.api.get_opt(&mirror).await? {
            None => {
                let svc = new_mirror_service(
                    &mirror,
                    &namespace,
                    &self.prefix,
                    source.ports,
                    source.headless,
                );
                self.api.create(&PostParams::default(), &svc).await?;
                self.status.created.fetch_add(1, Relaxed);
                tracing::info!(cluster = %self.remote, service = %mirror, "local service not found, creating service");
            }
            Some(mut current) => {
                let spec = current.spec.get_or_insert_with(Default::default);
                // Already as mirrored_ports gives them (the compact form keeps them so).
                let ports = Some(source.ports);
                if spec.ports == ports && spec.selector.is_none() {
                    return Ok(());
                }
                spec.ports = ports;
                spec.selector = None;
                self.api
                    .replace(&mirror, &PostParams::default(), &current)
                    .await?;
                self.status.updated.fetch_add(1, Relaxed);
                tracing::info!(cluster = %self.remote, service = %mirror, "local service found, updating service");
            }
        }
        Ok(())
    }
}

impl Services {
    fn api_namespace(&self) -> String {
        self.api.namespace().unwrap_or_default().to_string()
    }
}

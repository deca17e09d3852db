//! What the HTTP endpoints read: per remote, its setup state, tunnel and sync status.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use control::advertise::AdvertStatus;
use control::http_metrics::RequestCounts;
use control::sync::SyncStatus;
use dataplane::Device;

/// One remote cluster's runtime state.
#[derive(Debug)]
pub struct RemoteState {
    pub cluster: String,
    pub device: String,
    /// Set once the device exists.
    pub tunnel: OnceLock<Arc<dyn Device>>,
    /// Device, key and route are in place.
    pub route_ok: AtomicBool,
    pub sync: Arc<SyncStatus>,
}

/// The whole agent.
#[derive(Debug)]
pub struct AppState {
    pub remotes: Vec<Arc<RemoteState>>,
    pub advert: Arc<AdvertStatus>,
    /// Kubernetes API requests of every client.
    pub kube_requests: RequestCounts,
}

impl AppState {
    /// `/healthz`: every remote's device, key, route, and our annotations are set up.
    pub fn healthy(&self) -> Result<(), String> {
        if !self.advert.advertised.load(Relaxed) {
            return Err("our node's annotations are not in place yet".into());
        }
        for r in &self.remotes {
            if r.tunnel.get().is_none() {
                return Err(format!("{}: device not up", r.device));
            }
            if !r.route_ok.load(Relaxed) {
                return Err(format!("{}: route not in place", r.device));
            }
        }
        Ok(())
    }

    /// `/readyz`: healthy, and every remote's initial node list applied.
    pub fn ready(&self) -> Result<(), String> {
        self.healthy()?;
        for r in &self.remotes {
            if !r.sync.initial_list_applied.load(Relaxed) {
                return Err(format!("{}: remote nodes not synced yet", r.device));
            }
        }
        Ok(())
    }
}

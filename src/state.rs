//! What the HTTP endpoints read: per remote, whether it is up (and why not), its tunnel
//! while it runs, its route and its sync status.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use control::advertise::AdvertStatus;
use control::http_metrics::RequestCounts;
use control::sync::SyncStatus;
use dataplane::Device;
use tokio::sync::Notify;

/// How long a tunnel that was up may stay down, being rebuilt, before `/healthz` fails
/// (and the kubelet restarts the pod).
pub const REBUILD_GRACE: Duration = Duration::from_secs(10);

/// Where a remote stands.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Being brought up for the first time.
    Starting,
    /// Device, key, tunnel and UAPI socket in place.
    Up,
    /// Gateway mode, another node elected: no tunnel here, the remote is routed through
    /// that node.
    Standby {
        /// The active gateway, once known.
        gateway: Option<String>,
    },
    /// Not running: being retried.
    Down {
        /// Since when.
        since: Instant,
        /// Why (the last error).
        reason: String,
        /// It had been up: its traffic is blackholed until it is rebuilt.
        was_up: bool,
    },
}

/// One remote cluster's runtime state.
#[derive(Debug)]
pub struct RemoteState {
    pub cluster: String,
    pub device: String,
    /// The running tunnel, while there is one (replaced when it is rebuilt).
    pub tunnel: RwLock<Option<Arc<dyn Device>>>,
    pub phase: Mutex<Phase>,
    /// The route is in place.
    pub route_ok: AtomicBool,
    pub sync: Arc<SyncStatus>,
    /// Rung when the tunnel is (re)built: the sync re-applies and the route goes back.
    pub rebuilt: Arc<Notify>,
    pub route_now: Arc<Notify>,
    /// Gateway mode: the active gateway as this agent sees it, and whether it is us.
    pub gateway: Mutex<Option<(String, bool)>>,
}

impl RemoteState {
    /// A remote about to be brought up.
    pub fn new(cluster: &str, device: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
            device: device.to_string(),
            tunnel: RwLock::new(None),
            phase: Mutex::new(Phase::Starting),
            route_ok: AtomicBool::new(false),
            sync: Arc::new(SyncStatus::default()),
            rebuilt: Arc::new(Notify::new()),
            route_now: Arc::new(Notify::new()),
            gateway: Mutex::new(None),
        }
    }

    /// The running tunnel, if any.
    pub fn device(&self) -> Option<Arc<dyn Device>> {
        self.tunnel
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The tunnel is up (again).
    pub fn set_up(&self, device: Arc<dyn Device>) {
        *self.tunnel.write().unwrap_or_else(|e| e.into_inner()) = Some(device);
        *self.phase() = Phase::Up;
        self.rebuilt.notify_one();
        self.route_now.notify_one();
    }

    /// The tunnel is down, for `reason`.
    pub fn set_down(&self, reason: String) {
        *self.tunnel.write().unwrap_or_else(|e| e.into_inner()) = None;
        let mut phase = self.phase();
        let (since, was_up) = match &*phase {
            Phase::Up => (Instant::now(), true),
            Phase::Down { since, was_up, .. } => (*since, *was_up),
            Phase::Starting | Phase::Standby { .. } => (Instant::now(), false),
        };
        *phase = Phase::Down {
            since,
            reason,
            was_up,
        };
    }

    /// True while the tunnel is up.
    pub fn is_up(&self) -> bool {
        matches!(*self.phase(), Phase::Up)
    }

    /// True while the tunnel is up and the remote's nodes are synced, or (gateway mode,
    /// another node elected) while the remote is routed through the active gateway.
    pub fn is_working(&self) -> bool {
        if let Phase::Standby { gateway } = &*self.phase() {
            return gateway.is_some() && self.route_ok.load(Relaxed);
        }
        self.is_up()
            && self.sync.initial_list_applied.load(Relaxed)
            && self.sync.problem().is_none()
    }

    /// Gateway mode: the active gateway (`None`: none known), and whether it is us.
    pub fn set_gateway(&self, gateway: Option<(String, bool)>) {
        *self.gateway.lock().unwrap_or_else(|e| e.into_inner()) = gateway;
    }

    /// Gateway mode, another node elected (`gateway`, once known): no tunnel here.
    pub fn set_standby(&self, gateway: Option<String>) {
        *self.tunnel.write().unwrap_or_else(|e| e.into_inner()) = None;
        *self.phase() = Phase::Standby { gateway };
    }

    /// The active gateway while on standby (gateway mode), for metrics.
    pub fn standby_gateway(&self) -> Option<Option<String>> {
        match &*self.phase() {
            Phase::Standby { gateway } => Some(gateway.clone()),
            _ => None,
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The whole agent.
#[derive(Debug)]
pub struct AppState {
    pub remotes: Vec<Arc<RemoteState>>,
    pub advert: Arc<AdvertStatus>,
    /// Kubernetes API requests of every client.
    pub kube_requests: RequestCounts,
    pub takeover: Arc<TakeoverStatus>,
}

/// Upgrades in place (see `takeover.rs`), for metrics.
#[derive(Debug, Default)]
pub struct TakeoverStatus {
    /// This agent started by taking over a running one.
    pub took_over: AtomicBool,
    /// Successors that connected and failed; this agent served on.
    pub failures: AtomicU64,
}

impl TakeoverStatus {
    pub fn taken_over(&self) {
        self.took_over.store(true, Relaxed);
    }

    pub fn failed(&self) {
        self.failures.fetch_add(1, Relaxed);
    }
}

impl AppState {
    /// `/healthz`: the agent is alive and no tunnel that was up has stayed dead for longer
    /// than [`REBUILD_GRACE`] (its traffic would be blackholed: better restart the pod). A
    /// remote that never came up fails `/readyz`, not this: it is retried in place.
    pub fn healthy(&self) -> Result<(), String> {
        for r in &self.remotes {
            if let Phase::Down {
                since,
                reason,
                was_up: true,
            } = &*r.phase()
                && since.elapsed() > REBUILD_GRACE
            {
                return Err(format!(
                    "{}: the tunnel stopped {} s ago and cannot be rebuilt: {reason}",
                    r.device,
                    since.elapsed().as_secs()
                ));
            }
        }
        Ok(())
    }

    /// `/readyz`: healthy, every remote up with its route, our annotations in place, and
    /// every remote's initial node list applied.
    pub fn ready(&self) -> Result<(), String> {
        self.healthy()?;
        for r in &self.remotes {
            match &*r.phase() {
                Phase::Up => {}
                Phase::Standby { gateway: None } => {
                    return Err(format!("{}: gateway mode, no active gateway yet", r.device));
                }
                Phase::Standby { gateway: Some(gw) } => {
                    if !r.route_ok.load(Relaxed) {
                        return Err(format!("{}: no route through gateway {gw} yet", r.device));
                    }
                    continue;
                }
                Phase::Starting => return Err(format!("{}: starting", r.device)),
                Phase::Down { reason, .. } => return Err(format!("{}: down: {reason}", r.device)),
            }
            if !r.route_ok.load(Relaxed) {
                return Err(format!("{}: route not in place", r.device));
            }
        }
        if !self.advert.advertised.load(Relaxed) {
            return Err("our node's annotations are not in place yet".into());
        }
        for r in &self.remotes {
            if r.standby_gateway().is_some() {
                continue;
            }
            if !r.sync.initial_list_applied.load(Relaxed) {
                let why = r
                    .sync
                    .problem()
                    .map(|p| format!(": {p}"))
                    .unwrap_or_default();
                return Err(format!("{}: remote nodes not synced yet{why}", r.device));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(remote: &Arc<RemoteState>) -> AppState {
        AppState {
            remotes: vec![Arc::clone(remote)],
            advert: Arc::new(AdvertStatus::default()),
            kube_requests: RequestCounts::default(),
            takeover: Arc::default(),
        }
    }

    #[test]
    fn a_remote_that_never_came_up_fails_readiness_not_liveness() {
        let r = Arc::new(RemoteState::new("gcp", "wireguard.gcp"));
        r.set_down("remoteCAURL https://ca: connection refused".into());
        let a = app(&r);
        assert!(a.healthy().is_ok());
        let e = a.ready().unwrap_err();
        assert!(e.contains("connection refused"), "{e}");
    }

    #[test]
    fn a_dead_tunnel_fails_liveness_after_the_grace() {
        let r = Arc::new(RemoteState::new("gcp", "wireguard.gcp"));
        *r.phase.lock().unwrap() = Phase::Up;
        r.set_down("device deleted".into());
        let a = app(&r);
        assert!(a.healthy().is_ok(), "being rebuilt");
        // As if it had been down for longer than the grace.
        if let Phase::Down { since, .. } = &mut *r.phase.lock().unwrap() {
            *since = Instant::now() - REBUILD_GRACE - Duration::from_secs(1);
        }
        let e = a.healthy().unwrap_err();
        assert!(e.contains("cannot be rebuilt: device deleted"), "{e}");
        // Rebuilt: healthy again (and the sync and route are told).
        let (tun, _host) = dataplane::testing::mem_tun();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let t = rt.block_on(async {
            dataplane::Tunnel::spawn(
                "mem9",
                tun,
                dataplane::testing::MemNet::new().host("192.0.2.1".parse().unwrap()),
                dataplane::TunnelConfig::default(),
            )
            .unwrap()
        });
        r.set_up(t.device());
        assert!(a.healthy().is_ok());
        assert!(r.device().is_some());
    }
}

//! Gateway mode for one remote (`"topology": "gateway"`): among the nodes carrying the
//! gateway label, the one holding the remote's Lease runs the tunnel, publishes its key,
//! endpoint and `gateway` claim (its election time), and forwards; every other node has no
//! tunnel for the remote and routes its subnets via the active gateway's InternalIP,
//! learnt from the labelled nodes' claims (the newest election wins, as on the other side).
//!
//! A gateway stands only while it can forward (`ip_forward` on) and gives the Lease up
//! when its tunnel has heard nothing from any peer for a while (`gateway_health.rs`).
//!
//! An upgrade on the active gateway hands its tunnel over like any other: the successor
//! asks for the device, the running unit's supervisor gives it (while this loop stops
//! judging and electing, so that the Lease, held under the node's name, is not given up
//! meanwhile), and the successor, renewing the same Lease, runs it on.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use control::advertise::Advert;
use control::config::RemoteCluster;
use control::election::{ElectionTiming, Round};
use control::gateway::Candidates;
use control::netlink::Netlink;
use dataplane::PrivateKey;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::gateway_health::Health;
use crate::options::{RunOptions, stopped};
use crate::state::RemoteState;

/// What one remote in gateway mode needs.
pub struct GatewayRemote {
    pub remote: RemoteCluster,
    pub key: PrivateKey,
    pub rs: Arc<RemoteState>,
    pub opts: Arc<RunOptions>,
    pub netlink: Netlink,
    pub local: kube::Client,
    pub adverts: Arc<watch::Sender<Vec<Advert>>>,
    pub kube_requests: control::http_metrics::RequestCounts,
    pub local_name: String,
    /// A successor's requests for this remote's tunnel (`takeover::serve`).
    pub handover: mpsc::Receiver<crate::takeover::HandoverRequest>,
    /// The tunnel handed over by the agent before us (it was the gateway), for the unit
    /// to run when the Lease confirms us.
    pub initial: std::sync::Mutex<Option<crate::remote::Running>>,
}

/// How long a handover may take before this loop judges and elects again (the takeover
/// failed, and the unit's supervisor took the tunnel back).
const HANDOVER_PAUSE: Duration = Duration::from_secs(30);
/// How often the active gateway checks that its FORWARD rules are still in place (a
/// firewall reload, Docker's restart, removes them).
const FIREWALL_RECHECK: Duration = Duration::from_secs(10);
/// Why a gateway whose FORWARD chain could not be opened gives up.
const FIREWALL_FAILED: &str = "its FORWARD chain could not be opened";

/// How adjusting the FORWARD chain went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chain {
    /// Done (or nothing to do).
    Done,
    /// No iptables tool: the policy cannot be checked (warned).
    NoTools,
    /// It failed (logged).
    Failed,
}

/// The running tunnel, route and sync of the remote while we are its gateway.
struct Unit {
    stop: watch::Sender<bool>,
    /// Passes the agent's stop on to the unit (aborted when the unit stops first).
    forward_stop: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    takeover: mpsc::Sender<crate::takeover::HandoverRequest>,
}

impl GatewayRemote {
    /// Runs until `stop`. On stop, a tunnel we run stays (persistent device) and the Lease
    /// stays ours: an agent continuing on this node renews it.
    pub async fn run(mut self, stop: watch::Receiver<bool>) {
        let device = self.remote.device_name();
        let cluster = self.remote.name.clone();
        let label = self.remote.gateway_label.clone();
        let timing = ElectionTiming::default();
        let lease = control::gateway::lease_name(&self.remote.name);
        let mut elector = control::gateway::elector(
            self.local.clone(),
            &self.opts.namespace,
            &self.remote.name,
            &self.opts.node_name,
            timing,
        );
        let (candidates_tx, mut candidates_rx) = watch::channel(Candidates::new());
        let watching = tokio::spawn(control::gateway::watch_candidates(
            self.local.clone(),
            self.remote.gateway_label.clone(),
            self.remote.name.clone(),
            candidates_tx,
            stopped(stop.clone()),
        ));
        let mut unit: Option<Unit> = None;
        let mut health = Health::default();
        let mut routed_via: Option<(String, IpAddr)> = None;
        let mut tick = tokio::time::interval(timing.retry);
        let mut stop_fut = std::pin::pin!(stopped(stop.clone()));
        let (_, dummy) = mpsc::channel(1);
        let mut handover = std::mem::replace(&mut self.handover, dummy);
        let mut paused_until: Option<Instant> = None;
        // While leading: when the FORWARD rules were last checked (never without tools).
        let mut firewall_at: Option<Instant> = None;
        // A tunnel handed over waits for the Lease this long at most.
        let initial_deadline = Instant::now() + timing.lease_duration;
        self.rs.set_standby(None);
        tracing::info!(cluster = %cluster, device = %device, label = %label, lease = %lease, "gateway mode");
        loop {
            tokio::select! {
                _ = &mut stop_fut => break,
                changed = candidates_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                Some(req) = handover.recv() => {
                    match &unit {
                        Some(u) => {
                            tracing::info!(cluster = %cluster, device = %device, "a successor takes the gateway's tunnel over");
                            paused_until = Some(Instant::now() + HANDOVER_PAUSE);
                            if let Err(mpsc::error::SendError(req)) = u.takeover.send(req).await {
                                let _ = req.reply.send(None);
                            }
                        }
                        // Standby: no tunnel here; the successor elects for itself.
                        None => {
                            let _ = req.reply.send(None);
                        }
                    }
                }
                _ = tick.tick(), if paused_until.is_none_or(|t| Instant::now() >= t) => {
                    paused_until = None;
                    if Instant::now() >= initial_deadline && self.take_initial().is_some() {
                        tracing::warn!(cluster = %cluster, device = %device, "the Lease did not confirm us as the gateway; dropping the tunnel handed over");
                        self.set_advert(false, None);
                        self.remove_device().await;
                    }
                    if unit.is_some()
                        && firewall_at.is_some_and(|t| t.elapsed() >= FIREWALL_RECHECK)
                    {
                        firewall_at = self.open_firewall(&mut health).await;
                    }
                    let am_candidate = candidates_rx.borrow().contains_key(&self.opts.node_name);
                    let fit = health.check(&self.remote, unit.is_some(), &self.rs);
                    if let (Err(reason), true) = (&fit, unit.is_some()) {
                        tracing::error!(cluster = %cluster, device = %device, reason = %reason, "this gateway cannot serve; giving the Lease up");
                    }
                    let may_lead = am_candidate && fit.is_ok();
                    if am_candidate || elector.leading_since().is_some() {
                        match elector.round(may_lead).await {
                            Ok(Round::Leading(since)) => {
                                if unit.is_none() {
                                    let since = control::gateway::claim_text(&since);
                                    unit = Some(self.become_gateway(since, &stop));
                                    health.started();
                                    firewall_at = self.open_firewall(&mut health).await;
                                    routed_via = None;
                                }
                            }
                            Ok(Round::Following(holder)) => {
                                if let Some(u) = unit.take() {
                                    self.step_down(u, holder.as_deref()).await;
                                } else if self.take_initial().is_some() {
                                    // Handed a tunnel, but the Lease is another node's now.
                                    self.set_advert(false, None);
                                    self.remove_device().await;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(cluster = %cluster, device = %device, error = %control::error_chain(&e), "the gateway Lease could not be read or renewed");
                                if elector.leading_since().is_none()
                                    && let Some(u) = unit.take()
                                {
                                    self.step_down(u, None).await;
                                }
                            }
                        }
                    }
                }
            }
            // Holding a tunnel handed over, we expect the Lease: no routes via another node.
            if unit.is_none() && !self.holds_initial() {
                let active =
                    control::gateway::active(&candidates_rx.borrow(), &self.opts.node_name);
                self.route_via_gateway(active, &mut routed_via).await;
            }
        }
        if let Some(u) = unit {
            u.halt().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), watching).await;
    }

    /// Elected: publish the claim and run the tunnel, route and sync.
    fn become_gateway(&self, since_text: String, stop: &watch::Receiver<bool>) -> Unit {
        tracing::info!(cluster = %self.remote.name, device = %self.remote.device_name(), node = %self.opts.node_name, elected = %since_text, "this node is now the remote's gateway");
        self.set_advert(true, Some(since_text));
        self.rs
            .set_gateway(Some((self.opts.node_name.clone(), true)));
        let (unit_tx, unit_rx) = watch::channel(false);
        // The unit stops when we step down or when the agent stops.
        let mut global = stop.clone();
        let forward = unit_tx.clone();
        let forward_stop = tokio::spawn(async move {
            let _ = global.wait_for(|s| *s).await;
            let _ = forward.send(true);
        });
        let mut tasks = Vec::new();
        let (takeover_tx, takeover_rx) = mpsc::channel(1);
        tasks.push(tokio::spawn(crate::remote::supervise(
            self.remote.clone(),
            self.key.clone(),
            Arc::clone(&self.rs),
            Arc::clone(&self.opts),
            self.netlink.clone(),
            unit_rx.clone(),
            self.take_initial(),
            takeover_rx,
        )));
        tasks.push(tokio::spawn(crate::serve::keep_route(
            self.netlink.clone(),
            self.remote.clone(),
            Arc::clone(&self.rs),
            unit_rx.clone(),
        )));
        let (sync, sink) = crate::serve::remote_sync(
            &self.remote,
            &self.local_name,
            &self.key,
            &self.rs,
            &self.opts,
        );
        tasks.push(tokio::spawn(crate::serve::sync_remote(
            self.remote.clone(),
            sync,
            sink,
            Arc::clone(&self.rs),
            self.kube_requests.clone(),
            unit_rx,
        )));
        Unit {
            stop: unit_tx,
            forward_stop,
            tasks,
            takeover: takeover_tx,
        }
    }

    /// The tunnel handed over at start, if not used yet.
    fn take_initial(&self) -> Option<crate::remote::Running> {
        self.initial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn holds_initial(&self) -> bool {
        self.initial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// No longer elected: withdraw the claim, stop the tunnel and delete its device (the
    /// routes through it go with it).
    async fn step_down(&self, unit: Unit, holder: Option<&str>) {
        let device = self.remote.device_name();
        tracing::warn!(cluster = %self.remote.name, device = %device, new_holder = holder.unwrap_or(""), "this node is no longer the remote's gateway");
        self.set_advert(false, None);
        unit.halt().await;
        self.firewall(false).await;
        self.remove_device().await;
    }

    /// Deletes the remote's device (the routes through it go with it).
    async fn remove_device(&self) {
        let device = self.remote.device_name();
        if let Err(e) = self.netlink.delete_link(&device).await {
            tracing::warn!(cluster = %self.remote.name, device = %device, error = %e, "could not delete the device")
        }
        self.rs.route_ok.store(false, Relaxed);
        self.rs.set_standby(None);
        self.rs.set_gateway(None);
    }

    /// Opens the FORWARD chain (again); a gateway that cannot gives up. Returns when it was
    /// checked, `None` when it cannot be (no iptables tools).
    async fn open_firewall(&self, health: &mut Health) -> Option<Instant> {
        match self.firewall(true).await {
            Chain::Done => Some(Instant::now()),
            Chain::NoTools => None,
            Chain::Failed => {
                health.give_up(FIREWALL_FAILED, Instant::now());
                Some(Instant::now())
            }
        }
    }

    /// Opens (`open`) or closes the node's `FORWARD` chain for the remote's prefixes, where
    /// its policy drops (`control::firewall`).
    async fn firewall(&self, open: bool) -> Chain {
        let prefixes: Vec<_> = self.remote.subnets.routed().copied().collect();
        let (cluster, device) = (self.remote.name.clone(), self.remote.device_name());
        let done = tokio::task::spawn_blocking(move || {
            let firewall = control::firewall::Firewall::default();
            if open {
                firewall.accept(&prefixes)
            } else {
                firewall.withdraw(&prefixes).map(|()| Vec::new())
            }
        })
        .await;
        match done {
            Ok(Ok(added)) => {
                if !added.is_empty() {
                    let added: Vec<String> = added
                        .iter()
                        .map(|a| format!("{} ({})", a.prefix, a.tool))
                        .collect();
                    tracing::info!(cluster = %cluster, device = %device, prefixes = %added.join(","), "the FORWARD policy drops: accepting forwarding to and from the remote's prefixes");
                }
                Chain::Done
            }
            Ok(Err(e @ control::firewall::FirewallError::Missing { .. })) => {
                tracing::warn!(cluster = %cluster, device = %device, error = %e, "if this node's FORWARD policy drops, the gateway's forwarded traffic is lost");
                Chain::NoTools
            }
            Ok(Err(e)) => {
                tracing::error!(cluster = %cluster, device = %device, error = %control::error_chain(&e), "could not adjust the FORWARD chain");
                Chain::Failed
            }
            Err(e) => {
                tracing::error!(cluster = %cluster, device = %device, error = %e, "the FORWARD chain task failed");
                Chain::Failed
            }
        }
    }

    fn set_advert(&self, active: bool, since: Option<String>) {
        self.adverts.send_modify(|all| {
            for a in all.iter_mut().filter(|a| a.remote == self.remote.name) {
                a.active = active;
                a.gateway_since.clone_from(&since);
                a.hold = false;
            }
        });
    }

    /// On standby: every routed prefix via the active gateway's address.
    async fn route_via_gateway(
        &self,
        active: Option<(String, IpAddr)>,
        routed_via: &mut Option<(String, IpAddr)>,
    ) {
        let device = self.remote.device_name();
        let Some((name, ip)) = active else {
            if routed_via.take().is_some() || self.rs.standby_gateway() != Some(None) {
                tracing::warn!(cluster = %self.remote.name, device = %device, "no active gateway for the remote");
            }
            self.rs.route_ok.store(false, Relaxed);
            self.rs.set_standby(None);
            self.rs.set_gateway(None);
            return;
        };
        let mut ok = true;
        for prefix in self.remote.subnets.routed() {
            if let Err(e) = self.netlink.ensure_route_via(*prefix, ip).await {
                ok = false;
                tracing::warn!(cluster = %self.remote.name, device = %device, route = %prefix, gateway = %name, error = %e, "route via the gateway not in place; retrying");
            }
        }
        self.rs.route_ok.store(ok, Relaxed);
        if routed_via.as_ref() != Some(&(name.clone(), ip)) {
            tracing::info!(cluster = %self.remote.name, device = %device, gateway = %name, via = %ip, "routing the remote through its gateway");
            *routed_via = Some((name.clone(), ip));
        }
        self.rs.set_standby(Some(name.clone()));
        self.rs.set_gateway(Some((name, false)));
    }
}

impl Unit {
    async fn halt(self) {
        self.forward_stop.abort();
        let _ = self.stop.send(true);
        crate::options::join_within(
            self.tasks,
            Duration::from_secs(5),
            "leaving the gateway role",
        )
        .await;
    }
}

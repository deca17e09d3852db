//! One loop per remote cluster: a watch over the remote's Nodes; after the initial
//! list, after every change, on `resyncPeriod`, after a failed apply (with backoff) and
//! when a hold on large removals ends (`hold.rs`), the whole desired peer set goes to the
//! tunnel through [`PeerSink`]. Nothing is applied before the initial list, so restored
//! peers are never removed early.
//!
//! - A change after a quiet spell is applied at once; changes that follow within
//!   [`DEBOUNCE`] of an apply are gathered into the next one.
//! - Only what the agent uses of a Node is kept ([`RemoteNode`]: name, creation time, our
//!   annotations, the pod CIDRs); each Node is dropped as soon as it is read, the list
//!   is read in pages, and a change to anything else of a Node (a status update) is no
//!   change at all.
//! - The watch is retried with a jittered backoff capped at [`WATCH_RETRY_MAX`], so watches
//!   resume within seconds of the API server answering again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

use crate::backoff::Backoff;
use crate::config::Subnets;
use crate::hold::RemovalHold;
use crate::node::RemoteNode;
use crate::peers::{
    AnnotationKeys, DesiredPeer, RefuseKind, Refused, SkipKind, Skipped, plan_peers,
};

/// Where a remote's desired peers go (the binary implements it over the dataplane).
pub trait PeerSink: Send + Sync + 'static {
    /// Make the tunnel's peers exactly `peers`, plus the peers already there whose key is
    /// in `keep` (as they are), unless one of `peers` now claims their addresses.
    fn apply(&self, peers: &[DesiredPeer], keep: &[[u8; 32]]) -> Result<(), ApplyError>;

    /// The keys of the tunnel's peers now (empty when the tunnel is not up).
    fn current_keys(&self) -> Vec<[u8; 32]>;
}

/// The tunnel refused a peer set; nothing of it was applied. The sync loop retries with
/// backoff.
#[derive(Debug, thiserror::Error)]
#[error("the tunnel refused the peer set")]
pub struct ApplyError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Changes arriving within this window after an apply are applied together.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// The longest wait between two attempts to watch (before jitter, which may double it).
pub const WATCH_RETRY_MAX: Duration = Duration::from_secs(2);
/// Nodes per page of the list.
const PAGE_SIZE: u32 = 100;

/// Counters and state of one remote's sync loop, read by health checks and metrics.
#[derive(Default, Debug)]
pub struct SyncStatus {
    /// The initial node list has been applied at least once.
    pub initial_list_applied: AtomicBool,
    /// Successful applies.
    pub syncs_ok: AtomicU64,
    /// Failed applies.
    pub syncs_failed: AtomicU64,
    /// Applies retried after a failure.
    pub requeues: AtomicU64,
    /// Remote node list failures.
    pub list_failures: AtomicU64,
    /// Remote node watch failures.
    pub watch_failures: AtomicU64,
    /// Peers in the last applied set.
    pub peers: AtomicUsize,
    /// Removals held back by the large-removal rule (`hold.rs`).
    pub held_removals: AtomicUsize,
    /// Nodes skipped as malformed, by [`SkipKind::index`] (counted per sync in which they
    /// were skipped and had changed).
    pub skipped_total: [AtomicU64; SkipKind::COUNT],
    /// The nodes skipped in the last sync.
    pub skipped_now: Mutex<Vec<Skipped>>,
    /// `extraCIDRs` claims refused, by [`RefuseKind::index`] (counted per sync in which
    /// they were refused and had changed).
    pub refused_total: [AtomicU64; RefuseKind::COUNT],
    /// What keeps the remote from syncing now (cleared by a successful apply).
    pub problem: Mutex<Option<String>>,
}

/// Static inputs of one remote's loop.
pub struct RemoteSync {
    /// Remote cluster name (for logs).
    pub cluster: String,
    /// Our device for it (for logs).
    pub device: String,
    /// Keys under which remote nodes advertise to our (local) cluster.
    pub keys: AnnotationKeys,
    /// The remote's pod and extra subnets.
    pub subnets: Subnets,
    /// A node that is never a peer: ourselves, in the in-cluster mesh.
    pub skip_node: Option<String>,
    /// Full re-apply period (zero = off).
    pub resync: Duration,
    /// Our public key for this remote: a node advertising it is skipped.
    pub own_key: Option<[u8; 32]>,
    /// How long removals of more than half of the peers wait (zero: never).
    pub mass_removal_grace: Duration,
}

impl SyncStatus {
    /// Records what keeps the remote from syncing (`None`: nothing).
    pub fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = problem;
    }

    /// What keeps the remote from syncing, if anything.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl RemoteSync {
    /// Runs until `shutdown` resolves.
    pub async fn run(
        self,
        client: kube::Client,
        sink: Arc<dyn PeerSink>,
        status: Arc<SyncStatus>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        self.run_with_kick(client, sink, status, Arc::new(Notify::new()), shutdown)
            .await;
    }

    /// Like [`RemoteSync::run`]; every `kick` applies the whole set again at once (the
    /// binary kicks when a tunnel was rebuilt).
    pub async fn run_with_kick(
        self,
        client: kube::Client,
        sink: Arc<dyn PeerSink>,
        status: Arc<SyncStatus>,
        kick: Arc<Notify>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let events = watcher(Api::<Node>::all(client)).boxed();
        self.drive(events, sink, status, kick, shutdown).await;
    }

    async fn drive(
        self,
        mut events: futures::stream::BoxStream<'static, Result<Event<Node>, watcher::Error>>,
        sink: Arc<dyn PeerSink>,
        status: Arc<SyncStatus>,
        kick: Arc<Notify>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut listed = false;
        let mut due: Option<Instant> = None;
        let mut last_apply: Option<Instant> = None;
        let mut retry = Backoff::new(RETRY_MIN, RETRY_MAX);
        let mut hold = RemovalHold::new(self.mass_removal_grace);
        let mut hold_ends: Option<Instant> = None;
        let mut resync = (!self.resync.is_zero())
            .then(|| tokio::time::interval_at(Instant::now() + self.resync, self.resync));
        let mut last_skipped: Vec<Skipped> = Vec::new();
        let mut last_refused: Vec<Refused> = Vec::new();
        // The nodes by name, and the next generation while a (re)list is under way.
        let mut store: HashMap<String, RemoteNode> = HashMap::new();
        let mut listing: Option<HashMap<String, RemoteNode>> = None;
        loop {
            let far = Instant::now() + Duration::from_secs(3600);
            let wake = due.unwrap_or(far);
            let hold_wake = hold_ends.unwrap_or(far);
            tokio::select! {
                _ = &mut shutdown => return,
                ev = events.next() => match ev {
                    None => return,
                    Some(Ok(Event::Init)) => listing = Some(HashMap::new()),
                    Some(Ok(Event::InitApply(n))) => {
                        let n = RemoteNode::from_node(&n, &self.keys);
                        listing.get_or_insert_with(HashMap::new).insert(n.name.clone(), n);
                    }
                    Some(Ok(Event::InitDone)) => {
                        store = listing.take().unwrap_or_default();
                        if !listed {
                            tracing::info!(cluster = %self.cluster, device = %self.device, nodes = store.len(), "remote nodes listed");
                        }
                        listed = true;
                        due = Some(Instant::now());
                    }
                    Some(Ok(ev @ (Event::Apply(_) | Event::Delete(_)))) => {
                        let changed = match ev {
                            Event::Apply(n) => {
                                let n = RemoteNode::from_node(&n, &self.keys);
                                let same = store.get(&n.name) == Some(&n);
                                if !same {
                                    store.insert(n.name.clone(), n);
                                }
                                !same
                            }
                            Event::Delete(n) => store.remove(n.metadata.name.as_deref().unwrap_or_default()).is_some(),
                            _ => false,
                        };
                        if listed && changed {
                            // At once after a quiet spell; else with the next gathered apply.
                            let earliest = last_apply.map_or_else(Instant::now, |t| t + DEBOUNCE);
                            due.get_or_insert_with(|| earliest.max(Instant::now()));
                        }
                    }
                    Some(Err(e)) => {
                        let counter = match &e {
                            watcher::Error::InitialListFailed(_) => &status.list_failures,
                            _ => &status.watch_failures,
                        };
                        counter.fetch_add(1, Relaxed);
                        let error = crate::error_chain(&e);
                        tracing::warn!(cluster = %self.cluster, device = %self.device, error = %error, "remote node watch failed; retrying with backoff");
                        status.set_problem(Some(format!("watching the remote's nodes: {error}")));
                    }
                },
                _ = kick.notified(), if listed => {
                    due = Some(Instant::now());
                }
                _ = sleep_until(hold_wake), if hold_ends.is_some() => {
                    hold_ends = None;
                    due.get_or_insert_with(Instant::now);
                }
                _ = sleep_until(wake), if due.is_some() => {
                    due = None;
                    last_apply = Some(Instant::now());
                    let nodes = store.values().filter(|n| self.skip_node.as_ref() != Some(&n.name));
                    let plan = plan_peers(nodes, &self.subnets, self.own_key);
                    let (peers, skipped) = (plan.peers, plan.skipped);
                    for s in skipped.iter().filter(|s| !last_skipped.contains(s)) {
                        tracing::warn!(cluster = %self.cluster, device = %self.device, node = %s.node, reason = %s.reason, "skipping node");
                        status.skipped_total[s.reason.kind().index()].fetch_add(1, Relaxed);
                    }
                    for r in plan.refused.iter().filter(|r| !last_refused.contains(r)) {
                        tracing::warn!(cluster = %self.cluster, device = %self.device, node = %r.node, prefix = %r.prefix, reason = %r.reason, "refusing an extraCIDRs claim");
                        status.refused_total[r.reason.kind().index()].fetch_add(1, Relaxed);
                    }
                    *status.skipped_now.lock().unwrap_or_else(|e| e.into_inner()) = skipped.clone();
                    last_skipped = skipped;
                    last_refused = plan.refused;
                    let held = hold.plan(&sink.current_keys(), &peers, Instant::now());
                    let was_held = status.held_removals.swap(held.keys.len(), Relaxed);
                    if !held.keys.is_empty() && was_held == 0 {
                        tracing::warn!(cluster = %self.cluster, device = %self.device, held = held.keys.len(), wanted = peers.len(),
                            grace = ?self.mass_removal_grace, "more than half of the remote's peers would go at once; holding their removal");
                    } else if held.keys.is_empty() && was_held > 0 {
                        tracing::info!(cluster = %self.cluster, device = %self.device, released = was_held, "held peer removals resolved");
                    }
                    hold_ends = held.until;
                    match sink.apply(&peers, &held.keys) {
                        Ok(()) => {
                            status.set_problem(None);
                            status.syncs_ok.fetch_add(1, Relaxed);
                            status.peers.store(peers.len() + held.keys.len(), Relaxed);
                            if !status.initial_list_applied.swap(true, Relaxed) {
                                tracing::info!(cluster = %self.cluster, device = %self.device, peers = peers.len(), "initial peer set applied");
                            } else {
                                tracing::debug!(cluster = %self.cluster, device = %self.device, peers = peers.len(), "peers applied");
                            }
                            retry.reset();
                        }
                        Err(e) => {
                            status.syncs_failed.fetch_add(1, Relaxed);
                            status.requeues.fetch_add(1, Relaxed);
                            let delay = retry.next_delay();
                            let error = crate::error_chain(&e);
                            tracing::error!(cluster = %self.cluster, device = %self.device, error = %error, retry_in = ?delay, "applying peers failed");
                            status.set_problem(Some(format!("applying peers: {error}")));
                            due = Some(Instant::now() + delay);
                        }
                    }
                }
                _ = async { resync.as_mut().expect("guarded").tick().await }, if resync.is_some() && listed => {
                    due.get_or_insert_with(Instant::now);
                }
            }
        }
    }
}

fn watcher(
    api: Api<Node>,
) -> impl futures::Stream<Item = Result<Event<Node>, watcher::Error>> + Send {
    let config = watcher::Config::default().page_size(PAGE_SIZE);
    watcher::watcher(api, config)
        .backoff(Backoff::new(Duration::from_millis(250), WATCH_RETRY_MAX).jittered())
}

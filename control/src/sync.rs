//! One loop per remote cluster: a reflector over the remote's Nodes; after the initial
//! list, and after every change (debounced), on `resyncPeriod` and after a failed apply
//! (with backoff), the whole desired peer set goes to the tunnel through [`PeerSink`].
//! Nothing is applied before the initial list, so restored peers are never removed early.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use ip_network::IpNetwork;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector as reflect};
use tokio::time::{Instant, sleep_until};

use crate::backoff::Backoff;
use crate::peers::{AnnotationKeys, DesiredPeer, SkipKind, Skipped, desired_peers};

/// Where a remote's desired peers go (the binary implements it over the dataplane).
pub trait PeerSink: Send + Sync + 'static {
    /// Make the tunnel's peers exactly `peers`.
    fn apply(&self, peers: &[DesiredPeer]) -> Result<(), ApplyError>;
}

/// The tunnel refused a peer set; nothing of it was applied. The sync loop retries with
/// backoff.
#[derive(Debug, thiserror::Error)]
#[error("the tunnel refused the peer set")]
pub struct ApplyError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Changes arriving within this window are applied together.
const DEBOUNCE: Duration = Duration::from_millis(200);
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

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
    /// Nodes skipped as malformed, by [`SkipKind::index`] (counted per sync in which they
    /// were skipped and had changed).
    pub skipped_total: [AtomicU64; SkipKind::COUNT],
    /// The nodes skipped in the last sync.
    pub skipped_now: Mutex<Vec<Skipped>>,
}

/// Static inputs of one remote's loop.
pub struct RemoteSync {
    /// Remote cluster name (for logs).
    pub cluster: String,
    /// Our device for it (for logs).
    pub device: String,
    /// Keys under which remote nodes advertise to our (local) cluster.
    pub keys: AnnotationKeys,
    /// The remote's pod subnet.
    pub pod_subnet: IpNetwork,
    /// Full re-apply period (zero = off).
    pub resync: Duration,
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
        let (store, writer) = reflector::store::<Node>();
        let events = reflect(writer, watcher(Api::<Node>::all(client))).boxed();
        self.drive(events, store, sink, status, shutdown).await;
    }

    async fn drive(
        self,
        mut events: futures::stream::BoxStream<'static, Result<Event<Node>, watcher::Error>>,
        store: Store<Node>,
        sink: Arc<dyn PeerSink>,
        status: Arc<SyncStatus>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut listed = false;
        let mut due: Option<Instant> = None;
        let mut retry = Backoff::new(RETRY_MIN, RETRY_MAX);
        let mut resync = (!self.resync.is_zero())
            .then(|| tokio::time::interval_at(Instant::now() + self.resync, self.resync));
        let mut last_skipped: Vec<Skipped> = Vec::new();
        loop {
            let wake = due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = &mut shutdown => return,
                ev = events.next() => match ev {
                    None => return,
                    Some(Ok(Event::InitDone)) => {
                        if !listed {
                            tracing::info!(cluster = %self.cluster, device = %self.device, nodes = store.state().len(), "remote nodes listed");
                        }
                        listed = true;
                        due = Some(Instant::now());
                    }
                    Some(Ok(Event::Apply(_) | Event::Delete(_))) if listed => {
                        due.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        let counter = match &e {
                            watcher::Error::InitialListFailed(_) => &status.list_failures,
                            _ => &status.watch_failures,
                        };
                        counter.fetch_add(1, Relaxed);
                        tracing::warn!(cluster = %self.cluster, device = %self.device, error = %e, "remote node watch failed; retrying with backoff");
                    }
                },
                _ = sleep_until(wake), if due.is_some() => {
                    due = None;
                    let nodes = store.state();
                    let (peers, skipped) = desired_peers(nodes.iter().map(|n| &**n), &self.keys, &self.pod_subnet);
                    for s in skipped.iter().filter(|s| !last_skipped.contains(s)) {
                        tracing::warn!(cluster = %self.cluster, device = %self.device, node = %s.node, reason = %s.reason, "skipping malformed node");
                        status.skipped_total[s.reason.kind().index()].fetch_add(1, Relaxed);
                    }
                    *status.skipped_now.lock().unwrap_or_else(|e| e.into_inner()) = skipped.clone();
                    last_skipped = skipped;
                    match sink.apply(&peers) {
                        Ok(()) => {
                            status.syncs_ok.fetch_add(1, Relaxed);
                            status.peers.store(peers.len(), Relaxed);
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
                            tracing::error!(cluster = %self.cluster, device = %self.device, error = %crate::error_chain(&e), retry_in = ?delay, "applying peers failed");
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
    watcher::watcher(api, watcher::Config::default()).default_backoff()
}

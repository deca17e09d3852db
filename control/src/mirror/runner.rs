//! What every mirror of a remote's objects does alike: a watch of the remote's objects
//! (label-selected) into a compact cache, queuing the key (`ns/name`) of every change and,
//! on a relist, of whatever vanished meanwhile; one worker reconciling keys from the queue
//! with client-go's backoff (`queue.rs`); after the first list, the stale local copies
//! collected (when asked); every `resync`, every key again. A remote outage leaves the
//! local copies as they are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;

use super::metrics::{RunnerMetrics, WatchEvent};
use super::queue::{Outcome, WorkQueue};
use crate::backoff::Backoff;

/// One kind of mirrored object.
pub trait Mirrored: Send + Sync + 'static {
    /// The remote kind.
    type Remote: kube::Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static;
    /// What is kept of one.
    type Compact: Clone + PartialEq + Send + Sync + 'static;

    /// The kept part of `remote`.
    fn compact(&self, remote: &Self::Remote) -> Self::Compact;

    /// Makes the local copy of `key` match `source` (`None`: the remote object is gone).
    fn reconcile(
        &self,
        key: &str,
        source: Option<Self::Compact>,
    ) -> impl std::future::Future<Output = Result<(), kube::Error>> + Send;

    /// Deletes local copies whose key is not among `keys` (the first list).
    fn collect_stale(&self, keys: Vec<String>) -> impl std::future::Future<Output = ()> + Send;
}

/// How a runner is set up.
pub struct RunnerConfig {
    /// The watcher's name for metrics (`<cluster>-serviceWatcher` …).
    pub watcher: String,
    /// The kind watched, for metrics (`service`, `endpointslice`).
    pub kind: &'static str,
    /// The queue's name for metrics (`<cluster>-service` …).
    pub queue: String,
    /// The runner's metrics.
    pub metrics: RunnerMetrics,
    /// The remote (logs).
    pub remote: String,
    /// What it mirrors (logs: "services", "endpointslices").
    pub what: &'static str,
    /// The label selector of the remote objects.
    pub selector: String,
    /// Collect stale copies after the first list.
    pub gc_at_start: bool,
    /// Queue every key again this often (zero: never).
    pub resync: Duration,
}

type Cache<C> = Arc<Mutex<HashMap<String, C>>>;

fn key_of<K: kube::Resource>(o: &K) -> String {
    format!(
        "{}/{}",
        o.meta().namespace.as_deref().unwrap_or_default(),
        o.meta().name.as_deref().unwrap_or_default()
    )
}

/// Runs `mirrored` over the remote objects of `remote` until `shutdown`.
pub async fn run<M: Mirrored>(
    config: RunnerConfig,
    mirrored: Arc<M>,
    remote: kube::Client,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let cache: Cache<M::Compact> = Arc::default();
    let queue = config.metrics.queue(config.queue.clone());
    let worker = tokio::spawn(work(
        config.remote.clone(),
        Arc::clone(&mirrored),
        Arc::clone(&cache),
        Arc::clone(&queue),
    ));
    tokio::select! {
        _ = shutdown => {}
        _ = watch(&config, &mirrored, remote, &cache, &queue) => {}
    }
    worker.abort();
}

async fn watch<M: Mirrored>(
    config: &RunnerConfig,
    mirrored: &Arc<M>,
    remote: kube::Client,
    cache: &Cache<M::Compact>,
    queue: &WorkQueue,
) {
    let seen = config.metrics.watcher(config.watcher.clone(), config.kind);
    let wc = watcher::Config::default().labels(&config.selector);
    let mut events = watcher::watcher(Api::<M::Remote>::all(remote), wc)
        .backoff(Backoff::new(Duration::from_millis(250), Duration::from_secs(2)).jittered())
        .boxed();
    let lock = |c: &Cache<M::Compact>| c.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut listing: Option<HashMap<String, M::Compact>> = None;
    let mut listed_once = false;
    let mut resync = (!config.resync.is_zero()).then(|| tokio::time::interval(config.resync));
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                None => return,
                Some(Ok(Event::Init)) => listing = Some(HashMap::new()),
                Some(Ok(Event::InitApply(o))) => {
                    listing.get_or_insert_with(HashMap::new).insert(key_of(&o), mirrored.compact(&o));
                }
                Some(Ok(Event::InitDone)) => {
                    let fresh = listing.take().unwrap_or_default();
                    let listed: Vec<String> = fresh.keys().cloned().collect();
                    // Everything listed, and whatever vanished while we were away.
                    let vanished: Vec<String> = {
                        let mut known = cache.lock().unwrap_or_else(|e| e.into_inner());
                        let gone: Vec<String> = known.keys().filter(|k| !fresh.contains_key(*k)).cloned().collect();
                        // As an informer's relist reports them: new, still there, gone.
                        let events = fresh.keys()
                            .map(|k| if known.contains_key(k) { WatchEvent::Modified } else { WatchEvent::Added })
                            .chain(gone.iter().map(|_| WatchEvent::Deleted));
                        seen.saw(events, fresh.len());
                        *known = fresh;
                        gone
                    };
                    for k in listed.iter().chain(&vanished) {
                        queue.add(k);
                    }
                    if !listed_once {
                        listed_once = true;
                        tracing::info!(cluster = %config.remote, what = config.what, objects = listed.len(), "remote objects listed");
                        if config.gc_at_start {
                            mirrored.collect_stale(listed).await;
                        }
                    }
                }
                Some(Ok(Event::Apply(o))) => {
                    let (key, compact) = (key_of(&o), mirrored.compact(&o));
                    let (before, len) = {
                        let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
                        (c.insert(key.clone(), compact.clone()), c.len())
                    };
                    seen.saw([if before.is_some() { WatchEvent::Modified } else { WatchEvent::Added }], len);
                    if before != Some(compact) {
                        queue.add(&key);
                    }
                }
                Some(Ok(Event::Delete(o))) => {
                    let key = key_of(&o);
                    let len = {
                        let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
                        c.remove(&key);
                        c.len()
                    };
                    seen.saw([WatchEvent::Deleted], len);
                    queue.add(&key);
                }
                Some(Err(e)) => {
                    tracing::warn!(cluster = %config.remote, what = config.what, error = %crate::error_chain(&e), "watching the remote failed; retrying (local copies stay as they are)");
                }
            },
            _ = async { resync.as_mut().expect("guarded").tick().await }, if resync.is_some() && listed_once => {
                // An informer's resync: every object again, as a modification.
                let keys = lock(cache);
                seen.saw(keys.keys().map(|_| WatchEvent::Modified), keys.len());
                for k in keys.keys() {
                    queue.add(k);
                }
            }
        }
    }
}

async fn work<M: Mirrored>(
    remote: String,
    mirrored: Arc<M>,
    cache: Cache<M::Compact>,
    queue: Arc<WorkQueue>,
) {
    loop {
        let key = queue.next().await;
        let source = cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let outcome = match mirrored.reconcile(&key, source).await {
            Ok(()) => Outcome::Success,
            Err(e) => {
                tracing::warn!(cluster = %remote, key = %key, error = %e, "reconcile error");
                Outcome::Retry
            }
        };
        queue.done(&key, outcome);
    }
}

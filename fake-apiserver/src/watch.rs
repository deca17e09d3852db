//! The body of a `?watch=true` response: newline-delimited JSON watch events.
//!
//! A stream first sends its backlog (replayed history, or synthetic ADDEDs for
//! a watch from "now"), then live events as they are committed. It also sends
//! periodic BOOKMARKs when asked, ends cleanly at `timeoutSeconds` or server
//! shutdown, and ends *abruptly* (the connection is cut mid-body) when the
//! test calls `drop_watches`.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use futures::Stream;
use k8s_openapi::api::core::v1::Node;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::selector::Selector;
use crate::shared::{Shared, lock};
use crate::store::{EventType, Feed, StoredEvent};

/// What the client asked of its watch.
pub struct WatchRequest {
    /// Which nodes the client wants to hear about.
    pub selector: Selector,
    /// `allowWatchBookmarks=true`: send BOOKMARK events this often.
    pub bookmark_interval: Option<Duration>,
    /// `timeoutSeconds`: end the stream after this long.
    pub timeout: Option<Duration>,
    /// `sendInitialEvents=true`: close the backlog with an
    /// `k8s.io/initial-events-end` bookmark (streaming lists).
    pub initial_events_end: bool,
}

/// Everything the stream needs, threaded through `futures::stream::unfold`.
struct WatchState {
    backlog: VecDeque<Arc<StoredEvent>>,
    initial_events_end: bool,
    live: broadcast::Receiver<Arc<StoredEvent>>,
    progress_rv: u64,
    selector: Selector,
    bookmarks: Option<Interval>,
    deadline: Option<Instant>,
    drops: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    shared: Arc<Shared>,
    finished: bool,
}

/// Builds the event stream of one watch.
pub fn event_stream(
    shared: &Arc<Shared>,
    request: WatchRequest,
    feed: Feed,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let bookmarks = request.bookmark_interval.map(|period| {
        let mut interval = tokio::time::interval_at(Instant::now() + period, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        interval
    });
    shared.open_watches.fetch_add(1, Ordering::SeqCst);
    let state = WatchState {
        backlog: feed.backlog.into(),
        initial_events_end: request.initial_events_end,
        live: feed.live,
        progress_rv: feed.start_rv,
        selector: request.selector,
        bookmarks,
        deadline: request.timeout.map(|t| Instant::now() + t),
        drops: shared.drops.subscribe(),
        shutdown: shared.shutdown.subscribe(),
        shared: Arc::clone(shared),
        finished: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let item = state.next_chunk().await?;
        Some((item, state))
    })
}

impl Drop for WatchState {
    fn drop(&mut self) {
        self.shared.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WatchState {
    /// The next chunk to send, or `None` to end the response cleanly.
    async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        if self.finished {
            return None;
        }
        while let Some(event) = self.backlog.pop_front() {
            if let Some(line) = self.render(&event) {
                return Some(Ok(line));
            }
        }
        if std::mem::take(&mut self.initial_events_end) {
            return Some(Ok(bookmark_line(self.progress_rv, true)));
        }
        loop {
            tokio::select! {
                biased;
                _ = self.drops.changed() => {
                    // An error from the body stream makes hyper cut the
                    // connection without the terminating chunk.
                    self.finished = true;
                    return Some(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "watch dropped")));
                }
                _ = self.shutdown.changed() => return None,
                () = sleep_until(self.deadline) => return None,
                received = self.live.recv() => match received {
                    Ok(event) => {
                        self.progress_rv = self.progress_rv.max(event.rv);
                        if let Some(line) = self.render(&event) {
                            return Some(Ok(line));
                        }
                    }
                    // Too slow a reader: end the watch, as the apiserver does.
                    // The client resumes from the last event it received.
                    Err(broadcast::error::RecvError::Lagged(_)) => return None,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                () = next_tick(&mut self.bookmarks) => {
                    // While the store is locked no event can be committed, so
                    // if none is queued for us we are current with its RV.
                    let store = lock(&self.shared.store);
                    if self.live.is_empty() {
                        self.progress_rv = self.progress_rv.max(store.rv());
                    }
                    drop(store);
                    return Some(Ok(bookmark_line(self.progress_rv, false)));
                }
            }
        }
    }

    /// The wire line for `event`, or `None` if the selector hides it.
    fn render(&self, event: &StoredEvent) -> Option<Bytes> {
        let (kind, object) = visible_as(&self.selector, event)?;
        Some(line(&json!({ "type": kind.as_str(), "object": object })))
    }
}

/// How `event` looks through `selector`: a node that starts matching is
/// ADDED, one that stops matching is DELETED (with its previous state).
fn visible_as(selector: &Selector, event: &StoredEvent) -> Option<(EventType, Node)> {
    if selector.is_everything() {
        return Some((event.kind, event.object.clone()));
    }
    let now = selector.matches(&event.object);
    let before = event.prev.as_ref().is_some_and(|p| selector.matches(p));
    match (event.kind, before, now) {
        (EventType::Added | EventType::Deleted, _, true) => {
            Some((event.kind, event.object.clone()))
        }
        (EventType::Modified, true, true) => Some((EventType::Modified, event.object.clone())),
        (EventType::Modified, false, true) => Some((EventType::Added, event.object.clone())),
        (EventType::Modified, true, false) => {
            let mut gone = event.prev.clone()?;
            gone.metadata.resource_version = Some(event.rv.to_string());
            Some((EventType::Deleted, gone))
        }
        _ => None,
    }
}

/// A BOOKMARK event: a Node carrying only `metadata.resourceVersion`.
fn bookmark_line(rv: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    line(&json!({
        "type": "BOOKMARK",
        "object": { "kind": "Node", "apiVersion": "v1", "metadata": metadata },
    }))
}

/// `value` as one newline-terminated JSON line.
pub fn line(value: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn next_tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(role: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n".into()),
                labels: Some([("role".to_string(), role.to_string())].into()),
                resource_version: Some("1".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn modified(from: &str, to: &str) -> StoredEvent {
        let mut object = node(to);
        object.metadata.resource_version = Some("2".into());
        StoredEvent {
            rv: 2,
            kind: EventType::Modified,
            object,
            prev: Some(node(from)),
        }
    }

    #[test]
    fn selector_transitions() {
        let sel = Selector::parse(Some("role=a"), None).unwrap();
        let kind = |e: &StoredEvent| visible_as(&sel, e).map(|(k, _)| k);
        assert_eq!(kind(&modified("a", "a")), Some(EventType::Modified));
        assert_eq!(kind(&modified("b", "a")), Some(EventType::Added));
        assert_eq!(kind(&modified("b", "c")), None);
        let (k, gone) = visible_as(&sel, &modified("a", "b")).unwrap();
        assert_eq!(k, EventType::Deleted);
        assert_eq!(gone.metadata.resource_version.as_deref(), Some("2"));
        assert_eq!(gone.metadata.labels.unwrap()["role"], "a");
    }

    #[test]
    fn bookmark_shape() {
        let v: Value = serde_json::from_slice(&bookmark_line(7, true)).unwrap();
        assert_eq!(v["type"], "BOOKMARK");
        assert_eq!(v["object"]["metadata"]["resourceVersion"], "7");
        assert_eq!(
            v["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
    }
}

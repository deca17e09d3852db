//! `kube::runtime::watcher` + `reflector` against the fake: initial sync,
//! live changes, resumption after dropped watches, 410 recovery, and
//! recovery from injected server errors.

mod common;

use std::time::Duration;

use common::*;
use fake_apiserver::{FakeApiServer, Options};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_nodes};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the test saw come out of the watcher stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Init,
    InitApply(String),
    InitDone,
    Apply(String),
    Delete(String),
    Error(String),
}

/// A running `reflector(watcher(..).default_backoff())` whose events are
/// forwarded to the test.
struct Watching {
    store: Store<Node>,
    events: mpsc::UnboundedReceiver<Seen>,
    task: JoinHandle<()>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn watch(server: &FakeApiServer) -> Watching {
    watch_with(server, watcher::Config::default())
}

fn watch_with(server: &FakeApiServer, config: watcher::Config) -> Watching {
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watch_nodes(nodes_api(server), config).default_backoff(),
    );
    let (tx, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let seen = match item {
                Ok(Event::Init) => Seen::Init,
                Ok(Event::InitApply(n)) => Seen::InitApply(n.name_any()),
                Ok(Event::InitDone) => Seen::InitDone,
                Ok(Event::Apply(n)) => Seen::Apply(n.name_any()),
                Ok(Event::Delete(n)) => Seen::Delete(n.name_any()),
                Err(e) => Seen::Error(e.to_string()),
            };
            if tx.send(seen).is_err() {
                break;
            }
        }
    });
    Watching {
        store,
        events,
        task,
    }
}

impl Watching {
    /// Consumes events up to and including the first equal to `want`;
    /// returns everything consumed.
    async fn until(&mut self, want: Seen) -> Vec<Seen> {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(WAIT, async {
            while let Some(event) = self.events.recv().await {
                seen.push(event.clone());
                if event == want {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "waiting for {want:?}; saw {seen:?}");
        seen
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.store.state().iter().map(|n| n.name_any()).collect();
        names.sort();
        names
    }

    fn get(&self, name: &str) -> Option<Node> {
        self.store.get(&ObjectRef::new(name)).map(|n| (*n).clone())
    }
}

fn count(log: &[String], prefix: &str, contains: &str) -> usize {
    log.iter()
        .filter(|r| r.starts_with(prefix) && r.contains(contains))
        .count()
}

#[tokio::test]
async fn initial_sync_then_add_modify_delete() {
    let server = server(&[node("n1", &[]), node("n2", &[])]).await;
    let mut w = watch(&server);

    let init = w.until(Seen::InitDone).await;
    assert_eq!(
        init,
        [
            Seen::Init,
            Seen::InitApply("n1".into()),
            Seen::InitApply("n2".into()),
            Seen::InitDone
        ]
    );
    assert_eq!(w.names(), ["n1", "n2"]);

    server.upsert_node(node("n3", &[]));
    w.until(Seen::Apply("n3".into())).await;
    let mut n1 = server.node("n1").unwrap();
    n1.annotations_mut().insert("k".into(), "v".into());
    server.upsert_node(n1);
    w.until(Seen::Apply("n1".into())).await;
    assert_eq!(annotations(&w.get("n1").unwrap())["k"], "v");
    assert!(server.delete_node("n2"));
    w.until(Seen::Delete("n2".into())).await;
    assert_eq!(w.names(), ["n1", "n3"]);

    // The watcher listed with limit=500 and got everything in one page.
    let log = server.requests();
    assert!(log.iter().any(|r| r.contains("limit=500")), "{log:?}");
    assert_eq!(
        count(&log, "GET /api/v1/nodes?", "watch=true"),
        1,
        "{log:?}"
    );
}

#[tokio::test]
async fn dropped_watch_resumes_without_relist() {
    let server = server(&[node("n1", &[])]).await;
    let mut w = watch(&server);
    w.until(Seen::InitDone).await;
    // InitDone comes before the watch request: wait for it to be streaming.
    eventually("watch open", || server.open_watches() == 1).await;

    server.drop_watches();
    eventually("second watch", || {
        count(&server.requests(), "GET", "watch=true") == 2
    })
    .await;
    server.upsert_node(node("n2", &[]));
    let after = w.until(Seen::Apply("n2".into())).await;
    // kube-client treats the cut connection as an EOF: the watcher resumes
    // from its last resourceVersion without surfacing an error or re-listing.
    assert_eq!(after, [Seen::Apply("n2".into())]);
    let log = server.requests();
    assert_eq!(count(&log, "GET /api/v1/nodes?", "limit="), 1, "{log:?}");

    // Shutdown ends the open watch and closes keep-alive connections promptly.
    let started = std::time::Instant::now();
    within("shutdown", server.shutdown()).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.open_watches(), 0);
}

#[tokio::test]
async fn expired_resource_version_forces_relist() {
    // Long bookmark interval: a bookmark between compact() and the resumed
    // watch would hand the watcher the post-compaction resourceVersion.
    let opts = Options {
        bookmark_interval: Duration::from_secs(60),
        ..Options::default()
    };
    let server = server_with(opts, &[node("n1", &[]), node("n2", &[])]).await;
    let mut w = watch(&server);
    w.until(Seen::InitDone).await;
    server.upsert_node(node("n3", &[]));
    w.until(Seen::Apply("n3".into())).await;

    server.compact();
    server.drop_watches();
    // Made while no watch is open: only the re-list can reveal it.
    assert!(server.delete_node("n1"));

    // Resuming from the last resourceVersion gets 410; the watcher re-lists.
    let recovery = w.until(Seen::InitDone).await;
    assert!(
        matches!(recovery.first(), Some(Seen::Error(e)) if e.contains("Expired")),
        "{recovery:?}"
    );
    assert!(recovery.contains(&Seen::Init), "{recovery:?}");
    assert_eq!(w.names(), ["n2", "n3"]);

    server.upsert_node(node("n4", &[]));
    w.until(Seen::Apply("n4".into())).await;
    assert_eq!(w.names(), ["n2", "n3", "n4"]);
    let log = server.requests();
    assert_eq!(count(&log, "GET /api/v1/nodes?", "limit="), 2, "{log:?}");
}

#[tokio::test]
async fn injected_errors_are_retried_with_backoff() {
    let server = server(&[node("n1", &[])]).await;
    server.fail_next(2, 500);
    let mut w = watch(&server);
    let startup = w.until(Seen::InitDone).await;
    let errors = startup
        .iter()
        .filter(|s| matches!(s, Seen::Error(_)))
        .count();
    assert_eq!(errors, 2, "{startup:?}");
    assert_eq!(w.names(), ["n1"]);
    eventually("watch open", || server.open_watches() == 1).await;

    // A failure on re-watch (after a dropped connection) is retried too.
    // (503 is retried inside kube's client before the watcher sees it.)
    server.fail_next(1, 503);
    server.drop_watches();
    server.upsert_node(node("n2", &[]));
    w.until(Seen::Apply("n2".into())).await;
    assert_eq!(w.names(), ["n1", "n2"]);
}

#[tokio::test]
async fn streaming_list_initial_sync() {
    let server = server(&[node("n1", &[]), node("n2", &[])]).await;
    let mut w = watch_with(&server, watcher::Config::default().streaming_lists());
    let init = w.until(Seen::InitDone).await;
    assert_eq!(
        init,
        [
            Seen::Init,
            Seen::InitApply("n1".into()),
            Seen::InitApply("n2".into()),
            Seen::InitDone
        ]
    );
    server.upsert_node(node("n3", &[]));
    w.until(Seen::Apply("n3".into())).await;
    assert_eq!(w.names(), ["n1", "n2", "n3"]);
    let log = server.requests();
    assert_eq!(
        count(&log, "GET /api/v1/nodes?", "sendInitialEvents=true"),
        1,
        "{log:?}"
    );
    assert_eq!(count(&log, "GET /api/v1/nodes?", "limit="), 0, "{log:?}");
}

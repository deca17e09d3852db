//! The sync loop when the remote misbehaves: most of its nodes vanish at once, its API
//! server goes away and comes back.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use common::*;
use control::config::{Subnets, parse_cidr};
use control::http_metrics::RequestCounts;
use control::peers::AnnotationKeys;
use control::sync::{PeerSink, RemoteSync, SyncStatus};
use fake_apiserver::FakeApiServer;

fn key(n: u8) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([n; 32])
}

fn sync(grace: Duration) -> RemoteSync {
    RemoteSync {
        cluster: "gcp".into(),
        device: "wireguard.gcp".into(),
        keys: AnnotationKeys::for_cluster("aws"),
        subnets: Subnets::pod_only(parse_cidr("10.4.0.0/16").unwrap()),
        skip_node: None,
        resync: Duration::ZERO,
        own_key: None,
        mass_removal_grace: grace,
    }
}

/// Nodes n<i> for `ids`, each advertised with key i, endpoint 192.168.0.i and pod CIDR
/// 10.4.i.0/24.
fn advertise(s: &FakeApiServer, ids: std::ops::RangeInclusive<u8>) {
    for i in ids {
        s.upsert_node(advertised(
            &format!("n{i}"),
            &format!("192.168.0.{i}"),
            &format!("10.4.{i}.0/24"),
            &key(i),
        ));
    }
}

/// A sync loop against a fake remote, recording what it applies.
struct Syncing {
    sink: Arc<Recorder>,
    status: Arc<SyncStatus>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Syncing {
    async fn start(s: &FakeApiServer, token: &std::path::Path, grace: Duration) -> Self {
        let client =
            control::remote::remote_client(&token_access(s, token), &RequestCounts::default())
                .await
                .unwrap();
        let sink = Arc::new(Recorder::default());
        let status = Arc::new(SyncStatus::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(sync(grace).run(
            client,
            sink.clone() as Arc<dyn PeerSink>,
            Arc::clone(&status),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            sink,
            status,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

#[tokio::test]
async fn most_nodes_vanishing_at_once_is_held_for_the_grace_period() {
    let (s, tok) = server("t").await;
    advertise(&s, 1..=5);
    let grace = Duration::from_secs(3);
    let run = Syncing::start(&s, &tok, grace).await;
    let (sink, status) = (&run.sink, &run.status);
    eventually("all five", || {
        sink.last_nodes().is_some_and(|n| n.len() == 5)
    })
    .await;
    // Four of five lose our annotations (credentials for the wrong cluster, say), and a
    // new node appears: the new one is added at once, the four removals wait.
    for i in 2..=5u8 {
        s.upsert_node(node(
            &format!("n{i}"),
            &format!("192.168.0.{i}"),
            &format!("10.4.{i}.0/24"),
            &[],
        ));
    }
    s.upsert_node(advertised("n6", "192.168.0.6", "10.4.6.0/24", &key(6)));
    let held_at = Instant::now();
    eventually("n6 added, the four held", || {
        sink.last_nodes()
            == Some(
                vec!["n1", "n2", "n3", "n4", "n5", "n6"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
            )
            && status.held_removals.load(Relaxed) == 4
    })
    .await;
    // The grace period ends: the removals go through, by themselves.
    eventually("released", || {
        sink.last_nodes() == Some(vec!["n1".into(), "n6".into()])
    })
    .await;
    assert!(
        held_at.elapsed() >= grace - Duration::from_millis(500),
        "released after {:?}",
        held_at.elapsed()
    );
    assert_eq!(status.held_removals.load(Relaxed), 0);
    // A single deletion applies at once.
    s.delete_node("n6");
    eventually("n6 removed at once", || {
        sink.last_nodes() == Some(vec!["n1".into()])
    })
    .await;
    run.stop().await;
}

#[tokio::test]
async fn nodes_coming_back_end_the_hold() {
    let (s, tok) = server("t").await;
    advertise(&s, 1..=4);
    let run = Syncing::start(&s, &tok, Duration::from_secs(300)).await;
    let (sink, status) = (&run.sink, &run.status);
    eventually("all four", || {
        sink.last_nodes().is_some_and(|n| n.len() == 4)
    })
    .await;
    for i in 1..=4u8 {
        s.delete_node(&format!("n{i}"));
    }
    eventually("held", || status.held_removals.load(Relaxed) == 4).await;
    assert_eq!(sink.last_nodes().unwrap().len(), 4);
    advertise(&s, 1..=4);
    eventually("resolved", || status.held_removals.load(Relaxed) == 0).await;
    assert_eq!(sink.last_nodes().unwrap().len(), 4);
    run.stop().await;
}

#[tokio::test]
async fn watches_resume_within_seconds_of_the_api_answering_again() {
    let (s, tok) = server("t").await;
    s.upsert_node(advertised("n1", "192.168.0.1", "10.4.1.0/24", &key(1)));
    let run = Syncing::start(&s, &tok, Duration::ZERO).await;
    let sink = &run.sink;
    eventually("listed", || sink.last_nodes() == Some(vec!["n1".into()])).await;
    // A 12 s outage: every request fails, open watches are cut.
    s.fail_next(usize::MAX, 503);
    s.drop_watches();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let attempts = s
        .requests()
        .iter()
        .filter(|r| r.contains("watch=true"))
        .count();
    assert!(
        attempts > 2,
        "the watch was retried during the outage ({attempts} attempts)"
    );
    // The API answers again and a node changes: seen within 5 s.
    s.fail_next(0, 200);
    let back = Instant::now();
    s.upsert_node(advertised("n2", "192.168.0.2", "10.4.2.0/24", &key(2)));
    eventually("n2 seen", || {
        sink.last_nodes() == Some(vec!["n1".into(), "n2".into()])
    })
    .await;
    let took = back.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "watches resumed after {took:?}"
    );
    eprintln!("resumed {took:?} after the outage");
    run.stop().await;
}

#[tokio::test]
async fn a_large_remote_is_listed_in_pages_and_applied_whole() {
    let (s, tok) = server("t").await;
    let n = 250u32;
    for i in 0..n {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        k[31] = 1;
        use base64::Engine as _;
        s.upsert_node(advertised(
            &format!("n{i:03}"),
            &format!("192.168.{}.{}", i / 250, i % 250 + 1),
            &format!("10.4.{}.{}/32", i / 256, i % 256),
            &base64::engine::general_purpose::STANDARD.encode(k),
        ));
    }
    let run = Syncing::start(&s, &tok, Duration::ZERO).await;
    let sink = &run.sink;
    eventually("all nodes", || {
        sink.last_nodes().is_some_and(|v| v.len() == n as usize)
    })
    .await;
    // One apply for the whole list, after its last page: never a partial set.
    assert_eq!(sink.0.lock().unwrap().len(), 1);
    let lists: Vec<String> = s
        .requests()
        .into_iter()
        .filter(|r| r.contains("/api/v1/nodes?") && !r.contains("watch=true"))
        .collect();
    assert_eq!(lists.len(), 3, "{lists:?}");
    assert!(lists.iter().all(|r| r.contains("limit=100")), "{lists:?}");
    assert_eq!(lists.iter().filter(|r| r.contains("continue=")).count(), 2);
    run.stop().await;
}

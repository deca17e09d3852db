//! The controller's Kubernetes side against the in-repo fake API server (real HTTP, real
//! kube::Client): remote clients, the sync loop, and the advertiser.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use control::advertise::{self, Advert, AdvertStatus};
use control::config::{RemoteAccess, Subnets, parse_cidr};
use control::http_metrics::RequestCounts;
use control::peers::AnnotationKeys;
use control::sync::{PeerSink, RemoteSync, SyncStatus};
use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use std::sync::atomic::Ordering::Relaxed;

#[tokio::test]
async fn token_client_is_counted_and_refused_with_a_bad_token() {
    let (s, tok) = server("secret").await;
    let counts = RequestCounts::default();
    let client = control::remote::remote_client(&token_access(&s, &tok), &counts)
        .await
        .unwrap();
    let nodes: Api<Node> = Api::all(client);
    nodes.list(&Default::default()).await.unwrap();
    let host = s.addr().to_string();
    assert!(
        counts
            .snapshot()
            .contains(&((host.clone(), "200".into(), "GET".into()), 1)),
        "{:?}",
        counts.snapshot()
    );

    std::fs::write(&tok, "wrong").unwrap();
    let client = control::remote::remote_client(&token_access(&s, &tok), &counts)
        .await
        .unwrap();
    let err = Api::<Node>::all(client)
        .list(&Default::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("401") || err.to_string().to_lowercase().contains("unauthorized"),
        "{err}"
    );
    assert!(
        counts
            .snapshot()
            .iter()
            .any(|((_, code, _), _)| code == "401")
    );

    let missing = RemoteAccess::Token {
        api_url: s.url(),
        ca_url: "x".into(),
        token_path: "/nonexistent/token".into(),
    };
    assert!(
        control::remote::remote_client(&missing, &counts)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn sync_applies_after_the_initial_list_and_follows_changes() {
    let (s, tok) = server("t").await;
    s.upsert_node(advertised("gcp1", "192.168.0.3", "10.4.1.0/24", KEY1));
    s.upsert_node(advertised("gcp2", "192.168.0.4", "10.4.2.0/24", KEY2));
    s.upsert_node(node("plain", "192.168.0.9", "10.4.9.0/24", &[]));
    let counts = RequestCounts::default();
    let client = control::remote::remote_client(&token_access(&s, &tok), &counts)
        .await
        .unwrap();
    let sink = Arc::new(Recorder::default());
    let status = Arc::new(SyncStatus::default());
    let sync = RemoteSync {
        cluster: "gcp".into(),
        device: "wireguard.gcp".into(),
        keys: AnnotationKeys::for_cluster("aws"),
        subnets: Subnets::pod_only(parse_cidr("10.4.0.0/16").unwrap()),
        skip_node: None,
        resync: Duration::ZERO,
        own_key: None,
        mass_removal_grace: Duration::ZERO,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sync.run(
        client,
        sink.clone() as Arc<dyn PeerSink>,
        Arc::clone(&status),
        async {
            let _ = stop_rx.await;
        },
    ));

    eventually("initial apply", || {
        sink.last_nodes() == Some(vec!["gcp1".into(), "gcp2".into()])
    })
    .await;
    assert!(status.initial_list_applied.load(Relaxed));
    let first = sink.0.lock().unwrap()[0].clone();
    assert_eq!(first[0].endpoint.to_string(), "192.168.0.3:51820");
    assert_eq!(first[0].persistent_keepalive, Duration::from_secs(25));

    // A deleted node loses its peer.
    s.delete_node("gcp2");
    eventually("gcp2 removed", || {
        sink.last_nodes() == Some(vec!["gcp1".into()])
    })
    .await;
    // A malformed node is skipped and counted; the others still apply.
    s.upsert_node(node(
        "bad",
        "192.168.0.5",
        "10.4.5.0/24",
        &[
            ("aws.wireguard.semaphore.uw.io/pubKey", "nope"),
            (
                "aws.wireguard.semaphore.uw.io/endpoint",
                "192.168.0.5:51820",
            ),
        ],
    ));
    s.upsert_node(advertised("gcp2", "192.168.0.4", "10.4.2.0/24", KEY2));
    eventually("gcp2 back despite the malformed node", || {
        sink.last_nodes() == Some(vec!["gcp1".into(), "gcp2".into()])
    })
    .await;
    assert_eq!(
        status.skipped_total[1].load(Relaxed),
        1,
        "invalid_public_key"
    );
    // A node that loses its annotations loses its peer.
    s.upsert_node(node("gcp1", "192.168.0.3", "10.4.1.0/24", &[]));
    eventually("gcp1 removed", || {
        sink.last_nodes() == Some(vec!["gcp2".into()])
    })
    .await;
    // Watch failures are counted, and the loop recovers.
    s.fail_next(2, 500);
    s.drop_watches();
    s.upsert_node(advertised("gcp1", "192.168.0.3", "10.4.1.0/24", KEY1));
    eventually("recovered after injected failures", || {
        sink.last_nodes() == Some(vec!["gcp1".into(), "gcp2".into()])
    })
    .await;
    assert!(status.watch_failures.load(Relaxed) + status.list_failures.load(Relaxed) >= 1);

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn advertiser_patches_and_reasserts() {
    let (s, tok) = server("local").await;
    s.upsert_node(node("aws1", "fd00::1", "10.2.1.0/24", &[("other", "x")]));
    let counts = RequestCounts::default();
    let client = control::remote::remote_client(&token_access(&s, &tok), &counts)
        .await
        .unwrap();
    let status = Arc::new(AdvertStatus::default());
    let (adverts_tx, adverts) =
        tokio::sync::watch::channel(vec![Advert::node("gcp", KEY1.into(), 51821, Vec::new())]);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(advertise::run(
        client,
        "aws1".into(),
        advertise::EndpointSource::default(),
        adverts,
        Arc::clone(&status),
        async {
            let _ = stop_rx.await;
        },
    ));
    let ann = |s: &FakeApiServer| -> BTreeMap<String, String> {
        s.node("aws1")
            .unwrap()
            .metadata
            .annotations
            .unwrap_or_default()
    };
    eventually("annotations", || {
        ann(&s)
            .get("gcp.wireguard.semaphore.uw.io/endpoint")
            .map(String::as_str)
            == Some("[fd00::1]:51821")
    })
    .await;
    assert_eq!(ann(&s)["gcp.wireguard.semaphore.uw.io/pubKey"], KEY1);
    assert_eq!(ann(&s)["other"], "x");
    assert!(status.advertised.load(Relaxed));
    // Someone removes ours: they come back.
    let mut n = s.node("aws1").unwrap();
    n.metadata
        .annotations
        .as_mut()
        .unwrap()
        .remove("gcp.wireguard.semaphore.uw.io/pubKey");
    s.upsert_node(n);
    eventually("re-asserted", || {
        ann(&s)
            .get("gcp.wireguard.semaphore.uw.io/pubKey")
            .map(String::as_str)
            == Some(KEY1)
    })
    .await;
    // Claims (`--advertise-cidrs`) are published, and withdrawn when they go.
    let claims_key = "gcp.wireguard.semaphore.uw.io/extraCIDRs";
    adverts_tx.send_modify(|a| a[0].extra_cidrs = vec!["10.96.0.0/12".parse().unwrap()]);
    eventually("claims published", || {
        ann(&s).get(claims_key).map(String::as_str) == Some("10.96.0.0/12")
    })
    .await;
    adverts_tx.send_modify(|a| a[0].extra_cidrs.clear());
    eventually("claims withdrawn", || !ann(&s).contains_key(claims_key)).await;
    assert_eq!(ann(&s)["gcp.wireguard.semaphore.uw.io/pubKey"], KEY1);
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

/// With `--endpoint-address external` the endpoint names the node's ExternalIP; with a
/// fixed address and port, those.
#[tokio::test]
async fn the_advertised_endpoint_follows_the_endpoint_source() {
    use k8s_openapi::api::core::v1::NodeAddress;
    for (source, want) in [
        (advertise::EndpointSource::ExternalIp, "203.0.113.9:51821"),
        (
            advertise::EndpointSource::Fixed("198.51.100.1".parse().unwrap(), Some(443)),
            "198.51.100.1:443",
        ),
    ] {
        let (s, tok) = server("local").await;
        let mut n = node("aws1", "10.0.0.1", "10.2.1.0/24", &[]);
        n.status
            .as_mut()
            .unwrap()
            .addresses
            .as_mut()
            .unwrap()
            .push(NodeAddress {
                type_: "ExternalIP".into(),
                address: "203.0.113.9".into(),
            });
        s.upsert_node(n);
        let client =
            control::remote::remote_client(&token_access(&s, &tok), &RequestCounts::default())
                .await
                .unwrap();
        let (_adverts_tx, adverts) =
            tokio::sync::watch::channel(vec![Advert::node("gcp", KEY1.into(), 51821, Vec::new())]);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(advertise::run(
            client,
            "aws1".into(),
            source,
            adverts,
            Arc::new(AdvertStatus::default()),
            async {
                let _ = stop_rx.await;
            },
        ));
        eventually(want, || {
            s.node("aws1")
                .and_then(|n| n.metadata.annotations)
                .and_then(|a| a.get("gcp.wireguard.semaphore.uw.io/endpoint").cloned())
                .as_deref()
                == Some(want)
        })
        .await;
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}

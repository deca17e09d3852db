//! The Service mirror of one remote, between two fake API servers (remote and local),
//! with the real `kube::Client`s.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use control::http_metrics::RequestCounts;
use control::mirror::services::{ServiceMirror, ServiceMirrorStatus};
use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

fn svc(name: &str, labels: &[(&str, &str)], port: i32) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("NodePort".into()),
            selector: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                node_port: Some(30080),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

async fn namespace(client: &kube::Client, name: &str) {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

async fn settle<F: Fn() -> Fut, Fut: std::future::Future<Output = bool>>(what: &str, check: F) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out: {what}");
}

#[tokio::test]
async fn remote_services_are_mirrored_updated_and_removed() {
    let (rs, rtok) = server("remote").await;
    let (ls, ltok) = server("local").await;
    let counts = RequestCounts::default();
    let remote = control::remote::remote_client(&token_access(&rs, &rtok), &counts)
        .await
        .unwrap();
    let local = control::remote::remote_client(&token_access(&ls, &ltok), &counts)
        .await
        .unwrap();
    let pp = PostParams::default();
    namespace(&remote, "foo").await;
    namespace(&local, "sys").await;
    let rsvc: Api<Service> = Api::namespaced(remote.clone(), "foo");
    let lsvc: Api<Service> = Api::namespaced(local.clone(), "sys");
    rsvc.create(&pp, &svc("bar", &[("m", "true")], 80))
        .await
        .unwrap();
    rsvc.create(&pp, &svc("plain", &[], 80)).await.unwrap();
    let long = "x".repeat(60);
    rsvc.create(&pp, &svc(&long, &[("m", "true")], 80))
        .await
        .unwrap();
    // Stale at start: a mirror of ours whose source is gone; another runner's; not a mirror.
    let mirror_labels = |prefix: &str| {
        vec![("mirrored-svc", "true"), ("mirror-svc-prefix-sync", prefix)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    let mut stale = svc("a-old-73736d-x", &[], 1);
    stale.metadata.labels = Some(mirror_labels("a"));
    lsvc.create(&pp, &stale).await.unwrap();
    let mut others = svc("b-foo-73736d-bar", &[], 1);
    others.metadata.labels = Some(mirror_labels("b"));
    lsvc.create(&pp, &others).await.unwrap();
    lsvc.create(&pp, &svc("unrelated", &[], 1)).await.unwrap();

    let status = Arc::new(ServiceMirrorStatus::default());
    let mirror = ServiceMirror {
        remote: "a".into(),
        prefix: "a".into(),
        namespace: "sys".into(),
        selector: "m=true".into(),
        gc_at_start: true,
        resync: Duration::ZERO,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task =
        tokio::spawn(
            mirror.run(remote.clone(), local.clone(), Arc::clone(&status), async {
                let _ = stop_rx.await;
            }),
        );

    settle("the mirror", || async {
        lsvc.get_opt("a-foo-73736d-bar").await.unwrap().is_some()
    })
    .await;
    let m = lsvc.get("a-foo-73736d-bar").await.unwrap();
    assert_eq!(m.metadata.labels.clone().unwrap(), mirror_labels("a"));
    let spec = m.spec.clone().unwrap();
    assert_eq!(spec.selector, None);
    assert_eq!(spec.type_, None, "ClusterIP, not the remote's NodePort");
    assert!(
        spec.cluster_ip.unwrap().starts_with("10.96."),
        "allocated locally"
    );
    let ports = spec.ports.unwrap();
    assert_eq!((ports[0].port, ports[0].node_port), (80, None));
    settle("the stale mirror collected", || async {
        lsvc.get_opt("a-old-73736d-x").await.unwrap().is_none()
    })
    .await;
    assert!(
        lsvc.get_opt("b-foo-73736d-bar").await.unwrap().is_some(),
        "another runner's"
    );
    assert!(lsvc.get_opt("unrelated").await.unwrap().is_some());
    assert!(
        lsvc.get_opt("a-foo-73736d-plain").await.unwrap().is_none(),
        "unlabelled"
    );
    assert_eq!(
        status
            .refused_names
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // A local label survives; the remote's new port follows.
    let mut m = lsvc.get("a-foo-73736d-bar").await.unwrap();
    m.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("local".into(), "yes".into());
    lsvc.replace("a-foo-73736d-bar", &pp, &m).await.unwrap();
    let mut r = rsvc.get("bar").await.unwrap();
    r.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 8080;
    rsvc.replace("bar", &pp, &r).await.unwrap();
    settle("the new port", || async {
        lsvc.get("a-foo-73736d-bar")
            .await
            .unwrap()
            .spec
            .unwrap()
            .ports
            .unwrap()[0]
            .port
            == 8080
    })
    .await;
    assert_eq!(
        lsvc.get("a-foo-73736d-bar")
            .await
            .unwrap()
            .metadata
            .labels
            .unwrap()["local"],
        "yes"
    );

    // An API outage on the remote: the mirror stays.
    rs.fail_next(1000, 500);
    rs.drop_watches();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(lsvc.get_opt("a-foo-73736d-bar").await.unwrap().is_some());
    rs.fail_next(0, 500);

    // Losing the mirror label is a removal; so is a deletion.
    let mut r = rsvc.get("bar").await.unwrap();
    r.metadata.labels = None;
    rsvc.replace("bar", &pp, &r).await.unwrap();
    settle("the mirror removed", || async {
        lsvc.get_opt("a-foo-73736d-bar").await.unwrap().is_none()
    })
    .await;
    rsvc.create(&pp, &svc("again", &[("m", "true")], 81))
        .await
        .unwrap();
    settle("another mirror", || async {
        lsvc.get_opt("a-foo-73736d-again").await.unwrap().is_some()
    })
    .await;
    rsvc.delete("again", &DeleteParams::default())
        .await
        .unwrap();
    settle("deleted with its source", || async {
        lsvc.get_opt("a-foo-73736d-again").await.unwrap().is_none()
    })
    .await;
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

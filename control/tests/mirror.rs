//! The Service and EndpointSlice mirrors of one remote, between two fake API servers (remote and local),
//! with the real `kube::Client`s.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use control::http_metrics::RequestCounts;
use control::mirror::global::GlobalServices;
use control::mirror::global_services::GlobalServiceMirror;
use control::mirror::global_slices::GlobalSliceMirror;
use control::mirror::metrics::MirrorMetrics;
use control::mirror::services::ServiceMirror;
use control::mirror::slices::SliceMirror;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
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

/// A fake API server and a client of it per cluster name.
async fn clusters(names: &[&str]) -> (Vec<fake_apiserver::FakeApiServer>, Vec<kube::Client>) {
    let counts = RequestCounts::default();
    let (mut servers, mut clients) = (Vec::new(), Vec::new());
    for name in names {
        let (s, tok) = server(name).await;
        let access = token_access(&s, &tok);
        clients.push(
            control::remote::remote_client(&access, &counts)
                .await
                .unwrap(),
        );
        servers.push(s);
    }
    (servers, clients)
}

#[tokio::test]
async fn remote_services_are_mirrored_updated_and_removed() {
    let (servers, c) = clusters(&["remote", "local"]).await;
    let (rs, remote, local) = (&servers[0], c[0].clone(), c[1].clone());
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

    let metrics = Arc::new(MirrorMetrics::default());
    let runner = metrics.runner("mirror-a");
    let status = Arc::clone(&runner.status);
    let mirror = ServiceMirror {
        remote: "a".into(),
        prefix: "a".into(),
        namespace: "sys".into(),
        selector: "m=true".into(),
        gc_at_start: true,
        resync: Duration::ZERO,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        mirror.run(remote.clone(), local.clone(), runner.clone(), async {
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
    // The original's watcher and queue series, under its names.
    let mut rendered = String::new();
    metrics.render(&mut rendered);
    for line in [
        "semaphore_service_mirror_kube_watcher_events_total{watcher=\"a-serviceWatcher\",kind=\"service\",event_type=\"ADDED\",runner=\"mirror-a\"}",
        "semaphore_service_mirror_kube_watcher_objects{watcher=\"a-serviceWatcher\",kind=\"service\",runner=\"mirror-a\"}",
        "semaphore_service_mirror_queue_adds_total{name=\"a-service\"}",
        "semaphore_service_mirror_queue_work_duration_seconds_count{name=\"a-service\"}",
    ] {
        let value = rendered
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .unwrap_or_else(|| panic!("no {line} in {rendered}"));
        assert!(
            value.trim().parse::<f64>().unwrap() >= 1.0,
            "{line} {value}"
        );
    }
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

fn slice(name: &str, service: &str, labels: &[(&str, &str)], ip: &str) -> EndpointSlice {
    let mut l: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.insert("kubernetes.io/service-name".into(), service.into());
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(l),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                ..Default::default()
            }),
            node_name: Some("gcp1".into()),
            ..Default::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(80),
            ..Default::default()
        }]),
    }
}

#[tokio::test]
async fn remote_endpointslices_are_mirrored_and_the_originals_endpoints_go() {
    let (_servers, c) = clusters(&["remote", "local"]).await;
    let (remote, local) = (c[0].clone(), c[1].clone());
    let pp = PostParams::default();
    namespace(&remote, "foo").await;
    namespace(&local, "sys").await;
    let rslices: Api<EndpointSlice> = Api::namespaced(remote.clone(), "foo");
    let lslices: Api<EndpointSlice> = Api::namespaced(local.clone(), "sys");
    rslices
        .create(
            &pp,
            &slice("bar-abcde", "bar", &[("m", "true")], "10.4.1.10"),
        )
        .await
        .unwrap();
    rslices
        .create(&pp, &slice("plain-xyz", "plain", &[], "10.4.1.11"))
        .await
        .unwrap();
    // Left by the Go original: mirrored Endpoints of this prefix; and a stale slice of ours.
    let labels: BTreeMap<String, String> =
        [("mirrored-svc", "true"), ("mirror-svc-prefix-sync", "a")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let lep: Api<Endpoints> = Api::namespaced(local.clone(), "sys");
    lep.create(
        &pp,
        &Endpoints {
            metadata: ObjectMeta {
                name: Some("a-foo-73736d-bar".into()),
                labels: Some(labels.clone()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut stale = slice("a-foo-gone-1", "x", &[], "10.4.9.9");
    stale
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .extend(labels.clone());
    lslices.create(&pp, &stale).await.unwrap();

    let metrics = Arc::new(MirrorMetrics::default());
    let runner = metrics.runner("mirror-a");
    let mirror = SliceMirror {
        remote: "a".into(),
        prefix: "a".into(),
        namespace: "sys".into(),
        selector: "m=true".into(),
        gc_at_start: true,
        resync: Duration::ZERO,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        mirror.run(remote.clone(), local.clone(), runner.clone(), async {
            let _ = stop_rx.await;
        }),
    );
    settle("the mirrored slice", || async {
        lslices.get_opt("a-foo-bar-abcde").await.unwrap().is_some()
    })
    .await;
    let m = lslices.get("a-foo-bar-abcde").await.unwrap();
    let l = m.metadata.labels.unwrap();
    assert_eq!(l["kubernetes.io/service-name"], "a-foo-73736d-bar");
    assert_eq!(
        l["endpointslice.kubernetes.io/managed-by"],
        "semaphore-service-mirror"
    );
    assert_eq!(l["mirror-svc-prefix-sync"], "a");
    assert_eq!(m.endpoints[0].addresses, ["10.4.1.10"]);
    assert_eq!(m.endpoints[0].node_name.as_deref(), Some("gcp1"));
    assert_eq!(m.ports.unwrap()[0].port, Some(80));
    settle("the stale slice collected", || async {
        lslices.get_opt("a-foo-gone-1").await.unwrap().is_none()
    })
    .await;
    settle("the original's Endpoints deleted", || async {
        lep.get_opt("a-foo-73736d-bar").await.unwrap().is_none()
    })
    .await;
    assert!(
        lslices.get_opt("a-foo-plain-xyz").await.unwrap().is_none(),
        "unlabelled"
    );

    // A new address follows; the slice's deletion removes the copy.
    let mut r = rslices.get("bar-abcde").await.unwrap();
    r.endpoints[0].addresses = vec!["10.4.2.20".into()];
    rslices.replace("bar-abcde", &pp, &r).await.unwrap();
    settle("the new address", || async {
        lslices.get("a-foo-bar-abcde").await.unwrap().endpoints[0].addresses == ["10.4.2.20"]
    })
    .await;
    rslices
        .delete("bar-abcde", &DeleteParams::default())
        .await
        .unwrap();
    settle("the copy removed", || async {
        lslices.get_opt("a-foo-bar-abcde").await.unwrap().is_none()
    })
    .await;
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn global_services_gather_every_cluster_and_go_with_the_last() {
    let (servers, c) = clusters(&["local", "a", "b"]).await;
    let (local, a, b) = (c[0].clone(), c[1].clone(), c[2].clone());
    let pp = PostParams::default();
    for c in [&local, &a, &b] {
        namespace(c, "foo").await;
    }
    namespace(&local, "sys").await;
    let src = |c: &kube::Client| Api::<Service>::namespaced(c.clone(), "foo");
    let mut routed = svc("web", &[("g", "true"), ("r", "local-first")], 80);
    routed.spec.as_mut().unwrap().type_ = None;
    src(&a).create(&pp, &routed).await.unwrap();
    src(&b)
        .create(&pp, &svc("web", &[("g", "true")], 8080))
        .await
        .unwrap();
    src(&local)
        .create(&pp, &svc("web", &[("g", "true")], 8080))
        .await
        .unwrap();

    // Left from before: a global Service whose sources all went meanwhile, and one made
    // by hand (no global-svc label).
    let global: Api<Service> = Api::namespaced(local.clone(), "sys");
    global
        .create(
            &pp,
            &svc("gl-old-73736d-gone", &[("global-svc", "true")], 80),
        )
        .await
        .unwrap();
    global
        .create(&pp, &svc("gl-manual-73736d-x", &[], 80))
        .await
        .unwrap();

    let mut globals = GlobalServices::default();
    globals.expect_clusters(["local", "a", "b"]);
    let store = Arc::new(std::sync::Mutex::new(globals));
    let metrics = Arc::new(MirrorMetrics::default());
    let runner = metrics.runner("mirror-a");
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut tasks = Vec::new();
    for (name, client) in [("local", &local), ("a", &a), ("b", &b)] {
        let m = GlobalServiceMirror {
            cluster: name.into(),
            namespace: "sys".into(),
            selector: "g=true".into(),
            routing: "r=local-first".parse().unwrap(),
            gc_at_start: true,
        };
        let mut stop = stop_tx.subscribe();
        tasks.push(tokio::spawn(m.run(
            client.clone(),
            local.clone(),
            Arc::clone(&store),
            runner.clone(),
            async move {
                let _ = stop.recv().await;
            },
        )));
    }
    let clusters = |s: &Service| {
        let mut c: Vec<String> = s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("global-svc-clusters"))
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        c.sort();
        c
    };
    settle("every cluster in the global service", || async {
        global
            .get_opt("gl-foo-73736d-web")
            .await
            .unwrap()
            .is_some_and(|s| clusters(&s) == ["a", "b", "local"])
    })
    .await;
    settle("the stale global service collected", || async {
        global
            .get_opt("gl-old-73736d-gone")
            .await
            .unwrap()
            .is_none()
    })
    .await;
    // The three runners raced to create the one global Service: the losers wrote again at
    // once instead of failing their reconcile into the queue's backoff.
    let mut rendered = String::new();
    metrics.render(&mut rendered);
    for queue in ["local", "a", "b"] {
        let line = format!(
            "semaphore_service_mirror_queue_retries_total{{name=\"{queue}-global-service\"}} 0"
        );
        assert!(rendered.lines().any(|l| l == line), "{line}: {rendered}");
    }
    assert!(
        global
            .get_opt("gl-manual-73736d-x")
            .await
            .unwrap()
            .is_some()
    );
    let g = global.get("gl-foo-73736d-web").await.unwrap();
    assert_eq!(g.metadata.labels.unwrap()["global-svc"], "true");
    assert_eq!(g.spec.as_ref().unwrap().selector, None);
    assert_eq!(g.spec.unwrap().ports.unwrap()[0].node_port, None);

    // a's source goes: a leaves the global service, which stays for the others.
    src(&a)
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    settle("a left", || async {
        global
            .get_opt("gl-foo-73736d-web")
            .await
            .unwrap()
            .is_some_and(|s| clusters(&s) == ["b", "local"])
    })
    .await;
    src(&b)
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    src(&local)
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    settle("the global service gone with the last source", || async {
        global.get_opt("gl-foo-73736d-web").await.unwrap().is_none()
    })
    .await;
    let _ = stop_tx.send(());
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap();
    }
    drop(servers);
}

#[tokio::test]
async fn global_slices_carry_every_clusters_endpoints_with_zones_and_hints() {
    let (_servers, c) = clusters(&["local", "a"]).await;
    let (local, a) = (c[0].clone(), c[1].clone());
    let pp = PostParams::default();
    for c in [&local, &a] {
        namespace(c, "foo").await;
    }
    namespace(&local, "sys").await;
    let mut remote_slice = slice("web-aaaaa", "web", &[("g", "true")], "10.4.1.10");
    remote_slice.endpoints[0].zone = Some("eu-west-1a".into());
    Api::<EndpointSlice>::namespaced(a.clone(), "foo")
        .create(&pp, &remote_slice)
        .await
        .unwrap();
    let mut local_slice = slice("web-lllll", "web", &[("g", "true")], "10.2.1.10");
    local_slice.endpoints[0].zone = Some("z1".into());
    Api::<EndpointSlice>::namespaced(local.clone(), "foo")
        .create(&pp, &local_slice)
        .await
        .unwrap();
    // A copy of a's slice that vanished while no mirror ran: it must go (the original
    // looked for it in the remote cluster and never found it).
    let mut stale = slice("gl-web-gone0", "gl-foo-73736d-web", &[], "10.4.9.9");
    stale.metadata.labels.as_mut().unwrap().extend(
        [
            ("mirrored-endpoint-slice", "true"),
            ("mirror-endpointslice-sync-name", "a"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let copies: Api<EndpointSlice> = Api::namespaced(local.clone(), "sys");
    copies.create(&pp, &stale).await.unwrap();

    let metrics = Arc::new(MirrorMetrics::default());
    let runner = metrics.runner("mirror-a");
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut tasks = Vec::new();
    for (name, client, zones) in [
        (
            "local",
            &local,
            Some(vec!["z1".to_string(), "z2".to_string()]),
        ),
        ("a", &a, None),
    ] {
        let m = GlobalSliceMirror {
            cluster: name.into(),
            namespace: "sys".into(),
            selector: "g=true".into(),
            gc_at_start: true,
            local_zones: zones,
        };
        let mut stop = stop_tx.subscribe();
        tasks.push(tokio::spawn(m.run(
            client.clone(),
            local.clone(),
            runner.clone(),
            async move {
                let _ = stop.recv().await;
            },
        )));
    }
    settle("both copies", || async {
        copies.get_opt("gl-web-aaaaa").await.unwrap().is_some()
            && copies.get_opt("gl-web-lllll").await.unwrap().is_some()
    })
    .await;
    let r = copies.get("gl-web-aaaaa").await.unwrap();
    let labels = r.metadata.labels.clone().unwrap();
    assert_eq!(labels["kubernetes.io/service-name"], "gl-foo-73736d-web");
    assert_eq!(labels["mirror-endpointslice-sync-name"], "a");
    assert_eq!(
        labels["endpointslice.kubernetes.io/managed-by"],
        "semaphore-service-mirror"
    );
    let e = &r.endpoints[0];
    assert_eq!(e.zone.as_deref(), Some("remote"));
    assert_eq!(
        e.hints.as_ref().unwrap().for_zones.as_ref().unwrap()[0].name,
        "remote"
    );
    let l = copies.get("gl-web-lllll").await.unwrap();
    let e = &l.endpoints[0];
    assert_eq!(e.zone.as_deref(), Some("z1"));
    let hinted: Vec<String> = e
        .hints
        .clone()
        .unwrap()
        .for_zones
        .unwrap()
        .into_iter()
        .map(|z| z.name)
        .collect();
    assert_eq!(hinted, ["z1", "z2"]);
    settle("the stale copy collected", || async {
        copies.get_opt("gl-web-gone0").await.unwrap().is_none()
    })
    .await;
    Api::<EndpointSlice>::namespaced(a.clone(), "foo")
        .delete("web-aaaaa", &DeleteParams::default())
        .await
        .unwrap();
    settle("the copy follows its source", || async {
        copies.get_opt("gl-web-aaaaa").await.unwrap().is_none()
    })
    .await;
    assert!(
        copies.get_opt("gl-web-lllll").await.unwrap().is_some(),
        "the local copy stays"
    );
    let _ = stop_tx.send(());
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap();
    }
}

//! The service mirror's kinds (Namespaces, Services, Endpoints, EndpointSlices), driven by
//! the real `kube::Client` and `kube::runtime::watcher`.

mod common;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::watcher::{self, Event};

fn meta(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn service(name: &str, labels: &[(&str, &str)], headless: bool) -> Service {
    Service {
        metadata: meta(name, labels),
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                ..Default::default()
            }]),
            cluster_ip: headless.then(|| "None".to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn services_endpoints_and_slices_crud_and_selectors() {
    let server = server(&[]).await;
    let client = client(&server.url(), None);
    let pp = PostParams::default();
    let nss: Api<Namespace> = Api::all(client.clone());
    let svcs: Api<Service> = Api::namespaced(client.clone(), "foo");
    // Creating into a namespace that does not exist: 404, as a real API server answers.
    let e = svcs
        .create(&pp, &service("bar", &[], false))
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), 404);
    within(
        "ns",
        nss.create(
            &pp,
            &Namespace {
                metadata: meta("foo", &[]),
                ..Default::default()
            },
        ),
    )
    .await
    .unwrap();
    let bar = within(
        "create",
        svcs.create(&pp, &service("bar", &[("m", "true")], false)),
    )
    .await
    .unwrap();
    let ip = bar.spec.as_ref().unwrap().cluster_ip.clone().unwrap();
    assert!(ip.starts_with("10.96."), "{ip}");
    let hl = svcs.create(&pp, &service("hl", &[], true)).await.unwrap();
    assert_eq!(hl.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    let again = svcs
        .create(&pp, &service("bar", &[], false))
        .await
        .unwrap_err();
    assert_eq!(api_code(&again), 409);
    assert_eq!(api_message(&again), "services \"bar\" already exists");

    // Across namespaces, with a label selector.
    let all: Api<Service> = Api::all(client.clone());
    let listed = all
        .list(&ListParams::default().labels("m=true"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].metadata.namespace.as_deref(), Some("foo"));

    // Replace: the cluster IP stays; a stale resourceVersion conflicts.
    let mut changed = svcs.get("bar").await.unwrap();
    changed.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 8080;
    let stale = changed.clone();
    let after = svcs.replace("bar", &pp, &changed).await.unwrap();
    assert_eq!(
        after.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some(ip.as_str())
    );
    assert_eq!(
        api_code(&svcs.replace("bar", &pp, &stale).await.unwrap_err()),
        409
    );

    // Endpoints and EndpointSlices (discovery.k8s.io/v1) in the same namespace.
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), "foo");
    eps.create(
        &pp,
        &Endpoints {
            metadata: meta("bar", &[("m", "true")]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "foo");
    let slice = EndpointSlice {
        metadata: meta("bar-abcde", &[("kubernetes.io/service-name", "bar")]),
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec!["10.4.1.10".into()],
            ..Default::default()
        }],
        ports: None,
    };
    slices.create(&pp, &slice).await.unwrap();
    let got = Api::<EndpointSlice>::all(client.clone())
        .list(&ListParams::default().labels("kubernetes.io/service-name=bar"))
        .await
        .unwrap();
    assert_eq!(got.items[0].endpoints[0].addresses, ["10.4.1.10"]);
    // An unconditional replace (no resourceVersion), as the mirror writes slices.
    let mut fresh = slice.clone();
    fresh.endpoints[0].addresses = vec!["10.4.1.11".into()];
    slices.replace("bar-abcde", &pp, &fresh).await.unwrap();
    assert_eq!(
        slices.get("bar-abcde").await.unwrap().endpoints[0].addresses,
        ["10.4.1.11"]
    );

    svcs.delete("bar", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_code(&svcs.get("bar").await.unwrap_err()), 404);
    assert_eq!(
        api_code(
            &svcs
                .delete("bar", &DeleteParams::default())
                .await
                .unwrap_err()
        ),
        404
    );
    assert_eq!(api_code(&eps.get("nope").await.unwrap_err()), 404);
}

/// The next event that is not a list boundary.
async fn next(
    events: &mut futures::stream::BoxStream<'static, Result<Event<Service>, watcher::Error>>,
) -> Event<Service> {
    loop {
        match within("watch event", events.next()).await.unwrap().unwrap() {
            Event::Init | Event::InitDone => continue,
            e => return e,
        }
    }
}

#[tokio::test]
async fn a_watcher_with_a_label_selector_sees_adds_changes_and_leaves() {
    let server = server(&[]).await;
    let client = client(&server.url(), None);
    let pp = PostParams::default();
    let nss: Api<Namespace> = Api::all(client.clone());
    for ns in ["a", "b"] {
        nss.create(
            &pp,
            &Namespace {
                metadata: meta(ns, &[]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    let in_a: Api<Service> = Api::namespaced(client.clone(), "a");
    in_a.create(&pp, &service("before", &[("m", "true")], false))
        .await
        .unwrap();
    let mut events = watcher::watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default().labels("m=true"),
    )
    .boxed();
    let Event::InitApply(s) = next(&mut events).await else {
        panic!("the listed service first")
    };
    assert_eq!(s.metadata.name.as_deref(), Some("before"));
    let in_b: Api<Service> = Api::namespaced(client.clone(), "b");
    in_b.create(&pp, &service("x", &[("m", "true")], false))
        .await
        .unwrap();
    in_b.create(&pp, &service("unlabelled", &[], false))
        .await
        .unwrap();
    let Event::Apply(s) = next(&mut events).await else {
        panic!("added")
    };
    assert_eq!(s.metadata.namespace.as_deref(), Some("b"));
    // Losing the label is a delete for this watch.
    let mut x = in_b.get("x").await.unwrap();
    x.metadata.labels = None;
    in_b.replace("x", &pp, &x).await.unwrap();
    let Event::Delete(s) = next(&mut events).await else {
        panic!("left the selector")
    };
    assert_eq!(s.metadata.name.as_deref(), Some("x"));
    in_a.delete("before", &DeleteParams::default())
        .await
        .unwrap();
    let Event::Delete(s) = next(&mut events).await else {
        panic!("deleted")
    };
    assert_eq!(s.metadata.name.as_deref(), Some("before"));
}

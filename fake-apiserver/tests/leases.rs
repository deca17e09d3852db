//! Leases, driven by the real `kube::Client`: what leader election needs.

mod common;

use common::*;
use fake_apiserver::Options;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

fn lease(name: &str, holder: &str) -> Lease {
    Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(10),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn create_get_replace_with_optimistic_concurrency_and_delete() {
    let server = server_with(
        Options {
            token: Some("t".into()),
            ..Default::default()
        },
        &[],
    )
    .await;
    let api: Api<Lease> = Api::namespaced(client(&server.url(), Some("t")), "swg");
    let pp = PostParams::default();
    let e = within("get missing", api.get("gw-gcp")).await.unwrap_err();
    assert_eq!(api_code(&e), 404);

    let created = within("create", api.create(&pp, &lease("gw-gcp", "n1")))
        .await
        .unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("swg"));
    let rv1 = created.metadata.resource_version.clone().unwrap();
    // A second create of the same name: one candidate wins the race.
    let e = within("create again", api.create(&pp, &lease("gw-gcp", "n2")))
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), 409);
    assert_eq!(api_message(&e), "leases \"gw-gcp\" already exists");

    // Replace with the current resourceVersion: accepted, new resourceVersion.
    let mut mine = within("get", api.get("gw-gcp")).await.unwrap();
    mine.spec.as_mut().unwrap().holder_identity = Some("n2".into());
    let replaced = within("replace", api.replace("gw-gcp", &pp, &mine))
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version.as_deref(),
        Some(rv1.as_str())
    );
    // A replace carrying the old resourceVersion loses: 409 Conflict.
    let e = within("stale replace", api.replace("gw-gcp", &pp, &mine))
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), 409);
    let now = within("get", api.get("gw-gcp")).await.unwrap();
    assert_eq!(now.spec.unwrap().holder_identity.as_deref(), Some("n2"));

    // Listed per namespace; another namespace is apart.
    let other: Api<Lease> = Api::namespaced(client(&server.url(), Some("t")), "other");
    within("create other", other.create(&pp, &lease("gw-gcp", "x")))
        .await
        .unwrap();
    let list = within("list", api.list(&ListParams::default()))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);

    within("delete", api.delete("gw-gcp", &DeleteParams::default()))
        .await
        .unwrap();
    assert_eq!(api_code(&api.get("gw-gcp").await.unwrap_err()), 404);
    // Auth applies to Leases too.
    let anon: Api<Lease> = Api::namespaced(client(&server.url(), None), "swg");
    assert_eq!(api_code(&anon.get("gw-gcp").await.unwrap_err()), 401);
}

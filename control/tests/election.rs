//! Leader election against the fake API server's Leases, with the real `kube::Client`,
//! on a fast clock (a 1 s lease).

mod common;

use std::time::Duration;

use common::*;
use control::election::{ElectionTiming, Elector, Round};
use control::http_metrics::RequestCounts;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

const FAST: ElectionTiming = ElectionTiming {
    lease_duration: Duration::from_secs(1),
    renew_deadline: Duration::from_millis(700),
    retry: Duration::from_millis(200),
};

async fn elector(api: &Api<Lease>, who: &str) -> Elector {
    Elector::new(api.clone(), "gw-gcp", who, FAST)
}

#[tokio::test]
async fn one_leader_failover_after_the_lease_and_release_hands_over_at_once() {
    let (s, tok) = server("local").await;
    let client = control::remote::remote_client(&token_access(&s, &tok), &RequestCounts::default())
        .await
        .unwrap();
    let api: Api<Lease> = Api::namespaced(client, "swg");
    let mut a = elector(&api, "a").await;
    let mut b = elector(&api, "b").await;

    let Round::Leading(a_since) = a.round(true).await.unwrap() else {
        panic!("the first candidate leads")
    };
    // While a renews, b follows, however long it waits.
    for _ in 0..8 {
        tokio::time::sleep(FAST.retry).await;
        assert_eq!(a.round(true).await.unwrap(), Round::Leading(a_since));
        assert_eq!(
            b.round(true).await.unwrap(),
            Round::Following(Some("a".into()))
        );
    }
    // a stops renewing (dead): b takes over once it has seen no change for the lease.
    let stopped = tokio::time::Instant::now();
    let b_since = loop {
        if let Round::Leading(t) = b.round(true).await.unwrap() {
            break t;
        }
        assert!(stopped.elapsed() < Duration::from_secs(3), "no failover");
        tokio::time::sleep(FAST.retry).await;
    };
    let waited = stopped.elapsed();
    assert!(
        waited >= FAST.lease_duration,
        "taken over early: {waited:?}"
    );
    assert!(b_since > a_since, "a newer election");
    let lease = api.get("gw-gcp").await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("b"));
    assert_eq!(lease.lease_transitions, Some(1));
    // a comes back: it follows, and knows it no longer leads.
    assert_eq!(
        a.round(true).await.unwrap(),
        Round::Following(Some("b".into()))
    );
    assert_eq!(a.leading_since(), None);

    // b may no longer lead (unhealthy): it gives the Lease up, and a takes it at once.
    assert_eq!(b.round(false).await.unwrap(), Round::Following(None));
    assert!(matches!(a.round(true).await.unwrap(), Round::Leading(_)));

    // API errors: a keeps leading until its renew deadline, then stops.
    s.fail_next(100, 503);
    assert!(a.round(true).await.is_err());
    assert!(a.leading_since().is_some(), "within the deadline");
    tokio::time::sleep(FAST.renew_deadline).await;
    assert!(a.round(true).await.is_err());
    assert_eq!(a.leading_since(), None, "past the deadline");
    s.fail_next(0, 503);
    // Its own Lease, still unexpired for others: it simply renews.
    assert!(matches!(a.round(true).await.unwrap(), Round::Leading(_)));
    a.release().await.unwrap();
    let lease = api.get("gw-gcp").await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity, None);
}

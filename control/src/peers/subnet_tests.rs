//! Dual-stack pod subnets and `extraCIDRs` claims.

use k8s_openapi::jiff::Timestamp;

use super::*;

fn p(s: &str) -> IpNetwork {
    parse_cidr(s).unwrap()
}

fn key(i: u8) -> String {
    STANDARD.encode([i; 32])
}

fn remote_node(name: &str, i: u8, pod_cidrs: &[&str], extra: Option<&str>) -> RemoteNode {
    RemoteNode {
        name: name.into(),
        created: Some(Timestamp::from_second(1_700_000_000 + i64::from(i)).unwrap()),
        public_key: Some(key(i)),
        endpoint: Some(format!("192.168.0.{i}:51820")),
        extra_cidrs: extra.map(str::to_string),
        gateway_claim: None,
        gateway_labelled: false,
        pod_cidrs: pod_cidrs.iter().map(|s| s.to_string()).collect(),
    }
}

fn dual() -> Subnets {
    Subnets {
        pod: vec![p("10.4.0.0/16"), p("fd00:4::/32")],
        extra: vec![p("10.96.0.0/12"), p("192.168.50.0/24")],
    }
}

#[test]
fn every_family_of_the_pod_subnet_becomes_allowed_ips() {
    let n = remote_node("n1", 1, &["10.4.1.0/24", "fd00:4:1::/64"], None);
    let plan = plan_peers([&n], &dual(), None);
    assert_eq!(
        plan.peers[0].allowed_ips,
        [p("10.4.1.0/24"), p("fd00:4:1::/64")]
    );
    // A single-stack remote takes the family it has and leaves the other (the original
    // skipped such a node whole).
    let v4 = Subnets::pod_only(p("10.4.0.0/16"));
    let plan = plan_peers([&n], &v4, None);
    assert_eq!(plan.peers[0].allowed_ips, [p("10.4.1.0/24")]);
    assert!(plan.skipped.is_empty());
    // A family the remote has must still lie inside it.
    let bad = remote_node("n2", 2, &["10.4.2.0/24", "fd00:9::/64"], None);
    let plan = plan_peers([&bad], &dual(), None);
    assert_eq!(
        plan.skipped[0].reason,
        SkipReason::OutsidePodSubnet("fd00:9::/64".into())
    );
    // Nothing of a family the remote routes: outside, as before.
    let v6_only = remote_node("n3", 3, &["fd00:4:3::/64"], None);
    let plan = plan_peers([&v6_only], &v4, None);
    assert_eq!(plan.skipped[0].reason.label(), "outside_pod_subnet");
}

#[test]
fn extra_claims_inside_the_extra_subnets_are_granted_one_by_one() {
    let n = remote_node(
        "gw",
        1,
        &["10.4.1.0/24"],
        Some("10.96.0.0/16, 192.168.50.0/25,10.4.200.0/24,junk,8.8.8.8/32"),
    );
    let plan = plan_peers([&n], &dual(), None);
    assert_eq!(
        plan.peers[0].allowed_ips,
        [p("10.4.1.0/24"), p("10.96.0.0/16"), p("192.168.50.0/25")]
    );
    let refused: Vec<_> = plan
        .refused
        .iter()
        .map(|r| (r.prefix.as_str(), r.reason.kind().label()))
        .collect();
    assert_eq!(
        refused,
        [
            ("10.4.200.0/24", "outside_extra_subnets"),
            ("junk", "invalid"),
            ("8.8.8.8/32", "outside_extra_subnets"),
        ]
    );
    // Without extraSubnets every claim is refused, and the node is still a peer.
    let plan = plan_peers([&n], &Subnets::pod_only(p("10.4.0.0/16")), None);
    assert_eq!(plan.peers[0].allowed_ips, [p("10.4.1.0/24")]);
    assert_eq!(plan.refused.len(), 5);
}

#[test]
fn the_older_node_keeps_a_contested_extra_claim() {
    let old = remote_node("z-old", 1, &["10.4.1.0/24"], Some("10.96.0.0/16"));
    let new = remote_node(
        "a-new",
        2,
        &["10.4.2.0/24"],
        Some("10.96.8.0/24,10.97.0.0/16"),
    );
    let plan = plan_peers([&new, &old], &dual(), None);
    let by_name = |n: &str| plan.peers.iter().find(|p| p.node == n).unwrap();
    assert_eq!(
        by_name("z-old").allowed_ips,
        [p("10.4.1.0/24"), p("10.96.0.0/16")]
    );
    // The newer node keeps its pod CIDR and its uncontested claim.
    assert_eq!(
        by_name("a-new").allowed_ips,
        [p("10.4.2.0/24"), p("10.97.0.0/16")]
    );
    assert_eq!(
        plan.refused,
        [Refused {
            node: "a-new".into(),
            prefix: "10.96.8.0/24".into(),
            reason: RefuseReason::Conflict {
                holder: "z-old".into()
            },
        }]
    );
    // A skipped node's claims take nothing.
    let copycat = remote_node("copy", 1, &["10.4.3.0/24"], Some("192.168.50.0/24"));
    let plan = plan_peers([&old, &copycat], &dual(), None);
    assert_eq!(plan.peers.len(), 0, "two nodes with one key: neither");
    assert!(plan.refused.is_empty());
}

#[test]
fn every_refuse_kind_has_its_own_label() {
    let labels: std::collections::HashSet<_> = RefuseKind::all().map(RefuseKind::label).collect();
    assert_eq!(labels.len(), RefuseKind::COUNT);
    assert!(labels.contains("outside_extra_subnets") && labels.contains("conflict"));
}

fn gateway(name: &str, i: u8, elected: Option<&str>, labelled: bool) -> RemoteNode {
    RemoteNode {
        gateway_claim: elected.map(str::to_string),
        gateway_labelled: labelled,
        ..remote_node(name, i, &[&format!("10.4.{i}.0/24")], None)
    }
}

#[test]
fn the_newest_labelled_gateway_claim_takes_the_whole_remote() {
    let nodes = [
        gateway("gw-old", 1, Some("2026-12-03T10:00:00Z"), true),
        gateway("gw-new", 2, Some("2026-12-03T10:05:00.123456Z"), true),
        gateway("rogue", 3, Some("2026-12-03T11:00:00Z"), false),
        gateway("bad", 4, Some("yesterday"), true),
        gateway("plain", 5, None, false),
    ];
    let plan = plan_peers(&nodes, &dual(), None);
    assert_eq!(plan.peers.len(), 1);
    let gw = &plan.peers[0];
    assert_eq!(gw.node, "gw-new");
    assert_eq!(gw.allowed_ips, dual().routed().copied().collect::<Vec<_>>());
    let reasons: Vec<_> = plan
        .skipped
        .iter()
        .map(|s| (s.node.as_str(), s.reason.label()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("bad", "invalid_gateway_claim"),
            ("gw-old", "superseded_gateway"),
            ("plain", "behind_gateway"),
            ("rogue", "gateway_without_label"),
        ]
    );
    // The newest gateway unusable (our own key): the next newest serves.
    let plan = plan_peers(&nodes, &dual(), Some([2; 32]));
    assert_eq!(plan.peers[0].node, "gw-old");
    // No valid claim: node to node, without the claimants that were refused.
    let nodes = [
        gateway("rogue", 3, Some("2026-12-03T11:00:00Z"), false),
        gateway("plain", 5, None, false),
    ];
    let plan = plan_peers(&nodes, &dual(), None);
    let names: Vec<_> = plan.peers.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(names, ["plain"]);
    assert_eq!(plan.skipped[0].reason, SkipReason::GatewayWithoutLabel);
}

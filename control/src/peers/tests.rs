use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

const KEY_A: &str = "khSDFVjOxtkTKhuucfKihpbk697ckcY6tfmeUrtHtX0=";
const KEY_B: &str = "Po+eOjaDgwxInV0MdfGgVDB/X2+87hMMDgZurYCi3WQ=";

fn subnet() -> Subnets {
    Subnets::pod_only(parse_cidr("10.4.0.0/16").unwrap())
}

fn keys() -> AnnotationKeys {
    AnnotationKeys::for_cluster("aws")
}

fn node(name: &str, key: Option<&str>, endpoint: Option<&str>, cidr: Option<&str>) -> Node {
    let k = keys();
    let mut ann = BTreeMap::new();
    if let Some(v) = key {
        ann.insert(k.public_key.clone(), v.to_string());
    }
    if let Some(v) = endpoint {
        ann.insert(k.endpoint.clone(), v.to_string());
    }
    ann.insert("unrelated/annotation".into(), "x".into());
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(ann),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: cidr.map(str::to_string),
            ..Default::default()
        }),
        status: None,
    }
}

#[test]
fn keys_follow_the_original_pattern() {
    let k = AnnotationKeys::for_cluster("gcp");
    assert_eq!(k.public_key, "gcp.wireguard.semaphore.uw.io/pubKey");
    assert_eq!(k.endpoint, "gcp.wireguard.semaphore.uw.io/endpoint");
}

#[test]
fn a_good_node_becomes_a_peer() {
    let n = node(
        "n1",
        Some(KEY_A),
        Some("192.168.0.1:51820"),
        Some("10.4.1.0/24"),
    );
    let (peers, skipped) = desired_peers([&n], &keys(), &subnet(), None);
    assert!(skipped.is_empty());
    assert_eq!(peers.len(), 1);
    let p = &peers[0];
    assert_eq!(p.node, "n1");
    assert_eq!(p.public_key, parse_public_key(KEY_A).unwrap());
    assert_eq!(p.endpoint.to_string(), "192.168.0.1:51820");
    assert_eq!(p.allowed_ips, vec![parse_cidr("10.4.1.0/24").unwrap()]);
    assert_eq!(p.persistent_keepalive, Duration::from_secs(25));
}

#[test]
fn pod_cidrs_win_over_pod_cidr() {
    let mut n = node(
        "n1",
        Some(KEY_A),
        Some("[fd00::1]:51820"),
        Some("10.4.1.0/24"),
    );
    n.spec.as_mut().unwrap().pod_cidrs = Some(vec!["10.4.1.0/24".into(), "10.4.200.0/24".into()]);
    let (peers, _) = desired_peers([&n], &keys(), &subnet(), None);
    assert_eq!(peers[0].allowed_ips.len(), 2);
    assert_eq!(peers[0].endpoint.to_string(), "[fd00::1]:51820");
}

#[test]
fn unannotated_nodes_are_ignored_and_malformed_ones_skipped() {
    let nodes = [
        node("plain", None, None, Some("10.4.9.0/24")),
        node("partial", Some(KEY_A), None, Some("10.4.2.0/24")),
        node(
            "badkey",
            Some("nope"),
            Some("1.2.3.4:1"),
            Some("10.4.3.0/24"),
        ),
        node("badep", Some(KEY_A), Some("foo"), Some("10.4.4.0/24")),
        node("nocidr", Some(KEY_A), Some("1.2.3.4:1"), None),
        node(
            "badcidr",
            Some(KEY_A),
            Some("1.2.3.4:1"),
            Some("10.4.0.0/99"),
        ),
        node(
            "outside",
            Some(KEY_A),
            Some("1.2.3.4:1"),
            Some("10.2.0.0/24"),
        ),
        node("wider", Some(KEY_A), Some("1.2.3.4:1"), Some("10.0.0.0/8")),
        node("good", Some(KEY_B), Some("1.2.3.5:1"), Some("10.4.5.0/24")),
    ];
    let (peers, skipped) = desired_peers(nodes.iter(), &keys(), &subnet(), None);
    assert_eq!(
        peers.iter().map(|p| p.node.as_str()).collect::<Vec<_>>(),
        ["good"]
    );
    let reasons: Vec<(&str, &str)> = skipped
        .iter()
        .map(|s| (s.node.as_str(), s.reason.label()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("badcidr", "invalid_pod_cidr"),
            ("badep", "invalid_endpoint"),
            ("badkey", "invalid_public_key"),
            ("nocidr", "no_pod_cidr"),
            ("outside", "outside_pod_subnet"),
            ("partial", "partial_annotations"),
            ("wider", "outside_pod_subnet"),
        ]
    );
}

#[test]
fn a_shared_key_is_trusted_for_neither_node() {
    let nodes = [
        node("a", Some(KEY_A), Some("1.1.1.1:1"), Some("10.4.1.0/24")),
        node("b", Some(KEY_A), Some("1.1.1.2:1"), Some("10.4.2.0/24")),
        node("c", Some(KEY_B), Some("1.1.1.3:1"), Some("10.4.3.0/24")),
    ];
    let (peers, skipped) = desired_peers(nodes.iter(), &keys(), &subnet(), None);
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].node, "c");
    assert_eq!(skipped.len(), 2);
    assert_eq!(
        skipped[0].reason,
        SkipReason::DuplicatePublicKey("b".into())
    );
}

#[test]
fn endpoint_forms() {
    assert_eq!(
        parse_endpoint("10.0.0.1:51820").unwrap().to_string(),
        "10.0.0.1:51820"
    );
    assert_eq!(
        parse_endpoint("[fd00::1]:51821").unwrap().to_string(),
        "[fd00::1]:51821"
    );
    // The original wrote IPv6 endpoints without brackets.
    assert_eq!(
        parse_endpoint("fd00::1:51821").unwrap().to_string(),
        "[fd00::1]:51821"
    );
    for bad in [
        "foo",
        "10.0.0.1",
        "10.0.0.1:",
        "host:51820",
        "10.0.0.1:99999",
        "",
    ] {
        assert!(parse_endpoint(bad).is_none(), "{bad}");
    }
    assert_eq!(
        format_endpoint("fd00::1".parse().unwrap(), 5),
        "[fd00::1]:5"
    );
    assert_eq!(
        format_endpoint("10.1.2.3".parse().unwrap(), 51820),
        "10.1.2.3:51820"
    );
}

#[test]
fn public_keys_must_be_32_bytes() {
    assert!(parse_public_key(KEY_A).is_some());
    assert!(parse_public_key("").is_none());
    assert!(parse_public_key("AAAA").is_none());
    assert!(parse_public_key("not base64!").is_none());
}

fn key(n: u8) -> String {
    STANDARD.encode([n; 32])
}

fn created(mut n: Node, secs: i64) -> Node {
    let ts = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + secs).unwrap();
    n.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts));
    n
}

#[test]
fn the_older_node_keeps_a_conflicting_pod_cidr() {
    // "new" is listed first and named first, but "old" was created earlier.
    let nodes = [
        created(
            node(
                "a-new",
                Some(&key(1)),
                Some("1.1.1.1:1"),
                Some("10.4.1.0/24"),
            ),
            50,
        ),
        created(
            node(
                "z-old",
                Some(&key(2)),
                Some("1.1.1.2:1"),
                Some("10.4.1.0/24"),
            ),
            10,
        ),
        created(
            node(
                "wide",
                Some(&key(3)),
                Some("1.1.1.3:1"),
                Some("10.4.0.0/20"),
            ),
            60,
        ),
        created(
            node(
                "inside",
                Some(&key(4)),
                Some("1.1.1.4:1"),
                Some("10.4.1.128/25"),
            ),
            70,
        ),
        created(
            node(
                "fine",
                Some(&key(5)),
                Some("1.1.1.5:1"),
                Some("10.4.99.0/24"),
            ),
            80,
        ),
    ];
    let (peers, skipped) = desired_peers(nodes.iter(), &keys(), &subnet(), None);
    let names: Vec<_> = peers.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(names, ["fine", "z-old"]);
    let got: Vec<_> = skipped
        .iter()
        .map(|s| (s.node.as_str(), s.reason.clone()))
        .collect();
    let conflict = |prefix: &str| SkipReason::PodCidrConflict {
        prefix: prefix.into(),
        holder: "z-old".into(),
    };
    assert_eq!(
        got,
        [
            ("a-new", conflict("10.4.1.0/24")),
            ("inside", conflict("10.4.1.128/25")),
            ("wide", conflict("10.4.0.0/20")),
        ]
    );
    assert_eq!(skipped[0].reason.label(), "pod_cidr_conflict");
}

#[test]
fn without_creation_times_the_name_decides() {
    let nodes = [
        node("b", Some(&key(1)), Some("1.1.1.1:1"), Some("10.4.1.0/24")),
        node("a", Some(&key(2)), Some("1.1.1.2:1"), Some("10.4.1.0/24")),
    ];
    let (peers, _) = desired_peers(nodes.iter(), &keys(), &subnet(), None);
    assert_eq!(peers[0].node, "a");
}

#[test]
fn a_node_with_our_own_key_is_skipped() {
    let nodes = [
        node(
            "copycat",
            Some(&key(7)),
            Some("1.1.1.1:1"),
            Some("10.4.1.0/24"),
        ),
        node(
            "fine",
            Some(&key(8)),
            Some("1.1.1.2:1"),
            Some("10.4.2.0/24"),
        ),
    ];
    let (peers, skipped) = desired_peers(nodes.iter(), &keys(), &subnet(), Some([7; 32]));
    assert_eq!(peers.len(), 1);
    assert_eq!(skipped[0].reason, SkipReason::OwnPublicKey);
    assert_eq!(skipped[0].reason.label(), "own_public_key");
}

#[test]
fn every_skip_kind_has_its_own_label() {
    let labels: std::collections::HashSet<_> = SkipKind::all().map(SkipKind::label).collect();
    assert_eq!(labels.len(), SkipKind::COUNT);
    assert!(labels.contains("pod_cidr_conflict") && labels.contains("own_public_key"));
}

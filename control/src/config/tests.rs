use std::time::Duration;

use super::*;

/// The error and its causes, as the binary prints them.
fn parse_err(text: &str) -> String {
    crate::error_chain(&parse(text).unwrap_err())
}

const TWO_REMOTES: &str = r#"{
  "local": { "name": "c1" },
  "remotes": [
    { "name": "c2", "remoteAPIURL": "https://lb.c2", "remoteCAURL": "https://ca.c2",
      "remoteSATokenPath": "/etc/t", "podSubnet": "10.4.0.0/16",
      "wgDeviceMTU": 1500, "wgListenPort": 51821, "resyncPeriod": "10s" },
    { "name": "c3", "kubeConfigPath": "/etc/kube/c3", "podSubnet": "10.5.0.1/16" }
  ]
}"#;

/// The original's `config_test.go` cases: full parse with explicit values and defaults
/// (and its kubeconfig-only remote, which the original could not actually start).
#[test]
fn full_parse_with_defaults() {
    let (c, warnings) = parse(TWO_REMOTES).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(c.local.name, "c1");
    assert_eq!(c.local.kube_config_path, None);
    let r = &c.remotes[0];
    assert_eq!(r.device_name(), "wireguard.c2");
    assert_eq!(
        (r.mtu, r.listen_port, r.resync_period),
        (1500, 51821, Duration::from_secs(10))
    );
    assert_eq!(
        r.access,
        RemoteAccess::Token {
            api_url: "https://lb.c2".into(),
            ca_url: "https://ca.c2".into(),
            token_path: "/etc/t".into()
        }
    );
    let r = &c.remotes[1];
    assert_eq!(
        (r.mtu, r.listen_port, r.resync_period),
        (1420, 51820, Duration::ZERO)
    );
    assert_eq!(r.access, RemoteAccess::KubeConfig("/etc/kube/c3".into()));
    assert_eq!(
        r.subnets,
        Subnets::pod_only(parse_cidr("10.5.0.0/16").unwrap())
    );
    assert!(!r.mesh);
}

#[test]
fn original_error_messages() {
    assert!(
        parse_err(r#"{"remotes":[]}"#).starts_with("Configuration is missing local cluster name")
    );
    assert!(
        parse_err(r#"{"local":{"name":"a"}}"#)
            .starts_with("No remote cluster configuration defined")
    );
    assert!(
        parse_err(r#"{"local":{"name":"a"},"remotes":[{"podSubnet":"10.0.0.0/8"}]}"#)
            .starts_with("Configuration is missing remote cluster name")
    );
    assert!(parse_err(r#"{"local":{"name":"a"},"remotes":[{"name":"b","remoteAPIURL":"x","podSubnet":"10.0.0.0/8"}]}"#)
        .starts_with("Insufficient configuration to create remote cluster client"));
    assert!(
        parse_err(r#"{"local":{"name":"a"},"remotes":[{"name":"b","kubeConfigPath":"k"}]}"#)
            .starts_with("No pod subnet defined for remote cluster")
    );
}

fn one_remote(extra: &str) -> String {
    format!(
        r#"{{"local":{{"name":"a"}},"remotes":[{{"name":"b","kubeConfigPath":"k","podSubnet":"10.0.0.0/16"{extra}}}]}}"#
    )
}

#[test]
fn resync_period_forms() {
    let period = |v: &str| {
        parse(&one_remote(&format!(r#","resyncPeriod":{v}"#)))
            .map(|(c, _)| c.remotes[0].resync_period)
    };
    assert_eq!(period(r#""10s""#).unwrap(), Duration::from_secs(10));
    assert_eq!(period(r#""1m30s""#).unwrap(), Duration::from_secs(90));
    assert_eq!(period(r#""1.5h""#).unwrap(), Duration::from_secs(5400));
    assert_eq!(period(r#""250ms""#).unwrap(), Duration::from_millis(250));
    assert_eq!(period(r#""0""#).unwrap(), Duration::ZERO);
    assert_eq!(period("10000000000").unwrap(), Duration::from_secs(10));
    assert_eq!(period("null").unwrap(), Duration::ZERO);
    for bad in [
        r#""10""#, r#""-1s""#, r#""1x""#, r#""""#, "-5", "true", r#""s""#,
    ] {
        let e = parse_err(&one_remote(&format!(r#","resyncPeriod":{bad}"#)));
        assert!(e.starts_with("remotes[0].resyncPeriod: "), "{bad}: {e}");
        assert!(matches!(
            period(bad),
            Err(ConfigError::InvalidDuration { .. })
        ));
    }
}

#[test]
fn fixed_gaps_of_the_original_name_the_field() {
    let two = |a: &str, b: &str| {
        format!(
            r#"{{"local":{{"name":"l"}},"remotes":[{{"name":"x","kubeConfigPath":"k","podSubnet":"10.0.0.0/16"{a}}},{{"name":"y","kubeConfigPath":"k","podSubnet":"10.1.0.0/16","wgListenPort":51821{b}}}]}}"#
        )
    };
    let e = parse_err(&two("", "").replace(r#""name":"y""#, r#""name":"x""#));
    assert!(
        e.contains("remotes[1].name") && e.contains("duplicate"),
        "{e}"
    );
    // Two remotes on the default port clash, as they would have in the original.
    let e = parse_err(&two("", "").replace(r#","wgListenPort":51821"#, ""));
    assert!(
        e.contains("remotes[1].wgListenPort") && e.contains("51820"),
        "{e}"
    );
    let e = parse_err(&two(r#","wgListenPort":5000"#, "").replace("51821", "5000"));
    assert!(e.contains("remotes[1].wgListenPort"), "{e}");
    let e = parse_err(&two("", "").replace("10.1.0.0/16", "10.0.128.0/17"));
    assert!(
        e.contains("remotes[1].podSubnet") && e.contains("overlaps"),
        "{e}"
    );
    let e = parse_err(&one_remote("").replace(r#""name":"b""#, r#""name":"cluster""#));
    assert!(
        e.contains("remotes[0].name") && e.contains("wireguard.cluster"),
        "{e}"
    );
    let e = parse_err(&one_remote("").replace(r#""name":"b""#, r#""name":"B_1""#));
    assert!(e.contains("remotes[0].name"), "{e}");
    let e = parse_err(&one_remote(r#","wgDeviceMTU":100"#));
    assert!(e.contains("remotes[0].wgDeviceMTU"), "{e}");
    let e = parse_err(&one_remote(r#","wgListenPort":70000"#));
    assert!(e.contains("remotes[0].wgListenPort"), "{e}");
    let e = parse_err(&one_remote("").replace("10.0.0.0/16", "10.0.0.0/33"));
    assert!(e.contains("remotes[0].podSubnet"), "{e}");
    assert!(parse_err("{not json").starts_with("invalid JSON"));
}

#[test]
fn unknown_fields_are_warnings() {
    let text = one_remote(r#","fullPeerResyncPeriod":"1m""#).replace(
        r#""local":{"name":"a"}"#,
        r#""local":{"name":"a","x":1},"extra":true"#,
    );
    let (_, w) = parse(&text).unwrap();
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(
        w.iter()
            .any(|m| m.contains("remotes[0].fullPeerResyncPeriod"))
    );
    assert!(w.iter().any(|m| m.contains("local.x")));
}

#[test]
fn five_character_names_fit() {
    let (c, _) = parse(&one_remote("").replace(r#""name":"b""#, r#""name":"abcde""#)).unwrap();
    assert_eq!(c.remotes[0].device_name().len(), 15);
}

/// The example shipped in deploy/ parses.
#[test]
fn deploy_example_parses() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/config.json"
    ))
    .unwrap();
    let (c, warnings) = parse(&text).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(c.remotes[0].device_name(), "wireguard.gcp");
}

#[test]
fn mass_removal_grace_period_defaults_to_five_minutes_and_zero_turns_it_off() {
    let grace = |extra: &str| {
        parse(&one_remote(extra)).map(|(c, _)| c.remotes[0].mass_removal_grace_period)
    };
    assert_eq!(grace("").unwrap(), Duration::from_secs(300));
    assert_eq!(
        grace(r#","massRemovalGracePeriod":"0""#).unwrap(),
        Duration::ZERO
    );
    assert_eq!(
        grace(r#","massRemovalGracePeriod":"90s""#).unwrap(),
        Duration::from_secs(90)
    );
    let e = parse_err(&one_remote(r#","massRemovalGracePeriod":"soon""#));
    assert!(e.starts_with("remotes[0].massRemovalGracePeriod: "), "{e}");
}

#[test]
fn a_name_too_long_for_the_device_says_how_to_fix_it() {
    let text = one_remote("").replace(r#""name":"b""#, r#""name":"production""#);
    let e = parse_err(&text);
    assert!(e.contains("remotes[0].name"), "{e}");
    assert!(e.contains("\"wireguard.production\" is 20 bytes"), "{e}");
    assert!(e.contains("set \"wgDeviceName\""), "{e}");
    assert!(
        e.contains("\"wg.production\""),
        "a suggestion that fits: {e}"
    );
    // The suggestion itself is accepted.
    let fixed = one_remote(r#","wgDeviceName":"wg.production""#)
        .replace(r#""name":"b""#, r#""name":"production""#);
    let (c, warnings) = parse(&fixed).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let r = &c.remotes[0];
    assert_eq!(r.device_name(), "wg.production");
    // Key file and saved peers keep the cluster's name.
    assert_eq!(r.file_stem(), "wireguard.production");
    // Without wgDeviceName both are wireguard.<name>.
    let (c, _) = parse(&one_remote("")).unwrap();
    assert_eq!(c.remotes[0].device_name(), c.remotes[0].file_stem());
}

#[test]
fn wg_device_name_is_checked() {
    for bad in ["", "a-name-of-16-byt", "has space", "a/b", "a:b", ".", ".."] {
        let text = one_remote(&format!(r#","wgDeviceName":{bad:?}"#));
        if bad.is_empty() {
            // Empty is the same as not set.
            assert_eq!(
                parse(&text).unwrap().0.remotes[0].device_name(),
                "wireguard.b"
            );
            continue;
        }
        let e = parse_err(&text);
        assert!(
            e.contains("remotes[0].wgDeviceName") && e.contains("not a valid interface name"),
            "{bad:?}: {e}"
        );
    }
    for good in ["wg0", "wg.long-name_1", "abcdefghijklmno"] {
        let text = one_remote(&format!(r#","wgDeviceName":{good:?}"#));
        assert_eq!(parse(&text).unwrap().0.remotes[0].device_name(), good);
    }
    // Two remotes on one interface.
    let text = TWO_REMOTES
        .replace(
            r#""name": "c2","#,
            r#""name": "c2", "wgDeviceName": "wg-x","#,
        )
        .replace(
            r#""name": "c3","#,
            r#""name": "c3", "wgDeviceName": "wg-x","#,
        );
    let e = parse_err(&text);
    assert!(
        e.contains("remotes[1].wgDeviceName")
            && e.contains("\"wg-x\" is already used by remotes[0]"),
        "{e}"
    );
}

#[test]
fn a_remote_named_after_the_local_cluster_is_the_mesh() {
    // No access fields: the local cluster's kubeconfig, or in-cluster without one.
    let text = r#"{"local":{"name":"aws","kubeConfigPath":"/k/local"},"remotes":[
        {"name":"gcp","kubeConfigPath":"/k/gcp","podSubnet":"10.4.0.0/16"},
        {"name":"aws","podSubnet":"10.2.0.0/16","wgListenPort":51821}]}"#;
    let (c, _) = parse(text).unwrap();
    assert!(!c.remotes[0].mesh);
    assert!(c.remotes[1].mesh);
    assert_eq!(
        c.remotes[1].access,
        RemoteAccess::KubeConfig("/k/local".into())
    );
    assert_eq!(c.remotes[1].device_name(), "wireguard.aws");
    let (c, _) = parse(&text.replace(r#","kubeConfigPath":"/k/local""#, "")).unwrap();
    assert_eq!(c.remotes[1].access, RemoteAccess::InCluster);
    // Other remotes still need their access.
    let e = parse_err(&text.replace(r#""kubeConfigPath":"/k/gcp","#, ""));
    assert!(e.starts_with("Insufficient configuration"), "{e}");
}

#[test]
fn dual_stack_pod_subnets_and_extra_subnets() {
    let (c, _) = parse(
        &one_remote(r#","extraSubnets":["10.96.0.0/12","192.168.9.0/24"]"#)
            .replace("10.0.0.0/16", "10.0.0.0/16,fd00:4::/48"),
    )
    .unwrap();
    let s = &c.remotes[0].subnets;
    assert_eq!(
        s.pod,
        [
            parse_cidr("10.0.0.0/16").unwrap(),
            parse_cidr("fd00:4::/48").unwrap()
        ]
    );
    assert_eq!(s.extra.len(), 2);
    assert_eq!(s.routed().count(), 4);
    let e = parse_err(&one_remote("").replace("10.0.0.0/16", "10.0.0.0/16,10.1.0.0/16"));
    assert!(
        e.contains("remotes[0].podSubnet") && e.contains("one address family"),
        "{e}"
    );
    let e = parse_err(&one_remote(r#","extraSubnets":["10.0.5.0/24"]"#));
    assert_eq!(
        e,
        "remotes[0].extraSubnets[0]: 10.0.5.0/24 overlaps 10.0.0.0/16 of remotes[0].podSubnet"
    );
    let e = parse_err(&one_remote(r#","extraSubnets":"10.96.0.0/12""#));
    assert!(e.starts_with("invalid config"), "{e}");
    // Another remote's extra subnet may not overlap this one's either.
    let two = r#"{"local":{"name":"l"},"remotes":[
        {"name":"x","kubeConfigPath":"k","podSubnet":"10.0.0.0/16","extraSubnets":["10.96.0.0/12"]},
        {"name":"y","kubeConfigPath":"k","podSubnet":"10.1.0.0/16","wgListenPort":51821,"extraSubnets":["10.100.0.0/16"]}]}"#;
    let e = parse_err(two);
    assert!(
        e.starts_with("remotes[1].extraSubnets: 10.100.0.0/16 overlaps 10.96.0.0/12"),
        "{e}"
    );
}

use super::*;

fn err(text: &str) -> String {
    parse(text, &Overrides::default()).unwrap_err().to_string()
}

const FULL: &str = r#"{
  "global": {
    "globalSvcLabelSelector": "g=true",
    "globalSvcRoutingStrategyLabel": "r=local-first",
    "mirrorSvcLabelSelector": "m=true",
    "mirrorNamespace": "sys-semaphore",
    "serviceSync": true,
    "endpointSliceSync": true
  },
  "localCluster": { "name": "local", "kubeConfigPath": "/ignored", "zones": ["z1", "z2"] },
  "remoteClusters": [
    { "name": "a", "remoteAPIURL": "https://a", "remoteCAURL": "https://ca.a",
      "remoteSATokenPath": "/t/a", "resyncPeriod": "10s", "servicePrefix": "a" },
    { "name": "b", "kubeConfigPath": "/k/b", "servicePrefix": "b" }
  ]
}"#;

/// The original's `config_test.go`: a full parse with the globals from the file.
#[test]
fn full_parse() {
    let c = parse(FULL, &Overrides::default()).unwrap();
    assert_eq!(c.global.mirror_namespace, "sys-semaphore");
    assert_eq!(c.global.global_svc_routing_strategy_label, "r=local-first");
    assert!(c.global.service_sync && c.global.endpoint_slice_sync);
    assert_eq!(c.local.zones, ["z1", "z2"]);
    assert_eq!(c.remotes.len(), 2);
    assert_eq!(c.remotes[0].resync_period, Duration::from_secs(10));
    assert_eq!(
        c.remotes[0].access,
        RemoteAccess::Token {
            api_url: "https://a".into(),
            ca_url: "https://ca.a".into(),
            token_path: "/t/a".into()
        }
    );
    assert_eq!(c.remotes[1].access, RemoteAccess::KubeConfig("/k/b".into()));
    assert_eq!(c.remotes[1].resync_period, Duration::ZERO);
}

/// §3.2: the order and the exact strings.
#[test]
fn the_original_messages_in_the_original_order() {
    assert!(err("{").starts_with("error unmarshalling config: "));
    assert_eq!(
        err("{}"),
        "Label selector for service mirroring should be specified either via global json config, env vars or flag"
    );
    assert_eq!(
        err(r#"{"global":{"mirrorSvcLabelSelector":"m"}}"#),
        "Label selector for global services should be specified either via global json config, env vars or flag"
    );
    let g = r#""mirrorSvcLabelSelector":"m","globalSvcLabelSelector":"g""#;
    assert_eq!(
        err(&format!(r#"{{"global":{{{g}}}}}"#)),
        "Label to enable topology aware hints for global services should be specified either via global json config, env vars or flag"
    );
    let g = format!(r#"{g},"globalSvcRoutingStrategyLabel":"r""#);
    assert_eq!(
        err(&format!(r#"{{"global":{{{g}}}}}"#)),
        "Local mirroring namespace should be specified either via global json config, env vars or flag"
    );
    let g = format!(r#"{g},"mirrorNamespace":"ns""#);
    assert_eq!(
        err(&format!(r#"{{"global":{{{g}}}}}"#)),
        "Configuration is missing local cluster name"
    );
    let base = format!(r#""global":{{{g}}},"localCluster":{{"name":"l"}}"#);
    assert_eq!(
        err(&format!("{{{base}}}")),
        "No remote cluster configuration defined"
    );
    assert_eq!(
        err(&format!(r#"{{{base},"remoteClusters":[]}}"#)),
        "No remote cluster configuration defined"
    );
    assert_eq!(
        err(&format!(
            r#"{{{base},"remoteClusters":[{{"servicePrefix":"x"}}]}}"#
        )),
        "Configuration is missing remote cluster name"
    );
    assert_eq!(
        err(&format!(
            r#"{{{base},"remoteClusters":[{{"name":"a","remoteAPIURL":"u"}}]}}"#
        )),
        "Insufficient configuration to create remote cluster client. Set kubeConfigPath or remoteAPIURL and remoteCAURL and remoteSATokenPath"
    );
    assert_eq!(
        err(&format!(
            r#"{{{base},"remoteClusters":[{{"name":"a","kubeConfigPath":"k"}}]}}"#
        )),
        "Configuration is missing a service prefix for services mirrored from the remote"
    );
}

/// A non-empty flag or variable beats the file; an empty one does not.
#[test]
fn overrides_beat_the_file() {
    let o = Overrides {
        mirror_namespace: "other".into(),
        global_svc_routing_strategy_label: "x=y".into(),
        ..Default::default()
    };
    let c = parse(FULL, &o).unwrap();
    assert_eq!(c.global.mirror_namespace, "other");
    assert_eq!(c.global.global_svc_routing_strategy_label, "x=y");
    assert_eq!(c.global.mirror_svc_label_selector, "m=true");
    // Everything from flags, nothing in the file's global block.
    let o = Overrides {
        mirror_namespace: "ns".into(),
        mirror_svc_label_selector: "m".into(),
        global_svc_label_selector: "g".into(),
        global_svc_routing_strategy_label: "r".into(),
    };
    let text = r#"{"localCluster":{"name":"l"},"remoteClusters":[{"name":"a","kubeConfigPath":"k","servicePrefix":"a"}]}"#;
    let c = parse(text, &o).unwrap();
    assert_eq!(c.local.zones, ["local"], "zones default");
    assert!(!c.global.service_sync);
}

/// Go's encoding/json: keys case-insensitive, the last of repeated keys wins, unknown keys
/// ignored, wrong types fatal; durations as strings or nanoseconds.
#[test]
fn read_as_go_reads_it() {
    let text = FULL
        .replace("\"mirrorNamespace\"", "\"MIRRORNAMESPACE\"")
        .replace(
            "\"serviceSync\": true",
            "\"serviceSync\": true, \"ServiceSync\": false, \"globalSvcTopologyLabel\": \"old\"",
        );
    let c = parse(&text, &Overrides::default()).unwrap();
    assert_eq!(c.global.mirror_namespace, "sys-semaphore");
    assert!(!c.global.service_sync, "the last of the two keys");
    let e = err(&FULL.replace("\"serviceSync\": true", "\"serviceSync\": \"true\""));
    assert!(
        e.starts_with("error unmarshalling config: global.serviceSync"),
        "{e}"
    );
    let c = parse(&FULL.replace("\"10s\"", "10"), &Overrides::default()).unwrap();
    assert_eq!(c.remotes[0].resync_period, Duration::from_nanos(10));
    let e = err(&FULL.replace("\"10s\"", "\"10d\""));
    assert!(e.contains("remoteClusters[0].resyncPeriod"), "{e}");
    // The original panicked on a null remote.
    let e = err(&FULL.replace(r#""remoteClusters": ["#, r#""remoteClusters": [null,"#));
    assert!(e.contains("remoteClusters[0]: expected an object"), "{e}");
}

/// What the original accepted and then broke on.
#[test]
fn names_that_would_collide_are_refused() {
    let e = err(&FULL.replace(r#""servicePrefix": "b""#, r#""servicePrefix": "a""#));
    assert_eq!(
        e,
        "remoteClusters[1].servicePrefix: \"a\" is already used by remoteClusters[0]"
    );
    let e = err(&FULL.replace(r#""name": "b""#, r#""name": "a""#));
    assert!(e.starts_with("remoteClusters[1].name"), "{e}");
    let e = err(&FULL.replace(r#""name": "b""#, r#""name": "local""#));
    assert!(e.contains("localCluster.name"), "{e}");
    let e = err(&FULL.replace(r#""servicePrefix": "b""#, r#""servicePrefix": "B_x""#));
    assert!(e.contains("must be a lowercase DNS label"), "{e}");
}

/// The example shipped in deploy/mirror/ parses, mirrors into the namespace the
/// Deployment runs in, and reads the token where the Deployment mounts it.
#[test]
fn deploy_example_parses() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/mirror");
    let text = std::fs::read_to_string(format!("{dir}/config.json")).unwrap();
    let c = parse(&text, &Overrides::default()).unwrap();
    let kustomization = std::fs::read_to_string(format!("{dir}/kustomization.yaml")).unwrap();
    assert!(
        kustomization.contains(&format!("\nnamespace: {}\n", c.global.mirror_namespace)),
        "the mirror namespace is the Deployment's"
    );
    let deployment = std::fs::read_to_string(format!("{dir}/deployment.yaml")).unwrap();
    let RemoteAccess::Token { token_path, .. } = &c.remotes[0].access else {
        panic!("the example uses a token: {:?}", c.remotes[0].access);
    };
    let mount = token_path.rsplit_once('/').unwrap().0;
    assert!(
        deployment.contains(&format!("mountPath: {mount}\n")),
        "{mount} is mounted"
    );
}

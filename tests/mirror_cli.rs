//! `semaphore-wireguard mirror`, the real binary, between two fake API servers: the
//! original's config and variables, objects mirrored, `/healthz` and `/metrics`, a clean
//! stop on SIGTERM, and the original's exit code and message for a bad config.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use fake_apiserver::Options;
use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use kube::api::{Api, ObjectMeta, PostParams};

const BIN: &str = env!("CARGO_BIN_EXE_semaphore-wireguard");

fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {url}\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n"
    )
}

fn client(url: &str) -> kube::Client {
    let mut config = kube::Config::new(url.parse().unwrap());
    config.auth_info.token = Some("t".to_string().into());
    kube::Client::try_from(config).unwrap()
}

async fn ns(c: &kube::Client, name: &str) {
    let n = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(c.clone())
        .create(&PostParams::default(), &n)
        .await
        .unwrap();
}

fn http(port: u16, path: &str) -> String {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_mirrors_serves_metrics_and_stops_cleanly() {
    let opts = || Options {
        token: Some("t".into()),
        ..Default::default()
    };
    let local = fake_apiserver::start("127.0.0.1:0".parse().unwrap(), opts())
        .await
        .unwrap();
    let remote = fake_apiserver::start("127.0.0.1:0".parse().unwrap(), opts())
        .await
        .unwrap();
    let (lc, rc) = (client(&local.url()), client(&remote.url()));
    ns(&lc, "sys").await;
    ns(&rc, "foo").await;
    let svc = Service {
        metadata: ObjectMeta {
            name: Some("bar".into()),
            labels: Some(BTreeMap::from([("m".to_string(), "true".to_string())])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    Api::<Service>::namespaced(rc.clone(), "foo")
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("swg-mirror-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("local.kubeconfig"), kubeconfig(&local.url())).unwrap();
    std::fs::write(dir.join("remote.kubeconfig"), kubeconfig(&remote.url())).unwrap();
    // The original's key spellings; the namespace comes from SSM_MIRROR_NS.
    let config = format!(
        r#"{{"global":{{"globalSvcLabelSelector":"g=true","globalSvcRoutingStrategyLabel":"r=local-first",
            "mirrorSvcLabelSelector":"m=true","serviceSync":true,"endpointSliceSync":true}},
           "localCluster":{{"name":"local"}},
           "remoteClusters":[{{"name":"a","kubeConfigPath":"{}","servicePrefix":"a"}}]}}"#,
        dir.join("remote.kubeconfig").display()
    );
    std::fs::write(dir.join("config.json"), config).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(BIN)
        .args(["mirror", "-config"])
        .arg(dir.join("config.json"))
        .arg(format!(
            "-kube-config={}",
            dir.join("local.kubeconfig").display()
        ))
        .args(["--listen-address", &format!("127.0.0.1:{port}")])
        .env("SSM_MIRROR_NS", "sys")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mirrors: Api<Service> = Api::namespaced(lc.clone(), "sys");
    let mut found = None;
    for _ in 0..100 {
        if let Some(m) = mirrors.get_opt("a-foo-73736d-bar").await.unwrap() {
            found = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = found.expect("the mirrored service");
    assert_eq!(m.metadata.labels.unwrap()["mirror-svc-prefix-sync"], "a");
    let health = http(port, "/healthz");
    assert!(
        health.starts_with("HTTP/1.0 200") || health.starts_with("HTTP/1.1 200"),
        "{health}"
    );
    let metrics = http(port, "/metrics");
    assert!(
        metrics.contains("semaphore_service_mirror_kube_http_request_total{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("semaphore_service_mirror_objects_created_total{runner=\"mirror-a\"} 1"),
        "{metrics}"
    );
    // SIGTERM: a clean exit, the mirror left in place.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut code = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            code = s.code();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if code.is_none() {
        let _ = child.kill();
    }
    assert_eq!(code, Some(0));
    assert!(mirrors.get_opt("a-foo-73736d-bar").await.unwrap().is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_config_exits_1_with_the_originals_message() {
    let dir = std::env::temp_dir().join(format!("swg-mirror-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("c.json"),
        r#"{"global":{"mirrorSvcLabelSelector":"m"}}"#,
    )
    .unwrap();
    // With SSM_CONFIG and no arguments, the binary is the mirror (the original's Deployment).
    let out = Command::new(BIN)
        .env("SSM_CONFIG", dir.join("c.json"))
        .env_remove("SWG_CLUSTERS_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Label selector for global services should be specified either via global json config, env vars or flag"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An unknown flag is a usage error: exit 2, as with Go's flag package.
#[test]
fn an_unknown_flag_exits_2() {
    let out = Command::new(BIN)
        .args(["mirror", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

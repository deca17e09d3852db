//! Shared by the controller tests against the fake API server: node fixtures, a server
//! with a token file, and a recording peer sink.
#![allow(dead_code)]

use std::sync::Mutex;
use std::time::Duration;

use control::config::RemoteAccess;
use control::peers::DesiredPeer;
use control::sync::{ApplyError, PeerSink};
use fake_apiserver::{FakeApiServer, Options};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub const KEY1: &str = "khSDFVjOxtkTKhuucfKihpbk697ckcY6tfmeUrtHtX0=";
pub const KEY2: &str = "Po+eOjaDgwxInV0MdfGgVDB/X2+87hMMDgZurYCi3WQ=";

pub fn node(name: &str, ip: &str, cidr: &str, ann: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(
                ann.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(cidr.into()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: ip.into(),
            }]),
            ..Default::default()
        }),
    }
}

pub fn advertised(name: &str, ip: &str, cidr: &str, key: &str) -> Node {
    node(
        name,
        ip,
        cidr,
        &[
            ("aws.wireguard.semaphore.uw.io/pubKey", key),
            (
                "aws.wireguard.semaphore.uw.io/endpoint",
                &format!("{ip}:51820"),
            ),
        ],
    )
}

/// A token file in its own temporary directory, removed with it when dropped.
pub struct TokenFile(std::path::PathBuf);

impl std::ops::Deref for TokenFile {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TokenFile {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub async fn server(token: &str) -> (FakeApiServer, TokenFile) {
    let opts = Options {
        token: Some(token.into()),
        ..Default::default()
    };
    let s = fake_apiserver::start("127.0.0.1:0".parse().unwrap(), opts)
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!(
        "swg-ctl-{}-{}",
        std::process::id(),
        s.addr().port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let tok = dir.join("token");
    std::fs::write(&tok, format!("{token}\n")).unwrap();
    (s, TokenFile(tok))
}

pub fn token_access(s: &FakeApiServer, token_path: &std::path::Path) -> RemoteAccess {
    RemoteAccess::Token {
        api_url: s.url(),
        ca_url: "http://unused.invalid/ca".into(),
        token_path: token_path.display().to_string(),
    }
}

/// Records every applied peer set, and plays the tunnel: it has the peers applied plus
/// those kept.
#[derive(Default)]
pub struct Recorder(
    pub Mutex<Vec<Vec<DesiredPeer>>>,
    pub Mutex<Vec<DesiredPeer>>,
);

impl PeerSink for Recorder {
    fn apply(&self, peers: &[DesiredPeer], keep: &[[u8; 32]]) -> Result<(), ApplyError> {
        let mut tunnel = self.1.lock().unwrap();
        let kept: Vec<DesiredPeer> = tunnel
            .iter()
            .filter(|p| keep.contains(&p.public_key))
            .cloned()
            .collect();
        *tunnel = peers.to_vec();
        tunnel.extend(kept);
        self.0.lock().unwrap().push(tunnel.clone());
        Ok(())
    }

    fn current_keys(&self) -> Vec<[u8; 32]> {
        self.1
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.public_key)
            .collect()
    }
}

impl Recorder {
    pub fn last_nodes(&self) -> Option<Vec<String>> {
        self.0.lock().unwrap().last().map(|p| {
            let mut n: Vec<String> = p.iter().map(|d| d.node.clone()).collect();
            n.sort();
            n
        })
    }
}

pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

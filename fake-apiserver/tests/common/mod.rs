//! Helpers shared by the integration tests: servers, real kube clients, nodes.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use fake_apiserver::{FakeApiServer, Options};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, Client};

/// Upper bound for any single wait in the tests.
pub const WAIT: Duration = Duration::from_secs(8);

/// Starts a server on a free loopback port with `opts` and preloads `nodes`.
pub async fn server_with(opts: Options, nodes: &[Node]) -> FakeApiServer {
    let server = fake_apiserver::start("127.0.0.1:0".parse().unwrap(), opts)
        .await
        .expect("start fake apiserver");
    for node in nodes {
        server.upsert_node(node.clone());
    }
    server
}

/// Starts a server with default options and preloads `nodes`.
pub async fn server(nodes: &[Node]) -> FakeApiServer {
    server_with(Options::default(), nodes).await
}

/// A real `kube::Client` for `url`, optionally with a bearer token.
pub fn client(url: &str, token: Option<&str>) -> Client {
    let mut config = kube::Config::new(url.parse().expect("server url"));
    config.auth_info.token = token.map(Into::into);
    Client::try_from(config).expect("kube client")
}

/// `Api<Node>` against `server` without a token.
pub fn nodes_api(server: &FakeApiServer) -> Api<Node> {
    Api::all(client(&server.url(), None))
}

/// A node with labels.
pub fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A node's annotations (empty map when unset).
pub fn annotations(node: &Node) -> BTreeMap<String, String> {
    node.metadata.annotations.clone().unwrap_or_default()
}

/// Awaits `fut`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Polls `check` every 20 ms until it returns true, failing after [`WAIT`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    within(what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The message of a kube API error (panics on other errors).
pub fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The HTTP status code of an API error.
pub fn api_code(error: &kube::Error) -> u16 {
    match error {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

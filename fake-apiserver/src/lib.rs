//! A fake Kubernetes API server for tests.
//!
//! **This is a test double of the subset of the Kubernetes API that the
//! semaphore-wireguard agent and its service mirror use — core/v1 `Nodes`, the
//! `Leases` of leader election, and `Namespaces`, `Services`, `Endpoints` and
//! `EndpointSlices` (`objects.rs`) — not a general
//! apiserver.** It speaks real HTTP/1.1, so the real `kube::Client` and
//! `kube::runtime::watcher` work against it over loopback, and it lets tests
//! drive the situations a real cluster produces only occasionally: watch
//! connections dropping, `410 Expired` after compaction, transient 5xx errors,
//! and token rotation.
//!
//! What it implements:
//!
//! * `GET /api/v1/nodes`: `NodeList` with the current resourceVersion; label
//!   selectors (`k=v`, `k!=v`, `k`, `!k`, `k in (…)`, `k notin (…)`) and the
//!   `metadata.name` field selector; `limit` and `continue` page through one
//!   snapshot (a token whose snapshot is gone gets 410 `Expired`).
//! * `GET /api/v1/nodes?watch=true`: newline-delimited JSON events, resumable
//!   from any resourceVersion still in the retained history (older ones get a
//!   single `ERROR` event with a 410 `Expired` `Status`, like the real
//!   apiserver), `allowWatchBookmarks`, `timeoutSeconds`, selectors (a node
//!   leaving a label selector is sent as `DELETED`), and `sendInitialEvents`.
//! * `GET`/`PUT`/`PATCH`/`DELETE /api/v1/nodes/{name}`, `POST /api/v1/nodes`.
//!   PATCH takes merge and strategic-merge patches, both applied as an RFC 7386
//!   merge patch (identical for the string maps a node agent patches); apply
//!   and JSON patches get 415.
//! * coordination.k8s.io/v1 Leases under
//!   `/apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]`: get, list, create,
//!   replace (a stale resourceVersion gets 409 Conflict) and delete, enough for leader
//!   election; no watch.
//! * Optional bearer-token auth on `/api…`, `Status` bodies for every error,
//!   `/version`, `/api`, `/api/v1` and `/apis` for discovery probes.
//! * `/fake/…` admin endpoints (no auth) mirroring [`FakeApiServer`]'s
//!   control methods, for shell-driven tests.
//!
//! Everything else (namespaces, other kinds, server-side apply, dry-run,
//! field managers, admission, pagination, HTTP/2, TLS) is deliberately absent.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let server = fake_apiserver::start("127.0.0.1:0".parse().unwrap(), Default::default()).await?;
//! println!("point kube::Config::new at {}", server.url());
//! server.drop_watches();
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod admin;
mod api;
mod discovery;
mod kinds;
mod leases;
mod merge_patch;
mod objects;
mod objects_api;
mod pages;
mod selector;
mod server;
mod shared;
mod status;
mod store;
mod watch;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;

pub use server::{FakeApiServer, start};
pub use status::Error;

/// Server settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Bearer token every `/api…` request must carry; `None` disables auth.
    pub token: Option<String>,
    /// How often watches that allow bookmarks get a BOOKMARK event (default 1 s).
    pub bookmark_interval: Duration,
    /// How many events are kept for watch resumption (default 1000). A watch
    /// from a resourceVersion older than the kept events gets 410 Expired.
    pub history: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token: None,
            bookmark_interval: Duration::from_secs(1),
            history: 1000,
        }
    }
}

/// Reads Nodes to preload from a JSON file holding an array of Node objects
/// (a `NodeList`-shaped object with `items` is accepted too).
pub fn load_nodes_file(path: &Path) -> Result<Vec<Node>, Error> {
    let shown = path.display().to_string();
    let text = std::fs::read(path).map_err(|source| Error::Read {
        path: shown.clone(),
        source,
    })?;
    let parse = |source| Error::Parse {
        path: shown.clone(),
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(parse)?;
    let items = match value {
        serde_json::Value::Object(mut list) if list.contains_key("items") => {
            list.remove("items").unwrap_or_default()
        }
        other => other,
    };
    let nodes: Vec<Node> = serde_json::from_value(items).map_err(parse)?;
    if let Some(index) = nodes
        .iter()
        .position(|n| n.metadata.name.as_deref().unwrap_or_default().is_empty())
    {
        return Err(Error::Nameless { path: shown, index });
    }
    Ok(nodes)
}

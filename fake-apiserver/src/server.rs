//! Server start-up, shared state, and the [`FakeApiServer`] control handle.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use k8s_openapi::api::core::v1::Node;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Options;
use crate::pages::Pages;
use crate::shared::{Faults, Shared, lock};
use crate::store::Store;
use crate::{admin, api, discovery, leases};

/// Handle to a running fake API server. Cloning is cheap; all clones control
/// the same server.
#[derive(Clone)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// Binds `addr` (port 0 picks a free port), spawns the server on the current
/// tokio runtime and returns its handle.
pub async fn start(addr: SocketAddr, opts: Options) -> std::io::Result<FakeApiServer> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        store: Mutex::new(Store::new(opts.history)),
        leases: Mutex::new(Default::default()),
        objects: Mutex::new(crate::objects::ObjectStore::new(opts.history)),
        pages: Mutex::new(Pages::default()),
        token: Mutex::new(opts.token),
        faults: Mutex::new(Faults::default()),
        requests: Mutex::new(Vec::new()),
        drops: watch::Sender::new(0),
        shutdown: watch::Sender::new(false),
        bookmark_interval: opts.bookmark_interval,
        open_watches: AtomicUsize::new(0),
    });
    let router = Router::new()
        .merge(api::routes())
        .merge(leases::routes())
        .merge(crate::objects_api::routes())
        .merge(discovery::routes())
        .merge(admin::routes())
        .fallback(discovery::not_found)
        .method_not_allowed_fallback(discovery::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            admin::guard,
        ))
        .with_state(Arc::clone(&shared));
    let mut stop = shared.shutdown.subscribe();
    let listener = listener.tap_io(|tcp| {
        // Watch events are small writes; do not let Nagle hold them back.
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        });
        if let Err(error) = serve.await {
            tracing::error!(%error, "fake apiserver stopped");
        }
    });
    tracing::info!(%addr, "fake apiserver listening");
    Ok(FakeApiServer {
        shared,
        addr,
        task: Arc::new(Mutex::new(Some(task))),
    })
}

impl FakeApiServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates or replaces a node, as a write through the API would: bumps
    /// the resourceVersion, fills in `uid` and `creationTimestamp` when
    /// missing, and emits ADDED or MODIFIED. Returns the stored node.
    ///
    /// # Panics
    /// If the node has no `metadata.name`.
    pub fn upsert_node(&self, node: Node) -> Node {
        match self.shared.store().upsert(node) {
            Ok(node) => node,
            Err(error) => panic!("upsert_node: {error}"),
        }
    }

    /// Deletes a node and emits DELETED. Returns whether it existed.
    pub fn delete_node(&self, name: &str) -> bool {
        self.shared.store().delete(name).is_some()
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<Node> {
        self.shared.store().get(name)
    }

    /// All nodes, ordered by name.
    pub fn nodes(&self) -> Vec<Node> {
        self.shared.store().list()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().rv()
    }

    /// Sets (or with `None` removes) the bearer token every `/api` request
    /// must carry. Takes effect for the next request.
    pub fn set_token(&self, token: Option<String>) {
        *lock(&self.shared.token) = token;
    }

    /// Makes the next `count` API requests (`/api…` paths, watches included)
    /// fail with HTTP `status` and a matching `Status` body.
    pub fn fail_next(&self, count: usize, status: u16) {
        self.shared.fail_next(count, status);
    }

    /// Cuts every open watch connection mid-stream, as an apiserver restart
    /// or a network failure would.
    pub fn drop_watches(&self) {
        self.shared.drop_watches();
    }

    /// How many watch responses are streaming right now. Useful to wait until
    /// a client's watch is established before calling [`drop_watches`](Self::drop_watches).
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    /// Forgets all watch history: every resourceVersion handed out so far
    /// becomes too old, so resuming a watch from it gets 410 Expired and the
    /// client must re-list. (The resourceVersion is bumped once to make this
    /// hold even for the latest one; open watches carry on.)
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Every request received so far except `/fake/…` ones, as
    /// `"METHOD path?query"` (query as sent, still percent-encoded).
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.requests).clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Ends open watches, stops accepting connections and waits (up to 5 s)
    /// for in-flight requests before aborting the server task.
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        let task = lock(&self.task).take();
        if let Some(mut task) = task
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

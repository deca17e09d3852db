//! The HTTP endpoints on `-listen-address`: `/healthz`, `/readyz`, `/metrics`.

use std::net::SocketAddr;
use std::os::fd::{AsFd as _, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

use crate::state::AppState;

#[derive(Clone)]
struct Ctx {
    state: Arc<AppState>,
    registry: Arc<Registry>,
}

/// Go's `:7773` form means all addresses.
pub fn parse_listen(addr: &str) -> anyhow::Result<SocketAddr> {
    let full = if addr.starts_with(':') {
        format!("[::]{addr}")
    } else {
        addr.to_string()
    };
    full.parse()
        .with_context(|| format!("invalid listen address {addr:?}"))
}

/// Binds `addr` (failing fast).
pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    Ok(listener)
}

/// The HTTP server over one listening socket that it keeps: it can pause (stop accepting,
/// while connections wait in the socket's backlog) and hand the socket to a successor
/// (see `takeover.rs`), or resume.
pub struct HttpServer {
    listener: std::net::TcpListener,
    app: Router,
    running: Mutex<Option<Running>>,
}

struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// Serves `listener` (bound here, or handed over by the agent we took over from).
    pub fn start(listener: std::net::TcpListener, state: Arc<AppState>) -> anyhow::Result<Self> {
        listener.set_nonblocking(true)?;
        let registry = Arc::new(crate::metrics::registry(Arc::clone(&state)));
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(Ctx { state, registry });
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(address = %addr, "serving /healthz, /readyz and /metrics");
        }
        let server = Self {
            listener,
            app,
            running: Mutex::new(None),
        };
        server.resume();
        Ok(server)
    }

    /// Starts accepting again (after [`HttpServer::pause`]); a no-op while serving.
    pub fn resume(&self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.is_some() {
            return;
        }
        let listener = match self
            .listener
            .try_clone()
            .and_then(tokio::net::TcpListener::from_std)
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot serve HTTP");
                return;
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let app = self.app.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
            {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        *running = Some(Running { stop, task });
    }

    /// Stops accepting (requests in flight finish, for up to 2 s) and returns another
    /// descriptor of the listening socket, for a successor.
    pub async fn pause(&self) -> std::io::Result<OwnedFd> {
        self.stop().await;
        self.listener.as_fd().try_clone_to_owned()
    }

    /// Stops serving for good.
    pub async fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(r) = running {
            let _ = r.stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(2), r.task).await;
        }
    }
}

fn answer(r: Result<(), String>) -> (StatusCode, String) {
    match r {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

async fn healthz(State(c): State<Ctx>) -> impl IntoResponse {
    answer(c.state.healthy())
}

async fn readyz(State(c): State<Ctx>) -> impl IntoResponse {
    answer(c.state.ready())
}

async fn metrics(State(c): State<Ctx>) -> impl IntoResponse {
    let body = crate::metrics::render(&c.registry);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

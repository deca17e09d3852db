//! The HTTP endpoints on `-listen-address`: `/healthz`, `/readyz`, `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

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

/// Binds `addr` (failing fast) and serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let registry = Arc::new(crate::metrics::registry(Arc::clone(&state)));
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Ctx { state, registry });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(address = %addr, "serving /healthz, /readyz and /metrics");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "HTTP server failed");
        }
    }))
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

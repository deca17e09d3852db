//! The request guard (request log, bearer-token auth, injected failures) and
//! the unauthenticated `/fake/…` admin endpoints for shell-driven tests.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::shared::{Shared, lock};
use crate::status::{ApiError, json_response};

/// The `/fake/…` routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/fake/fail", post(fail))
        .route("/fake/drop-watches", post(drop_watches))
        .route("/fake/compact", post(compact))
        .route("/fake/requests", get(requests))
}

/// Whether `path` is a Kubernetes API path (auth and fault injection apply).
fn is_api_path(path: &str) -> bool {
    ["/api", "/apis"].iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Runs before every handler: logs the request (unless it is an admin one),
/// then for API paths checks the bearer token and applies injected failures.
pub(crate) async fn guard(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if !path.starts_with("/fake/") {
        let target = request
            .uri()
            .path_and_query()
            .map_or(path, |pq| pq.as_str());
        let entry = format!("{} {target}", request.method());
        tracing::debug!(request = %entry, "request");
        lock(&shared.requests).push(entry);
    }
    if is_api_path(path) {
        if let Some(token) = lock(&shared.token).clone() {
            let presented = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if presented != Some(token.as_str()) {
                return ApiError::Unauthorized.into_response();
            }
        }
        if let Some(status) = shared.take_fault() {
            tracing::debug!(status, "injecting failure");
            return ApiError::Injected(status).into_response();
        }
    }
    next.run(request).await
}

#[derive(Debug, Deserialize)]
struct FailQuery {
    count: Option<usize>,
    status: Option<u16>,
}

/// `POST /fake/fail?count=N&status=S` (defaults: 1, 500).
async fn fail(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<FailQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|r| ApiError::BadRequest(r.body_text()))?;
    let count = query.count.unwrap_or(1);
    let status = query.status.unwrap_or(500);
    if !(400..=599).contains(&status) {
        return Err(ApiError::BadRequest(format!(
            "status must be 400..=599, got {status}"
        )));
    }
    shared.fail_next(count, status);
    Ok(ok(json!({ "count": count, "status": status })))
}

/// `POST /fake/drop-watches`.
async fn drop_watches(State(shared): State<Arc<Shared>>) -> Response {
    shared.drop_watches();
    ok(json!({}))
}

/// `POST /fake/compact`.
async fn compact(State(shared): State<Arc<Shared>>) -> Response {
    let mut store = shared.store();
    store.compact();
    let rv = store.rv();
    drop(store);
    ok(json!({ "resourceVersion": rv.to_string() }))
}

/// `GET /fake/requests`: the request log as a JSON array of strings.
async fn requests(State(shared): State<Arc<Shared>>) -> Response {
    let log = lock(&shared.requests).clone();
    json_response(StatusCode::OK, &Value::from(log))
}

fn ok(mut details: Value) -> Response {
    details["ok"] = Value::Bool(true);
    json_response(StatusCode::OK, &details)
}

#[cfg(test)]
mod tests {
    use super::is_api_path;

    #[test]
    fn api_paths() {
        assert!(is_api_path("/api"));
        assert!(is_api_path("/api/v1/nodes"));
        assert!(is_api_path("/apis"));
        assert!(!is_api_path("/apix"));
        assert!(!is_api_path("/version"));
        assert!(!is_api_path("/fake/compact"));
    }
}

//! The core/v1 Node endpoints: list, watch, get, create, replace, patch, delete.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::core::v1::Node;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::selector::Selector;
use crate::shared::{Shared, lock};
use crate::status::{ApiError, expired_event, json_response};
use crate::store::WatchStart;
use crate::watch::{WatchRequest, event_stream, line};

type ApiResult = Result<Response, ApiError>;

/// The routes under `/api/v1/nodes`.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/nodes", get(list_or_watch).post(create))
        .route(
            "/api/v1/nodes/{name}",
            get(read).put(replace).patch(patch).delete(delete),
        )
}

/// Query parameters of `GET /api/v1/nodes`. `resourceVersionMatch` is accepted and
/// ignored; `limit` and `continue` page (see `pages.rs`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CollectionQuery {
    watch: Option<String>,
    resource_version: Option<String>,
    allow_watch_bookmarks: Option<String>,
    timeout_seconds: Option<String>,
    label_selector: Option<String>,
    field_selector: Option<String>,
    send_initial_events: Option<String>,
    limit: Option<String>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
}

fn is_true(value: Option<&str>) -> bool {
    matches!(value, Some("true" | "1"))
}

fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::BadRequest(rejection.body_text())
}

async fn list_or_watch(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<CollectionQuery>, QueryRejection>,
) -> ApiResult {
    let Query(query) = query.map_err(bad_query)?;
    let selector = Selector::parse(
        query.label_selector.as_deref(),
        query.field_selector.as_deref(),
    )?;
    if is_true(query.watch.as_deref()) {
        return watch(&shared, &query, selector);
    }
    let limit = match query.limit.as_deref() {
        None | Some("" | "0") => usize::MAX,
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::BadRequest(format!("invalid limit: {l:?}")))?,
    };
    let page = match query.continue_token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => lock(&shared.pages).next(token, limit)?,
        None => {
            let store = shared.store();
            let nodes: Vec<Node> = store
                .list()
                .into_iter()
                .filter(|n| selector.matches(n))
                .collect();
            let rv = store.rv();
            drop(store);
            lock(&shared.pages).first(nodes, rv, limit)
        }
    };
    let mut metadata = json!({ "resourceVersion": page.rv.to_string() });
    if let Some(next) = page.next {
        metadata["continue"] = next.into();
        metadata["remainingItemCount"] = page.remaining.into();
    }
    let body = json!({
        "apiVersion": "v1",
        "kind": "NodeList",
        "metadata": metadata,
        "items": page.items,
    });
    Ok(json_response(StatusCode::OK, &body))
}

fn watch(shared: &Arc<Shared>, query: &CollectionQuery, selector: Selector) -> ApiResult {
    let from = match query.resource_version.as_deref() {
        None | Some("" | "0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid resource version: {rv:?}")))?,
        ),
    };
    let timeout = match query.timeout_seconds.as_deref() {
        // Like the apiserver, 0 means "no client-chosen timeout".
        None | Some("" | "0") => None,
        Some(secs) => Some(Duration::from_secs(secs.parse().map_err(|_| {
            ApiError::BadRequest(format!("invalid timeoutSeconds: {secs:?}"))
        })?)),
    };
    let initial_events_end = is_true(query.send_initial_events.as_deref());
    let request = WatchRequest {
        selector,
        bookmark_interval: is_true(query.allow_watch_bookmarks.as_deref())
            .then_some(shared.bookmark_interval),
        timeout,
        initial_events_end,
    };
    // With sendInitialEvents the client wants the current state first.
    let start = shared
        .store()
        .watch(if initial_events_end { None } else { from });
    let body = match start {
        WatchStart::Expired { oldest } => {
            let requested = query.resource_version.as_deref().unwrap_or_default();
            tracing::debug!(requested, oldest, "watch from a compacted resourceVersion");
            Body::from(line(&expired_event(requested, oldest)))
        }
        WatchStart::Ready(feed) => Body::from_stream(event_stream(shared, request, feed)),
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(response)
}

async fn read(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    let node = shared
        .store()
        .get(&name)
        .ok_or_else(|| ApiError::node_not_found(&name))?;
    node_response(StatusCode::OK, &node)
}

async fn create(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let node = parse_node(&body)?;
    let node = shared.store().create(node)?;
    node_response(StatusCode::CREATED, &node)
}

async fn replace(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let node = parse_node(&body)?;
    let mut store = shared.store();
    let existed = store.get(&name).is_some();
    let node = store.replace(&name, node)?;
    drop(store);
    node_response(
        if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        &node,
    )
}

/// Patch content types this double applies as an RFC 7386 merge patch.
const MERGE_TYPES: [&str; 2] = [
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

async fn patch(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if !MERGE_TYPES.contains(&media_type) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format ({media_type:?}) - this test \
             double accepts: {}",
            MERGE_TYPES.join(", ")
        )));
    }
    let patch: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("error decoding patch: {e}")))?;
    let node = shared.store().patch(&name, &patch)?;
    node_response(StatusCode::OK, &node)
}

async fn delete(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    let node = shared
        .store()
        .delete(&name)
        .ok_or_else(|| ApiError::node_not_found(&name))?;
    node_response(StatusCode::OK, &node)
}

fn parse_node(body: &[u8]) -> Result<Node, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("error decoding Node: {e}")))
}

fn node_response(code: StatusCode, node: &Node) -> ApiResult {
    let value = serde_json::to_value(node)
        .map_err(|e| ApiError::Invalid(format!("serialising node: {e}")))?;
    Ok(json_response(code, &value))
}

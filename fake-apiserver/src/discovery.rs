//! Just enough discovery (`/version`, `/api`, `/api/v1`, `/apis`) for simple
//! clients and `kubectl` probes, plus the 404/405 fallbacks.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::json;

use crate::shared::Shared;
use crate::status::{ApiError, json_response};

/// The discovery routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/version", get(version))
        .route("/api", get(api_versions))
        .route("/api/v1", get(core_v1_resources))
        .route("/apis", get(api_groups))
}

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "major": "1",
            "minor": "33",
            "gitVersion": "v1.33.0-fake",
            "platform": "linux/amd64",
        }),
    )
}

async fn api_versions() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [],
        }),
    )
}

async fn core_v1_resources() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": "v1",
            "resources": [{
                "name": "nodes",
                "singularName": "node",
                "namespaced": false,
                "kind": "Node",
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                "shortNames": ["no"],
            }],
        }),
    )
}

async fn api_groups() -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": [] }),
    )
}

/// 404 `Status` for every path this double does not serve.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("the server could not find the requested resource".into())
}

/// 405 `Status` for a served path with an unsupported method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

//! coordination.k8s.io/v1 `Leases`, as far as leader election uses them: get, create,
//! replace with optimistic concurrency (a stale resourceVersion gets 409 Conflict), delete,
//! and a plain list. resourceVersions come from the node store's global counter, as one
//! etcd revision would. No watch: candidates poll their Lease.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use k8s_openapi::api::coordination::v1::Lease;
use serde_json::json;

use crate::shared::{Leases, Shared, lock};
use crate::status::{ApiError, json_response};

type ApiResult = Result<Response, ApiError>;

const BASE: &str = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases";

/// The Lease routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route(BASE, get(list).post(create)).route(
        &format!("{BASE}/{{name}}"),
        get(read).put(replace).delete(delete),
    )
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("leases.coordination.k8s.io \"{name}\" not found"))
}

fn parse(body: &[u8]) -> Result<Lease, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("error decoding Lease: {e}")))
}

fn respond(code: StatusCode, lease: &Lease) -> ApiResult {
    let mut value = serde_json::to_value(lease)
        .map_err(|e| ApiError::Invalid(format!("serialising lease: {e}")))?;
    value["apiVersion"] = "coordination.k8s.io/v1".into();
    value["kind"] = "Lease".into();
    Ok(json_response(code, &value))
}

/// Stamps a new resourceVersion on `lease` and stores it in `leases` (held by the caller
/// since its check, so that check and write are one step, as in etcd).
fn commit(shared: &Shared, leases: &mut Leases, ns: &str, mut lease: Lease) -> Lease {
    let rv = shared.store().bump_rv();
    lease.metadata.namespace = Some(ns.to_string());
    lease.metadata.resource_version = Some(rv.to_string());
    let name = lease.metadata.name.clone().unwrap_or_default();
    leases.insert((ns.to_string(), name), lease.clone());
    lease
}

async fn list(State(shared): State<Arc<Shared>>, Path(ns): Path<String>) -> ApiResult {
    let items: Vec<Lease> = lock(&shared.leases)
        .iter()
        .filter(|((n, _), _)| *n == ns)
        .map(|(_, l)| l.clone())
        .collect();
    let rv = shared.store().rv();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "LeaseList",
            "metadata": { "resourceVersion": rv.to_string() },
            "items": items,
        }),
    ))
}

async fn read(
    State(shared): State<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult {
    let lease = lock(&shared.leases)
        .get(&(ns, name.clone()))
        .cloned()
        .ok_or_else(|| not_found(&name))?;
    respond(StatusCode::OK, &lease)
}

async fn create(
    State(shared): State<Arc<Shared>>,
    Path(ns): Path<String>,
    body: Bytes,
) -> ApiResult {
    let lease = parse(&body)?;
    let name = match lease.metadata.name.as_deref() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => return Err(ApiError::BadRequest("metadata.name is required".into())),
    };
    let mut leases = lock(&shared.leases);
    if leases.contains_key(&(ns.clone(), name.clone())) {
        return Err(ApiError::AlreadyExists {
            resource: "leases".into(),
            name,
        });
    }
    let lease = commit(&shared, &mut leases, &ns, lease);
    drop(leases);
    respond(StatusCode::CREATED, &lease)
}

async fn replace(
    State(shared): State<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let lease = parse(&body)?;
    if lease.metadata.name.as_deref() != Some(name.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            lease.metadata.name.as_deref().unwrap_or_default()
        )));
    }
    let mut leases = lock(&shared.leases);
    let Some(current) = leases.get(&(ns.clone(), name.clone())) else {
        return Err(not_found(&name));
    };
    if lease.metadata.resource_version.is_some()
        && lease.metadata.resource_version != current.metadata.resource_version
    {
        return Err(ApiError::Conflict(format!(
            "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object \
             has been modified; please apply your changes to the latest version and try again"
        )));
    }
    let lease = commit(&shared, &mut leases, &ns, lease);
    drop(leases);
    respond(StatusCode::OK, &lease)
}

async fn delete(
    State(shared): State<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult {
    let lease = lock(&shared.leases)
        .remove(&(ns, name.clone()))
        .ok_or_else(|| not_found(&name))?;
    respond(StatusCode::OK, &lease)
}

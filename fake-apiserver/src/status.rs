//! `metav1.Status` error bodies and the crate's error types.
//!
//! Every failing API request is answered with a Kubernetes `Status` object
//! whose `code` equals the HTTP status and whose `reason` is the canonical
//! `StatusReason` for it, so `kube::Error::Api` carries the right values.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An error answered to an API client as a `metav1.Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed request (bad JSON, unsupported selector, name mismatch).
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing or wrong bearer token.
    #[error("Unauthorized")]
    Unauthorized,
    /// 404: no node with that name, or an unknown path.
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists but not for this method.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// 409: create of an object that already exists.
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        /// The resource (`nodes`, `leases`, `services` …).
        resource: String,
        /// The object's name.
        name: String,
    },
    /// 409: optimistic-concurrency failure on update.
    #[error("{0}")]
    Conflict(String),
    /// 410: a `continue` token whose list snapshot is gone.
    #[error("{0}")]
    Expired(String),
    /// 415: a patch type this double does not implement.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: the result of a patch is not a valid Node.
    #[error("{0}")]
    Invalid(String),
    /// Any status injected with `fail_next`.
    #[error("injected failure ({0})")]
    Injected(u16),
}

impl ApiError {
    /// Shortcut for the 404 of a named node.
    pub fn node_not_found(name: &str) -> Self {
        ApiError::NotFound(format!("nodes \"{name}\" not found"))
    }

    /// The HTTP status code of this error.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized => 401,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::AlreadyExists { .. } | ApiError::Conflict(_) => 409,
            ApiError::Expired(_) => 410,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Invalid(_) => 422,
            ApiError::Injected(code) => *code,
        }
    }

    /// The `metav1.StatusReason` of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            other => reason_for_code(other.code()),
        }
    }

    /// The full `Status` object for this error.
    pub fn to_status(&self) -> Value {
        failure_status(self.code(), self.reason(), &self.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(code, &self.to_status())
    }
}

/// The canonical `StatusReason` Kubernetes uses for an HTTP status code.
pub fn reason_for_code(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

/// A `Status` with `status: Failure`.
pub fn failure_status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// The `ERROR` watch event the apiserver sends when a watch asks for a
/// resourceVersion that is no longer in its history.
pub fn expired_event(requested: &str, oldest: u64) -> Value {
    json!({
        "type": "ERROR",
        "object": failure_status(
            410,
            "Expired",
            &format!("too old resource version: {requested} ({oldest})"),
        ),
    })
}

/// Serialises `body` as an `application/json` response.
pub fn json_response(code: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (code, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Errors of the library's non-HTTP entry points.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The nodes file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file that failed.
        path: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The nodes file is not a JSON array of Nodes (nor a NodeList).
    #[error("parsing {path}: {source}")]
    Parse {
        /// The file that failed.
        path: String,
        /// The underlying JSON error.
        source: serde_json::Error,
    },
    /// A node in the file has no `metadata.name`.
    #[error("{path}: node #{index} has no metadata.name")]
    Nameless {
        /// The file that failed.
        path: String,
        /// Position of the nameless node in the file.
        index: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_has_code_and_reason() {
        let s = ApiError::node_not_found("n1").to_status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["kind"], "Status");
        assert_eq!(
            ApiError::AlreadyExists {
                resource: "nodes".into(),
                name: "a".into()
            }
            .reason(),
            "AlreadyExists"
        );
        assert_eq!(ApiError::Injected(503).reason(), "ServiceUnavailable");
    }

    #[test]
    fn expired_event_shape() {
        let e = expired_event("5", 9);
        assert_eq!(e["type"], "ERROR");
        assert_eq!(e["object"]["code"], 410);
        assert_eq!(e["object"]["reason"], "Expired");
        assert_eq!(e["object"]["message"], "too old resource version: 5 (9)");
    }
}

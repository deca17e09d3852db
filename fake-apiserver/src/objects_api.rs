//! HTTP for the service mirror's kinds (`kinds.rs`, stored in `objects.rs`): list and watch
//! across namespaces or in one, with label and `metadata.name` field selectors; get,
//! create, replace and delete. No paging (`limit` is ignored: the whole list is one page,
//! which the API allows) and no patch.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::kinds::Kind;
use crate::objects::{Key, ObjectEvent, ObjectWatch, labels_of, name_of};
use crate::selector::Selector;
use crate::shared::{Shared, lock};
use crate::status::{ApiError, expired_event, json_response};
use crate::store::EventType;
use crate::watch::line;

type ApiResult = Result<Response, ApiError>;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListQuery {
    watch: Option<String>,
    resource_version: Option<String>,
    allow_watch_bookmarks: Option<String>,
    timeout_seconds: Option<String>,
    label_selector: Option<String>,
    field_selector: Option<String>,
    send_initial_events: Option<String>,
}

fn is_true(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1"))
}

/// The routes of every kind.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    let mut r = Router::new();
    for kind in Kind::ALL {
        let (prefix, plural) = (kind.prefix(), kind.plural());
        if kind.namespaced() {
            r = r
                .route(
                    &format!("{prefix}/{plural}"),
                    get(move |s: State<Arc<Shared>>, q: Query<ListQuery>| list(kind, None, s, q)),
                )
                .route(
                    &format!("{prefix}/namespaces/{{ns}}/{plural}"),
                    get(
                        move |s: State<Arc<Shared>>,
                              Path(ns): Path<String>,
                              q: Query<ListQuery>| {
                            list(kind, Some(ns), s, q)
                        },
                    )
                    .post(
                        move |s: State<Arc<Shared>>, Path(ns): Path<String>, b: Bytes| {
                            create(kind, ns, s, b)
                        },
                    ),
                )
                .route(
                    &format!("{prefix}/namespaces/{{ns}}/{plural}/{{name}}"),
                    get(
                        move |s: State<Arc<Shared>>, Path((ns, n)): Path<(String, String)>| {
                            read(kind, ns, n, s)
                        },
                    )
                    .put(
                        move |s: State<Arc<Shared>>,
                              Path((ns, n)): Path<(String, String)>,
                              b: Bytes| { replace(kind, ns, n, s, b) },
                    )
                    .delete(
                        move |s: State<Arc<Shared>>, Path((ns, n)): Path<(String, String)>| {
                            delete(kind, ns, n, s)
                        },
                    ),
                );
        } else {
            r = r
                .route(
                    &format!("{prefix}/{plural}"),
                    get(move |s: State<Arc<Shared>>, q: Query<ListQuery>| list(kind, None, s, q))
                        .post(move |s: State<Arc<Shared>>, b: Bytes| {
                            create(kind, String::new(), s, b)
                        }),
                )
                .route(
                    &format!("{prefix}/{plural}/{{name}}"),
                    get(move |s: State<Arc<Shared>>, Path(n): Path<String>| {
                        read(kind, String::new(), n, s)
                    })
                    .put(
                        move |s: State<Arc<Shared>>, Path(n): Path<String>, b: Bytes| {
                            replace(kind, String::new(), n, s, b)
                        },
                    )
                    .delete(
                        move |s: State<Arc<Shared>>, Path(n): Path<String>| {
                            delete(kind, String::new(), n, s)
                        },
                    ),
                );
        }
    }
    r
}

fn matches(selector: &Selector, v: &Value) -> bool {
    selector.matches_meta(name_of(v), &labels_of(v))
}

fn parse_body(kind: Kind, body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("error decoding {}: {e}", kind.name())))?;
    if !v.is_object() {
        return Err(ApiError::BadRequest(format!(
            "a {} must be an object",
            kind.name()
        )));
    }
    Ok(v)
}

async fn list(
    kind: Kind,
    namespace: Option<String>,
    State(shared): State<Arc<Shared>>,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let selector = Selector::parse(q.label_selector.as_deref(), q.field_selector.as_deref())?;
    if is_true(q.watch.as_deref()) {
        return watch(kind, namespace, &shared, &q, selector);
    }
    let objects = lock(&shared.objects);
    let items: Vec<Value> = objects
        .list(kind, namespace.as_deref())
        .into_iter()
        .filter(|v| matches(&selector, v))
        .collect();
    let rv = shared.store().rv();
    drop(objects);
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": kind.api_version(),
            "kind": format!("{}List", kind.name()),
            "metadata": { "resourceVersion": rv.to_string() },
            "items": items,
        }),
    ))
}

async fn read(
    kind: Kind,
    ns: String,
    name: String,
    State(shared): State<Arc<Shared>>,
) -> ApiResult {
    let key: Key = (kind, ns, name.clone());
    let v = lock(&shared.objects)
        .get(&key)
        .ok_or_else(|| ApiError::NotFound(format!("{} \"{name}\" not found", kind.resource())))?;
    Ok(json_response(StatusCode::OK, &v))
}

async fn create(
    kind: Kind,
    ns: String,
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> ApiResult {
    let v = parse_body(kind, &body)?;
    let name = name_of(&v).to_string();
    if name.is_empty() {
        return Err(ApiError::BadRequest("metadata.name is required".into()));
    }
    let mut objects = lock(&shared.objects);
    let rv = shared.store().bump_rv();
    let v = objects.create((kind, ns, name), v, rv)?;
    drop(objects);
    Ok(json_response(StatusCode::CREATED, &v))
}

async fn replace(
    kind: Kind,
    ns: String,
    name: String,
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> ApiResult {
    let v = parse_body(kind, &body)?;
    if name_of(&v) != name {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            name_of(&v)
        )));
    }
    let mut objects = lock(&shared.objects);
    let rv = shared.store().bump_rv();
    let v = objects.replace((kind, ns, name), v, rv)?;
    drop(objects);
    Ok(json_response(StatusCode::OK, &v))
}

async fn delete(
    kind: Kind,
    ns: String,
    name: String,
    State(shared): State<Arc<Shared>>,
) -> ApiResult {
    let mut objects = lock(&shared.objects);
    let rv = shared.store().bump_rv();
    let v = objects.delete((kind, ns, name), rv)?;
    drop(objects);
    Ok(json_response(StatusCode::OK, &v))
}

fn watch(
    kind: Kind,
    namespace: Option<String>,
    shared: &Arc<Shared>,
    q: &ListQuery,
    selector: Selector,
) -> ApiResult {
    let from = match q.resource_version.as_deref() {
        None | Some("" | "0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid resource version: {rv:?}")))?,
        ),
    };
    let timeout = match q.timeout_seconds.as_deref() {
        None | Some("" | "0") => None,
        Some(s) => Some(Duration::from_secs(s.parse().map_err(|_| {
            ApiError::BadRequest(format!("invalid timeoutSeconds: {s:?}"))
        })?)),
    };
    let initial_end = is_true(q.send_initial_events.as_deref());
    let objects = lock(&shared.objects);
    let start_rv = shared.store().rv();
    let start = objects.watch(kind, if initial_end { None } else { from });
    drop(objects);
    let body = match start {
        ObjectWatch::Expired(oldest) => {
            let requested = q.resource_version.as_deref().unwrap_or_default();
            Body::from(line(&expired_event(requested, oldest)))
        }
        ObjectWatch::Ready(backlog, live) => {
            let bookmarks = is_true(q.allow_watch_bookmarks.as_deref()).then(|| {
                let period = shared.bookmark_interval;
                let mut i = tokio::time::interval_at(Instant::now() + period, period);
                i.set_missed_tick_behavior(MissedTickBehavior::Delay);
                i
            });
            let state = Stream {
                kind,
                namespace,
                selector,
                backlog: backlog.into(),
                initial_end,
                live,
                progress_rv: start_rv,
                bookmarks,
                deadline: timeout.map(|t| Instant::now() + t),
                drops: shared.drops.subscribe(),
                shutdown: shared.shutdown.subscribe(),
                finished: false,
            };
            Body::from_stream(futures::stream::unfold(state, |mut s| async move {
                let item = s.next_chunk().await?;
                Some((item, s))
            }))
        }
    };
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

struct Stream {
    kind: Kind,
    namespace: Option<String>,
    selector: Selector,
    backlog: VecDeque<Arc<ObjectEvent>>,
    initial_end: bool,
    live: broadcast::Receiver<Arc<ObjectEvent>>,
    progress_rv: u64,
    bookmarks: Option<Interval>,
    deadline: Option<Instant>,
    drops: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    finished: bool,
}

impl Stream {
    async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        if self.finished {
            return None;
        }
        while let Some(e) = self.backlog.pop_front() {
            if let Some(l) = self.render(&e) {
                return Some(Ok(l));
            }
        }
        if std::mem::take(&mut self.initial_end) {
            return Some(Ok(self.bookmark(true)));
        }
        loop {
            tokio::select! {
                biased;
                _ = self.drops.changed() => {
                    self.finished = true;
                    return Some(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "watch dropped")));
                }
                _ = self.shutdown.changed() => return None,
                () = async { match self.deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => return None,
                got = self.live.recv() => match got {
                    Ok(e) => {
                        self.progress_rv = self.progress_rv.max(e.rv);
                        if let Some(l) = self.render(&e) {
                            return Some(Ok(l));
                        }
                    }
                    Err(_) => return None,
                },
                () = async { match &mut self.bookmarks { Some(i) => { i.tick().await; } None => std::future::pending().await } } => {
                    return Some(Ok(self.bookmark(false)));
                }
            }
        }
    }

    /// The event's line, if this watch sees it: its kind and namespace, and through the
    /// selector (an object that starts matching is ADDED, one that stops, DELETED).
    fn render(&self, e: &ObjectEvent) -> Option<Bytes> {
        if e.key.0 != self.kind || self.namespace.as_ref().is_some_and(|n| *n != e.key.1) {
            return None;
        }
        let now = matches(&self.selector, &e.object);
        let before = e.prev.as_ref().is_some_and(|p| matches(&self.selector, p));
        let (kind, object) = match (e.kind, before, now) {
            (EventType::Added | EventType::Deleted, _, true) => (e.kind, e.object.clone()),
            (EventType::Modified, true, true) => (EventType::Modified, e.object.clone()),
            (EventType::Modified, false, true) => (EventType::Added, e.object.clone()),
            (EventType::Modified, true, false) => {
                let mut gone = e.prev.clone()?;
                gone["metadata"]["resourceVersion"] = e.rv.to_string().into();
                (EventType::Deleted, gone)
            }
            _ => return None,
        };
        Some(line(&json!({ "type": kind.as_str(), "object": object })))
    }

    fn bookmark(&self, initial_end: bool) -> Bytes {
        let mut metadata = json!({ "resourceVersion": self.progress_rv.to_string() });
        if initial_end {
            metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        line(&json!({
            "type": "BOOKMARK",
            "object": { "kind": self.kind.name(), "apiVersion": self.kind.api_version(), "metadata": metadata },
        }))
    }
}

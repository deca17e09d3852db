//! The writes every mirror makes alike: delete a copy (absent is fine), write a copy
//! whole (replace, or create when it is not there), and collect the stale copies of one
//! owner (label-selected) at start. Each counts into the runner's [`MirrorStatus`].

use std::fmt::Debug;

use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::Ordering::Relaxed;

use super::metrics::MirrorStatus;

/// 404 counts as done for a delete.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Deletes `name`; true when it existed.
pub async fn delete<K>(api: &Api<K>, name: &str, status: &MirrorStatus) -> Result<bool, kube::Error>
where
    K: Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            status.deleted.fetch_add(1, Relaxed);
            Ok(true)
        }
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes `object` whole as `name`: an unconditional replace, or a create when absent.
pub async fn put<K>(
    api: &Api<K>,
    name: &str,
    object: &K,
    status: &MirrorStatus,
) -> Result<(), kube::Error>
where
    K: Clone + DeserializeOwned + Serialize + Debug,
{
    let pp = PostParams::default();
    match api.replace(name, &pp, object).await {
        Ok(_) => {
            status.updated.fetch_add(1, Relaxed);
            Ok(())
        }
        Err(e) if is_not_found(&e) => {
            api.create(&pp, object).await?;
            status.created.fetch_add(1, Relaxed);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Deletes the objects matching `selector` whose name is not in `expected`; `owner` and
/// `what` name them in the log. A failure is logged and the rest goes on.
pub async fn collect<K>(
    api: &Api<K>,
    selector: &str,
    expected: &[String],
    owner: &str,
    what: &str,
    status: &MirrorStatus,
) where
    K: kube::Resource + Clone + DeserializeOwned + Debug,
{
    let listed = match api.list(&ListParams::default().labels(selector)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(cluster = %owner, what, error = %e, "could not list stale copies; skipping");
            return;
        }
    };
    for o in listed.items {
        let name = o.meta().name.clone().unwrap_or_default();
        if expected.contains(&name) {
            continue;
        }
        tracing::info!(cluster = %owner, what, name = %name, "deleting a stale copy");
        if let Err(e) = delete(api, &name, status).await {
            tracing::warn!(cluster = %owner, what, name = %name, error = %e, "could not delete a stale copy");
        }
    }
}

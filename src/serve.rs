//! The tasks that serve one remote while its tunnel runs here, beside the tunnel's
//! supervisor (`remote.rs`): its routes, and its remote Node sync into the tunnel. Run
//! mode starts them for every node-mode remote; gateway mode while elected.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use control::backoff::Backoff;
use control::config::RemoteCluster;
use control::netlink::Netlink;
use control::peers::AnnotationKeys;
use control::sync::RemoteSync;
use tokio::sync::watch;

use crate::options::{RunOptions, stopped};
use crate::state::RemoteState;
use crate::wiring::TunnelSink;

/// The sync loop's inputs and the sink it applies to, for one remote.
pub(crate) fn remote_sync(
    remote: &RemoteCluster,
    local_name: &str,
    key: &dataplane::PrivateKey,
    rs: &Arc<RemoteState>,
    opts: &RunOptions,
) -> (RemoteSync, Arc<TunnelSink>) {
    let sync = RemoteSync {
        cluster: remote.name.clone(),
        device: remote.device_name(),
        keys: AnnotationKeys::for_cluster(local_name)
            .with_gateway_label(remote.gateway_label.clone()),
        subnets: remote.subnets.clone(),
        // In the in-cluster mesh our own node is in the list: never our peer.
        skip_node: remote.mesh.then(|| opts.node_name.clone()),
        resync: remote.resync_period,
        own_key: Some(key.public_key().0),
        mass_removal_grace: remote.mass_removal_grace_period,
    };
    let sink = Arc::new(TunnelSink::new(
        Arc::clone(rs),
        crate::remote::peers_file(&opts.key_dir, &remote.file_stem()),
    ));
    (sync, sink)
}

/// Keeps `<prefix> dev <device> scope link` in place for each prefix of the remote's pod
/// subnet (one per family) and extra subnets: checked every 5 s, and at once when the
/// tunnel is (re)built. In the in-cluster mesh, this node's own pod CIDR keeps its more
/// specific local route.
pub(crate) async fn keep_route(
    netlink: Netlink,
    remote: RemoteCluster,
    rs: Arc<RemoteState>,
    stop: watch::Receiver<bool>,
) {
    let device = remote.device_name();
    let mut stop = std::pin::pin!(stopped(stop));
    loop {
        if rs.is_up() {
            let mut all_ok = true;
            for prefix in remote.subnets.routed() {
                if let Err(e) = netlink.ensure_route(&device, *prefix).await {
                    all_ok = false;
                    tracing::warn!(cluster = %remote.name, device = %device, route = %prefix, error = %e, "route not in place; retrying");
                }
            }
            if all_ok && !rs.route_ok.swap(true, Relaxed) {
                let routes: Vec<String> =
                    remote.subnets.routed().map(ToString::to_string).collect();
                tracing::info!(cluster = %remote.name, device = %device, routes = %routes.join(","), "routes in place");
                // Once per device brought up: what an earlier config routed here goes.
                let keep: Vec<_> = remote.subnets.routed().copied().collect();
                match netlink.prune_routes(&device, &keep).await {
                    Ok(gone) if !gone.is_empty() => {
                        let gone: Vec<String> = gone.iter().map(ToString::to_string).collect();
                        tracing::info!(cluster = %remote.name, device = %device, routes = %gone.join(","), "deleted routes the config no longer asks for");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(cluster = %remote.name, device = %device, error = %e, "could not look for stale routes")
                    }
                }
            }
            if !all_ok {
                rs.route_ok.store(false, Relaxed);
            }
        } else {
            rs.route_ok.store(false, Relaxed);
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = rs.route_now.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Builds the remote client (retrying with backoff: the CA URL may be down) and syncs.
pub(crate) async fn sync_remote(
    remote: RemoteCluster,
    sync: RemoteSync,
    sink: Arc<TunnelSink>,
    rs: Arc<RemoteState>,
    counts: control::http_metrics::RequestCounts,
    stop: watch::Receiver<bool>,
) {
    let status = Arc::clone(&rs.sync);
    let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(60)).jittered();
    let mut stop_fut = std::pin::pin!(stopped(stop.clone()));
    let client = loop {
        match control::remote::remote_client(&remote.access, &counts).await {
            Ok(c) => break c,
            Err(e) => {
                status.list_failures.fetch_add(1, Relaxed);
                let delay = backoff.next_delay();
                let error = control::error_chain(&e);
                tracing::error!(cluster = %remote.name, device = %remote.device_name(), error = %error, retry_in = ?delay, "cannot create the remote cluster client");
                status.set_problem(Some(format!("remote cluster client: {error}")));
                tokio::select! {
                    _ = &mut stop_fut => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    let rebuilt = Arc::clone(&rs.rebuilt);
    sync.run_with_kick(client, sink, status, rebuilt, stopped(stop))
        .await;
}

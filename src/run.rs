//! Run mode: the DaemonSet agent. Per remote cluster: key, persistent TUN device with
//! the last known peers restored, UAPI socket, route, remote Node sync. Then our Node's
//! annotations, the HTTP endpoints, and signal handling. On SIGTERM/SIGINT the devices
//! (persistent), routes, keys and annotations stay, so a restart finds them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context as _;
use control::advertise::{self, Advert, AdvertStatus};
use control::backoff::Backoff;
use control::config::{ClustersConfig, RemoteCluster};
use control::netlink::Netlink;
use control::peers::AnnotationKeys;
use control::sync::{RemoteSync, SyncStatus};
use dataplane::tun::TunDevice;
use dataplane::uapi::{SOCKET_DIR, UapiServer};
use dataplane::udp::SystemUdp;
use dataplane::{Tunnel, TunnelConfig};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::state::{AppState, RemoteState};
use crate::wiring::{TunnelSink, load_peers};

/// Everything run mode needs besides the config.
pub struct RunOptions {
    pub node_name: String,
    pub listen_address: String,
    pub key_dir: PathBuf,
    pub socket_dir: PathBuf,
}

impl RunOptions {
    pub fn new(node_name: String, listen_address: String, key_dir: PathBuf) -> Self {
        Self {
            node_name,
            listen_address,
            key_dir,
            socket_dir: PathBuf::from(SOCKET_DIR),
        }
    }
}

/// Resolves when shutdown is signalled.
async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// One remote's running pieces, kept alive until shutdown.
struct Running {
    _tunnel: Tunnel<SystemUdp>,
    _uapi: Option<UapiServer>,
}

pub async fn run(config: ClustersConfig, opts: RunOptions) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let netlink = Netlink::connect()?;
    let kube_requests = control::http_metrics::RequestCounts::default();
    let local =
        control::remote::local_client(config.local.kube_config_path.as_deref(), &kube_requests)
            .await
            .context("cannot create the local cluster client")?;

    let remotes: Vec<Arc<RemoteState>> = config
        .remotes
        .iter()
        .map(|r| {
            Arc::new(RemoteState {
                cluster: r.name.clone(),
                device: r.device_name(),
                tunnel: Default::default(),
                route_ok: AtomicBool::new(false),
                sync: Arc::new(SyncStatus::default()),
            })
        })
        .collect();
    let advert_status = Arc::new(AdvertStatus::default());
    let app = Arc::new(AppState {
        remotes: remotes.clone(),
        advert: Arc::clone(&advert_status),
        kube_requests: kube_requests.clone(),
    });
    let listen = crate::http::parse_listen(&opts.listen_address)?;
    let http = crate::http::serve(listen, Arc::clone(&app), stopped(stop_rx.clone())).await?;

    let mut running = Vec::new();
    let mut adverts = Vec::new();
    let mut tasks = Vec::new();
    for (remote, rs) in config.remotes.iter().zip(&remotes) {
        let (run, advert) = bring_up(remote, rs, &opts, &netlink).await?;
        running.push(run);
        adverts.push(advert);
        tasks.push(tokio::spawn(keep_route(
            netlink.clone(),
            remote.clone(),
            Arc::clone(rs),
            stop_rx.clone(),
        )));
        let sync = RemoteSync {
            cluster: remote.name.clone(),
            device: remote.device_name(),
            keys: AnnotationKeys::for_cluster(&config.local.name),
            pod_subnet: remote.pod_subnet,
            resync: remote.resync_period,
        };
        let sink = Arc::new(TunnelSink {
            device: Arc::clone(rs.tunnel.get().expect("set by bring_up")),
            state_file: peers_file(&opts.key_dir, &remote.device_name()),
        });
        tasks.push(tokio::spawn(sync_remote(
            remote.clone(),
            sync,
            sink,
            Arc::clone(&rs.sync),
            kube_requests.clone(),
            stop_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(advertise::run(
        local,
        opts.node_name.clone(),
        adverts,
        advert_status,
        stopped(stop_rx.clone()),
    )));

    let reason = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(
        reason,
        "shutting down; devices, routes, keys and annotations stay for the next start"
    );
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    drop(running);
    Ok(())
}

fn peers_file(dir: &Path, device: &str) -> PathBuf {
    dir.join(format!("{device}.peers.json"))
}

/// Key, device (reattached if it survived a restart) with the last known peers, UAPI.
async fn bring_up(
    remote: &RemoteCluster,
    rs: &RemoteState,
    opts: &RunOptions,
    netlink: &Netlink,
) -> anyhow::Result<(Running, Advert)> {
    let device = remote.device_name();
    let key = crate::keys::load_or_create(&opts.key_dir, &device)?;
    if netlink.remove_foreign_link(&device).await? {
        tracing::warn!(cluster = %remote.name, device = %device, "removed an existing non-TUN link of the same name (a kernel WireGuard device?)");
    }
    let tun = TunDevice::create_persistent(&device, remote.mtu, true)?;
    let restored = match load_peers(&peers_file(&opts.key_dir, &device)) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(cluster = %remote.name, device = %device, error = %format!("{e:#}"), "ignoring the saved peer set");
            Vec::new()
        }
    };
    let n = restored.len();
    let config = TunnelConfig {
        private_key: Some(key.clone()),
        listen_port: remote.listen_port,
        fwmark: 0,
        peers: restored,
    };
    let tunnel = match Tunnel::spawn(&device, tun, SystemUdp, config.clone()) {
        Ok(t) => t,
        Err(dataplane::Error::Config(e)) if n > 0 => {
            tracing::warn!(cluster = %remote.name, device = %device, error = %e, "saved peers refused; starting without them");
            let tun = TunDevice::create_persistent(&device, remote.mtu, true)?;
            Tunnel::spawn(
                &device,
                tun,
                SystemUdp,
                TunnelConfig {
                    peers: Vec::new(),
                    ..config
                },
            )?
        }
        Err(e) => return Err(e).with_context(|| format!("bringing up {device}")),
    };
    tracing::info!(cluster = %remote.name, device = %device, port = tunnel.listen_port(), restored_peers = n,
        public_key = %key.public_key(), "device up");
    let uapi = match UapiServer::bind(&opts.socket_dir, tunnel.device()).await {
        Ok(u) => Some(u),
        Err(e) => {
            tracing::warn!(cluster = %remote.name, device = %device, error = %format!("{:#}", anyhow::Error::from(e)), "no UAPI socket; `wg show` will not see this device");
            None
        }
    };
    let _ = rs.tunnel.set(tunnel.device());
    let advert = Advert {
        remote: remote.name.clone(),
        public_key: key.public_key().to_base64(),
        port: remote.listen_port,
    };
    Ok((
        Running {
            _tunnel: tunnel,
            _uapi: uapi,
        },
        advert,
    ))
}

/// Keeps `<podSubnet> dev <device> scope link` in place (re-added if it disappears).
async fn keep_route(
    netlink: Netlink,
    remote: RemoteCluster,
    rs: Arc<RemoteState>,
    stop: watch::Receiver<bool>,
) {
    let device = remote.device_name();
    let mut stop = std::pin::pin!(stopped(stop));
    loop {
        match netlink.ensure_route(&device, remote.pod_subnet).await {
            Ok(()) => {
                if !rs.route_ok.swap(true, Relaxed) {
                    tracing::info!(cluster = %remote.name, device = %device, route = %remote.pod_subnet, "route in place");
                }
            }
            Err(e) => {
                rs.route_ok.store(false, Relaxed);
                tracing::warn!(cluster = %remote.name, device = %device, error = %e, "route not in place; retrying");
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Builds the remote client (retrying with backoff: the CA URL may be down) and syncs.
async fn sync_remote(
    remote: RemoteCluster,
    sync: RemoteSync,
    sink: Arc<TunnelSink>,
    status: Arc<SyncStatus>,
    counts: control::http_metrics::RequestCounts,
    stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
    let mut stop_fut = std::pin::pin!(stopped(stop.clone()));
    let client = loop {
        match control::remote::remote_client(&remote.access, &counts).await {
            Ok(c) => break c,
            Err(e) => {
                status.list_failures.fetch_add(1, Relaxed);
                let delay = backoff.next_delay();
                tracing::error!(cluster = %remote.name, device = %remote.device_name(), error = %control::error_chain(&e), retry_in = ?delay, "cannot create the remote cluster client");
                tokio::select! {
                    _ = &mut stop_fut => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    sync.run(client, sink, status, stopped(stop)).await;
}

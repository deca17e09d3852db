//! Run mode: the DaemonSet agent. Per remote cluster, independently: its key, its tunnel
//! kept up by a supervisor (`remote.rs`), its route and its remote Node sync (`serve.rs`),
//! or, in gateway mode, all of that while elected (`gateway.rs`). Then our
//! Node's annotations (for every remote whose key is loaded), the HTTP endpoints, and
//! signal handling. A remote that cannot come up is retried while the others work. On
//! SIGTERM/SIGINT the devices (persistent), routes, keys and annotations stay, so a
//! restart finds them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use control::advertise::{self, Advert, AdvertStatus};
use control::config::{ClustersConfig, Topology};
use control::netlink::Netlink;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, mpsc, watch};

use crate::http::HttpServer;
pub use crate::options::{RunOptions, stopped};
use crate::serve::{keep_route, remote_sync, sync_remote};
use crate::state::{AppState, RemoteState, TakeoverStatus};

pub async fn run(config: ClustersConfig, opts: RunOptions) -> anyhow::Result<()> {
    let opts = Arc::new(opts);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let netlink = Netlink::connect()?;
    let kube_requests = control::http_metrics::RequestCounts::default();
    let local =
        control::remote::local_client(config.local.kube_config_path.as_deref(), &kube_requests)
            .await
            .context("cannot create the local cluster client")?;

    // A running agent (an upgrade's surge pod starts beside it) hands its interfaces
    // over; failing half-way here leaves it serving.
    let takeover_path = crate::takeover::socket_path(&opts.key_dir);
    // A gateway-mode tunnel is handed over only by an agent that runs it (the active
    // gateway); we run it on once the Lease, held under the node's name, confirms us.
    let devices = config.remotes.iter().map(|r| r.device_name()).collect();
    let mut inherited = crate::takeover::take_over(&takeover_path, devices)
        .await
        .context("taking over from the running agent")?;

    let remotes: Vec<Arc<RemoteState>> = config
        .remotes
        .iter()
        .map(|r| Arc::new(RemoteState::new(&r.name, &r.device_name())))
        .collect();
    let advert_status = Arc::new(AdvertStatus::default());
    let takeover_status = Arc::new(TakeoverStatus::default());
    let app = Arc::new(AppState {
        remotes: remotes.clone(),
        advert: Arc::clone(&advert_status),
        kube_requests: kube_requests.clone(),
        takeover: Arc::clone(&takeover_status),
    });
    let handed_http = inherited.as_mut().and_then(|i| i.http.take());
    let http = match start_http(&opts.listen_address, handed_http, &app) {
        Ok(h) => Arc::new(h),
        Err(e) => return Err(fail_takeover(inherited, e).await),
    };

    let mut adverts = Vec::new();
    let mut tasks = Vec::new();
    let mut supervisors = Vec::new();
    let mut gateways = Vec::new();
    for (remote, rs) in config.remotes.iter().zip(&remotes) {
        let device = remote.device_name();
        // Files are named after the cluster (`wireguard.<name>`) even when the interface
        // has its own `wgDeviceName`.
        let key = match crate::keys::load_or_create(&opts.key_dir, &remote.file_stem()) {
            Ok(k) => k,
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::error!(cluster = %remote.name, device = %device, error = %reason, "cannot load the remote's key; the other remotes carry on");
                rs.set_down(reason);
                continue;
            }
        };
        let mut advert = Advert::node(
            &remote.name,
            key.public_key().to_base64(),
            remote.listen_port,
            opts.advertise_cidrs.for_remote(&remote.name),
        );
        // A tunnel handed over is brought up here, before anything else runs: if it
        // cannot be, the takeover fails and the old agent takes it back.
        let handed = inherited.as_mut().and_then(|i| i.devices.remove(&device));
        let initial = match handed {
            Some(h) => {
                match crate::remote::bring_up(remote, &key, &opts, &netlink, Some(h)).await {
                    Ok(r) => Some(r),
                    Err(e) => {
                        let e = e.context(format!("bringing the handed-over {device} up"));
                        return Err(fail_takeover(inherited, e).await);
                    }
                }
            }
            None => None,
        };
        let (takeover_tx, takeover_rx) = mpsc::channel(1);
        supervisors.push((device.clone(), takeover_tx));
        if remote.topology == Topology::Gateway {
            // Nothing published until elected (a leftover claim of ours is withdrawn), but
            // a gateway's tunnel handed over keeps its claim until the Lease decides.
            advert.active = false;
            advert.hold = initial.is_some();
            adverts.push(advert);
            gateways.push((
                remote.clone(),
                key.clone(),
                Arc::clone(rs),
                takeover_rx,
                initial,
            ));
            continue;
        }
        adverts.push(advert);
        tasks.push(tokio::spawn(crate::remote::supervise(
            remote.clone(),
            key.clone(),
            Arc::clone(rs),
            Arc::clone(&opts),
            netlink.clone(),
            stop_rx.clone(),
            initial,
            takeover_rx,
        )));
        tasks.push(tokio::spawn(keep_route(
            netlink.clone(),
            remote.clone(),
            Arc::clone(rs),
            stop_rx.clone(),
        )));
        let (sync, sink) = remote_sync(remote, &config.local.name, &key, rs, &opts);
        tasks.push(tokio::spawn(sync_remote(
            remote.clone(),
            sync,
            sink,
            Arc::clone(rs),
            kube_requests.clone(),
            stop_rx.clone(),
        )));
    }
    if let Some(i) = inherited {
        let pid = i.pid();
        i.done()
            .await
            .context("telling the old agent that we serve")?;
        takeover_status.taken_over();
        tracing::info!(old_pid = pid, "took over; the old agent exits");
    }
    let handed_over = Arc::new(Notify::new());
    match dataplane::takeover::Listener::bind(&takeover_path) {
        Ok(listener) => tasks.push(tokio::spawn(crate::takeover::serve(
            listener,
            supervisors,
            Arc::clone(&http),
            takeover_status,
            Arc::clone(&handed_over),
        ))),
        Err(e) => {
            tracing::warn!(socket = %takeover_path.display(), error = %e, "no takeover socket: an upgrade will restart the tunnels instead of handing them over")
        }
    }
    let adverts_tx = Arc::new(watch::Sender::new(adverts));
    let adverts_rx = adverts_tx.subscribe();
    for (remote, key, rs, handover, initial) in gateways {
        let g = crate::gateway::GatewayRemote {
            remote,
            key,
            rs,
            opts: Arc::clone(&opts),
            netlink: netlink.clone(),
            local: local.clone(),
            adverts: Arc::clone(&adverts_tx),
            kube_requests: kube_requests.clone(),
            local_name: config.local.name.clone(),
            handover,
            initial: std::sync::Mutex::new(initial),
        };
        tasks.push(tokio::spawn(g.run(stop_rx.clone())));
    }
    tasks.push(tokio::spawn(advertise::run(
        local,
        opts.node_name.clone(),
        opts.endpoint,
        adverts_rx,
        advert_status,
        stopped(stop_rx.clone()),
    )));

    // What a scrape, a `wg show` or a watch page freed goes back to the kernel within
    // TRIM_PERIOD, not at the allocator's leisure (see `sys.rs`).
    let trim_stop = stopped(stop_rx.clone());
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(TRIM_PERIOD);
        let mut stop = std::pin::pin!(trim_stop);
        loop {
            tokio::select! {
                _ = tick.tick() => crate::sys::release_free_memory(),
                () = &mut stop => return,
            }
        }
    }));

    let handed = tokio::select! {
        _ = term.recv() => false,
        _ = int.recv() => false,
        _ = handed_over.notified() => true,
    };
    if handed {
        tracing::info!("a successor serves now; stopping");
    } else {
        tracing::info!(
            "shutting down; devices, routes, keys and annotations stay for the next start"
        );
    }
    let _ = stop_tx.send(true);
    crate::options::join_within(tasks, Duration::from_secs(5), "shutting down").await;
    http.stop().await;
    // Every descriptor goes now (the listener too), so that a restarted successor can
    // bind the port again.
    drop(http);
    if handed && opts.wait_after_handover {
        tracing::info!("handed over; idle until SIGTERM (the old pod's deletion)");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    Ok(())
}

/// Serves HTTP on the listener handed over, or on a new one.
fn start_http(
    address: &str,
    handed: Option<std::os::fd::OwnedFd>,
    app: &Arc<AppState>,
) -> anyhow::Result<HttpServer> {
    let listener = match handed {
        Some(fd) => std::net::TcpListener::from(fd),
        None => crate::http::bind(crate::http::parse_listen(address)?)?,
    };
    HttpServer::start(listener, Arc::clone(app))
}

/// Tells the old agent (if any) that the takeover failed, so that it serves on; returns
/// the error for the caller to exit with.
async fn fail_takeover(
    inherited: Option<crate::takeover::Inherited>,
    e: anyhow::Error,
) -> anyhow::Error {
    if let Some(i) = inherited {
        i.failed(&format!("{e:#}")).await;
        return e.context("the takeover failed; the running agent serves on");
    }
    e
}

/// How often freed heap memory is handed back to the kernel.
const TRIM_PERIOD: Duration = Duration::from_secs(10);

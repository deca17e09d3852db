//! `semaphore-wireguard mirror`: the service mirror's composition root. Reads the config
//! (the original's file, flags and `SSM_*` variables), builds the local client and one
//! client per remote (a remote whose client cannot be built yet, say its CA URL is down,
//! is retried with backoff while the others work), and runs per remote the Service and
//! EndpointSlice mirrors and its part of the global Services and slices, plus the local
//! cluster's part; serves `/healthz` and `/metrics` (default `:8080`); stops on
//! SIGTERM/SIGINT, leaving every mirrored object in place.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use control::backoff::Backoff;
use control::mirror::config::{MirrorConfig, Overrides};
use control::mirror::global::GlobalServices;
use control::mirror::global_services::GlobalServiceMirror;
use control::mirror::global_slices::GlobalSliceMirror;
use control::mirror::metrics::MirrorMetrics;
use control::mirror::selector::LabelSelector;
use control::mirror::services::ServiceMirror;
use control::mirror::slices::SliceMirror;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::cli::MirrorArgs;
use crate::options::stopped;

/// Runs the mirror; the exit code follows the original (1 for a bad config).
pub fn main(args: MirrorArgs, runtime: std::io::Result<tokio::runtime::Runtime>) -> ExitCode {
    if let Err(e) = crate::logging::init(args.log_format, &args.log_level) {
        eprintln!("semaphore-wireguard mirror: {e:#}");
        return ExitCode::FAILURE;
    }
    let Some(path) = args.config.clone().filter(|p| !p.as_os_str().is_empty()) else {
        eprintln!("semaphore-wireguard mirror: Must specify a config file (-config or SSM_CONFIG)");
        return ExitCode::FAILURE;
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "Cannot read config file");
            return ExitCode::FAILURE;
        }
    };
    let overrides = Overrides {
        mirror_namespace: args.mirror_ns.clone(),
        mirror_svc_label_selector: args.mirror_svc_label_selector.clone(),
        global_svc_label_selector: args.global_svc_label_selector.clone(),
        global_svc_routing_strategy_label: args.global_svc_routing_strategy_label.clone(),
    };
    let config = match control::mirror::config::parse(&text, &overrides) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(err = %e, "Cannot parse config");
            return ExitCode::FAILURE;
        }
    };
    let routing: LabelSelector = match config.global.global_svc_routing_strategy_label.parse() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(err = %e, "Cannot parse the configured topology label for global services");
            return ExitCode::FAILURE;
        }
    };
    let rt = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("semaphore-wireguard mirror: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(config, routing, args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: MirrorConfig, routing: LabelSelector, args: MirrorArgs) -> anyhow::Result<()> {
    let stats = Arc::new(MirrorMetrics::default());
    let kubeconfig = args.kube_config.as_ref().map(|p| p.display().to_string());
    let local = control::remote::local_client(kubeconfig.as_deref(), &stats.requests)
        .await
        .context("cannot create kube client for local cluster")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut globals = GlobalServices::default();
    // Stale global Services are collected once every cluster has listed its own.
    globals.expect_clusters(
        std::iter::once(&config.local.name)
            .chain(config.remotes.iter().map(|r| &r.name))
            .cloned(),
    );
    let store = Arc::new(Mutex::new(globals));
    let g = &config.global;
    let mut tasks = Vec::new();
    // The local cluster's part of the global Services.
    let status = stats.runner(format!("global-{}", config.local.name));
    tasks.push(tokio::spawn(
        GlobalServiceMirror {
            cluster: config.local.name.clone(),
            namespace: g.mirror_namespace.clone(),
            selector: g.global_svc_label_selector.clone(),
            routing: routing.clone(),
            gc_at_start: g.service_sync,
        }
        .run(
            local.clone(),
            local.clone(),
            Arc::clone(&store),
            status.clone(),
            stopped(stop_rx.clone()),
        ),
    ));
    tasks.push(tokio::spawn(
        GlobalSliceMirror {
            cluster: config.local.name.clone(),
            namespace: g.mirror_namespace.clone(),
            selector: g.global_svc_label_selector.clone(),
            gc_at_start: g.endpoint_slice_sync,
            local_zones: Some(config.local.zones.clone()),
        }
        .run(
            local.clone(),
            local.clone(),
            status,
            stopped(stop_rx.clone()),
        ),
    ));
    for remote in config.remotes.clone() {
        let (local, store, stats, stop, routing, g) = (
            local.clone(),
            Arc::clone(&store),
            Arc::clone(&stats),
            stop_rx.clone(),
            routing.clone(),
            g.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(60)).jittered();
            let client = loop {
                match control::remote::remote_client(&remote.access, &stats.requests).await {
                    Ok(c) => break c,
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::error!(cluster = %remote.name, err = %control::error_chain(&e), retry_in = ?delay, "cannot create kube client for remotecluster");
                        tokio::select! {
                            _ = stopped(stop.clone()) => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            };
            let mirror = stats.runner(format!("mirror-{}", remote.name));
            let global = stats.runner(format!("global-{}", remote.name));
            let services = ServiceMirror {
                remote: remote.name.clone(),
                prefix: remote.service_prefix.clone(),
                namespace: g.mirror_namespace.clone(),
                selector: g.mirror_svc_label_selector.clone(),
                gc_at_start: g.service_sync,
                resync: remote.resync_period,
            };
            let slices = SliceMirror {
                remote: remote.name.clone(),
                prefix: remote.service_prefix.clone(),
                namespace: g.mirror_namespace.clone(),
                selector: g.mirror_svc_label_selector.clone(),
                gc_at_start: g.service_sync,
                resync: remote.resync_period,
            };
            let global_services = GlobalServiceMirror {
                cluster: remote.name.clone(),
                namespace: g.mirror_namespace.clone(),
                selector: g.global_svc_label_selector.clone(),
                routing,
                gc_at_start: g.service_sync,
            };
            let global_slices = GlobalSliceMirror {
                cluster: remote.name.clone(),
                namespace: g.mirror_namespace.clone(),
                selector: g.global_svc_label_selector.clone(),
                gc_at_start: g.endpoint_slice_sync,
                local_zones: None,
            };
            tokio::join!(
                services.run(client.clone(), local.clone(), mirror.clone(), stopped(stop.clone())),
                slices.run(client.clone(), local.clone(), mirror, stopped(stop.clone())),
                global_services.run(client.clone(), local.clone(), store, global.clone(), stopped(stop.clone())),
                global_slices.run(client, local, global, stopped(stop)),
            );
        }));
    }
    let listener = crate::http::bind(crate::http::parse_listen(&args.listen_address)?)?;
    listener.set_nonblocking(true)?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(Arc::clone(&stats));
    tracing::info!(address = %args.listen_address, "serving /healthz and /metrics");
    let server = tokio::spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, app).await
    });
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        r = server => {
            let _ = stop_tx.send(true);
            return Err(anyhow::anyhow!("Listen and Serve: {:?}", r));
        }
    }
    tracing::info!("shutting down; mirrored objects stay");
    let _ = stop_tx.send(true);
    crate::options::join_within(tasks, Duration::from_secs(5), "shutting down").await;
    Ok(())
}

/// Every series of the mirror, under the original's names (`control::mirror::metrics`).
async fn metrics(State(metrics): State<Arc<MirrorMetrics>>) -> String {
    let mut out = String::new();
    metrics.render(&mut out);
    out
}

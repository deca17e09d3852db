//! One remote cluster's tunnel, kept up: key, persistent TUN device with the last known
//! peers restored, tunnel, UAPI socket. A remote that cannot come up (port in use, TUN
//! refused, a bad key file) is retried with backoff while the others carry on; a tunnel
//! whose packet path stops (the device deleted under it, a failed read, a panic) is
//! rebuilt at once from the saved peer set, and if that keeps failing `/healthz` says so
//! (see `state.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use control::backoff::Backoff;
use control::config::RemoteCluster;
use control::netlink::Netlink;
use dataplane::tun::TunDevice;
use dataplane::uapi::UapiServer;
use dataplane::udp::SystemUdp;
use dataplane::{PrivateKey, Tunnel, TunnelConfig};

use crate::run::{RunOptions, stopped};
use crate::state::RemoteState;
use crate::wiring::load_peers;

/// A remote's running pieces; dropping them releases the port and the socket (the
/// device, being persistent, stays).
pub struct Running {
    pub tunnel: Tunnel<SystemUdp>,
    _uapi: Option<UapiServer>,
}

/// `<dir>/<device>.peers.json`.
pub fn peers_file(dir: &Path, device: &str) -> PathBuf {
    dir.join(format!("{device}.peers.json"))
}

/// Keeps the tunnel of `remote` up until `stop`: brings it up (retrying with backoff),
/// and rebuilds it whenever its packet path stops.
pub async fn supervise(
    remote: RemoteCluster,
    key: PrivateKey,
    rs: Arc<RemoteState>,
    opts: Arc<RunOptions>,
    netlink: Netlink,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let device = remote.device_name();
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).jittered();
    let mut stop_fut = std::pin::pin!(stopped(stop));
    loop {
        match bring_up(&remote, &key, &opts, &netlink).await {
            Ok(running) => {
                backoff.reset();
                rs.set_up(running.tunnel.device());
                tokio::select! {
                    _ = &mut stop_fut => return,
                    _ = running.tunnel.stopped() => {}
                }
                tracing::error!(cluster = %remote.name, device = %device, "the tunnel's packet path stopped (was the device deleted?); rebuilding it");
                rs.set_down("the packet path stopped".into());
                // Release the port and the UAPI socket before binding them again.
                drop(running);
            }
            Err(e) => {
                let delay = backoff.next_delay();
                let reason = format!("{e:#}");
                tracing::error!(cluster = %remote.name, device = %device, error = %reason, retry_in = ?delay, "cannot bring the remote's tunnel up; the other remotes carry on");
                rs.set_down(reason);
                tokio::select! {
                    _ = &mut stop_fut => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Device (reattached if it survived a restart) with the last known peers, tunnel, UAPI.
async fn bring_up(
    remote: &RemoteCluster,
    key: &PrivateKey,
    opts: &RunOptions,
    netlink: &Netlink,
) -> anyhow::Result<Running> {
    let device = remote.device_name();
    if netlink.remove_foreign_link(&device).await? {
        tracing::warn!(cluster = %remote.name, device = %device, "removed an existing non-TUN link of the same name (a kernel WireGuard device?)");
    }
    let tun = TunDevice::create_persistent(&device, remote.mtu, true)
        .with_context(|| format!("creating the TUN device {device}"))?;
    let restored = match load_peers(&peers_file(&opts.key_dir, &device)) {
        Ok((peers, warnings)) => {
            for w in warnings {
                tracing::warn!(cluster = %remote.name, device = %device, "saved peer set: {w}");
            }
            peers
        }
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
        Err(dataplane::Error::Config(e))
            if n > 0
                && !matches!(
                    e,
                    dataplane::ConfigError::PortInUse { .. } | dataplane::ConfigError::Bind { .. }
                ) =>
        {
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
        Err(e) => return Err(e).with_context(|| format!("starting the tunnel on {device}")),
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
    Ok(Running {
        tunnel,
        _uapi: uapi,
    })
}

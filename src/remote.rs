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
use dataplane::udp::InheritedUdp;
use dataplane::{PeerConfig, PrivateKey, Tunnel, TunnelConfig};
use tokio::sync::mpsc;

use crate::options::{RunOptions, stopped};
use crate::state::RemoteState;
use crate::takeover::{Handed, HandoverRequest, Outcome};
use crate::wiring::load_peers;

/// A remote's running pieces; dropping them releases the port and the socket (the
/// device, being persistent, stays).
pub struct Running {
    pub tunnel: Tunnel<InheritedUdp>,
    _uapi: Option<UapiServer>,
}

impl Running {
    /// Stops the tunnel for a successor (see `takeover.rs`): one copy of what it hands
    /// over for the successor, one to take back if the successor fails.
    fn release(self) -> anyhow::Result<(Handed, Handed)> {
        drop(self._uapi);
        let released = self.tunnel.release();
        let socket = released
            .socket
            .context("the UDP socket cannot be handed over")?;
        let keep = socket.as_ref().map(|s| s.try_clone()).transpose()?;
        let peers = released.config.peers;
        Ok((
            Handed {
                peers: peers.clone(),
                socket,
            },
            Handed {
                peers,
                socket: keep,
            },
        ))
    }
}

/// `<dir>/<stem>.peers.json` (the stem is `wireguard.<remote>`, see `file_stem`).
pub fn peers_file(dir: &Path, stem: &str) -> PathBuf {
    dir.join(format!("{stem}.peers.json"))
}

/// Keeps the tunnel of `remote` up until `stop`: brings it up (retrying with backoff),
/// rebuilds it whenever its packet path stops, and hands it to a successor that asks
/// (`takeover`), taking it back if the successor fails. `initial`: already brought up
/// (taken over from the agent before us).
#[allow(clippy::too_many_arguments)]
pub async fn supervise(
    remote: RemoteCluster,
    key: PrivateKey,
    rs: Arc<RemoteState>,
    opts: Arc<RunOptions>,
    netlink: Netlink,
    stop: tokio::sync::watch::Receiver<bool>,
    initial: Option<Running>,
    mut takeover: mpsc::Receiver<HandoverRequest>,
) {
    let device = remote.device_name();
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).jittered();
    let mut stop_fut = std::pin::pin!(stopped(stop));
    let mut next = initial.map(Ok);
    let mut take_back: Option<Handed> = None;
    loop {
        let attempt = match next.take() {
            Some(r) => r,
            None => bring_up(&remote, &key, &opts, &netlink, take_back.take()).await,
        };
        match attempt {
            Ok(running) => {
                backoff.reset();
                rs.set_up(running.tunnel.device());
                tokio::select! {
                    _ = &mut stop_fut => return,
                    _ = running.tunnel.stopped() => {
                        tracing::error!(cluster = %remote.name, device = %device, "the tunnel's packet path stopped (was the device deleted?); rebuilding it");
                        rs.set_down("the packet path stopped".into());
                        // Release the port and the UAPI socket before binding them again.
                        drop(running);
                    }
                    Some(req) = takeover.recv() => {
                        rs.set_down("handed over to a successor".into());
                        let (give, keep) = match running.release() {
                            Ok(pair) => pair,
                            Err(e) => {
                                tracing::error!(cluster = %remote.name, device = %device, error = %format!("{e:#}"), "cannot hand the tunnel over; rebuilding it");
                                let _ = req.reply.send(None);
                                continue;
                            }
                        };
                        let _ = req.reply.send(Some(give));
                        if req.outcome.await == Ok(Outcome::Exit) {
                            return;
                        }
                        tracing::warn!(cluster = %remote.name, device = %device, "the successor failed; taking the tunnel back");
                        take_back = Some(keep);
                    }
                }
            }
            Err(e) => {
                let delay = backoff.next_delay();
                let reason = format!("{e:#}");
                tracing::error!(cluster = %remote.name, device = %device, error = %reason, retry_in = ?delay, "cannot bring the remote's tunnel up; the other remotes carry on");
                rs.set_down(reason);
                tokio::select! {
                    _ = &mut stop_fut => return,
                    _ = tokio::time::sleep(delay) => {}
                    Some(req) = takeover.recv() => {
                        // Nothing to hand over: the successor brings it up itself.
                        let _ = req.reply.send(None);
                        if req.outcome.await == Ok(Outcome::Exit) {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Device (reattached if it survived a restart) with the last known peers, tunnel, UAPI.
/// `handed`: the peers and UDP socket of the tunnel this one continues (taken over from
/// the agent before us, or taken back from a successor that failed); a handshake with
/// every peer starts at once, as the sessions did not come along.
pub async fn bring_up(
    remote: &RemoteCluster,
    key: &PrivateKey,
    opts: &RunOptions,
    netlink: &Netlink,
    handed: Option<Handed>,
) -> anyhow::Result<Running> {
    let device = remote.device_name();
    if netlink.remove_foreign_link(&device).await? {
        tracing::warn!(cluster = %remote.name, device = %device, "removed an existing non-TUN link of the same name (a kernel WireGuard device?)");
    }
    let tun = TunDevice::create_persistent(&device, remote.mtu, true)
        .with_context(|| format!("creating the TUN device {device}"))?;
    let continued = handed.is_some();
    let (restored, socket) = match handed {
        Some(h) => (h.peers, h.socket),
        None => (saved_peers(remote, &opts.key_dir), None),
    };
    let n = restored.len();
    let config = TunnelConfig {
        private_key: Some(key.clone()),
        listen_port: remote.listen_port,
        fwmark: 0,
        peers: restored,
    };
    let binder = InheritedUdp::new(socket).context("adopting the handed-over UDP socket")?;
    let tunnel = match Tunnel::spawn(&device, tun, binder, config.clone()) {
        Ok(t) => t,
        Err(dataplane::Error::Config(e))
            if n > 0
                && !continued
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
                InheritedUdp::default(),
                TunnelConfig {
                    peers: Vec::new(),
                    ..config
                },
            )?
        }
        Err(e) => return Err(e).with_context(|| format!("starting the tunnel on {device}")),
    };
    if continued {
        tunnel.handshake_now();
    }
    tracing::info!(cluster = %remote.name, device = %device, port = tunnel.listen_port(), restored_peers = n,
        continued, public_key = %key.public_key(), "device up");
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

/// The peer set saved by the last run, or none (a file that cannot be read is logged).
fn saved_peers(remote: &RemoteCluster, key_dir: &Path) -> Vec<PeerConfig> {
    let device = remote.device_name();
    match load_peers(&peers_file(key_dir, &remote.file_stem())) {
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
    }
}

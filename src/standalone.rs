//! `tunnel` mode: one interface, configured only through the UAPI socket, like
//! wireguard-go. Without `--foreground` the process re-executes itself detached and
//! returns once the interface and its socket exist (what `wg-quick` expects).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use std::os::fd::{AsFd as _, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use dataplane::takeover::{Channel, Listener};
use dataplane::tun::TunDevice;
use dataplane::uapi::UapiServer;
use dataplane::udp::InheritedUdp;
use dataplane::{Tunnel, TunnelConfig};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::TunnelArgs;

const READY: &str = "ready";

/// Starts the foreground process detached and waits until it reports the interface up.
pub fn daemonize(args: &TunnelArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("tunnel")
        .arg("--foreground")
        .arg("--mtu")
        .arg(args.mtu.to_string())
        .arg("--socket-dir")
        .arg(&args.socket_dir)
        .arg("--log-level")
        .arg(&args.log.log_level)
        .arg("--log-format")
        .arg(match args.log.log_format {
            crate::cli::LogFormat::Text => "text",
            crate::cli::LogFormat::Json => "json",
        })
        .arg(&args.interface)
        .env("SWG_NOTIFY_READY", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Detached: logs go nowhere unless asked for, as with wireguard-go.
        .stderr(if verbose() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .process_group(0);
    let mut child = cmd.spawn().context("cannot start the tunnel process")?;
    let stdout = child
        .stdout
        .take()
        .context("no pipe to the tunnel process")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading from the tunnel process")?;
    if line.trim() == READY {
        return Ok(());
    }
    let status = child.wait().context("waiting for the tunnel process")?;
    bail!(
        "the tunnel process for {} failed to start ({status}); run with -f to see why",
        args.interface
    )
}

/// A detached tunnel keeps stderr only when a log level was asked for in the environment
/// (`LOG_LEVEL` as wireguard-go reads it, or our `SWG_LOG_LEVEL`).
fn verbose() -> bool {
    std::env::var_os("LOG_LEVEL").is_some() || std::env::var_os("SWG_LOG_LEVEL").is_some()
}

/// One interface being served: its TUN device (a handle kept, to make it persistent for
/// a successor), tunnel and UAPI socket.
struct Serving {
    tun: Arc<TunDevice>,
    tunnel: Tunnel<InheritedUdp>,
    server: UapiServer,
}

/// Creates the interface, or attaches to the one handed over (which is persistent while
/// between processes: it goes back to going with its process), and serves it.
async fn serve(
    args: &TunnelArgs,
    config: TunnelConfig,
    socket: Option<OwnedFd>,
) -> anyhow::Result<Serving> {
    let name = &args.interface;
    let continued = socket.is_some() || !config.peers.is_empty();
    let tun = Arc::new(TunDevice::create(name, args.mtu, false)?);
    if continued {
        tun.set_persistent(false)
            .with_context(|| format!("making {name} go with this process again"))?;
    }
    let binder = InheritedUdp::new(socket).context("adopting the handed-over UDP socket")?;
    let tunnel = Tunnel::spawn(name, Arc::clone(&tun), binder, config)?;
    if continued {
        tunnel.handshake_now();
    }
    let server = UapiServer::bind(&args.socket_dir, tunnel.device()).await?;
    Ok(Serving {
        tun,
        tunnel,
        server,
    })
}

/// `<socket dir>/takeover/<interface>.sock`.
fn takeover_path(args: &TunnelArgs) -> PathBuf {
    args.socket_dir
        .join("takeover")
        .join(format!("{}.sock", args.interface))
}

/// Runs the interface in the foreground until a signal, the socket's deletion, the
/// device's disappearance or a successor's takeover. A process started while another
/// serves the interface takes it over (see `takeover.rs`).
pub async fn run(args: TunnelArgs) -> anyhow::Result<()> {
    let name = &args.interface;
    // Signals are caught from before the interface exists, so none is lost to the default
    // action (which would skip the cleanup below).
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let path = takeover_path(&args);
    let inherited = crate::takeover::take_over_interface(&path, name)
        .await
        .context("taking the interface over from the running process")?;
    let mut serving = match inherited {
        Some(i) => match serve(&args, i.config, i.socket).await {
            Ok(s) => {
                i.inherited.done().await?;
                tracing::info!(device = %name, "took the interface over; the old process exits");
                s
            }
            Err(e) => {
                i.inherited.failed(&format!("{e:#}")).await;
                return Err(e.context("the takeover failed; the running process serves on"));
            }
        },
        None => serve(&args, TunnelConfig::default(), None).await?,
    };
    tracing::info!(device = %name, socket = %serving.server.path().display(), port = serving.tunnel.listen_port(), "interface up");
    if std::env::var_os("SWG_NOTIFY_READY").is_some() {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{READY}");
        let _ = out.flush();
    }
    let listener = match Listener::bind(&path) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(device = %name, socket = %path.display(), error = %e, "no takeover socket: a second process cannot take this interface over");
            None
        }
    };
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    let reason = loop {
        let successor = async {
            match &listener {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = serving.tunnel.stopped() => break "device gone",
            _ = poll.tick() => if serving.server.is_deleted() { break "socket deleted" },
            ch = successor => match ch {
                Ok(mut ch) => match hand_over(&args, &mut ch, serving).await {
                    Ok(None) => return Ok(()),
                    Ok(Some(back)) => serving = back,
                    Err(e) => return Err(e),
                },
                Err(e) => tracing::warn!(device = %name, error = %e, "takeover socket: connection refused"),
            },
        }
    };
    let counters = serving.tunnel.counters();
    let traffic = counters.traffic();
    let drops: Vec<String> = dataplane::DropReason::all()
        .filter(|r| counters.drops(*r) > 0)
        .map(|r| format!("{}={}", r.as_str(), counters.drops(r)))
        .collect();
    tracing::info!(device = %name, reason, rx_packets = traffic.rx_packets, tx_packets = traffic.tx_packets,
        handshakes = counters.handshakes(), drops = %drops.join(","), "shutting down");
    drop(listener);
    drop(serving);
    Ok(())
}

/// Hands the interface to the successor on `ch`. `None` once it serves (this process
/// exits); otherwise the interface back, served again here.
async fn hand_over(
    args: &TunnelArgs,
    ch: &mut Channel,
    serving: Serving,
) -> anyhow::Result<Option<Serving>> {
    let name = &args.interface;
    if let Err(e) = crate::takeover::greet(ch, name).await {
        tracing::warn!(device = %name, error = %format!("{e:#}"), "takeover refused");
        return Ok(Some(serving));
    }
    // Persistent while between processes: closing our descriptor must not delete it.
    if let Err(e) = serving.tun.set_persistent(true) {
        tracing::error!(device = %name, error = %e, "cannot hand the interface over");
        return Ok(Some(serving));
    }
    let Serving {
        tun,
        tunnel,
        server,
    } = serving;
    drop(server);
    let released = tunnel.release();
    drop(tun);
    let socket = released
        .socket
        .context("the UDP socket cannot be handed over")?;
    let keep = socket.as_ref().map(|s| s.try_clone()).transpose()?;
    let result = crate::takeover::hand_interface_over(
        ch,
        name,
        &released.config,
        socket.as_ref().map(|s| s.as_fd()),
    )
    .await;
    drop(socket);
    match result {
        Ok(()) => {
            tracing::info!(device = %name, "a successor serves the interface now; exiting");
            Ok(None)
        }
        Err(e) => {
            tracing::error!(device = %name, error = %format!("{e:#}"), "takeover failed; serving on");
            let back = serve(args, released.config, keep).await?;
            Ok(Some(back))
        }
    }
}

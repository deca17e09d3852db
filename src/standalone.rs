//! `tunnel` mode: one interface, configured only through the UAPI socket, like
//! wireguard-go. Without `--foreground` the process re-executes itself detached and
//! returns once the interface and its socket exist (what `wg-quick` expects).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use dataplane::tun::TunDevice;
use dataplane::uapi::UapiServer;
use dataplane::udp::SystemUdp;
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

/// Runs the interface in the foreground until a signal, the socket's deletion or the
/// device's disappearance.
pub async fn run(args: TunnelArgs) -> anyhow::Result<()> {
    let name = &args.interface;
    // Signals are caught from before the interface exists, so none is lost to the default
    // action (which would skip the cleanup below).
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let tun = TunDevice::create(name, args.mtu, false)?;
    let tunnel = Tunnel::spawn(name, tun, SystemUdp, TunnelConfig::default())?;
    let server = UapiServer::bind(&args.socket_dir, tunnel.device()).await?;
    tracing::info!(device = %name, socket = %server.path().display(), port = tunnel.listen_port(), "interface up");
    if std::env::var_os("SWG_NOTIFY_READY").is_some() {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{READY}");
        let _ = out.flush();
    }
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    let reason = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = tunnel.stopped() => break "device gone",
            _ = poll.tick() => if server.is_deleted() { break "socket deleted" },
        }
    };
    let counters = tunnel.counters();
    let traffic = counters.traffic();
    let drops: Vec<String> = dataplane::DropReason::all()
        .filter(|r| counters.drops(*r) > 0)
        .map(|r| format!("{}={}", r.as_str(), counters.drops(r)))
        .collect();
    tracing::info!(device = %name, reason, rx_packets = traffic.rx_packets, tx_packets = traffic.tx_packets,
        handshakes = counters.handshakes(), drops = %drops.join(","), "shutting down");
    drop(server);
    drop(tunnel);
    Ok(())
}

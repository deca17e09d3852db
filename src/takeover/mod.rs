//! Upgrades without a gap. A second agent started on a node while one runs (what a
//! DaemonSet with `maxSurge: 1, maxUnavailable: 0` does) takes the running one's
//! interfaces over instead of waiting for it to stop:
//!
//! 1. the successor loads its config and keys, connects to `<key dir>/takeover/agent.sock`
//!    (root only, see `dataplane::takeover`) and says which devices it runs (`Hello`);
//! 2. the running agent stops serving HTTP and sends its listener (`Http`), then stops
//!    each of those tunnels (its packet threads return and its TUN descriptor closes) and
//!    sends the applied peers with the endpoints they roamed to and its UDP socket
//!    (`Device`), then `Sent`;
//! 3. the successor attaches to the persistent TUN devices, carries on with the same
//!    sockets (datagrams that arrived meanwhile wait in them), initiates a handshake with
//!    every peer at once (boringtun cannot export sessions), serves HTTP on the same
//!    listener, and answers `Done`; the old agent then exits 0.
//!
//! If the successor fails half-way it answers `Failed` (or just goes away): the old agent
//! brings its tunnels back up on its own copies of the sockets and serves on.

use std::collections::HashMap;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use dataplane::PeerConfig;
use dataplane::takeover::{Channel, Listener};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};

mod interface;

pub use interface::{greet, hand_interface_over, take_over_interface};

use crate::http::HttpServer;
use crate::state::TakeoverStatus;

/// How long either side waits for the other's next message (the successor's bring-up
/// included: it takes milliseconds, and the tunnels are down meanwhile).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket in the key directory (a root-only host path the DaemonSet mounts).
pub fn socket_path(key_dir: &Path) -> PathBuf {
    key_dir.join("takeover").join("agent.sock")
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Msg {
    Hello {
        version: String,
        pid: u32,
        devices: Vec<String>,
    },
    /// With the UDP socket attached.
    Device {
        name: String,
        peers: serde_json::Value,
    },
    /// `tunnel` mode: the whole configuration as a `set=1` request (it holds the private
    /// key: never logged), with the UDP socket attached.
    Interface {
        name: String,
        set: String,
    },
    /// With the HTTP listener attached.
    Http,
    Sent,
    Done,
    Failed {
        reason: String,
    },
}

/// Messages are named, never printed whole (`Interface` holds a private key).
impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Hello { .. } => "hello",
            Msg::Device { .. } => "device",
            Msg::Interface { .. } => "interface",
            Msg::Http => "http",
            Msg::Sent => "sent",
            Msg::Done => "done",
            Msg::Failed { .. } => "failed",
        })
    }
}

async fn send(
    ch: &mut Channel,
    msg: &Msg,
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> anyhow::Result<()> {
    let data = serde_json::to_vec(msg)?;
    ch.send(&data, fds)
        .await
        .context("sending on the takeover socket")
}

async fn recv(ch: &mut Channel, wait: Duration) -> anyhow::Result<(Msg, Vec<OwnedFd>)> {
    let m = tokio::time::timeout(wait, ch.recv())
        .await
        .context("no answer on the takeover socket")?
        .context("reading the takeover socket")?;
    let msg = serde_json::from_slice(&m.data).context("a takeover message that does not parse")?;
    Ok((msg, m.fds))
}

/// What one remote's tunnel hands over (or takes back after a failed takeover).
#[derive(Debug)]
pub struct Handed {
    pub peers: Vec<PeerConfig>,
    pub socket: Option<OwnedFd>,
}

/// A successor asks a remote's supervisor for its tunnel: the supervisor stops it and
/// replies (`None` when it is not up), then waits for the outcome.
pub struct HandoverRequest {
    pub reply: oneshot::Sender<Option<Handed>>,
    pub outcome: oneshot::Receiver<Outcome>,
}

/// How a takeover ended, for a supervisor that handed its tunnel over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The successor runs it now: stop.
    Exit,
    /// The successor failed: bring the tunnel back up.
    Resume,
}

/// What a successor received from the agent it took over from.
pub struct Inherited {
    pub devices: HashMap<String, Handed>,
    pub http: Option<OwnedFd>,
    channel: Channel,
    pid: u32,
}

impl Inherited {
    /// Tells the old agent that we serve now; it exits.
    pub async fn done(mut self) -> anyhow::Result<()> {
        send(&mut self.channel, &Msg::Done, &[]).await
    }

    /// Tells the old agent to take its interfaces back.
    pub async fn failed(mut self, reason: &str) {
        let msg = Msg::Failed {
            reason: reason.to_string(),
        };
        if let Err(e) = send(&mut self.channel, &msg, &[]).await {
            tracing::warn!(error = %format!("{e:#}"), "could not tell the running agent that the takeover failed (it takes its interfaces back anyway when we exit)");
        }
    }

    /// The old agent's process id, for logs.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// The successor's opening: connects to `path`, says hello with `devices` and reads the
/// running process's hello (its pid and version). `None` when nobody serves `path`.
async fn open(
    path: &Path,
    who: &str,
    devices: Vec<String>,
) -> anyhow::Result<Option<(Channel, u32, String)>> {
    let Some(mut ch) = dataplane::takeover::connect(path)
        .await
        .with_context(|| format!("connecting to {who} at {}", path.display()))?
    else {
        return Ok(None);
    };
    let hello = Msg::Hello {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        devices,
    };
    send(&mut ch, &hello, &[]).await?;
    let (first, _) = recv(&mut ch, STEP_TIMEOUT).await?;
    let Msg::Hello { pid, version, .. } = first else {
        bail!("{who} answered {first:?} instead of hello");
    };
    Ok(Some((ch, pid, version)))
}

/// The running process's opening: the successor's hello (its pid, version and the
/// devices it runs), answered with ours (`devices`: what we serve).
async fn greeted(
    ch: &mut Channel,
    devices: Vec<String>,
) -> anyhow::Result<(u32, String, Vec<String>)> {
    let (hello, _) = recv(ch, STEP_TIMEOUT).await?;
    let Msg::Hello {
        version,
        pid,
        devices: wanted,
    } = hello
    else {
        bail!("a successor opened with {hello:?}");
    };
    let answer = Msg::Hello {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        devices,
    };
    send(ch, &answer, &[]).await?;
    Ok((pid, version, wanted))
}

/// The successor's last word: `Ok` once it serves.
async fn successor_outcome(ch: &mut Channel) -> anyhow::Result<()> {
    match recv(ch, STEP_TIMEOUT).await {
        Ok((Msg::Done, _)) => Ok(()),
        Ok((Msg::Failed { reason }, _)) => bail!("the successor failed: {reason}"),
        Ok((other, _)) => bail!("the successor answered {other:?}"),
        Err(e) => Err(e.context("the successor went away before it was up")),
    }
}

/// Connects to a running agent and receives its interfaces. `None` when no agent runs
/// (a first start, or a restart after a crash: the persistent devices and the saved peer
/// sets carry on as before). An error once connected means the takeover failed: the old
/// agent keeps serving.
pub async fn take_over(path: &Path, devices: Vec<String>) -> anyhow::Result<Option<Inherited>> {
    let Some((ch, pid, version)) = open(path, "the running agent", devices).await? else {
        return Ok(None);
    };
    tracing::info!(old_pid = pid, old_version = %version, "taking over from the running agent");
    let mut inherited = Inherited {
        devices: HashMap::new(),
        http: None,
        channel: ch,
        pid,
    };
    loop {
        let (msg, mut fds) = recv(&mut inherited.channel, STEP_TIMEOUT).await?;
        match msg {
            Msg::Device { name, peers } => {
                let peers = crate::wiring::peers_from_json(&peers)
                    .with_context(|| format!("the peers of {name}"))?;
                inherited.devices.insert(
                    name,
                    Handed {
                        peers,
                        socket: fds.pop(),
                    },
                );
            }
            Msg::Http => inherited.http = fds.pop(),
            Msg::Sent => return Ok(Some(inherited)),
            Msg::Failed { reason } => bail!("the running agent refused: {reason}"),
            other => bail!("unexpected takeover message {other:?}"),
        }
    }
}

/// The running agent's side: hands its interfaces to a successor that connects, and
/// notifies `exit` once one has taken them. Runs until aborted.
pub async fn serve(
    listener: Listener,
    supervisors: Vec<(String, mpsc::Sender<HandoverRequest>)>,
    http: Arc<HttpServer>,
    status: Arc<TakeoverStatus>,
    exit: Arc<Notify>,
) {
    tracing::debug!(socket = %listener.path().display(), "waiting for a successor");
    loop {
        let mut ch = match listener.accept().await {
            Ok(ch) => ch,
            Err(e) => {
                tracing::warn!(error = %e, "takeover socket: connection refused");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match hand_over(&mut ch, &supervisors, &http).await {
            Ok(()) => {
                tracing::info!("handed over");
                exit.notify_one();
                return;
            }
            Err(e) => {
                status.failed();
                tracing::error!(error = %format!("{e:#}"), "takeover failed; serving on");
            }
        }
    }
}

/// One takeover, from the old agent's side. On error, everything handed out has been
/// taken back.
async fn hand_over(
    ch: &mut Channel,
    supervisors: &[(String, mpsc::Sender<HandoverRequest>)],
    http: &HttpServer,
) -> anyhow::Result<()> {
    let ours = supervisors.iter().map(|(d, _)| d.clone()).collect();
    let (pid, version, devices) = greeted(ch, ours).await?;
    tracing::info!(successor_pid = pid, successor_version = %version, devices = ?devices, "a successor takes over; handing the interfaces over");
    let mut outcomes = Vec::new();
    let result = hand_out(ch, supervisors, &devices, http, &mut outcomes).await;
    let outcome = match result {
        Ok(()) => successor_outcome(ch).await,
        Err(e) => Err(e),
    };
    let decision = if outcome.is_ok() {
        Outcome::Exit
    } else {
        Outcome::Resume
    };
    for o in outcomes {
        let _ = o.send(decision);
    }
    if decision == Outcome::Resume {
        http.resume();
    }
    outcome
}

async fn hand_out(
    ch: &mut Channel,
    supervisors: &[(String, mpsc::Sender<HandoverRequest>)],
    wanted: &[String],
    http: &HttpServer,
    outcomes: &mut Vec<oneshot::Sender<Outcome>>,
) -> anyhow::Result<()> {
    // HTTP first: pausing it may wait for a request in flight, and the tunnels carry on
    // meanwhile.
    let listener = http.pause().await.context("the HTTP listener")?;
    send(ch, &Msg::Http, &[listener.as_fd()]).await?;
    for (device, tx) in supervisors.iter().filter(|(d, _)| wanted.contains(d)) {
        let (reply_tx, reply_rx) = oneshot::channel();
        let (outcome_tx, outcome_rx) = oneshot::channel();
        if tx
            .send(HandoverRequest {
                reply: reply_tx,
                outcome: outcome_rx,
            })
            .await
            .is_err()
        {
            continue;
        }
        outcomes.push(outcome_tx);
        let Ok(Some(handed)) = reply_rx.await else {
            // Not up here: the successor brings it up itself.
            continue;
        };
        let msg = Msg::Device {
            name: device.clone(),
            peers: crate::wiring::peers_to_json(&handed.peers),
        };
        let fds: Vec<_> = handed.socket.iter().map(|s| s.as_fd()).collect();
        send(ch, &msg, &fds).await?;
        tracing::info!(device = %device, peers = handed.peers.len(), "handed over");
    }
    send(ch, &Msg::Sent, &[]).await
}

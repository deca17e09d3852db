//! `tunnel` mode's takeover: one interface, whose whole configuration (private key
//! included: it is only ever in the message, never in a log) travels as a `set=1` request
//! with its UDP socket attached. The TUN device is made persistent by the running process
//! for the moment between the two (see `standalone.rs`).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::bail;
use dataplane::takeover::Channel;

use super::{Inherited, Msg, STEP_TIMEOUT, greeted, open, recv, send, successor_outcome};

/// What a successor in `tunnel` mode received: the interface's configuration (with
/// live endpoints and the bound port) and its UDP socket.
pub struct InheritedInterface {
    pub config: dataplane::TunnelConfig,
    pub socket: Option<OwnedFd>,
    pub inherited: Inherited,
}

/// `tunnel` mode's successor side: like [`take_over`] for one interface.
pub async fn take_over_interface(
    path: &Path,
    name: &str,
) -> anyhow::Result<Option<InheritedInterface>> {
    let who = format!("the process serving {name}");
    let Some((mut ch, pid, _)) = open(path, &who, vec![name.to_string()]).await? else {
        return Ok(None);
    };
    tracing::info!(
        device = name,
        old_pid = pid,
        "taking the interface over from the running process"
    );
    let (msg, mut fds) = recv(&mut ch, STEP_TIMEOUT).await?;
    let Msg::Interface { name: got, set } = msg else {
        bail!("the running process sent {msg:?} instead of its interface");
    };
    if got != name {
        bail!("the running process handed over {got}, not {name}");
    }
    let config = dataplane::uapi::merge::config_from_set_text(&set)
        .map_err(|e| anyhow::anyhow!("the handed-over configuration: {e}"))?;
    let socket = fds.pop();
    let (sent, _) = recv(&mut ch, STEP_TIMEOUT).await?;
    if !matches!(sent, Msg::Sent) {
        bail!("the running process sent {sent:?} instead of sent");
    }
    Ok(Some(InheritedInterface {
        config,
        socket,
        inherited: Inherited {
            devices: HashMap::new(),
            http: None,
            channel: ch,
            pid,
        },
    }))
}

/// `tunnel` mode's running side, step 1: the successor's hello for interface `name`.
pub async fn greet(ch: &mut Channel, name: &str) -> anyhow::Result<()> {
    let (pid, _, devices) = greeted(ch, vec![name.to_string()]).await?;
    if devices.iter().all(|d| d != name) {
        bail!("a successor (pid {pid}) asked for {devices:?}, not {name}");
    }
    tracing::info!(
        device = name,
        successor_pid = pid,
        "a successor takes the interface over"
    );
    Ok(())
}

/// Step 2: the released interface; then the successor's answer (`Ok` once it serves).
pub async fn hand_interface_over(
    ch: &mut Channel,
    name: &str,
    config: &dataplane::TunnelConfig,
    socket: Option<std::os::fd::BorrowedFd<'_>>,
) -> anyhow::Result<()> {
    let set = dataplane::uapi::text::format_set(&dataplane::uapi::merge::set_request_for(config));
    let msg = Msg::Interface {
        name: name.to_string(),
        set,
    };
    let fds: Vec<_> = socket.into_iter().collect();
    send(ch, &msg, &fds).await?;
    send(ch, &Msg::Sent, &[]).await?;
    successor_outcome(ch).await
}

//! Whether a gateway may stand, or go on: IP forwarding on for every family the remote
//! routes, not sitting out a cooldown, and, while it leads, a tunnel that hears from its
//! peers: one that has had no authenticated traffic from any of them for
//! [`STALE_DATA_PATH`] while it has peers gives the Lease up and sits out [`COOLDOWN`], so
//! that another candidate takes over.

use std::time::Duration;

use control::config::RemoteCluster;
use tokio::time::Instant;

use crate::state::RemoteState;

/// A gateway whose tunnel has had no authenticated traffic from any peer for this long,
/// while it has peers, gives the Lease up (peers send keepalives every 25 s).
pub const STALE_DATA_PATH: Duration = Duration::from_secs(40);
/// How long a gateway that gave up (its data path, or a FORWARD chain it could not open)
/// waits before standing again.
pub const COOLDOWN: Duration = Duration::from_secs(60);

/// Whether this node may stand (or go on) as the gateway.
#[derive(Default)]
pub(crate) struct Health {
    /// Leading since, and the received bytes of all peers when they last changed.
    leading: Option<(Instant, u64, Instant)>,
    /// Sitting out until, and why.
    cooldown: Option<(Instant, &'static str)>,
}

impl Health {
    pub(crate) fn started(&mut self) {
        let now = Instant::now();
        self.leading = Some((now, 0, now));
    }

    /// Gives up for `reason` (what failed): sits out [`COOLDOWN`] from `now`.
    pub(crate) fn give_up(&mut self, reason: &'static str, now: Instant) {
        self.cooldown = Some((now + COOLDOWN, reason));
        self.leading = None;
    }

    /// May this node stand (or go on) as the gateway: IP forwarding on, not sitting out,
    /// and, while leading, a data path that hears from its peers.
    pub(crate) fn check(
        &mut self,
        remote: &RemoteCluster,
        leading: bool,
        rs: &RemoteState,
    ) -> Result<(), String> {
        let data = rs.device().map(|d| {
            let status = d.status();
            let rx: u64 = status.peers.iter().map(|p| p.rx_bytes).sum();
            (rx, status.peers.len())
        });
        self.judge(leading, data, Instant::now())?;
        forwarding(remote)
    }

    /// The cooldown and data-path part of [`Health::check`], on `data` (received bytes of
    /// all peers, number of peers) at `now`.
    fn judge(
        &mut self,
        leading: bool,
        data: Option<(u64, usize)>,
        now: Instant,
    ) -> Result<(), String> {
        if let Some((until, reason)) = self.cooldown {
            if now < until {
                return Err(format!(
                    "sitting out {} s more after {reason}",
                    (until - now).as_secs()
                ));
            }
            self.cooldown = None;
        }
        if !leading {
            self.leading = None;
            return Ok(());
        }
        let Some((since, last_rx, changed)) = &mut self.leading else {
            self.leading = Some((now, data.map_or(0, |d| d.0), now));
            return Ok(());
        };
        let Some((rx, peers)) = data else {
            return Ok(());
        };
        if rx != *last_rx {
            *last_rx = rx;
            *changed = now;
        }
        let stale = now - *changed >= STALE_DATA_PATH && now - *since >= STALE_DATA_PATH;
        if peers > 0 && stale {
            self.give_up("its data path failed", now);
            return Err(format!(
                "no authenticated traffic from any of its {peers} peers for {} s",
                STALE_DATA_PATH.as_secs()
            ));
        }
        Ok(())
    }
}

/// IP forwarding on for every family the remote routes.
fn forwarding(remote: &RemoteCluster) -> Result<(), String> {
    let v6 = remote.subnets.routed().any(|p| !p.is_ipv4());
    let mut checks = vec![("net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward")];
    if v6 {
        checks.push((
            "net.ipv6.conf.all.forwarding",
            "/proc/sys/net/ipv6/conf/all/forwarding",
        ));
    }
    for (name, path) in checks {
        match std::fs::read_to_string(path) {
            Ok(v) if v.trim() == "1" => {}
            Ok(_) => {
                return Err(format!(
                    "IP forwarding is off ({name}=0): a gateway must forward"
                ));
            }
            Err(e) => return Err(format!("cannot read {name}: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_that_hears_nothing_gives_up_and_sits_out() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut h = Health::default();
        assert!(h.judge(true, Some((0, 2)), at(0)).is_ok());
        // Keepalives keep arriving: healthy however long it leads.
        for s in (10..=200).step_by(10) {
            assert!(h.judge(true, Some((s * 32, 2)), at(s)).is_ok(), "{s}");
        }
        // Silence: still fine until STALE_DATA_PATH has passed since the last byte.
        assert!(h.judge(true, Some((6400, 2)), at(239)).is_ok());
        let e = h.judge(true, Some((6400, 2)), at(240)).unwrap_err();
        assert!(
            e.contains("no authenticated traffic from any of its 2 peers"),
            "{e}"
        );
        // It sits out COOLDOWN, then may stand again.
        let e = h.judge(false, None, at(241)).unwrap_err();
        assert!(e.contains("sitting out"), "{e}");
        assert!(h.judge(false, None, at(240 + COOLDOWN.as_secs())).is_ok());
        // Without peers there is nothing to hear from: no judgement.
        let mut h = Health::default();
        assert!(h.judge(true, Some((0, 0)), at(0)).is_ok());
        assert!(h.judge(true, Some((0, 0)), at(500)).is_ok());
        // A fresh gateway gets STALE_DATA_PATH before its first judgement.
        let mut h = Health::default();
        assert!(h.judge(true, Some((0, 3)), at(0)).is_ok());
        assert!(h.judge(true, Some((0, 3)), at(39)).is_ok());
        assert!(h.judge(true, Some((0, 3)), at(40)).is_err());
    }

    #[test]
    fn a_gateway_that_gives_up_sits_out_and_says_why() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut h = Health::default();
        assert!(h.judge(true, Some((0, 2)), at(0)).is_ok());
        h.give_up("its FORWARD chain could not be opened", at(5));
        let e = h.judge(true, Some((0, 2)), at(6)).unwrap_err();
        assert!(
            e.contains("59 s more after its FORWARD chain could not be opened"),
            "{e}"
        );
        assert!(
            h.judge(false, None, at(5 + COOLDOWN.as_secs() - 1))
                .is_err()
        );
        assert!(h.judge(false, None, at(5 + COOLDOWN.as_secs())).is_ok());
    }
}

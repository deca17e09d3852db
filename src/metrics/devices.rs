//! The per-device and per-peer families of `/metrics`, streamed from one status snapshot
//! per device (a remote of 5 000 peers writes 30 000 series).

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use dataplane::{DeviceStatus, DropReason, PeerStatus};
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::{Value, family, series};
use crate::state::RemoteState;

/// A per-peer family: name, help, type and how to read the value.
type PerPeer = (
    &'static str,
    &'static str,
    MetricType,
    fn(&PeerStatus) -> Value,
);

/// What one scrape reads of a remote's tunnel: taken once, then streamed family by
/// family with borrowed labels (a remote of 5 000 peers writes 30 000 series; building
/// them as owned label vectors first cost more memory than the text).
pub(crate) struct DeviceSnapshot<'a> {
    pub(crate) remote: &'a RemoteState,
    pub(crate) device: Option<(Arc<dyn dataplane::Device>, DeviceStatus, Vec<String>)>,
}

impl DeviceSnapshot<'_> {
    fn peers(&self) -> impl Iterator<Item = (&PeerStatus, &str)> {
        self.device
            .iter()
            .flat_map(|(_, status, keys)| status.peers.iter().zip(keys.iter().map(String::as_str)))
    }
}

/// Writes the device, peer and dataplane families.
pub(super) fn encode(e: &mut DescriptorEncoder<'_>, snaps: &[DeviceSnapshot<'_>]) -> fmt::Result {
    use MetricType::{Counter, Gauge};
    use Value::{Counter as C, Gauge as G};
    family(
        e,
        "semaphore_wg_device_info",
        "Metadata about a wireguard device.",
        Gauge,
        |m| {
            for s in snaps {
                let Some((_, status, _)) = &s.device else {
                    continue;
                };
                if let Some(sk) = &status.private_key {
                    let pk = sk.public_key().to_base64();
                    let l = [("device", s.remote.device.as_str()), ("public_key", &pk)];
                    series(m, &l, G(1))?;
                }
            }
            Ok(())
        },
    )?;
    family(
        e,
        "semaphore_wg_peer_info",
        "Metadata about a wireguard peer.",
        Gauge,
        |m| {
            let mut ep = String::new();
            for s in snaps {
                for (p, key) in s.peers() {
                    ep.clear();
                    if let Some(a) = p.endpoint {
                        write!(ep, "{a}")?;
                    }
                    let d = s.remote.device.as_str();
                    let l = [("device", d), ("endpoint", &ep), ("public_key", key)];
                    series(m, &l, G(1))?;
                }
            }
            Ok(())
        },
    )?;
    family(
        e,
        "semaphore_wg_peer_allowed_ips_info",
        "An allowed IP of a wireguard peer.",
        Gauge,
        |m| {
            let mut ip = String::new();
            for s in snaps {
                for (p, key) in s.peers() {
                    for n in &p.allowed_ips {
                        ip.clear();
                        write!(ip, "{n}")?;
                        let d = s.remote.device.as_str();
                        let l = [
                            ("allowed_ips", ip.as_str()),
                            ("device", d),
                            ("public_key", key),
                        ];
                        series(m, &l, G(1))?;
                    }
                }
            }
            Ok(())
        },
    )?;
    let per_peer: [PerPeer; 3] = [
        (
            "semaphore_wg_peer_receive_bytes",
            "Bytes received from a peer.",
            Counter,
            |p| C(p.rx_bytes),
        ),
        (
            "semaphore_wg_peer_transmit_bytes",
            "Bytes sent to a peer.",
            Counter,
            |p| C(p.tx_bytes),
        ),
        (
            "semaphore_wg_peer_last_handshake_seconds",
            "Unix time of the last handshake with a peer (0 = never).",
            Gauge,
            |p| {
                G(p.last_handshake
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs() as i64))
            },
        ),
    ];
    for (name, help, kind, value) in per_peer {
        family(e, name, help, kind, |m| {
            for s in snaps {
                for (p, key) in s.peers() {
                    let l = [("device", s.remote.device.as_str()), ("public_key", key)];
                    series(m, &l, value(p))?;
                }
            }
            Ok(())
        })?;
    }
    family(
        e,
        "semaphore_wg_peers",
        "Peers configured on a device.",
        Gauge,
        |m| {
            for s in snaps {
                let Some((_, status, _)) = &s.device else {
                    continue;
                };
                let l = [("device", s.remote.device.as_str())];
                series(m, &l, G(status.peers.len() as i64))?;
            }
            Ok(())
        },
    )?;
    family(
        e,
        "semaphore_wg_dataplane_drops",
        "Packets dropped by the userspace dataplane, by reason.",
        Counter,
        |m| {
            for s in snaps {
                let Some((t, _, _)) = &s.device else { continue };
                let c = t.counters();
                for reason in DropReason::all() {
                    let l = [
                        ("device", s.remote.device.as_str()),
                        ("reason", reason.as_str()),
                    ];
                    series(m, &l, C(c.drops(reason)))?;
                }
            }
            Ok(())
        },
    )?;
    family(
        e,
        "semaphore_wg_dataplane_handshakes",
        "Handshakes completed by the userspace dataplane.",
        Counter,
        |m| {
            for s in snaps {
                let Some((t, _, _)) = &s.device else { continue };
                let l = [("device", s.remote.device.as_str())];
                series(m, &l, C(t.counters().handshakes()))?;
            }
            Ok(())
        },
    )?;
    for (name, help, bytes) in [
        (
            "semaphore_wg_dataplane_packets",
            "WireGuard datagrams on the device's UDP socket.",
            false,
        ),
        (
            "semaphore_wg_dataplane_bytes",
            "WireGuard bytes on the device's UDP socket.",
            true,
        ),
    ] {
        family(e, name, help, Counter, |m| {
            for s in snaps {
                let Some((t, _, _)) = &s.device else { continue };
                let t = t.counters().traffic();
                let d = s.remote.device.as_str();
                let (rx, tx) = if bytes {
                    (t.rx_bytes, t.tx_bytes)
                } else {
                    (t.rx_packets, t.tx_packets)
                };
                series(m, &[("device", d), ("direction", "rx")], C(rx))?;
                series(m, &[("device", d), ("direction", "tx")], C(tx))?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

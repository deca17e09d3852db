//! `/metrics`: every metric of the Go original (names, types, labels, series initialised
//! to 0), plus the dataplane's own counters, all read at scrape time.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::UNIX_EPOCH;

use control::peers::SkipKind;
use dataplane::DropReason;
use dataplane::{DeviceStatus, PeerStatus};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::state::{AppState, RemoteState};

/// One series: a label set and its value.
fn series<L: EncodeLabelSet>(m: &mut MetricEncoder<'_>, labels: &L, value: Value) -> fmt::Result {
    match value {
        Value::Counter(v) => ConstCounter::new(v).encode(m.encode_family(labels)?),
        Value::Gauge(v) => ConstGauge::new(v).encode(m.encode_family(labels)?),
    }
}

/// A per-peer family: name, help, type and how to read the value.
type PerPeer = (
    &'static str,
    &'static str,
    MetricType,
    fn(&PeerStatus) -> Value,
);

#[derive(Clone, Copy)]
enum Value {
    Counter(u64),
    Gauge(i64),
}

/// What one scrape reads of a remote's tunnel: taken once, then streamed family by
/// family with borrowed labels (a remote of 5 000 peers writes 30 000 series; building
/// them as owned label vectors first cost more memory than the text).
struct DeviceSnapshot<'a> {
    remote: &'a RemoteState,
    device: Option<(Arc<dyn dataplane::Device>, DeviceStatus, Vec<String>)>,
}

impl DeviceSnapshot<'_> {
    fn peers(&self) -> impl Iterator<Item = (&PeerStatus, &str)> {
        self.device
            .iter()
            .flat_map(|(_, status, keys)| status.peers.iter().zip(keys.iter().map(String::as_str)))
    }
}

/// Reads the agent's state on every scrape.
#[derive(Debug)]
pub struct Metrics(pub Arc<AppState>);

const VERBS: [&str; 7] = [
    "get", "list", "create", "update", "patch", "watch", "delete",
];

/// Writes one family: its descriptor, then the series `each` yields.
fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    each: impl FnOnce(&mut MetricEncoder<'_>) -> fmt::Result,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    each(&mut m)
}

impl Collector for Metrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        use MetricType::{Counter, Gauge};
        use Value::{Counter as C, Gauge as G};
        let snaps: Vec<DeviceSnapshot<'_>> = self
            .0
            .remotes
            .iter()
            .map(|r| DeviceSnapshot {
                remote: r,
                device: r.device().map(|t| {
                    let status = t.status();
                    let keys = status
                        .peers
                        .iter()
                        .map(|p| p.public_key.to_base64())
                        .collect();
                    (t, status, keys)
                }),
            })
            .collect();
        let e = &mut enc;
        family(
            e,
            "semaphore_wg_kube_http_request",
            "Kubernetes API requests, by host, status code and method.",
            Counter,
            |m| {
                for ((host, code, method), v) in self.0.kube_requests.snapshot() {
                    let l = [
                        ("code", code.as_str()),
                        ("host", &host),
                        ("method", &method),
                    ];
                    series(m, &l, C(v))?;
                }
                Ok(())
            },
        )?;
        family(
            e,
            "semaphore_wg_sync_peers",
            "Counts wireguard peer syncs, by device and success.",
            Counter,
            |m| {
                for s in &snaps {
                    let (d, st) = (s.remote.device.as_str(), &s.remote.sync);
                    series(
                        m,
                        &[("device", d), ("success", "1")],
                        C(st.syncs_ok.load(Relaxed)),
                    )?;
                    let failed = st.syncs_failed.load(Relaxed);
                    series(m, &[("device", d), ("success", "0")], C(failed))?;
                }
                Ok(())
            },
        )?;
        family(
            e,
            "semaphore_wg_sync_queue_full_failures",
            "Counts syncs that could not be queued (always 0 here: syncs are debounced, not queued).",
            Counter,
            |m| {
                for s in &snaps {
                    series(m, &[("device", s.remote.device.as_str())], C(0))?;
                }
                Ok(())
            },
        )?;
        family(
            e,
            "semaphore_wg_sync_requeue",
            "Counts peer syncs retried after a failure.",
            Counter,
            |m| {
                for s in &snaps {
                    let v = s.remote.sync.requeues.load(Relaxed);
                    series(m, &[("device", s.remote.device.as_str())], C(v))?;
                }
                Ok(())
            },
        )?;
        family(
            e,
            "semaphore_wg_node_watcher_failures",
            "Counts remote node watcher failures, by cluster and verb.",
            Counter,
            |m| {
                for s in &snaps {
                    let st = &s.remote.sync;
                    for verb in VERBS {
                        let v = match verb {
                            "list" => st.list_failures.load(Relaxed),
                            "watch" => st.watch_failures.load(Relaxed),
                            _ => 0,
                        };
                        let l = [("cluster", s.remote.cluster.as_str()), ("verb", verb)];
                        series(m, &l, C(v))?;
                    }
                }
                Ok(())
            },
        )?;
        family(
            e,
            "semaphore_wg_device_info",
            "Metadata about a wireguard device.",
            Gauge,
            |m| {
                for s in &snaps {
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
                for s in &snaps {
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
                for s in &snaps {
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
                for s in &snaps {
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
                for s in &snaps {
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
                for s in &snaps {
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
                for s in &snaps {
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
                for s in &snaps {
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
        family(
            e,
            "semaphore_wg_skipped_nodes",
            "Remote nodes skipped, by reason.",
            Counter,
            |m| {
                for s in &snaps {
                    for kind in SkipKind::all() {
                        let v = s.remote.sync.skipped_total[kind.index()].load(Relaxed);
                        let l = [
                            ("cluster", s.remote.cluster.as_str()),
                            ("reason", kind.label()),
                        ];
                        series(m, &l, C(v))?;
                    }
                }
                Ok(())
            },
        )?;
        family(
            e,
            "semaphore_wg_remote_up",
            "1 while a remote's tunnel is up and its nodes are synced; 0 otherwise (/readyz and the log say why).",
            Gauge,
            |m| {
                for s in &snaps {
                    let l = [("remote", s.remote.cluster.as_str())];
                    series(m, &l, G(i64::from(s.remote.is_working())))?;
                }
                Ok(())
            },
        )?;
        family(
            e,
            "semaphore_wg_held_peer_removals",
            "Peer removals held back because more than half of a remote's peers would go at once.",
            Gauge,
            |m| {
                for s in &snaps {
                    let v = s.remote.sync.held_removals.load(Relaxed) as i64;
                    series(m, &[("remote", s.remote.cluster.as_str())], G(v))?;
                }
                Ok(())
            },
        )?;
        let t = &self.0.takeover;
        let gauge = enc.encode_descriptor(
            "semaphore_wg_took_over",
            "1 when this agent started by taking the interfaces of a running one over (an upgrade in place).",
            None,
            Gauge,
        )?;
        ConstGauge::new(i64::from(t.took_over.load(Relaxed))).encode(gauge)?;
        let counter = enc.encode_descriptor(
            "semaphore_wg_takeover_failures",
            "Successors that tried to take this agent's interfaces over and failed; this agent served on.",
            None,
            Counter,
        )?;
        ConstCounter::new(t.failures.load(Relaxed)).encode(counter)
    }
}

/// A registry holding the collector.
pub fn registry(state: Arc<AppState>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(Metrics(state)));
    r
}

/// The text exposition.
pub fn render(registry: &Registry) -> String {
    // Sized like the previous scrape's text, so a large exposition is written once
    // instead of being copied as the string doubles.
    static LAST_LEN: AtomicUsize = AtomicUsize::new(0);
    let mut out = String::with_capacity(LAST_LEN.load(Relaxed) + LAST_LEN.load(Relaxed) / 8);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    LAST_LEN.store(out.len(), Relaxed);
    out
}

#[cfg(test)]
mod tests;

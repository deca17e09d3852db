//! `/metrics`: every metric of the Go original (names, types, labels, series initialised
//! to 0), plus the dataplane's own counters, all read at scrape time.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;

use control::peers::{RefuseKind, SkipKind};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::state::AppState;

/// One series: a label set and its value.
fn series<L: EncodeLabelSet>(m: &mut MetricEncoder<'_>, labels: &L, value: Value) -> fmt::Result {
    match value {
        Value::Counter(v) => ConstCounter::new(v).encode(m.encode_family(labels)?),
        Value::Gauge(v) => ConstGauge::new(v).encode(m.encode_family(labels)?),
    }
}

#[derive(Clone, Copy)]
enum Value {
    Counter(u64),
    Gauge(i64),
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
        devices::encode(e, &snaps)?;
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
            "semaphore_wg_gateway",
            "Gateway mode: 1 for the remote's active gateway node as this agent sees it (self=\"true\" on the gateway itself).",
            Gauge,
            |m| {
                for s in &snaps {
                    let gw = s
                        .remote
                        .gateway
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    if let Some((node, me)) = gw {
                        let me = if me { "true" } else { "false" };
                        let l = [
                            ("cluster", s.remote.cluster.as_str()),
                            ("node", node.as_str()),
                            ("self", me),
                        ];
                        series(m, &l, G(1))?;
                    }
                }
                Ok(())
            },
        )?;
        family(
            e,
            "semaphore_wg_refused_claims",
            "extraCIDRs claims of remote nodes refused, by reason (not a CIDR, outside the remote's extraSubnets, held by an older node).",
            Counter,
            |m| {
                for s in &snaps {
                    for kind in RefuseKind::all() {
                        let v = s.remote.sync.refused_total[kind.index()].load(Relaxed);
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

mod devices;

pub(crate) use devices::DeviceSnapshot;

//! `/metrics`: every metric of the Go original (names, types, labels, series initialised
//! to 0), plus the dataplane's own counters, all read at scrape time.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::UNIX_EPOCH;

use control::peers::SkipKind;
use dataplane::DropReason;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::state::AppState;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (l, v) in series {
        ConstCounter::new(*v).encode(m.encode_family(l)?)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(Labels, i64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (l, v) in series {
        ConstGauge::new(*v).encode(m.encode_family(l)?)?;
    }
    Ok(())
}

/// Reads the agent's state on every scrape.
#[derive(Debug)]
pub struct Metrics(pub Arc<AppState>);

const VERBS: [&str; 7] = [
    "get", "list", "create", "update", "patch", "watch", "delete",
];

impl Collector for Metrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let remotes = &self.0.remotes;
        let (mut sync, mut queue, mut requeue, mut watcher) = (vec![], vec![], vec![], vec![]);
        let (mut dev_info, mut peer_info, mut allowed, mut rx, mut tx, mut hs) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let (mut drops, mut handshakes, mut packets, mut bytes, mut skipped, mut npeers) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let (mut up, mut held) = (vec![], vec![]);
        for r in remotes.iter() {
            let d = r.device.as_str();
            let s = &r.sync;
            sync.push((
                labels(&[("device", d), ("success", "1")]),
                s.syncs_ok.load(Relaxed),
            ));
            sync.push((
                labels(&[("device", d), ("success", "0")]),
                s.syncs_failed.load(Relaxed),
            ));
            queue.push((labels(&[("device", d)]), 0));
            requeue.push((labels(&[("device", d)]), s.requeues.load(Relaxed)));
            for verb in VERBS {
                let v = match verb {
                    "list" => s.list_failures.load(Relaxed),
                    "watch" => s.watch_failures.load(Relaxed),
                    _ => 0,
                };
                watcher.push((labels(&[("cluster", &r.cluster), ("verb", verb)]), v));
            }
            for kind in SkipKind::all() {
                skipped.push((
                    labels(&[("cluster", &r.cluster), ("reason", kind.label())]),
                    s.skipped_total[kind.index()].load(Relaxed),
                ));
            }
            up.push((labels(&[("remote", &r.cluster)]), i64::from(r.is_working())));
            held.push((
                labels(&[("remote", &r.cluster)]),
                s.held_removals.load(Relaxed) as i64,
            ));
            let Some(tunnel) = r.device() else {
                continue;
            };
            let status = tunnel.status();
            if let Some(sk) = &status.private_key {
                dev_info.push((
                    labels(&[("device", d), ("public_key", &sk.public_key().to_base64())]),
                    1,
                ));
            }
            npeers.push((labels(&[("device", d)]), status.peers.len() as i64));
            for p in &status.peers {
                let key = p.public_key.to_base64();
                let ep = p.endpoint.map(|e| e.to_string()).unwrap_or_default();
                peer_info.push((
                    labels(&[("device", d), ("endpoint", &ep), ("public_key", &key)]),
                    1,
                ));
                for n in &p.allowed_ips {
                    allowed.push((
                        labels(&[
                            ("allowed_ips", &n.to_string()),
                            ("device", d),
                            ("public_key", &key),
                        ]),
                        1,
                    ));
                }
                rx.push((labels(&[("device", d), ("public_key", &key)]), p.rx_bytes));
                tx.push((labels(&[("device", d), ("public_key", &key)]), p.tx_bytes));
                let secs = p
                    .last_handshake
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs() as i64);
                hs.push((labels(&[("device", d), ("public_key", &key)]), secs));
            }
            let c = tunnel.counters();
            for reason in DropReason::all() {
                drops.push((
                    labels(&[("device", d), ("reason", reason.as_str())]),
                    c.drops(reason),
                ));
            }
            handshakes.push((labels(&[("device", d)]), c.handshakes()));
            let t = c.traffic();
            packets.push((labels(&[("device", d), ("direction", "rx")]), t.rx_packets));
            packets.push((labels(&[("device", d), ("direction", "tx")]), t.tx_packets));
            bytes.push((labels(&[("device", d), ("direction", "rx")]), t.rx_bytes));
            bytes.push((labels(&[("device", d), ("direction", "tx")]), t.tx_bytes));
        }
        let kube: Vec<(Labels, u64)> = self
            .0
            .kube_requests
            .snapshot()
            .into_iter()
            .map(|((host, code, method), v)| {
                (
                    labels(&[("code", &code), ("host", &host), ("method", &method)]),
                    v,
                )
            })
            .collect();
        counter(
            &mut enc,
            "semaphore_wg_kube_http_request",
            "Kubernetes API requests, by host, status code and method.",
            &kube,
        )?;
        counter(
            &mut enc,
            "semaphore_wg_sync_peers",
            "Counts wireguard peer syncs, by device and success.",
            &sync,
        )?;
        counter(
            &mut enc,
            "semaphore_wg_sync_queue_full_failures",
            "Counts syncs that could not be queued (always 0 here: syncs are debounced, not queued).",
            &queue,
        )?;
        counter(
            &mut enc,
            "semaphore_wg_sync_requeue",
            "Counts peer syncs retried after a failure.",
            &requeue,
        )?;
        counter(
            &mut enc,
            "semaphore_wg_node_watcher_failures",
            "Counts remote node watcher failures, by cluster and verb.",
            &watcher,
        )?;
        gauge(
            &mut enc,
            "semaphore_wg_device_info",
            "Metadata about a wireguard device.",
            &dev_info,
        )?;
        gauge(
            &mut enc,
            "semaphore_wg_peer_info",
            "Metadata about a wireguard peer.",
            &peer_info,
        )?;
        gauge(
            &mut enc,
            "semaphore_wg_peer_allowed_ips_info",
            "An allowed IP of a wireguard peer.",
            &allowed,
        )?;
        counter(
            &mut enc,
            "semaphore_wg_peer_receive_bytes",
            "Bytes received from a peer.",
            &rx,
        )?;
        counter(
            &mut enc,
            "semaphore_wg_peer_transmit_bytes",
            "Bytes sent to a peer.",
            &tx,
        )?;
        gauge(
            &mut enc,
            "semaphore_wg_peer_last_handshake_seconds",
            "Unix time of the last handshake with a peer (0 = never).",
            &hs,
        )?;
        gauge(
            &mut enc,
            "semaphore_wg_peers",
            "Peers configured on a device.",
            &npeers,
        )?;
        counter(
            &mut enc,
            "semaphore_wg_dataplane_drops",
            "Packets dropped by the userspace dataplane, by reason.",
            &drops,
        )?;
        counter(
            &mut enc,
            "semaphore_wg_dataplane_handshakes",
            "Handshakes completed by the userspace dataplane.",
            &handshakes,
        )?;
        counter(
            &mut enc,
            "semaphore_wg_dataplane_packets",
            "WireGuard datagrams on the device's UDP socket.",
            &packets,
        )?;
        counter(
            &mut enc,
            "semaphore_wg_dataplane_bytes",
            "WireGuard bytes on the device's UDP socket.",
            &bytes,
        )?;
        counter(
            &mut enc,
            "semaphore_wg_skipped_nodes",
            "Remote nodes skipped, by reason.",
            &skipped,
        )?;
        gauge(
            &mut enc,
            "semaphore_wg_remote_up",
            "1 while a remote's tunnel is up and its nodes are synced; 0 otherwise (/readyz and the log say why).",
            &up,
        )?;
        gauge(
            &mut enc,
            "semaphore_wg_held_peer_removals",
            "Peer removals held back because more than half of a remote's peers would go at once.",
            &held,
        )?;
        Ok(())
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
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    out
}

#[cfg(test)]
mod tests {
    use control::advertise::AdvertStatus;
    use control::http_metrics::RequestCounts;
    use control::sync::SyncStatus;
    use dataplane::testing::{MemNet, mem_tun};
    use dataplane::{PeerConfig, PrivateKey, Tunnel, TunnelConfig};

    use super::*;
    use crate::state::RemoteState;

    #[tokio::test]
    async fn exposition_has_the_original_series() {
        let sk = PrivateKey::from_bytes([1; 32]);
        let peer = PrivateKey::from_bytes([2; 32]).public_key();
        let mut pc = PeerConfig::new(peer);
        pc.allowed_ips = vec![dataplane::config::parse_prefix("10.4.1.0/24").unwrap()];
        let cfg = TunnelConfig {
            private_key: Some(sk.clone()),
            listen_port: 51820,
            fwmark: 0,
            peers: vec![pc],
        };
        let (tun, _host) = mem_tun();
        let tunnel = Tunnel::spawn(
            "wireguard.gcp",
            tun,
            MemNet::new().host("192.0.2.1".parse().unwrap()),
            cfg,
        )
        .unwrap();
        let sync = Arc::new(SyncStatus::default());
        sync.syncs_ok.fetch_add(3, Relaxed);
        sync.initial_list_applied.store(true, Relaxed);
        sync.list_failures.fetch_add(1, Relaxed);
        let mut remote = RemoteState::new("gcp", "wireguard.gcp");
        remote.sync = sync;
        remote.route_ok.store(true, Relaxed);
        let remote = Arc::new(remote);
        remote.set_up(tunnel.device());
        let state = Arc::new(AppState {
            remotes: vec![remote],
            advert: Arc::new(AdvertStatus::default()),
            kube_requests: RequestCounts::default(),
        });
        let text = render(&registry(state));
        let pk = sk.public_key().to_base64();
        let peer = peer.to_base64();
        let want = [
            "# TYPE semaphore_wg_sync_peers counter".to_string(),
            r#"semaphore_wg_sync_peers_total{device="wireguard.gcp",success="1"} 3"#.into(),
            r#"semaphore_wg_sync_peers_total{device="wireguard.gcp",success="0"} 0"#.into(),
            r#"semaphore_wg_sync_queue_full_failures_total{device="wireguard.gcp"} 0"#.into(),
            r#"semaphore_wg_sync_requeue_total{device="wireguard.gcp"} 0"#.into(),
            r#"semaphore_wg_node_watcher_failures_total{cluster="gcp",verb="list"} 1"#.into(),
            r#"semaphore_wg_node_watcher_failures_total{cluster="gcp",verb="delete"} 0"#.into(),
            "# TYPE semaphore_wg_device_info gauge".into(),
            format!(r#"semaphore_wg_device_info{{device="wireguard.gcp",public_key="{pk}"}} 1"#),
            format!(r#"semaphore_wg_peer_info{{device="wireguard.gcp",endpoint="",public_key="{peer}"}} 1"#),
            format!(r#"semaphore_wg_peer_allowed_ips_info{{allowed_ips="10.4.1.0/24",device="wireguard.gcp",public_key="{peer}"}} 1"#),
            format!(r#"semaphore_wg_peer_receive_bytes_total{{device="wireguard.gcp",public_key="{peer}"}} 0"#),
            format!(r#"semaphore_wg_peer_transmit_bytes_total{{device="wireguard.gcp",public_key="{peer}"}} 0"#),
            format!(r#"semaphore_wg_peer_last_handshake_seconds{{device="wireguard.gcp",public_key="{peer}"}} 0"#),
            r#"semaphore_wg_dataplane_drops_total{device="wireguard.gcp",reason="source_not_allowed"} 0"#.into(),
            r#"semaphore_wg_skipped_nodes_total{cluster="gcp",reason="invalid_public_key"} 0"#.into(),
            r#"semaphore_wg_skipped_nodes_total{cluster="gcp",reason="pod_cidr_conflict"} 0"#.into(),
            r#"semaphore_wg_remote_up{remote="gcp"} 1"#.into(),
            r#"semaphore_wg_held_peer_removals{remote="gcp"} 0"#.into(),
            "# TYPE semaphore_wg_kube_http_request counter".into(),
        ];
        for w in want {
            assert!(text.lines().any(|l| l == w), "missing {w:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}

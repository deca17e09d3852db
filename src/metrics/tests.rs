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
        takeover: Arc::default(),
    });
    state.takeover.taken_over();
    state.takeover.failed();
    let text = render(&registry(state));
    let pk = sk.public_key().to_base64();
    let peer = peer.to_base64();
    let want = [
        "# TYPE semaphore_wg_sync_peers counter".to_string(),
        r#"semaphore_wg_sync_peers_total{device="wireguard.gcp",success="1"} 3"#.into(),
        r#"semaphore_wg_sync_peers_total{device="wireguard.gcp",success="0"} 0"#.into(),
        "semaphore_wg_took_over 1".into(),
        "semaphore_wg_takeover_failures_total 1".into(),
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

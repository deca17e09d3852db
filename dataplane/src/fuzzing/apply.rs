//! Sequences of UAPI requests applied to a running tunnel through its one write path, as
//! `wg` would send them: each request parsed line by line and applied (or refused whole)
//! with `Device::update`. Checked after each: the configuration is valid, the status
//! lists exactly its peers, and a `get` answer parses back to that status.

use std::sync::{Mutex, OnceLock};

use crate::Tunnel;
use crate::config::TunnelConfig;
use crate::status::Device;
use crate::testing::{MemNet, MemTunHost, MemUdpBinder, mem_tun};
use crate::uapi::command::{Request, RequestParser};
use crate::uapi::merge::merge_set;
use crate::uapi::text::{format_get, parse_get};

struct Running {
    // The tick is a tokio task: the runtime lives as long as the tunnel.
    _runtime: tokio::runtime::Runtime,
    tunnel: Tunnel<MemUdpBinder>,
    _host: MemTunHost,
}

fn running() -> &'static Mutex<Running> {
    static RUNNING: OnceLock<Mutex<Running>> = OnceLock::new();
    RUNNING.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (tun, host) = mem_tun();
        let net = MemNet::new();
        let binder = net.host("192.0.2.40".parse().expect("address"));
        let tunnel = runtime
            .block_on(async { Tunnel::spawn("fuzz0", tun, binder, TunnelConfig::default()) })
            .expect("tunnel");
        Mutex::new(Running {
            _runtime: runtime,
            tunnel,
            _host: host,
        })
    })
}

/// Requests separated by empty lines, applied in order to a tunnel reset to an empty
/// configuration.
pub fn uapi_sequence(data: &[u8]) {
    let r = running().lock().unwrap_or_else(|e| e.into_inner());
    let device = r.tunnel.device();
    let _ = device.apply(TunnelConfig {
        listen_port: 0,
        ..TunnelConfig::default()
    });
    let text = String::from_utf8_lossy(data);
    for request in text.split("\n\n").take(16) {
        let mut parser = RequestParser::new();
        for line in request.split('\n').filter(|l| !l.is_empty()) {
            parser.line(line);
        }
        let before = device.config();
        if let Ok(Request::Set(set)) = parser.finish() {
            // Never bind real ports here: the in-memory network has them all anyway.
            let applied = device.update(
                &mut |cfg| {
                    merge_set(cfg, &set);
                    Ok(())
                },
                &[],
            );
            if applied.is_err() {
                assert_eq!(
                    device.config(),
                    before,
                    "a refused set changed the configuration"
                );
            }
        }
        check(&*device);
    }
}

fn check(device: &dyn Device) {
    let mut config = device.config();
    let copy = config.clone();
    config
        .validate()
        .expect("the applied configuration is valid");
    assert_eq!(config, copy, "the applied configuration was normalised");
    let status = device.status();
    let keys: Vec<_> = status.peers.iter().map(|p| p.public_key).collect();
    let want: Vec<_> = copy.peers.iter().map(|p| p.public_key).collect();
    assert_eq!(keys, want, "status and configuration disagree");
    let mut parsed = parse_get(&format_get(&status)).expect("a get answer parses");
    // Packet counts are not in the protocol.
    for p in &mut parsed.peers {
        let live = status
            .peers
            .iter()
            .find(|s| s.public_key == p.public_key)
            .expect("peer");
        p.rx_packets = live.rx_packets;
        p.tx_packets = live.tx_packets;
    }
    assert_eq!(parsed, status, "a get answer does not round-trip");
}

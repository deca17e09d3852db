use std::time::{Duration, UNIX_EPOCH};

use super::command::*;
use super::merge::merge_set;
use super::text::{format_get, format_set, parse_get};
use crate::config::{PeerConfig, TunnelConfig, parse_prefix};
use crate::key::{Key, PrivateKey};
use crate::status::{DeviceStatus, PeerStatus};

fn key(n: u8) -> Key {
    Key([n; 32])
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.is_empty()).collect()
}

fn sample_status() -> DeviceStatus {
    DeviceStatus {
        private_key: Some(PrivateKey::from_bytes([7; 32])),
        listen_port: 51820,
        fwmark: 0x1234,
        peers: vec![
            PeerStatus {
                public_key: key(1),
                preshared_key: Some(key(9)),
                endpoint: Some("[fd00::1]:51820".parse().unwrap()),
                last_handshake: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789)),
                rx_bytes: 100,
                tx_bytes: 200,
                rx_packets: 0,
                tx_packets: 0,
                persistent_keepalive: Some(25),
                allowed_ips: vec![
                    parse_prefix("10.4.1.0/24").unwrap(),
                    parse_prefix("fd10::/64").unwrap(),
                ],
            },
            PeerStatus::new(key(2)),
        ],
    }
}

#[test]
fn get_round_trips() {
    let st = sample_status();
    let text = format_get(&st);
    assert_eq!(parse_get(&text).unwrap(), st);
}

#[test]
fn get_has_the_fields_wg_reads_in_order() {
    let text = format_get(&sample_status());
    let keys: Vec<&str> = text.lines().map(|l| l.split('=').next().unwrap()).collect();
    assert_eq!(
        &keys[..14],
        &[
            "private_key",
            "listen_port",
            "fwmark",
            "public_key",
            "preshared_key",
            "protocol_version",
            "endpoint",
            "last_handshake_time_sec",
            "last_handshake_time_nsec",
            "tx_bytes",
            "rx_bytes",
            "persistent_keepalive_interval",
            "allowed_ip",
            "allowed_ip"
        ]
    );
    assert!(text.contains("last_handshake_time_sec=1700000000\n"));
    assert!(text.contains("endpoint=[fd00::1]:51820\n"));
    // A never-handshaken peer reports 0, which `wg` shows as no handshake.
    assert!(text.ends_with("last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\n"));
}

#[test]
fn set_round_trips() {
    let req = SetRequest {
        private_key: Some(key(3)),
        listen_port: Some(4000),
        fwmark: Some(0),
        replace_peers: true,
        peers: vec![PeerSet {
            public_key: key(1),
            remove: false,
            update_only: true,
            preshared_key: Some(key(0)),
            endpoint: Some("1.2.3.4:5".parse().unwrap()),
            persistent_keepalive: Some(25),
            allowed_ips: vec![
                AllowedIpChange::Clear,
                AllowedIpChange::Add(parse_prefix("10.0.0.0/8").unwrap()),
                AllowedIpChange::Remove(parse_prefix("fd00::/8").unwrap()),
            ],
        }],
    };
    let text = format_set(&req);
    assert_eq!(parse_request(&lines(&text)).unwrap(), Request::Set(req));
}

#[test]
fn wg_setconf_style_request_parses() {
    let text = format!(
        "set=1\nprivate_key={}\nlisten_port=51820\nreplace_peers=true\npublic_key={}\nendpoint=192.168.1.2:51820\nreplace_allowed_ips=true\nallowed_ip=10.0.0.0/24\nprotocol_version=1\n",
        key(5).to_hex(),
        key(6).to_hex()
    );
    let Request::Set(req) = parse_request(&lines(&text)).unwrap() else {
        panic!()
    };
    let mut cfg = TunnelConfig::default();
    merge_set(&mut cfg, &req);
    assert_eq!(cfg.listen_port, 51820);
    assert_eq!(cfg.peers.len(), 1);
    assert_eq!(
        cfg.peers[0].allowed_ips,
        vec![parse_prefix("10.0.0.0/24").unwrap()]
    );
}

#[test]
fn errors_carry_errno() {
    let bad = |s: &str| parse_request(&lines(s)).unwrap_err().errno;
    assert_eq!(bad("bogus=1"), EINVAL);
    assert_eq!(bad("get=1\nx=1"), EINVAL);
    assert_eq!(bad("set=1\nno_equals_sign"), EPROTO);
    assert_eq!(bad("set=1\nlisten_port=70000"), EINVAL);
    assert_eq!(bad("set=1\nlisten_port=-1"), EINVAL);
    assert_eq!(bad("set=1\nprivate_key=zz"), EINVAL);
    assert_eq!(bad("set=1\nendpoint=1.2.3.4:5"), EINVAL); // peer key before any public_key
    assert_eq!(
        bad(&format!(
            "set=1\npublic_key={}\nlisten_port=1",
            key(1).to_hex()
        )),
        EINVAL
    );
    assert_eq!(
        bad(&format!(
            "set=1\npublic_key={}\nallowed_ip=10.0.0.1",
            key(1).to_hex()
        )),
        EINVAL
    );
    assert_eq!(
        bad(&format!(
            "set=1\npublic_key={}\nprotocol_version=2",
            key(1).to_hex()
        )),
        EINVAL
    );
    assert_eq!(
        bad(&format!(
            "set=1\npublic_key={}\nremove=yes",
            key(1).to_hex()
        )),
        EINVAL
    );
}

fn set(cfg: &mut TunnelConfig, text: &str) {
    let Request::Set(req) = parse_request(&lines(text)).unwrap() else {
        panic!()
    };
    merge_set(cfg, &req);
}

#[test]
fn merge_moves_allowed_ips_and_honours_flags() {
    let mut cfg = TunnelConfig::default();
    let mut a = PeerConfig::new(key(1));
    a.allowed_ips = vec![
        parse_prefix("10.0.0.0/24").unwrap(),
        parse_prefix("10.0.1.0/24").unwrap(),
    ];
    cfg.peers.push(a);
    set(
        &mut cfg,
        &format!(
            "set=1\npublic_key={}\nallowed_ip=10.0.1.0/24",
            key(2).to_hex()
        ),
    );
    assert_eq!(
        cfg.peers[0].allowed_ips,
        vec![parse_prefix("10.0.0.0/24").unwrap()]
    );
    assert_eq!(
        cfg.peers[1].allowed_ips,
        vec![parse_prefix("10.0.1.0/24").unwrap()]
    );
    cfg.validate().unwrap();

    // update_only never creates.
    set(
        &mut cfg,
        &format!(
            "set=1\npublic_key={}\nupdate_only=true\nendpoint=1.1.1.1:1",
            key(3).to_hex()
        ),
    );
    assert_eq!(cfg.peers.len(), 2);
    // Removal of an allowed IP and of a peer.
    set(
        &mut cfg,
        &format!(
            "set=1\npublic_key={}\nallowed_ip=-10.0.0.0/24",
            key(1).to_hex()
        ),
    );
    assert!(cfg.peers[0].allowed_ips.is_empty());
    set(
        &mut cfg,
        &format!("set=1\npublic_key={}\nremove=true", key(1).to_hex()),
    );
    assert_eq!(cfg.peers.len(), 1);
    // Keepalive 0 switches it off; zero preshared key removes it.
    set(
        &mut cfg,
        &format!(
            "set=1\npublic_key={}\npersistent_keepalive_interval=25\npreshared_key={}",
            key(2).to_hex(),
            key(4).to_hex()
        ),
    );
    assert_eq!(cfg.peers[0].persistent_keepalive, Some(25));
    assert_eq!(cfg.peers[0].preshared_key, Some(key(4)));
    set(
        &mut cfg,
        &format!(
            "set=1\npublic_key={}\npersistent_keepalive_interval=0\npreshared_key={}",
            key(2).to_hex(),
            key(0).to_hex()
        ),
    );
    assert_eq!(cfg.peers[0].persistent_keepalive, None);
    assert_eq!(cfg.peers[0].preshared_key, None);
    // replace_peers clears.
    set(&mut cfg, "set=1\nreplace_peers=true");
    assert!(cfg.peers.is_empty());
}

#[test]
fn own_key_is_ignored_as_peer_and_zero_private_key_clears() {
    let sk = PrivateKey::generate();
    let mut cfg = TunnelConfig::default();
    set(
        &mut cfg,
        &format!(
            "set=1\nprivate_key={}\npublic_key={}\nallowed_ip=10.0.0.0/8",
            sk.expose().to_hex(),
            sk.public_key().to_hex()
        ),
    );
    assert!(cfg.peers.is_empty());
    cfg.validate().unwrap();
    set(
        &mut cfg,
        &format!("set=1\nprivate_key={}", Key::default().to_hex()),
    );
    assert!(cfg.private_key.is_none());
}

#[test]
fn error_messages_name_the_key_never_the_value() {
    let secret = "c0ffee".repeat(10);
    let peer = format!("set=1\npublic_key={}", key(1).to_hex());
    for req in [
        format!("set=1\nprivate_key={secret}"),
        format!("set=1\nlisten_port={secret}"),
        format!("set=1\n{secret}"),
        format!("{secret}=1"),
        format!("get=1\n{secret}"),
        format!("{peer}\nendpoint={secret}"),
        format!("{peer}\nallowed_ip={secret}/8"),
        format!("{peer}\npreshared_key={secret}"),
        format!("{peer}\npersistent_keepalive_interval={secret}"),
        format!("{peer}\nremove={secret}"),
        format!("{peer}\nprotocol_version={secret}"),
    ] {
        let e = parse_request(&lines(&req)).unwrap_err();
        assert!(
            !e.message.contains("c0ffee"),
            "{req:?} gave {:?}",
            e.message
        );
    }
    // An unknown key is named, shortened.
    let e = parse_request(&lines(&format!("set=1\n{secret}=1"))).unwrap_err();
    assert!(e.message.contains("invalid interface key c0ffee") || e.message.len() < 80);
}

#[test]
fn an_error_mid_request_keeps_the_first_and_reads_on() {
    let mut p = RequestParser::new();
    for l in ["set=1", "listen_port=x", "fwmark=1", "no equals sign"] {
        p.line(l);
    }
    let e = p.finish().unwrap_err();
    assert_eq!(
        e.errno, EINVAL,
        "the first error, not the later EPROTO: {e}"
    );
}

#[test]
fn requests_past_the_limits_are_refused() {
    let mut p = RequestParser::new();
    p.line("set=1");
    p.line(&format!("public_key={}", key(1).to_hex()));
    for i in 0..=MAX_ALLOWED_IPS as u32 {
        p.line(&format!("allowed_ip={}/32", std::net::Ipv4Addr::from(i)));
    }
    assert_eq!(p.finish().unwrap_err().errno, E2BIG);
}

#[test]
fn a_setconf_of_130_000_allowed_ips_merges() {
    // `wg setconf` of one peer with 130 000 host routes, then a second set moving half
    // of them to another peer: every line is a hash lookup, not a scan.
    let n = 130_000u32;
    let ip = |i: u32| std::net::Ipv4Addr::from(0x0a00_0000 + i);
    let mut text = format!(
        "set=1\nreplace_peers=true\npublic_key={}\n",
        key(1).to_hex()
    );
    for i in 0..n {
        text.push_str(&format!("allowed_ip={}/32\n", ip(i)));
    }
    let mut cfg = TunnelConfig::default();
    set(&mut cfg, &text);
    assert_eq!(cfg.peers[0].allowed_ips.len(), n as usize);
    let mut text = format!("set=1\npublic_key={}\n", key(2).to_hex());
    for i in (0..n).step_by(2) {
        text.push_str(&format!("allowed_ip={}/32\n", ip(i)));
    }
    set(&mut cfg, &text);
    assert_eq!(cfg.peers[0].allowed_ips.len(), (n / 2) as usize);
    assert_eq!(cfg.peers[1].allowed_ips.len(), (n / 2) as usize);
    assert_eq!(
        cfg.peers[0].allowed_ips[0],
        parse_prefix("10.0.0.1/32").unwrap()
    );
    cfg.validate().unwrap();
}

#[test]
fn a_configuration_survives_the_text_a_successor_receives() {
    let mut a = PeerConfig::new(Key([7; 32]));
    a.preshared_key = Some(Key([9; 32]));
    a.endpoint = Some("[fd00::1]:51820".parse().unwrap());
    a.allowed_ips = vec![
        parse_prefix("10.0.0.0/24").unwrap(),
        parse_prefix("fd00:1::/64").unwrap(),
    ];
    a.persistent_keepalive = Some(25);
    let b = PeerConfig::new(Key([8; 32]));
    let config = TunnelConfig {
        private_key: Some(PrivateKey::from_bytes([3; 32])),
        listen_port: 51999,
        fwmark: 7,
        peers: vec![a, b],
    };
    let text = format_set(&super::merge::set_request_for(&config));
    assert_eq!(super::merge::config_from_set_text(&text).unwrap(), config);
    let e = super::merge::config_from_set_text("get=1\n\n").unwrap_err();
    assert_eq!(e.errno, EINVAL);
}

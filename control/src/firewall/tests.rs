//! The firewall against fake iptables tools (shell scripts keeping their chain in files).

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fake iptables: policy and rules kept in files beside it, every call logged.
const FAKE: &str = r#"#!/bin/sh
d=$(dirname "$0"); n=$(basename "$0")
echo "$*" >>"$d/$n.log"
if [ -f "$d/$n.says" ]; then cat "$d/$n.says" >&2; exit 3; fi
[ "$1" = -w ] || { echo "no -w" >&2; exit 2; }
op=$2; shift 3
case $op in
-S) echo "-P FORWARD $(cat "$d/$n.policy")"; sed 's/^/-A FORWARD /' "$d/$n.rules" 2>/dev/null ;;
-C) grep -qxF -- "$*" "$d/$n.rules" 2>/dev/null || { echo "Bad rule" >&2; exit 1; } ;;
-I) shift; echo "$*" >>"$d/$n.rules" ;;
-D) grep -qxF -- "$*" "$d/$n.rules" 2>/dev/null || { echo "does not exist" >&2; exit 1; }
    awk -v r="$*" '!done && $0 == r { done = 1; next } { print }' "$d/$n.rules" >"$d/$n.new"
    mv "$d/$n.new" "$d/$n.rules" ;;
*) echo "unexpected $op" >&2; exit 2 ;;
esac
"#;

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
impl Dir {
    fn new() -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("swg-firewall-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    /// Installs a fake `name` whose FORWARD policy is `policy`.
    fn tool(&self, name: &str, policy: &str) -> &Self {
        use std::os::unix::fs::PermissionsExt;
        let p = self.0.join(name);
        std::fs::write(&p, FAKE).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(self.0.join(format!("{name}.policy")), policy).unwrap();
        std::fs::write(self.0.join(format!("{name}.rules")), "").unwrap();
        self
    }
    /// Lists a legacy `filter` table (both families) in the fake `/proc/net`.
    fn legacy_tables(&self) -> &Self {
        for names in ["ip_tables_names", "ip6_tables_names"] {
            std::fs::write(self.0.join(names), "nat\nfilter\n").unwrap();
        }
        self
    }
    /// Makes `name` fail, saying `stderr`.
    fn failing(&self, name: &str, stderr: &str) -> &Self {
        std::fs::write(self.0.join(format!("{name}.says")), stderr).unwrap();
        self
    }
    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.0.join(file)).unwrap_or_default()
    }
    fn firewall(&self) -> Firewall {
        Firewall::with_search_path(&self.0)
            .assume_net_raw(true)
            .with_proc_net(&self.0)
    }
}

const LEGACY_ABSENT: &str = "iptables v1.8.9 (legacy): can't initialize iptables table `filter': Table does not exist (do you need to insmod?)";
const RULES: &str = "-s 10.4.0.0/16 -m comment --comment semaphore-wireguard gateway -j ACCEPT\n\
                         -d 10.4.0.0/16 -m comment --comment semaphore-wireguard gateway -j ACCEPT\n";

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

#[test]
fn rules_go_into_the_backend_whose_policy_drops_once_and_are_withdrawn() {
    let d = Dir::new();
    d.tool("iptables-nft", "DROP")
        .tool("iptables-legacy", "ACCEPT")
        .legacy_tables()
        .tool("iptables", "DROP");
    let fw = d.firewall();
    let pods = [net("10.4.0.0/16")];
    let added = fw.accept(&pods).unwrap();
    assert_eq!(
        added,
        vec![Accepted {
            prefix: pods[0],
            tool: "iptables-nft"
        }]
    );
    // (The fake appends what is inserted at position 1, so the order is the calls'.)
    assert_eq!(d.read("iptables-nft.rules"), RULES);
    assert!(
        d.read("iptables-nft.log")
            .contains("-w -I FORWARD 1 -s 10.4.0.0/16")
    );
    assert_eq!(d.read("iptables-legacy.rules"), "");
    // The plain tool is a link to one of the variants: never used beside them.
    assert_eq!(d.read("iptables.log"), "");
    assert!(fw.forward_policy_drops(&pods[0]).unwrap());
    // Again: nothing doubled, nothing reported.
    assert_eq!(fw.accept(&pods).unwrap(), vec![]);
    assert_eq!(d.read("iptables-nft.rules").lines().count(), 2);
    // One rule gone (a firewall reload): put back, and reported.
    std::fs::write(
        d.0.join("iptables-nft.rules"),
        RULES.lines().next().unwrap().to_string() + "\n",
    )
    .unwrap();
    assert_eq!(fw.accept(&pods).unwrap(), added);
    assert_eq!(d.read("iptables-nft.rules").lines().count(), 2);
    fw.withdraw(&pods).unwrap();
    assert_eq!(d.read("iptables-nft.rules"), "");
}

#[test]
fn a_legacy_policy_that_drops_gets_the_rules_and_an_absent_backend_counts_as_accepting() {
    let d = Dir::new();
    d.tool("iptables-nft", "ACCEPT")
        .tool("iptables-legacy", "DROP")
        .legacy_tables();
    let fw = d.firewall();
    let added = fw.accept(&[net("10.4.0.0/16")]).unwrap();
    assert_eq!(
        added,
        vec![Accepted {
            prefix: net("10.4.0.0/16"),
            tool: "iptables-legacy"
        }]
    );
    assert_eq!(d.read("iptables-legacy.rules").lines().count(), 2);
    assert_eq!(d.read("iptables-nft.rules"), "");

    // No legacy filter table in the namespace: iptables-legacy is not even asked (asking
    // would make one).
    let d = Dir::new();
    d.tool("iptables-nft", "ACCEPT")
        .tool("iptables-legacy", "DROP");
    let fw = d.firewall();
    assert_eq!(fw.accept(&[net("10.4.0.0/16")]).unwrap(), vec![]);
    fw.withdraw(&[net("10.4.0.0/16")]).unwrap();
    assert_eq!(d.read("iptables-legacy.log"), "");
    assert_ne!(d.read("iptables-nft.log"), "");

    // A backend the kernel does not offer answers so: it drops nothing.
    d.legacy_tables().failing("iptables-legacy", LEGACY_ABSENT);
    assert_eq!(fw.accept(&[net("10.4.0.0/16")]).unwrap(), vec![]);
    assert!(!fw.forward_policy_drops(&net("10.4.0.0/16")).unwrap());
    fw.withdraw(&[net("10.4.0.0/16")]).unwrap();

    // Without CAP_NET_RAW, iptables-legacy says the same of a table that exists: that
    // is an error to fix, not an accepting policy.
    let err = fw
        .assume_net_raw(false)
        .accept(&[net("10.4.0.0/16")])
        .unwrap_err();
    assert!(err.to_string().contains("NET_RAW"), "{err}");
}

#[test]
fn net_raw_is_read_from_the_effective_capabilities() {
    let status = |eff: &str| format!("Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t{eff}\n");
    assert!(has_net_raw(&status("000001ffffffffff")));
    assert!(has_net_raw(&status("0000000000003000"))); // NET_ADMIN and NET_RAW
    assert!(!has_net_raw(&status("0000000000001000"))); // NET_ADMIN alone
    assert!(!has_net_raw("no such line"));
}

#[test]
fn ipv6_prefixes_use_ip6tables_and_plain_tools_serve_older_hosts() {
    let d = Dir::new();
    d.tool("ip6tables", "DROP").tool("iptables", "ACCEPT");
    let fw = d.firewall();
    let added = fw
        .accept(&[net("fd00:4::/56"), net("10.4.0.0/16")])
        .unwrap();
    assert_eq!(
        added,
        vec![Accepted {
            prefix: net("fd00:4::/56"),
            tool: "ip6tables"
        }]
    );
    assert_eq!(d.read("ip6tables.rules").lines().count(), 2);
    assert!(
        d.read("ip6tables.rules")
            .contains("-s fd00:4::/56 -m comment")
    );
    assert_eq!(d.read("iptables.rules"), "");
    assert!(d.read("iptables.log").contains("-w -S FORWARD"));
}

#[test]
fn no_tool_or_a_refusal_is_an_error_that_says_what_to_do() {
    let d = Dir::new();
    let err = d.firewall().accept(&[net("10.4.0.0/16")]).unwrap_err();
    assert!(
        matches!(err, FirewallError::Missing { tool: "iptables" }),
        "{err}"
    );

    d.tool("iptables-legacy", "DROP").legacy_tables().failing(
            "iptables-legacy",
            "iptables v1.8.9 (legacy): can't initialize iptables table `filter': Permission denied (you must be root)",
        );
    let err = d
        .firewall()
        .accept(&[net("10.4.0.0/16")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Permission denied") && err.contains("NET_RAW"),
        "{err}"
    );

    d.failing(
        "iptables-legacy",
        "Fatal: can't open lock file /run/xtables.lock: Read-only file system",
    );
    let err = d
        .firewall()
        .accept(&[net("10.4.0.0/16")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("mount the host's /run/xtables.lock"), "{err}");
}

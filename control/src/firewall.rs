//! A gateway forwards between the tunnel and its cluster. Where the node's iptables
//! `FORWARD` policy drops (Docker sets it so, for one), the gateway adds narrow `ACCEPT`
//! rules for exactly the remote's routed prefixes, both directions, marked with a comment,
//! and removes them when it stops being the gateway. Where the policy accepts, nothing is
//! added.
//!
//! A node may have rules in either iptables backend, nf_tables or legacy, and a packet
//! passes through both: each backend found (`iptables-nft`, `iptables-legacy`, as the
//! image ships them) is checked, and the rules go into the one whose policy drops. A
//! backend the kernel does not offer counts as accepting, and the legacy one is asked only
//! when the namespace has a legacy `filter` table (`/proc/net/ip_tables_names`), so that an
//! nf_tables host does not get legacy tables made by asking. With neither variant on
//! `PATH`, plain `iptables` is used (older hosts); with no tool at all, the policy cannot be
//! checked, which is reported.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use ip_network::IpNetwork;

/// The comment that marks our rules.
pub const COMMENT: &str = "semaphore-wireguard gateway";

/// An iptables command failed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// No iptables tool is installed (or on `PATH`).
    #[error("{tool} not found: the FORWARD policy cannot be checked")]
    Missing {
        /// `iptables` or `ip6tables`.
        tool: &'static str,
    },
    /// It ran and failed.
    #[error("{tool} {args}: {stderr}{hint}")]
    Failed {
        /// The tool.
        tool: &'static str,
        /// Its arguments.
        args: String,
        /// What it said.
        stderr: String,
        /// What to do about it, when known (may be empty).
        hint: &'static str,
    },
    /// It could not be run.
    #[error("running {tool}")]
    Run {
        /// The tool.
        tool: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One backend's tools, for IPv4 and IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backend {
    v4: &'static str,
    v6: &'static str,
}

const NFT: Backend = Backend {
    v4: "iptables-nft",
    v6: "ip6tables-nft",
};
const LEGACY: Backend = Backend {
    v4: "iptables-legacy",
    v6: "ip6tables-legacy",
};
const PLAIN: Backend = Backend {
    v4: "iptables",
    v6: "ip6tables",
};

/// One tool found on the search path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tool {
    name: &'static str,
    path: PathBuf,
}

/// A rule set in one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The prefix forwarded to and from.
    pub prefix: IpNetwork,
    /// The tool whose chain holds the rules (`iptables-nft`, `iptables-legacy`, ...).
    pub tool: &'static str,
}

/// The FORWARD chain of the node, through the iptables tools found in a search path.
#[derive(Debug, Clone)]
pub struct Firewall {
    search: OsString,
    /// Whether this process has CAP_NET_RAW. Without it `iptables-legacy` cannot open its
    /// socket and says "Table does not exist" even of a table that drops: then that answer
    /// is not believed.
    net_raw: bool,
    /// Where the legacy tables of this network namespace are listed (`/proc/net`).
    proc_net: PathBuf,
}

impl Default for Firewall {
    /// Tools from the process's `PATH` (the usual system directories when it is unset).
    fn default() -> Self {
        Self::with_search_path(std::env::var_os("PATH").unwrap_or_else(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        }))
    }
}

/// CAP_NET_RAW's bit in the capability sets.
const CAP_NET_RAW: u32 = 13;

/// Whether `CapEff:` in a `/proc/<pid>/status` text holds CAP_NET_RAW.
fn has_net_raw(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_RAW) != 0)
}

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What a backend the kernel does not offer says: it holds no rules, so it drops nothing.
fn not_offered(stderr: &str) -> bool {
    stderr.contains("Table does not exist")
        || stderr.contains("Failed to initialize nft")
        || stderr.contains("Protocol not supported")
}

const NET_RAW_HINT: &str =
    " (the agent needs the NET_ADMIN capability, and NET_RAW for iptables-legacy)";

fn hint(stderr: &str) -> &'static str {
    if stderr.contains("Permission denied") {
        NET_RAW_HINT
    } else if stderr.contains("xtables.lock") {
        " (mount the host's /run/xtables.lock into the agent's container)"
    } else {
        ""
    }
}

fn rule(direction: &'static str, net: &IpNetwork) -> Vec<String> {
    [
        direction,
        &net.to_string(),
        "-m",
        "comment",
        "--comment",
        COMMENT,
        "-j",
        "ACCEPT",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Firewall {
    /// Tools looked up in `search` (a `PATH`-style list of directories).
    pub fn with_search_path(search: impl Into<OsString>) -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        Firewall {
            search: search.into(),
            net_raw: has_net_raw(&status),
            proc_net: PathBuf::from("/proc/net"),
        }
    }

    /// Legacy tables listed in `dir` instead of `/proc/net`.
    pub fn with_proc_net(mut self, dir: impl Into<PathBuf>) -> Self {
        self.proc_net = dir.into();
        self
    }

    /// Whether this namespace has a legacy `filter` table for `net`'s family.
    fn legacy_filter(&self, net: &IpNetwork) -> bool {
        let names = if net.is_ipv4() {
            "ip_tables_names"
        } else {
            "ip6_tables_names"
        };
        std::fs::read_to_string(self.proc_net.join(names))
            .is_ok_and(|t| t.lines().any(|l| l.trim() == "filter"))
    }

    /// As if this process had (or lacked) CAP_NET_RAW.
    pub fn assume_net_raw(mut self, net_raw: bool) -> Self {
        self.net_raw = net_raw;
        self
    }

    fn find(&self, name: &'static str) -> Option<Tool> {
        std::env::split_paths(&self.search)
            .map(|dir| dir.join(name))
            .find(|p| executable(p))
            .map(|path| Tool { name, path })
    }

    /// The tools for `net`'s family: each backend variant found (legacy only while its
    /// `filter` table exists), else plain `iptables`.
    fn tools(&self, net: &IpNetwork) -> Result<Vec<Tool>, FirewallError> {
        let pick = |b: Backend| if net.is_ipv4() { b.v4 } else { b.v6 };
        let found: Vec<Tool> = [NFT, LEGACY]
            .into_iter()
            .filter_map(|b| self.find(pick(b)))
            .collect();
        if !found.is_empty() {
            return Ok(found
                .into_iter()
                .filter(|t| t.name != pick(LEGACY) || self.legacy_filter(net))
                .collect());
        }
        let plain = pick(PLAIN);
        self.find(plain)
            .map(|t| vec![t])
            .ok_or(FirewallError::Missing { tool: plain })
    }

    fn run(tool: &Tool, args: &[&str]) -> Result<String, FirewallError> {
        let out = Command::new(&tool.path)
            .arg("-w")
            .args(args)
            .output()
            .map_err(|source| FirewallError::Run {
                tool: tool.name,
                source,
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            Err(FirewallError::Failed {
                tool: tool.name,
                args: args.join(" "),
                hint: hint(&stderr),
                stderr,
            })
        }
    }

    /// True when `tool`'s `FORWARD` policy drops or rejects; false when it accepts or the
    /// kernel does not offer that backend.
    fn drops(&self, tool: &Tool) -> Result<bool, FirewallError> {
        match Self::run(tool, &["-S", "FORWARD"]) {
            Ok(rules) => Ok(rules
                .lines()
                .any(|l| l.trim() == "-P FORWARD DROP" || l.trim() == "-P FORWARD REJECT")),
            Err(FirewallError::Failed {
                tool, args, stderr, ..
            }) if tool.ends_with("-legacy") && !self.net_raw => Err(FirewallError::Failed {
                tool,
                args,
                stderr,
                hint: NET_RAW_HINT,
            }),
            Err(FirewallError::Failed { stderr, .. }) if not_offered(&stderr) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// True when the `FORWARD` policy (for `net`'s family) drops in any backend.
    pub fn forward_policy_drops(&self, net: &IpNetwork) -> Result<bool, FirewallError> {
        for tool in self.tools(net)? {
            if self.drops(&tool)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Accepts forwarding to and from each prefix (inserted first in `FORWARD`, unless
    /// already there) in every backend whose policy drops. Returns where rules were
    /// inserted now (nothing when they were all in place already).
    pub fn accept(&self, prefixes: &[IpNetwork]) -> Result<Vec<Accepted>, FirewallError> {
        let mut added = Vec::new();
        for net in prefixes {
            for tool in self.tools(net)? {
                if !self.drops(&tool)? {
                    continue;
                }
                let mut inserted = false;
                for direction in ["-s", "-d"] {
                    let r = rule(direction, net);
                    let args: Vec<&str> = r.iter().map(String::as_str).collect();
                    let check: Vec<&str> = ["-C", "FORWARD"]
                        .into_iter()
                        .chain(args.iter().copied())
                        .collect();
                    if Self::run(&tool, &check).is_err() {
                        let insert: Vec<&str> = ["-I", "FORWARD", "1"]
                            .into_iter()
                            .chain(args.iter().copied())
                            .collect();
                        Self::run(&tool, &insert)?;
                        inserted = true;
                    }
                }
                if !inserted {
                    continue;
                }
                added.push(Accepted {
                    prefix: *net,
                    tool: tool.name,
                });
            }
        }
        Ok(added)
    }

    /// Removes our rules for each prefix from every backend (every copy; none is fine).
    pub fn withdraw(&self, prefixes: &[IpNetwork]) -> Result<(), FirewallError> {
        for net in prefixes {
            for tool in self.tools(net)? {
                for direction in ["-s", "-d"] {
                    let r = rule(direction, net);
                    let delete: Vec<&str> = ["-D", "FORWARD"]
                        .into_iter()
                        .chain(r.iter().map(String::as_str))
                        .collect();
                    // At most a handful of copies; stop at the first "does not exist" (or a
                    // backend the kernel does not offer).
                    for _ in 0..16 {
                        match Self::run(&tool, &delete) {
                            Ok(_) => {}
                            Err(FirewallError::Failed { .. }) => break,
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

//! A gateway forwards between the tunnel and its cluster. Where the node's iptables
//! `FORWARD` policy drops (Docker sets it so, for one), the gateway adds narrow `ACCEPT`
//! rules for exactly the remote's routed prefixes, both directions, marked with a comment,
//! and removes them when it stops being the gateway. Where the policy accepts, nothing is
//! added. The rules are made with the node's own `iptables`/`ip6tables` (whatever backend
//! it uses); without those tools the policy cannot be checked, which is reported.

use std::process::Command;

use ip_network::IpNetwork;

/// The comment that marks our rules.
pub const COMMENT: &str = "semaphore-wireguard gateway";

/// An iptables command failed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The tool is not installed (or not on `PATH`).
    #[error("{tool} not found: the FORWARD policy cannot be checked")]
    Missing {
        /// `iptables` or `ip6tables`.
        tool: &'static str,
    },
    /// It ran and failed.
    #[error("{tool} {args}: {stderr}")]
    Failed {
        /// The tool.
        tool: &'static str,
        /// Its arguments.
        args: String,
        /// What it said.
        stderr: String,
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

fn tool(net: &IpNetwork) -> &'static str {
    if net.is_ipv4() {
        "iptables"
    } else {
        "ip6tables"
    }
}

fn run(tool: &'static str, args: &[&str]) -> Result<String, FirewallError> {
    let out = Command::new(tool)
        .arg("-w")
        .args(args)
        .output()
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                FirewallError::Missing { tool }
            } else {
                FirewallError::Run { tool, source }
            }
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(FirewallError::Failed {
            tool,
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// True when `FORWARD`'s policy (for `net`'s family) drops or rejects.
pub fn forward_policy_drops(net: &IpNetwork) -> Result<bool, FirewallError> {
    let rules = run(tool(net), &["-S", "FORWARD"])?;
    Ok(rules
        .lines()
        .any(|l| l.trim() == "-P FORWARD DROP" || l.trim() == "-P FORWARD REJECT"))
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

/// Accepts forwarding to and from each prefix (inserted first in `FORWARD`), unless
/// already accepted. Returns the prefixes whose family's policy drops (rules added).
pub fn accept(prefixes: &[IpNetwork]) -> Result<Vec<IpNetwork>, FirewallError> {
    let mut added = Vec::new();
    for net in prefixes {
        if !forward_policy_drops(net)? {
            continue;
        }
        for direction in ["-s", "-d"] {
            let r = rule(direction, net);
            let args: Vec<&str> = r.iter().map(String::as_str).collect();
            let mut check = vec!["-C", "FORWARD"];
            check.extend(&args);
            if run(tool(net), &check).is_err() {
                let mut insert = vec!["-I", "FORWARD", "1"];
                insert.extend(&args);
                run(tool(net), &insert)?;
            }
        }
        added.push(*net);
    }
    Ok(added)
}

/// Removes our rules for each prefix (every copy; none is fine).
pub fn withdraw(prefixes: &[IpNetwork]) -> Result<(), FirewallError> {
    for net in prefixes {
        for direction in ["-s", "-d"] {
            let r = rule(direction, net);
            let mut delete = vec!["-D", "FORWARD"];
            delete.extend(r.iter().map(String::as_str));
            // At most a handful of copies; stop at the first "does not exist".
            for _ in 0..16 {
                match run(tool(net), &delete) {
                    Ok(_) => {}
                    Err(FirewallError::Failed { .. }) => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

//! Command line. Run mode is the default and takes the Go original's flags, with one or
//! two dashes (`-node-name x`, `--node-name=x`), each also set by its `SWG_*` variable
//! (the flag wins; an empty variable counts as unset).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Userspace WireGuard for Kubernetes nodes without the wireguard kernel module.
#[derive(Parser, Debug)]
#[command(
    name = "semaphore-wireguard",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a WireGuard interface on a TUN device and serve the UAPI socket that `wg`
    /// uses, like wireguard-go. Stops on SIGTERM/SIGINT or when the socket is deleted.
    Tunnel(TunnelArgs),
    /// Print what `wg show` prints (interfaces, peers, endpoints, allowed IPs, latest
    /// handshake, transfer), read from the UAPI sockets.
    Show(ShowArgs),
    /// The service mirror, a drop-in for semaphore-service-mirror: remote Services and
    /// their endpoints mirrored into a local namespace, and global Services.
    Mirror(MirrorArgs),
}

/// semaphore-service-mirror's flags and `SSM_*` variables.
#[derive(Args, Debug, Clone)]
pub struct MirrorArgs {
    /// Path to the JSON config (required).
    #[arg(long, env = "SSM_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Kubeconfig of the local cluster (empty: the pod's service account).
    #[arg(long, env = "SSM_KUBE_CONFIG", value_name = "PATH")]
    pub kube_config: Option<PathBuf>,

    /// Overrides global.mirrorNamespace.
    #[arg(long, env = "SSM_MIRROR_NS", default_value = "")]
    pub mirror_ns: String,

    /// Overrides global.mirrorSvcLabelSelector.
    #[arg(long, env = "SSM_MIRROR_SVC_LABEL_SELECTOR", default_value = "")]
    pub mirror_svc_label_selector: String,

    /// Overrides global.globalSvcLabelSelector.
    #[arg(long, env = "SSM_GLOBAL_SVC_LABEL_SELECTOR", default_value = "")]
    pub global_svc_label_selector: String,

    /// Overrides global.globalSvcRoutingStrategyLabel (its variable is the original's
    /// SSM_GLOBAL_SVC_TOPOLOGY_LABEL).
    #[arg(long, env = "SSM_GLOBAL_SVC_TOPOLOGY_LABEL", default_value = "")]
    pub global_svc_routing_strategy_label: String,

    /// Address for /healthz and /metrics.
    #[arg(long, env = "SSM_LISTEN_ADDRESS", default_value = ":8080")]
    pub listen_address: String,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "SSM_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "SSM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Args, Debug, Clone)]
pub struct ShowArgs {
    /// Only this interface.
    pub interface: Option<String>,

    /// Directory of the UAPI sockets.
    #[arg(long, default_value = dataplane::uapi::SOCKET_DIR)]
    pub socket_dir: PathBuf,
}

/// The DaemonSet agent (the default mode).
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Path to the clusters config JSON.
    #[arg(long, env = "SWG_CLUSTERS_CONFIG", value_name = "PATH")]
    pub clusters_config: Option<PathBuf>,

    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "SWG_LISTEN_ADDRESS", default_value = ":7773")]
    pub listen_address: String,

    /// Name of the Kubernetes node this agent runs on.
    #[arg(long, env = "SWG_NODE_NAME")]
    pub node_name: Option<String>,

    /// Directory of the WireGuard private keys.
    #[arg(
        long,
        env = "SWG_WG_KEY_PATH",
        default_value = "/var/lib/semaphore-wireguard"
    )]
    pub wg_key_path: PathBuf,

    /// After handing the tunnels to a successor (an upgrade in place), stay idle until
    /// SIGTERM instead of exiting at once: in a pod, an exit would make the kubelet
    /// restart the old container, which would take the tunnels back.
    #[arg(long, env = "SWG_WAIT_AFTER_HANDOVER")]
    pub wait_after_handover: bool,

    /// The address our endpoint annotations name: `internal` (the node's first
    /// InternalIP), `external` (its first ExternalIP), or a fixed address, optionally with
    /// a port (a load balancer or NAT in front of the node; a port only with one remote).
    #[arg(long, env = "SWG_ENDPOINT_ADDRESS", default_value = "internal")]
    pub endpoint_address: control::advertise::EndpointSource,

    /// Prefixes this node serves for other clusters (a service CIDR, a node subnet),
    /// published as `<remote>.wireguard.semaphore.uw.io/extraCIDRs`: comma-separated,
    /// `<prefix>` towards every remote or `<remote>=<prefix>` towards one. A remote routes
    /// them to this node when its `extraSubnets` for our cluster hold them.
    #[arg(long, env = "SWG_ADVERTISE_CIDRS", value_name = "LIST")]
    pub advertise_cidrs: Option<control::claim_flag::AdvertisedCidrs>,

    /// The agent's namespace in the local cluster, where gateway mode keeps its Leases
    /// (the DaemonSet sets it from the pod's namespace).
    #[arg(long, env = "SWG_NAMESPACE", default_value = crate::options::DEFAULT_NAMESPACE)]
    pub namespace: String,

    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Args, Debug, Clone)]
pub struct TunnelArgs {
    /// Stay in the foreground (otherwise detach once the interface exists).
    #[arg(short, long)]
    pub foreground: bool,

    /// MTU of the new TUN device.
    #[arg(long, default_value_t = 1420, value_parser = clap::value_parser!(u16).range(1280..))]
    pub mtu: u16,

    /// Directory of the UAPI socket.
    #[arg(long, default_value = dataplane::uapi::SOCKET_DIR)]
    pub socket_dir: PathBuf,

    #[command(flatten)]
    pub log: LogArgs,

    /// Interface name (at most 15 bytes).
    #[arg(value_parser = parse_ifname)]
    pub interface: String,
}

#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log level: error, warn, info, debug or trace (or a tracing filter).
    #[arg(long, env = "SWG_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "SWG_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_ifname(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 15 {
        return Err(format!("interface name {s:?} must be 1 to 15 bytes"));
    }
    if s.contains('/') || s.chars().any(|c| c.is_whitespace() || c == ':') {
        return Err(format!(
            "interface name {s:?} may not contain '/', ':' or spaces"
        ));
    }
    Ok(s.to_string())
}

/// Long flags the Go originals (semaphore-wireguard, semaphore-service-mirror) accepted
/// with a single dash.
const GO_FLAGS: [&str; 12] = [
    "clusters-config",
    "listen-address",
    "log-level",
    "node-name",
    "wg-key-path",
    "log-format",
    "config",
    "kube-config",
    "mirror-ns",
    "mirror-svc-label-selector",
    "global-svc-label-selector",
    "global-svc-routing-strategy-label",
];

/// Rewrites `-flag` / `-flag=v` of the Go original to `--flag`.
pub fn normalize(args: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut rest = false;
    for (i, a) in args.into_iter().enumerate() {
        let s = a.to_string_lossy();
        if i == 0 || rest || s.starts_with("--") || !s.starts_with('-') {
            rest |= s == "--";
            out.push(a);
            continue;
        }
        let name = s[1..].split('=').next().unwrap_or("");
        if GO_FLAGS.contains(&name) {
            out.push(format!("-{s}").into());
        } else {
            out.push(a);
        }
    }
    out
}

/// The process arguments; invoked under a name ending in `-tunnel` (a symlink, for
/// `WG_QUICK_USERSPACE_IMPLEMENTATION`), the `tunnel` subcommand is implied.
pub fn args() -> Vec<OsString> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if invoked_as(&args, "-tunnel") {
        args.insert(1, "tunnel".into());
    } else if mirror_implied(&args) {
        args.insert(1, "mirror".into());
    }
    normalize(args)
}

/// True when the program's name (`argv[0]`'s file name) ends with `suffix`.
fn invoked_as(args: &[OsString], suffix: &str) -> bool {
    args.first()
        .and_then(|a| {
            PathBuf::from(a)
                .file_name()
                .map(|n| n.to_string_lossy().ends_with(suffix))
        })
        .unwrap_or(false)
}

/// The service mirror's Deployment runs the image with `SSM_CONFIG` set and no arguments
/// (or under the name `semaphore-service-mirror`): that is the `mirror` subcommand.
fn mirror_implied(args: &[OsString]) -> bool {
    let named = invoked_as(args, "semaphore-service-mirror");
    let set = |v: &str| std::env::var_os(v).is_some_and(|v| !v.is_empty());
    let subcommand = args.get(1).is_some_and(|a| {
        let a = a.to_string_lossy();
        ["tunnel", "show", "mirror", "help"].contains(&a.as_ref())
    });
    let run_mode = set("SWG_CLUSTERS_CONFIG")
        || args
            .iter()
            .any(|a| a.to_string_lossy().contains("clusters-config"));
    !subcommand && (named || (set("SSM_CONFIG") && !run_mode))
}

/// Run-mode arguments with the required ones checked.
#[derive(Debug)]
pub struct RunRequired {
    pub clusters_config: PathBuf,
    pub node_name: String,
}

impl RunArgs {
    /// Checks what the original required; the message names the flag and the variable.
    pub fn required(&self) -> Result<RunRequired, String> {
        let clusters_config = self
            .clusters_config
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or("Must specify a clusters config file location (-clusters-config or SWG_CLUSTERS_CONFIG)")?;
        let node_name = self
            .node_name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or("Must specify the kube node that semaphore-wireguard runs on (-node-name or SWG_NODE_NAME)")?;
        Ok(RunRequired {
            clusters_config,
            node_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(normalize(args.iter().map(OsString::from).collect()))
    }

    #[test]
    fn tunnel_args_parse() {
        let cli = parse(&["x", "tunnel", "-f", "wg0"]).unwrap();
        let Some(Command::Tunnel(t)) = cli.command else {
            panic!()
        };
        assert!(t.foreground);
        assert_eq!(t.interface, "wg0");
        assert_eq!(t.mtu, 1420);
    }

    #[test]
    fn bad_interface_names_are_refused() {
        assert!(parse(&["x", "tunnel", "a-very-long-interface-name"]).is_err());
        assert!(parse(&["x", "tunnel", "a/b"]).is_err());
        assert!(parse(&["x", "tunnel", "-f", "--mtu", "100", "wg0"]).is_err());
    }

    #[test]
    fn go_style_flags() {
        let cli = parse(&[
            "x",
            "-node-name",
            "n1",
            "-clusters-config=/c.json",
            "--wg-key-path",
            "/k",
            "-log-format",
            "json",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        let r = cli.run.required().unwrap();
        assert_eq!(r.node_name, "n1");
        assert_eq!(r.clusters_config, PathBuf::from("/c.json"));
        assert_eq!(cli.run.wg_key_path, PathBuf::from("/k"));
        assert_eq!(cli.run.log.log_format, LogFormat::Json);
        assert_eq!(cli.run.listen_address, ":7773");
        assert!(parse(&["x", "-bogus", "1"]).is_err());
        assert_eq!(
            cli.run.endpoint_address,
            control::advertise::EndpointSource::InternalIp
        );
        let cli = parse(&["x", "--endpoint-address", "203.0.113.7:443"]).unwrap();
        assert_eq!(
            cli.run.endpoint_address,
            control::advertise::EndpointSource::Fixed("203.0.113.7".parse().unwrap(), Some(443))
        );
        let e = parse(&["x", "--endpoint-address", "outside"]).unwrap_err();
        assert!(e.to_string().contains("is not \"internal\""), "{e}");
        assert_eq!(cli.run.advertise_cidrs, None);
        let cli = parse(&["x", "--advertise-cidrs", "10.96.0.0/12,gcp=192.168.7.0/24"]).unwrap();
        let claims = cli.run.advertise_cidrs.unwrap();
        assert_eq!(claims.for_remote("gcp").len(), 2);
        assert_eq!(claims.for_remote("aws").len(), 1);
        let e = parse(&["x", "--advertise-cidrs", "10.96.0.0/40"]).unwrap_err();
        assert!(e.to_string().contains("is not a CIDR"), "{e}");
    }

    #[test]
    fn missing_required_flags_are_named() {
        let cli = parse(&["x", "-node-name", "n1"]).unwrap();
        assert!(cli.run.required().unwrap_err().contains("-clusters-config"));
        let cli = parse(&["x", "-clusters-config", "c", "-node-name", ""]).unwrap();
        assert!(cli.run.required().unwrap_err().contains("-node-name"));
    }
}

//! The clusters config file: the Go original's JSON schema and defaults, with its gaps
//! closed. A kubeconfig-only remote works; duplicate names, duplicate ports, overlapping
//! subnets and device names over 15 bytes are refused with a message naming the field;
//! unknown fields are reported as warnings. Beyond the original: a remote named after the
//! local cluster (the in-cluster mesh, reached with the local cluster's credentials), a
//! dual-stack `podSubnet`, `extraSubnets` and `wgDeviceName`.

use std::time::Duration;

use ip_network::IpNetwork;
use serde::Deserialize;
use serde_json::Value;

mod duration;
mod error;
mod subnets;
mod topology;

pub use duration::{DurationError, from_json as duration_from_json, parse_go_duration};
pub use error::ConfigError;
pub use subnets::{Subnets, contains};
pub use topology::{DEFAULT_GATEWAY_LABEL, NodeLabel, Topology};

/// Default MTU of each WireGuard device.
pub const DEFAULT_MTU: u16 = 1420;
/// Default UDP listen port of each WireGuard device.
pub const DEFAULT_LISTEN_PORT: u16 = 51820;

/// Default `massRemovalGracePeriod`: how long removals of more than half of a remote's
/// peers are held (see `hold.rs`).
pub const DEFAULT_MASS_REMOVAL_GRACE: std::time::Duration = std::time::Duration::from_secs(300);
/// Device names are `wireguard.<remote>`.
pub const DEVICE_PREFIX: &str = "wireguard.";
/// Linux interface names hold at most 15 bytes.
pub const MAX_IFNAME: usize = 15;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClustersConfig {
    /// The cluster this node belongs to.
    pub local: LocalCluster,
    /// The clusters to connect to, one device each.
    pub remotes: Vec<RemoteCluster>,
}

/// The local cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCluster {
    /// Its name: remote nodes advertise to us under `<name>.wireguard.semaphore.uw.io/*`.
    pub name: String,
    /// A kubeconfig; `None` means in-cluster configuration.
    pub kube_config_path: Option<String>,
}

/// How to reach a remote cluster's API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteAccess {
    /// A kubeconfig file.
    KubeConfig(String),
    /// API URL, a URL serving the CA as PEM, and a bearer token file (re-read on change).
    Token {
        /// `remoteAPIURL`.
        api_url: String,
        /// `remoteCAURL`.
        ca_url: String,
        /// `remoteSATokenPath`.
        token_path: String,
    },
    /// The service account of the pod (in-cluster configuration): the in-cluster mesh's
    /// access when the local cluster has no kubeconfig.
    InCluster,
}

/// One remote cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCluster {
    /// Its name: our device is `wireguard.<name>`, our annotations `<name>.wireguard…`.
    pub name: String,
    /// How to reach its API server.
    pub access: RemoteAccess,
    /// Its pod subnet (one prefix per family) and extra subnets, routed through our device.
    pub subnets: Subnets,
    /// Named after the local cluster: the nodes of our own cluster, ourselves excluded.
    pub mesh: bool,
    /// Device MTU.
    pub mtu: u16,
    /// Device UDP port.
    pub listen_port: u16,
    /// Full re-apply period; zero disables it.
    pub resync_period: Duration,
    /// How long removals of more than half of the peers at once wait (`hold.rs`); zero
    /// disables the hold.
    pub mass_removal_grace_period: Duration,
    /// The interface name: `wgDeviceName`, or `wireguard.<name>`.
    pub device: String,
    /// Node-to-node, or through an elected gateway of ours.
    pub topology: Topology,
    /// The label of gateway nodes: our candidates in gateway mode, and the remote nodes
    /// whose gateway claims are honoured.
    pub gateway_label: NodeLabel,
}

impl RemoteCluster {
    /// The interface name: `wgDeviceName` if set, else `wireguard.<name>`.
    pub fn device_name(&self) -> String {
        self.device.clone()
    }

    /// What the key file and the saved peer set are named after: `wireguard.<name>`,
    /// whatever the interface is called, so that renaming the interface keeps the key.
    pub fn file_stem(&self) -> String {
        format!("{DEVICE_PREFIX}{}", self.name)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    local: RawLocal,
    #[serde(default)]
    remotes: Vec<RawRemote>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawLocal {
    #[serde(default)]
    name: String,
    #[serde(default)]
    kube_config_path: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRemote {
    #[serde(default)]
    name: String,
    #[serde(default)]
    kube_config_path: String,
    #[serde(default, rename = "remoteAPIURL")]
    remote_api_url: String,
    #[serde(default, rename = "remoteCAURL")]
    remote_ca_url: String,
    #[serde(default, rename = "remoteSATokenPath")]
    remote_sa_token_path: String,
    #[serde(default)]
    pod_subnet: String,
    #[serde(default, rename = "wgDeviceMTU")]
    wg_device_mtu: u64,
    #[serde(default)]
    wg_listen_port: u64,
    #[serde(default)]
    resync_period: Option<Value>,
    #[serde(default)]
    mass_removal_grace_period: Option<Value>,
    #[serde(default)]
    wg_device_name: String,
    #[serde(default)]
    extra_subnets: Vec<String>,
    #[serde(default)]
    topology: String,
    #[serde(default)]
    gateway_node_label: String,
}

const TOP_FIELDS: &[&str] = &["local", "remotes"];
const LOCAL_FIELDS: &[&str] = &["name", "kubeConfigPath"];
const REMOTE_FIELDS: &[&str] = &[
    "name",
    "kubeConfigPath",
    "remoteAPIURL",
    "remoteCAURL",
    "remoteSATokenPath",
    "podSubnet",
    "wgDeviceMTU",
    "wgListenPort",
    "resyncPeriod",
    "massRemovalGracePeriod",
    "wgDeviceName",
    "extraSubnets",
    "topology",
    "gatewayNodeLabel",
];

/// Parses and validates a config file's contents. Returns the config and warnings (unknown
/// fields) to log.
pub fn parse(text: &str) -> Result<(ClustersConfig, Vec<String>), ConfigError> {
    let value: Value = serde_json::from_str(text).map_err(ConfigError::Json)?;
    let warnings = unknown_fields(&value);
    let raw: RawConfig = serde_json::from_value(value).map_err(ConfigError::Shape)?;
    Ok((validate(raw)?, warnings))
}

fn unknown_fields(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let check = |obj: &Value, known: &[&str], at: &str, out: &mut Vec<String>| {
        if let Some(map) = obj.as_object() {
            for k in map.keys().filter(|k| !known.contains(&k.as_str())) {
                out.push(format!("unknown field {at}{k} is ignored"));
            }
        }
    };
    check(value, TOP_FIELDS, "", &mut out);
    if let Some(local) = value.get("local") {
        check(local, LOCAL_FIELDS, "local.", &mut out);
    }
    if let Some(remotes) = value.get("remotes").and_then(Value::as_array) {
        for (i, r) in remotes.iter().enumerate() {
            check(r, REMOTE_FIELDS, &format!("remotes[{i}]."), &mut out);
        }
    }
    out
}

/// Cluster names become annotation-key prefixes and device-name suffixes: a DNS label.
fn check_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::InvalidName {
            field: field.to_string(),
            name: name.to_string(),
        })
    }
}

/// A Linux interface name we accept: 1 to 15 bytes of letters, digits, '.', '-' and '_',
/// not "." or "..".
fn check_device_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::InvalidDeviceName {
            field: field.to_string(),
            name: name.to_string(),
            max: MAX_IFNAME,
        })
    }
}

fn validate(raw: RawConfig) -> Result<ClustersConfig, ConfigError> {
    if raw.local.name.is_empty() {
        return Err(ConfigError::MissingLocalName);
    }
    check_name("local.name", &raw.local.name)?;
    if raw.remotes.is_empty() {
        return Err(ConfigError::NoRemotes);
    }
    let mut remotes: Vec<RemoteCluster> = Vec::with_capacity(raw.remotes.len());
    for (i, r) in raw.remotes.into_iter().enumerate() {
        let at = format!("remotes[{i}]");
        if r.name.is_empty() {
            return Err(ConfigError::MissingRemoteName { at });
        }
        check_name(&format!("{at}.name"), &r.name)?;
        let device = if r.wg_device_name.is_empty() {
            let device = format!("{DEVICE_PREFIX}{}", r.name);
            if device.len() > MAX_IFNAME {
                return Err(ConfigError::DeviceNameTooLong {
                    field: format!("{at}.name"),
                    device,
                    max: MAX_IFNAME,
                });
            }
            device
        } else {
            check_device_name(&format!("{at}.wgDeviceName"), &r.wg_device_name)?;
            r.wg_device_name.clone()
        };
        let mesh = r.name == raw.local.name;
        let access = if !r.kube_config_path.is_empty() {
            RemoteAccess::KubeConfig(r.kube_config_path)
        } else if !r.remote_api_url.is_empty()
            && !r.remote_ca_url.is_empty()
            && !r.remote_sa_token_path.is_empty()
        {
            RemoteAccess::Token {
                api_url: r.remote_api_url,
                ca_url: r.remote_ca_url,
                token_path: r.remote_sa_token_path,
            }
        } else if mesh {
            // Our own cluster: the local cluster's credentials.
            match raw.local.kube_config_path.as_str() {
                "" => RemoteAccess::InCluster,
                path => RemoteAccess::KubeConfig(path.to_string()),
            }
        } else {
            return Err(ConfigError::NoRemoteAccess { at });
        };
        if r.pod_subnet.is_empty() {
            return Err(ConfigError::MissingPodSubnet { at });
        }
        let pod = subnets::parse_pod_subnet(&at, &r.pod_subnet)?;
        let extra = subnets::parse_extra(&at, &r.extra_subnets, &pod)?;
        let subnets = Subnets { pod, extra };
        let topology = topology::parse_topology(&at, &r.topology)?;
        let gateway_label = topology::parse_label(&at, &r.gateway_node_label)?;
        if mesh && topology == Topology::Gateway {
            return Err(ConfigError::InvalidTopology {
                field: format!("{at}.topology"),
                value: "gateway (the in-cluster mesh is node to node)".into(),
            });
        }
        let mtu = match r.wg_device_mtu {
            0 => DEFAULT_MTU,
            m @ 576..=65535 => m as u16,
            value => {
                return Err(ConfigError::MtuOutOfRange {
                    field: format!("{at}.wgDeviceMTU"),
                    value,
                });
            }
        };
        let listen_port = match r.wg_listen_port {
            0 => DEFAULT_LISTEN_PORT,
            p @ 1..=65535 => p as u16,
            value => {
                return Err(ConfigError::InvalidPort {
                    field: format!("{at}.wgListenPort"),
                    value,
                });
            }
        };
        let resync_period = match &r.resync_period {
            None | Some(Value::Null) => Duration::ZERO,
            Some(v) => duration::from_json(v).map_err(|source| ConfigError::InvalidDuration {
                field: format!("{at}.resyncPeriod"),
                source,
            })?,
        };
        let mass_removal_grace_period = match &r.mass_removal_grace_period {
            None | Some(Value::Null) => DEFAULT_MASS_REMOVAL_GRACE,
            Some(v) => duration::from_json(v).map_err(|source| ConfigError::InvalidDuration {
                field: format!("{at}.massRemovalGracePeriod"),
                source,
            })?,
        };
        for (j, other) in remotes.iter().enumerate() {
            let prev = format!("remotes[{j}]");
            if other.name == r.name {
                return Err(ConfigError::DuplicateName {
                    field: format!("{at}.name"),
                    name: r.name,
                    other: prev,
                });
            }
            if other.device == device {
                return Err(ConfigError::DuplicateDeviceName {
                    field: format!("{at}.wgDeviceName"),
                    device,
                    other: prev,
                });
            }
            if other.listen_port == listen_port {
                return Err(ConfigError::DuplicatePort {
                    field: format!("{at}.wgListenPort"),
                    port: listen_port,
                    other: prev,
                });
            }
            for subnet in subnets.routed() {
                if let Some(other_subnet) = other.subnets.routed().find(|o| overlaps(o, subnet)) {
                    let which = if subnets.pod.contains(subnet) {
                        "podSubnet"
                    } else {
                        "extraSubnets"
                    };
                    return Err(ConfigError::OverlappingSubnets {
                        field: format!("{at}.{which}"),
                        subnet: *subnet,
                        other_subnet: *other_subnet,
                        other: prev,
                    });
                }
            }
        }
        remotes.push(RemoteCluster {
            name: r.name,
            access,
            subnets,
            mesh,
            topology,
            gateway_label,
            mtu,
            listen_port,
            resync_period,
            mass_removal_grace_period,
            device,
        });
    }
    let kube_config_path =
        (!raw.local.kube_config_path.is_empty()).then_some(raw.local.kube_config_path);
    Ok(ClustersConfig {
        local: LocalCluster {
            name: raw.local.name,
            kube_config_path,
        },
        remotes,
    })
}

/// A CIDR with host bits masked off (as Go's `net.ParseCIDR` use in the original).
pub fn parse_cidr(s: &str) -> Option<IpNetwork> {
    let (addr, len) = s.trim().split_once('/')?;
    let addr: std::net::IpAddr = addr.parse().ok()?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) || len.len() > 3 {
        return None;
    }
    IpNetwork::new_truncate(addr, len.parse().ok()?).ok()
}

/// True when two prefixes share any address.
pub fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.contains(b.network_address()) || b.contains(a.network_address())
}

#[cfg(test)]
mod tests;

//! Why a clusters config was refused. Every variant names the field at fault (`at` is
//! the remote's position, e.g. `remotes[1]`); the first five keep the Go original's
//! messages word for word. Nothing is started from a refused config: fix the file.

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file is not JSON.
    #[error("invalid JSON")]
    Json(#[source] serde_json::Error),
    /// The JSON does not have the config's shape (a string where a number belongs, say).
    #[error("invalid config")]
    Shape(#[source] serde_json::Error),
    /// `local.name` is missing.
    #[error("Configuration is missing local cluster name (local.name)")]
    MissingLocalName,
    /// `remotes` is missing or empty.
    #[error("No remote cluster configuration defined (remotes)")]
    NoRemotes,
    /// A remote without a name.
    #[error("Configuration is missing remote cluster name ({at}.name)")]
    MissingRemoteName {
        /// Which remote.
        at: String,
    },
    /// A remote with neither a kubeconfig nor the API URL, CA URL and token path.
    #[error(
        "Insufficient configuration to create remote cluster client ({at}). Set kubeConfigPath or remoteAPIURL and remoteCAURL and remoteSATokenPath"
    )]
    NoRemoteAccess {
        /// Which remote.
        at: String,
    },
    /// A remote without `podSubnet`.
    #[error("No pod subnet defined for remote cluster ({at}.podSubnet)")]
    MissingPodSubnet {
        /// Which remote.
        at: String,
    },
    /// A cluster name that is not a DNS label.
    #[error("{field}: {name:?} is not a valid cluster name (lowercase letters, digits and '-')")]
    InvalidName {
        /// The field.
        field: String,
        /// Its value.
        name: String,
    },
    /// `wireguard.<name>` does not fit a Linux interface name.
    #[error(
        "{field}: device name {device:?} is {} bytes, over the {max}-byte limit of interface names; \
         set \"wgDeviceName\" for this remote to a name of at most {max} bytes (for example {:?}), \
         or use a cluster name of at most {} characters",
        device.len(),
        suggest_device(device, *max),
        max - super::DEVICE_PREFIX.len()
    )]
    DeviceNameTooLong {
        /// The field.
        field: String,
        /// The device name it would give.
        device: String,
        /// The limit.
        max: usize,
    },
    /// `wgDeviceName` is not a usable interface name.
    #[error(
        "{field}: {name:?} is not a valid interface name (1 to {max} bytes of letters, digits, '.', '-' and '_')"
    )]
    InvalidDeviceName {
        /// The field.
        field: String,
        /// Its value.
        name: String,
        /// The length limit.
        max: usize,
    },
    /// Two remotes would use one interface.
    #[error("{field}: device {device:?} is already used by {other}")]
    DuplicateDeviceName {
        /// The field.
        field: String,
        /// The device name.
        device: String,
        /// The remote that has it.
        other: String,
    },
    /// A prefix that does not parse.
    #[error("{field}: invalid CIDR {value:?}")]
    InvalidCidr {
        /// The field.
        field: String,
        /// Its value.
        value: String,
    },
    /// An MTU outside 576..65535.
    #[error("{field}: {value} is outside 576..65535")]
    MtuOutOfRange {
        /// The field.
        field: String,
        /// Its value.
        value: u64,
    },
    /// A port outside 1..65535.
    #[error("{field}: {value} is not a UDP port")]
    InvalidPort {
        /// The field.
        field: String,
        /// Its value.
        value: u64,
    },
    /// A duration that does not parse.
    #[error("{field}")]
    InvalidDuration {
        /// The field.
        field: String,
        /// Why.
        #[source]
        source: super::duration::DurationError,
    },
    /// Two remotes with one name.
    #[error("{field}: duplicate remote name {name:?} (also {other}.name)")]
    DuplicateName {
        /// The later remote's field.
        field: String,
        /// The name.
        name: String,
        /// The earlier remote.
        other: String,
    },
    /// Two remotes on one UDP port.
    #[error("{field}: port {port} is already used by {other}")]
    DuplicatePort {
        /// The later remote's field.
        field: String,
        /// The port.
        port: u16,
        /// The earlier remote.
        other: String,
    },
    /// `topology` is neither `node` nor `gateway`.
    #[error("{field}: {value:?} is not a topology (\"node\" or \"gateway\")")]
    InvalidTopology {
        /// The field.
        field: String,
        /// Its value.
        value: String,
    },
    /// `gatewayNodeLabel` is not `key=value`.
    #[error(
        "{field}: {value:?} is not a node label as key=value (for example \"semaphore.uw.io/gateway=true\")"
    )]
    InvalidLabel {
        /// The field.
        field: String,
        /// Its value.
        value: String,
    },
    /// A `podSubnet` with two prefixes of one family.
    #[error(
        "{field}: {value:?} holds two prefixes of one address family (at most one IPv4 and one IPv6, comma-separated)"
    )]
    PodSubnetFamilies {
        /// The field.
        field: String,
        /// Its value.
        value: String,
    },
    /// Two subnets (of two remotes, or of one) that share addresses.
    #[error("{field}: {subnet} overlaps {other_subnet} of {other}")]
    OverlappingSubnets {
        /// The later remote's field.
        field: String,
        /// Its subnet.
        subnet: ip_network::IpNetwork,
        /// The earlier remote's subnet.
        other_subnet: ip_network::IpNetwork,
        /// The earlier remote.
        other: String,
    },
}

/// A short device name to suggest for `wireguard.<name>`: `wg.` and the start of the name.
fn suggest_device(device: &str, max: usize) -> String {
    let name = device.strip_prefix(super::DEVICE_PREFIX).unwrap_or(device);
    let mut s = String::from("wg.");
    s.extend(name.chars().take(max - s.len()));
    s
}

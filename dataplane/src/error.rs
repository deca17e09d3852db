//! Error types of the dataplane: setup failures and configuration validation.

use std::io;

/// A configuration that cannot be applied. Nothing is changed when `apply` returns one.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key that does not parse.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// Two peers with the same public key.
    #[error("duplicate peer {0}")]
    DuplicatePeer(String),
    /// A peer whose public key is the interface's own.
    #[error("peer {0} has the interface's own public key")]
    PeerIsSelf(String),
    /// One allowed IP claimed by two peers.
    #[error("allowed IP {prefix} is claimed by peers {first} and {second}")]
    AllowedIpConflict {
        /// The prefix.
        prefix: String,
        /// One peer.
        first: String,
        /// The other peer.
        second: String,
    },
    /// A prefix that does not parse or has a bad length.
    #[error("invalid allowed IP {0:?}")]
    InvalidPrefix(String),
    /// An endpoint that is not `ip:port` or `[ipv6]:port`.
    #[error("invalid endpoint {0:?}")]
    InvalidEndpoint(String),
    /// The listen port is taken.
    #[error("cannot listen on UDP port {port}: {reason}")]
    PortInUse {
        /// The port asked for.
        port: u16,
        /// What the OS said.
        reason: String,
    },
    /// Binding the socket failed for another reason.
    #[error("cannot bind UDP port {port}: {reason}")]
    Bind {
        /// The port asked for.
        port: u16,
        /// What the OS said.
        reason: String,
    },
}

/// Failure to bring up or run an interface.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TUN device could not be created or opened.
    #[error("TUN device {name}")]
    Tun {
        /// Interface name.
        name: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The UAPI socket could not be set up.
    #[error("UAPI socket {path}")]
    Uapi {
        /// Socket path.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The initial configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Another I/O failure.
    #[error(transparent)]
    Io(#[from] io::Error),
}

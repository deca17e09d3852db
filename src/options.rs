//! What run mode's tasks share besides the config: the command-line options, and the
//! shutdown signal they all watch.

use std::path::PathBuf;

use dataplane::uapi::SOCKET_DIR;
use tokio::sync::watch;

/// The namespace of the manifests in `deploy/`.
pub const DEFAULT_NAMESPACE: &str = "semaphore-wireguard";

/// Everything run mode needs besides the config.
pub struct RunOptions {
    pub node_name: String,
    pub listen_address: String,
    pub key_dir: PathBuf,
    pub socket_dir: PathBuf,
    /// After a handover, wait for SIGTERM instead of exiting (in a pod).
    pub wait_after_handover: bool,
    /// Which address our endpoint annotations name.
    pub endpoint: control::advertise::EndpointSource,
    /// What this node claims of the remotes' extra subnets.
    pub advertise_cidrs: control::claim_flag::AdvertisedCidrs,
    /// Our namespace in the local cluster: gateway mode's Leases live there.
    pub namespace: String,
}

impl RunOptions {
    pub fn new(node_name: String, listen_address: String, key_dir: PathBuf) -> Self {
        Self {
            node_name,
            listen_address,
            key_dir,
            socket_dir: PathBuf::from(SOCKET_DIR),
            wait_after_handover: false,
            endpoint: control::advertise::EndpointSource::default(),
            advertise_cidrs: Default::default(),
            namespace: DEFAULT_NAMESPACE.to_string(),
        }
    }
}

/// Resolves when shutdown is signalled.
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

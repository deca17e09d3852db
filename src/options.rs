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

/// Waits for `tasks` (told to stop) until one deadline `limit` away, not `limit` each;
/// those still running then are aborted, and counted in a log line naming `what`.
pub async fn join_within(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    limit: std::time::Duration,
    what: &str,
) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut late = 0;
    for mut t in tasks {
        if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
            t.abort();
            late += 1;
        }
    }
    if late > 0 {
        tracing::warn!(tasks = late, within = ?limit, "{what}: tasks did not stop in time; aborted");
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::join_within;

    /// Three tasks that ignore the stop: the wait ends at one deadline (not three), and
    /// they are aborted; a task that ends is waited for.
    #[tokio::test]
    async fn tasks_get_one_deadline_together_and_the_late_are_aborted() {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let mut tasks = vec![tokio::spawn(async move {
            let _ = done_tx.send(());
        })];
        let (alive_tx, mut alive_rx) = tokio::sync::mpsc::channel::<()>(1);
        for _ in 0..3 {
            let alive = alive_tx.clone();
            tasks.push(tokio::spawn(async move {
                let _alive = alive;
                std::future::pending::<()>().await;
            }));
        }
        drop(alive_tx);
        let start = Instant::now();
        join_within(tasks, Duration::from_millis(300), "test").await;
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(800),
            "{took:?}"
        );
        assert!(done_rx.await.is_ok(), "the quick task ran");
        // Every hanging task is gone: their senders dropped with them.
        tokio::time::timeout(Duration::from_secs(2), alive_rx.recv())
            .await
            .expect("aborted tasks drop what they hold");
    }
}

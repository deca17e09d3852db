//! The control side of semaphore-wireguard: Kubernetes (remote-cluster Node watches, our
//! own Node's annotations) and netlink (links and routes). It computes the desired peer
//! set of each tunnel and hands it to the dataplane through the binary's wiring; it never
//! touches packets or sockets.
#![forbid(unsafe_code)]

pub mod advertise;
pub mod backoff;
pub mod claim_flag;
pub mod claims;
pub mod config;
pub mod election;
pub mod firewall;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod gateway;
pub mod histogram;
pub mod hold;
pub mod http_metrics;
pub mod mirror;
pub mod netlink;
pub mod node;
pub mod peers;
pub mod remote;
pub mod sync;
pub mod token;

/// An error and its causes on one line (`outer: cause: root cause`), for logs.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

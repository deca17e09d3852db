//! The control side of semaphore-wireguard: Kubernetes (remote-cluster Node watches, our
//! own Node's annotations) and netlink (links and routes). It computes the desired peer
//! set of each tunnel and hands it to the dataplane through the binary's wiring; it never
//! touches packets or sockets.
#![forbid(unsafe_code)]

pub mod advertise;
pub mod config;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod http_metrics;
pub mod netlink;
pub mod peers;
pub mod remote;
pub mod sync;
pub mod token;

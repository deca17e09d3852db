//! A WireGuard interface in userspace: a TUN device for inner IP packets, one dual-stack
//! UDP socket for WireGuard messages, boringtun's `noise::Tunn` for the protocol, and the
//! cross-platform UAPI so the real `wg` tool can drive it.
//!
//! ```text
//!  TUN ──recv_batch──► outbound: route by dst (allowed IPs) → Tunn::encapsulate → send_batch ──► UDP
//!  TUN ◄──send_batch── inbound:  recv_batch → peer by index/key → Tunn::decapsulate → src check ◄── UDP
//!  timers: every 250 ms, Tunn::update_timers per peer, persistent keepalives → send_batch ──► UDP
//! ```
//!
//! The one write path is [`Tunnel::apply`] (full desired state); UAPI `set=1` is a
//! read-modify-write through the same path ([`Device::update`]).

pub mod allowed_ips;
pub mod batch;
pub mod config;
pub mod error;
#[cfg(any(test, feature = "testing"))]
pub mod fuzzing;
mod inbound;
pub mod io;
pub mod key;
mod outbound;
pub mod packet;
mod peers;
pub mod stats;
mod sys;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod timers;
pub mod tun;
mod tunnel;
pub mod uapi;
pub mod udp;
mod wake;

pub use batch::Batch;
pub use config::{PeerConfig, TunnelConfig};
pub use error::{ConfigError, Error};
pub use key::{Key, PrivateKey};
pub use stats::{DeviceCounters, DropReason, Traffic};
pub use tunnel::{Device, DeviceStatus, PeerStatus, Tunnel};

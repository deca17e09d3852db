//! A WireGuard interface in userspace: a TUN device for inner IP packets, one dual-stack
//! UDP socket for WireGuard messages, boringtun's `noise::Tunn` for the protocol, and the
//! cross-platform UAPI so the real `wg` tool can drive it.
//!
//! ```text
//!  TUN ──recv_batch──► outbound: route by dst (allowed IPs) → Tunn::encapsulate → send_batch ──► UDP
//!  TUN ◄──send_batch── inbound:  recv_batch → peer by index/key → Tunn::decapsulate → src check ◄── UDP
//!  tick: every 250 ms, Tunn::update_timers per peer, persistent keepalives → try_send_batch ──► UDP
//! ```
//!
//! `tunnel` (the handle, `apply`, the thread supervisor) builds on `datapath` (what the
//! packet threads and the tick read), `handoff` (which thread reads the TUN) and `status`
//! (what an interface reports). The packet threads are `inbound` and `outbound`; the tick
//! is `tick`, fed by the per-peer timer events of `timers`.
//!
//! The one write path is [`Tunnel::apply`] (full desired state); UAPI `set=1` is a
//! read-modify-write through the same path ([`Device::update`]).

pub mod allowed_ips;
pub mod batch;
pub mod config;
mod datapath;
pub mod error;
#[cfg(any(test, feature = "testing"))]
pub mod fuzzing;
mod handoff;
mod icmp;
mod inbound;
pub mod io;
pub mod key;
mod outbound;
pub mod packet;
mod peers;
mod ratelimit;
mod route;
pub mod stats;
mod status;
mod sys;
pub mod takeover;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod tick;
mod timers;
pub mod tun;
mod tunnel;
pub mod uapi;
pub mod udp;
pub mod unroutable;
mod wake;

pub use batch::Batch;
pub use config::{PeerConfig, TunnelConfig};
pub use error::{ConfigError, Error};
pub use key::{Key, PrivateKey};
pub use stats::{DeviceCounters, DropReason, Traffic};
pub use status::{Device, DeviceStatus, PeerStatus};
pub use tunnel::{Released, Tunnel};

//! The `Tunnel` handle: starts the packet threads (one each way) and the tick (a tokio
//! task), supervises them, and owns the single write path, [`Tunnel::apply`], used by the
//! controller and the UAPI alike.
//!
//! A tunnel's state is split by concern:
//! - control ([`Control`], here): the desired configuration, whose lock serialises
//!   writers, the socket binder and the slot-index sequence;
//! - data path (`datapath.rs`): the peer table and socket that `apply` swaps, counters,
//!   clock, stop; all the packet threads and the tick depend on;
//! - TUN hand-off (`handoff.rs`): which packet thread reads the TUN, and the outbound
//!   buffers.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::Notify;

use crate::config::TunnelConfig;
use crate::datapath::DataPath;
use crate::error::{ConfigError, Error};
use crate::io::{TunIo, UdpBinder, UdpIo};
use crate::key::Key;
use crate::outbound::{Handoff, OutboundBuffers};
use crate::peers::PeerTable;
use crate::stats::DeviceCounters;
use crate::status::{Device, DeviceStatus};
use crate::{inbound, outbound, status, tick};

/// The control side of a tunnel: where configuration is written.
pub(crate) struct Control<B: UdpBinder> {
    binder: B,
    /// The desired configuration; its lock serialises writers.
    config: Mutex<TunnelConfig>,
    next_index: AtomicU32,
    data: Arc<DataPath<B::Socket>>,
}

impl<B: UdpBinder> Control<B> {
    fn apply_locked(
        &self,
        current: &mut TunnelConfig,
        mut config: TunnelConfig,
        set_endpoints: &[Key],
    ) -> Result<(), ConfigError> {
        config.validate()?;
        let data = &self.data;
        let bound = data.socket();
        let rebind = match &bound {
            None => true,
            // Asking for the port we already hold (a saved `wg showconf`, say) is a no-op.
            Some(sock) if config.listen_port == sock.local_port() => false,
            Some(_) => config.listen_port != current.listen_port,
        };
        if rebind {
            // Stop serving the old socket while binding; it is kept to fall back to.
            let old = data.set_socket(None);
            match self.binder.bind(config.listen_port, config.fwmark) {
                Ok(sock) => {
                    tracing::info!(device = %data.name, port = sock.local_port(), "listening");
                    data.set_socket(Some(Arc::new(sock)));
                }
                Err(e) => {
                    if let Some(old) = old {
                        // Keep serving on the old socket if it still stands.
                        data.set_socket(Some(old));
                    }
                    return Err(bind_error(config.listen_port, &e));
                }
            }
        } else if config.fwmark != current.fwmark
            && let Some(sock) = &bound
        {
            sock.set_fwmark(config.fwmark)
                .map_err(|e| ConfigError::Bind {
                    port: config.listen_port,
                    reason: e.to_string(),
                })?;
        }
        let old_table = data.table();
        let mut next = || self.next_index.fetch_add(1, Relaxed) & 0x00ff_ffff;
        let force = |k: &Key| set_endpoints.contains(k);
        let table = PeerTable::build(&old_table, current, &config, &mut next, &force);
        let kick = table.peers.iter().any(|p| p.timers.keepalive_pending());
        data.install(table);
        *current = config;
        if kick {
            data.tick_now.notify_one();
        }
        Ok(())
    }
}

fn bind_error(port: u16, e: &io::Error) -> ConfigError {
    if e.kind() == io::ErrorKind::AddrInUse {
        ConfigError::PortInUse {
            port,
            reason: e.to_string(),
        }
    } else {
        ConfigError::Bind {
            port,
            reason: e.to_string(),
        }
    }
}

impl<B: UdpBinder> Device for Control<B> {
    fn name(&self) -> &str {
        &self.data.name
    }

    fn apply(&self, config: TunnelConfig) -> Result<(), ConfigError> {
        let mut current = self.config.lock().unwrap_or_else(|e| e.into_inner());
        self.apply_locked(&mut current, config, &[])
    }

    fn config(&self) -> TunnelConfig {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn status(&self) -> DeviceStatus {
        let config = self.config();
        let port = self.data.socket().map_or(0, |s| s.local_port());
        status::status(config, &self.data.table(), port)
    }

    fn counters(&self) -> &DeviceCounters {
        &self.data.counters
    }

    fn update(
        &self,
        edit: &mut dyn FnMut(&mut TunnelConfig) -> Result<(), ConfigError>,
        set_endpoints: &[Key],
    ) -> Result<(), ConfigError> {
        let mut current = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = current.clone();
        edit(&mut next)?;
        self.apply_locked(&mut current, next, set_endpoints)
    }
}

/// What [`Tunnel::release`] hands to a successor.
#[derive(Debug)]
pub struct Released {
    /// The configuration, with live endpoints and the bound port.
    pub config: TunnelConfig,
    /// The UDP socket (none when unbound; an error when the transport cannot be handed
    /// over).
    pub socket: io::Result<Option<std::os::fd::OwnedFd>>,
}

/// A running WireGuard interface. Dropping it stops its threads and its timer task.
pub struct Tunnel<B: UdpBinder> {
    control: Arc<Control<B>>,
    data: Arc<DataPath<B::Socket>>,
    tasks: Vec<tokio::task::AbortHandle>,
    threads: Vec<JoinHandle<()>>,
    stopped: Arc<Notify>,
}

impl<B: UdpBinder> Tunnel<B> {
    /// Starts the packet paths over `tun`, binds UDP through `binder` and applies `config`.
    /// Must be called inside a tokio runtime (the timer tick is a task).
    pub fn spawn<T: TunIo>(
        name: &str,
        tun: T,
        binder: B,
        config: TunnelConfig,
    ) -> Result<Self, Error> {
        let data = Arc::new(DataPath::new(name)?);
        let control = Arc::new(Control {
            binder,
            config: Mutex::new(TunnelConfig::default()),
            next_index: AtomicU32::new(rand::random::<u32>()),
            data: Arc::clone(&data),
        });
        control.apply(config)?;
        let handoff = Arc::new(Handoff::new(OutboundBuffers::new())?);
        let tun = Arc::new(tun);
        let stopped = Arc::new(Notify::new());
        let mut tunnel = Self {
            control,
            data: Arc::clone(&data),
            tasks: Vec::new(),
            threads: Vec::new(),
            stopped: Arc::clone(&stopped),
        };
        // Run to completion: each direction reads, seals or opens, and writes on its own
        // thread, woken by the kernel straight from its `epoll` wait.
        let (d, h, t) = (Arc::clone(&data), Arc::clone(&handoff), Arc::clone(&tun));
        tunnel
            .threads
            .push(path_thread(name, "tx", &stopped, move || {
                outbound::run(&d, &h, &*t)
            })?);
        let (d, h, t) = (Arc::clone(&data), handoff, tun);
        tunnel
            .threads
            .push(path_thread(name, "rx", &stopped, move || {
                inbound::run(&d, &h, &*t)
            })?);
        let tick = tokio::spawn(tick::run(data));
        let (device, stopped) = (name.to_string(), Arc::clone(&stopped));
        tunnel.tasks.push(tick.abort_handle());
        let supervisor = tokio::spawn(async move {
            match tick.await {
                Err(e) if e.is_cancelled() => return,
                Err(e) => tracing::error!(device = %device, error = %e, "tick panicked"),
                Ok(()) => {}
            }
            notify_stopped(&stopped);
        });
        tunnel.tasks.push(supervisor.abort_handle());
        Ok(tunnel)
    }

    /// A shareable handle for the UAPI server and the controller.
    pub fn device(&self) -> Arc<dyn Device> {
        Arc::clone(&self.control) as Arc<dyn Device>
    }

    /// The single write path: make the interface carry exactly `config`.
    pub fn apply(&self, config: TunnelConfig) -> Result<(), ConfigError> {
        self.control.apply(config)
    }

    /// The current configuration.
    pub fn config(&self) -> TunnelConfig {
        self.control.config()
    }

    /// Configuration plus live peer state.
    pub fn status(&self) -> DeviceStatus {
        self.control.status()
    }

    /// Interface counters.
    pub fn counters(&self) -> &DeviceCounters {
        &self.data.counters
    }

    /// The bound UDP port (0 when unbound).
    pub fn listen_port(&self) -> u16 {
        self.data.socket().map_or(0, |s| s.local_port())
    }

    /// Asks every peer with an endpoint for a handshake at the next tick (at once), data
    /// or not: a successor that took the interface over starts without sessions, and a
    /// peer that only receives would otherwise keep sending in a session nobody holds.
    pub fn handshake_now(&self) {
        for peer in &self.data.table().peers {
            peer.timers.on_handshake_requested();
        }
        self.data.tick_now.notify_one();
    }

    /// Stops the packet paths and the tick, closing this process's TUN descriptor, and
    /// returns what a successor needs to carry on: the configuration with the endpoints
    /// peers roamed to and the bound port, and another descriptor of the UDP socket (the
    /// port stays bound, and datagrams queue in it, while that descriptor is open).
    pub fn release(self) -> Released {
        let status = self.status();
        let mut config = self.config();
        let live: std::collections::HashMap<Key, std::net::SocketAddr> = status
            .peers
            .iter()
            .filter_map(|p| Some((p.public_key, p.endpoint?)))
            .collect();
        for peer in &mut config.peers {
            if let Some(ep) = live.get(&peer.public_key) {
                peer.endpoint = Some(*ep);
            }
        }
        let socket = self.data.socket().map(|s| s.duplicate_fd());
        if status.listen_port != 0 {
            config.listen_port = status.listen_port;
        }
        drop(self);
        Released {
            config,
            socket: socket.transpose(),
        }
    }

    /// Resolves when a packet path stops on its own (for example the TUN device was
    /// deleted).
    pub async fn stopped(&self) {
        self.stopped.notified().await;
    }
}

impl<B: UdpBinder> Drop for Tunnel<B> {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.data.stop.set();
        // Release the port even while `device()` handles are still around.
        self.data.set_socket(None);
        // The threads return as soon as their wait ends (a send waits 100 ms at most).
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Starts one packet path on its own thread. When the path ends on its own (an error, a
/// panic) rather than through `Stop`, `stopped` is notified.
fn path_thread(
    device: &str,
    what: &'static str,
    stopped: &Arc<Notify>,
    body: impl FnOnce() -> io::Result<()> + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    /// Reports a panic on the way out, while unwinding.
    struct OnPanic {
        device: String,
        what: &'static str,
        stopped: Arc<Notify>,
    }
    impl Drop for OnPanic {
        fn drop(&mut self) {
            if std::thread::panicking() {
                tracing::error!(device = %self.device, "{} path panicked", self.what);
                notify_stopped(&self.stopped);
            }
        }
    }
    let guard = OnPanic {
        device: device.to_string(),
        what,
        stopped: Arc::clone(stopped),
    };
    std::thread::Builder::new()
        // Linux keeps 15 bytes of a thread name.
        .name(format!("{what}-{device}"))
        .spawn(move || {
            if let Err(e) = body() {
                tracing::warn!(device = %guard.device, error = %e, "{} path stopped", guard.what);
                notify_stopped(&guard.stopped);
            }
        })
}

fn notify_stopped(stopped: &Notify) {
    stopped.notify_waiters();
    stopped.notify_one();
}

//! The `Tunnel` handle: starts the packet paths (one thread each way) and the timer tick
//! (a tokio task), and owns the single write path, [`Tunnel::apply`], used by the
//! controller and the UAPI alike.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, TryLockError};
use std::thread::JoinHandle;
use std::time::SystemTime;

use ip_network::IpNetwork;
use tokio::sync::{Notify, watch};

use crate::config::TunnelConfig;
use crate::error::{ConfigError, Error};
use crate::io::{TunIo, UdpBinder, UdpIo};
use crate::key::{Key, PrivateKey};
use crate::outbound::Sealer;
use crate::peers::{Clock, PeerTable};
use crate::stats::DeviceCounters;
use crate::wake::{Doorbell, Stop};
use crate::{inbound, outbound, timers};

/// What a running interface reports: the configuration plus live state per peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceStatus {
    /// Our private key, if set.
    pub private_key: Option<PrivateKey>,
    /// The port actually bound (0 when no socket).
    pub listen_port: u16,
    /// `SO_MARK` (0 = none).
    pub fwmark: u32,
    /// Peers in configuration order.
    pub peers: Vec<PeerStatus>,
}

/// Live state of one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's public key.
    pub public_key: Key,
    /// Its preshared key.
    pub preshared_key: Option<Key>,
    /// The current (possibly roamed) endpoint.
    pub endpoint: Option<SocketAddr>,
    /// When the last handshake completed.
    pub last_handshake: Option<SystemTime>,
    /// WireGuard bytes received from this peer.
    pub rx_bytes: u64,
    /// WireGuard bytes sent to this peer.
    pub tx_bytes: u64,
    /// Datagrams received.
    pub rx_packets: u64,
    /// Datagrams sent.
    pub tx_packets: u64,
    /// Persistent keepalive interval in seconds.
    pub persistent_keepalive: Option<u16>,
    /// The peer's allowed IPs.
    pub allowed_ips: Vec<IpNetwork>,
}

impl PeerStatus {
    /// A peer with only a key: no endpoint, no handshake, zero counters.
    pub fn new(public_key: Key) -> Self {
        Self {
            public_key,
            preshared_key: None,
            endpoint: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_packets: 0,
            tx_packets: 0,
            persistent_keepalive: None,
            allowed_ips: Vec::new(),
        }
    }
}

/// The operations the UAPI server (and anything else) needs from an interface. Object
/// safe, so one server type serves tunnels over any transport.
pub trait Device: Send + Sync + 'static {
    /// Interface name.
    fn name(&self) -> &str;
    /// Replaces the whole configuration (the single write path).
    fn apply(&self, config: TunnelConfig) -> Result<(), ConfigError>;
    /// The current configuration.
    fn config(&self) -> TunnelConfig;
    /// Configuration plus live peer state.
    fn status(&self) -> DeviceStatus;
    /// Interface counters.
    fn counters(&self) -> &DeviceCounters;
    /// Read-modify-write under the write lock: `edit` gets a copy of the configuration
    /// and the result is applied atomically (nothing changes if either step fails).
    /// Peers listed in `set_endpoints` take their configured endpoint even if it equals
    /// the previous configuration (an explicit `wg set … endpoint` undoes roaming).
    fn update(
        &self,
        edit: &mut dyn FnMut(&mut TunnelConfig) -> Result<(), ConfigError>,
        set_endpoints: &[Key],
    ) -> Result<(), ConfigError>;
}

impl std::fmt::Debug for dyn Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({})", self.name())
    }
}

/// State shared by a tunnel's threads, its timer task and its handles.
pub(crate) struct Shared<B: UdpBinder> {
    pub(crate) name: String,
    binder: B,
    table: RwLock<Arc<PeerTable>>,
    /// The desired configuration; its lock serialises writers.
    config: Mutex<TunnelConfig>,
    socket: watch::Sender<Option<Arc<B::Socket>>>,
    /// Rings when the inbound thread must look again: after every change of `socket`, and
    /// when the outbound thread hands the TUN back.
    pub(crate) rx_bell: Doorbell,
    /// Rings when the inbound thread hands the TUN to the outbound thread.
    pub(crate) tx_bell: Doorbell,
    /// Which thread reads the TUN: the inbound one while traffic is light (false), the
    /// outbound one under load (true). Only the owner changes it; see `outbound::run`.
    pub(crate) tx_owns_tun: AtomicBool,
    /// Set when the tunnel is dropped: the packet threads return.
    pub(crate) stop: Stop,
    pub(crate) counters: DeviceCounters,
    pub(crate) clock: Clock,
    /// Wakes the timer task early (a keepalive is due now).
    pub(crate) kick: Notify,
    next_index: AtomicU32,
    /// The outbound path's buffers; see [`Shared::sealer`].
    sealer: Mutex<Sealer>,
}

impl<B: UdpBinder> Shared<B> {
    /// The current peer table; the packet paths call this once per batch.
    #[inline]
    pub(crate) fn table(&self) -> Arc<PeerTable> {
        Arc::clone(&self.table.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The current socket, if bound.
    #[inline]
    pub(crate) fn socket(&self) -> Option<Arc<B::Socket>> {
        self.socket.borrow().clone()
    }

    /// The outbound path's buffers, waiting for whichever thread holds them.
    pub(crate) fn sealer(&self) -> MutexGuard<'_, Sealer> {
        self.sealer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The outbound path's buffers if no thread holds them. A panic while sealing leaves
    /// plain buffers behind, fine to reuse.
    pub(crate) fn try_sealer(&self) -> Option<MutexGuard<'_, Sealer>> {
        match self.sealer.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Replaces the socket and tells the inbound thread; returns the old one.
    fn set_socket(&self, socket: Option<Arc<B::Socket>>) -> Option<Arc<B::Socket>> {
        let old = self.socket.send_replace(socket);
        self.rx_bell.ring();
        old
    }

    fn apply_locked(
        &self,
        current: &mut TunnelConfig,
        mut config: TunnelConfig,
        set_endpoints: &[Key],
    ) -> Result<(), ConfigError> {
        config.validate()?;
        let bound = self.socket();
        let rebind = match &bound {
            None => true,
            // Asking for the port we already hold (a saved `wg showconf`, say) is a no-op.
            Some(sock) if config.listen_port == sock.local_port() => false,
            Some(_) => config.listen_port != current.listen_port,
        };
        if rebind {
            // Free the old port first so that re-binding the same number works.
            let old = self.set_socket(None);
            match self.binder.bind(config.listen_port, config.fwmark) {
                Ok(sock) => {
                    tracing::info!(device = %self.name, port = sock.local_port(), "listening");
                    self.set_socket(Some(Arc::new(sock)));
                }
                Err(e) => {
                    if let Some(old) = old {
                        // Keep serving on the old socket if it still stands.
                        self.set_socket(Some(old));
                    }
                    return Err(bind_error(config.listen_port, &e));
                }
            }
        } else if config.fwmark != current.fwmark
            && let Some(sock) = &bound
        {
            {
                sock.set_fwmark(config.fwmark)
                    .map_err(|e| ConfigError::Bind {
                        port: config.listen_port,
                        reason: e.to_string(),
                    })?;
            }
        }
        let old_table = self.table();
        let mut next = || self.next_index.fetch_add(1, Relaxed) & 0x00ff_ffff;
        let force = |k: &Key| set_endpoints.contains(k);
        let table = PeerTable::build(&old_table, current, &config, &mut next, &force);
        let kick = table.peers.iter().any(|p| p.keepalive_due.load(Relaxed));
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        *current = config;
        if kick {
            self.kick.notify_one();
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

impl<B: UdpBinder> Device for Shared<B> {
    fn name(&self) -> &str {
        &self.name
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
        let table = self.table();
        let peers = config
            .peers
            .iter()
            .map(|pc| {
                let live = table.by_key(&pc.public_key);
                let c = live.map(|p| &*p.counters);
                PeerStatus {
                    public_key: pc.public_key,
                    preshared_key: pc.preshared_key,
                    endpoint: live.and_then(|p| p.endpoint()).or(pc.endpoint),
                    last_handshake: live.and_then(|p| p.last_handshake()),
                    rx_bytes: c.map_or(0, |c| c.rx_bytes.load(Relaxed)),
                    tx_bytes: c.map_or(0, |c| c.tx_bytes.load(Relaxed)),
                    rx_packets: c.map_or(0, |c| c.rx_packets.load(Relaxed)),
                    tx_packets: c.map_or(0, |c| c.tx_packets.load(Relaxed)),
                    persistent_keepalive: pc.persistent_keepalive,
                    allowed_ips: pc.allowed_ips.clone(),
                }
            })
            .collect();
        DeviceStatus {
            private_key: config.private_key,
            listen_port: self.socket().map_or(0, |s| s.local_port()),
            fwmark: config.fwmark,
            peers,
        }
    }

    fn counters(&self) -> &DeviceCounters {
        &self.counters
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

/// A running WireGuard interface. Dropping it stops its threads and its timer task.
pub struct Tunnel<B: UdpBinder> {
    shared: Arc<Shared<B>>,
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
        let (socket, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            name: name.to_string(),
            binder,
            table: RwLock::new(Arc::new(PeerTable::default())),
            config: Mutex::new(TunnelConfig::default()),
            socket,
            rx_bell: Doorbell::new()?,
            tx_bell: Doorbell::new()?,
            tx_owns_tun: AtomicBool::new(false),
            stop: Stop::new()?,
            counters: DeviceCounters::default(),
            clock: Clock::new(),
            kick: Notify::new(),
            sealer: Mutex::new(Sealer::new()),
            next_index: AtomicU32::new(rand::random::<u32>()),
        });
        shared.apply(config)?;
        let tun = Arc::new(tun);
        let stopped = Arc::new(Notify::new());
        let mut tunnel = Self {
            shared: Arc::clone(&shared),
            tasks: Vec::new(),
            threads: Vec::new(),
            stopped: Arc::clone(&stopped),
        };
        // Run to completion: each direction reads, seals or opens, and writes on its own
        // thread, woken by the kernel straight from `poll`.
        let (s, t) = (Arc::clone(&shared), Arc::clone(&tun));
        tunnel
            .threads
            .push(path_thread(name, "tx", &stopped, move || {
                outbound::run(&s, &*t)
            })?);
        let (s, t) = (Arc::clone(&shared), tun);
        tunnel
            .threads
            .push(path_thread(name, "rx", &stopped, move || {
                inbound::run(&s, &*t)
            })?);
        let timer = tokio::spawn(timers::run(Arc::clone(&shared)));
        let (device, stopped) = (name.to_string(), Arc::clone(&stopped));
        tunnel.tasks.push(timer.abort_handle());
        let supervisor = tokio::spawn(async move {
            match timer.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(device = %device, error = %e, "timer stopped"),
                Err(e) if e.is_cancelled() => return,
                Err(e) => tracing::error!(device = %device, error = %e, "timer panicked"),
            }
            notify_stopped(&stopped);
        });
        tunnel.tasks.push(supervisor.abort_handle());
        Ok(tunnel)
    }

    /// A shareable handle for the UAPI server and the controller.
    pub fn device(&self) -> Arc<dyn Device> {
        Arc::clone(&self.shared) as Arc<dyn Device>
    }

    /// The single write path: make the interface carry exactly `config`.
    pub fn apply(&self, config: TunnelConfig) -> Result<(), ConfigError> {
        self.shared.apply(config)
    }

    /// The current configuration.
    pub fn config(&self) -> TunnelConfig {
        self.shared.config()
    }

    /// Configuration plus live peer state.
    pub fn status(&self) -> DeviceStatus {
        self.shared.status()
    }

    /// Interface counters.
    pub fn counters(&self) -> &DeviceCounters {
        &self.shared.counters
    }

    /// The bound UDP port (0 when unbound).
    pub fn listen_port(&self) -> u16 {
        self.shared.socket().map_or(0, |s| s.local_port())
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
        self.shared.stop.set();
        // Release the port even while `device()` handles are still around.
        self.shared.set_socket(None);
        // The threads return as soon as `poll` wakes (a send waits 100 ms at most).
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

//! The data-path state of one tunnel: what the packet threads and the tick read. The
//! current peer table and socket (swapped whole by `apply`), the counters, the clock and
//! the stop signal. Nothing here knows how configuration is written or who reads the TUN.

use std::io;
use std::sync::{Arc, RwLock};

use tokio::sync::{Notify, watch};

use crate::io::UdpIo;
use crate::peers::PeerTable;
use crate::stats::DeviceCounters;
use crate::timers::Clock;
use crate::wake::{Doorbell, Stop};

/// State shared by a tunnel's packet threads, its tick and its control side.
pub(crate) struct DataPath<S: UdpIo> {
    /// Interface name, for logs.
    pub(crate) name: String,
    table: RwLock<Arc<PeerTable>>,
    socket: watch::Sender<Option<Arc<S>>>,
    /// Rings after every change of the socket, so the inbound thread follows it.
    pub(crate) socket_changed: Doorbell,
    /// Set when the tunnel is dropped: the packet threads return.
    pub(crate) stop: Stop,
    pub(crate) counters: DeviceCounters,
    pub(crate) clock: Clock,
    /// Wakes the tick early (a keepalive is due now).
    pub(crate) tick_now: Notify,
}

impl<S: UdpIo> DataPath<S> {
    /// No peers, no socket.
    pub(crate) fn new(name: &str) -> io::Result<Self> {
        let (socket, _) = watch::channel(None);
        Ok(Self {
            name: name.to_string(),
            table: RwLock::new(Arc::new(PeerTable::default())),
            socket,
            socket_changed: Doorbell::new()?,
            stop: Stop::new()?,
            counters: DeviceCounters::default(),
            clock: Clock::new(),
            tick_now: Notify::new(),
        })
    }

    /// The current peer table; the packet paths call this once per batch.
    #[inline]
    pub(crate) fn table(&self) -> Arc<PeerTable> {
        Arc::clone(&self.table.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Makes `table` the one the packet paths see from their next batch on.
    pub(crate) fn install(&self, table: PeerTable) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }

    /// The current socket, if bound.
    #[inline]
    pub(crate) fn socket(&self) -> Option<Arc<S>> {
        self.socket.borrow().clone()
    }

    /// Replaces the socket and tells the inbound thread; returns the old one (the
    /// inbound thread may still hold it until it has looked again).
    pub(crate) fn set_socket(&self, socket: Option<Arc<S>>) -> Option<Arc<S>> {
        if let Some(new) = &socket {
            crate::unroutable::port_bound(new.local_port());
        }
        let old = self.socket.send_replace(socket);
        if let Some(old) = &old {
            crate::unroutable::port_released(old.local_port());
        }
        self.socket_changed.ring();
        old
    }
}

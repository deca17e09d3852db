//! [`TunIo`] for a real Linux TUN device (tun-rs, no packet-information header).

use std::io;

use tun_rs::{AsyncDevice, DeviceBuilder};

use crate::batch::Batch;
use crate::error::Error;
use crate::io::TunIo;

/// A TUN device opened by this process.
pub struct TunDevice {
    dev: AsyncDevice,
    name: String,
}

impl TunDevice {
    /// Creates (or attaches to) the TUN device `name` with `mtu`; `up` also sets the link up.
    pub fn create(name: &str, mtu: u16, up: bool) -> Result<Self, Error> {
        Self::open(name, mtu, up, false)
    }

    /// Like [`TunDevice::create`], but the device is made persistent: it stays, with its
    /// addresses and routes, when this process exits, and a restarted process attaches to
    /// it again (packets routed to it meanwhile are dropped, not misrouted).
    pub fn create_persistent(name: &str, mtu: u16, up: bool) -> Result<Self, Error> {
        Self::open(name, mtu, up, true)
    }

    fn open(name: &str, mtu: u16, up: bool, persist: bool) -> Result<Self, Error> {
        let err = |source: io::Error| Error::Tun {
            name: name.to_string(),
            source,
        };
        if name.is_empty()
            || name.len() > 15
            || name.contains('/')
            || name.contains(char::is_whitespace)
        {
            return Err(err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "interface names are 1 to 15 bytes without '/' or spaces",
            )));
        }
        let mut builder = DeviceBuilder::new()
            .name(name)
            .mtu(mtu)
            .packet_information(false);
        if up {
            builder = builder.enable(true);
        }
        let dev = builder.build_async().map_err(err)?;
        if persist {
            dev.persist().map_err(err)?;
        }
        let name = dev.name().map_err(err)?;
        Ok(Self { dev, name })
    }

    /// The kernel's name for the device.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl TunIo for TunDevice {
    async fn recv_batch(&self, batch: &mut Batch) -> io::Result<()> {
        let Some(slot) = batch.next_slot() else {
            return Ok(());
        };
        let n = self.dev.recv(slot).await?;
        batch.commit(n, unspecified(), 0);
        while let Some(slot) = batch.next_slot() {
            match self.dev.try_recv(slot) {
                Ok(n) => batch.commit(n, unspecified(), 0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn send_batch(&self, batch: &Batch) -> usize {
        let mut failed = 0;
        for i in 0..batch.len() {
            if let Err(e) = self.dev.send(batch.packet(i)).await {
                tracing::debug!(device = %self.name, error = %e, "TUN write failed");
                failed += 1;
            }
        }
        failed
    }
}

fn unspecified() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([0, 0, 0, 0], 0))
}

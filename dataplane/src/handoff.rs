//! Who reads the TUN: the protocol between a tunnel's two packet threads.
//!
//! While traffic is light the **inbound** thread reads the TUN as well as the socket, so a
//! request and its reply are handled by one warm thread and nothing else wakes. Under
//! outbound load it hands the TUN to the **outbound** thread, which keeps it until it has
//! been quiet for [`KEEP_TUN`] and then gives it back.
//!
//! - [`TunHandoff::hand_over_if_busy`]: the inbound thread, as reader, hands the TUN over
//!   after a read that shows load (a batch left undrained, or [`BUSY_PACKETS`] or more).
//! - [`TunHandoff::take`]: the outbound thread, woken, takes the TUN if it was handed over.
//! - [`TunHandoff::give_back`]: the outbound thread returns it after [`KEEP_TUN`] of quiet.
//! - [`TunHandoff::reply_inline`]: after writing to the TUN, the inbound thread seals what
//!   the inner stack queued during the write, whoever reads the TUN.
//!
//! Only the current reader changes the reader, and every change rings the other thread's
//! doorbell. The TUN is level-triggered, so no packet waits through a change. The outbound
//! buffers (`W`) are one set behind a lock, taken by whichever thread is sealing, so one
//! flow's packets stay in order.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use crate::wake::Doorbell;

/// How long the TUN stays with the outbound thread after it last had packets.
pub(crate) const KEEP_TUN: Duration = Duration::from_millis(4);

/// A read of at least this many packets means outbound load.
pub(crate) const BUSY_PACKETS: usize = 8;

/// What one read of the TUN found.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Load {
    /// The TUN had nothing more to read.
    pub(crate) drained: bool,
    /// Packets read.
    pub(crate) packets: usize,
}

impl Load {
    fn is_busy(self) -> bool {
        !self.drained || self.packets >= BUSY_PACKETS
    }
}

/// The reader of the TUN, the doorbells that announce a change, and the outbound
/// buffers `W` that the reader seals with.
pub(crate) struct TunHandoff<W> {
    /// True while the outbound thread reads the TUN.
    outbound_reads: AtomicBool,
    /// Rings when the TUN comes back to the inbound thread.
    given_back: Doorbell,
    /// Rings when the TUN is handed to the outbound thread.
    handed_over: Doorbell,
    buffers: Mutex<W>,
}

impl<W> TunHandoff<W> {
    /// The inbound thread reads the TUN.
    pub(crate) fn new(buffers: W) -> io::Result<Self> {
        Ok(Self {
            outbound_reads: AtomicBool::new(false),
            given_back: Doorbell::new()?,
            handed_over: Doorbell::new()?,
            buffers: Mutex::new(buffers),
        })
    }

    /// True while the inbound thread is the reader.
    pub(crate) fn inbound_reads(&self) -> bool {
        !self.outbound_reads.load(SeqCst)
    }

    /// Readable after the TUN was given back (the inbound thread waits on it).
    pub(crate) fn given_back_fd(&self) -> BorrowedFd<'_> {
        self.given_back.fd()
    }

    /// Silences the given-back bell; call before looking at [`TunHandoff::inbound_reads`].
    pub(crate) fn drain_given_back(&self) {
        self.given_back.drain();
    }

    /// Readable after the TUN was handed over (the outbound thread waits on it).
    pub(crate) fn handed_over_fd(&self) -> BorrowedFd<'_> {
        self.handed_over.fd()
    }

    /// The inbound thread, as reader: reads one batch with the buffers (waiting for them
    /// if the outbound thread is finishing a batch), then hands the TUN over if busy.
    pub(crate) fn read_as_inbound(
        &self,
        read: impl FnOnce(&mut W) -> io::Result<Load>,
    ) -> io::Result<()> {
        let load = read(&mut self.lock())?;
        self.hand_over_if_busy(load);
        Ok(())
    }

    /// The inbound thread, right after writing to the TUN: seals what the inner stack
    /// queued during the write.
    ///
    /// A TUN write runs the inner stack inline: by the time it returns, an echo reply or a
    /// TCP ACK is usually queued for the outbound path. Sealing it here, whoever reads the
    /// TUN, saves a wake-up of the outbound thread (a second thread on another, often idle,
    /// CPU) on every request/reply round trip. Skipped while the outbound thread holds the
    /// buffers: it takes whatever is left.
    pub(crate) fn reply_inline(
        &self,
        read: impl FnOnce(&mut W) -> io::Result<Load>,
    ) -> io::Result<()> {
        let mut buffers = match self.buffers.try_lock() {
            Ok(g) => g,
            // A panic while sealing leaves plain buffers behind, fine to reuse.
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(()),
        };
        let load = read(&mut buffers)?;
        drop(buffers);
        self.hand_over_if_busy(load);
        Ok(())
    }

    /// Hands the TUN to the outbound thread if the inbound thread reads it and `load` is
    /// busy.
    fn hand_over_if_busy(&self, load: Load) {
        if load.is_busy() && self.inbound_reads() {
            self.outbound_reads.store(true, SeqCst);
            self.handed_over.ring();
        }
    }

    /// The outbound thread, woken by the handed-over bell: true if the TUN is now its to
    /// read.
    pub(crate) fn take(&self) -> bool {
        self.handed_over.drain();
        !self.inbound_reads()
    }

    /// The outbound thread, as reader: reads one batch with the buffers.
    pub(crate) fn read_as_outbound(
        &self,
        read: impl FnOnce(&mut W) -> io::Result<Load>,
    ) -> io::Result<Load> {
        read(&mut self.lock())
    }

    /// The outbound thread returns the TUN after [`KEEP_TUN`] of quiet.
    pub(crate) fn give_back(&self) {
        self.outbound_reads.store(false, SeqCst);
        self.given_back.ring();
    }

    fn lock(&self) -> MutexGuard<'_, W> {
        self.buffers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(drained: bool, packets: usize) -> impl FnOnce(&mut u32) -> io::Result<Load> {
        move |reads| {
            *reads += 1;
            Ok(Load { drained, packets })
        }
    }

    #[test]
    fn light_reads_keep_the_tun_with_the_inbound_thread() {
        let h = TunHandoff::new(0u32).unwrap();
        h.read_as_inbound(load(true, BUSY_PACKETS - 1)).unwrap();
        h.reply_inline(load(true, 1)).unwrap();
        assert!(h.inbound_reads());
        assert!(!h.take(), "nothing was handed over");
        assert_eq!(*h.lock(), 2);
    }

    #[test]
    fn a_busy_read_hands_over_and_quiet_gives_back() {
        for busy in [load(true, BUSY_PACKETS), load(false, 1)] {
            let h = TunHandoff::new(0u32).unwrap();
            h.read_as_inbound(busy).unwrap();
            assert!(!h.inbound_reads());
            assert!(crate::wake::readable(&[h.handed_over_fd()], Some(KEEP_TUN)).unwrap() != 0);
            assert!(h.take());
            h.read_as_outbound(load(true, 0)).unwrap();
            h.give_back();
            assert!(h.inbound_reads());
            assert!(crate::wake::readable(&[h.given_back_fd()], Some(KEEP_TUN)).unwrap() != 0);
        }
    }

    #[test]
    fn a_busy_inline_reply_hands_over_too() {
        let h = TunHandoff::new(0u32).unwrap();
        h.reply_inline(load(false, 128)).unwrap();
        assert!(h.take());
    }

    #[test]
    fn an_inline_reply_skips_while_the_buffers_are_held() {
        let h = TunHandoff::new(0u32).unwrap();
        let held = h.lock();
        h.reply_inline(load(false, 128)).unwrap();
        drop(held);
        assert_eq!(*h.lock(), 0, "not read");
        assert!(h.inbound_reads());
    }
}

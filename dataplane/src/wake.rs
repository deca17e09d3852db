//! Waking threads that block in `poll(2)`: a [`Doorbell`] is a descriptor that becomes
//! readable when rung, and [`Stop`] is a doorbell that stays rung.
//!
//! The packet paths sleep in `poll` on their own descriptors plus these, so the only
//! wake-up on the data path is the kernel's, straight into the thread that handles it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A descriptor that becomes readable when rung, until drained. Ringing never blocks:
/// when the pipe is full the bell is already ringing.
#[derive(Debug)]
pub struct Doorbell {
    rx: UnixDatagram,
    tx: UnixDatagram,
}

impl Doorbell {
    /// A silent doorbell.
    pub fn new() -> io::Result<Self> {
        let (rx, tx) = UnixDatagram::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        Ok(Self { rx, tx })
    }

    /// Makes [`Doorbell::fd`] readable.
    pub fn ring(&self) {
        // WouldBlock: queued rings are still unread, so the descriptor is readable.
        let _ = self.tx.send(&[1]);
    }

    /// Silences the bell. Drain before looking at the state a ring announces: a ring
    /// that comes later then still wakes the next wait.
    pub fn drain(&self) {
        let mut buf = [0u8; 16];
        while self.rx.recv(&mut buf).is_ok() {}
    }

    /// Readable while rung.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }
}

/// A one-way stop signal for threads that wait in `poll`: once set, its descriptor stays
/// readable, so every waiter wakes, now and later.
#[derive(Debug)]
pub struct Stop {
    set: AtomicBool,
    bell: Doorbell,
}

impl Stop {
    /// Not set.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            set: AtomicBool::new(false),
            bell: Doorbell::new()?,
        })
    }

    /// Sets the signal and wakes every waiter.
    pub fn set(&self) {
        self.set.store(true, Ordering::SeqCst);
        self.bell.ring();
    }

    /// True once [`Stop::set`] was called.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Readable once set.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.bell.fd()
    }
}

/// Waits until one of `fds` (at most 4) is readable or `timeout` passes (`None`: no
/// limit). Returns a mask with bit `i` set when `fds[i]` is readable; 0 when the wait
/// ended without any (timeout, signal).
pub(crate) fn readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<u8> {
    crate::sys::wait(fds, false, timeout)
}

/// Waits until `fd` is writable or `timeout` passes; false on timeout.
pub(crate) fn writable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    Ok(crate::sys::wait(&[fd], true, Some(timeout))? != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Option<Duration> = Some(Duration::from_millis(20));

    #[test]
    fn a_doorbell_is_readable_from_ring_until_drained() {
        let bell = Doorbell::new().unwrap();
        assert_eq!(readable(&[bell.fd()], SHORT).unwrap(), 0);
        bell.ring();
        bell.ring();
        assert_eq!(readable(&[bell.fd()], SHORT).unwrap(), 1);
        bell.drain();
        assert_eq!(readable(&[bell.fd()], SHORT).unwrap(), 0);
    }

    #[test]
    fn the_mask_names_the_ready_descriptors() {
        let (quiet, rung) = (Doorbell::new().unwrap(), Doorbell::new().unwrap());
        rung.ring();
        assert_eq!(readable(&[quiet.fd(), rung.fd()], SHORT).unwrap(), 0b10);
    }

    #[test]
    fn ringing_a_full_doorbell_neither_blocks_nor_fails() {
        let bell = Doorbell::new().unwrap();
        for _ in 0..100_000 {
            bell.ring();
        }
        bell.drain();
        assert_eq!(readable(&[bell.fd()], SHORT).unwrap(), 0);
    }

    #[test]
    fn stop_wakes_a_waiting_thread_and_stays_set() {
        let stop = std::sync::Arc::new(Stop::new().unwrap());
        let waiter = {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || readable(&[stop.fd()], Some(Duration::from_secs(10))))
        };
        std::thread::sleep(Duration::from_millis(20));
        stop.set();
        assert_eq!(waiter.join().unwrap().unwrap(), 1);
        assert!(stop.is_set());
        assert_eq!(readable(&[stop.fd()], SHORT).unwrap(), 1, "stays readable");
    }
}

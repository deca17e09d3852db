//! Waking threads that block on descriptors: a [`Doorbell`] is a descriptor that becomes
//! readable when rung, [`Stop`] is a doorbell that stays rung, and a [`Waiter`] is a
//! packet thread's long-lived wait set.
//!
//! The packet paths sleep in their [`Waiter`] on their own descriptors plus these, so the
//! only wake-up on the data path is the kernel's, straight into the thread that handles it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

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

/// A one-way stop signal for threads that wait on descriptors: once set, its descriptor stays
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

/// Descriptors one [`Waiter`] takes at most.
const MAX_WAIT: usize = 8;

/// A name for one descriptor of a wait: a single bit, so a [`Ready`] set names every
/// descriptor that ended the wait. Each packet thread declares its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token(u8);

impl Token {
    /// Token number `n` (0 to 7).
    pub const fn new(n: u8) -> Self {
        assert!(n < MAX_WAIT as u8, "a Waiter takes at most 8 descriptors");
        Self(1 << n)
    }
}

/// The tokens of the descriptors that were readable (or in error) when a wait ended;
/// empty when it ended without any (timeout, signal).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready(u8);

impl Ready {
    /// True when the descriptor registered under `token` is ready.
    pub fn has(self, token: Token) -> bool {
        self.0 & token.0 != 0
    }

    /// True when nothing is ready.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// A thread's long-lived wait set: `epoll(7)`, level-triggered, so a descriptor left
/// readable ends the next wait at once, exactly as with `poll(2)`. The registrations stay
/// between waits and are rebuilt only when the descriptors asked for change (the TUN
/// changing hands, a new socket), so a wait is one system call with no per-descriptor
/// setup in the kernel.
#[derive(Debug)]
pub struct Waiter {
    epoll: Epoll,
    /// The descriptors registered and their tokens, in order (inline: one less cold line
    /// per wait).
    registered: [(RawFd, u8); MAX_WAIT],
    count: usize,
    /// The next wait registers its descriptors anew.
    stale: bool,
}

impl Waiter {
    /// An empty wait set.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            registered: [(-1, 0); MAX_WAIT],
            count: 0,
            stale: true,
        })
    }

    /// Makes the next wait register its descriptors anew. Call it when a descriptor may
    /// have been replaced by another that got the same number.
    pub fn reset(&mut self) {
        self.stale = true;
    }

    /// Waits until one of `fds` (at most 8, all distinct, each under its own token) is
    /// readable or `timeout` passes (`None`: no limit).
    pub fn readable(
        &mut self,
        fds: &[(Token, BorrowedFd<'_>)],
        timeout: Option<Duration>,
    ) -> io::Result<Ready> {
        assert!(
            fds.len() <= MAX_WAIT,
            "a Waiter takes at most {MAX_WAIT} descriptors"
        );
        let same = fds
            .iter()
            .map(|(t, fd)| (fd.as_raw_fd(), t.0))
            .eq(self.registered[..self.count].iter().copied());
        if self.stale || !same {
            // A fresh instance: dropping the old one removes every old registration, so
            // nothing stale can keep a wait awake.
            let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
            for (token, fd) in fds {
                epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, u64::from(token.0)))?;
            }
            self.epoll = epoll;
            for (slot, (token, fd)) in self.registered.iter_mut().zip(fds) {
                *slot = (fd.as_raw_fd(), token.0);
            }
            self.count = fds.len();
            self.stale = false;
        }
        // Round up: a wait of 300 µs must not become a busy 0 ms one.
        let timeout = match timeout {
            None => EpollTimeout::NONE,
            Some(t) => {
                let ms = i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
                EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::MAX)
            }
        };
        let mut events = [EpollEvent::empty(); MAX_WAIT];
        match self.epoll.wait(&mut events[..fds.len().max(1)], timeout) {
            Ok(n) => Ok(Ready(
                events[..n].iter().fold(0, |mask, e| mask | e.data() as u8),
            )),
            Err(Errno::EINTR) => Ok(Ready::default()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A one-off wait with `poll(2)` (the doorbell tests; the packet threads use [`Waiter`]).
#[cfg(test)]
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

    const A: Token = Token::new(0);
    const B: Token = Token::new(5);

    #[test]
    fn a_waiter_is_level_triggered_and_names_the_ready_descriptors() {
        let (quiet, rung) = (Doorbell::new().unwrap(), Doorbell::new().unwrap());
        let mut w = Waiter::new().unwrap();
        let set = [(A, quiet.fd()), (B, rung.fd())];
        assert!(w.readable(&set, SHORT).unwrap().is_empty());
        rung.ring();
        // Still readable on the next wait while nobody drains it.
        for _ in 0..3 {
            let ready = w.readable(&set, SHORT).unwrap();
            assert!(ready.has(B) && !ready.has(A), "{ready:?}");
        }
        rung.drain();
        assert!(w.readable(&set, SHORT).unwrap().is_empty());
    }

    #[test]
    fn a_waiter_follows_a_changed_set() {
        let (a, b) = (Doorbell::new().unwrap(), Doorbell::new().unwrap());
        let mut w = Waiter::new().unwrap();
        a.ring();
        assert!(w.readable(&[(A, a.fd())], SHORT).unwrap().has(A));
        // a is no longer asked for: its readiness must not end the wait.
        assert!(w.readable(&[(B, b.fd())], SHORT).unwrap().is_empty());
        b.ring();
        let ready = w.readable(&[(B, b.fd()), (A, a.fd())], SHORT).unwrap();
        assert!(ready.has(A) && ready.has(B));
        // The same descriptors under swapped tokens: the answer follows the tokens.
        a.drain();
        let ready = w.readable(&[(A, b.fd()), (B, a.fd())], SHORT).unwrap();
        assert!(ready.has(A) && !ready.has(B), "{ready:?}");
    }

    #[test]
    fn a_reset_waiter_sees_a_new_descriptor_with_an_old_number() {
        let mut w = Waiter::new().unwrap();
        let old = Doorbell::new().unwrap();
        assert!(w.readable(&[(A, old.fd())], SHORT).unwrap().is_empty());
        let number = old.fd().as_raw_fd();
        drop(old);
        let new = Doorbell::new().unwrap();
        if new.fd().as_raw_fd() == number {
            new.ring();
            w.reset();
            assert!(w.readable(&[(A, new.fd())], SHORT).unwrap().has(A));
        }
        // Otherwise the numbers differ and the set changed anyway.
        new.ring();
        assert!(w.readable(&[(A, new.fd())], SHORT).unwrap().has(A));
    }

    #[test]
    fn a_waiter_wakes_on_stop_from_another_thread() {
        let stop = std::sync::Arc::new(Stop::new().unwrap());
        let waiter = {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut w = Waiter::new().unwrap();
                w.readable(&[(B, stop.fd())], Some(Duration::from_secs(10)))
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        stop.set();
        assert!(waiter.join().unwrap().unwrap().has(B));
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

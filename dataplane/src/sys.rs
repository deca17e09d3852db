//! The crate's only `unsafe`: socket options that socket2 does not wrap, a one-off `poll(2)`
//! (a send waiting for room; the packet threads' own waits are `wake::Waiter`), and owning
//! the descriptors a takeover message brings.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

fn set_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is a live descriptor for the duration of the borrow; the option value
    // points at a c_int that outlives the call, and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Restores Linux's default path-MTU behaviour (`PMTUDISC_WANT`: fragment locally when a
/// datagram exceeds the route MTU) that quinn-udp replaces with "never fragment" (it also
/// sets `IPV6_DONTFRAG`, which an IPv6 socket obeys for IPv4-mapped destinations too).
/// Outer WireGuard datagrams are then treated as kernel WireGuard and wireguard-go treat
/// them: a jumbo inner MTU over a 1500-byte underlay works, fragmented.
pub(crate) fn allow_fragmentation(fd: BorrowedFd<'_>, ipv6: bool) -> io::Result<()> {
    set_int(
        fd,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_WANT,
    )?;
    if ipv6 {
        set_int(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_WANT,
        )?;
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 0)?;
    }
    Ok(())
}

/// Sets both socket buffers to `bytes` past `net.core.{r,w}mem_max` (needs CAP_NET_ADMIN).
pub(crate) fn force_buffers(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, v)?;
    set_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, v)
}

/// Blocks until one of `fds` is readable (or writable, with `writable`), `timeout` passes
/// or a signal interrupts. Returns a mask with bit `i` set when `fds[i]` is ready (or in
/// error); 0 on timeout or interruption. Level-triggered: callers read or write until
/// `WouldBlock` and then wait again.
pub(crate) fn wait(
    fds: &[BorrowedFd<'_>],
    writable: bool,
    timeout: Option<std::time::Duration>,
) -> io::Result<u8> {
    const MAX: usize = 4;
    assert!(fds.len() <= MAX, "wait takes at most {MAX} descriptors");
    let events = if writable {
        libc::POLLOUT
    } else {
        libc::POLLIN
    };
    let mut set = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; MAX];
    for (slot, fd) in set.iter_mut().zip(fds) {
        slot.fd = fd.as_raw_fd();
        slot.events = events;
    }
    // Round up: a wait of 300 µs must not become a busy 0 ms poll.
    let ms = timeout.map_or(-1, |t| {
        libc::c_int::try_from(t.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX)
    });
    // SAFETY: `set` is a live array of `fds.len()` initialised pollfd entries that the
    // kernel may write `revents` into; every descriptor in it is borrowed for the call.
    let rc = unsafe { libc::poll(set.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(e)
        };
    }
    Ok(set[..fds.len()]
        .iter()
        .enumerate()
        .filter(|(_, p)| p.revents != 0)
        .fold(0, |mask, (i, _)| mask | 1 << i))
}

/// Takes ownership of a descriptor the kernel just installed in our table for a received
/// `SCM_RIGHTS` message (see `takeover.rs`).
pub(crate) fn own_received_fd(fd: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd as _;
    // SAFETY: `recvmsg` just created this descriptor for us; nothing else in the process
    // knows its number, so this is its one owner and it is closed exactly once.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// `TUNSETPERSIST`: a persistent TUN device outlives the descriptors attached to it.
pub(crate) fn set_tun_persist(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // _IOW('T', 203, int); the argument is the value itself, not a pointer to it.
    const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
    // SAFETY: `fd` is a live TUN descriptor for the duration of the borrow, and
    // TUNSETPERSIST reads its argument as an integer; no memory is passed.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETPERSIST as _, libc::c_ulong::from(on)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

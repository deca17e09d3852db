//! The channel over which a running process hands its interfaces to its successor (an
//! upgrade without a gap): a Unix stream socket, mode 0600 in a directory of mode 0700,
//! that only root may use (`SO_PEERCRED`). It carries length-prefixed messages, each
//! with the descriptors it hands over attached (`SCM_RIGHTS`). What the messages mean is
//! the caller's business; this module only moves bytes and descriptors.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr, getsockopt, recvmsg, sendmsg,
    sockopt::PeerCredentials,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, Interest};
use tokio::net::{UnixListener, UnixStream};

/// Most descriptors one message carries.
pub const MAX_FDS: usize = 8;

/// Largest message accepted (a configuration of 100 000 peers fits).
const MAX_MESSAGE: usize = 64 << 20;

/// One message: its bytes and the descriptors that came with it.
#[derive(Debug)]
pub struct Message {
    pub data: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// A connection between the running process and its successor.
#[derive(Debug)]
pub struct Channel {
    stream: UnixStream,
}

impl Channel {
    /// Sends `data` with `fds` attached.
    pub async fn send(&mut self, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if fds.len() > MAX_FDS || data.len() > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "message too large for the takeover channel",
            ));
        }
        let header = (data.len() as u32).to_le_bytes();
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let fd = self.stream.as_raw_fd();
        // The descriptors travel with the first bytes; whatever `sendmsg` did not take
        // follows as plain stream data.
        let sent = self
            .stream
            .async_io(Interest::WRITABLE, || {
                let iov = [IoSlice::new(&header), IoSlice::new(data)];
                let cmsg = [ControlMessage::ScmRights(&raw)];
                let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
                sendmsg::<UnixAddr>(fd, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
                    .map_err(io::Error::from)
            })
            .await?;
        let total = header.len() + data.len();
        if sent < header.len() {
            self.stream.write_all(&header[sent..]).await?;
            self.stream.write_all(data).await?;
        } else if sent < total {
            self.stream.write_all(&data[sent - header.len()..]).await?;
        }
        Ok(())
    }

    /// Receives the next message; `UnexpectedEof` when the other side closed.
    pub async fn recv(&mut self) -> io::Result<Message> {
        let mut header = [0u8; 4];
        let mut got = 0;
        let mut fds = Vec::new();
        let fd = self.stream.as_raw_fd();
        while got < header.len() {
            let n = self
                .stream
                .async_io(Interest::READABLE, || {
                    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
                    let mut iov = [IoSliceMut::new(&mut header[got..])];
                    let msg = recvmsg::<UnixAddr>(
                        fd,
                        &mut iov,
                        Some(&mut space),
                        MsgFlags::MSG_CMSG_CLOEXEC,
                    )
                    .map_err(io::Error::from)?;
                    // Own what arrived before anything can fail, so nothing leaks.
                    for c in msg.cmsgs().map_err(io::Error::from)? {
                        if let ControlMessageOwned::ScmRights(list) = c {
                            fds.extend(list.into_iter().map(crate::sys::own_received_fd));
                        }
                    }
                    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "too many descriptors in one takeover message",
                        ));
                    }
                    Ok(msg.bytes)
                })
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            got += n;
        }
        let len = u32::from_le_bytes(header) as usize;
        if len > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("takeover message of {len} bytes refused"),
            ));
        }
        let mut data = vec![0u8; len];
        self.stream.read_exact(&mut data).await?;
        Ok(Message { data, fds })
    }
}

/// Connects to the process serving `path`. `None` when nobody serves it (no socket, or
/// a socket left by a process that is gone): start afresh.
pub async fn connect(path: &Path) -> io::Result<Option<Channel>> {
    connect_to(path, ROOT).await
}

async fn connect_to(path: &Path, uid: u32) -> io::Result<Option<Channel>> {
    match UnixStream::connect(path).await {
        Ok(stream) => {
            check_peer(&stream, uid)?;
            Ok(Some(Channel { stream }))
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Where a process waits for its successor.
#[derive(Debug)]
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
    inode: u64,
}

impl Listener {
    /// Binds `path` (replacing a socket file left there), in a parent directory created
    /// or narrowed to mode 0700; the socket gets mode 0600.
    pub fn bind(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let inode = std::fs::metadata(path)?.ino();
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            inode,
        })
    }

    /// The next connection from root; others are turned away with an error (the caller
    /// logs it and goes on accepting).
    pub async fn accept(&self) -> io::Result<Channel> {
        self.accept_from(ROOT).await
    }

    async fn accept_from(&self, uid: u32) -> io::Result<Channel> {
        let (stream, _) = self.listener.accept().await?;
        check_peer(&stream, uid)?;
        Ok(Channel { stream })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // A successor binds its own socket at the same path: leave that one alone.
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Only root may hand over or take over interfaces.
const ROOT: u32 = 0;

/// The process at the other end must run as `uid` (root outside tests).
fn check_peer(stream: &UnixStream, uid: u32) -> io::Result<()> {
    let cred = getsockopt(stream, PeerCredentials).map_err(io::Error::from)?;
    if cred.uid() == uid {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "takeover socket: the process at the other end (pid {}, uid {}) is not root",
                cred.pid(),
                cred.uid()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Seek as _, Write as _};
    use std::os::fd::AsFd as _;

    use super::*;

    fn temp_socket(tag: &str) -> PathBuf {
        std::env::temp_dir()
            .join(format!("swg-takeover-{tag}-{}", std::process::id()))
            .join("agent.sock")
    }

    #[tokio::test]
    async fn messages_carry_descriptors_both_ways() {
        let path = temp_socket("fds");
        let listener = Listener::bind(&path).unwrap();
        let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777;
        let sock_mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!((dir_mode, sock_mode), (0o700, 0o600));
        let me = uid();
        let server = tokio::spawn(async move {
            let mut ch = listener.accept_from(me).await.unwrap();
            let m = ch.recv().await.unwrap();
            assert_eq!(m.data, b"hello");
            assert!(m.fds.is_empty());
            let mut file = tempfile();
            file.write_all(b"handed over").unwrap();
            let big = vec![7u8; 3 << 20];
            ch.send(&big, &[file.as_fd()]).await.unwrap();
            ch.recv().await.unwrap()
        });
        let mut ch = connect_to(&path, me)
            .await
            .unwrap()
            .expect("someone listens");
        ch.send(b"hello", &[]).await.unwrap();
        let m = ch.recv().await.unwrap();
        assert_eq!(
            m.data.len(),
            3 << 20,
            "a message larger than the socket buffer"
        );
        assert!(m.data.iter().all(|&b| b == 7));
        assert_eq!(m.fds.len(), 1);
        let mut file = std::fs::File::from(m.fds.into_iter().next().unwrap());
        file.rewind().unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "handed over", "the descriptor is the same open file");
        ch.send(b"done", &[]).await.unwrap();
        assert_eq!(server.await.unwrap().data, b"done");
        drop(ch);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn nobody_listening_means_start_afresh() {
        let path = temp_socket("none");
        assert!(
            connect_to(&path, uid()).await.unwrap().is_none(),
            "no socket file"
        );
        let listener = Listener::bind(&path).unwrap();
        drop(listener);
        assert!(!path.exists(), "the listener removes its own socket");
        // A socket file whose process is gone.
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        assert!(
            connect_to(&path, uid()).await.unwrap().is_none(),
            "a stale socket file"
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn a_successors_socket_survives_its_predecessor() {
        let path = temp_socket("succ");
        let old = Listener::bind(&path).unwrap();
        let new = Listener::bind(&path).unwrap();
        drop(old);
        assert!(path.exists(), "the old listener left the new socket alone");
        drop(new);
        assert!(!path.exists());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    fn tempfile() -> std::fs::File {
        let path = std::env::temp_dir().join(format!("swg-takeover-file-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    /// The tests' own uid stands in for root, so that they run unprivileged too.
    fn uid() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[tokio::test]
    async fn another_user_is_turned_away_both_ways() {
        let path = temp_socket("uid");
        let listener = Listener::bind(&path).unwrap();
        let other = uid().wrapping_add(1);
        let server = tokio::spawn(async move { listener.accept_from(other).await.map(|_| ()) });
        let client = connect_to(&path, other).await.unwrap_err();
        assert_eq!(client.kind(), io::ErrorKind::PermissionDenied, "{client}");
        // The client connected before checking, so the server saw it too.
        let served = server.await.unwrap().unwrap_err();
        assert_eq!(served.kind(), io::ErrorKind::PermissionDenied, "{served}");
        assert!(served.to_string().contains("is not root"), "{served}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}

//! The UAPI socket: `/var/run/wireguard/<ifname>.sock`, mode 0600, served until the
//! server is dropped (which removes the socket if it is still ours). Several requests per
//! connection; garbage gets an `errno=` answer, never a crash.
//!
//! Bounded under abuse: requests are parsed line by line as they arrive (memory follows
//! what a request asks for, within `command::MAX_PEERS` and `MAX_ALLOWED_IPS`), at most
//! [`MAX_CONNECTIONS`] are served at once (more wait in the listen backlog), a connection
//! idle for [`IDLE`] is closed, and applying a `set` runs on a blocking thread, never on
//! the tokio workers that run the tick. Refusals are logged with the key at fault, never
//! with a line of the request (it may hold a private key).

pub mod command;
pub mod merge;
pub mod text;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::status::Device;
use command::{EINVAL, EIO, Request, RequestParser, UapiError};

/// Where `wg` looks for userspace interfaces.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// Longest accepted line; a longer one closes the connection.
const MAX_LINE: u64 = 4096;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection that sends nothing for this long is closed.
pub const IDLE: Duration = Duration::from_secs(10);

/// The socket path for interface `name` under `dir`.
pub fn socket_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.sock"))
}

/// A listening UAPI socket.
pub struct UapiServer {
    path: PathBuf,
    inode: u64,
    task: JoinHandle<()>,
}

impl UapiServer {
    /// Listens on `<dir>/<device name>.sock`. Fails if another live process serves it;
    /// a stale socket file is replaced.
    pub async fn bind(dir: &Path, device: Arc<dyn Device>) -> Result<Self, Error> {
        let path = socket_path(dir, device.name());
        let err = |source: std::io::Error| Error::Uapi {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        if UnixStream::connect(&path).await.is_ok() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another process serves this interface",
            )));
        }
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(err)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        let inode = std::fs::metadata(&path).map_err(err)?.ino();
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let task = tokio::spawn(async move {
            loop {
                // Wait for a free slot before accepting: extra clients wait in the backlog.
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let device = Arc::clone(&device);
                        tokio::spawn(async move {
                            if let Err(e) = serve(stream, Arc::clone(&device)).await {
                                tracing::debug!(device = device.name(), error = %e, "UAPI connection ended");
                            }
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "UAPI accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(Self { path, inode, task })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True once the socket file is gone or replaced (`wg-quick down` deletes it to stop
    /// a userspace interface).
    pub fn is_deleted(&self) -> bool {
        std::fs::metadata(&self.path)
            .map(|m| m.ino() != self.inode)
            .unwrap_or(true)
    }
}

impl Drop for UapiServer {
    fn drop(&mut self) {
        self.task.abort();
        if !self.is_deleted() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Serves requests on one connection until it closes or stays idle for [`IDLE`].
pub async fn serve(stream: UnixStream, device: Arc<dyn Device>) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut buf = Vec::with_capacity(256);
    loop {
        let mut parser = RequestParser::new();
        let mut lines = 0usize;
        // Read one request: lines up to an empty line.
        loop {
            buf.clear();
            let mut limited = (&mut reader).take(MAX_LINE);
            let read = limited.read_until(b'\n', &mut buf);
            let Ok(n) = tokio::time::timeout(IDLE, read).await else {
                return Ok(());
            };
            let n = n?;
            if n == 0 {
                return Ok(());
            }
            if buf.last() != Some(&b'\n') {
                if n as u64 >= MAX_LINE {
                    return refuse(reader, w).await;
                }
                return Ok(());
            }
            buf.pop();
            if buf.is_empty() {
                break;
            }
            lines += 1;
            parser.line(&String::from_utf8_lossy(&buf));
        }
        if lines == 0 {
            continue;
        }
        let device = Arc::clone(&device);
        let reply = tokio::task::spawn_blocking(move || answer(&*device, parser.finish()))
            .await
            .unwrap_or_else(|_| format!("errno={EIO}\n\n"));
        w.write_all(reply.as_bytes()).await?;
    }
}

/// Answers a request that broke the framing limits with `EPROTO` and closes, draining
/// (briefly) what the client still sends so the answer is not lost to a reset.
async fn refuse(
    mut reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    mut w: tokio::net::unix::OwnedWriteHalf,
) -> std::io::Result<()> {
    w.write_all(b"errno=71\n\n").await?;
    w.shutdown().await?;
    let mut limited = (&mut reader).take(1 << 20);
    let mut sink = tokio::io::sink();
    let drain = tokio::io::copy(&mut limited, &mut sink);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
    Ok(())
}

/// Answers one request (already split into lines) with the full response text.
pub fn handle(device: &dyn Device, lines: &[String]) -> String {
    let mut parser = RequestParser::new();
    for line in lines {
        parser.line(line);
    }
    answer(device, parser.finish())
}

/// The full response text to a parsed request.
fn answer(device: &dyn Device, request: Result<Request, UapiError>) -> String {
    let result = request.and_then(|req| match req {
        Request::Get => Ok(text::format_get(&device.status())),
        Request::Set(set) => device
            .update(
                &mut |cfg| {
                    merge::merge_set(cfg, &set);
                    Ok(())
                },
                &set.peers
                    .iter()
                    .filter(|p| p.endpoint.is_some())
                    .map(|p| p.public_key)
                    .collect::<Vec<_>>(),
            )
            .map(|()| String::new())
            .map_err(UapiError::from),
    });
    match result {
        Ok(mut body) => {
            body.push_str("errno=0\n\n");
            body
        }
        Err(e) => {
            tracing::info!(device = device.name(), error = %e, "UAPI request refused");
            let errno = if e.errno == 0 { EINVAL } else { e.errno };
            format!("errno={errno}\n\n")
        }
    }
}

#[cfg(test)]
mod tests;

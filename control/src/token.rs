//! Bearer token from a file for remote API servers: trimmed (as the original did), and
//! re-read whenever the file's modification time changes, so projected service-account
//! tokens keep working as kubelet rotates them.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use http::{HeaderValue, Request, header::AUTHORIZATION};
use tower::{Layer, Service};

#[derive(Debug, Default)]
struct Cached {
    modified: Option<SystemTime>,
    header: Option<HeaderValue>,
}

/// Reads and caches the token file.
#[derive(Clone, Debug)]
pub struct TokenFile {
    path: PathBuf,
    cached: Arc<Mutex<Cached>>,
}

impl TokenFile {
    /// Reads `path` once to check it holds a usable token.
    pub fn open(path: impl Into<PathBuf>) -> std::io::Result<Self> {
        let t = Self {
            path: path.into(),
            cached: Arc::default(),
        };
        t.header().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no usable bearer token in the file",
            )
        })?;
        Ok(t)
    }

    /// The `Authorization` value, re-reading the file if it changed. On a read error the
    /// last good token is kept.
    pub fn header(&self) -> Option<HeaderValue> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut c = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if c.header.is_none() || (modified.is_some() && modified != c.modified) {
            match std::fs::read_to_string(&self.path) {
                Ok(text) => match HeaderValue::from_str(&format!("Bearer {}", text.trim())) {
                    Ok(mut v) if !text.trim().is_empty() => {
                        v.set_sensitive(true);
                        if c.header.is_some() {
                            tracing::info!(path = %self.path.display(), "bearer token file changed; using the new token");
                        }
                        c.header = Some(v);
                        c.modified = modified;
                    }
                    _ => {
                        tracing::warn!(path = %self.path.display(), "bearer token file holds no usable token; keeping the last one")
                    }
                },
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot read the bearer token file; keeping the last token")
                }
            }
        }
        c.header.clone()
    }
}

/// Adds the file's token to every request.
#[derive(Clone, Debug)]
pub struct TokenLayer(pub TokenFile);

impl<S> Layer<S> for TokenLayer {
    type Service = WithToken<S>;
    fn layer(&self, inner: S) -> WithToken<S> {
        WithToken {
            inner,
            token: self.0.clone(),
        }
    }
}

/// The service adding the header.
#[derive(Clone, Debug)]
pub struct WithToken<S> {
    inner: S,
    token: TokenFile,
}

impl<S, B> Service<Request<B>> for WithToken<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(v) = self.token.header() {
            req.headers_mut().insert(AUTHORIZATION, v);
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_and_reloaded_on_change() {
        let path = std::env::temp_dir().join(format!("swg-token-{}", std::process::id()));
        std::fs::write(&path, "abc\n").unwrap();
        let t = TokenFile::open(&path).unwrap();
        assert_eq!(t.header().unwrap(), "Bearer abc");
        // A different mtime (set explicitly: the clock may not tick between writes).
        std::fs::write(&path, "def").unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        assert_eq!(t.header().unwrap(), "Bearer def");
        // Unreadable or empty: the last token stays.
        std::fs::write(&path, "").unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() + std::time::Duration::from_secs(10))
            .unwrap();
        assert_eq!(t.header().unwrap(), "Bearer def");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(t.header().unwrap(), "Bearer def");
        assert!(TokenFile::open("/nonexistent/token").is_err());
    }
}

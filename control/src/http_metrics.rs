//! Counts every Kubernetes API request by host, status code and method, for
//! `semaphore_wg_kube_http_request_total` (client-go's request-result adapter in the
//! original), and times it (to the response's headers) by host and method, for the
//! service mirror's `…_kube_http_request_duration_seconds`. A tower layer on each
//! `kube::Client`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use tower::{Layer, Service};

use crate::histogram::Histogram;

/// `(host, code, method)`.
pub type RequestKey = (String, String, String);

/// `(host, code, method)` → requests, and `(host, method)` → their latencies.
#[derive(Clone, Default, Debug)]
pub struct RequestCounts(Arc<Mutex<BTreeMap<RequestKey, u64>>>, Durations);

type Durations = Arc<Mutex<BTreeMap<(String, String), Histogram>>>;

impl RequestCounts {
    fn add(&self, host: &str, code: String, method: String, took: Duration) {
        {
            let mut d = self.1.lock().unwrap_or_else(|e| e.into_inner());
            d.entry((host.to_string(), method.clone()))
                .or_default()
                .observe(took.as_secs_f64());
        }
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((host.to_string(), code, method)).or_default() += 1;
    }

    /// A copy of the latencies by `(host, method)`.
    pub fn durations(&self) -> Vec<((String, String), Histogram)> {
        self.1
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> Vec<(RequestKey, u64)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// Wraps a client's service so that every request is counted under `host`.
#[derive(Clone, Debug)]
pub struct CountingLayer {
    host: String,
    counts: RequestCounts,
}

impl CountingLayer {
    /// Counts into `counts` under `host` (the API server's `host:port`).
    pub fn new(host: impl Into<String>, counts: RequestCounts) -> Self {
        Self {
            host: host.into(),
            counts,
        }
    }
}

impl<S> Layer<S> for CountingLayer {
    type Service = Counting<S>;
    fn layer(&self, inner: S) -> Counting<S> {
        Counting {
            inner,
            host: Arc::from(self.host.as_str()),
            counts: self.counts.clone(),
        }
    }
}

/// The counting service.
#[derive(Clone, Debug)]
pub struct Counting<S> {
    inner: S,
    host: Arc<str>,
    counts: RequestCounts,
}

type BoxFut<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> Service<Request<B>> for Counting<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFut<Response<R>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let method = req.method().to_string();
        let start = Instant::now();
        let fut = self.inner.call(req);
        let (host, counts) = (Arc::clone(&self.host), self.counts.clone());
        Box::pin(async move {
            let result = fut.await;
            let code = match &result {
                Ok(resp) => resp.status().as_u16().to_string(),
                Err(_) => "<error>".to_string(),
            };
            counts.add(&host, code, method, start.elapsed());
            result
        })
    }
}

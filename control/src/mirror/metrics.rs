//! The service mirror's metrics, under the original's names: per watcher, the objects it
//! holds and the events it saw; per work queue, client-go's queue metrics; the API
//! requests (counted and timed by `http_metrics.rs`); and this mirror's own counters of
//! local objects created, updated, deleted and refused, per runner. Rendered in the
//! Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::queue::WorkQueue;
use crate::histogram::escape;
use crate::http_metrics::RequestCounts;

/// Counters of one runner's writes.
#[derive(Debug, Default)]
pub struct MirrorStatus {
    /// Local copies created.
    pub created: AtomicU64,
    /// Local copies updated.
    pub updated: AtomicU64,
    /// Local copies deleted (source gone, or stale at start).
    pub deleted: AtomicU64,
    /// Sources whose local name would be over 63 characters.
    pub refused_names: AtomicU64,
}

/// What a watcher saw: `ADDED`, `MODIFIED` or `DELETED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WatchEvent {
    /// A new object.
    Added,
    /// A changed object (or, at a relist, one still there).
    Modified,
    /// An object gone.
    Deleted,
}

impl WatchEvent {
    fn as_str(self) -> &'static str {
        match self {
            WatchEvent::Added => "ADDED",
            WatchEvent::Modified => "MODIFIED",
            WatchEvent::Deleted => "DELETED",
        }
    }
}

/// `(watcher, kind, runner)`.
type WatcherKey = (String, &'static str, String);

#[derive(Debug, Default)]
struct WatcherSeries {
    objects: usize,
    events: BTreeMap<WatchEvent, u64>,
}

/// Every series of the mirror process.
#[derive(Default)]
pub struct MirrorMetrics {
    /// The API requests of every client (local and remote).
    pub requests: RequestCounts,
    runners: Mutex<Vec<(String, Arc<MirrorStatus>)>>,
    queues: Mutex<Vec<(String, Arc<WorkQueue>)>>,
    watchers: Mutex<BTreeMap<WatcherKey, WatcherSeries>>,
}

/// One runner's handle on the metrics (`mirror-<remote>`, `global-<cluster>`).
#[derive(Clone)]
pub struct RunnerMetrics {
    /// The runner's name (the `runner` label).
    pub name: String,
    /// Its write counters.
    pub status: Arc<MirrorStatus>,
    metrics: Arc<MirrorMetrics>,
}

/// One watcher's handle.
pub struct WatcherMetrics {
    key: WatcherKey,
    metrics: Arc<MirrorMetrics>,
}

impl WatcherMetrics {
    /// Records `events` seen, the watcher now holding `objects`.
    pub fn saw(&self, events: impl IntoIterator<Item = WatchEvent>, objects: usize) {
        let mut w = lock(&self.metrics.watchers);
        let series = w.entry(self.key.clone()).or_default();
        for e in events {
            *series.events.entry(e).or_default() += 1;
        }
        series.objects = objects;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MirrorMetrics {
    /// The handle of runner `name`; its counters appear at once.
    pub fn runner(self: &Arc<Self>, name: impl Into<String>) -> RunnerMetrics {
        let (name, status) = (name.into(), Arc::new(MirrorStatus::default()));
        lock(&self.runners).push((name.clone(), Arc::clone(&status)));
        RunnerMetrics {
            name,
            status,
            metrics: Arc::clone(self),
        }
    }

    /// Renders every series.
    pub fn render(&self, out: &mut String) {
        self.render_requests(out);
        self.render_watchers(out);
        self.render_queues(out);
        self.render_runners(out);
    }

    fn render_requests(&self, out: &mut String) {
        header(
            out,
            "kube_http_request_total",
            "counter",
            "Total number of HTTP requests to the Kubernetes API by host, code and method",
        );
        for ((host, code, method), n) in self.requests.snapshot() {
            let _ = writeln!(
                out,
                "semaphore_service_mirror_kube_http_request_total{{host=\"{}\",code=\"{}\",method=\"{}\"}} {n}",
                escape(&host),
                escape(&code),
                escape(&method)
            );
        }
        header(
            out,
            "kube_http_request_duration_seconds",
            "histogram",
            "Histogram of latencies for HTTP requests to the Kubernetes API by host and method",
        );
        for ((host, method), h) in self.requests.durations() {
            let labels = format!("host=\"{}\",method=\"{}\"", escape(&host), escape(&method));
            h.render(
                out,
                "semaphore_service_mirror_kube_http_request_duration_seconds",
                &labels,
            );
        }
    }

    fn render_watchers(&self, out: &mut String) {
        let w = lock(&self.watchers);
        header(
            out,
            "kube_watcher_objects",
            "gauge",
            "Number of objects in the watcher's cache, by watcher, kind and runner",
        );
        for ((watcher, kind, runner), s) in w.iter() {
            let _ = writeln!(
                out,
                "semaphore_service_mirror_kube_watcher_objects{{watcher=\"{}\",kind=\"{kind}\",runner=\"{}\"}} {}",
                escape(watcher),
                escape(runner),
                s.objects
            );
        }
        // A gauge, as in the original, despite the name.
        header(
            out,
            "kube_watcher_events_total",
            "gauge",
            "Number of events the watcher saw, by watcher, kind, event type and runner",
        );
        for ((watcher, kind, runner), s) in w.iter() {
            for (event, n) in &s.events {
                let _ = writeln!(
                    out,
                    "semaphore_service_mirror_kube_watcher_events_total{{watcher=\"{}\",kind=\"{kind}\",event_type=\"{}\",runner=\"{}\"}} {n}",
                    escape(watcher),
                    event.as_str(),
                    escape(runner)
                );
            }
        }
    }

    fn render_queues(&self, out: &mut String) {
        let queues = lock(&self.queues).clone();
        type Value = fn(&WorkQueue) -> f64;
        let simple: [(&str, &str, &str, Value); 6] = [
            (
                "queue_depth",
                "gauge",
                "Current depth of the work queue",
                |q| q.depth() as f64,
            ),
            (
                "queue_adds_total",
                "counter",
                "Total number of items added to the work queue",
                |q| q.adds() as f64,
            ),
            (
                "queue_retries_total",
                "counter",
                "Total number of retries handled by the work queue",
                |q| q.retries() as f64,
            ),
            (
                "queue_requeued_items",
                "gauge",
                "Items that failed and have not been reconciled successfully since",
                |q| q.requeued() as f64,
            ),
            (
                "queue_unfinished_work_seconds",
                "gauge",
                "Seconds of work in progress that has not been observed by work_duration",
                |q| q.in_progress().0,
            ),
            (
                "queue_longest_running_processor_seconds",
                "gauge",
                "Seconds the longest running processor has been running",
                |q| q.in_progress().1,
            ),
        ];
        for (name, kind, help, value) in simple {
            header(out, name, kind, help);
            for (queue, q) in &queues {
                let _ = writeln!(
                    out,
                    "semaphore_service_mirror_{name}{{name=\"{}\"}} {}",
                    escape(queue),
                    value(q)
                );
            }
        }
        type Hist = fn(&WorkQueue) -> crate::histogram::Histogram;
        let histograms: [(&str, &str, Hist); 2] = [
            (
                "queue_latency_duration_seconds",
                "How long an item stays in the work queue before being processed",
                WorkQueue::latency,
            ),
            (
                "queue_work_duration_seconds",
                "How long processing an item from the work queue takes",
                WorkQueue::work_durations,
            ),
        ];
        for (name, help, get) in histograms {
            header(out, name, "histogram", help);
            for (queue, q) in &queues {
                get(q).render(
                    out,
                    &format!("semaphore_service_mirror_{name}"),
                    &format!("name=\"{}\"", escape(queue)),
                );
            }
        }
    }

    fn render_runners(&self, out: &mut String) {
        let runners = lock(&self.runners).clone();
        type Count = fn(&MirrorStatus) -> u64;
        let counters: [(&str, &str, Count); 4] = [
            ("created", "Local objects created", |s| {
                s.created.load(Relaxed)
            }),
            ("updated", "Local objects updated", |s| {
                s.updated.load(Relaxed)
            }),
            ("deleted", "Local objects deleted", |s| {
                s.deleted.load(Relaxed)
            }),
            (
                "refused_names",
                "Sources not mirrored because the local name would be over 63 characters",
                |s| s.refused_names.load(Relaxed),
            ),
        ];
        for (name, help, get) in counters {
            header(
                out,
                &format!("objects_{name}_total"),
                "counter",
                &format!("{help}, by runner"),
            );
            for (runner, s) in &runners {
                let _ = writeln!(
                    out,
                    "semaphore_service_mirror_objects_{name}_total{{runner=\"{}\"}} {}",
                    escape(runner),
                    get(s)
                );
            }
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP semaphore_service_mirror_{name} {help}\n# TYPE semaphore_service_mirror_{name} {kind}"
    );
}

impl RunnerMetrics {
    /// A new work queue named `name`, its series present from now on.
    pub fn queue(&self, name: impl Into<String>) -> Arc<WorkQueue> {
        let q = Arc::new(WorkQueue::new());
        lock(&self.metrics.queues).push((name.into(), Arc::clone(&q)));
        q
    }

    /// The handle of this runner's watcher `watcher` of `kind` objects.
    pub fn watcher(&self, watcher: impl Into<String>, kind: &'static str) -> WatcherMetrics {
        WatcherMetrics {
            key: (watcher.into(), kind, self.name.clone()),
            metrics: Arc::clone(&self.metrics),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_of_the_original_is_rendered_with_its_type() {
        let metrics = Arc::new(MirrorMetrics::default());
        let runner = metrics.runner("mirror-a");
        let q = runner.queue("a-service");
        q.add("foo/bar");
        runner
            .watcher("a-serviceWatcher", "service")
            .saw([WatchEvent::Added, WatchEvent::Added], 2);
        runner
            .watcher("a-serviceWatcher", "service")
            .saw([WatchEvent::Deleted], 1);
        runner.status.created.fetch_add(3, Relaxed);
        let mut out = String::new();
        metrics.render(&mut out);
        for (name, kind) in [
            ("kube_http_request_total", "counter"),
            ("kube_http_request_duration_seconds", "histogram"),
            ("kube_watcher_objects", "gauge"),
            ("kube_watcher_events_total", "gauge"),
            ("queue_depth", "gauge"),
            ("queue_adds_total", "counter"),
            ("queue_latency_duration_seconds", "histogram"),
            ("queue_work_duration_seconds", "histogram"),
            ("queue_unfinished_work_seconds", "gauge"),
            ("queue_longest_running_processor_seconds", "gauge"),
            ("queue_retries_total", "counter"),
            ("queue_requeued_items", "gauge"),
        ] {
            assert!(
                out.contains(&format!("# TYPE semaphore_service_mirror_{name} {kind}\n")),
                "{name}: {out}"
            );
        }
        for line in [
            "semaphore_service_mirror_kube_watcher_objects{watcher=\"a-serviceWatcher\",kind=\"service\",runner=\"mirror-a\"} 1",
            "semaphore_service_mirror_kube_watcher_events_total{watcher=\"a-serviceWatcher\",kind=\"service\",event_type=\"ADDED\",runner=\"mirror-a\"} 2",
            "semaphore_service_mirror_kube_watcher_events_total{watcher=\"a-serviceWatcher\",kind=\"service\",event_type=\"DELETED\",runner=\"mirror-a\"} 1",
            "semaphore_service_mirror_queue_depth{name=\"a-service\"} 1",
            "semaphore_service_mirror_queue_adds_total{name=\"a-service\"} 1",
            "semaphore_service_mirror_queue_requeued_items{name=\"a-service\"} 0",
            "semaphore_service_mirror_queue_latency_duration_seconds_count{name=\"a-service\"} 0",
            "semaphore_service_mirror_objects_created_total{runner=\"mirror-a\"} 3",
        ] {
            assert!(out.contains(&format!("{line}\n")), "{line}: {out}");
        }
    }
}

//! A keyed work queue, as client-go's rate-limited workqueue behaves for the original's
//! reconcilers: a key waits at most once (adding it again while it waits does nothing);
//! a key added while it is being processed is processed once more afterwards, never twice
//! at once; a failed key comes back after 5 ms × 2^failures, capped at 1000 s, until it
//! succeeds. One worker takes keys with [`WorkQueue::next`] and reports with
//! [`WorkQueue::done`]. It keeps client-go's queue metrics: adds (a key already waiting is
//! not added again), depth, retries, keys failing, time waited, time worked, and the work
//! in progress.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::histogram::Histogram;

/// First retry delay.
pub const BASE_DELAY: Duration = Duration::from_millis(5);
/// Longest retry delay.
pub const MAX_DELAY: Duration = Duration::from_secs(1000);

#[derive(Default)]
struct State {
    ready: VecDeque<String>,
    waiting: HashSet<String>,
    processing: HashSet<String>,
    dirty: HashSet<String>,
    failures: HashMap<String, u32>,
    later: BTreeMap<(Instant, u64), String>,
    seq: u64,
    adds: u64,
    retries: u64,
    queued_at: HashMap<String, Instant>,
    started_at: HashMap<String, Instant>,
    latency: Histogram,
    work: Histogram,
}

/// The queue (shared by reference between the event handlers and the worker).
#[derive(Default)]
pub struct WorkQueue {
    state: Mutex<State>,
    wake: Notify,
}

/// How a key's processing ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done: its retry delay resets.
    Success,
    /// Failed: it comes back after its next retry delay.
    Retry,
}

impl WorkQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `key` now.
    pub fn add(&self, key: &str) {
        let mut s = self.state();
        Self::enqueue(&mut s, key);
        drop(s);
        self.wake.notify_one();
    }

    fn enqueue(s: &mut State, key: &str) {
        let added = if s.processing.contains(key) {
            s.dirty.insert(key.to_string())
        } else if s.waiting.insert(key.to_string()) {
            s.ready.push_back(key.to_string());
            true
        } else {
            false
        };
        if added {
            s.adds += 1;
            s.queued_at
                .entry(key.to_string())
                .or_insert_with(Instant::now);
        }
    }

    /// The next key to process, waiting for one (keys due for a retry become ready when
    /// their delay has passed).
    pub async fn next(&self) -> String {
        loop {
            let wait_until = {
                let mut s = self.state();
                let now = Instant::now();
                while let Some(entry) = s.later.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let key = entry.remove();
                    Self::enqueue(&mut s, &key);
                }
                if let Some(key) = s.ready.pop_front() {
                    s.waiting.remove(&key);
                    s.processing.insert(key.clone());
                    if let Some(t) = s.queued_at.remove(&key) {
                        s.latency.observe((now - t).as_secs_f64());
                    }
                    s.started_at.insert(key.clone(), now);
                    return key;
                }
                s.later.first_key_value().map(|((t, _), _)| *t)
            };
            match wait_until {
                Some(t) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(t) => {}
                        _ = self.wake.notified() => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }

    /// Reports the key from [`WorkQueue::next`]; returns the delay of a retry.
    pub fn done(&self, key: &str, outcome: Outcome) -> Option<Duration> {
        let mut s = self.state();
        s.processing.remove(key);
        if let Some(t) = s.started_at.remove(key) {
            s.work.observe(t.elapsed().as_secs_f64());
        }
        let delay = match outcome {
            Outcome::Success => {
                s.failures.remove(key);
                None
            }
            Outcome::Retry => {
                let n = s.failures.entry(key.to_string()).or_insert(0);
                let delay = BASE_DELAY
                    .checked_mul(1u32.checked_shl(*n).unwrap_or(u32::MAX))
                    .unwrap_or(MAX_DELAY)
                    .min(MAX_DELAY);
                *n = n.saturating_add(1);
                s.retries += 1;
                s.seq += 1;
                let seq = s.seq;
                s.later
                    .insert((Instant::now() + delay, seq), key.to_string());
                Some(delay)
            }
        };
        // Added while it was processed: it waits again (counted when it was added).
        if s.dirty.remove(key) && s.waiting.insert(key.to_string()) {
            s.ready.push_back(key.to_string());
        }
        drop(s);
        self.wake.notify_one();
        delay
    }

    /// Keys waiting now (ready, not those due later).
    pub fn depth(&self) -> usize {
        self.state().ready.len()
    }

    /// Keys that failed and have not succeeded since.
    pub fn requeued(&self) -> usize {
        self.state().failures.len()
    }

    /// Keys added, in total.
    pub fn adds(&self) -> u64 {
        self.state().adds
    }

    /// Retries scheduled, in total.
    pub fn retries(&self) -> u64 {
        self.state().retries
    }

    /// How long keys waited before a worker took them.
    pub fn latency(&self) -> Histogram {
        self.state().latency.clone()
    }

    /// How long each key's processing took.
    pub fn work_durations(&self) -> Histogram {
        self.state().work.clone()
    }

    /// Seconds of work in progress (summed over keys being processed), and the longest.
    pub fn in_progress(&self) -> (f64, f64) {
        let s = self.state();
        let now = Instant::now();
        s.started_at
            .values()
            .map(|t| (now - *t).as_secs_f64())
            .fold((0.0, 0.0), |(sum, max), d| (sum + d, f64::max(max, d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn dedup_dirty_and_backoff() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.depth(), 2, "a waits once");
        assert_eq!(q.next().await, "a");
        // Added while processing: once more afterwards, not twice at once.
        q.add("a");
        assert_eq!(q.next().await, "b");
        assert_eq!(q.done("a", Outcome::Success), None);
        assert_eq!(q.next().await, "a");
        q.done("b", Outcome::Success);
        // Failures back off 5 ms, 10 ms, 20 ms …
        let t0 = Instant::now();
        assert_eq!(q.done("a", Outcome::Retry), Some(Duration::from_millis(5)));
        assert_eq!(q.requeued(), 1);
        assert_eq!(q.next().await, "a");
        assert_eq!(t0.elapsed(), Duration::from_millis(5));
        assert_eq!(q.done("a", Outcome::Retry), Some(Duration::from_millis(10)));
        assert_eq!(q.next().await, "a");
        assert_eq!(q.done("a", Outcome::Retry), Some(Duration::from_millis(20)));
        // A key added meanwhile goes first; the retry comes when due.
        q.add("c");
        assert_eq!(q.next().await, "c");
        q.done("c", Outcome::Success);
        assert_eq!(q.next().await, "a");
        assert_eq!(q.done("a", Outcome::Success), None);
        assert_eq!(q.requeued(), 0);
        assert_eq!(q.retries(), 3);
        // a, b, a again while processing, three retries of a, c; not the duplicate add.
        assert_eq!(q.adds(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_and_working_are_timed() {
        let q = WorkQueue::new();
        q.add("a");
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(q.next().await, "a");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(q.in_progress(), (2.0, 2.0));
        q.done("a", Outcome::Success);
        assert_eq!(q.in_progress(), (0.0, 0.0));
        let (mut waited, mut worked) = (String::new(), String::new());
        q.latency().render(&mut waited, "l", "");
        q.work_durations().render(&mut worked, "w", "");
        assert!(
            waited.contains("l_bucket{le=\"0.25\"} 0\n")
                && waited.contains("l_bucket{le=\"0.5\"} 1\n"),
            "{waited}"
        );
        assert!(
            worked.contains("w_bucket{le=\"1\"} 0\n")
                && worked.contains("w_bucket{le=\"2.5\"} 1\n"),
            "{worked}"
        );
    }

    #[test]
    fn the_delay_is_capped() {
        let q = WorkQueue::new();
        let mut last = Duration::ZERO;
        for _ in 0..40 {
            q.state().processing.insert("k".into());
            last = q.done("k", Outcome::Retry).unwrap();
        }
        assert_eq!(last, MAX_DELAY);
    }
}

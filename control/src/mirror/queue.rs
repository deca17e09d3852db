//! A keyed work queue, as client-go's rate-limited workqueue behaves for the original's
//! reconcilers: a key waits at most once (adding it again while it waits does nothing);
//! a key added while it is being processed is processed once more afterwards, never twice
//! at once; a failed key comes back after 5 ms × 2^failures, capped at 1000 s, until it
//! succeeds. One worker takes keys with [`WorkQueue::next`] and reports with
//! [`WorkQueue::done`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

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
        s.adds += 1;
        Self::enqueue(&mut s, key);
        drop(s);
        self.wake.notify_one();
    }

    fn enqueue(s: &mut State, key: &str) {
        if s.processing.contains(key) {
            s.dirty.insert(key.to_string());
        } else if s.waiting.insert(key.to_string()) {
            s.ready.push_back(key.to_string());
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
        if s.dirty.remove(key) {
            Self::enqueue(&mut s, key);
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

//! State shared by the request handlers and the control handle: the object store, the
//! token, injected faults, the request log and the watch switches.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::pages::Pages;
use crate::store::Store;

/// Locks a mutex, ignoring poisoning (a panicking test thread must not wedge the server).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Leases by (namespace, name).
pub(crate) type Leases = BTreeMap<(String, String), k8s_openapi::api::coordination::v1::Lease>;

/// Pending injected failures: `remaining` requests will get `status`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Faults {
    pub remaining: usize,
    pub status: u16,
}

/// State shared by the handlers and the control handle.
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    /// Namespaces, Services, Endpoints, EndpointSlices (`objects.rs`).
    pub objects: Mutex<crate::objects::ObjectStore>,
    /// coordination.k8s.io Leases (`leases.rs`).
    pub leases: Mutex<Leases>,
    /// Snapshots of paged lists.
    pub pages: Mutex<Pages>,
    pub token: Mutex<Option<String>>,
    pub faults: Mutex<Faults>,
    pub requests: Mutex<Vec<String>>,
    /// Bumped by `drop_watches`; every open watch ends abruptly when it changes.
    pub drops: watch::Sender<u64>,
    /// Set to `true` once on shutdown; open watches end cleanly.
    pub shutdown: watch::Sender<bool>,
    pub bookmark_interval: Duration,
    /// Number of watch responses currently streaming.
    pub open_watches: AtomicUsize,
}

impl Shared {
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// Consumes one injected failure, if any is pending.
    pub(crate) fn take_fault(&self) -> Option<u16> {
        let mut faults = lock(&self.faults);
        if faults.remaining == 0 {
            return None;
        }
        faults.remaining -= 1;
        Some(faults.status)
    }

    pub(crate) fn fail_next(&self, count: usize, status: u16) {
        *lock(&self.faults) = Faults {
            remaining: count,
            status,
        };
    }

    pub(crate) fn drop_watches(&self) {
        self.drops.send_modify(|generation| *generation += 1);
    }
}

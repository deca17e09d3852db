//! Per-peer timer state, driven by events, as the kernel's `timers.c` names them.
//!
//! boringtun's `Tunn` keeps the protocol's own timers (rekey, handshake retransmission,
//! session expiry, the passive keepalive) and is driven by `update_timers` on every tick
//! (`tick.rs`). What it does not keep lives here, fed by the packet paths through events:
//!
//! - **Persistent keepalive**: a keepalive goes out when no authenticated packet went either
//!   way for the interval ("after any authenticated packet traversal" re-arms it), and once
//!   straight away when the interval is switched on. Keeping it outside `Tunn` means a new
//!   interval never resets a peer's sessions.
//! - **Latest handshake**: the wall-clock time of the last completed handshake, kept after
//!   sessions expire, as the kernel does. A handshake completes when the session is
//!   confirmed: for the initiator when the response arrives, for the responder when the
//!   first data (or keepalive) arrives in the new session. A retransmitted initiation is
//!   answered again but is not a second handshake.
//! - **Giving up**: boringtun retransmits an unanswered initiation for 90 s
//!   (REKEY_ATTEMPT_TIME) and then gives up. From then on the persistent keepalive stays
//!   quiet, so a peer that is gone costs nothing, until the peer is heard from or data for
//!   it arrives (which starts a new handshake). The kernel also re-arms the persistent
//!   keepalive from its own initiations, and so retries such a peer without end.
//!
//! Times are milliseconds on the tunnel's [`Clock`]; the packet paths stamp with its coarse
//! copy, which the tick refreshes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

/// One peer's timer state. Events come from the packet paths and `apply`; the tick reads.
#[derive(Debug)]
pub(crate) struct PeerTimers {
    /// Persistent keepalive interval in seconds (0 = off).
    keepalive: AtomicU16,
    /// Set when the interval is switched on: a keepalive goes out at the next tick.
    keepalive_now: AtomicBool,
    /// Clock milliseconds of the last authenticated packet either way (0 = never).
    last_traversal_ms: AtomicU64,
    /// Wall-clock time of the last completed handshake.
    last_handshake: Mutex<Option<SystemTime>>,
    /// Our session index of the last handshake response sent ([`NONE`] if none): the
    /// handshake completes when data arrives for it.
    awaiting_confirmation: AtomicU64,
    /// Set when boringtun gave up an unanswered handshake: no persistent keepalives.
    gave_up: AtomicBool,
    /// A handshake was asked for (a successor took the interface over without the
    /// sessions): the tick initiates one.
    handshake_now: AtomicBool,
}

/// No session index.
const NONE: u64 = u64::MAX;

impl PeerTimers {
    /// A new peer's timers; `last_handshake` carries over from a replaced one.
    pub(crate) fn new(last_handshake: Option<SystemTime>) -> Self {
        Self {
            keepalive: AtomicU16::new(0),
            keepalive_now: AtomicBool::new(false),
            last_traversal_ms: AtomicU64::new(0),
            last_handshake: Mutex::new(last_handshake),
            awaiting_confirmation: AtomicU64::new(NONE),
            gave_up: AtomicBool::new(false),
            handshake_now: AtomicBool::new(false),
        }
    }

    /// A handshake is wanted now, whether or not data waits (see `Tunnel::handshake_now`).
    pub(crate) fn on_handshake_requested(&self) {
        self.handshake_now.store(true, Relaxed);
        self.resume();
    }

    /// For the tick: consumes a pending handshake request.
    pub(crate) fn handshake_requested(&self) -> bool {
        self.handshake_now.load(Relaxed) && self.handshake_now.swap(false, Relaxed)
    }

    /// An authenticated packet was sent to or received from the peer (a data message, a
    /// keepalive or a handshake message): the persistent keepalive starts over.
    #[inline]
    pub(crate) fn on_authenticated_packet_traversal(&self, now_ms: u64) {
        self.last_traversal_ms.store(now_ms, Relaxed);
    }

    /// An authenticated packet arrived from the peer: it is there, so the persistent
    /// keepalive resumes if it had given up.
    #[inline]
    pub(crate) fn on_authenticated_packet_received(&self) {
        self.resume();
    }

    /// Data for the peer was read from the TUN: a handshake starts if needed, and the
    /// persistent keepalive resumes if it had given up.
    #[inline]
    pub(crate) fn on_data_queued(&self) {
        self.resume();
    }

    #[inline]
    fn resume(&self) {
        // Read first: the flag is almost always clear, and a store would dirty the line.
        if self.gave_up.load(Relaxed) {
            self.gave_up.store(false, Relaxed);
        }
    }

    /// boringtun gave up an unanswered handshake (or let a dead session's keys expire).
    pub(crate) fn on_handshake_given_up(&self) {
        if !self.gave_up.load(Relaxed) {
            self.gave_up.store(true, Relaxed);
        }
    }

    /// We answered an initiation, creating session `index`: the handshake completes when
    /// the peer first uses it.
    pub(crate) fn on_response_sent(&self, index: u32) {
        self.awaiting_confirmation.store(u64::from(index), Relaxed);
    }

    /// Data arrived for our session `receiver`: true when that confirms the handshake we
    /// answered (once).
    #[inline]
    pub(crate) fn on_data_received(&self, receiver: u32) -> bool {
        self.awaiting_confirmation.load(Relaxed) == u64::from(receiver)
            && self
                .awaiting_confirmation
                .compare_exchange(u64::from(receiver), NONE, Relaxed, Relaxed)
                .is_ok()
    }

    /// A handshake completed: this is now the peer's latest handshake.
    pub(crate) fn on_handshake_complete(&self) {
        *self
            .last_handshake
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(SystemTime::now());
    }

    /// The configuration set the persistent keepalive to `secs` (0 = off). Switching it on,
    /// or configuring a peer anew (`fresh`), sends one at the next tick. Returns true when
    /// one is due, so that the caller can wake the tick early.
    pub(crate) fn on_keepalive_configured(&self, secs: u16, fresh: bool) -> bool {
        let before = self.keepalive.swap(secs, Relaxed);
        let due = secs != 0 && (before == 0 || fresh);
        if due {
            self.keepalive_now.store(true, Relaxed);
        }
        due
    }

    /// For the tick: whether a persistent keepalive is due at `now_ms`, given whether the
    /// tick already sent the peer something. Consumes a pending "send one now".
    pub(crate) fn persistent_keepalive_due(&self, now_ms: u64, sent: bool) -> bool {
        let interval = u64::from(self.keepalive.load(Relaxed));
        let now_asked = self.keepalive_now.swap(false, Relaxed);
        if self.gave_up.load(Relaxed) {
            return false;
        }
        let last = self.last_traversal_ms.load(Relaxed);
        let idle = Duration::from_millis(now_ms.saturating_sub(last.max(1)));
        interval > 0 && !sent && (now_asked || last == 0 || idle >= Duration::from_secs(interval))
    }

    /// True while a "send one now" waits for the tick.
    pub(crate) fn keepalive_pending(&self) -> bool {
        self.keepalive_now.load(Relaxed)
    }

    /// Wall-clock time of the last completed handshake.
    pub(crate) fn last_handshake(&self) -> Option<SystemTime> {
        *self
            .last_handshake
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// Milliseconds on a monotonic clock shared by one tunnel's threads and tick.
///
/// The packet paths read a coarse copy that the tick refreshes. They only stamp when a
/// packet last went through, which the tick compares on its ticks anyway, and reading the
/// system clock on every batch costs a cold cache line or two (the kernel rewrites the
/// clock page on every timer interrupt) per idle wake-up.
pub(crate) struct Clock {
    epoch: Instant,
    coarse: AtomicU64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            coarse: AtomicU64::new(1),
        }
    }

    /// Now. +1 so that 0 can mean "never".
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Refreshes the coarse copy and returns it (the tick, once per tick).
    pub(crate) fn tick(&self) -> u64 {
        let now = self.now_ms();
        self.coarse.store(now, Relaxed);
        now
    }

    /// Now, as of the last [`Clock::tick`]: at most one tick old.
    #[inline]
    pub(crate) fn coarse_ms(&self) -> u64 {
        self.coarse.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_moves_only_on_ticks() {
        let clock = Clock::new();
        assert_eq!(clock.coarse_ms(), 1, "not 0, which means never");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.coarse_ms(), 1);
        let t = clock.tick();
        assert!(t >= 6, "{t}");
        assert_eq!(clock.coarse_ms(), t);
        assert!(clock.now_ms() >= t);
    }

    #[test]
    fn a_persistent_keepalive_follows_the_last_traversal() {
        let t = PeerTimers::new(None);
        assert!(!t.persistent_keepalive_due(1_000, false), "off");
        assert!(t.on_keepalive_configured(25, false), "switched on");
        assert!(
            t.persistent_keepalive_due(1_000, false),
            "sent once at once"
        );
        t.on_authenticated_packet_traversal(1_000);
        assert!(!t.persistent_keepalive_due(25_999, false));
        assert!(
            t.persistent_keepalive_due(26_000, false),
            "idle for the interval"
        );
        assert!(
            !t.persistent_keepalive_due(26_000, true),
            "the tick sent something"
        );
        // Traffic either way starts the interval over.
        t.on_authenticated_packet_traversal(30_000);
        assert!(!t.persistent_keepalive_due(54_999, false));
        // A new interval on a peer that had one is not "switched on".
        assert!(!t.on_keepalive_configured(10, false));
        assert!(!t.persistent_keepalive_due(39_999, false));
        assert!(t.persistent_keepalive_due(40_000, false));
        // Off again: nothing is due however long it is quiet.
        assert!(!t.on_keepalive_configured(0, true));
        assert!(!t.persistent_keepalive_due(1_000_000, false));
    }

    #[test]
    fn a_peer_given_up_gets_no_keepalives_until_it_is_heard_from() {
        let t = PeerTimers::new(None);
        t.on_keepalive_configured(25, true);
        t.on_handshake_given_up();
        assert!(!t.persistent_keepalive_due(1_000_000, false), "gave up");
        t.on_authenticated_packet_received();
        assert!(t.persistent_keepalive_due(1_000_000, false), "heard from");
        t.on_handshake_given_up();
        t.on_data_queued();
        assert!(t.persistent_keepalive_due(2_000_000, false), "data to send");
    }

    #[test]
    fn a_response_is_confirmed_once_by_data_in_its_session() {
        let t = PeerTimers::new(None);
        assert!(!t.on_data_received(0x100));
        t.on_response_sent(0x101);
        // A retransmitted initiation gets a new response and session: only that counts.
        t.on_response_sent(0x102);
        assert!(!t.on_data_received(0x101));
        assert!(t.on_data_received(0x102));
        assert!(!t.on_data_received(0x102), "once");
    }

    #[test]
    fn a_completed_handshake_is_remembered() {
        let t = PeerTimers::new(None);
        assert_eq!(t.last_handshake(), None);
        t.on_handshake_complete();
        let at = t.last_handshake().expect("set");
        assert!(at <= SystemTime::now());
        let carried = PeerTimers::new(Some(at));
        assert_eq!(carried.last_handshake(), Some(at));
    }
}

//! Time, injected: the only caller of `SystemTime::now`. Tests use [`TestClock`] to move time without sleeping.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

/// Seconds since the Unix epoch, as JWT claims count them.
pub trait Clock: Send + Sync + 'static {
    /// The current time in whole seconds since the epoch.
    fn now(&self) -> i64;
}

/// Nanoseconds since the Unix epoch, from the system clock: when a span starts (spans are dated by the wall clock
/// collectors compare across hosts, not by the injected [`Clock`], which counts whole seconds).
pub fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }
}

/// A clock tests can set and advance. Starts at the real time.
#[derive(Debug)]
pub struct TestClock(AtomicI64);

impl Default for TestClock {
    fn default() -> Self {
        Self(AtomicI64::new(SystemClock.now()))
    }
}

impl TestClock {
    /// Moves the clock forward (or back, with a negative value).
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
    /// Sets the clock.
    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

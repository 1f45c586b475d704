//! What the listener knows of one connection's requests: how many heads it has read (the header deadline of the
//! first one) and how many are in progress (which connection the admin listener may close to make room).

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
};

/// One connection's request counts.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Requests whose head has been read.
    started: AtomicU64,
    /// Requests in progress (head read, response head not yet written).
    busy: AtomicUsize,
}

impl ConnState {
    /// True once a request head has been read on the connection.
    pub fn has_started(&self) -> bool {
        self.started() > 0
    }

    /// Request heads read so far.
    pub fn started(&self) -> u64 {
        self.started.load(Relaxed)
    }

    /// True when no request is in progress.
    pub fn is_silent(&self) -> bool {
        self.busy.load(Relaxed) == 0
    }
}

/// Counts a request as in progress while it lives.
#[derive(Debug)]
pub struct Busy(Arc<ConnState>);

impl Busy {
    /// A request of `conn` whose head has just been read.
    pub fn new(conn: &Arc<ConnState>) -> Self {
        conn.started.fetch_add(1, Relaxed);
        conn.busy.fetch_add(1, Relaxed);
        Self(Arc::clone(conn))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Relaxed);
    }
}

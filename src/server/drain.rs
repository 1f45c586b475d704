//! Graceful shutdown of a listener's connections: one signal to all of them, then a wait until every one has
//! ended. A connection finishes the request it is serving and closes at its next request boundary (an HTTP/2 one
//! sends GOAWAY through hyper's own graceful shutdown).

use tokio::sync::watch;

/// The listener's side: signals shutdown and waits for the connections to end.
#[derive(Debug)]
pub struct Drain {
    tx: watch::Sender<bool>,
}

/// A connection's side: learns that shutdown was asked for. The listener's drain waits until every signal is
/// dropped, so a connection holds its own until it has ended.
#[derive(Debug)]
pub struct Signal {
    rx: watch::Receiver<bool>,
}

impl Drain {
    /// A drain no connection watches yet.
    pub fn new() -> Self {
        Self { tx: watch::channel(false).0 }
    }

    /// A signal for one more connection.
    pub fn signal(&self) -> Signal {
        Signal { rx: self.tx.subscribe() }
    }

    /// Asks every connection to finish, then waits until all have ended.
    pub async fn drained(self) {
        self.tx.send_replace(true);
        self.tx.closed().await;
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Signal {
    /// Resolves once shutdown has been asked for (at once when it already has been).
    pub async fn requested(&mut self) {
        // An error means the drain itself is gone: the listener is going away, which is a shutdown too.
        let _ = self.rx.wait_for(|asked| *asked).await;
    }

    /// True when shutdown has been asked for.
    pub fn is_requested(&self) -> bool {
        *self.rx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drained_waits_for_every_signal_and_each_sees_the_request() {
        let drain = Drain::new();
        let mut early = drain.signal();
        let late = drain.signal();
        assert!(!early.is_requested());
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
        let waiter = tokio::spawn(async move {
            drain.drained().await;
            let _ = done_tx.send(());
        });
        early.requested().await;
        assert!(late.is_requested());
        drop(early);
        tokio::task::yield_now().await;
        // One connection is still open: the drain has not finished.
        assert!(done_rx.try_recv().is_err());
        drop(late);
        waiter.await.unwrap();
        assert!(done_rx.try_recv().is_ok());
    }
}

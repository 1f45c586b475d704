//! A connection served by hyper's server: TLS connections (HTTP/2 by ALPN, HTTP/1.1), cleartext HTTP/2, and every
//! HTTP/1 connection [`super::http1`] hands over (upgrades, chunked or large bodies, `Expect`, HTTP/1.0, heads it
//! does not take). hyper-util's auto builder picks the protocol; upgrades are kept for the forwarder's tunnels.

use std::{future::Future, pin::Pin, sync::Arc};

use http::{Request, Response};
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};

use super::{
    drain::Signal,
    requests::{Busy, ConnState},
};
use crate::{body::Body, forward::Peer};

/// How a connection came to hyper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From accept (TLS).
    Fresh,
    /// From [`super::http1`], with a request head (or one too large) among the bytes it replays.
    HandedOver,
}

/// Which of hyper's servers takes a connection.
#[derive(Clone, Copy)]
pub enum Protocols<'a> {
    /// HTTP/1.1, or HTTP/2 by its preface (hyper-util's auto builder).
    Detect(&'a auto::Builder<TokioExecutor>),
    /// HTTP/1 only: for a connection that has already spoken HTTP/1.1 (a preface then is not a protocol switch).
    Http1(&'a http1::Builder),
}

/// Serves `io` with hyper until it closes; on shutdown, hyper finishes what is in progress and closes (GOAWAY on
/// HTTP/2). A connection handed over is first let start the request whose head it was handed with: hyper would
/// otherwise see it idle, and close it unanswered.
pub async fn serve<S, H, F>(
    io: S,
    peer: Peer,
    protocols: Protocols<'_>,
    conn: Arc<ConnState>,
    handler: H,
    signal: Signal,
    start: Start,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Body>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let began = conn.started();
    let state = Arc::clone(&conn);
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let busy = Busy::new(&conn);
        // Boxed: hyper moves the service future into its dispatcher; a pointer moves cheaper than the whole state
        // machine of a proxied request (a few kilobytes).
        let fut = Box::pin(handler(req.map(crate::body::from_client), peer.clone()));
        async move {
            let resp = fut.await;
            drop(busy);
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let wait = (start == Start::HandedOver).then_some((&*state, began));
    match protocols {
        Protocols::Detect(builder) => {
            let served = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            drive(served, |c| c.graceful_shutdown(), signal, wait).await;
        }
        Protocols::Http1(builder) => {
            let served = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
            drive(served, |c| c.graceful_shutdown(), signal, wait).await;
        }
    }
}

/// Drives a hyper connection; at shutdown (once `wait`'s connection has started a request after its first `began`,
/// when given) asks it to finish gracefully, and lets it.
async fn drive<C: Future>(
    served: C,
    graceful: impl FnOnce(Pin<&mut C>),
    mut signal: Signal,
    wait: Option<(&ConnState, u64)>,
) {
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => return,
        () = signal.requested() => {}
    }
    if let Some((conn, began)) = wait {
        tokio::select! {
            _ = served.as_mut() => return,
            () = until_started(conn, began) => {}
        }
    }
    graceful(served.as_mut());
    let _ = served.await;
}

/// Resolves once `conn` has started a request after the first `began` (checked every few milliseconds: this wait
/// happens only while draining, on a connection handed over moments before).
async fn until_started(conn: &ConnState, began: u64) {
    while conn.started() == began {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

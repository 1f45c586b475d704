//! A connection served by hyper's server: TLS connections (HTTP/2 by ALPN, HTTP/1.1), cleartext HTTP/2, and every
//! HTTP/1 connection [`super::http1`] hands over (upgrades, chunked or large bodies, `Expect`, HTTP/1.0, heads it
//! does not take). hyper-util's auto builder picks the protocol; upgrades are kept for the forwarder's tunnels.

use std::{future::Future, sync::Arc};

use http::{Request, Response};
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};

use super::{
    drain::Signal,
    requests::{Busy, ConnState},
};
use crate::{body::Body, forward::Peer};

/// Serves `io` with hyper until it closes; on shutdown, hyper finishes what is in progress and closes (GOAWAY on
/// HTTP/2).
pub async fn serve<S, H, F>(
    io: S,
    peer: Peer,
    builder: &auto::Builder<TokioExecutor>,
    conn: Arc<ConnState>,
    handler: H,
    mut signal: Signal,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Body>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
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
    let served = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => return,
        () = signal.requested() => served.as_mut().graceful_shutdown(),
    }
    let _ = served.await;
}

//! The public listener: accepts TCP (and TLS), serves HTTP/1.1 and HTTP/2 on one port with hyper-util's auto
//! builder, enforces limits (header size → 431, header-read timeout, idle timeout, connection cap), and drains on
//! shutdown: stop accepting, let in-flight requests finish up to the grace deadline.

pub mod admin;
pub mod idle;
pub mod tls;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use http::{Request, Response};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{net::TcpListener, sync::Semaphore};

use crate::{body::Body, forward::Peer, telemetry::metrics::Metrics};

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    /// The limits of idgate's auxiliary servers (development issuer, demo upstream).
    fn default() -> Self {
        Self {
            max_header_bytes: 65536,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

/// Serves an auxiliary server (development issuer, demo upstream) with default limits until `shutdown`.
pub fn spawn_auxiliary<H, F>(listener: TcpListener, handler: H, shutdown: impl Future<Output = ()> + Send + 'static)
where
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let metrics = Arc::new(Metrics::default());
    tokio::spawn(serve(listener, None, Limits::default(), metrics, handler, shutdown, Duration::from_secs(1)));
}

/// Serves `listener` until `shutdown` resolves, then drains for at most `grace`.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    metrics: Arc<Metrics>,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(limits.max_header_bytes.max(8192))
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let builder = Arc::clone(&builder);
        let handler = handler.clone();
        let metrics = Arc::clone(&metrics);
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            metrics.connections(1);
            serve_one(stream, remote, tls, &builder, limits, handler, watcher).await;
            metrics.connections(-1);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(grace) => tracing::warn!(grace_secs = grace.as_secs(), "drain deadline reached; closing remaining connections"),
    }
}

async fn serve_one<H, F>(
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: &auto::Builder<TokioExecutor>,
    limits: Limits,
    handler: H,
    watcher: hyper_util::server::graceful::Watcher,
) where
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut peer = Peer::new(remote.ip().to_canonical(), tls.is_some());
    peer.upstream = Some(Default::default());
    let service = service_fn(move |req| {
        // Boxed: hyper moves the service future into its dispatcher; a pointer moves cheaper than the whole state
        // machine of a proxied request (a few kilobytes).
        let fut = Box::pin(handler(req, peer.clone()));
        async move { Ok::<_, std::convert::Infallible>(fut.await) }
    });
    match tls {
        None => {
            let (io, activity) = idle::Tracked::new(stream);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            idle::run(watcher.watch(conn.into_owned()), activity, limits.idle_timeout).await;
        }
        Some(acceptor) => {
            let stream = match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!("TLS handshake timed out"),
            };
            let (io, activity) = idle::Tracked::new(stream);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            idle::run(watcher.watch(conn.into_owned()), activity, limits.idle_timeout).await;
        }
    }
}

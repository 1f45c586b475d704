//! The listeners: accepts TCP (and TLS), serves HTTP/1.1 and HTTP/2 on one port — cleartext HTTP/1.1 by idgate's
//! own connection loop ([`http1`]) for the common request, everything else by hyper-util's auto builder
//! ([`hyper_conn`]) — enforces limits (header size → 431, header deadline, idle timeout, connection cap), and drains on shutdown: stop
//! accepting, let in-flight requests finish up to the grace deadline.
//!
//! The header deadline runs from accept: a connection whose first request head (after the TLS handshake, the
//! HTTP/2 preface) is not complete within `header_read_timeout` is closed, however slowly it trickles bytes.
//! When the public listener is full, further connections wait in the kernel's backlog; the admin listener instead
//! drops its oldest silent connection (one with no request in progress) for each new one ([`WhenFull`]), so a flood
//! of silent connections cannot keep a liveness probe out.

pub mod admin;
pub mod drain;
pub mod h1;
pub mod http1;
pub mod hyper_conn;
pub mod idle;
pub mod requests;
pub mod rewind;
pub mod tls;

use std::{
    collections::BTreeMap,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Request, Response};
use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, oneshot},
    time::Instant,
};

use self::{drain::Drain, requests::ConnState};
use crate::{body::Body, forward::Peer, telemetry::metrics::Metrics};

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub when_full: WhenFull,
}

/// Connections the admin listener keeps open at once; the oldest silent one makes room for the next.
pub const ADMIN_MAX_CONNECTIONS: usize = 32;

/// What a listener with `max_connections` open does with one more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// It waits in the kernel's accept backlog until a connection closes (the public listener).
    Wait,
    /// The oldest connection with no request in progress is closed to make room (the admin listener: probes must
    /// get in whatever else is connected); when every one is busy, the oldest.
    DropOldestSilent,
}

impl Default for Limits {
    /// The limits of idgate's auxiliary servers (development issuer, demo upstream).
    fn default() -> Self {
        Self {
            max_header_bytes: 65536,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            when_full: WhenFull::Wait,
        }
    }
}

/// Serves an auxiliary server (development issuer, demo upstream) with default limits until `shutdown`.
pub fn spawn_auxiliary<H, F>(listener: TcpListener, handler: H, shutdown: impl Future<Output = ()> + Send + 'static)
where
    H: Fn(Request<Body>, Peer) -> F + Clone + Send + Sync + 'static,
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
    H: Fn(Request<Body>, Peer) -> F + Clone + Send + Sync + 'static,
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
        // No keep-alive pings: a client's automatic ping answers would move bytes and keep an idle connection past
        // the idle timeout forever. Dead peers are closed by the idle timeout.
        .keep_alive_interval(None);
    // The same HTTP/1 settings for connections handed over after a request of their own (HTTP/1 only).
    let mut h1_only = hyper::server::conn::http1::Builder::new();
    h1_only
        .timer(TokioTimer::new())
        .max_buf_size(limits.max_header_bytes.max(8192))
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let builder = Arc::new(Builders { any: builder, h1_only });
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let open = Arc::new(Mutex::new(Open::default()));
    let drain = Drain::new();
    tokio::pin!(shutdown);

    loop {
        let permit = match limits.when_full {
            WhenFull::Wait => Some(tokio::select! {
                p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                () = &mut shutdown => break,
            }),
            WhenFull::DropOldestSilent => None,
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
        // The header deadline starts now, before the TLS handshake and the protocol preface.
        let deadline = Instant::now() + limits.header_read_timeout;
        let conn = Arc::new(ConnState::default());
        let evicted = (limits.when_full == WhenFull::DropOldestSilent)
            .then(|| lock(&open).admit(limits.max_connections, Arc::clone(&conn)));
        let _ = stream.set_nodelay(true);
        let builder = Arc::clone(&builder);
        let handler = handler.clone();
        let slot = Arc::new(Slot::new(permit, Arc::clone(&metrics)));
        let tls = tls.clone();
        let signal = drain.signal();
        let open = Arc::clone(&open);
        tokio::spawn(async move {
            let serving = serve_one(stream, remote, tls, &builder, limits, deadline, conn, slot, handler, signal);
            match evicted {
                None => serving.await,
                Some((id, evict)) => {
                    tokio::select! {
                        () = serving => {}
                        _ = evict => tracing::debug!("listener full: closed its oldest silent connection"),
                    }
                    lock(&open).remove(id);
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = drain.drained() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(grace) => tracing::warn!(grace_secs = grace.as_secs(), "drain deadline reached; closing remaining connections"),
    }
}

/// The open connections of a [`WhenFull::DropOldestSilent`] listener, oldest first. Dropping an entry's sender
/// closes its connection.
#[derive(Debug, Default)]
struct Open {
    next: u64,
    conns: BTreeMap<u64, (Arc<ConnState>, oneshot::Sender<()>)>,
}

impl Open {
    /// Registers a new connection, first closing the oldest silent one (else the oldest) when `max` are open.
    /// Returns its id and the receiver that resolves when it is closed to make room.
    fn admit(&mut self, max: usize, conn: Arc<ConnState>) -> (u64, oneshot::Receiver<()>) {
        while self.conns.len() >= max.max(1) {
            let victim = self
                .conns
                .iter()
                .find(|(_, (c, _))| c.is_silent())
                .or_else(|| self.conns.iter().next())
                .map(|(id, _)| *id);
            match victim {
                Some(id) => self.remove(id),
                None => break,
            }
        }
        let (tx, rx) = oneshot::channel();
        let id = self.next;
        self.next += 1;
        self.conns.insert(id, (conn, tx));
        (id, rx)
    }

    fn remove(&mut self, id: u64) {
        self.conns.remove(&id);
    }
}

fn lock(open: &Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    open.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drives `conn`, closing it at `deadline` unless a request head has been read by then.
async fn head_deadline<F: Future>(conn: F, deadline: Instant, state: &ConnState) {
    tokio::pin!(conn);
    tokio::select! {
        _ = &mut conn => return,
        () = tokio::time::sleep_until(deadline) => {}
    }
    if !state.has_started() {
        return tracing::debug!("no request head within the header deadline; closing the connection");
    }
    conn.await;
}

/// A connection's place under its listener's cap, counted in `idgate_open_connections` while it lives. A spliced
/// upgrade keeps it ([`crate::forward::Tunnel`]) after the HTTP connection has handed its socket over.
#[derive(Debug)]
pub struct Slot {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    metrics: Arc<Metrics>,
}

impl Slot {
    fn new(permit: Option<tokio::sync::OwnedSemaphorePermit>, metrics: Arc<Metrics>) -> Self {
        metrics.connections(1);
        Self { _permit: permit, metrics }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.connections(-1);
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_one<H, F>(
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: &Builders,
    limits: Limits,
    deadline: Instant,
    conn: Arc<ConnState>,
    slot: Arc<Slot>,
    handler: H,
    signal: drain::Signal,
) where
    H: Fn(Request<Body>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let ip = remote.ip().to_canonical();
    let parts = (builder, limits, deadline, conn, slot, handler, signal);
    match tls {
        None => serve_io(stream, Peer::new(ip, false), parts).await,
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(s)) => serve_io(s, Peer::new(ip, true), parts).await,
            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!("TLS handshake timed out"),
        },
    }
}

/// hyper's servers for one listener: either protocol (TLS connections, cleartext ones at their first request), or
/// HTTP/1 only (cleartext connections handed over after a request of their own).
struct Builders {
    any: auto::Builder<TokioExecutor>,
    h1_only: hyper::server::conn::http1::Builder,
}

type ConnParts<'a, H> = (&'a Builders, Limits, Instant, Arc<ConnState>, Arc<Slot>, H, drain::Signal);

/// Serves one connection under its limits: cleartext ones by [`http1`] (which hands to hyper what it does not take),
/// TLS ones (HTTP/2 by ALPN) by hyper.
async fn serve_io<S, H, F>(stream: S, mut peer: Peer, parts: ConnParts<'_, H>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Body>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let (builder, limits, deadline, conn, slot, handler, signal) = parts;
    let (io, activity) = idle::Tracked::new(stream);
    peer.upstream = Some(Default::default());
    peer.tunnel = Some(crate::forward::Tunnel { idle: limits.idle_timeout, activity: activity.clone(), slot });
    let state = Arc::clone(&conn);
    let served: std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> = if peer.tls {
        let protocols = hyper_conn::Protocols::Detect(&builder.any);
        Box::pin(hyper_conn::serve(io, peer, protocols, state, handler, signal, hyper_conn::Start::Fresh))
    } else {
        let own = http1::Conn {
            detect: &builder.any,
            http1_only: &builder.h1_only,
            max_head: limits.max_header_bytes.max(8192),
            header_timeout: limits.header_read_timeout,
            first_deadline: deadline,
            state,
            handler,
            signal,
        };
        Box::pin(http1::serve(io, peer, own))
    };
    let served = head_deadline(served, deadline, &conn);
    idle::run(served, activity, limits.idle_timeout).await;
}

//! Upstream connections kept per client connection. An HTTP/1.1 client connection sends its requests one at a time,
//! so it keeps one plain-http upstream connection of its own for them: no pool checkout, no pool lock and no key
//! lookup per request (bench/: ~10 % less CPU per proxied request than hyper-util's pool). HTTP/2 clients (many
//! requests at once), upgrades and https upstreams use the shared pool, and so does everything beyond
//! [`MAX_KEPT`] kept connections. A kept connection closes with its client connection, or once the client has sent
//! nothing on it for [`KEPT_IDLE`] to [`KEPT_IDLE`]×2: browsers hold idle connections for minutes, and an upstream
//! that gives each connection a thread must not have its threads held by them.

use std::{
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use http::{Request, Response, Uri};
use hyper::{
    body::Incoming,
    client::conn::http1::{self, SendRequest},
};
use hyper_util::rt::TokioIo;

use super::{UpstreamError, error_text};
use crate::body::Body;

/// At most this many upstream connections are kept by client connections at once (the shared pool's idle limit).
pub const MAX_KEPT: usize = 1024;

/// A kept connection unused for a whole period of this length is closed (checked once per period).
pub const KEPT_IDLE: Duration = Duration::from_secs(2);

/// The upstream connection one client connection keeps. Made by the server for each client connection.
#[derive(Debug, Default)]
pub struct UpstreamSlot {
    sender: Mutex<Option<SendRequest<Body>>>,
    /// Set by each request, cleared by each idle check.
    used: AtomicBool,
}

impl UpstreamSlot {
    fn take(&self) -> Option<SendRequest<Body>> {
        self.used.store(true, Relaxed);
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
    fn put(&self, sender: SendRequest<Body>) {
        *self.sender.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
    }
    /// Drops the kept connection when nothing used it since the last check; its connection then closes.
    fn release_if_unused(&self) {
        if !self.used.swap(false, Relaxed) {
            drop(self.sender.lock().unwrap_or_else(|p| p.into_inner()).take());
        }
    }
}

/// What became of a request offered to [`Dialer::send`].
pub enum Sent {
    /// The upstream's response.
    Response(Response<Incoming>),
    /// Not sent, untouched: the slot's connection is busy (a pipelined request) or [`MAX_KEPT`] is reached. The
    /// caller sends it on the shared pool.
    Declined(Request<Body>),
}

/// Opens the kept connections to one plain-http upstream and counts them.
#[derive(Debug)]
pub struct Dialer {
    host: String,
    port: u16,
    connect_timeout: Duration,
    open: Arc<AtomicUsize>,
    max_kept: usize,
    idle: Duration,
}

impl Dialer {
    /// A dialer for the upstream at `authority` (port 80 when none is given), counting its connections in `open`.
    pub fn new(authority: &http::uri::Authority, connect_timeout: Duration, open: Arc<AtomicUsize>) -> Self {
        // IPv6 literals come bracketed in URLs and must not be for the resolver.
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = authority.port_u16().unwrap_or(80);
        Self { host, port, connect_timeout, open, max_kept: MAX_KEPT, idle: KEPT_IDLE }
    }

    /// Upstream connections kept right now.
    fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// Sends `req` (absolute URI, `Host` set) on the slot's connection, opening one when the slot has none or its
    /// connection has closed. A request the upstream never received (the kept connection closed just before) is sent
    /// once more on a fresh connection.
    pub async fn send(&self, slot: &Arc<UpstreamSlot>, req: Request<Body>) -> Result<Sent, UpstreamError> {
        let (mut sender, fresh) = match slot.take() {
            Some(s) if s.is_ready() => (s, false),
            Some(s) if !s.is_closed() => {
                slot.put(s);
                return Ok(Sent::Declined(req));
            }
            _ if self.open() >= self.max_kept => return Ok(Sent::Declined(req)),
            _ => (self.dial(slot).await?, true),
        };
        let mut req = req;
        if let Some(pq) = req.uri().path_and_query().cloned() {
            *req.uri_mut() = Uri::from(pq);
        }
        let resp = match sender.try_send_request(req).await {
            Ok(resp) => resp,
            Err(mut e) => match e.take_message() {
                Some(again) if !fresh => {
                    tracing::debug!(error = %error_text(e.error()), "kept upstream connection closed; sending on a new one");
                    sender = self.dial(slot).await?;
                    sender.send_request(again).await.map_err(|e| UpstreamError::Protocol(error_text(&e)))?
                }
                _ => return Err(UpstreamError::Protocol(error_text(e.error()))),
            },
        };
        slot.put(sender);
        Ok(Sent::Response(resp))
    }

    async fn dial(&self, slot: &Arc<UpstreamSlot>) -> Result<SendRequest<Body>, UpstreamError> {
        let connect = tokio::net::TcpStream::connect((self.host.as_str(), self.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => {
                return Err(UpstreamError::Connect(format!("connect timed out after {:?}", self.connect_timeout)));
            }
            Ok(Err(e)) => return Err(UpstreamError::Connect(e.to_string())),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            http1::handshake(TokioIo::new(stream)).await.map_err(|e| UpstreamError::Connect(error_text(&e)))?;
        self.open.fetch_add(1, Relaxed);
        slot.used.store(true, Relaxed);
        tokio::spawn(drive(conn, Arc::downgrade(slot), self.idle, Arc::clone(&self.open)));
        Ok(sender)
    }
}

/// Runs a kept connection until it closes: with its client connection (the slot and its sender dropped), when the
/// upstream closes it, or when [`UpstreamSlot::release_if_unused`] finds it idle for a whole `idle` period.
async fn drive(
    conn: http1::Connection<TokioIo<tokio::net::TcpStream>, Body>,
    slot: Weak<UpstreamSlot>,
    idle: Duration,
    open: Arc<AtomicUsize>,
) {
    tokio::pin!(conn);
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + idle, idle);
    loop {
        tokio::select! {
            ended = &mut conn => {
                if let Err(e) = ended {
                    tracing::debug!(error = %error_text(&e), "kept upstream connection ended");
                }
                break;
            }
            _ = check.tick() => {
                if let Some(slot) = slot.upgrade() {
                    slot.release_if_unused();
                }
            }
        }
    }
    open.fetch_sub(1, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An upstream answering every request on every connection with an empty 200.
    async fn upstream() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn get(addr: std::net::SocketAddr) -> Request<Body> {
        Request::builder()
            .uri(format!("http://{addr}/"))
            .header("host", "x")
            .body(crate::body::empty())
            .expect("request")
    }

    #[tokio::test]
    async fn beyond_the_limit_requests_are_declined_to_the_pool() {
        let addr = upstream().await;
        let authority: http::uri::Authority = addr.to_string().parse().expect("authority");
        let dialer = Dialer { max_kept: 1, ..Dialer::new(&authority, Duration::from_secs(1), Arc::default()) };
        let (a, b) = (Arc::new(UpstreamSlot::default()), Arc::new(UpstreamSlot::default()));
        assert!(matches!(dialer.send(&a, get(addr)).await, Ok(Sent::Response(_))));
        assert_eq!(dialer.open(), 1);
        match dialer.send(&b, get(addr)).await {
            Ok(Sent::Declined(req)) => assert_eq!(req.uri().to_string(), format!("http://{addr}/"), "untouched"),
            _ => panic!("a second kept connection is over the limit"),
        }
        assert!(matches!(dialer.send(&a, get(addr)).await, Ok(Sent::Response(_))), "the kept one goes on");
        drop(a);
        for _ in 0..100 {
            if dialer.open() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(dialer.open(), 0, "a dropped slot closes its connection");
        assert!(matches!(dialer.send(&b, get(addr)).await, Ok(Sent::Response(_))), "room again");
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_connect_error() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
        let authority: http::uri::Authority = closed.to_string().parse().expect("authority");
        let dialer = Dialer::new(&authority, Duration::from_secs(1), Arc::default());
        assert!(matches!(dialer.send(&Arc::default(), get(closed)).await, Err(UpstreamError::Connect(_))));
        assert_eq!(dialer.open(), 0);
    }

    #[tokio::test]
    async fn a_kept_connection_unused_for_a_whole_period_is_closed() {
        let addr = upstream().await;
        let authority: http::uri::Authority = addr.to_string().parse().expect("authority");
        let idle = Duration::from_millis(100);
        let dialer = Dialer { idle, ..Dialer::new(&authority, Duration::from_secs(1), Arc::default()) };
        let slot = Arc::new(UpstreamSlot::default());
        // Busy for three periods: kept throughout.
        for _ in 0..15 {
            assert!(matches!(dialer.send(&slot, get(addr)).await, Ok(Sent::Response(_))));
            tokio::time::sleep(idle / 5).await;
        }
        assert_eq!(dialer.open(), 1, "one connection served them all");
        // Then idle: closed within two periods, and the next request opens a new one.
        tokio::time::sleep(idle * 3).await;
        assert_eq!(dialer.open(), 0);
        assert!(matches!(dialer.send(&slot, get(addr)).await, Ok(Sent::Response(_))));
        assert_eq!(dialer.open(), 1);
    }

    #[tokio::test]
    async fn a_response_still_streaming_is_not_cut_by_the_idle_check() {
        // Headers at once, then ten body chunks 50 ms apart: the client sends nothing new for five idle periods.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n").await.expect("head");
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                s.write_all(b"x").await.expect("chunk");
            }
        });
        let authority: http::uri::Authority = addr.to_string().parse().expect("authority");
        let dialer = Dialer {
            idle: Duration::from_millis(100),
            ..Dialer::new(&authority, Duration::from_secs(1), Arc::default())
        };
        let slot = Arc::new(UpstreamSlot::default());
        let Ok(Sent::Response(resp)) = dialer.send(&slot, get(addr)).await else { panic!("no response") };
        let body = http_body_util::BodyExt::collect(resp.into_body()).await.expect("whole body").to_bytes();
        assert_eq!(&body[..], b"xxxxxxxxxx");
    }

    #[test]
    fn ipv6_literals_lose_their_brackets_and_the_port_defaults_to_80() {
        let d = Dialer::new(&"[::1]".parse().expect("authority"), Duration::from_secs(1), Arc::default());
        assert_eq!((d.host.as_str(), d.port), ("::1", 80));
    }
}

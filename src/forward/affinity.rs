//! Upstream connections kept per client connection. An HTTP/1.1 client connection sends its requests one at a time,
//! so it keeps one plain-http upstream connection of its own for them: no pool checkout, no pool lock, no key
//! lookup, and no second task per request. The request task itself writes the request (head and body in one
//! write) and reads the response head ([`super::h1`]); the response body streams from the socket straight into the
//! client's response ([`UpstreamBody`]), and the connection goes back to its slot at the body's end. HTTP/2 clients
//! (many requests at once), upgrades, https upstreams, request bodies of unknown or large size, and everything
//! beyond [`MAX_KEPT`] kept connections use the shared pool (hyper's client). A kept connection closes with its
//! client connection, or once the client has sent nothing on it for [`KEPT_IDLE`] to [`KEPT_IDLE`]×2: browsers
//! hold idle connections for minutes, and an upstream that gives each connection a thread must not have its
//! threads held by them.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response, Version};
use http_body::{Body as _, Frame, SizeHint};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{
    UpstreamError, error_text,
    h1::{self, Framing, Malformed, Parsed, RequestBody, ResponseHead},
};
use crate::body::{self, Body, BodyError};

/// At most this many upstream connections are kept by client connections at once (the shared pool's idle limit).
pub const MAX_KEPT: usize = 1024;

/// A kept connection unused for a whole period of this length is closed (checked once per period).
pub const KEPT_IDLE: Duration = Duration::from_secs(2);

/// Largest request body sent on a kept connection: it is read whole first, then written with the head in one write
/// (as nginx buffers request bodies). A longer body, or one of unknown length, takes the shared pool, which streams.
pub const MAX_KEPT_BODY: u64 = 64 * 1024;

/// The upstream connection one client connection keeps. Made by the server for each client connection.
#[derive(Debug, Default)]
pub struct UpstreamSlot {
    kept: Mutex<Kept>,
    /// Set by each request, cleared by each idle check.
    used: AtomicBool,
}

#[derive(Debug, Default)]
struct Kept {
    conn: Option<Conn>,
    /// An idle check runs for this slot.
    watched: bool,
}

impl UpstreamSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self) -> Option<Conn> {
        self.used.store(true, Relaxed);
        self.lock().conn.take()
    }

    /// Keeps `conn` for the next request (unless the slot already keeps one), and starts the idle check when none
    /// runs.
    fn put(self: &Arc<Self>, conn: Conn, idle: Duration) {
        let mut kept = self.lock();
        if kept.conn.is_some() {
            return;
        }
        kept.conn = Some(conn);
        if !kept.watched {
            kept.watched = true;
            tokio::spawn(watch(Arc::downgrade(self), idle));
        }
    }

    /// Drops the kept connection when nothing used the slot since the last check; its connection then closes.
    /// Returns true when the check may stop (the slot keeps nothing now).
    fn release_if_unused(&self) -> bool {
        let mut kept = self.lock();
        if self.used.swap(false, Relaxed) {
            return false;
        }
        kept.conn = None;
        kept.watched = false;
        true
    }
}

/// The idle check of one slot: ends with the slot, or once it has released its connection.
async fn watch(slot: Weak<UpstreamSlot>, idle: Duration) {
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + idle, idle);
    loop {
        check.tick().await;
        match slot.upgrade() {
            Some(slot) if !slot.release_if_unused() => {}
            _ => return,
        }
    }
}

/// An open upstream connection and the bytes read from it but not yet used. Counted while it lives.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    open: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Conn {
    // Never the buffered bytes: they are a user's response.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("peer", &self.stream.peer_addr().ok()).finish_non_exhaustive()
    }
}

impl Conn {
    /// True when the connection can carry a request: nothing unread from the upstream, and not closed by it (a
    /// kept connection the upstream closed while idle reads as end of stream).
    fn is_usable(&mut self) -> bool {
        self.buf.is_empty()
            && matches!(self.stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Room for the next read.
    fn reserve(&mut self) {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(16 * 1024);
        }
    }

    /// Reads more into the buffer (0: the upstream closed).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        self.reserve();
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            match self.stream.try_read_buf(&mut self.buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Relaxed);
    }
}

/// What became of a request offered to [`Dialer::send`].
pub enum Sent {
    /// The upstream's response, its body streaming from the kept connection.
    Response(Response<Body>),
    /// Not sent, untouched: its body is too large or of unknown length, or [`MAX_KEPT`] is reached. The caller
    /// sends it on the shared pool.
    Declined(Request<Body>),
}

/// Why an exchange on a kept connection failed.
enum Failed {
    /// The upstream closed or reset the connection before any byte of an answer: it may never have seen the
    /// request.
    Unanswered(std::io::Error),
    /// Anything later: the request may have been acted on.
    Answered(UpstreamError),
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

    /// Sends `req` (`Host` set; its path and query are the target) on the slot's connection, opening one when the
    /// slot has none or its connection is no longer usable. An idempotent request the upstream closed the kept
    /// connection on before answering is sent once more on a fresh connection.
    pub async fn send(&self, slot: &Arc<UpstreamSlot>, req: Request<Body>) -> Result<Sent, UpstreamError> {
        let length = match kept_body_length(&req) {
            Some(n) => n,
            None => return Ok(Sent::Declined(req)),
        };
        let kept = slot.take().and_then(|mut c| c.is_usable().then_some(c));
        let (mut conn, mut fresh) = match kept {
            Some(c) => (c, false),
            None if self.open() >= self.max_kept => return Ok(Sent::Declined(req)),
            None => (self.dial().await?, true),
        };
        let (parts, body) = req.into_parts();
        let data = match length {
            0 => Bytes::new(),
            n => body::collect_limited(body, n as usize).await.map_err(|e| UpstreamError::ClientBody(e.to_string()))?,
        };
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let framing = if data.is_empty() { RequestBody::None } else { RequestBody::Length(data.len() as u64) };
        let mut out = Vec::with_capacity(512 + data.len());
        h1::write_request_head(&mut out, &parts.method, target, &parts.headers, framing);
        out.extend_from_slice(&data);
        let head = loop {
            match exchange(&mut conn, &out, &parts.method).await {
                Ok(head) => break head,
                Err(Failed::Unanswered(e)) if !fresh && parts.method.is_idempotent() => {
                    tracing::debug!(error = %e, "kept upstream connection closed; sending on a new one");
                    conn = self.dial().await?;
                    fresh = true;
                }
                Err(Failed::Unanswered(e)) => return Err(UpstreamError::Protocol(format!("connection closed: {e}"))),
                Err(Failed::Answered(e)) => return Err(e),
            }
        };
        let ResponseHead { status, headers, framing, reusable } = head;
        let body = match framing {
            Framing::None => {
                if reusable && conn.buf.is_empty() {
                    slot.put(conn, self.idle);
                }
                body::empty()
            }
            Framing::Length(n) => UpstreamBody::boxed(conn, Reading::Length(n), reusable, slot, self.idle),
            Framing::Chunked => {
                UpstreamBody::boxed(conn, Reading::Chunked(h1::Chunked::default()), reusable, slot, self.idle)
            }
            Framing::UntilClose => UpstreamBody::boxed(conn, Reading::UntilClose, false, slot, self.idle),
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.version_mut() = Version::HTTP_11;
        *resp.headers_mut() = headers;
        Ok(Sent::Response(resp))
    }

    async fn dial(&self) -> Result<Conn, UpstreamError> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => {
                return Err(UpstreamError::Connect(format!("connect timed out after {:?}", self.connect_timeout)));
            }
            Ok(Err(e)) => return Err(UpstreamError::Connect(error_text(&e))),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        self.open.fetch_add(1, Relaxed);
        Ok(Conn { stream, buf: BytesMut::with_capacity(16 * 1024), open: Arc::clone(&self.open) })
    }
}

/// The length of `req`'s body when it may go on a kept connection: none, or a known length up to
/// [`MAX_KEPT_BODY`].
fn kept_body_length(req: &Request<Body>) -> Option<u64> {
    let body = req.body();
    if body.is_end_stream() {
        return Some(0);
    }
    body.size_hint().exact().filter(|n| *n <= MAX_KEPT_BODY)
}

/// Writes the request and reads the final response head (informational ones skipped).
async fn exchange(conn: &mut Conn, out: &[u8], method: &Method) -> Result<ResponseHead, Failed> {
    conn.stream.write_all(out).await.map_err(Failed::Unanswered)?;
    let mut answered = false;
    loop {
        if !conn.buf.is_empty() {
            answered = true;
            match h1::parse_response(&conn.buf, method).map_err(malformed)? {
                Parsed::Partial => {}
                Parsed::Informational(n) => {
                    conn.buf.advance(n);
                    continue;
                }
                Parsed::Final(n, head) => {
                    conn.buf.advance(n);
                    return Ok(head);
                }
            }
        }
        conn.reserve();
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) if !answered => {
                return Err(Failed::Unanswered(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(0) => {
                return Err(Failed::Answered(UpstreamError::Protocol(
                    "connection closed inside the response head".into(),
                )));
            }
            Ok(_) => {}
            Err(e) if !answered => return Err(Failed::Unanswered(e)),
            Err(e) => return Err(Failed::Answered(UpstreamError::Protocol(error_text(&e)))),
        }
    }
}

fn malformed(e: Malformed) -> Failed {
    Failed::Answered(UpstreamError::Protocol(e.to_string()))
}

/// How much of a body is left to read.
enum Reading {
    Length(u64),
    Chunked(h1::Chunked),
    UntilClose,
}

/// A response body read from a kept connection as the client takes it. At its end the connection goes back to its
/// slot when it may carry another request and nothing beyond the body was received; dropped earlier (the client
/// went away), the connection closes.
struct UpstreamBody {
    conn: Option<Conn>,
    reading: Reading,
    reusable: bool,
    slot: Weak<UpstreamSlot>,
    idle: Duration,
}

impl UpstreamBody {
    fn boxed(conn: Conn, reading: Reading, reusable: bool, slot: &Arc<UpstreamSlot>, idle: Duration) -> Body {
        use http_body_util::BodyExt;
        UpstreamBody { conn: Some(conn), reading, reusable, slot: Arc::downgrade(slot), idle }.boxed()
    }

    /// The body has ended: the connection is kept for the next request, or closed.
    fn finish(&mut self) {
        if let (Some(conn), Some(slot)) = (self.conn.take(), self.slot.upgrade())
            && self.reusable
            && conn.buf.is_empty()
        {
            slot.put(conn, self.idle);
        }
    }
}

/// What the buffered bytes gave.
enum Next {
    Data(Bytes),
    End,
    More,
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            let next = match &mut this.reading {
                Reading::Length(_) if conn.buf.is_empty() => Next::More,
                Reading::Length(left) => {
                    let n = conn.buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= n as u64;
                    Next::Data(conn.buf.split_to(n).freeze())
                }
                Reading::Chunked(decoder) => match decoder.step(&conn.buf) {
                    Err(e) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(BodyError::new(e))));
                    }
                    Ok((framing, step)) => {
                        conn.buf.advance(framing);
                        match step {
                            h1::Step::Data(n) => Next::Data(conn.buf.split_to(n).freeze()),
                            h1::Step::End => Next::End,
                            h1::Step::More => Next::More,
                        }
                    }
                },
                Reading::UntilClose if conn.buf.is_empty() => Next::More,
                Reading::UntilClose => Next::Data(conn.buf.split().freeze()),
            };
            match next {
                Next::Data(data) => {
                    if matches!(this.reading, Reading::Length(0)) {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Next::End => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Next::More => {}
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.reading, Reading::UntilClose) => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(BodyError::new(
                        "the upstream closed the connection before the body's end",
                    ))));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(BodyError::new(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.conn, &self.reading) {
            (None, _) => SizeHint::with_exact(0),
            (Some(_), Reading::Length(left)) => SizeHint::with_exact(*left),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;

//! The connection loop of cleartext client connections: HTTP/1.1 served without hyper's server for the request
//! idgate answers most (a keep-alive GET or a small POST), the way nginx and pingora serve it. Each head is parsed
//! once from a buffer the connection keeps ([`super::h1`]), its body (small, of known length) is read whole, the
//! handler runs in this task (no dispatcher, no channel), and the response head and body go out in one write when
//! the body is at hand. No timer is set per request: one per connection checks the header deadline when it fires.
//!
//! Everything else is hyper's: at the first request [`h1::parse_request`] does not take (HTTP/2's preface, an
//! upgrade, a chunked or large body, `Expect`, HTTP/1.0, a head `httparse` refuses, ...), the connection is handed
//! to hyper's server ([`super::hyper_conn`]) with the bytes read so far, at a request boundary, for the rest of its
//! life. So hyper judges every request this path does not understand, exactly as before.
//!
//! Limits as hyper's: a head must be complete within the header deadline (from accept for the first, from the
//! previous response for each next one), at most `max(server.max_header_bytes, 8192)` bytes long; the idle timeout
//! (the caller's [`super::idle`] watchdog) covers the body and everything else.

use std::{cell::RefCell, future::Future, ops::Range, pin::Pin, sync::Arc, time::Duration};

use bytes::BytesMut;
use http::{HeaderName, Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper_util::{rt::TokioExecutor, server::conn::auto};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    time::{Instant, Sleep},
};

use super::{
    drain::Signal,
    h1::{self, BodyOut, Parsed},
    hyper_conn,
    requests::{Busy, ConnState},
    rewind::Rewind,
};
use crate::{
    body::{self, Body},
    forward::Peer,
};

/// Bytes read at a time into an empty buffer: a typical head with a session cookie fits.
const READ_BUF: usize = 8 * 1024;

/// Body data up to this size is copied behind the head, so that head and body go out in one write.
const COALESCE: usize = 64 * 1024;

/// What one connection takes from its listener.
pub struct Conn<'a, H> {
    /// For the connections handed over at their first request (HTTP/1.1, or HTTP/2 by its preface).
    pub detect: &'a auto::Builder<TokioExecutor>,
    /// For those handed over after a request of their own: HTTP/1 only. A connection that has spoken HTTP/1.1 does
    /// not switch to HTTP/2 at a preface (hyper's server refuses that too).
    pub http1_only: &'a hyper::server::conn::http1::Builder,
    /// Longest request head (hyper's limit: `max(max_header_bytes, 8192)`).
    pub max_head: usize,
    /// `server.header_read_timeout`, for each head after the first.
    pub header_timeout: Duration,
    /// The first head's deadline (from accept).
    pub first_deadline: Instant,
    pub state: Arc<ConnState>,
    pub handler: H,
    pub signal: Signal,
}

/// How the wait for the next request head ended.
enum Next {
    Head(h1::Head),
    Handoff(&'static str),
    /// The client closed, the header deadline passed, or shutdown was asked for with no request begun.
    Close,
}

/// Serves the client connection `io` until it closes, handing it to hyper when a request needs hyper.
pub async fn serve<S, H, F>(mut io: S, peer: Peer, conn: Conn<'_, H>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Body>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let Conn { detect, http1_only, max_head, header_timeout, first_deadline, state, handler, mut signal } = conn;
    let mut served_one = false;
    let mut rbuf = BytesMut::with_capacity(READ_BUF);
    let mut wbuf = Vec::new();
    let mut fields: Vec<(HeaderName, Range<usize>)> = Vec::new();
    let mut deadline = first_deadline;
    let watchdog = tokio::time::sleep_until(deadline);
    tokio::pin!(watchdog);
    loop {
        let head = match read_head(&mut io, &mut rbuf, &mut fields, max_head, deadline, watchdog.as_mut(), &mut signal)
            .await
        {
            Next::Head(head) => head,
            Next::Close => return,
            Next::Handoff(why) => {
                tracing::trace!(why, "connection handed to hyper's server");
                let io = Rewind::new(io, rbuf.freeze());
                let protocols = match served_one {
                    false => hyper_conn::Protocols::Detect(detect),
                    true => hyper_conn::Protocols::Http1(http1_only),
                };
                let start = hyper_conn::Start::HandedOver;
                return hyper_conn::serve(io, peer, protocols, state, handler, signal, start).await;
            }
        };
        // In progress from its head on: the first head's deadline no longer applies, and the admin listener does
        // not count a connection sending a body as silent.
        let busy = Busy::new(&state);
        // The body is small and of known length: read it whole (the idle timeout bounds a slow one).
        let need = head.len + head.body_len;
        while rbuf.len() < need {
            rbuf.reserve(need - rbuf.len());
            match io.read_buf(&mut rbuf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let (head_request, mut close, body_len) = (head.is_head(), head.close, head.body_len);
        let head_bytes = rbuf.split_to(head.len).freeze();
        let body = if body_len == 0 { body::empty() } else { body::full(rbuf.split_to(body_len).freeze()) };
        let req = match h1::into_request(head, &head_bytes, &mut fields, body) {
            Ok(req) => req,
            Err(e) => {
                tracing::debug!(error = %e, "refusing a request head");
                let _ = io.write_all(h1::BAD_REQUEST).await;
                return;
            }
        };
        drop(head_bytes);
        // Boxed: the handler's future is kilobytes, and this loop's own future lives as long as the connection.
        let handling = Box::pin(handler(req, peer.clone()));
        let Some(resp) = unless_client_leaves(&mut io, &mut rbuf, max_head, handling).await else {
            return tracing::debug!("the client closed its connection with a request in progress; request dropped");
        };
        drop(busy);
        close |= h1::closes(resp.headers()) || signal.is_requested();
        if let Err(e) = write_response(&mut io, &mut wbuf, resp, head_request, close).await {
            return tracing::debug!(error = %e, "response not delivered; closing the connection");
        }
        if close {
            return;
        }
        served_one = true;
        deadline = Instant::now() + header_timeout;
    }
}

/// Runs the handler while watching the client: a client that closes its connection (or half-closes it) before
/// the answer cancels the request, its upstream exchange included, as hyper's server does, so that nobody can keep
/// requests (and their place under the connection cap) running without a connection. Bytes it sends meanwhile (a
/// pipelined request) are kept for later, up to one head's worth.
async fn unless_client_leaves<S, F>(io: &mut S, rbuf: &mut BytesMut, max_head: usize, handling: F) -> Option<F::Output>
where
    S: AsyncRead + Unpin,
    F: Future + Unpin,
{
    let mut handling = handling;
    loop {
        if rbuf.capacity() - rbuf.len() < 1024 {
            rbuf.reserve(READ_BUF);
        }
        let watching = rbuf.len() < max_head;
        tokio::select! {
            biased;
            resp = &mut handling => return Some(resp),
            read = io.read_buf(rbuf), if watching => match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
        }
    }
}

/// Reads until the buffer holds a whole request head (or one for hyper), the client closes, the header deadline
/// passes, or shutdown is asked for between requests. The watchdog fires at an old deadline at most once per
/// `header_timeout`: it then checks the current one and is set again.
async fn read_head<S: AsyncRead + Unpin>(
    io: &mut S,
    rbuf: &mut BytesMut,
    fields: &mut Vec<(HeaderName, Range<usize>)>,
    max_head: usize,
    deadline: Instant,
    mut watchdog: Pin<&mut Sleep>,
    signal: &mut Signal,
) -> Next {
    // Bytes already looked at for the end of a head: a head trickled in is parsed once it may be whole, not
    // after every read (which would cost the square of its length).
    let mut scanned = 0;
    loop {
        if !rbuf.is_empty() && (h1::may_end_head(rbuf, scanned) || rbuf.len() >= max_head) {
            match h1::parse_request(rbuf, max_head, fields) {
                Parsed::Partial => {}
                Parsed::Request(head) => return Next::Head(head),
                Parsed::Handoff(why) => return Next::Handoff(why),
            }
        }
        scanned = rbuf.len();
        if rbuf.capacity() - rbuf.len() < 1024 {
            rbuf.reserve(READ_BUF);
        }
        let idle = rbuf.is_empty();
        tokio::select! {
            biased;
            read = io.read_buf(rbuf) => match read {
                Ok(0) | Err(_) => return Next::Close,
                Ok(_) => {}
            },
            () = watchdog.as_mut() => {
                if Instant::now() >= deadline {
                    tracing::debug!("no request head within the header deadline; closing the connection");
                    return Next::Close;
                }
                watchdog.as_mut().reset(deadline);
            }
            () = signal.requested(), if idle => return Next::Close,
        }
    }
}

/// Writes `resp`: its head, then its body in the framing [`h1::body_out`] decides. A body that fails, or gives more
/// or fewer bytes than its length, ends the connection (the client sees a cut-off response, never a wrong one).
async fn write_response<S: AsyncWrite + Unpin>(
    io: &mut S,
    wbuf: &mut Vec<u8>,
    resp: Response<Body>,
    head_request: bool,
    close: bool,
) -> std::io::Result<()> {
    let (parts, mut body) = resp.into_parts();
    let exact = if body.is_end_stream() { Some(0) } else { body.size_hint().exact() };
    let out = h1::body_out(head_request, parts.status, exact);
    wbuf.clear();
    with_date(|date| h1::write_response_head(wbuf, parts.status, &parts.headers, out, close, date));
    drop(parts);
    let (chunked, mut left) = match out {
        BodyOut::None | BodyOut::Head(_) => return io.write_all(wbuf).await,
        BodyOut::Length(n) => (false, n),
        BodyOut::Chunked => (true, u64::MAX),
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| std::io::Error::other(format!("response body failed: {e}")))?;
        let Ok(data) = frame.into_data() else { continue }; // trailers are not sent on HTTP/1.1
        if data.is_empty() {
            continue;
        }
        if !chunked {
            left = left.checked_sub(data.len() as u64).ok_or_else(too_long)?;
        }
        if wbuf.len() + data.len() <= COALESCE {
            if chunked {
                h1::write_chunk(wbuf, &data);
            } else {
                wbuf.extend_from_slice(&data);
            }
        } else {
            if chunked {
                h1::write_chunk_size(wbuf, data.len());
            }
            io.write_all(wbuf).await?;
            wbuf.clear();
            io.write_all(&data).await?;
            if chunked {
                wbuf.extend_from_slice(b"\r\n");
            }
        }
        if body.is_end_stream() {
            break;
        }
        // More is coming, maybe later (a stream of events): what is here goes out now.
        io.write_all(wbuf).await?;
        wbuf.clear();
    }
    if chunked {
        wbuf.extend_from_slice(h1::LAST_CHUNK);
    } else if left != 0 {
        io.write_all(wbuf).await?;
        return Err(std::io::Error::other("response body shorter than its length"));
    }
    io.write_all(wbuf).await
}

fn too_long() -> std::io::Error {
    std::io::Error::other("response body longer than its length")
}

/// Calls `f` with the current `Date` value (IMF-fixdate), formatted once a second per thread.
fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = std::time::SystemTime::now();
    let secs = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            *cached = (secs, httpdate::fmt_http_date(now));
        }
        f(cached.1.as_bytes())
    })
}

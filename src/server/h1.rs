//! HTTP/1.1 on a client connection without hyper's server, for the common request only: the request head parsed
//! with `httparse` (hyper's parser, with hyper's settings), its header values taken as slices of the read buffer
//! (no copy), and the response head written into one buffer. Pure functions over bytes: the connection loop is
//! [`super::http1`].
//!
//! One rule set with hyper's server, by construction: this path takes a request only when its reading is beyond
//! doubt — HTTP/1.1, an origin-form target, no `Transfer-Encoding`, at most one `Content-Length` of plain digits
//! and a small body, no `Upgrade`, `Expect` or `CONNECT`. Anything else, and anything `httparse` refuses, is not
//! judged here at all: the connection is handed to hyper's server with the bytes read so far ([`Parsed::Handoff`]),
//! which answers or refuses it exactly as it always has. A request this path takes, hyper would have read the same
//! way (`tests/it/own_http1.rs` checks it on thousands of mutated heads); [`crate::framing`]'s rules (one `Host`)
//! then apply to it as to hyper's.

use std::ops::Range;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version, header};

/// Most header fields in a request head (hyper's default: more is hyper's 431).
pub const MAX_HEADERS: usize = 100;

/// Largest request body this path reads (whole, before the request is handled, as nginx buffers bodies); a longer
/// one is hyper's, which streams it. The kept upstream connection sends up to the same size in one write.
pub const MAX_BODY: usize = crate::forward::affinity::MAX_KEPT_BODY as usize;

/// A request head this path serves, parsed from the start of the buffer.
#[derive(Debug)]
pub struct Head {
    /// Bytes of the head, its final CRLF included.
    pub len: usize,
    /// Bytes of body after it (`Content-Length`, 0 without one).
    pub body_len: usize,
    /// The client asked to close the connection after this request (`Connection: close`).
    pub close: bool,
    method: Method,
    target: Range<usize>,
}

impl Head {
    /// True for a `HEAD` request: its answer has no body.
    pub fn is_head(&self) -> bool {
        self.method == Method::HEAD
    }
}

/// What the bytes at the start of a client connection's buffer hold.
#[derive(Debug)]
pub enum Parsed {
    /// Not a whole head yet: read more.
    Partial,
    /// A request this path serves.
    Request(Head),
    /// Anything else: hyper's server takes the connection from these bytes on. The reason is for debug logs.
    Handoff(&'static str),
}

/// Parses the request head at the start of `buf`, recording each header field's name and the position of its value
/// in `fields` (cleared first, reused across requests). `max_head` is hyper's limit for a head
/// (`max(server.max_header_bytes, 8192)`): a longer one is handed over for hyper's 431.
pub fn parse_request(buf: &[u8], max_head: usize, fields: &mut Vec<(HeaderName, Range<usize>)>) -> Parsed {
    fields.clear();
    let mut parsed = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut parsed);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max_head => return Parsed::Handoff("head too large"),
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Handoff("not a valid request head"),
    };
    if len > max_head {
        return Parsed::Handoff("head too large");
    }
    if req.version != Some(1) {
        return Parsed::Handoff("not HTTP/1.1");
    }
    let (Some(method), Some(path)) = (req.method, req.path) else { return Parsed::Handoff("no request line") };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else { return Parsed::Handoff("method") };
    if method == Method::CONNECT {
        return Parsed::Handoff("CONNECT");
    }
    if !path.starts_with('/') {
        return Parsed::Handoff("not an origin-form target");
    }
    let (mut lengths, mut body_len, mut close) = (0, 0, false);
    for field in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(field.name.as_bytes()) else { return Parsed::Handoff("header name") };
        match name {
            header::CONTENT_LENGTH => {
                lengths += 1;
                match plain_length(field.value) {
                    Some(n) if n <= MAX_BODY => body_len = n,
                    Some(_) => return Parsed::Handoff("a body too large to read whole"),
                    None => return Parsed::Handoff("Content-Length not plain digits"),
                }
            }
            header::TRANSFER_ENCODING => return Parsed::Handoff("Transfer-Encoding"),
            header::UPGRADE => return Parsed::Handoff("Upgrade"),
            header::EXPECT => return Parsed::Handoff("Expect"),
            header::CONNECTION => {
                for token in field.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"upgrade") {
                        return Parsed::Handoff("Connection: upgrade");
                    }
                    close |= token.eq_ignore_ascii_case(b"close");
                }
            }
            _ => {}
        }
        fields.push((name, offset_in(buf, field.value)));
    }
    if lengths > 1 {
        return Parsed::Handoff("several Content-Length");
    }
    let target = offset_in(buf, path.as_bytes());
    Parsed::Request(Head { len, body_len, close, method, target })
}

/// True when `buf` may hold a whole head, given that its first `scanned` bytes did not: the bytes from there on
/// (with the two before, where a line end may have begun) hold the end of a header section, `\n\r\n` or `\n\n`
/// (`httparse` also takes bare LF line ends). hyper's server looks for the end the same way before parsing.
pub fn may_end_head(buf: &[u8], scanned: usize) -> bool {
    let from = scanned.saturating_sub(2).min(buf.len());
    let tail = &buf[from..];
    tail.windows(2).enumerate().any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && tail.get(i + 2) == Some(&b'\n')))
}

/// A `Content-Length` value of 1 to 19 digits and nothing else (hyper also takes lists of one repeated length:
/// those are hyper's to judge).
fn plain_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    usize::try_from(n).ok()
}

/// Where `part`, a slice of `buf`, lies in it.
fn offset_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// A request head's target or header value that the `http` types refuse after `httparse` took it (a target
/// `Uri` does not accept): answered 400, as hyper answers a target it cannot parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("request head refused: {0}")]
pub struct BadHead(pub &'static str);

/// Builds the request from its head's bytes (`head`, exactly the `len` bytes [`parse_request`] measured) and the
/// `fields` it recorded; values and target share `head`'s memory.
pub fn into_request<B>(
    parsed: Head,
    head: &Bytes,
    fields: &mut Vec<(HeaderName, Range<usize>)>,
    body: B,
) -> Result<Request<B>, BadHead> {
    let uri = Uri::from_maybe_shared(head.slice(parsed.target)).map_err(|_| BadHead("invalid request target"))?;
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, range) in fields.drain(..) {
        let value = HeaderValue::from_maybe_shared(head.slice(range)).map_err(|_| BadHead("invalid header value"))?;
        headers.append(name, value);
    }
    let mut req = Request::new(body);
    *req.method_mut() = parsed.method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Ok(req)
}

/// How a response's body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyOut {
    /// No body and no length (1xx, 204, 304).
    None,
    /// No body bytes, as the answer to `HEAD`: the head's own `Content-Length` describes the resource, or else the
    /// length the body would have had, when that is known and not zero.
    Head(Option<u64>),
    /// Exactly this many bytes, announced by `Content-Length`.
    Length(u64),
    /// Chunked: the body's length is not known in advance.
    Chunked,
}

/// Decides a response's framing from the request's method, the status and the body's exact length when known, as
/// hyper's server does.
pub fn body_out(head_request: bool, status: StatusCode, exact: Option<u64>) -> BodyOut {
    if status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return BodyOut::None;
    }
    match (head_request, exact) {
        (true, hint) => BodyOut::Head(hint.filter(|n| *n > 0)),
        (false, Some(n)) => BodyOut::Length(n),
        (false, None) => BodyOut::Chunked,
    }
}

/// Writes a response head: the status line, every header but the framing ones, the framing `out` decided, `Date`
/// when missing, and `Connection: close` when the connection closes after it (`close`) and the headers do not say so
/// already.
pub fn write_response_head(
    buf: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    out: BodyOut,
    close: bool,
    date: &[u8],
) {
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(status.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    buf.extend_from_slice(b"\r\n");
    let keeps_length = matches!(out, BodyOut::Head(_));
    for (name, value) in headers {
        let framing = *name == header::TRANSFER_ENCODING || *name == header::CONTENT_LENGTH;
        if framing && !(keeps_length && *name == header::CONTENT_LENGTH) {
            continue;
        }
        field(buf, name.as_str().as_bytes(), value.as_bytes());
    }
    match out {
        BodyOut::Length(n) => field(buf, b"content-length", n.to_string().as_bytes()),
        BodyOut::Chunked => field(buf, b"transfer-encoding", b"chunked"),
        BodyOut::Head(Some(n)) if !headers.contains_key(header::CONTENT_LENGTH) => {
            field(buf, b"content-length", n.to_string().as_bytes());
        }
        BodyOut::Head(_) | BodyOut::None => {}
    }
    if !headers.contains_key(header::DATE) {
        field(buf, b"date", date);
    }
    if close && !closes(headers) {
        field(buf, b"connection", b"close");
    }
    buf.extend_from_slice(b"\r\n");
}

fn field(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    buf.extend_from_slice(name);
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// True when the response's `Connection` says `close`: the connection then ends after it (idgate's answers to
/// ambiguous framing say so).
pub fn closes(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// Appends one chunk of a chunked body: its size in hex, CRLF, the data, CRLF.
pub fn write_chunk(buf: &mut Vec<u8>, data: &[u8]) {
    write_chunk_size(buf, data.len());
    buf.extend_from_slice(data);
    buf.extend_from_slice(b"\r\n");
}

/// Appends a chunk's size line (its data and CRLF follow), for data written on its own.
pub fn write_chunk_size(buf: &mut Vec<u8>, len: usize) {
    buf.extend_from_slice(format!("{len:x}\r\n").as_bytes());
}

/// The last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The answer to a head [`into_request`] refused, after which the connection closes.
pub const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

#[cfg(test)]
mod tests;

//! HTTP/1.1 on a kept upstream connection ([`super::affinity`]), without hyper's client: the request head written
//! into one buffer (sent with its body in one write), the response head parsed with `httparse`, its body framing
//! decided by one rule set ([`parse_response`]), and a strict chunked decoder ([`Chunked`]). Pure functions over
//! bytes: no I/O here.
//!
//! The rules follow RFC 9112 §6 as hyper's client applies them, and are stricter where hyper is lenient in a way an
//! upstream could use to desynchronise a kept connection: `Content-Length` together with `Transfer-Encoding`, a
//! transfer coding other than `chunked`, a bare LF in a chunk line, and bytes left over after a response are
//! refused (the connection is not reused), where hyper picks one reading.

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

/// Largest response head read (hyper's client default: 8 KiB + 100 × 4 KiB).
pub const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// Most header fields in a response head (hyper's default).
pub const MAX_HEADERS: usize = 100;

/// Largest chunk-size line, extensions included (hyper allows 16 KiB of extensions in a whole body).
pub const MAX_CHUNK_LINE: usize = 16 * 1024;

/// Largest trailer section of a chunked body; its fields are read and dropped.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// An upstream response this module refuses, with the rule it broke. `Display` is for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed upstream response: {0}")]
pub struct Malformed(pub &'static str);

/// How a request's body goes out on a kept connection: none, or these many bytes after the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    None,
    Length(u64),
}

/// Writes an HTTP/1.1 request head: `method target HTTP/1.1`, every header of `headers` but the framing ones, and
/// the framing of `body` (`Content-Length` when there is a body, or when the client sent one). Header names come
/// out lowercase, as hyper writes them. Every piece is already validated by its `http` type (no CR, LF or NUL can be
/// in a name, value, method or target), so nothing written here can split the head.
pub fn write_request_head(out: &mut Vec<u8>, method: &Method, target: &str, headers: &HeaderMap, body: RequestBody) {
    out.reserve(32 + target.len() + headers.len() * 32);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let len = match body {
        RequestBody::Length(n) => Some(n),
        RequestBody::None if headers.contains_key(header::CONTENT_LENGTH) => Some(0),
        RequestBody::None => None,
    };
    if let Some(n) = len {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(n.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: `HEAD`, 204, 304, or `Content-Length: 0`.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the upstream closes (no length given): the connection is not reused.
    UntilClose,
}

/// A final response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    /// The header fields as received (hop-by-hop ones included: the forwarder removes them).
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another request once this body is read: HTTP/1.1 without `Connection: close`, and
    /// a body with a known end.
    pub reusable: bool,
}

/// What the bytes read so far hold.
#[derive(Debug)]
pub enum Parsed {
    /// Not a whole head yet: read more.
    Partial,
    /// An informational (1xx) head of this many bytes, to skip: the final one follows.
    Informational(usize),
    /// A final head of this many bytes.
    Final(usize, ResponseHead),
}

/// Parses the response head at the start of `buf` to a request of `method`, and decides its framing:
/// - 1xx but 101 are skipped; 101 is refused (no upgrade goes over a kept connection);
/// - `HEAD`, 204 and 304 have no body, whatever their headers say;
/// - `Transfer-Encoding` must be exactly `chunked`, on an HTTP/1.1 response, without `Content-Length`;
/// - every `Content-Length` value must be the same decimal number;
/// - with neither, the body runs until the upstream closes.
pub fn parse_response(buf: &[u8], method: &Method) -> Result<Parsed, Malformed> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => return Err(Malformed("head too large")),
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(Malformed(httparse_reason(e))),
    };
    if len > MAX_HEAD_BYTES {
        return Err(Malformed("head too large"));
    }
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| Malformed("invalid status code"))?;
    match code {
        101 => return Err(Malformed("101 without an upgrade request")),
        100..=199 => return Ok(Parsed::Informational(len)),
        _ => {}
    }
    let http11 = resp.version == Some(1);
    let mut headers = HeaderMap::with_capacity(resp.headers.len());
    let mut close = !http11;
    for field in resp.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| Malformed("invalid header name"))?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| Malformed("invalid header value"))?;
        if name == header::CONNECTION && has_token(&value, "close") {
            close = true;
        }
        headers.append(name, value);
    }
    let framing = framing(&headers, status, method, http11)?;
    let reusable = !close && framing != Framing::UntilClose;
    Ok(Parsed::Final(len, ResponseHead { status, headers, framing, reusable }))
}

fn framing(headers: &HeaderMap, status: StatusCode, method: &Method, http11: bool) -> Result<Framing, Malformed> {
    let te = headers.contains_key(header::TRANSFER_ENCODING);
    let cl = headers.contains_key(header::CONTENT_LENGTH);
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED || method == Method::HEAD {
        return Ok(Framing::None);
    }
    if te {
        if !http11 {
            return Err(Malformed("Transfer-Encoding on an HTTP/1.0 response"));
        }
        if cl {
            return Err(Malformed("both Content-Length and Transfer-Encoding"));
        }
        let mut codings = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(|c| c.trim_ascii());
        return match (codings.next(), codings.next()) {
            (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            _ => Err(Malformed("a transfer coding other than chunked")),
        };
    }
    if !cl {
        return Ok(Framing::UntilClose);
    }
    match content_length(headers)? {
        0 => Ok(Framing::None),
        n => Ok(Framing::Length(n)),
    }
}

/// The one length every `Content-Length` value (and list member) states.
fn content_length(headers: &HeaderMap) -> Result<u64, Malformed> {
    let mut found: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for member in value.as_bytes().split(|b| *b == b',') {
            let digits = member.trim_ascii();
            if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
                return Err(Malformed("invalid Content-Length"));
            }
            let n = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if found.is_some_and(|f| f != n) {
                return Err(Malformed("differing Content-Length values"));
            }
            found = Some(n);
        }
    }
    found.ok_or(Malformed("invalid Content-Length"))
}

/// True when the comma-separated `value` holds `token` (case-insensitive).
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status line",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "more than 100 header fields",
        httparse::Error::Version => "not HTTP/1.0 or HTTP/1.1",
    }
}

/// One step of a chunked body's decoding.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// This many bytes of data, at the start of the buffer passed in: take them.
    Data(usize),
    /// The buffer ends inside framing: read more.
    More,
    /// The last chunk and the trailer section are read: the body has ended.
    End,
}

/// A chunked body's decoder: `size[;ext] CRLF data CRLF … 0 CRLF trailers CRLF`, every line ended by CRLF. The
/// size is 1 to 16 hex digits; extensions are read and dropped (no control characters but HTAB); trailer fields
/// are read and dropped.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl Chunked {
    /// Decodes from the start of `buf`: returns how many framing bytes to drop first and what follows them. The
    /// caller drops `consumed` bytes, then (for [`Step::Data`]) takes that many data bytes, and calls again.
    pub fn step(&mut self, buf: &[u8]) -> Result<(usize, Step), Malformed> {
        let mut consumed = 0;
        loop {
            let rest = &buf[consumed..];
            match self.state {
                ChunkState::Done => return Ok((consumed, Step::End)),
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok((consumed, Step::More));
                    }
                    let n = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let left = left - n as u64;
                    self.state = if left == 0 { ChunkState::DataEnd } else { ChunkState::Data(left) };
                    return Ok((consumed, Step::Data(n)));
                }
                ChunkState::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        consumed += 2;
                        self.state = ChunkState::Size;
                    }
                    [] | [b'\r'] => return Ok((consumed, Step::More)),
                    _ => return Err(Malformed("chunk data not followed by CRLF")),
                },
                ChunkState::Size => {
                    let Some(line) = line(rest, MAX_CHUNK_LINE, "chunk size line too long")? else {
                        return Ok((consumed, Step::More));
                    };
                    consumed += line.len() + 2;
                    self.state = match chunk_size(line)? {
                        0 => ChunkState::Trailers,
                        n => ChunkState::Data(n),
                    };
                }
                ChunkState::Trailers => {
                    let budget = MAX_TRAILER_BYTES.saturating_sub(self.trailer_bytes);
                    let Some(line) = line(rest, budget, "trailer section too large")? else {
                        return Ok((consumed, Step::More));
                    };
                    consumed += line.len() + 2;
                    self.trailer_bytes += line.len() + 2;
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                    } else if !is_field_line(line) {
                        return Err(Malformed("invalid trailer field"));
                    }
                }
            }
        }
    }
}

/// The line at the start of `buf` without its CRLF, `None` when it is not complete yet. A bare LF, a CR not
/// followed by LF, or a line longer than `max` is refused.
fn line<'a>(buf: &'a [u8], max: usize, too_long: &'static str) -> Result<Option<&'a [u8]>, Malformed> {
    match buf.iter().position(|b| *b == b'\n' || *b == b'\r') {
        Some(i) if i > max => Err(Malformed(too_long)),
        Some(i) if buf[i] == b'\n' => Err(Malformed("bare LF in chunked framing")),
        Some(i) => match buf.get(i + 1) {
            Some(b'\n') => Ok(Some(&buf[..i])),
            Some(_) => Err(Malformed("bare CR in chunked framing")),
            None => Ok(None),
        },
        None if buf.len() > max => Err(Malformed(too_long)),
        None => Ok(None),
    }
}

/// A chunk-size line's size: 1–16 hex digits, optional blanks, optional extensions (`;` then anything but
/// control characters other than HTAB).
fn chunk_size(line: &[u8]) -> Result<u64, Malformed> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(Malformed("chunk size is not a hex number"));
    }
    if digits > 16 {
        return Err(Malformed("chunk size too large"));
    }
    let size = line[..digits].iter().fold(0u64, |n, d| (n << 4) | u64::from(hex_value(*d)));
    let after = line[digits..].trim_ascii_start();
    match after.first() {
        None => Ok(size),
        Some(b';') if after.iter().all(|b| *b == b'\t' || !b.is_ascii_control()) => Ok(size),
        Some(_) => Err(Malformed("chunk size is not a hex number")),
    }
}

fn hex_value(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d - b'A' + 10,
    }
}

/// A trailer line: a token, `:`, then no control characters but HTAB.
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|b| *b == b':') else { return false };
    // `value` starts at the colon, which passes the value rule like any visible character.
    let (name, value) = line.split_at(colon);
    !name.is_empty()
        && name.iter().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
        && value.iter().all(|b| *b == b'\t' || !b.is_ascii_control())
}

#[cfg(test)]
mod tests;

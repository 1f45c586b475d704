//! The request-framing rules hyper's server leaves to the service (RFC 9112 §3.2, §6.1), checked before anything
//! else looks at an HTTP/1 request, the way nginx checks them: exactly one `Host` line (HTTP/1.1 needs one) and no
//! transfer coding but a single `chunked`.
//!
//! hyper already refuses duplicate or malformed `Content-Length`, obs-fold, bare CR, `Transfer-Encoding` on
//! HTTP/1.0 and any coding list that does not end in `chunked`. A request with both `Content-Length` and
//! `Transfer-Encoding` it reads by the coding alone, drops the length before the service sees it and closes the
//! connection after the answer (RFC 9112 §6.1 allows that or a refusal), so nothing after that body is ever read as
//! a request. What it passes on — `gzip, chunked`, a second `Host` — is safe for the upstream only because idgate
//! re-frames every request it forwards; a front that reads the same bytes otherwise (nginx refuses both) would
//! still disagree with us about the body or which host the request names. So idgate refuses them too, and closes
//! the connection.

use http::{HeaderMap, Version, header};

/// A request whose framing or target host is ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("an HTTP/1.1 request without a Host header")]
    NoHost,
    #[error("more than one Host header")]
    SeveralHosts,
    #[error("a transfer coding other than chunked")]
    UnknownCoding,
}

impl FramingError {
    /// RFC 9112 §6.1: a coding the server does not understand is `501`; the rest is a bad request.
    pub fn status(self) -> http::StatusCode {
        match self {
            FramingError::UnknownCoding => http::StatusCode::NOT_IMPLEMENTED,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// Checks an HTTP/1 request's `Host` and framing headers; HTTP/2 and later have neither (hyper refuses
/// connection-specific headers there).
pub fn check(version: Version, headers: &HeaderMap) -> Result<(), FramingError> {
    if version > Version::HTTP_11 {
        return Ok(());
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(FramingError::SeveralHosts),
        (None, _) if version == Version::HTTP_11 => return Err(FramingError::NoHost),
        _ => {}
    }
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let Some(first) = codings.next() else { return Ok(()) };
    // hyper hands the value over with its surrounding whitespace trimmed; the coding name is case-insensitive.
    if codings.next().is_some() || !first.as_bytes().eq_ignore_ascii_case(b"chunked") {
        return Err(FramingError::UnknownCoding);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in lines {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn one_host_and_one_framing_header_pass() {
        let v11 = Version::HTTP_11;
        assert_eq!(check(v11, &headers(&[("host", "a")])), Ok(()));
        assert_eq!(check(v11, &headers(&[("host", "a"), ("content-length", "5")])), Ok(()));
        assert_eq!(check(v11, &headers(&[("host", "a"), ("transfer-encoding", "chunked")])), Ok(()));
        assert_eq!(check(v11, &headers(&[("host", "a"), ("transfer-encoding", "Chunked")])), Ok(()));
        // HTTP/1.0 needs no Host.
        assert_eq!(check(Version::HTTP_10, &headers(&[])), Ok(()));
        assert_eq!(check(Version::HTTP_10, &headers(&[("host", "a")])), Ok(()));
    }

    #[test]
    fn host_must_be_there_once() {
        assert_eq!(check(Version::HTTP_11, &headers(&[])), Err(FramingError::NoHost));
        let two = headers(&[("host", "a"), ("host", "b")]);
        assert_eq!(check(Version::HTTP_11, &two), Err(FramingError::SeveralHosts));
        assert_eq!(check(Version::HTTP_10, &two), Err(FramingError::SeveralHosts));
        // The same host twice is still two lines.
        assert_eq!(check(Version::HTTP_11, &headers(&[("host", "a"), ("host", "a")])), Err(FramingError::SeveralHosts));
    }

    #[test]
    fn codings_other_than_one_chunked_are_refused_with_their_status() {
        for te in ["gzip, chunked", "identity, chunked", "chunked, chunked", "xchunked", "chunked;q=1"] {
            let h = headers(&[("host", "a"), ("transfer-encoding", te)]);
            assert_eq!(check(Version::HTTP_11, &h), Err(FramingError::UnknownCoding), "{te}");
        }
        let two = headers(&[("host", "a"), ("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")]);
        assert_eq!(check(Version::HTTP_11, &two), Err(FramingError::UnknownCoding));
        assert_eq!(FramingError::UnknownCoding.status(), http::StatusCode::NOT_IMPLEMENTED);
        assert_eq!(FramingError::NoHost.status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(FramingError::SeveralHosts.status(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn http2_requests_are_not_checked() {
        assert_eq!(check(Version::HTTP_2, &headers(&[])), Ok(()));
        assert_eq!(check(Version::HTTP_2, &headers(&[("host", "a"), ("host", "b")])), Ok(()));
    }
}

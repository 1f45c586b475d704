//! The one body type every response and forwarded request uses, and small constructors for it.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, Limited, combinators::BoxBody};

/// Errors a body can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body: upstream bodies pass through as they are, synthetic ones are `Full`. Streamed bodies are hyper's
/// `Incoming` or a kept upstream connection's ([`crate::forward::h1`]); synthetic bodies cannot fail.
pub type Body = BoxBody<Bytes, BodyError>;

/// Why a streamed body failed (a concrete type: hyper's bounds on a response body's error need one).
#[derive(Debug)]
pub struct BodyError {
    cause: BoxError,
    /// The client's request body failed (see [`from_client`]), not an upstream's.
    from_client: bool,
}

impl BodyError {
    /// Wraps the cause.
    pub fn new(cause: impl Into<BoxError>) -> Self {
        Self { cause: cause.into(), from_client: false }
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.cause.fmt(f)
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.source()
    }
}

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Wraps a streamed body.
pub fn boxed(body: hyper::body::Incoming) -> Body {
    body.map_err(BodyError::new).boxed()
}

/// Wraps a client's request body: its errors are marked as the client's, so a request whose chunked framing breaks
/// while it is sent on is answered 400, not 502 (see [`client_failed`]).
pub fn from_client(body: hyper::body::Incoming) -> Body {
    body.map_err(|e| BodyError { cause: e.into(), from_client: true }).boxed()
}

/// True when `e`, or an error it was caused by, is a client request body's failure.
pub fn client_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<BodyError>().is_some_and(|b| b.from_client) {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Reads a whole body, refusing more than `max` bytes. Only for small bodies we produce or expect (issuer answers,
/// form posts); proxied bodies are never collected.
pub async fn collect_limited<B>(body: B, max: usize) -> Result<Bytes, BoxError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    Ok(Limited::new(body, max).collect().await?.to_bytes())
}

/// What a response builder that failed becomes: a bare 500 and one error line, never a panic on the request path.
/// Builders fail only on a header value that is not header-safe, which validated settings never produce; use as
/// `builder.body(b).unwrap_or_else(body::internal_error)`.
pub fn internal_error(e: http::Error) -> http::Response<Body> {
    tracing::error!(error = %e, "a response header was not valid; answering 500");
    let mut resp = http::Response::new(empty());
    *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    resp
}

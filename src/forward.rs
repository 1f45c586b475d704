//! The proxy hop: rewrites the request for the upstream (URI, HTTP/1.1, hop-by-hop headers, `X-Forwarded-*`),
//! sends it on the pooled client and streams both bodies through untouched. Upgrades to an allowed protocol
//! (`upstream.allowed_upgrades`, WebSocket by default) are spliced once both sides agreed; any other is refused.
//! Knows nothing of sessions or claims. HTTP/1.1 clients of a plain-http upstream keep an upstream connection each
//! ([`affinity`]); everything else goes through the shared pool.
//!
//! Order by construction: [`Forwarder::begin`] is the first step of every proxied request. It removes the
//! hop-by-hop headers — the fixed list and every header the client's `Connection` names — and decides the upgrade;
//! only the [`Inbound`] it returns can be sent. Identity headers are written into the [`Inbound`], and forwarding
//! headers by [`Forwarder::send`], after that, and nothing removes headers by a `Connection` list afterwards: a
//! client's `Connection: x-auth-request-email` can only ever remove the client's own copy. On the way back, the
//! upstream's hop-by-hop headers are removed inside [`Forwarder::send`], before idgate adds anything to the
//! response (`Set-Cookie`, `X-Request-Id`).

pub mod affinity;
pub mod h1;

use std::{net::IpAddr, sync::Arc, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use url::Url;

use crate::{
    body::{self, Body},
    client::HttpClient,
};

/// The upstream failed us. `Display` is for logs; the client sees a short page.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream connection failed: {0}")]
    Connect(String),
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    /// The client's request body failed while it was being sent on (bad chunked framing, a connection cut short):
    /// the client's fault, not the upstream's.
    #[error("client request body unreadable: {0}")]
    ClientBody(String),
}

impl UpstreamError {
    /// Label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Protocol(_) => "protocol",
            UpstreamError::ClientBody(_) => "client_body",
        }
    }
}

/// An `Upgrade` the client asked for that is not in `upstream.allowed_upgrades`: refused (400), never tunnelled.
#[derive(Debug, thiserror::Error)]
#[error("upgrade to {protocol:?} refused: not in upstream.allowed_upgrades")]
pub struct UpgradeRefused {
    /// The refused protocol as the client wrote it (a short token), or `"?"`.
    pub protocol: String,
}

/// A client request on its way to the upstream, made by [`Forwarder::begin`]: hop-by-hop headers removed, the
/// upgrade (if any) allowed. Its headers may be changed (identity headers); nothing removes them by name any more.
#[derive(Debug)]
pub struct Inbound {
    req: Request<Body>,
    /// The allowed protocol the client asked to switch to.
    upgrade: Option<HeaderValue>,
}

impl Inbound {
    /// The request's headers (hop-by-hop ones already gone).
    pub fn headers(&self) -> &HeaderMap {
        self.req.headers()
    }
    /// The request's headers, to add identity headers to.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        self.req.headers_mut()
    }
    /// The request target's authority, when it has one (HTTP/2's `:authority`, an absolute-form target).
    pub fn authority(&self) -> Option<&str> {
        self.req.uri().authority().map(|a| a.as_str())
    }
    /// The request's method and target.
    pub fn method(&self) -> &http::Method {
        self.req.method()
    }
    /// The request's target as received (normalised path, query).
    pub fn uri(&self) -> &Uri {
        self.req.uri()
    }
    /// Takes the body out (an empty one is left), to read a small one idgate must look at.
    pub fn take_body(&mut self) -> Body {
        std::mem::replace(self.req.body_mut(), body::empty())
    }
    /// The request itself (hop-by-hop headers already gone), for a step that answers instead of forwarding.
    pub fn into_request(self) -> Request<Body> {
        self.req
    }
    /// Puts a body back (the one taken, or a preserved form post's).
    pub fn set_body(&mut self, b: Body) {
        *self.req.body_mut() = b;
    }
}

#[cfg(test)]
impl Inbound {
    /// A request as [`Forwarder::begin`] would hand it on (no upgrade), for unit tests of the steps after it.
    pub(crate) fn for_tests(req: Request<Body>) -> Self {
        Inbound { req, upgrade: None }
    }
}

/// Facts about the client connection the hop needs.
#[derive(Debug, Clone)]
pub struct Peer {
    pub ip: IpAddr,
    /// The client reached us over TLS.
    pub tls: bool,
    /// The upstream connection this client connection keeps, when it may keep one.
    pub upstream: Option<Arc<affinity::UpstreamSlot>>,
    /// What a spliced upgrade keeps of the client connection; `None` for idgate's auxiliary servers' callers.
    pub tunnel: Option<Tunnel>,
    /// `ip` as a header value, made once per connection.
    ip_value: HeaderValue,
}

/// What a spliced upgrade (a WebSocket) keeps of its client connection once hyper has handed the socket over: the
/// connection's place under the listener's cap, and its idle timeout, so a tunnel is never held for free.
#[derive(Debug, Clone)]
pub struct Tunnel {
    pub idle: Duration,
    /// The client socket's activity (the upgraded socket still records it).
    pub activity: crate::server::idle::Activity,
    pub slot: Arc<crate::server::Slot>,
}

impl Peer {
    /// A client at `ip` whose requests use the shared pool.
    pub fn new(ip: IpAddr, tls: bool) -> Self {
        #[allow(clippy::expect_used, reason = "static: an IP address prints as hex digits, '.' and ':' only")]
        let ip_value = HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value");
        Self { ip, tls, upstream: None, tunnel: None, ip_value }
    }
}

/// Sends requests to the one upstream.
#[derive(Debug)]
pub struct Forwarder {
    client: HttpClient,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    base_path: String,
    timeout: Duration,
    trusted: Vec<IpNet>,
    /// Kept per-client-connection upstream connections; `None` for https upstreams.
    dialer: Option<affinity::Dialer>,
    /// Lowercase protocol names a client may upgrade to (`upstream.allowed_upgrades`).
    allowed_upgrades: Vec<String>,
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
];

/// Forwarding headers set by idgate, refused from untrusted peers in any spelling.
const FORWARDING: [&str; 9] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-real-ip",
    "forwarded",
];

/// Headers a `Connection` list never removes: the request's framing and target, and the forwarding headers (which
/// follow their own trust rules). Identity headers need no entry: they are written after the removal.
const NEVER_BY_CONNECTION: [&str; 2] = ["host", "content-length"];

impl Forwarder {
    /// A forwarder to `upstream`: `timeout` for the response head, `connect_timeout` for kept connections (the
    /// pool's client has its own), which it counts in `kept`; clients may upgrade to `allowed_upgrades` only.
    pub fn new(
        client: HttpClient,
        upstream: &Url,
        timeout: Duration,
        connect_timeout: Duration,
        trusted: Vec<IpNet>,
        kept: Arc<std::sync::atomic::AtomicUsize>,
        allowed_upgrades: &[String],
    ) -> Self {
        #[allow(clippy::expect_used, reason = "start-up, on a URL validated at load")]
        let uri: Uri = upstream.as_str().parse().expect("a validated URL is a valid URI");
        let scheme = uri.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP);
        #[allow(clippy::expect_used, reason = "start-up, on a URL validated at load to have a host")]
        let authority = uri.authority().cloned().expect("a validated upstream URL has a host");
        let dialer =
            (scheme == http::uri::Scheme::HTTP).then(|| affinity::Dialer::new(&authority, connect_timeout, kept));
        Self {
            client,
            scheme,
            authority,
            base_path: upstream.path().trim_end_matches('/').to_owned(),
            timeout,
            trusted,
            dialer,
            allowed_upgrades: allowed_upgrades.iter().map(|p| p.to_ascii_lowercase()).collect(),
        }
    }

    /// True when `ip` is a trusted proxy whose forwarding headers are believed.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The first step of every proxied request: decides the upgrade (refused unless every protocol the client
    /// offers is allowed) and removes the hop-by-hop headers, those `Connection` names included.
    pub fn begin(&self, mut req: Request<Body>) -> Result<Inbound, UpgradeRefused> {
        let upgrade = upgrade_protocol(req.headers());
        if let Some(offered) = &upgrade {
            let text = offered.to_str().unwrap_or("");
            // Every protocol offered must be allowed: the upstream may pick any of them. Non-text offers nothing.
            if let Some(p) = text.split(',').map(str::trim).find(|p| !self.upgrade_allowed(p)) {
                let short = !p.is_empty() && p.len() <= 32 && p.bytes().all(|b| b.is_ascii_graphic());
                return Err(UpgradeRefused { protocol: if short { p.to_owned() } else { "?".into() } });
            }
        }
        remove_hop_by_hop(req.headers_mut());
        Ok(Inbound { req, upgrade })
    }

    /// True when `protocol` (`name` or `name/version`) is on the allow-list.
    fn upgrade_allowed(&self, protocol: &str) -> bool {
        let name = protocol.split('/').next().unwrap_or("").trim();
        !name.is_empty() && self.allowed_upgrades.iter().any(|a| a.eq_ignore_ascii_case(name))
    }

    /// Proxies `req` and returns the upstream's streaming response.
    pub async fn send(&self, req: Inbound, peer: Peer) -> Result<Response<Body>, UpstreamError> {
        let Inbound { mut req, upgrade } = req;
        // One request at a time on this client connection: it may keep an upstream connection.
        let one_at_a_time = req.version() <= Version::HTTP_11 && upgrade.is_none();
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();

        let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut target = String::with_capacity(self.base_path.len() + path_and_query.len());
        target.push_str(&self.base_path);
        target.push_str(path_and_query);
        let host = parts
            .headers
            .get(header::HOST)
            .cloned()
            .or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()))
            .or_else(|| HeaderValue::from_str(self.authority.as_str()).ok());
        parts.uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(target)
            .build()
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        // An HTTP/2 request goes out as HTTP/1.1: the client refuses to send an h2 request on an h1 connection.
        parts.version = Version::HTTP_11;

        // Hop-by-hop headers went in `begin`, before any identity header was written.
        self.set_forwarding(&mut parts.headers, &peer, host.as_ref());
        if let Some(h) = host {
            parts.headers.insert(header::HOST, h);
        }
        if let Some(proto) = &upgrade {
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto.clone());
        }

        let out = Request::from_parts(parts, body);
        let kept = match (&self.dialer, &peer.upstream) {
            (Some(dialer), Some(slot)) if one_at_a_time => Some((dialer, slot)),
            _ => None,
        };
        let mut resp = match tokio::time::timeout(self.timeout, self.send_on(kept, out)).await {
            Err(_) => return Err(UpstreamError::Timeout(self.timeout)),
            Ok(r) => r?,
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let chosen = resp.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or("");
            if !self.upgrade_allowed(chosen) {
                return Err(UpstreamError::Protocol("the upstream switched to a protocol that is not allowed".into()));
            }
            if let Some(client_side) = client_upgrade {
                let upstream_side = hyper::upgrade::on(&mut resp);
                let tunnel = peer.tunnel.clone();
                tokio::spawn(async move {
                    match tokio::try_join!(client_side, upstream_side) {
                        Ok((c, u)) => {
                            let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                            let splice = tokio::io::copy_bidirectional(&mut c, &mut u);
                            match tunnel {
                                // Holds the connection's slot until the tunnel closes or idles out.
                                Some(t) => crate::server::idle::run(splice, t.activity, t.idle).await,
                                None => drop(splice.await),
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
                    }
                });
                let proto = resp.headers().get(header::UPGRADE).cloned();
                let (mut rparts, _) = resp.into_parts();
                remove_hop_by_hop(&mut rparts.headers);
                rparts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                if let Some(p) = proto {
                    rparts.headers.insert(header::UPGRADE, p);
                }
                return Ok(Response::from_parts(rparts, body::empty()));
            }
            return Err(UpstreamError::Protocol("101 without an upgrade request".into()));
        }
        let (mut rparts, body) = resp.into_parts();
        remove_hop_by_hop(&mut rparts.headers);
        Ok(Response::from_parts(rparts, body))
    }

    /// Sends on the client connection's kept upstream connection when there is one to use, else on the pool.
    async fn send_on(
        &self,
        kept: Option<(&affinity::Dialer, &Arc<affinity::UpstreamSlot>)>,
        out: Request<Body>,
    ) -> Result<Response<Body>, UpstreamError> {
        let out = match kept {
            Some((dialer, slot)) => match dialer.send(slot, out).await? {
                affinity::Sent::Response(r) => return Ok(r),
                affinity::Sent::Declined(out) => out,
            },
            None => out,
        };
        let resp = self.client.request(out).await.map_err(|e| {
            if body::client_failed(&e) {
                UpstreamError::ClientBody(error_text(&e))
            } else if e.is_connect() {
                UpstreamError::Connect(error_text(&e))
            } else {
                UpstreamError::Protocol(error_text(&e))
            }
        })?;
        // The upgrade handle lives in the extensions, which the body's change keeps.
        Ok(resp.map(body::boxed))
    }

    fn set_forwarding(&self, headers: &mut HeaderMap, peer: &Peer, host: Option<&HeaderValue>) {
        let trusted = self.is_trusted(peer.ip);
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|k| {
                let n = k.as_str();
                if n.contains('_') {
                    // Underscore spellings are never ours: many frameworks read them as the dashed header.
                    FORWARDING.contains(&n.replace('_', "-").as_str())
                } else {
                    !trusted && FORWARDING.contains(&n)
                }
            })
            .cloned()
            .collect();
        for n in names {
            headers.remove(n);
        }
        let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) if trusted => HeaderValue::from_str(&format!("{prev}, {}", peer.ip)).ok(),
            _ => Some(peer.ip_value.clone()),
        };
        if let Some(v) = xff {
            headers.insert("x-forwarded-for", v);
        }
        if !headers.contains_key("x-forwarded-proto") {
            headers.insert("x-forwarded-proto", HeaderValue::from_static(if peer.tls { "https" } else { "http" }));
        }
        if let (false, Some(h)) = (headers.contains_key("x-forwarded-host"), host) {
            headers.insert("x-forwarded-host", h.clone());
        }
    }
}

/// The `Upgrade` protocol when the request asks for one (`Connection: upgrade`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if asks { headers.get(header::UPGRADE).cloned() } else { None }
}

/// Removes hop-by-hop headers, including those the `Connection` header names (except [`NEVER_BY_CONNECTION`] and
/// the forwarding headers). Called on a request by [`Forwarder::begin`] only, on a response inside
/// [`Forwarder::send`] only: both before idgate writes headers of its own.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !NEVER_BY_CONNECTION.contains(&n.as_str()) && !FORWARDING.contains(&n.as_str()))
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in &HOP_BY_HOP {
        headers.remove(n);
    }
}

/// An error with its chain of causes, for logs.
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_connection_tokens_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("Basic x"));
        h.insert("x-end-to-end", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-end-to-end"));
    }

    #[test]
    fn connection_never_removes_the_target_framing_or_forwarding_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("host, Content-Length, x-forwarded-for, forwarded, x-hop"),
        );
        for n in ["host", "content-length", "x-forwarded-for", "forwarded", "x-hop"] {
            h.insert(HeaderName::from_static(n), HeaderValue::from_static("1"));
        }
        remove_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "forwarded", "host", "x-forwarded-for"]);
    }
}

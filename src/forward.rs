//! The proxy hop: rewrites the request for the upstream (URI, HTTP/1.1, hop-by-hop headers, `X-Forwarded-*`),
//! sends it on the pooled client and streams both bodies through untouched. WebSocket and other upgrades are
//! spliced once both sides agreed. Knows nothing of sessions or claims. HTTP/1.1 clients of a plain-http upstream
//! keep an upstream connection each ([`affinity`]); everything else goes through the shared pool.

pub mod affinity;

use std::{net::IpAddr, sync::Arc, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;
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
}

impl UpstreamError {
    /// Label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Protocol(_) => "protocol",
        }
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
    /// `ip` as a header value, made once per connection.
    ip_value: HeaderValue,
}

impl Peer {
    /// A client at `ip` whose requests use the shared pool.
    pub fn new(ip: IpAddr, tls: bool) -> Self {
        #[allow(clippy::expect_used, reason = "static: an IP address prints as hex digits, '.' and ':' only")]
        let ip_value = HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value");
        Self { ip, tls, upstream: None, ip_value }
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

impl Forwarder {
    /// A forwarder to `upstream`: `timeout` for the response head, `connect_timeout` for kept connections (the
    /// pool's client has its own), which it counts in `kept`.
    pub fn new(
        client: HttpClient,
        upstream: &Url,
        timeout: Duration,
        connect_timeout: Duration,
        trusted: Vec<IpNet>,
        kept: Arc<std::sync::atomic::AtomicUsize>,
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
        }
    }

    /// True when `ip` is a trusted proxy whose forwarding headers are believed.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Proxies `req` and returns the upstream's streaming response.
    pub async fn send(&self, mut req: Request<Incoming>, peer: Peer) -> Result<Response<Body>, UpstreamError> {
        let upgrade = upgrade_protocol(req.headers());
        // One request at a time on this client connection: it may keep an upstream connection.
        let one_at_a_time = req.version() <= Version::HTTP_11 && upgrade.is_none();
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (mut parts, incoming) = req.into_parts();

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

        remove_hop_by_hop(&mut parts.headers);
        self.set_forwarding(&mut parts.headers, &peer, host.as_ref());
        if let Some(h) = host {
            parts.headers.insert(header::HOST, h);
        }
        if let Some(proto) = &upgrade {
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto.clone());
        }

        let out = Request::from_parts(parts, body::boxed(incoming));
        let kept = match (&self.dialer, &peer.upstream) {
            (Some(dialer), Some(slot)) if one_at_a_time => Some((dialer, slot)),
            _ => None,
        };
        let mut resp = match tokio::time::timeout(self.timeout, self.send_on(kept, out)).await {
            Err(_) => return Err(UpstreamError::Timeout(self.timeout)),
            Ok(r) => r?,
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_side) = client_upgrade {
                let upstream_side = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    match tokio::try_join!(client_side, upstream_side) {
                        Ok((c, u)) => {
                            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(u)).await;
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
        let (mut rparts, incoming) = resp.into_parts();
        remove_hop_by_hop(&mut rparts.headers);
        Ok(Response::from_parts(rparts, body::boxed(incoming)))
    }

    /// Sends on the client connection's kept upstream connection when there is one to use, else on the pool.
    async fn send_on(
        &self,
        kept: Option<(&affinity::Dialer, &Arc<affinity::UpstreamSlot>)>,
        out: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let out = match kept {
            Some((dialer, slot)) => match dialer.send(slot, out).await? {
                affinity::Sent::Response(r) => return Ok(r),
                affinity::Sent::Declined(out) => out,
            },
            None => out,
        };
        self.client.request(out).await.map_err(|e| {
            if e.is_connect() {
                UpstreamError::Connect(error_text(&e))
            } else {
                UpstreamError::Protocol(error_text(&e))
            }
        })
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

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
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
}

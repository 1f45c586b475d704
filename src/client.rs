//! The outbound HTTP client, shared by the proxy hop and the calls to the issuer: hyper-util's pooled client over
//! rustls (aws-lc-rs), trusting the system's CA certificates.

use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};

use crate::body::Body;

/// A pooled HTTP/1.1 client for http and https URLs.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// Builds a client with `connect_timeout`. Missing system CA certificates are logged, not fatal: plain-http
/// upstreams (the sidecar case) still work.
pub fn build(connect_timeout: Duration) -> HttpClient {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    if native.certs.is_empty() {
        tracing::warn!(
            errors = native.errors.len(),
            "no system CA certificates found: https to upstream or issuer will fail"
        );
    }
    roots.add_parsable_certificates(native.certs);
    build_with_roots(connect_timeout, roots)
}

/// Builds a client trusting exactly `roots` (tests use their own CA).
pub fn build_with_roots(connect_timeout: Duration, roots: rustls::RootCertStore) -> HttpClient {
    #[allow(clippy::expect_used, reason = "static: aws-lc-rs supports the default protocol versions")]
    let tls = rustls::ClientConfig::builder_with_provider(rustls::crypto::aws_lc_rs::default_provider().into())
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(https)
}

//! The listeners: limits, malformed input, TLS, the admin endpoints.

use std::time::Duration;

use http::StatusCode;
use idgate::config::AuthMode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::harness::{Browser, TestGate, route};

async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn oversized_headers_get_431_and_malformed_requests_400_while_others_are_served() {
    let gate = TestGate::builder().settings(|s| s.routes = vec![route("/", AuthMode::Public)]).spawn().await;
    let addr = gate.running.as_ref().unwrap().public_addr;
    let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(40_000));
    assert!(raw(addr, big.as_bytes()).await.starts_with("HTTP/1.1 431"), "oversized headers");
    let cookie = format!("GET / HTTP/1.1\r\nHost: x\r\nCookie: idgate_0={}\r\n\r\n", "a".repeat(30_000));
    assert!(raw(addr, cookie.as_bytes()).await.starts_with("HTTP/1.1 431"), "oversized cookie");
    assert!(raw(addr, b"GARBAGE\r\n\r\n").await.starts_with("HTTP/1.1 400"), "malformed request line");
    assert!(raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n").await.starts_with("HTTP/1.1 400"));
    assert_eq!(Browser::new().get(&format!("{}/", gate.base)).await.status, StatusCode::OK, "still serving");
    gate.shutdown().await;
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let gate = TestGate::builder().settings(|s| s.server.header_read_timeout = Duration::from_secs(1)).spawn().await;
    let mut s = TcpStream::connect(gate.running.as_ref().unwrap().public_addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(4), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection of a slow-loris client is closed");
    gate.shutdown().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let gate = TestGate::builder()
        .settings(|s| {
            s.routes = vec![route("/", AuthMode::Public)];
            s.server.idle_timeout = Duration::from_secs(1);
            s.server.header_read_timeout = Duration::from_secs(10);
        })
        .spawn()
        .await;
    let mut s = TcpStream::connect(gate.running.as_ref().unwrap().public_addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "idle connection closed");
    assert!(started.elapsed() >= Duration::from_millis(900));
    gate.shutdown().await;
}

/// The header deadline of each next head on a keep-alive connection runs from the previous response, however the
/// bytes trickle in (the idle timeout alone would never fire on them); a head that arrives in time is answered.
#[tokio::test]
async fn each_next_head_must_arrive_within_the_header_deadline_of_the_previous_response() {
    let gate = TestGate::builder()
        .settings(|s| {
            s.routes = vec![route("/", AuthMode::Public)];
            s.server.idle_timeout = Duration::from_secs(20);
            s.server.header_read_timeout = Duration::from_secs(1);
        })
        .spawn()
        .await;
    let mut s = TcpStream::connect(gate.running.as_ref().unwrap().public_addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    for pause in [0, 600] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "a head in time is answered");
    }
    let answered = std::time::Instant::now();
    let trickle = async {
        // A head that stays valid and incomplete: one long header value, a byte at a time.
        for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().chain([b'a'; 400].iter()) {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(6), trickle).await;
    let closed_after = answered.elapsed();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "the trickled head got no answer: {:?}", String::from_utf8_lossy(&rest));
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(4),
        "closed {closed_after:?} after the previous response, header deadline 1 s"
    );
    gate.shutdown().await;
}

/// A client that leaves with its request in progress cancels it: the upstream exchange is dropped (its connection
/// closed) and the client's place under the cap is free at once, not when the upstream would have answered.
#[tokio::test]
async fn a_client_that_leaves_cancels_its_request_and_frees_its_slot() {
    // An upstream that answers `/fast` at once and never answers `/slow`; it reports when a connection it holds a
    // `/slow` request on is closed by idgate.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
    let dropped_tx = std::sync::Arc::new(std::sync::Mutex::new(Some(dropped_tx)));
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = upstream.accept().await.unwrap();
            let dropped_tx = std::sync::Arc::clone(&dropped_tx);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                loop {
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    if buf[..n].starts_with(b"GET /slow") {
                        // Hold it: the next read ends only when idgate closes the connection.
                        while conn.read(&mut buf).await.unwrap_or(0) > 0 {}
                        if let Some(tx) = dropped_tx.lock().unwrap().take() {
                            let _ = tx.send(());
                        }
                        return;
                    }
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                }
            });
        }
    });
    let gate = TestGate::builder()
        .upstream(upstream_addr)
        .settings(|s| {
            s.routes = vec![route("/", AuthMode::Public)];
            s.server.max_connections = 1;
            s.upstream.timeout = Duration::from_secs(30);
        })
        .spawn()
        .await;
    let addr = gate.running.as_ref().unwrap().public_addr;
    let mut leaving = TcpStream::connect(addr).await.unwrap();
    leaving.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(leaving);
    let cancelled = tokio::time::timeout(Duration::from_secs(3), dropped_rx).await;
    assert!(cancelled.is_ok(), "the upstream exchange of the departed client was dropped");
    let next = tokio::time::timeout(
        Duration::from_secs(3),
        raw(addr, b"GET /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await
    .expect("the only slot is free again");
    assert!(next.starts_with("HTTP/1.1 200"), "{next}");
    gate.shutdown().await;
}

/// The header deadline covers the first request's head only: a body that follows slowly is read (the idle timeout
/// bounds it), as the first request over hyper's server.
#[tokio::test]
async fn a_first_request_with_a_slow_body_is_not_cut_at_the_header_deadline() {
    let gate = TestGate::builder()
        .settings(|s| {
            s.routes = vec![route("/", AuthMode::Public)];
            s.server.header_read_timeout = Duration::from_secs(1);
            s.server.idle_timeout = Duration::from_secs(20);
        })
        .spawn()
        .await;
    let mut s = TcpStream::connect(gate.running.as_ref().unwrap().public_addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\nConnection: close\r\n\r\n").await.unwrap();
    for b in b"12345678" {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.write_all(&[*b]).await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&out));
    gate.shutdown().await;
}

/// A connection that has spoken HTTP/1.1 does not become HTTP/2 at a preface sent after its first request (hyper's
/// server refuses that too): nothing but HTTP/1.1 answers come back.
#[tokio::test]
async fn an_http2_preface_after_an_http1_request_does_not_switch_protocols() {
    let gate = TestGate::builder().settings(|s| s.routes = vec![route("/", AuthMode::Public)]).spawn().await;
    let mut s = TcpStream::connect(gate.running.as_ref().unwrap().public_addr).await.unwrap();
    // The first request, then the HTTP/2 preface and an empty SETTINGS frame.
    let mut bytes = b"GET /first HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec();
    bytes.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0");
    s.write_all(&bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // An HTTP/2 server's first frame is its SETTINGS frame (type 4); no HTTP/1.1 text holds that byte.
    assert!(!out.contains(&4u8), "an HTTP/2 frame came back: {text:?}");
    gate.shutdown().await;
}

#[tokio::test]
async fn connection_cap_holds_extra_clients_until_a_slot_frees() {
    let gate = TestGate::builder()
        .settings(|s| {
            s.routes = vec![route("/", AuthMode::Public)];
            s.server.max_connections = 1;
        })
        .spawn()
        .await;
    let addr = gate.running.as_ref().unwrap().public_addr;
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    assert!(first.read(&mut buf).await.unwrap() > 0);
    let second = raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let waited = tokio::time::timeout(Duration::from_millis(500), second).await;
    assert!(waited.is_err(), "the second connection waits while the first holds the only slot");
    drop(first);
    let second = raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    gate.shutdown().await;
}

#[tokio::test]
async fn admin_endpoints_live_on_the_admin_listener_only() {
    let gate = TestGate::builder().spawn().await;
    let admin = Browser::new().api();
    assert_eq!(admin.get(&format!("{}/healthz", gate.admin)).await.status, StatusCode::OK);
    assert_eq!(admin.get(&format!("{}/readyz", gate.admin)).await.status, StatusCode::OK);
    gate.login_as("quinn").await;
    let metrics = admin.get(&format!("{}/metrics", gate.admin)).await.text();
    for name in [
        "idgate_requests_total{class=\"2xx\"}",
        "idgate_request_duration_seconds_bucket",
        "idgate_open_connections",
        "idgate_logins_total{result=\"success\"} 1",
        "idgate_jwks_fetches_total{result=\"success\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    assert!(!crate::harness::contains_jwt(&metrics));
    // The public listener does not serve them (they are proxied paths that need a login).
    assert_eq!(admin.get(&format!("{}/metrics", gate.base)).await.status, StatusCode::UNAUTHORIZED);
    gate.issuer.stop();
    gate.shutdown().await;
}

#[tokio::test]
async fn readyz_waits_for_the_issuer() {
    use std::sync::Arc;
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_url = format!("http://{}", admin.local_addr().unwrap());
    // An issuer address where nothing listens.
    let nothing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let settings = crate::harness::settings("http://127.0.0.1:1", &format!("http://{nothing}"), nothing);
    let running = idgate::app::start_on(settings, Arc::new(idgate::clock::SystemClock), public, admin).await.unwrap();
    let r = Browser::new().api().get(&format!("{admin_url}/readyz")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(Browser::new().api().get(&format!("{admin_url}/healthz")).await.status, StatusCode::OK);
    running.shutdown().await;
}

#[tokio::test]
async fn https_listener_serves_h1_and_h2_with_its_certificate() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, leaf.pem()).unwrap();
    std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();
    let gate = TestGate::builder()
        .settings(move |s| {
            s.routes = vec![route("/", AuthMode::Public)];
            s.server.tls = Some(idgate::config::settings::TlsFiles { cert: cert_path, key: key_path });
        })
        .spawn()
        .await;
    let port = gate.running.as_ref().unwrap().public_addr.port();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let client = idgate::client::build_with_roots(Duration::from_secs(2), roots);
    let req = http::Request::get(format!("https://localhost:{port}/tls")).body(idgate::body::empty()).unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value =
        serde_json::from_slice(&http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["headers"]["x-forwarded-proto"][0], "https");
    gate.shutdown().await;
}

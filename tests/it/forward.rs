//! The proxy hop: hop-by-hop headers, X-Forwarded-* trust, upgrades, HTTP/2 in and HTTP/1.1 out, upstream
//! failures, graceful shutdown.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use idgate::config::AuthMode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::harness::{Browser, TestGate, route};

fn public(s: &mut idgate::config::Settings) {
    s.routes = vec![route("/", AuthMode::Public)];
}

/// An upstream with slow, hanging and upgrade endpoints.
async fn special_upstream() -> SocketAddr {
    crate::harness::spawn_upstream(|mut req: Request<Incoming>| async move {
        match req.uri().path() {
            "/slow" => {
                tokio::time::sleep(Duration::from_millis(800)).await;
                Response::new(Full::new(Bytes::from_static(b"slow done")))
            }
            "/hang" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Response::new(Full::new(Bytes::new()))
            }
            "/ws" => {
                let on = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    if let Ok(up) = on.await {
                        let mut io = TokioIo::new(up);
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = io.read(&mut buf).await {
                            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                });
                Response::builder()
                    .status(StatusCode::SWITCHING_PROTOCOLS)
                    .header("connection", "upgrade")
                    .header("upgrade", "websocket")
                    .body(Full::new(Bytes::new()))
                    .unwrap()
            }
            _ => Response::new(Full::new(Bytes::from_static(b"ok"))),
        }
    })
    .await
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let gate = TestGate::builder().settings(public).spawn().await;
    let r = Browser::new()
        .get_with(
            &format!("{}/x", gate.base),
            &[
                ("connection", "keep-alive, x-client-hop"),
                ("x-client-hop", "1"),
                ("keep-alive", "timeout=9"),
                ("te", "trailers"),
                ("proxy-authorization", "Basic eA=="),
                ("x-end-to-end", "kept"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    for gone in ["x-client-hop", "keep-alive", "te", "proxy-authorization"] {
        assert!(r.upstream_header(gone).is_none(), "{gone} reached the upstream");
    }
    assert_eq!(r.upstream_header("x-end-to-end").as_deref(), Some("kept"));
    assert!(!r.headers.contains_key("x-upstream-hop"), "a hop-by-hop response header named by Connection is removed");
    assert!(!r.headers.contains_key("keep-alive"));
    gate.shutdown().await;
}

#[tokio::test]
async fn forwarded_headers_are_replaced_for_untrusted_peers() {
    let gate = TestGate::builder().settings(public).spawn().await;
    let r = Browser::new()
        .get_with(
            &format!("{}/x", gate.base),
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil.com"),
                ("x_forwarded_for", "7.7.7.7"),
                ("forwarded", "for=6.6.6.6"),
                ("host", "app.example.com"),
            ],
        )
        .await;
    assert_eq!(r.upstream_header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(r.upstream_header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(r.upstream_header("x-forwarded-host").as_deref(), Some("app.example.com"));
    assert!(r.upstream_header("x_forwarded_for").is_none());
    assert!(r.upstream_header("forwarded").is_none());
    assert_eq!(r.upstream_header("host").as_deref(), Some("app.example.com"), "Host is preserved");
    gate.shutdown().await;
}

#[tokio::test]
async fn forwarded_headers_are_extended_for_trusted_proxies() {
    let gate = TestGate::builder()
        .settings(|s| {
            public(s);
            s.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        })
        .spawn()
        .await;
    let r = Browser::new()
        .get_with(
            &format!("{}/x", gate.base),
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "app.example.com"),
                ("x_forwarded_for", "7.7.7.7"),
            ],
        )
        .await;
    assert_eq!(r.upstream_header("x-forwarded-for").as_deref(), Some("203.0.113.7, 127.0.0.1"));
    assert_eq!(r.upstream_header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(r.upstream_header("x-forwarded-host").as_deref(), Some("app.example.com"));
    assert!(r.upstream_header("x_forwarded_for").is_none(), "underscore spellings are never believed");
    gate.shutdown().await;
}

#[tokio::test]
async fn websocket_upgrade_is_spliced_through() {
    let upstream = special_upstream().await;
    let gate = TestGate::builder().settings(public).upstream(upstream).spawn().await;
    let stream = TcpStream::connect(gate.running.as_ref().unwrap().public_addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = Request::builder()
        .uri("/ws")
        .header("host", "localhost")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(resp.headers()["upgrade"], "websocket");
    let mut io = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    for msg in [&b"hello"[..], b"through idgate"] {
        io.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, msg);
    }
    gate.shutdown().await;
}

#[tokio::test]
async fn http2_clients_reach_an_http1_upstream() {
    let gate = TestGate::builder().settings(public).spawn().await;
    let stream = TcpStream::connect(gate.running.as_ref().unwrap().public_addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::builder().uri(format!("{}/h2/path?q=1", gate.base)).body(Empty::<Bytes>::new()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["uri"], "/h2/path?q=1");
    assert!(body["headers"]["host"][0].as_str().unwrap().starts_with("127.0.0.1:"));
    gate.shutdown().await;
}

#[tokio::test]
async fn upstream_down_is_502_and_silent_upstream_is_504() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let gate = TestGate::builder().settings(public).upstream(closed).spawn().await;
    let r = Browser::new().get(&format!("{}/x", gate.base)).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        r.text().contains("not answering") && !r.text().contains("refused"),
        "short page, no internals: {}",
        r.text()
    );
    assert!(gate.state().metrics.render().contains("idgate_requests_total{class=\"5xx\"} 1"));
    gate.shutdown().await;

    let upstream = special_upstream().await;
    let gate = TestGate::builder()
        .settings(|s| {
            public(s);
            s.upstream.timeout = Duration::from_secs(1);
        })
        .upstream(upstream)
        .spawn()
        .await;
    let r = Browser::new().api().get(&format!("{}/hang", gate.base)).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.json()["error"], "upstream_unavailable");
    gate.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    // A slow upstream that says when the request has reached it: the drain starts with the request in flight.
    let arrived = std::sync::Arc::new(tokio::sync::Notify::new());
    let signal = std::sync::Arc::clone(&arrived);
    let upstream = crate::harness::spawn_upstream(move |_req: Request<Incoming>| {
        let signal = std::sync::Arc::clone(&signal);
        async move {
            signal.notify_one();
            tokio::time::sleep(Duration::from_millis(800)).await;
            Response::new(Full::new(Bytes::from_static(b"slow done")))
        }
    })
    .await;
    let mut gate = TestGate::builder().settings(public).upstream(upstream).spawn().await;
    let addr = gate.running.as_ref().unwrap().public_addr;
    let url = format!("{}/slow", gate.base);
    let in_flight = tokio::spawn(async move { Browser::new().get(&url).await });
    let reached = tokio::time::timeout(Duration::from_secs(5), arrived.notified()).await;
    assert!(reached.is_ok(), "the request reached the upstream");
    let running = gate.running.take().unwrap();
    let stopping = tokio::spawn(running.shutdown());
    crate::harness::eventually("draining refuses new connections", Duration::from_secs(5), || async {
        TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await;
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "slow done");
    stopping.await.unwrap();
    gate.shutdown().await;
}

/// A raw HTTP/1.1 upstream that answers each request with the number of the connection it came on (from 1), and,
/// when `close_after_each` is set, closes the connection after every answer without announcing it (what an
/// upstream's keep-alive timeout does to an idle connection).
async fn numbering_upstream(close_after_each: bool) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::{Arc, atomic::AtomicUsize, atomic::Ordering::SeqCst};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let n = count.fetch_add(1, SeqCst) + 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    let body = n.to_string();
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    if stream.write_all(head.as_bytes()).await.is_err() || close_after_each {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// Sends `n` GETs, one after another, on one HTTP/1.1 client connection; returns the bodies.
async fn on_one_connection(addr: SocketAddr, n: usize) -> Vec<String> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut bodies = Vec::new();
    for i in 0..n {
        sender.ready().await.unwrap();
        let req = Request::builder().uri(format!("/n/{i}")).header("host", "app").body(Empty::<Bytes>::new()).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "request {i}");
        bodies.push(String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap());
    }
    bodies
}

#[tokio::test]
async fn each_http1_client_connection_keeps_one_upstream_connection() {
    let (upstream, accepted) = numbering_upstream(false).await;
    let gate = TestGate::builder().settings(public).upstream(upstream).spawn().await;
    let addr = gate.running.as_ref().unwrap().public_addr;
    let first = on_one_connection(addr, 5).await;
    assert!(first.iter().all(|b| *b == first[0]), "one upstream connection for the whole client connection: {first:?}");
    let second = on_one_connection(addr, 3).await;
    assert!(second.iter().all(|b| *b == second[0]) && second[0] != first[0], "{first:?} {second:?}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    gate.shutdown().await;
}

#[tokio::test]
async fn a_kept_connection_the_upstream_closed_is_replaced_without_an_error() {
    let (upstream, accepted) = numbering_upstream(true).await;
    let gate = TestGate::builder().settings(public).upstream(upstream).spawn().await;
    let bodies = on_one_connection(gate.running.as_ref().unwrap().public_addr, 4).await;
    assert_eq!(bodies, ["1", "2", "3", "4"], "every request answered, each on a new upstream connection");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 4);
    gate.shutdown().await;
}

#[tokio::test]
async fn kept_upstream_connections_close_with_their_client_connection() {
    let upstream = crate::harness::spawn_json_echo().await;
    let gate = TestGate::builder().settings(public).upstream(upstream).spawn().await;
    let addr = gate.running.as_ref().unwrap().public_addr;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    let client = tokio::spawn(conn);
    let req = Request::builder().uri("/x").header("host", "app").body(Empty::<Bytes>::new()).unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), StatusCode::OK);
    let kept = |n: usize| gate.state().metrics.render().contains(&format!("\nidgate_upstream_kept_connections {n}\n"));
    assert!(kept(1));
    drop(sender);
    client.await.unwrap().unwrap();
    crate::harness::eventually(
        "the kept upstream connection closes with the client's",
        Duration::from_secs(2),
        || async { kept(0).then_some(()) },
    )
    .await;
    gate.shutdown().await;
}

#[tokio::test]
async fn pipelined_http1_requests_are_all_answered() {
    let (upstream, _) = numbering_upstream(false).await;
    let gate = TestGate::builder().settings(public).upstream(upstream).spawn().await;
    let mut stream = TcpStream::connect(gate.running.as_ref().unwrap().public_addr).await.unwrap();
    let one = "GET /p HTTP/1.1\r\nHost: app\r\n\r\n";
    stream.write_all(one.repeat(3).as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let complete = |b: &[u8]| {
        let ends = b.windows(4).filter(|w| w == b"\r\n\r\n").count();
        ends == 3 && b.windows(4).rposition(|w| w == b"\r\n\r\n").is_some_and(|i| i + 4 < b.len())
    };
    while !complete(&got) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8(got).unwrap();
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
    assert_eq!(gate.state().metrics.render().matches("idgate_requests_total{class=\"2xx\"} 3").count(), 1);
    gate.shutdown().await;
}

/// The response framing idgate's own HTTP/1.1 loop writes back, on one client connection that must stay in step
/// through all of it: a `HEAD` answer keeps the resource's length and has no body, 304 and 204 have none, a chunked
/// upstream body goes out chunked, and a body cut short by the upstream ends the connection (never a short response
/// followed by what the client would read as the next one).
#[tokio::test]
async fn response_framing_keeps_the_client_connection_in_step() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = upstream.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let answer: &[u8] = match head.split(' ').nth(1).unwrap_or("") {
                        "/head" => b"HTTP/1.1 200 OK\r\ncontent-length: 1024\r\n\r\n",
                        "/not-modified" => b"HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n",
                        "/no-content" => b"HTTP/1.1 204 No Content\r\n\r\n",
                        "/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                        _ => {
                            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc").await;
                            return;
                        }
                    };
                    if conn.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let gate = TestGate::builder().upstream(upstream_addr).settings(public).spawn().await;
    let stream = TcpStream::connect(gate.running.as_ref().unwrap().public_addr).await.unwrap();
    let (mut client, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    let driven = tokio::spawn(conn);
    let mut send = |method: &str, path: &str| {
        let req = Request::builder().method(method).uri(path).header("host", "x").body(Empty::<Bytes>::new()).unwrap();
        client.send_request(req)
    };
    let head = send("HEAD", "/head").await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "1024", "a HEAD answer keeps the resource's length");
    assert!(head.into_body().collect().await.unwrap().to_bytes().is_empty());
    for (path, status) in [("/not-modified", StatusCode::NOT_MODIFIED), ("/no-content", StatusCode::NO_CONTENT)] {
        let resp = send("GET", path).await.unwrap();
        assert_eq!(resp.status(), status);
        assert!(resp.headers().get("content-length").is_none() && resp.headers().get("transfer-encoding").is_none());
        assert!(resp.into_body().collect().await.unwrap().to_bytes().is_empty());
    }
    let chunked = send("GET", "/chunked").await.unwrap();
    assert_eq!(chunked.headers()["transfer-encoding"], "chunked", "a body of unknown length goes out chunked");
    assert!(chunked.headers().get("date").is_some(), "the upstream sent no Date: idgate adds one");
    assert_eq!(chunked.into_body().collect().await.unwrap().to_bytes(), "hello world");
    let short = send("GET", "/short").await.unwrap();
    assert_eq!(short.headers()["content-length"], "10");
    assert!(short.into_body().collect().await.is_err(), "a body cut short is an error, not a short response");
    let closed = tokio::time::timeout(Duration::from_secs(3), driven).await;
    assert!(closed.is_ok(), "the connection ends after a body cut short");
    gate.shutdown().await;
}

/// A drain that begins while a request head is still arriving lets that request finish, when it is one idgate's own
/// HTTP/1.1 loop hands to hyper (here for its chunked body) as when it serves it itself.
#[tokio::test]
async fn a_request_handed_to_hyper_during_the_drain_is_answered() {
    let mut gate = TestGate::builder().settings(public).spawn().await;
    let addr = gate.running.as_ref().unwrap().public_addr;
    let mut chunked = TcpStream::connect(addr).await.unwrap();
    chunked.write_all(b"POST /drain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n").await.unwrap();
    let mut sized = TcpStream::connect(addr).await.unwrap();
    sized.write_all(b"POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let running = gate.running.take().unwrap();
    let stopping = tokio::spawn(running.shutdown());
    crate::harness::eventually("draining refuses new connections", Duration::from_secs(5), || async {
        TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await;
    chunked.write_all(b"\r\n3\r\nabc\r\n0\r\n\r\n").await.unwrap();
    sized.write_all(b"\r\nabc").await.unwrap();
    for (name, mut s) in [("chunked, handed over", chunked), ("sized, the loop's own", sized)] {
        let mut out = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200"), "{name}: {text}");
        assert!(matches!(ended, Ok(Ok(_))), "{name}: the connection closes after it");
    }
    stopping.await.unwrap();
    gate.shutdown().await;
}

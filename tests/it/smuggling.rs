//! Request smuggling, differentially (issue 18 §2): one corpus of ambiguous and malformed request framings —
//! CL+TE, duplicate and malformed Content-Length, disguised Transfer-Encoding, obs-fold, bare CR, LF-only lines, bad
//! chunk sizes, HTTP/1.0 with TE, pipelining — sent byte for byte to idgate and to a real nginx (Debian's, as a plain
//! proxy), both in front of the same recording upstream that frames requests by RFC 9112 §6.
//!
//! idgate is reached twice: in cleartext, where its own HTTP/1.1 loop (`server::http1`) takes the requests it
//! understands and hands the rest to hyper's server, and over TLS, where hyper's server reads every byte. Both
//! paths must give every case the very same outcome: one rule set, whoever reads the request.
//!
//! Each request carries a hidden second request for `/admin/…`, a path that needs a login in idgate. What must hold:
//! - through idgate, no `/admin` request ever reaches the upstream anonymously, in any case;
//! - idgate refuses (a 4xx/5xx, or closes) exactly what nginx refuses, and where both pass a request on, the upstream
//!   reads the same requests with the same bodies; the few cases where idgate is stricter than nginx (or reads the
//!   bytes otherwise, safely) are listed with their reason, and the test fails if such a note stops being true.
//!
//! nginx is started by the test (with `tests/it/nginx.rs`'s helper) and fails it when missing (scripts/deps.sh
//! installs it); it is never skipped.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use idgate::config::AuthMode;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::harness::{TestGate, route};

/// A request as the recording upstream framed it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// What one front did with one case: the status codes it answered on the connection (empty: closed without an
/// answer), whether it closed the connection, and the requests the upstream read for this case, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outcome {
    statuses: Vec<u16>,
    closed: bool,
    upstream: Vec<Seen>,
}

impl Outcome {
    /// Refused: the first answer is an error, or the connection closed without one, and nothing reached the upstream.
    fn refused(&self) -> bool {
        self.upstream.is_empty() && self.statuses.first().is_none_or(|s| *s >= 400)
    }
}

/// The hidden request of case `name`.
fn smuggled(name: &str) -> String {
    format!("GET /admin/{name} HTTP/1.1\r\nHost: h\r\n\r\n")
}

/// `data` as one chunk and the last chunk.
fn chunked(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n0\r\n\r\n", data.len())
}

/// A POST carrying `body` to `/public/<name>` with `headers` (each ending in CRLF).
fn post(name: &str, headers: &str, body: &str) -> String {
    format!("POST /public/{name} HTTP/1.1\r\nHost: h\r\n{headers}\r\n{body}")
}

/// Where idgate and nginx differ on purpose, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Note {
    /// Both read the case the same way.
    Same,
    /// idgate refuses what nginx passes on.
    IdgateStricter(&'static str),
    /// nginx refuses what idgate passes on (re-framed: the upstream reads one unambiguous request).
    NginxStricter(&'static str),
    /// Both pass requests on and the upstream reads different but unambiguous requests.
    ReadOtherwise(&'static str),
    /// nginx refuses both framing headers at once; idgate (hyper) reads the request by its Transfer-Encoding alone,
    /// passes exactly that one request on, answers it and closes the connection, so whatever a reader of the
    /// Content-Length would take for a next request is never read (RFC 9112 §6.1 allows either way).
    ChunkedThenClosed(&'static str),
}

/// The corpus: (name, bytes sent, note). Names are unique; they tag the paths the upstream records.
fn corpus() -> Vec<(&'static str, String, Note)> {
    use Note::*;
    let mut c: Vec<(&'static str, String, Note)> = Vec::new();
    let mut add = |name: &'static str, f: &dyn Fn(&str) -> String, note: Note| c.push((name, f(name), note));
    // Baselines: well-framed requests pass on with their bodies.
    add("plain-cl", &|n| post(n, "Content-Length: 5\r\n", "hello"), Same);
    add("plain-chunked", &|n| post(n, "Transfer-Encoding: chunked\r\n", &chunked("hello")), Same);
    add("te-upper-case", &|n| post(n, "Transfer-Encoding: CHUNKED\r\n", &chunked("hello")), Same);
    add(
        "te-tab-ows",
        &|n| post(n, "Transfer-Encoding:\tchunked\r\n", &chunked("hello")),
        NginxStricter("RFC 9110 §5.6.3: whitespace before a value is spaces and tabs; nginx skips only spaces"),
    );
    add("cl-trailing-ows", &|n| post(n, "Content-Length: 5 \r\n", "hello"), Same);
    add("chunk-extension", &|n| post(n, "Transfer-Encoding: chunked\r\n", "5;a=b\r\nhello\r\n0\r\n\r\n"), Same);
    add("chunked-trailer", &|n| post(n, "Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"), Same);
    // A Content-Length in the trailer section frames nothing: the request ends at the last chunk, and what
    // follows is the next request on the connection.
    add(
        "trailer-content-length",
        &|n| {
            post(
                n,
                "Transfer-Encoding: chunked\r\n",
                &format!("5\r\nhello\r\n0\r\nContent-Length: 40\r\n\r\n{}", smuggled(n)),
            )
        },
        ReadOtherwise("the next request on the connection goes through the gate: anonymous /admin gets a 401"),
    );
    // CL.TE and TE.CL: the two framings disagree.
    add(
        "cl-te",
        &|n| {
            let body = format!("0\r\n\r\n{}", smuggled(n));
            post(n, &format!("Content-Length: {}\r\nTransfer-Encoding: chunked\r\n", body.len()), &body)
        },
        ChunkedThenClosed("the chunked body is empty; the hidden request is never read"),
    );
    add(
        "te-cl",
        &|n| {
            let s = smuggled(n);
            post(
                n,
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                &format!("{:x}\r\n{s}\r\n0\r\n\r\n", s.len()),
            )
        },
        ChunkedThenClosed("the hidden request is the chunked body's data, passed on as data"),
    );
    // Content-Length disguises.
    add(
        "cl-duplicate",
        &|n| {
            let s = smuggled(n);
            post(n, &format!("Content-Length: 0\r\nContent-Length: {}\r\n", s.len()), &s)
        },
        Same,
    );
    add(
        "cl-list",
        &|n| {
            let s = smuggled(n);
            post(n, &format!("Content-Length: 0, {}\r\n", s.len()), &s)
        },
        Same,
    );
    add("cl-plus", &|n| post(n, "Content-Length: +5\r\n", "hello"), Same);
    add("cl-minus", &|n| post(n, "Content-Length: -5\r\n", "hello"), Same);
    add("cl-hex", &|n| post(n, "Content-Length: 0x5\r\n", "hello"), Same);
    add("cl-overflow", &|n| post(n, "Content-Length: 99999999999999999999999\r\n", "hello"), Same);
    add(
        "cl-space-before-colon",
        &|n| {
            let s = smuggled(n);
            post(n, &format!("Content-Length : {}\r\n", s.len()), &s)
        },
        Same,
    );
    // Transfer-Encoding disguises, each with a Content-Length a lenient reader would fall back on.
    let te_with_cl = |te: &'static str| {
        move |n: &str| {
            let body = format!("0\r\n\r\n{}", smuggled(n));
            post(n, &format!("{te}Content-Length: {}\r\n", body.len()), &body)
        }
    };
    add("te-space-before-colon", &te_with_cl("Transfer-Encoding : chunked\r\n"), Same);
    add("te-xchunked", &te_with_cl("Transfer-Encoding: xchunked\r\n"), Same);
    add("te-chunked-identity", &te_with_cl("Transfer-Encoding: chunked, identity\r\n"), Same);
    add("te-two-fields", &te_with_cl("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"), Same);
    add("te-obs-fold", &te_with_cl("Transfer-Encoding:\r\n chunked\r\n"), Same);
    add("te-vertical-tab", &te_with_cl("Transfer-Encoding:\x0bchunked\r\n"), Same);
    add("te-bare-cr", &te_with_cl("X-A: a\rTransfer-Encoding: chunked\r\n"), Same);
    add("te-no-colon", &te_with_cl("Transfer-Encoding chunked\r\n"), Same);
    add("te-identity-chunked", &|n| post(n, "Transfer-Encoding: identity, chunked\r\n", &chunked("hello")), Same);
    add("te-gzip-chunked", &|n| post(n, "Transfer-Encoding: gzip, chunked\r\n", &chunked("hello")), Same);
    add(
        "te-http10",
        &|n| {
            let body = format!("0\r\n\r\n{}", smuggled(n));
            format!(
                "POST /public/{n} HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        },
        Same,
    );
    // Chunk sizes and chunk framing.
    add(
        "chunk-size-overflow",
        &|n| post(n, "Transfer-Encoding: chunked\r\n", "ffffffffffffffffff1\r\nhello\r\n0\r\n\r\n"),
        Same,
    );
    add("chunk-size-0x", &|n| post(n, "Transfer-Encoding: chunked\r\n", "0x5\r\nhello\r\n0\r\n\r\n"), Same);
    add("chunk-size-negative", &|n| post(n, "Transfer-Encoding: chunked\r\n", "-5\r\nhello\r\n0\r\n\r\n"), Same);
    add("chunk-size-space", &|n| post(n, "Transfer-Encoding: chunked\r\n", "5 \r\nhello\r\n0\r\n\r\n"), Same);
    add("chunk-data-overrun", &|n| post(n, "Transfer-Encoding: chunked\r\n", "3\r\nhello\r\n0\r\n\r\n"), Same);
    add(
        "chunk-lf-only",
        &|n| post(n, "Transfer-Encoding: chunked\r\n", "5\nhello\n0\n\n"),
        IdgateStricter("RFC 9112 §7.1: chunk lines end in CRLF; hyper holds to it, nginx accepts a bare LF"),
    );
    add("chunk-ext-bare-lf", &|n| post(n, "Transfer-Encoding: chunked\r\n", "5;a\nb\r\nhello\r\n0\r\n\r\n"), Same);
    // Head syntax.
    add("lf-only-head", &|n| format!("POST /public/{n} HTTP/1.1\nHost: h\nContent-Length: 5\n\nhello"), Same);
    add("nul-in-value", &|n| post(n, "X-A: a\0b\r\nContent-Length: 5\r\n", "hello"), Same);
    add("double-host", &|n| post(n, "Host: other\r\nContent-Length: 5\r\n", "hello"), Same);
    add("no-host", &|n| format!("POST /public/{n} HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"), Same);
    add("request-line-extra", &|n| format!("GET /public/{n} HTTP/1.1 x\r\nHost: h\r\n\r\n"), Same);
    // Pipelining: a second request is a request of its own, and goes through the gate.
    add(
        "pipelined",
        &|n| format!("GET /public/{n} HTTP/1.1\r\nHost: h\r\n\r\n{}", smuggled(n)),
        ReadOtherwise("nginx has no gate: it passes the anonymous /admin request on, idgate answers it 401"),
    );
    // idgate's own loop takes the first request, hands the connection to hyper at the chunked second one, and
    // hyper reads the third: each is still a request of its own, gated.
    add(
        "pipelined-handoff",
        &|n| {
            let chunked_post = post(n, "Transfer-Encoding: chunked\r\n", &chunked("hello"));
            format!("GET /public/{n} HTTP/1.1\r\nHost: h\r\n\r\n{chunked_post}{}", smuggled(n))
        },
        ReadOtherwise("nginx has no gate: it passes the anonymous /admin request on, idgate answers it 401"),
    );
    add(
        "pipelined-after-body",
        &|n| format!("{}{}", post(n, "Content-Length: 5\r\n", "hello"), smuggled(n)),
        ReadOtherwise("nginx has no gate: it passes the anonymous /admin request on, idgate answers it 401"),
    );
    add("cl-leading-zeros", &|n| post(n, "Content-Length: 005\r\n", "hello"), Same);
    add(
        "get-with-body",
        &|n| {
            let s = smuggled(n);
            format!("GET /public/{n} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{s}", s.len())
        },
        Same,
    );
    c
}

/// The recording upstream: frames every request by RFC 9112 §6 (Transfer-Encoding ending in chunked, else
/// Content-Length, else no body), records it, and answers `200` with the path; an unreadable request is recorded
/// with the method `!` and closes the connection.
async fn spawn_recorder() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(record_connection(stream, log.clone()));
        }
    });
    (addr, seen)
}

async fn record_connection(mut stream: TcpStream, log: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    loop {
        match next_request(&mut stream, &mut buf).await {
            Ok(Some(req)) => {
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}", req.path.len(), req.path);
                log.lock().unwrap().push(req);
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(why) => {
                log.lock().unwrap().push(Seen { method: "!".into(), path: why, body: buf.clone() });
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
                return;
            }
        }
    }
}

/// Reads more of `stream` into `buf`; false at the end of the stream.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// The next request on the connection, or None when it ended cleanly between requests.
async fn next_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<Seen>, String> {
    let (method, path, head_len, te, cl) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                let value = |name: &str| {
                    let v: Vec<String> = req
                        .headers
                        .iter()
                        .filter(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
                        .collect();
                    (!v.is_empty()).then(|| v.join(","))
                };
                let (te, cl) = (value("transfer-encoding"), value("content-length"));
                break (req.method.unwrap_or("").to_owned(), req.path.unwrap_or("").to_owned(), n, te, cl);
            }
            Ok(httparse::Status::Partial) => {
                if !fill(stream, buf).await {
                    return if buf.is_empty() { Ok(None) } else { Err("end of stream in the head".into()) };
                }
            }
            Err(e) => return Err(format!("head: {e}")),
        }
    };
    buf.drain(..head_len);
    let body = match (te, cl) {
        (Some(te), _) if te.rsplit(',').next().is_some_and(|c| c.trim() == "chunked") => {
            read_chunked(stream, buf).await?
        }
        (Some(te), _) => return Err(format!("transfer-encoding {te}")),
        (None, Some(cl)) => {
            let n: usize = cl.parse().map_err(|_| format!("content-length {cl}"))?;
            while buf.len() < n {
                if !fill(stream, buf).await {
                    return Err("end of stream in the body".into());
                }
            }
            buf.drain(..n).collect()
        }
        (None, None) => Vec::new(),
    };
    Ok(Some(Seen { method, path, body }))
}

/// A chunked body (strict: CRLF lines, hex sizes, extensions ignored, trailers skipped).
async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line = read_line(stream, buf).await?;
        let size = line.split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size, 16).map_err(|_| format!("chunk size {line:?}"))?;
        if size == 0 {
            while !read_line(stream, buf).await?.is_empty() {}
            return Ok(body);
        }
        while buf.len() < size + 2 {
            if !fill(stream, buf).await {
                return Err("end of stream in a chunk".into());
            }
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err("chunk data longer than its size".into());
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

async fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<String, String> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..i]).into_owned();
            buf.drain(..i + 2);
            return Ok(line);
        }
        if buf.len() > 4096 || !fill(stream, buf).await {
            return Err("no CRLF line".into());
        }
    }
}

/// A front to send the corpus to: in cleartext, or over TLS (trusting `roots`, for the name `localhost`).
#[derive(Clone)]
enum Front {
    Plain(SocketAddr),
    Tls(SocketAddr, Arc<rustls::ClientConfig>),
}

/// Sends `bytes` on a new connection to `front` and collects the status codes of what comes back until the front
/// closes or is silent for a while.
async fn send_raw(front: Front, bytes: &[u8]) -> (Vec<u16>, bool) {
    match front {
        Front::Plain(addr) => exchange(TcpStream::connect(addr).await.unwrap(), bytes).await,
        Front::Tls(addr, config) => {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
            exchange(tls, bytes).await
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, bytes: &[u8]) -> (Vec<u16>, bool) {
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    let closed = loop {
        let idle = tokio::time::Instant::now() + Duration::from_millis(700);
        match tokio::time::timeout_at(idle.min(deadline), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&chunk[..n]),
            Ok(_) => break true,
            Err(_) => break false,
        }
    };
    if std::env::var_os("SMUGGLING_DEBUG").is_some() {
        eprintln!("---\n{}\n=>\n{}", String::from_utf8_lossy(bytes), String::from_utf8_lossy(&out));
    }
    (response_statuses(&out), closed)
}

/// The status codes of the responses in `bytes`, one after the other (each framed by its Content-Length, or the
/// rest of the bytes when it has none).
fn response_statuses(mut bytes: &[u8]) -> Vec<u16> {
    let mut statuses = Vec::new();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = response.parse(bytes) else { return statuses };
        statuses.push(response.code.unwrap_or_default());
        let length = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok());
        match length {
            Some(n) if head + n <= bytes.len() => bytes = &bytes[head + n..],
            _ => return statuses,
        }
    }
}

/// Runs the corpus against `front`, every case on its own connection, concurrently.
async fn run_corpus(front: Front, seen: &Arc<Mutex<Vec<Seen>>>) -> BTreeMap<&'static str, Outcome> {
    let cases = corpus();
    let tasks: Vec<_> = cases
        .iter()
        .map(|(_, bytes, _)| {
            let (bytes, front) = (bytes.clone().into_bytes(), front.clone());
            tokio::spawn(async move { send_raw(front, &bytes).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    // The upstream may still be reading a body the front sends after answering: let it finish.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = seen.lock().unwrap().clone();
    cases
        .iter()
        .zip(answers)
        .map(|((name, _, _), (statuses, closed))| {
            let tag = |p: &str| p.rsplit('/').next() == Some(*name);
            let upstream = seen.iter().filter(|s| tag(&s.path)).cloned().collect();
            (*name, Outcome { statuses, closed, upstream })
        })
        .collect()
}

/// nginx as a plain HTTP/1.1 proxy to `upstream` (kept connections), started by the nginx suite's helper.
async fn start_plain_nginx(upstream: SocketAddr) -> (crate::nginx::Nginx, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = format!(
        "upstream app {{ server {upstream}; keepalive 8; }}\n\
         server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://app; proxy_http_version 1.1; \
         proxy_set_header Connection \"\"; }} }}"
    );
    (crate::nginx::start_nginx(port, &server).await, ([127, 0, 0, 1], port).into())
}

#[tokio::test]
async fn the_smuggling_corpus_never_reaches_a_gated_path_and_idgate_refuses_what_nginx_refuses() {
    let (through_idgate, idgate_seen) = spawn_recorder().await;
    let gate = TestGate::builder()
        .upstream(through_idgate)
        .settings(|s| s.routes = vec![route("/public", AuthMode::Public)])
        .spawn()
        .await;
    let front: SocketAddr = gate.base.trim_start_matches("http://").parse().unwrap();
    let (through_hyper, hyper_seen) = spawn_recorder().await;
    let (tls_gate, tls_client, _cert_dir) = spawn_tls_gate(through_hyper).await;
    let tls_front = Front::Tls(tls_gate.running.as_ref().unwrap().public_addr, tls_client);
    let (through_nginx, nginx_seen) = spawn_recorder().await;
    let (nginx, nginx_addr) = start_plain_nginx(through_nginx).await;

    let (by_idgate, by_hyper, by_nginx) = tokio::join!(
        run_corpus(Front::Plain(front), &idgate_seen),
        run_corpus(tls_front, &hyper_seen),
        run_corpus(Front::Plain(nginx_addr), &nginx_seen)
    );
    let mut report = String::new();
    let mut failures = Vec::new();
    for (name, _, note) in corpus() {
        let (i, n) = (&by_idgate[name], &by_nginx[name]);
        report.push_str(&format!(
            "{name:24} idgate {:?} {:?}\n{:24} nginx  {:?} {:?}\n",
            i.statuses, i.upstream, "", n.statuses, n.upstream
        ));
        // The cleartext path (idgate's own loop, hyper for what it hands over) reads every case as hyper alone does.
        if *i != by_hyper[name] {
            failures.push(format!("{name}: idgate's own HTTP/1.1 loop {i:?}, hyper's server {:?}", by_hyper[name]));
        }
        if i.upstream.iter().any(|s| s.path.starts_with("/admin")) {
            failures.push(format!("{name}: an anonymous /admin request reached the upstream through idgate"));
        }
        // A malformed request is the client's fault: 4xx (or 501 for a coding), never a 5xx blaming the upstream.
        if i.refused() && i.statuses.first().is_some_and(|s| !(400..500).contains(s) && *s != 501) {
            failures.push(format!("{name}: refused with {:?}, not as the client's error", i.statuses));
        }
        if i.upstream.iter().any(|s| s.method == "!") {
            failures.push(format!("{name}: idgate sent the upstream a request it cannot frame"));
        }
        let same = i.refused() == n.refused() && i.upstream == n.upstream;
        let (holds, broken) = match note {
            Note::Same => (same, "idgate and nginx differ".to_owned()),
            Note::IdgateStricter(why) => {
                (i.refused() && !n.refused(), format!("no longer stricter than nginx ({why})"))
            }
            Note::NginxStricter(why) => (
                n.refused() && !i.refused() && i.upstream.len() == 1,
                format!("nginx no longer the stricter one ({why})"),
            ),
            Note::ReadOtherwise(why) => {
                (!same && !i.refused() && !n.refused(), format!("no longer read otherwise by both ({why})"))
            }
            Note::ChunkedThenClosed(why) => (
                n.refused() && i.upstream.len() == 1 && i.statuses.len() == 1 && i.closed,
                format!("not read by its coding alone and closed ({why})"),
            ),
        };
        if !holds {
            failures.push(format!("{name}: {broken}"));
        }
    }
    // The baselines really pass on, so "both refuse" is not how the corpus agrees.
    for name in ["plain-cl", "plain-chunked", "chunk-extension", "lf-only-head"] {
        let body = &by_idgate[name].upstream.first().map(|s| s.body.clone());
        assert_eq!(body.as_deref(), Some(&b"hello"[..]), "{name} passes on with its body:\n{report}");
    }
    // Read by the coding alone: the upstream gets the chunked body, nothing else.
    let body = |name: &str| by_idgate[name].upstream.first().map(|s| s.body.clone()).unwrap_or_default();
    assert_eq!(body("cl-te"), b"", "cl-te's chunked body is empty:\n{report}");
    assert_eq!(body("te-cl"), smuggled("te-cl").into_bytes(), "te-cl's chunk is passed on as data:\n{report}");
    // The request after the first goes through the gate: anonymous /admin (no browser) is told to log in.
    for name in ["pipelined", "trailer-content-length", "pipelined-after-body"] {
        assert_eq!(by_idgate[name].statuses, [200, 401], "{name}: the second request is gated:\n{report}");
    }
    assert_eq!(by_idgate["pipelined-handoff"].statuses, [200, 200, 401], "handed over mid-pipeline:\n{report}");
    assert_eq!(body("pipelined-handoff"), b"", "its first request has no body:\n{report}");
    assert_eq!(by_idgate["pipelined-handoff"].upstream[1].body, b"hello", "the handed-over one has its body");
    assert!(failures.is_empty(), "{}\n\n{report}", failures.join("\n"));
    drop(nginx);
    gate.shutdown().await;
    tls_gate.shutdown().await;
}

/// idgate with the same routes on a TLS listener (hyper's server reads every request there), and a client
/// configuration that trusts its certificate. The directory holds the certificate files while the gate runs.
async fn spawn_tls_gate(upstream: SocketAddr) -> (TestGate, Arc<rustls::ClientConfig>, tempfile::TempDir) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let gate = TestGate::builder()
        .upstream(upstream)
        .settings(move |s| {
            s.routes = vec![route("/public", AuthMode::Public)];
            s.server.tls = Some(idgate::config::settings::TlsFiles { cert: cert_path, key: key_path });
        })
        .spawn()
        .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(rustls::crypto::aws_lc_rs::default_provider().into())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (gate, Arc::new(config), dir)
}

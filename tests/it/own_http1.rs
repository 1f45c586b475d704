//! idgate's own HTTP/1.1 loop reads every request head it takes exactly as hyper's server reads it
//! (`server::h1`, issue 18 §2): thousands of mutations of real request heads — bytes flipped, framing and host
//! lines inserted, CR, LF, NUL, tabs, commas and spaces dropped in, ranges cut out — each given to
//! `server::h1::parse_request` and to a real hyper HTTP/1 server (the same parser settings idgate's listener uses).
//!
//! What must hold, for every case: when the loop takes a request, hyper reads one too, with the same method,
//! target, headers (names, values, order) and body; when the loop wants more bytes of a complete input, hyper reads
//! no request from it either. A case the loop hands over is hyper's alone, and needs no comparison. The generator is
//! seeded: a failure prints the case, and the same run reproduces it.

use std::{
    convert::Infallible,
    ops::Range,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderName, Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use idgate::server::h1::{self, Parsed};
use tokio::io::AsyncWriteExt;

/// A request as one reader read it.
#[derive(Debug, PartialEq, Eq)]
struct Read {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn read_of(req: &Request<impl Sized>, body: Vec<u8>) -> Read {
    Read {
        method: req.method().to_string(),
        target: req.uri().to_string(),
        headers: req.headers().iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect(),
        body,
    }
}

/// What hyper's HTTP/1 server reads from `bytes` (the client then closes its sending side): the first request's
/// head, and its body when it is all there.
async fn hyper_reads(bytes: &[u8]) -> Option<(Read, bool)> {
    let (mut client, server) = tokio::io::duplex(1 << 17);
    let first: Arc<Mutex<Option<(Read, bool)>>> = Arc::default();
    let slot = Arc::clone(&first);
    let service = service_fn(move |req: Request<Incoming>| {
        let slot = Arc::clone(&slot);
        async move {
            let (parts, body) = req.into_parts();
            let head = Request::from_parts(parts, ());
            let whole = body.collect().await.ok().map(|b| b.to_bytes().to_vec());
            let mut slot = slot.lock().unwrap();
            if slot.is_none() {
                let complete = whole.is_some();
                *slot = Some((read_of(&head, whole.unwrap_or_default()), complete));
            }
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        }
    });
    // idgate's listener: hyper's defaults for the parser and header count, this head size limit. Half-closing is
    // allowed so that the client's end of input does not cancel the request being read.
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(8192)
        .half_close(true)
        .serve_connection(TokioIo::new(server), service);
    let served = tokio::spawn(conn);
    let _ = client.write_all(bytes).await;
    let _ = client.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), served).await;
    first.lock().unwrap().take()
}

/// What idgate's loop does with some bytes.
enum Own {
    /// It takes the request (its body read when all there: the flag).
    Takes(Read, bool),
    /// It refuses the head itself.
    Refuses(String),
    /// It waits for more bytes.
    WantsMore,
    /// It hands the connection to hyper.
    HandsOver,
}

fn own_reads(bytes: &[u8]) -> Own {
    let mut fields: Vec<(HeaderName, Range<usize>)> = Vec::new();
    match h1::parse_request(bytes, 8192, &mut fields) {
        Parsed::Partial => Own::WantsMore,
        Parsed::Handoff(_) => Own::HandsOver,
        Parsed::Request(head) => {
            let (len, body_len) = (head.len, head.body_len);
            let whole = bytes.len() >= len + body_len;
            let body = if whole { bytes[len..len + body_len].to_vec() } else { Vec::new() };
            let head_bytes = Bytes::copy_from_slice(&bytes[..len]);
            match h1::into_request(head, &head_bytes, &mut fields, ()) {
                Ok(req) => Own::Takes(read_of(&req, body), whole),
                Err(e) => Own::Refuses(e.to_string()),
            }
        }
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SEEDS: &[&str] = &[
    "GET /p/a?q=1 HTTP/1.1\r\nHost: h\r\nCookie: a=b; c=d\r\nAccept: */*\r\n\r\n",
    "POST /f HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    "HEAD / HTTP/1.1\r\nhost:h\r\nConnection: keep-alive, close\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
    "DELETE /x%2Fy HTTP/1.1\r\nHost: h:8080\r\nContent-Length: 0\r\nAuthorization: Bearer abc\r\n\r\n",
];

const TOKENS: &[&str] = &[
    "\r",
    "\n",
    "\r\n",
    " ",
    "\t",
    ":",
    ",",
    "\0",
    "\x0b",
    "\x7f",
    "\u{e9}",
    "0",
    "-",
    "+",
    "chunked",
    "Host: h\r\n",
    "Host: other\r\n",
    "Content-Length: 5\r\n",
    "Content-Length: 3\r\n",
    "Transfer-Encoding: chunked\r\n",
    "Connection: upgrade\r\n",
    "Expect: 100-continue\r\n",
    " HTTP/1.0",
    "\r\n ",
    "%2e",
    "/..",
    "?",
    "#",
    "<",
    "\"",
];

/// One mutation of a seed: 1 to 3 edits.
fn mutate(rng: &mut Rng) -> Vec<u8> {
    let mut bytes = SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec();
    for _ in 0..=rng.below(3) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(4) {
            0 if at < bytes.len() => bytes[at] = rng.next() as u8,
            1 if at < bytes.len() => {
                let end = (at + 1 + rng.below(8)).min(bytes.len());
                bytes.drain(at..end);
            }
            _ => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                bytes.splice(at..at, token.iter().copied());
            }
        }
    }
    bytes
}

#[tokio::test]
async fn every_head_the_own_loop_takes_hyper_reads_the_same_way() {
    let mut rng = Rng(0x1d6a_7e00_5eed_0018);
    let (mut taken, mut handed, mut wants_more, mut refused) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    let cases: Vec<Vec<u8>> =
        SEEDS.iter().map(|s| s.as_bytes().to_vec()).chain((0..3000).map(|_| mutate(&mut rng))).collect();
    for case in &cases {
        let shown = String::from_utf8_lossy(case).into_owned();
        match own_reads(case) {
            Own::HandsOver => handed += 1,
            Own::WantsMore => {
                wants_more += 1;
                if let Some(read) = hyper_reads(case).await {
                    failures.push(format!("{shown:?}: the loop waits for more, hyper read {read:?}"));
                }
            }
            Own::Refuses(why) => {
                refused += 1;
                if let Some(read) = hyper_reads(case).await {
                    failures.push(format!("{shown:?}: the loop refuses it ({why}), hyper read {read:?}"));
                }
            }
            Own::Takes(mut own, whole) => {
                taken += 1;
                match hyper_reads(case).await {
                    None => failures.push(format!("{shown:?}: the loop took {own:?}, hyper read nothing")),
                    Some((mut theirs, their_whole)) => {
                        // Without its whole body neither has read the body: compare the heads alone.
                        if whole != their_whole {
                            failures.push(format!("{shown:?}: whole body by the loop {whole}, by hyper {their_whole}"));
                        }
                        if !whole {
                            (own.body, theirs.body) = (Vec::new(), Vec::new());
                        }
                        if own != theirs {
                            failures.push(format!("{shown:?}: the loop read {own:?}, hyper {theirs:?}"));
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
    // The corpus exercises every outcome, so that agreement is not agreement by never taking anything.
    assert!(taken > 300 && handed > 300 && wants_more > 20, "taken {taken}, handed {handed}, partial {wants_more}");
    eprintln!("taken {taken}, handed over {handed}, partial {wants_more}, refused {refused}");
}

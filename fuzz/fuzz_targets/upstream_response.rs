//! Any bytes as an upstream's answer on a kept connection: the response-head parser and the chunked decoder never
//! panic, never consume more than they were given, and decode the same whatever the read boundaries (the body
//! read whole gives the same data, or the same refusal, as the body read one byte at a time).
#![no_main]

use http::Method;
use idgate::forward::h1::{Chunked, Malformed, Parsed, Step, parse_response};
use libfuzzer_sys::fuzz_target;

/// Decodes `wire` delivered `step` bytes at a time: the data and the bytes left after the end, or the refusal.
fn dechunk(wire: &[u8], step: usize) -> Result<(Vec<u8>, usize), Option<Malformed>> {
    let mut decoder = Chunked::default();
    let (mut buf, mut fed, mut out) = (Vec::new(), 0, Vec::new());
    loop {
        let (framing, next) = decoder.step(&buf).map_err(Some)?;
        assert!(framing <= buf.len(), "framing beyond the buffer");
        buf.drain(..framing);
        match next {
            Step::Data(n) => {
                assert!(n > 0 && n <= buf.len(), "data beyond the buffer");
                out.extend(buf.drain(..n));
            }
            Step::End => return Ok((out, buf.len() + wire.len() - fed)),
            Step::More if fed == wire.len() => return Err(None),
            Step::More => {
                let end = (fed + step).min(wire.len());
                buf.extend_from_slice(&wire[fed..end]);
                fed = end;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let method = if data.first().is_some_and(|b| b & 1 == 1) { Method::HEAD } else { Method::GET };
    let mut rest = data;
    // Informational heads are skipped, as the kept connection skips them.
    loop {
        match parse_response(rest, &method) {
            Ok(Parsed::Informational(n)) => {
                assert!(n > 0 && n <= rest.len());
                rest = &rest[n..];
            }
            Ok(Parsed::Final(n, head)) => {
                assert!(n <= rest.len());
                if head.framing == idgate::forward::h1::Framing::Chunked {
                    let body = &rest[n..];
                    assert_eq!(dechunk(body, usize::MAX), dechunk(body, 1), "read boundaries changed the decoding");
                }
                break;
            }
            Ok(Parsed::Partial) | Err(_) => break,
        }
    }
    // The decoder on the raw bytes too (most inputs never reach it through a head).
    assert_eq!(dechunk(data, usize::MAX), dechunk(data, 1), "read boundaries changed the decoding");
});

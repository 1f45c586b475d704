//! Any bytes as the start of a client connection, as idgate's own HTTP/1.1 loop reads them
//! (`idgate::server::h1`): the head parser never panics, never measures beyond its input, decides the same whatever
//! the read boundaries (every shorter prefix of a taken head asks for more, and bytes after it change nothing), and
//! a request it takes has the shape the loop relies on: HTTP/1.1, an origin-form target, no transfer coding, at most
//! one `Content-Length`, equal to the body it reads, no larger than `MAX_BODY`.
#![no_main]

use std::ops::Range;

use bytes::Bytes;
use http::{HeaderName, Version, header};
use idgate::server::h1::{self, Parsed};
use libfuzzer_sys::fuzz_target;

const MAX_HEAD: usize = 8192;

fn parse(bytes: &[u8]) -> Parsed {
    let mut fields: Vec<(HeaderName, Range<usize>)> = Vec::new();
    h1::parse_request(bytes, MAX_HEAD, &mut fields)
}

fuzz_target!(|data: &[u8]| {
    let mut fields: Vec<(HeaderName, Range<usize>)> = Vec::new();
    let Parsed::Request(head) = h1::parse_request(data, MAX_HEAD, &mut fields) else { return };
    let (len, body_len) = (head.len, head.body_len);
    assert!(len <= data.len() && len <= MAX_HEAD, "head measured beyond its input or limit");
    assert!(body_len <= h1::MAX_BODY, "a body larger than the loop reads whole");
    for cut in [0, len / 2, len.saturating_sub(1)] {
        if cut < len {
            assert!(matches!(parse(&data[..cut]), Parsed::Partial), "a prefix of a taken head was decided");
        }
    }
    let mut more = data[..len].to_vec();
    more.extend_from_slice(b"GET /next HTTP/1.1\r\n");
    match parse(&more) {
        Parsed::Request(again) => assert_eq!((again.len, again.body_len), (len, body_len), "bytes after it mattered"),
        other => panic!("bytes after a taken head changed the decision: {other:?}"),
    }
    let bytes = Bytes::copy_from_slice(&data[..len]);
    let Ok(req) = h1::into_request(head, &bytes, &mut fields, ()) else { return };
    assert_eq!(req.version(), Version::HTTP_11);
    assert!(req.uri().path().starts_with('/') && req.uri().authority().is_none(), "not an origin-form target");
    assert_ne!(req.method(), http::Method::CONNECT);
    assert!(!req.headers().contains_key(header::TRANSFER_ENCODING), "a transfer coding was taken");
    assert!(!req.headers().contains_key(header::UPGRADE) && !req.headers().contains_key(header::EXPECT));
    let lengths: Vec<_> = req.headers().get_all(header::CONTENT_LENGTH).iter().collect();
    assert!(lengths.len() <= 1, "several Content-Length taken");
    let stated = lengths.first().map_or(0, |v| v.to_str().unwrap().parse::<usize>().unwrap());
    assert_eq!(stated, body_len, "the body read is not the length stated");
});

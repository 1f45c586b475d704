use super::*;

fn head(raw: &str) -> Result<ResponseHead, Malformed> {
    head_to(raw, &Method::GET)
}

fn head_to(raw: &str, method: &Method) -> Result<ResponseHead, Malformed> {
    match parse_response(raw.as_bytes(), method)? {
        Parsed::Final(n, h) => {
            assert_eq!(n, raw.len(), "the whole head is consumed");
            Ok(h)
        }
        other => panic!("not a final head: {other:?}"),
    }
}

#[test]
fn the_request_head_is_one_buffer_with_its_framing_and_without_the_clients() {
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("app"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
    headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    headers.append("x-a", HeaderValue::from_static("1"));
    headers.append("x-a", HeaderValue::from_static("2"));
    let mut out = Vec::new();
    write_request_head(&mut out, &Method::POST, "/p?q=1", &headers, RequestBody::Length(5));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "POST /p?q=1 HTTP/1.1\r\nhost: app\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 5\r\n\r\n"
    );
    let mut out = Vec::new();
    write_request_head(&mut out, &Method::GET, "/", &HeaderMap::new(), RequestBody::None);
    assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n", "no body, no framing header");
    let mut out = Vec::new();
    let mut zero = HeaderMap::new();
    zero.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    write_request_head(&mut out, &Method::POST, "/", &zero, RequestBody::None);
    assert_eq!(out, b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n", "a client's length 0 stays");
}

#[test]
fn each_response_gets_the_framing_rfc_9112_gives_it() {
    let cases: [(&str, Framing, bool); 9] = [
        ("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n", Framing::Length(12), true),
        ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Framing::None, true),
        ("HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\ncontent-length: 7\r\n\r\n", Framing::Length(7), true),
        ("HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n", Framing::Chunked, true),
        ("HTTP/1.1 200 OK\r\n\r\n", Framing::UntilClose, false),
        ("HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n", Framing::None, true),
        ("HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n", Framing::None, true),
        ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive, Close\r\n\r\n", Framing::Length(5), false),
        ("HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n", Framing::Length(5), false),
    ];
    for (raw, framing, reusable) in cases {
        let h = head(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        assert_eq!((h.framing, h.reusable), (framing, reusable), "{raw:?}");
    }
    let h = head_to("HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n", &Method::HEAD).unwrap();
    assert_eq!(h.framing, Framing::None, "a HEAD response has no body");
    assert_eq!(h.headers.get("content-length").unwrap(), "50", "its length header stays for the client");
}

#[test]
fn framing_an_upstream_could_use_to_desynchronise_the_connection_is_refused() {
    let cases = [
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
            "both Content-Length and Transfer-Encoding",
        ),
        ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n", "differing Content-Length values"),
        ("HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n", "differing Content-Length values"),
        ("HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n", "invalid Content-Length"),
        ("HTTP/1.1 200 OK\r\ncontent-length: 0x5\r\n\r\n", "invalid Content-Length"),
        ("HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n", "invalid Content-Length"),
        ("HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n", "invalid Content-Length"),
        ("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n", "a transfer coding other than chunked"),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
            "a transfer coding other than chunked",
        ),
        ("HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\n\r\n", "a transfer coding other than chunked"),
        ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked;x\r\n\r\n", "a transfer coding other than chunked"),
        ("HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", "Transfer-Encoding on an HTTP/1.0 response"),
        ("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n", "101 without an upgrade request"),
        ("HTTP/1.1 200 OK\r\nx: a\r\n b\r\n\r\n", "invalid header name"),
        ("HTTP/1.1 200 OK\r\nx : a\r\n\r\n", "invalid header name"),
        ("HTTP/1.1 200 OK\r\nx: a\rb\r\n\r\n", "invalid header value"),
        ("HTTP/2 200 OK\r\n\r\n", "not HTTP/1.0 or HTTP/1.1"),
        ("HTTP/1.1 20 OK\r\n\r\n", "invalid status line"),
    ];
    for (raw, why) in cases {
        assert_eq!(head(raw).map(|h| h.framing).unwrap_err(), Malformed(why), "{raw:?}");
    }
}

#[test]
fn informational_heads_are_skipped_and_partial_heads_wait() {
    let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    let Ok(Parsed::Informational(n)) = parse_response(raw, &Method::GET) else { panic!("100 first") };
    assert_eq!(n, 25);
    assert!(matches!(parse_response(&raw[n..], &Method::GET), Ok(Parsed::Final(_, _))));
    assert!(matches!(
        parse_response(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n", &Method::GET),
        Ok(Parsed::Informational(40))
    ));
    assert!(matches!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-le", &Method::GET), Ok(Parsed::Partial)));
    let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES));
    assert_eq!(parse_response(huge.as_bytes(), &Method::GET).unwrap_err(), Malformed("head too large"));
    let just_under = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES - 30));
    assert!(matches!(parse_response(just_under.as_bytes(), &Method::GET), Ok(Parsed::Partial)), "one byte under waits");
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x{i}: 1\r\n")).collect();
    let raw = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
    assert_eq!(head(&raw).unwrap_err(), Malformed("more than 100 header fields"));
    let fewer: String = (0..MAX_HEADERS).map(|i| format!("x{i}: 1\r\n")).collect();
    assert!(head(&format!("HTTP/1.1 200 OK\r\n{fewer}content-length: 0\r\n\r\n")).is_err(), "101 fields");
    assert_eq!(head(&format!("HTTP/1.1 200 OK\r\n{fewer}\r\n")).unwrap().headers.len(), 100);
}

/// Decodes `wire` fed `step` bytes at a time, as reads would deliver it.
fn dechunk(wire: &[u8], step: usize) -> Result<(Vec<u8>, usize), Malformed> {
    let mut decoder = Chunked::default();
    let mut buf: Vec<u8> = Vec::new();
    let (mut fed, mut out) = (0, Vec::new());
    loop {
        let (framing, next) = decoder.step(&buf)?;
        buf.drain(..framing);
        match next {
            Step::Data(n) => out.extend(buf.drain(..n)),
            Step::End => return Ok((out, buf.len() + wire.len() - fed)),
            Step::More if fed >= wire.len() => return Err(Malformed("test: ran out of input")),
            Step::More => {
                let end = (fed + step).min(wire.len());
                buf.extend_from_slice(&wire[fed..end]);
                fed = end;
            }
        }
    }
}

#[test]
fn chunked_bodies_decode_whatever_the_read_boundaries() {
    let wire = b"5\r\nhello\r\n1A;name=\"v\" \t\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\n";
    for step in [1, 2, 3, 7, 1000] {
        let (body, left) = dechunk(wire, step).unwrap();
        assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "fed {step} at a time");
        assert_eq!(left, 0);
    }
    let (body, left) = dechunk(b"3 \r\nabc\r\n000\r\n\r\nHTTP/1.1", 1000).unwrap();
    assert_eq!((body.as_slice(), left), (&b"abc"[..], 8), "bytes after the end are left for the caller to see");
    assert_eq!(
        dechunk(b"FFFFFFFFFFFFFFFF\r\n", 1000).unwrap_err(),
        Malformed("test: ran out of input"),
        "16 digits fit"
    );
}

#[test]
fn chunked_framing_that_another_parser_could_read_otherwise_is_refused() {
    let cases: [(&[u8], &str); 12] = [
        (b"5\nhello\r\n0\r\n\r\n", "bare LF in chunked framing"),
        (b"5\r\nhello\n0\r\n\r\n", "chunk data not followed by CRLF"),
        (b"5\r\nhelloXX0\r\n\r\n", "chunk data not followed by CRLF"),
        (b"5\rX\r\nhello\r\n", "bare CR in chunked framing"),
        (b"5;a\nb\r\nhello\r\n0\r\n\r\n", "bare LF in chunked framing"),
        (b"\r\nhello\r\n", "chunk size is not a hex number"),
        (b"-5\r\nhello\r\n", "chunk size is not a hex number"),
        (b"0x5\r\nhello\r\n", "chunk size is not a hex number"),
        (b"5 5\r\nhello\r\n", "chunk size is not a hex number"),
        (b"5;\x01\r\nhello\r\n", "chunk size is not a hex number"),
        (b"10000000000000000\r\n", "chunk size too large"),
        (b"0\r\nnot a field\r\n\r\n", "invalid trailer field"),
    ];
    for (wire, why) in cases {
        assert_eq!(dechunk(wire, 1000).unwrap_err(), Malformed(why), "{:?}", String::from_utf8_lossy(wire));
    }
}

#[test]
fn chunk_lines_and_trailers_are_bounded() {
    let long_ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE));
    assert_eq!(dechunk(long_ext.as_bytes(), 4096).unwrap_err(), Malformed("chunk size line too long"));
    let at_limit = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE - 2));
    assert_eq!(dechunk(at_limit.as_bytes(), 4096).unwrap().0, b"hello", "a line of exactly the limit is read");
    let unended = "e".repeat(MAX_CHUNK_LINE + 1);
    assert_eq!(dechunk(unended.as_bytes(), 100_000).unwrap_err(), Malformed("chunk size line too long"));
    let trailers: String = (0..2000).map(|i| format!("t{i}: v\r\n")).collect();
    let wire = format!("0\r\n{trailers}\r\n");
    assert_eq!(dechunk(wire.as_bytes(), 4096).unwrap_err(), Malformed("trailer section too large"));
}

#[test]
fn decoding_does_not_depend_on_where_reads_end() {
    // Valid bodies with single bytes changed, dropped or doubled (the fuzz target `upstream_response` does the
    // same with any bytes): decoded whole, a byte at a time and three at a time, each gives the same data, or the
    // same refusal.
    let seeds: [&[u8]; 3] = [
        b"5\r\nhello\r\n1a;x=y\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nt: v\r\n\r\n",
        b"1\r\na\r\n0\r\n\r\n",
        b"3 ;e\r\nabc\r\n0\r\n\r\nrest",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b"0123456789abcdefABCDEF;:= \t\r\nxz\x00\x7f";
    let (mut refused, mut decoded) = (0, 0);
    for _ in 0..3000 {
        let mut wire = seeds[(next() % 3) as usize].to_vec();
        for _ in 0..(next() % 3 + 1) {
            let at = (next() as usize) % wire.len();
            match next() % 3 {
                0 => wire[at] = alphabet[(next() as usize) % alphabet.len()],
                1 => drop(wire.remove(at)),
                _ => wire.insert(at, wire[at]),
            }
        }
        let whole = dechunk(&wire, usize::MAX);
        assert_eq!(whole, dechunk(&wire, 1), "{:?}", String::from_utf8_lossy(&wire));
        assert_eq!(whole, dechunk(&wire, 3), "{:?}", String::from_utf8_lossy(&wire));
        if whole.is_ok() { decoded += 1 } else { refused += 1 }
    }
    assert!(refused > 100 && decoded > 100, "both kinds seen: {refused} refused, {decoded} decoded");
}

#[test]
fn a_long_target_is_written_whole() {
    let target = format!("/{}", "p".repeat(100));
    let mut out = Vec::new();
    write_request_head(&mut out, &Method::GET, &target, &HeaderMap::new(), RequestBody::None);
    assert_eq!(out, format!("GET {target} HTTP/1.1\r\n\r\n").into_bytes());
}

/// hyper's client limit, 8 KiB + 100 × 4 KiB, stated as the number it is.
const HEAD_LIMIT: usize = 417_792;

#[test]
fn a_complete_head_may_be_exactly_the_limit_and_not_a_byte_more() {
    // `HTTP/1.1 200 OK\r\nx: ` is 20 bytes, the final CRLF CRLF 4.
    let of_size = |n: usize| format!("HTTP/1.1 200 OK\r\nx: {}\r\n\r\n", "a".repeat(n - 24));
    assert_eq!(head(&of_size(HEAD_LIMIT)).unwrap().status, StatusCode::OK);
    let over = of_size(HEAD_LIMIT + 1);
    assert_eq!(parse_response(over.as_bytes(), &Method::GET).unwrap_err(), Malformed("head too large"));
    // A partial head is refused once it has reached the limit without ending.
    let partial = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(HEAD_LIMIT - 20));
    assert_eq!(parse_response(partial.as_bytes(), &Method::GET).unwrap_err(), Malformed("head too large"));
    let partial = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(HEAD_LIMIT - 21));
    assert!(matches!(parse_response(partial.as_bytes(), &Method::GET), Ok(Parsed::Partial)));
}

#[test]
fn only_connection_close_ends_reuse() {
    let kept = head("HTTP/1.1 200 OK\r\nx-a: close\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n").unwrap();
    assert!(kept.reusable, "a header other than Connection, and a Connection without close, keep the connection");
    let closed = head("HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n").unwrap();
    assert!(!closed.reusable, "close among the tokens, in any case");
}

#[test]
fn a_content_length_has_at_most_nineteen_digits() {
    let nineteen = head("HTTP/1.1 200 OK\r\ncontent-length: 1000000000000000000\r\n\r\n").unwrap();
    assert_eq!(nineteen.framing, Framing::Length(1_000_000_000_000_000_000));
    assert_eq!(
        head("HTTP/1.1 200 OK\r\ncontent-length: 10000000000000000000\r\n\r\n").unwrap_err(),
        Malformed("invalid Content-Length")
    );
}

#[test]
fn chunk_sizes_are_hex_in_either_case() {
    let data = "x".repeat(0x2af);
    for size in ["2af", "2AF", "2aF"] {
        let wire = format!("{size}\r\n{data}\r\n0\r\n\r\n");
        assert_eq!(dechunk(wire.as_bytes(), 1000).unwrap().0, data.as_bytes(), "{size}");
    }
    assert_eq!(dechunk(b"a\r\n0123456789\r\n0\r\n\r\n", 1000).unwrap().0, b"0123456789");
}

/// The limits as the numbers they are: 16 KiB for a chunk-size line and for a trailer section.
const CHUNK_LINE_LIMIT: usize = 16_384;

#[test]
fn chunk_line_and_trailer_limits_are_sixteen_kib() {
    let line = |ext: usize| format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(ext));
    assert_eq!(dechunk(line(CHUNK_LINE_LIMIT - 2).as_bytes(), 4096).unwrap().0, b"hello");
    assert_eq!(
        dechunk(line(CHUNK_LINE_LIMIT - 1).as_bytes(), 4096).unwrap_err(),
        Malformed("chunk size line too long")
    );
    // Trailer lines count with their CRLF; the blank line ending the section counts too.
    let trailers = |lines: usize, value: usize| -> String {
        let fields: String = (0..lines).map(|i| format!("t{i:03}: {}\r\n", "v".repeat(value))).collect();
        format!("0\r\n{fields}\r\n")
    };
    // 128 lines of 6 + 118 + 2 = 126 bytes: 16 128, and the final CRLF: 16 130 of 16 384.
    assert_eq!(dechunk(trailers(128, 118).as_bytes(), 4096).unwrap().0, b"");
    // 130 such lines: 16 380 bytes; the final CRLF fits, a 131st line does not.
    assert_eq!(dechunk(trailers(130, 118).as_bytes(), 4096).unwrap().0, b"");
    assert_eq!(dechunk(trailers(131, 118).as_bytes(), 4096).unwrap_err(), Malformed("trailer section too large"));
}

#[test]
fn trailer_fields_are_a_token_a_colon_and_a_visible_value() {
    let accepted: [&[u8]; 4] = [b"t: v", b"t:", b"x-T!#$%&'*+-.^_`|~9: a\tb \x80", b"t: a:b"];
    for field in accepted {
        let mut wire = b"0\r\n".to_vec();
        wire.extend_from_slice(field);
        wire.extend_from_slice(b"\r\n\r\n");
        assert_eq!(dechunk(&wire, 1000).unwrap().0, b"", "{:?}", String::from_utf8_lossy(field));
    }
    let refused: [&[u8]; 5] = [b": v", b"t v: 1", b"t(: 1", b"t: a\x01b", b"t: a\x7f"];
    for field in refused {
        let mut wire = b"0\r\n".to_vec();
        wire.extend_from_slice(field);
        wire.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            dechunk(&wire, 1000).unwrap_err(),
            Malformed("invalid trailer field"),
            "{:?}",
            String::from_utf8_lossy(field)
        );
    }
}

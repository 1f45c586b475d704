use super::*;

fn parse(raw: &[u8]) -> (Parsed, Vec<(HeaderName, Range<usize>)>) {
    let mut fields = Vec::new();
    let parsed = parse_request(raw, 8192, &mut fields);
    (parsed, fields)
}

fn handoff(raw: &[u8]) -> &'static str {
    match parse(raw).0 {
        Parsed::Handoff(why) => why,
        other => panic!("{:?} was taken: {other:?}", String::from_utf8_lossy(raw)),
    }
}

fn request(raw: &[u8]) -> (Request<()>, usize, bool) {
    let (parsed, mut fields) = parse(raw);
    let Parsed::Request(head) = parsed else { panic!("not taken: {parsed:?}") };
    let (len, body_len, close) = (head.len, head.body_len, head.close);
    let bytes = Bytes::copy_from_slice(&raw[..len]);
    let req = into_request(head, &bytes, &mut fields, ()).unwrap();
    (req, body_len, close)
}

#[test]
fn a_plain_keep_alive_get_is_taken_with_its_headers_in_order() {
    let raw = b"GET /a/b?x=1 HTTP/1.1\r\nHost: app\r\nCookie: a=1\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next";
    let (req, body_len, close) = request(raw);
    assert_eq!(req.method(), Method::GET);
    assert_eq!(req.uri().path(), "/a/b");
    assert_eq!(req.uri().query(), Some("x=1"));
    assert_eq!(req.uri().authority(), None);
    assert_eq!(req.version(), Version::HTTP_11);
    assert_eq!(req.headers()["host"], "app");
    let twos: Vec<_> = req.headers().get_all("x-two").iter().collect();
    assert_eq!(twos, ["1", "2"]);
    assert_eq!((body_len, close), (0, false));
    // The head ends at its blank line; the next request's bytes are not part of it.
    let Parsed::Request(head) = parse(raw).0 else { unreachable!() };
    assert_eq!(head.len, raw.len() - b"GET /next".len());
}

#[test]
fn a_small_body_and_connection_close_are_read_from_the_head() {
    let (req, body_len, close) =
        request(b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nConnection: keep-alive, Close\r\n\r\n");
    assert_eq!(req.method(), Method::POST);
    assert_eq!((body_len, close), (11, true));
    // The largest body this path reads whole, and one byte more.
    let at = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", 65536);
    assert_eq!(request(at.as_bytes()).1, 65536);
    let over = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", 65537);
    assert_eq!(handoff(over.as_bytes()), "a body too large to read whole");
}

#[test]
fn a_partial_head_asks_for_more_until_the_limit() {
    assert!(matches!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n").0, Parsed::Partial));
    let mut fields = Vec::new();
    let long = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 200]].concat();
    assert!(matches!(parse_request(&long, long.len() + 1, &mut fields), Parsed::Partial));
    assert!(matches!(parse_request(&long, long.len(), &mut fields), Parsed::Handoff("head too large")));
    // A whole head over the limit is hyper's too (its 431).
    let whole = [long.as_slice(), b"\r\nHost: a\r\n\r\n"].concat();
    assert!(matches!(parse_request(&whole, whole.len() - 1, &mut fields), Parsed::Handoff("head too large")));
    assert!(matches!(parse_request(&whole, whole.len(), &mut fields), Parsed::Request(_)));
}

#[test]
fn every_request_hyper_must_judge_is_handed_over() {
    let cases: &[(&[u8], &str)] = &[
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "not a valid request head"),
        (b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", "not HTTP/1.1"),
        (b"GET /\r\n\r\n", "not a valid request head"),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", "CONNECT"),
        (b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", "not an origin-form target"),
        (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "not an origin-form target"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", "several Content-Length"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", "Content-Length not plain digits"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", "Content-Length not plain digits"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", "Content-Length not plain digits"),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 00000000000000000001\r\n\r\n",
            "Content-Length not plain digits",
        ),
        // 19 digits are a length (too large to read whole), 20 are not one.
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9999999999999999999\r\n\r\n",
            "a body too large to read whole",
        ),
        (b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", "Upgrade"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\r\n", "Connection: upgrade"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", "Expect"),
        // What httparse refuses: obs-fold, a bare CR, a space before the colon, a NUL, LF-only lines are its rules.
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n  folded\r\n\r\n", "not a valid request head"),
        (b"GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n", "not a valid request head"),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "not a valid request head"),
        (b"GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n", "not a valid request head"),
    ];
    for (raw, why) in cases {
        assert_eq!(handoff(raw), *why, "{:?}", String::from_utf8_lossy(raw));
    }
    // 101 header fields are more than hyper takes.
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X: 1\r\n".repeat(100));
    assert_eq!(handoff(many.as_bytes()), "not a valid request head");
    let hundred = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X: 1\r\n".repeat(99));
    assert!(matches!(parse(hundred.as_bytes()).0, Parsed::Request(_)));
}

#[test]
fn a_target_the_uri_type_refuses_is_a_bad_head() {
    // httparse takes `<`, `>` and `` ` `` in a target; `http::Uri` does not (hyper answers such a target 400 too).
    let raw = b"GET /a<b HTTP/1.1\r\nHost: a\r\n\r\n";
    let (parsed, mut fields) = parse(raw);
    let Parsed::Request(head) = parsed else { panic!("{parsed:?}") };
    let bytes = Bytes::copy_from_slice(&raw[..head.len]);
    assert_eq!(into_request(head, &bytes, &mut fields, ()).unwrap_err(), BadHead("invalid request target"));
}

#[test]
fn framing_follows_the_method_the_status_and_the_known_length() {
    assert_eq!(body_out(false, StatusCode::OK, Some(5)), BodyOut::Length(5));
    assert_eq!(body_out(false, StatusCode::OK, Some(0)), BodyOut::Length(0));
    assert_eq!(body_out(false, StatusCode::OK, None), BodyOut::Chunked);
    assert_eq!(body_out(true, StatusCode::OK, Some(5)), BodyOut::Head(Some(5)));
    assert_eq!(body_out(true, StatusCode::OK, Some(0)), BodyOut::Head(None));
    assert_eq!(body_out(true, StatusCode::OK, None), BodyOut::Head(None));
    for status in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED, StatusCode::CONTINUE] {
        assert_eq!(body_out(false, status, Some(5)), BodyOut::None);
        assert_eq!(body_out(true, status, None), BodyOut::None);
    }
}

fn head_text(status: StatusCode, headers: &[(&str, &str)], out: BodyOut, close: bool) -> String {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    let mut buf = Vec::new();
    write_response_head(&mut buf, status, &map, out, close, b"Thu, 03 Dec 2026 13:00:00 GMT");
    String::from_utf8(buf).unwrap()
}

#[test]
fn the_response_head_carries_our_framing_only() {
    let text = head_text(
        StatusCode::OK,
        &[("content-type", "text/plain"), ("content-length", "999"), ("transfer-encoding", "gzip")],
        BodyOut::Length(5),
        false,
    );
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\ndate: Thu, 03 Dec 2026 13:00:00 GMT\r\n\r\n"
    );
    let chunked = head_text(StatusCode::OK, &[("content-length", "3"), ("date", "x")], BodyOut::Chunked, false);
    assert_eq!(chunked, "HTTP/1.1 200 OK\r\ndate: x\r\ntransfer-encoding: chunked\r\n\r\n");
    let no_content = head_text(StatusCode::NO_CONTENT, &[("content-length", "3"), ("date", "x")], BodyOut::None, false);
    assert_eq!(no_content, "HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n");
}

#[test]
fn a_head_answer_keeps_the_resource_length_or_gets_the_bodys() {
    let kept = head_text(StatusCode::OK, &[("content-length", "1024"), ("date", "x")], BodyOut::Head(Some(7)), false);
    assert_eq!(kept, "HTTP/1.1 200 OK\r\ncontent-length: 1024\r\ndate: x\r\n\r\n");
    let hinted = head_text(StatusCode::OK, &[("date", "x")], BodyOut::Head(Some(7)), false);
    assert_eq!(hinted, "HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 7\r\n\r\n");
    let none = head_text(StatusCode::OK, &[("date", "x")], BodyOut::Head(None), false);
    assert_eq!(none, "HTTP/1.1 200 OK\r\ndate: x\r\n\r\n");
}

#[test]
fn closing_says_so_once() {
    let text = head_text(StatusCode::FOUND, &[("date", "x")], BodyOut::Length(0), true);
    assert_eq!(text, "HTTP/1.1 302 Found\r\ndate: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let already =
        head_text(StatusCode::BAD_REQUEST, &[("date", "x"), ("connection", "close")], BodyOut::Length(0), true);
    assert_eq!(already.matches("connection").count(), 1);
    let mut h = HeaderMap::new();
    h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Close"));
    assert!(closes(&h));
    h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, closed"));
    assert!(!closes(&h));
}

#[test]
fn a_chunk_is_its_hex_size_and_data() {
    let mut buf = Vec::new();
    write_chunk(&mut buf, &[b'a'; 26]);
    assert_eq!(buf, [b"1a\r\n".as_slice(), &[b'a'; 26], b"\r\n"].concat());
}

#[test]
fn the_end_of_a_head_is_looked_for_only_in_what_is_new() {
    let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    assert!(may_end_head(head, 0));
    // Every split of the final CRLF CRLF between two reads is found from where the last scan stopped.
    for scanned in 0..head.len() {
        assert!(may_end_head(head, scanned), "ending split after {scanned} bytes");
    }
    assert!(may_end_head(b"GET / HTTP/1.1\nHost: a\n\n", 20), "bare LF line ends");
    assert!(!may_end_head(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), "one line end is not the end of a head");
    // An end before the last scan's window is not looked at again: it was parsed then.
    assert!(!may_end_head(b"\r\n\r\nGET / HTTP/1.1\r\nX: 1", 10));
    assert!(!may_end_head(b"", 0));
}

#[test]
fn a_head_request_is_known_as_one() {
    let Parsed::Request(head) = parse(b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n").0 else { panic!("not taken") };
    assert!(head.is_head());
    let Parsed::Request(get) = parse(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").0 else { panic!("not taken") };
    assert!(!get.is_head());
}

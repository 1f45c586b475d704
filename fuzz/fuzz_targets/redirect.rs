//! Any `rd`: the result is `/` or a same-origin path no browser reads as another host.
#![no_main]

use idgate::login::redirect;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(rd) = std::str::from_utf8(data) else { return };
    let out = redirect::safe(Some(rd));
    assert!(out.starts_with('/'));
    let decoded = String::from_utf8_lossy(&http_decode(out.as_bytes())).into_owned();
    for t in [out.as_str(), decoded.as_str()] {
        assert!(!t.starts_with("//") && !t.starts_with("/\\"), "{out:?}");
        assert!(!t.contains('\\'), "{out:?}");
        assert!(!t.chars().any(|c| c == '\t' || c == '\n' || c == '\r' || c == '\0'), "{out:?}");
    }
});

fn http_decode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() {
            if let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

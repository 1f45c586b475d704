//! The path rule's invariant, for any request path: normalisation never panics, and a path it accepts (which is
//! what idgate decides on and forwards) reads the same under every common reading — decoded once or twice, `\`
//! as `/`, `;params` dropped, slashes merged, dot segments resolved — so no reading has other segments than the
//! ones routes were matched on. Normalising it again changes nothing.
#![no_main]

use idgate::route;
use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode_str;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    let Ok(norm) = route::normalize(path) else { return };
    assert!(norm.starts_with('/'), "{norm:?}");
    assert_eq!(route::normalize(&norm).as_deref(), Ok(&*norm), "not stable");
    let segments: Vec<&str> = norm.split('/').collect();
    let once = percent_decode_str(&norm).decode_utf8().expect("accepted paths decode to UTF-8");
    let twice = percent_decode_str(&once).decode_utf8_lossy().into_owned();
    // Decoding twice reads the same as once: no escape hides behind another.
    assert_eq!(once, twice, "{norm:?}");
    let decoded: Vec<&str> = once.split('/').collect();
    assert_eq!(decoded.len(), segments.len(), "decoding adds a segment: {norm:?}");
    for (i, seg) in decoded.iter().enumerate() {
        let last = i + 1 == decoded.len();
        assert!(i == 0 || last || !seg.is_empty(), "empty segment: {norm:?}");
        assert!(*seg != "." && *seg != "..", "dot segment: {norm:?}");
        assert!(!seg.contains(['\\', ';']), "backslash or parameter: {norm:?}");
        assert!(!seg.bytes().any(|b| b < 0x20 || b == 0x7f), "control character: {norm:?}");
    }
});

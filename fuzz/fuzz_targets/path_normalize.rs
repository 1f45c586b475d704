//! Any request path: normalisation never panics; its result is absolute, has no empty, `.` or `..` segments, no
//! backslash, and normalising it again changes nothing (so route matching sees one canonical form).
#![no_main]

use idgate::route;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    let Ok(norm) = route::normalize(path) else { return };
    assert!(norm.starts_with('/'));
    assert!(!norm.contains("//"), "{norm:?}");
    assert!(!norm.split('/').any(|s| s == "." || s == ".."), "{norm:?}");
    assert!(!norm.contains('\\'), "{norm:?}");
    // An encoded `?` or `#` is a literal character of a segment; such paths are not re-normalised below.
    if !norm.contains(['%', '#', '?']) {
        assert_eq!(route::normalize(&norm).as_deref(), Ok(norm.as_str()));
    }
});

//! The `rd` return target: only a same-origin relative path is accepted. Everything else — `//host`, `/\host`,
//! absolute URLs, `javascript:`, control characters or whitespace, and their percent-encoded forms — becomes `/`.

const MAX_LEN: usize = 2048;

/// A safe place to return to after login or logout.
pub fn safe(rd: Option<&str>) -> String {
    match rd {
        Some(target) if is_safe(target) => target.to_owned(),
        _ => "/".to_owned(),
    }
}

fn is_safe(target: &str) -> bool {
    if target.is_empty() || target.len() > MAX_LEN {
        return false;
    }
    // Check the text as sent and once decoded: browsers and servers disagree on which one they read.
    let decoded = percent_encoding::percent_decode_str(target).decode_utf8_lossy();
    // Browsers drop tabs and newlines anywhere in a URL, so those are refused wherever they are; a decoded space
    // stays a space and is harmless.
    let raw_ok = !target.chars().any(|c| c.is_control() || c.is_whitespace());
    raw_ok
        && [target, decoded.as_ref()].iter().all(|t| {
            let b = t.as_bytes();
            let path = t.split(['?', '#']).next().unwrap_or("");
            b.first() == Some(&b'/')
                && !matches!(b.get(1), Some(b'/' | b'\\'))
                && !t.contains('\\')
                // Dot segments and empty segments can resolve to `//host` in a browser's URL parser.
                && !path.contains("//")
                && !path.split('/').any(|seg| seg == "." || seg == "..")
                && !t.chars().any(|c| c.is_control() || (c.is_whitespace() && c != ' '))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_redirect_corpus_is_neutralised() {
        let attacks = [
            "//evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "/%2F/evil.com",
            "/%2f%2fevil.com",
            "%2F%2Fevil.com",
            "/%5Cevil.com",
            "/%09/evil.com",
            "/\t/evil.com",
            "/%0d%0aSet-Cookie:x=1",
            "/ /evil.com",
            "https://evil.com",
            "https:evil.com",
            "http:/evil.com",
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "evil.com",
            "user@evil.com",
            "/\\/evil.com",
            "//evil.com/%2e%2e",
            "///evil.com",
            "/%00",
            "",
            "/%E2%80%A8evil",
            "/%2e%2e//evil.com",
            "/a/..//evil.com",
            "/./",
            "/a/%2E%2E/%2F/evil.com",
        ];
        for a in attacks {
            assert_eq!(safe(Some(a)), "/", "{a:?} must not pass");
        }
    }

    #[test]
    fn same_origin_paths_pass() {
        for ok in ["/", "/app", "/app/page?x=1&y=%2F", "/a/b#frag", "/search?q=a%20b"] {
            assert_eq!(safe(Some(ok)), ok);
        }
        assert_eq!(safe(None), "/");
    }

    #[test]
    fn the_length_limit_is_2048_bytes_exactly() {
        let at_limit = format!("/{}", "a".repeat(2047));
        assert_eq!(safe(Some(&at_limit)), at_limit, "2048 bytes pass");
        let over = format!("/{}", "a".repeat(2048));
        assert_eq!(safe(Some(&over)), "/", "2049 bytes do not");
        // Bytes, not characters: 1024 two-byte characters after the slash are 2049 bytes.
        assert_eq!(safe(Some(&format!("/{}", "é".repeat(1024)))), "/");
        assert_eq!(safe(Some(&format!("/{}", "é".repeat(1023)))).len(), 2047);
    }

    #[test]
    fn each_rule_refuses_on_its_own() {
        // Every other rule is satisfied by these, so each is refused by one rule alone (raw or decoded form).
        for (rd, rule) in [
            ("a", "must start with a slash"),
            ("app/x", "must start with a slash"),
            ("/a\\b", "no backslash anywhere"),
            ("/a%5Cb", "no backslash once decoded"),
            ("/a//b", "no empty segment in the path"),
            ("/a/%2F/b", "no empty segment once decoded"),
            ("/a/./b", "no dot segment"),
            ("/a/../b", "no dot-dot segment"),
            ("/a/%2e%2E/b", "no dot-dot segment once decoded"),
            ("/a b", "no raw space"),
            ("/a\u{7f}", "no raw control character (DEL is not whitespace)"),
            ("/a\u{2028}", "no raw Unicode whitespace"),
            ("/a%7F", "no decoded control character"),
            ("/a%E2%80%A9b", "no decoded Unicode whitespace"),
            ("/a%0Ab", "no decoded newline"),
        ] {
            assert_eq!(safe(Some(rd)), "/", "{rd:?}: {rule}");
        }
        // What the rules leave alone: dots inside names, `//` and `..` after the path, a decoded space.
        for ok in ["/a.b/..c/.d", "/a?next=//x", "/a?p=../b", "/a#//x", "/a%20b", "/%E2%82%AC"] {
            assert_eq!(safe(Some(ok)), ok);
        }
    }
}

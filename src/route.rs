//! Decides what a request is — one of idgate's endpoints, or a proxied path with its access rule — and whether it
//! comes from a browser navigation or an API client. Paths are matched after normalisation only (percent-decoding,
//! `\` and encoded slashes as `/`, duplicate slashes, dot segments), never with the query or fragment.

use http::{HeaderMap, Method, header};

use crate::config::{AuthMode, settings::RouteSettings};

/// idgate's own endpoints under the prefix (and the callback at `redirect_url`'s path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Start,
    Callback,
    SignOut,
    Auth,
    Userinfo,
    BackchannelLogout,
}

/// What a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Endpoint(Endpoint),
    /// A proxied path: its auth mode and the index of its rule (`None`: the default, login required).
    Proxy {
        auth: AuthMode,
        rule: Option<usize>,
    },
}

/// Who is asking: a browser navigating (may be sent to log in) or anything else (gets 401/403 JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Navigation,
    Api,
}

/// A path that cannot be matched safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("request path cannot be normalised: {0}")]
pub struct BadPath(pub &'static str);

/// The route table, compiled once.
#[derive(Debug, Clone)]
pub struct RouteTable {
    prefix: String,
    callback: String,
    /// (prefix, auth, rule index), longest prefix first.
    routes: Vec<(String, AuthMode, usize)>,
}

impl RouteTable {
    /// Compiles the `[[routes]]` and endpoint paths.
    pub fn new(prefix: &str, callback_path: &str, routes: &[RouteSettings]) -> Self {
        let mut table: Vec<(String, AuthMode, usize)> =
            routes.iter().enumerate().map(|(i, r)| (r.prefix.trim_end_matches('/').to_owned(), r.auth, i)).collect();
        table.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        Self { prefix: prefix.to_owned(), callback: callback_path.to_owned(), routes: table }
    }

    /// The endpoint prefix (`/oauth2`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Classifies a normalised path.
    pub fn classify(&self, path: &str) -> Route {
        if path == self.callback {
            return Route::Endpoint(Endpoint::Callback);
        }
        if let Some(rest) = path.strip_prefix(self.prefix.as_str()) {
            let ep = match rest {
                "/start" => Some(Endpoint::Start),
                "/callback" => Some(Endpoint::Callback),
                "/sign_out" => Some(Endpoint::SignOut),
                "/auth" => Some(Endpoint::Auth),
                "/userinfo" => Some(Endpoint::Userinfo),
                "/backchannel_logout" => Some(Endpoint::BackchannelLogout),
                _ => None,
            };
            if let Some(ep) = ep {
                return Route::Endpoint(ep);
            }
        }
        self.rule_for(path)
    }

    /// The proxied route for a normalised path (also used by forward-auth for the original URI).
    pub fn rule_for(&self, path: &str) -> Route {
        for (prefix, auth, i) in &self.routes {
            let matches = prefix.is_empty()
                || (path.starts_with(prefix.as_str())
                    && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')));
            if matches {
                return Route::Proxy { auth: *auth, rule: Some(*i) };
            }
        }
        Route::Proxy { auth: AuthMode::Login, rule: None }
    }
}

/// Normalises a request path for matching: query and fragment dropped, percent-escapes decoded once (an escape
/// left after that — double encoding of `/`, `\`, `.` or `%` — is refused), `\` read as `/`, duplicate slashes
/// collapsed, `.` and `..` segments resolved (never above the root).
pub fn normalize(raw: &str) -> Result<String, BadPath> {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(BadPath("not an absolute path"));
    }
    // Most paths are already normal: nothing encoded, no backslash, no empty or dot segments.
    let plain = !path.bytes().any(|b| matches!(b, b'%' | b'\\') || b < 0x20 || b == 0x7f)
        && !path.contains("//")
        && !path.split('/').any(|seg| seg == "." || seg == "..");
    if plain {
        return Ok(path.to_owned());
    }
    let decoded = percent_encoding::percent_decode_str(path).collect::<Vec<u8>>();
    if decoded.iter().any(|b| *b < 0x20 || *b == 0x7f) {
        return Err(BadPath("control character"));
    }
    let decoded = String::from_utf8(decoded).map_err(|_| BadPath("not UTF-8 after decoding"))?;
    let lower = decoded.to_ascii_lowercase();
    if ["%2f", "%5c", "%2e", "%25"].iter().any(|e| lower.contains(e)) {
        return Err(BadPath("double-encoded path"));
    }
    let mut out: Vec<&str> = Vec::new();
    let unified = decoded.replace('\\', "/");
    let trailing = unified.ends_with('/') || unified.ends_with("/.") || unified.ends_with("/..");
    for seg in unified.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut norm = String::with_capacity(unified.len());
    for s in &out {
        norm.push('/');
        norm.push_str(s);
    }
    if norm.is_empty() || (trailing && !out.is_empty()) {
        norm.push('/');
    }
    Ok(norm)
}

/// Navigation or API, from the request's method and headers (`Sec-Fetch-Mode`, `X-Requested-With`, `Accept`).
pub fn kind(method: &Method, headers: &HeaderMap) -> RequestKind {
    if method != Method::GET && method != Method::HEAD {
        return RequestKind::Api;
    }
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if h("x-requested-with").is_some_and(|v| v.eq_ignore_ascii_case("xmlhttprequest")) {
        return RequestKind::Api;
    }
    if let Some(mode) = h("sec-fetch-mode") {
        return if mode.eq_ignore_ascii_case("navigate") { RequestKind::Navigation } else { RequestKind::Api };
    }
    let accepts_html =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    if accepts_html { RequestKind::Navigation } else { RequestKind::Api }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_corpus() {
        let cases = [
            ("/", Ok("/")),
            ("/a/b", Ok("/a/b")),
            ("/a//b", Ok("/a/b")),
            ("//a", Ok("/a")),
            ("/public/../private", Ok("/private")),
            ("/public/%2e%2e/private", Ok("/private")),
            ("/public/%2E%2E/private", Ok("/private")),
            ("/public%2F..%2Fprivate", Ok("/private")),
            ("/public%2f..%2fprivate", Ok("/private")),
            ("/public\\..\\private", Ok("/private")),
            ("/public%5C..%5Cprivate", Ok("/private")),
            ("/public/./x", Ok("/public/x")),
            ("/../../etc", Ok("/etc")),
            ("/public?x=/../private", Ok("/public")),
            ("/private#/public", Ok("/private")),
            ("/private%23/public", Ok("/private#/public")),
            ("/a/", Ok("/a/")),
            ("/a/..", Ok("/")),
            ("/%70ublic", Ok("/public")),
            // Found by the fuzzer: an encoded `?` is a literal character of a segment, not a query.
            ("/%3F/../private", Ok("/private")),
            ("/public%3F/x", Ok("/public?/x")),
            ("/public%252F..%252Fprivate", Err(BadPath("double-encoded path"))),
            ("/a%00b", Err(BadPath("control character"))),
            ("/a%0d%0ab", Err(BadPath("control character"))),
            ("a", Err(BadPath("not an absolute path"))),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref().map_err(|e| *e), want, "{input}");
        }
    }

    fn table() -> RouteTable {
        let r = RouteSettings::new;
        RouteTable::new(
            "/oauth2",
            "/oauth2/callback",
            &[r("/public", AuthMode::Public), r("/public/secret", AuthMode::Login), r("/api", AuthMode::Api)],
        )
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let t = table();
        assert_eq!(t.classify("/public/x"), Route::Proxy { auth: AuthMode::Public, rule: Some(0) });
        assert_eq!(t.classify("/public"), Route::Proxy { auth: AuthMode::Public, rule: Some(0) });
        assert_eq!(t.classify("/public/secret/x"), Route::Proxy { auth: AuthMode::Login, rule: Some(1) });
        assert_eq!(t.classify("/publicity"), Route::Proxy { auth: AuthMode::Login, rule: None });
        assert_eq!(t.classify("/api/v1"), Route::Proxy { auth: AuthMode::Api, rule: Some(2) });
        assert_eq!(t.classify("/oauth2/start"), Route::Endpoint(Endpoint::Start));
        assert_eq!(t.classify("/oauth2/callback"), Route::Endpoint(Endpoint::Callback));
        assert_eq!(t.classify("/oauth2/other"), Route::Proxy { auth: AuthMode::Login, rule: None });
    }

    #[test]
    fn request_kind() {
        let mut h = HeaderMap::new();
        assert_eq!(kind(&Method::GET, &h), RequestKind::Api);
        h.insert(header::ACCEPT, "text/html,application/xhtml+xml".parse().unwrap());
        assert_eq!(kind(&Method::GET, &h), RequestKind::Navigation);
        assert_eq!(kind(&Method::POST, &h), RequestKind::Api);
        h.insert("sec-fetch-mode", "no-cors".parse().unwrap());
        assert_eq!(kind(&Method::GET, &h), RequestKind::Api);
        h.insert("sec-fetch-mode", "navigate".parse().unwrap());
        assert_eq!(kind(&Method::GET, &h), RequestKind::Navigation);
        h.insert("x-requested-with", "XMLHttpRequest".parse().unwrap());
        assert_eq!(kind(&Method::GET, &h), RequestKind::Api);
    }
}

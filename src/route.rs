//! Decides what a request is — one of idgate's endpoints, or a proxied path with its access rule — and whether it
//! comes from a browser navigation or an API client. The path rule: a request path is normalised once
//! ([`normalize`]), routes are matched on that form only (never on the query), and that form is what the upstream
//! receives; what cannot be normalised unambiguously is refused.

use std::borrow::Cow;

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
    /// idgate's own public keys (`{prefix}/jwks`).
    Jwks,
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

impl Route {
    /// What the route is, as spans name it (`idgate.route.kind`): `proxy`, `public`, or the endpoint.
    pub fn label(&self) -> &'static str {
        match self {
            Route::Proxy { auth: AuthMode::Public, .. } => "public",
            Route::Proxy { .. } => "proxy",
            Route::Endpoint(Endpoint::Start) => "login_start",
            Route::Endpoint(Endpoint::Callback) => "login_callback",
            Route::Endpoint(Endpoint::SignOut) => "sign_out",
            Route::Endpoint(Endpoint::Auth) => "forward_auth",
            Route::Endpoint(Endpoint::Userinfo) => "userinfo",
            Route::Endpoint(Endpoint::BackchannelLogout) => "backchannel_logout",
            Route::Endpoint(Endpoint::Jwks) => "jwks",
        }
    }
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
    /// Longest prefix first; at equal length a protective route before a public one.
    routes: Vec<RoutePrefix>,
}

/// One `[[routes]]` prefix as matched.
#[derive(Debug, Clone)]
struct RoutePrefix {
    /// Without a trailing `/`; empty for a route on `/`.
    prefix: String,
    auth: AuthMode,
    rule: usize,
    /// `[[routes]] allow_encoded_slashes`: `%2F` may stand in a segment (kept encoded) under this route.
    encoded_slashes: bool,
}

impl RoutePrefix {
    /// A protective route (`login`, `api`) covers its prefix in any ASCII case (case-insensitive routers) and
    /// followed by `/`, `.` (suffix-pattern routers read `/admin.json` as `/admin`), an escaped space, `?` or `#`,
    /// or nothing. A public route
    /// never widens: exact case, followed by `/` or nothing.
    fn covers(&self, path: &str) -> bool {
        let n = self.prefix.len();
        let Some(head) = path.get(..n) else { return false };
        let next = path.as_bytes().get(n);
        if self.auth == AuthMode::Public {
            head == self.prefix && matches!(next, None | Some(b'/'))
        } else {
            // `%20`, `%3F`, `%23`: trimmed or cut there by some routers (older Spring trims path tokens).
            let boundary_escape = || path[n..].get(..3).is_some_and(|e| matches!(e, "%20" | "%3F" | "%23"));
            head.eq_ignore_ascii_case(&self.prefix) && (matches!(next, None | Some(b'/' | b'.')) || boundary_escape())
        }
    }
}

impl RouteTable {
    /// Compiles the `[[routes]]` and endpoint paths.
    pub fn new(prefix: &str, callback_path: &str, routes: &[RouteSettings]) -> Self {
        let mut table: Vec<RoutePrefix> = routes
            .iter()
            .enumerate()
            .map(|(i, r)| RoutePrefix {
                prefix: r.prefix.trim_end_matches('/').to_owned(),
                auth: r.auth,
                rule: i,
                encoded_slashes: r.allow_encoded_slashes,
            })
            .collect();
        table.sort_by_key(|r| (std::cmp::Reverse(r.prefix.len()), r.auth == AuthMode::Public));
        Self { prefix: prefix.to_owned(), callback: callback_path.to_owned(), routes: table }
    }

    /// The endpoint prefix (`/oauth2`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// True when `[[routes]]` are configured (forward-auth then needs the original URI).
    pub fn has_rules(&self) -> bool {
        !self.routes.is_empty()
    }

    /// The normal form of a request path and what it is: the one decision every sink uses. `endpoints`: idgate's
    /// own endpoints count (a request to idgate itself), or not (forward-auth asks about a request to the app).
    ///
    /// A `%2F` is refused unless the route the path falls under has `allow_encoded_slashes`, and then only when the
    /// path read with `%2F` as `/` falls under that same route too (`/files/a%2F..%2Fadmin` never does).
    pub fn decide<'a>(&self, raw: &'a str, endpoints: bool) -> Result<(Cow<'a, str>, Route), BadPath> {
        let classify = |path: &str| if endpoints { self.classify(path) } else { self.rule_for(path) };
        match normalize(raw) {
            Ok(path) => {
                let route = classify(&path);
                Ok((path, route))
            }
            Err(refused) if refused == BadPath(ENCODED_SLASH) && self.routes.iter().any(|r| r.encoded_slashes) => {
                let path = normal_form(raw, true)?;
                let route = self.rule_for(&path);
                let allowed = matches!(route, Route::Proxy { rule: Some(i), .. }
                    if self.routes.iter().any(|r| r.rule == i && r.encoded_slashes));
                let slashes = path.replace("%2F", "/");
                match normal_form(&slashes, false) {
                    Ok(other) if allowed && self.rule_for(&other) == route => Ok((path, route)),
                    _ => Err(refused),
                }
            }
            Err(refused) => Err(refused),
        }
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
                "/jwks" => Some(Endpoint::Jwks),
                _ => None,
            };
            if let Some(ep) = ep {
                return Route::Endpoint(ep);
            }
        }
        self.rule_for(path)
    }

    /// The proxied route for a normalised path (also used by forward-auth for the original URI): the longest
    /// route prefix that covers it, else the default (login required).
    pub fn rule_for(&self, path: &str) -> Route {
        // Escaped non-ASCII may fold into ASCII in a Unicode case-insensitive router (`%E2%84%AA`, the Kelvin sign,
        // is `k`; `ſ` is `s`; `İ` is `i` to Java's equalsIgnoreCase): protective prefixes also cover the decoded,
        // case-folded reading.
        // Routers that trim path tokens (older Spring) read `/%20admin%20/x` as `/admin/x`: that reading is folded
        // in too, each segment trimmed of whitespace.
        let folded = path.contains('%').then(|| {
            let decoded: String =
                percent_encoding::percent_decode_str(path).decode_utf8_lossy().chars().map(fold_case).collect();
            decoded.split('/').map(str::trim).collect::<Vec<_>>().join("/")
        });
        let covers = |r: &&RoutePrefix| {
            r.covers(path) || (r.auth != AuthMode::Public && folded.as_deref().is_some_and(|f| r.covers(f)))
        };
        match self.routes.iter().find(covers) {
            Some(r) => Route::Proxy { auth: r.auth, rule: Some(r.rule) },
            None => Route::Proxy { auth: AuthMode::Login, rule: None },
        }
    }
}

/// One character as the loosest case-insensitive comparison reads it: upper-cased, then lower-cased, one character
/// each way (the simple mappings, as `Character.toLowerCase(char)` does).
fn fold_case(c: char) -> char {
    let upper = c.to_uppercase().next().unwrap_or(c);
    upper.to_lowercase().next().unwrap_or(upper)
}

/// Normalises a request path (query and fragment dropped) into the one form idgate decides on **and forwards**, so
/// that every common reading of the forwarded path — raw or percent-decoded (once or twice), `\` read as `/`,
/// `;params` dropped, case-folded, slashes merged, dot segments resolved or not — names the same resource:
/// - escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, other escapes kept (hex uppercased) and
///   any other byte outside the URI path grammar escaped;
/// - duplicate slashes are merged and literal `.`/`..` segments resolved (never above the root);
/// - what cannot be made unambiguous is refused: `\`, `;`, `%2F`, `%5C`, `%3B`, control characters (raw or
///   escaped), double encoding (`%25` before two hex digits), segments that are dots only once decoded, malformed
///   escapes, and escapes that do not decode to UTF-8.
///
/// Already-normal paths (the common case) are returned borrowed.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, BadPath> {
    normal_form(raw, false)
}

/// Why a path with `%2F` is refused (unless its route allows encoded slashes).
const ENCODED_SLASH: &str = "encoded slash (%2F)";

/// [`normalize`]; with `keep_encoded_slashes`, a `%2F` is kept as it is instead of refused (the caller checks the
/// route allows it), and no piece between encoded slashes may be a dot segment.
fn normal_form(raw: &str, keep_encoded_slashes: bool) -> Result<Cow<'_, str>, BadPath> {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(BadPath("not an absolute path"));
    }
    if is_plain(path) {
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    // Escaped bytes must decode to UTF-8 (an overlong `%C0%AE` is a `.` to some old decoders).
    let decoded: Vec<u8> = percent_encoding::percent_decode(bytes).collect();
    if std::str::from_utf8(&decoded).is_err() {
        return Err(BadPath("escapes do not decode to UTF-8"));
    }
    // Segment by segment, as forwarded; `escaped`: the current segment held an escape.
    let mut segments: Vec<String> = Vec::new();
    let mut seg = String::new();
    let mut escaped = false;
    let mut i = 0;
    let trailing = path.ends_with('/');
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'/' => {
                push_segment(&mut segments, std::mem::take(&mut seg), escaped, keep_encoded_slashes)?;
                escaped = false;
            }
            b'\\' => return Err(BadPath("backslash in path")),
            b';' => return Err(BadPath("path parameter (;) in path")),
            b'%' => {
                let hex = |j: usize| bytes.get(j).and_then(|h| (*h as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                    return Err(BadPath("malformed percent-escape"));
                };
                let v = (hi * 16 + lo) as u8;
                escaped = true;
                match v {
                    b'/' if keep_encoded_slashes => push_escape(&mut seg, v),
                    b'/' => return Err(BadPath(ENCODED_SLASH)),
                    b'\\' => return Err(BadPath("encoded backslash (%5C)")),
                    b';' => return Err(BadPath("encoded path parameter (%3B)")),
                    0..0x20 | 0x7f => return Err(BadPath("control character")),
                    v if is_unreserved(v) => seg.push(v as char),
                    v => push_escape(&mut seg, v),
                }
                i += 3;
                continue;
            }
            0..0x20 | 0x7f => return Err(BadPath("control character")),
            b if is_path_char(b) => seg.push(b as char),
            b => push_escape(&mut seg, b),
        }
        i += 1;
    }
    push_segment(&mut segments, seg, escaped, keep_encoded_slashes)?;
    let ends_in_dir = trailing || segments.last().is_some_and(|s| s == "." || s == "..");
    let mut out: Vec<String> = Vec::with_capacity(segments.len());
    for s in segments {
        match s.as_str() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(s),
        }
    }
    let mut norm = String::with_capacity(path.len());
    for s in &out {
        norm.push('/');
        norm.push_str(s);
    }
    if norm.is_empty() || ends_in_dir {
        norm.push('/');
    }
    // Checked on the result, as the escapes just decoded can spell hex digits too (`%25%32%46`).
    if norm.as_bytes().windows(5).any(|w| w.starts_with(b"%25") && w[3].is_ascii_hexdigit() && w[4].is_ascii_hexdigit())
    {
        return Err(BadPath("double-encoded path"));
    }
    Ok(Cow::Owned(norm))
}

/// True for a path that [`normalize`] would return unchanged: only plain path characters, no empty or dot segment.
fn is_plain(path: &str) -> bool {
    path.bytes().all(|b| b != b'%' && b != b';' && is_path_char(b))
        && !path.contains("//")
        && !path.split('/').any(|seg| seg == "." || seg == "..")
}

/// A finished segment: one that is `.` or `..` only because of an escape is refused, and so is a dot segment
/// between encoded slashes where those are kept.
fn push_segment(segments: &mut Vec<String>, seg: String, escaped: bool, slashes: bool) -> Result<(), BadPath> {
    if escaped && (seg == "." || seg == "..") {
        return Err(BadPath("dot segment hidden by percent-encoding"));
    }
    if slashes && seg.contains("%2F") && seg.split("%2F").any(|piece| piece == "." || piece == "..") {
        return Err(BadPath("dot segment between encoded slashes"));
    }
    segments.push(seg);
    Ok(())
}

fn push_escape(seg: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    seg.push('%');
    seg.push(HEX[usize::from(b >> 4)] as char);
    seg.push(HEX[usize::from(b & 15)] as char);
}

/// RFC 3986 unreserved characters: an escape of one means the character itself.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters a path segment may hold unescaped (RFC 3986 `pchar` less `%`, and `;`, which is refused), plus `/`.
fn is_path_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(b, b'/' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@')
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
    fn each_route_has_its_own_label() {
        let routes = [
            (Route::Proxy { auth: AuthMode::Public, rule: None }, "public"),
            (Route::Proxy { auth: AuthMode::Login, rule: Some(0) }, "proxy"),
            (Route::Proxy { auth: AuthMode::Api, rule: None }, "proxy"),
            (Route::Endpoint(Endpoint::Start), "login_start"),
            (Route::Endpoint(Endpoint::Callback), "login_callback"),
            (Route::Endpoint(Endpoint::SignOut), "sign_out"),
            (Route::Endpoint(Endpoint::Auth), "forward_auth"),
            (Route::Endpoint(Endpoint::Userinfo), "userinfo"),
            (Route::Endpoint(Endpoint::BackchannelLogout), "backchannel_logout"),
            (Route::Endpoint(Endpoint::Jwks), "jwks"),
        ];
        for (route, label) in routes {
            assert_eq!(route.label(), label, "{route:?}");
        }
    }

    #[test]
    fn normalisation_corpus() {
        let bad = |why| Err(BadPath(why));
        let cases = [
            ("/", Ok("/")),
            ("/a/b", Ok("/a/b")),
            ("/a//b", Ok("/a/b")),
            ("//a", Ok("/a")),
            ("/public/../private", Ok("/private")),
            ("/public/./x", Ok("/public/x")),
            ("/../../etc", Ok("/etc")),
            ("/public?x=/../private", Ok("/public")),
            ("/private#/public", Ok("/private")),
            ("/private%23/public", Ok("/private%23/public")),
            ("/a/", Ok("/a/")),
            ("/a/..", Ok("/")),
            ("/a/b/..", Ok("/a/")),
            ("/a/.", Ok("/a/")),
            ("/%70ublic", Ok("/public")),
            ("/%7e%41-%5f.x", Ok("/~A-_.x")),
            ("/a%2eb", Ok("/a.b")),
            ("/caf%c3%a9", Ok("/caf%C3%A9")),
            ("/a%20b", Ok("/a%20b")),
            ("/a b", Ok("/a%20b")),
            ("/a\"b", Ok("/a%22b")),
            ("/x%25", Ok("/x%25")),
            ("/x%25zz", Ok("/x%25zz")),
            ("/%25%32%46admin", bad("double-encoded path")),
            ("/%25%61%61", bad("double-encoded path")),
            ("/%3F/../private", Ok("/private")),
            ("/public%3F/x", Ok("/public%3F/x")),
            ("/a:b@c!$&'()*+,=", Ok("/a:b@c!$&'()*+,=")),
            ("/public/%2e%2e/private", bad("dot segment hidden by percent-encoding")),
            ("/public/%2E%2E/private", bad("dot segment hidden by percent-encoding")),
            ("/public/.%2e/private", bad("dot segment hidden by percent-encoding")),
            ("/public/%2e/private", bad("dot segment hidden by percent-encoding")),
            ("/public/%2e", bad("dot segment hidden by percent-encoding")),
            ("/public%2F..%2Fprivate", bad("encoded slash (%2F)")),
            ("/admin/..%2fpublic/x", bad("encoded slash (%2F)")),
            ("/public%5C..%5Cprivate", bad("encoded backslash (%5C)")),
            ("/public\\..\\private", bad("backslash in path")),
            ("/public/..;/admin/x", bad("path parameter (;) in path")),
            ("/admin;jsessionid=1/x", bad("path parameter (;) in path")),
            ("/admin%3b/x", bad("encoded path parameter (%3B)")),
            ("/public%252F..%252Fprivate", bad("double-encoded path")),
            ("/public/%252e%252e/private", bad("double-encoded path")),
            ("/a%00b", bad("control character")),
            ("/a%0d%0ab", bad("control character")),
            ("/a%7f", bad("control character")),
            ("/a\tb", bad("control character")),
            ("/a%zz", bad("malformed percent-escape")),
            ("/a%2", bad("malformed percent-escape")),
            ("/a%", bad("malformed percent-escape")),
            ("/%c0%ae%c0%ae/admin", bad("escapes do not decode to UTF-8")),
            ("/a%ff", bad("escapes do not decode to UTF-8")),
            ("a", bad("not an absolute path")),
            ("", bad("not an absolute path")),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref().map_err(|e| *e), want, "{input}");
        }
    }

    #[test]
    fn normal_paths_are_borrowed_and_others_rebuilt() {
        assert!(matches!(normalize("/a/b.c/~d?q=1"), Ok(Cow::Borrowed("/a/b.c/~d"))));
        assert!(matches!(normalize("/a//b"), Ok(Cow::Owned(_))));
        assert!(matches!(normalize("/a/./b"), Ok(Cow::Owned(_))));
        assert!(matches!(normalize("/a%41"), Ok(Cow::Owned(_))));
    }

    /// How other parsers read a forwarded path: raw, decoded once or twice, `\` as `/`, `;params` dropped (servlet
    /// containers), slashes merged and dot segments resolved; each then case-folded.
    fn readings(forwarded: &str) -> Vec<String> {
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let once = decode(forwarded);
        let twice = decode(&once);
        let mut out = Vec::new();
        for r in [forwarded.to_owned(), once, twice] {
            let slashes = r.replace('\\', "/");
            let params: String =
                slashes.split('/').map(|s| s.split(';').next().unwrap_or("")).collect::<Vec<_>>().join("/");
            for v in [r.clone(), slashes, params] {
                let resolved = resolve(&v);
                for w in [v, resolved] {
                    out.push(w.to_ascii_lowercase());
                    out.push(w);
                }
            }
        }
        out
    }

    /// Dot segments resolved and slashes merged, as RFC 3986 §5.2.4 does without decoding.
    fn resolve(p: &str) -> String {
        let mut out: Vec<&str> = Vec::new();
        for s in p.split('/') {
            match s {
                "" | "." => {}
                ".." => {
                    out.pop();
                }
                s => out.push(s),
            }
        }
        format!("/{}", out.join("/"))
    }

    /// The rule a reading falls under, ranked: the admin rule above login above public.
    fn rank(t: &RouteTable, path: &str) -> u8 {
        match t.rule_for(path) {
            Route::Proxy { rule: Some(2), .. } => 3,
            Route::Proxy { auth: AuthMode::Public, .. } => 0,
            _ => 1,
        }
    }

    /// The path rule, differentially: for every path idgate forwards, no reading of the forwarded path falls
    /// under a more protective rule than the one idgate decided on (so no reading reaches a protected handler
    /// under a weaker rule), and forwarding it again would change nothing.
    #[test]
    fn no_reading_of_a_forwarded_path_escapes_its_rule() {
        let r = RouteSettings::new;
        let mut stat = r("/static", AuthMode::Public);
        stat.allow_encoded_slashes = true;
        let t = RouteTable::new(
            "/oauth2",
            "/oauth2/callback",
            &[r("/public", AuthMode::Public), stat, r("/admin", AuthMode::Login)],
        );
        let pieces = [
            "/", "//", "/public", "/admin", "/ADMIN", "/Admin", "/x", ".", "..", "%2e", "%2E%2e", "%2f", "%2F", "%5c",
            "\\", ";", ";x=1", "..;", "%3b", "%252f", "%25", "%00", "%41", "%61dmin", "/static", ".json", "%20", "~",
        ];
        let mut checked = 0;
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let raw = format!("{a}{b}{c}");
                    let Ok((decided, _)) = t.decide(&raw, false) else { continue };
                    checked += 1;
                    let want = rank(&t, &decided);
                    for reading in readings(&decided) {
                        assert!(
                            rank(&t, &reading) <= want,
                            "{raw:?} decided as {decided:?} (rank {want}) but read as {reading:?}"
                        );
                    }
                    let again = t.decide(&decided, false).map(|(p, _)| p.into_owned());
                    assert_eq!(again.as_deref(), Ok(&*decided), "{raw:?} is not stable");
                }
            }
        }
        assert!(checked > 2000, "only {checked} paths were accepted");
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
    fn protective_prefixes_match_in_any_case_and_with_a_suffix_public_ones_never_widen() {
        let t = table();
        let login = |rule| Route::Proxy { auth: AuthMode::Login, rule };
        assert_eq!(t.classify("/API/v1"), Route::Proxy { auth: AuthMode::Api, rule: Some(2) });
        assert_eq!(t.classify("/Api"), Route::Proxy { auth: AuthMode::Api, rule: Some(2) });
        assert_eq!(t.classify("/api.json"), Route::Proxy { auth: AuthMode::Api, rule: Some(2) });
        assert_eq!(t.classify("/apix"), login(None));
        for near in ["/api%20/x", "/api%3F/x", "/api%23/x", "/API%20"] {
            assert_eq!(t.classify(near), Route::Proxy { auth: AuthMode::Api, rule: Some(2) }, "{near}");
        }
        assert_eq!(t.classify("/api%21"), login(None));
        for trimmed in ["/%20api/x", "/%20API%20/x", "/%09api"] {
            assert_eq!(t.classify(trimmed), Route::Proxy { auth: AuthMode::Api, rule: Some(2) }, "{trimmed}");
        }
        assert_eq!(t.classify("/public%20/x"), login(None));
        assert_eq!(t.classify("/public/SECRET/x"), login(Some(1)));
        assert_eq!(t.classify("/public/secret.txt"), login(Some(1)));
        assert_eq!(t.classify("/PUBLIC/x"), login(None));
        assert_eq!(t.classify("/Public"), login(None));
        assert_eq!(t.classify("/public.json"), login(None));
        // Unicode case folding: the Kelvin sign and the long s read as `k` and `s` in such routers.
        let r = RouteSettings::new;
        let u = RouteTable::new("/oauth2", "/cb", &[r("/kb", AuthMode::Api), r("/secret", AuthMode::Login)]);
        assert_eq!(u.classify("/%E2%84%AAb/x"), Route::Proxy { auth: AuthMode::Api, rule: Some(0) });
        assert_eq!(u.classify("/%C5%BFecret"), login(Some(1)));
        assert_eq!(u.classify("/secr%C4%B0t"), login(None), "İ folds to i, not e");
        let i = RouteTable::new("/oauth2", "/cb", &[r("/admin", AuthMode::Api)]);
        assert_eq!(i.classify("/adm%C4%B0n"), Route::Proxy { auth: AuthMode::Api, rule: Some(0) });
        assert_eq!(i.classify("/adm%C4%B1n/x"), Route::Proxy { auth: AuthMode::Api, rule: Some(0) });
        assert_eq!(u.classify("/caf%C3%A9"), login(None));
        // At equal length the protective route wins.
        let r = RouteSettings::new;
        let tie = RouteTable::new("/oauth2", "/cb", &[r("/a", AuthMode::Public), r("/A", AuthMode::Api)]);
        assert_eq!(tie.classify("/a/x"), Route::Proxy { auth: AuthMode::Api, rule: Some(1) });
        assert!(tie.has_rules());
        assert!(!RouteTable::new("/oauth2", "/cb", &[]).has_rules());
    }

    #[test]
    fn encoded_slashes_only_where_a_route_allows_them_and_every_reading_agrees() {
        let r = RouteSettings::new;
        let mut files = r("/files", AuthMode::Login);
        files.allow_encoded_slashes = true;
        let mut shared = r("/shared", AuthMode::Public);
        shared.allow_encoded_slashes = true;
        let t = RouteTable::new(
            "/oauth2",
            "/oauth2/callback",
            &[files, r("/files/secret", AuthMode::Api), shared, r("/shared/private", AuthMode::Login)],
        );
        let route = |rule| Route::Proxy { auth: AuthMode::Login, rule: Some(rule) };
        let decide = |p| t.decide(p, true).map(|(path, r)| (path.into_owned(), r));
        assert_eq!(decide("/files/a%2Fb"), Ok(("/files/a%2Fb".into(), route(0))));
        assert_eq!(decide("/files/a%2fb?x=%2F"), Ok(("/files/a%2Fb".into(), route(0))));
        assert_eq!(decide("/files/a%2F%2Fb/"), Ok(("/files/a%2F%2Fb/".into(), route(0))));
        assert_eq!(
            decide("/shared/x%2Fy"),
            Ok(("/shared/x%2Fy".into(), Route::Proxy { auth: AuthMode::Public, rule: Some(2) }))
        );
        for (path, why) in [
            ("/files/..%2Fadmin", "dot segment between encoded slashes"),
            ("/files/a%2F.%2Fb", "dot segment between encoded slashes"),
            ("/shared/..%2Fprivate%2Fx", "dot segment between encoded slashes"),
            // Read with `/`, these fall under another route.
            ("/files/secret%2Fx", ENCODED_SLASH),
            ("/files/SECRET%2Fx", ENCODED_SLASH),
            ("/shared/private%2Fx", ENCODED_SLASH),
            // The route a `%2F` would stand under does not allow it.
            ("/shared%2Fx", ENCODED_SLASH),
            ("/other/a%2Fb", ENCODED_SLASH),
            ("/files/a%5Cb", "encoded backslash (%5C)"),
            ("/files/a%2F%2e%2e", "dot segment between encoded slashes"),
        ] {
            assert_eq!(decide(path), Err(BadPath(why)), "{path}");
        }
        // Without any route allowing them, `%2F` is refused before any route is looked at.
        assert_eq!(table().decide("/public/a%2Fb", true), Err(BadPath(ENCODED_SLASH)));
        // Forward-auth asks about the application's paths: idgate's endpoints are not special there.
        assert_eq!(
            t.decide("/oauth2/start", false).map(|(_, r)| r),
            Ok(Route::Proxy { auth: AuthMode::Login, rule: None })
        );
        assert_eq!(t.decide("/oauth2/start", true).map(|(_, r)| r), Ok(Route::Endpoint(Endpoint::Start)));
    }

    #[test]
    fn every_endpoint_is_recognised_under_the_prefix_only() {
        let t = table();
        assert_eq!(t.prefix(), "/oauth2");
        for (path, ep) in [
            ("/oauth2/start", Endpoint::Start),
            ("/oauth2/callback", Endpoint::Callback),
            ("/oauth2/sign_out", Endpoint::SignOut),
            ("/oauth2/auth", Endpoint::Auth),
            ("/oauth2/userinfo", Endpoint::Userinfo),
            ("/oauth2/backchannel_logout", Endpoint::BackchannelLogout),
            ("/oauth2/jwks", Endpoint::Jwks),
        ] {
            assert_eq!(t.classify(path), Route::Endpoint(ep), "{path}");
            assert_eq!(t.classify(&format!("{path}/x")), Route::Proxy { auth: AuthMode::Login, rule: None });
            assert_eq!(
                t.classify(&path.replace("/oauth2", "/other")),
                Route::Proxy { auth: AuthMode::Login, rule: None }
            );
        }
        // The callback at `redirect_url`'s own path, outside the prefix.
        let cb = RouteTable::new("/oauth2", "/login/done", &[]);
        assert_eq!(cb.classify("/login/done"), Route::Endpoint(Endpoint::Callback));
        assert_eq!(cb.classify("/oauth2/callback"), Route::Endpoint(Endpoint::Callback), "the prefix's own callback");
        assert_eq!(cb.classify("/login/done/x"), Route::Proxy { auth: AuthMode::Login, rule: None });
    }

    #[test]
    fn unicode_folding_widens_protective_routes_never_public_ones() {
        let r = RouteSettings::new;
        let t = RouteTable::new("/oauth2", "/cb", &[r("/kb", AuthMode::Public)]);
        // The Kelvin sign folds to `k`, but a public route only ever covers its exact spelling.
        assert_eq!(t.classify("/%E2%84%AAb/x"), Route::Proxy { auth: AuthMode::Login, rule: None });
        assert_eq!(t.classify("/kb/x"), Route::Proxy { auth: AuthMode::Public, rule: Some(0) });
    }

    #[test]
    fn head_is_a_navigation_like_get() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, "text/html".parse().unwrap());
        assert_eq!(kind(&Method::HEAD, &h), RequestKind::Navigation);
        assert_eq!(kind(&Method::PUT, &h), RequestKind::Api);
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

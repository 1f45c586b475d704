//! What the upstream learns about the user: client-sent identity headers and idgate's own cookies are stripped
//! from every request, then the configured claim headers are written. This module never sees a token: it takes
//! [`Claims`], which hold none.
//!
//! Values travel as UTF-8 bytes (RFC 9110 allows non-ASCII octets in field values; the upstream decodes them as
//! UTF-8, or re-encodes a Latin-1 string it was handed). Control characters (CR, LF, NUL, …) are removed, so a
//! claim can never split or end a header.

use std::sync::{
    OnceLock,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use http::{HeaderMap, HeaderName, HeaderValue, header::COOKIE};

use crate::{id_token::Claims, policy::Permit};

/// Header names a client may never send, whatever the mapping: oauth2-proxy's (so an app moved from it is safe),
/// the `REMOTE_USER` family that Apache, Django, Rails and Java containers believe, and the URL overrides that IIS,
/// Symfony and Zend route by (a public route must not reach a protected handler through them).
/// `upstream.strip_headers` adds names.
const ALWAYS_STRIPPED: [&str; 14] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-forwarded-access-token",
    "x-auth-request-access-token",
    "remote-user",
    "x-remote-user",
    "x-original-url",
    "x-rewrite-url",
    // Other proxies' record of the original path, which some applications route by (found by a break-it pass).
    "x-original-uri",
    "x-forwarded-path",
    "x-envoy-original-path",
    // idgate's own identity assertion (a configured `assertion.header` is stripped too).
    "x-idgate-assertion",
];
const STRIPPED_PREFIX: &str = "x-auth-request-";

/// A session's claim headers under one plan, computed on its first request and reused by the next ones: the
/// plan's id and the headers. Sessions carry one ([`crate::session::Session::identity_memo`]).
pub type Memo = OnceLock<(u64, Vec<(HeaderName, HeaderValue)>)>;

/// The header plan, compiled once: which names to strip and which claims to write.
#[derive(Debug, Clone)]
pub struct HeaderPlan {
    /// Unique per plan built, so a memo made under another plan (another configuration) is never used.
    id: u64,
    mapping: Vec<(HeaderName, String)>,
    /// Normalised (`_`→`-`, lowercase) names to strip.
    strip: Vec<String>,
    cookie_name: String,
}

impl HeaderPlan {
    /// Builds the plan from `[headers]`, `upstream.strip_headers` and the session cookie name.
    pub fn new(mapping: &[(HeaderName, String)], extra_strip: &[HeaderName], cookie_name: &str) -> Self {
        let mut strip: Vec<String> = mapping.iter().map(|(h, _)| normalise(h.as_str())).collect();
        strip.extend(extra_strip.iter().map(|h| normalise(h.as_str())));
        strip.extend(ALWAYS_STRIPPED.iter().map(|s| (*s).to_owned()));
        strip.sort();
        strip.dedup();
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT_ID.fetch_add(1, Relaxed),
            mapping: mapping.to_vec(),
            strip,
            cookie_name: cookie_name.to_owned(),
        }
    }

    fn is_identity(&self, name: &str) -> bool {
        // Header names arrive lowercased; only an underscore spelling needs a normalised copy.
        if name.contains('_') {
            let n = normalise(name);
            return n.starts_with(STRIPPED_PREFIX) || self.strip.binary_search(&n).is_ok();
        }
        name.starts_with(STRIPPED_PREFIX) || self.strip.binary_search_by(|s| s.as_str().cmp(name)).is_ok()
    }

    /// The exact names [`HeaderPlan::strip`] removes (besides any `x-auth-request-*` and `_` spellings), for a
    /// proxy in front that removes headers by name (Envoy's `headers_to_remove`).
    pub fn stripped_names(&self) -> &[String] {
        &self.strip
    }

    /// Removes every identity header a client sent (any case, `-` or `_`, duplicates) and idgate's cookies
    /// (`NAME`, `NAME_*`) from `Cookie`, keeping the application's own. Returns how many headers were stripped.
    pub fn strip(&self, headers: &mut HeaderMap) -> usize {
        let spoofed: Vec<HeaderName> = headers.keys().filter(|k| self.is_identity(k.as_str())).cloned().collect();
        for name in &spoofed {
            headers.remove(name);
        }
        self.strip_cookies(headers);
        spoofed.len()
    }

    fn strip_cookies(&self, headers: &mut HeaderMap) {
        if !headers.contains_key(COOKIE) {
            return;
        }
        let kept = self.app_cookies(headers);
        headers.remove(COOKIE);
        if let Some(v) = kept {
            headers.insert(COOKIE, v);
        }
    }

    /// The request's `Cookie` header without idgate's cookies (`NAME`, `NAME_*`): what the application may see.
    /// `None` when nothing is left. Forward-auth answers it as `X-Idgate-Cookie` for the proxy in front to forward.
    pub fn app_cookies(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let ours = |name: &str| {
            name == self.cookie_name
                || name.strip_prefix(self.cookie_name.as_str()).is_some_and(|rest| rest.starts_with('_'))
        };
        let kept: Vec<&str> = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .map(str::trim)
            .filter(|pair| !pair.is_empty() && !ours(pair.split('=').next().unwrap_or("").trim()))
            .collect();
        let joined = kept.join("; ");
        if joined.is_empty() { None } else { HeaderValue::from_str(&joined).ok() }
    }

    /// Writes the configured claim headers. Call after [`HeaderPlan::strip`]. `memo` keeps them for the session's
    /// next requests.
    pub fn apply(&self, headers: &mut HeaderMap, claims: &Claims, permit: &Permit, memo: &Memo) {
        let fresh;
        let list = match memo.get() {
            Some((id, list)) if *id == self.id => list,
            _ => {
                fresh = self.values(claims, permit);
                let _ = memo.set((self.id, fresh.clone()));
                &fresh
            }
        };
        for (name, value) in list {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// The claim headers as a list, in mapping order (a later mapping of the same name wins).
    fn values(&self, claims: &Claims, _permit: &Permit) -> Vec<(HeaderName, HeaderValue)> {
        let mut out: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(self.mapping.len());
        for (name, claim) in &self.mapping {
            let values = claims.values(claim);
            if values.is_empty() {
                continue;
            }
            if let Some(v) = header_value(&values.join(",")) {
                out.retain(|(n, _)| n != name);
                out.push((name.clone(), v));
            }
        }
        out
    }
}

/// `X-Auth-Request-User` and `x_auth_request_user` are one header to most frameworks.
fn normalise(name: &str) -> String {
    name.bytes().map(|b| if b == b'_' { '-' } else { b.to_ascii_lowercase() as char }).collect()
}

/// A header value from claim text: control characters removed, UTF-8 bytes kept.
fn header_value(text: &str) -> Option<HeaderValue> {
    let clean: String = text.chars().filter(|c| !c.is_control()).collect();
    let trimmed = clean.trim();
    if trimmed.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(trimmed.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Rules;
    use serde_json::json;

    fn plan() -> HeaderPlan {
        HeaderPlan::new(
            &[
                (HeaderName::from_static("x-auth-request-user"), "sub".into()),
                (HeaderName::from_static("x-user-roles"), "https://example.com/roles".into()),
                (HeaderName::from_static("x-name"), "name".into()),
            ],
            &[HeaderName::from_static("x-custom-identity")],
            "idgate",
        )
    }

    #[test]
    fn the_names_a_proxy_in_front_removes_are_the_mapped_the_extra_and_the_fixed_ones_sorted() {
        let plan = plan();
        let names = plan.stripped_names();
        for n in
            ["x-auth-request-user", "x-user-roles", "x-name", "x-custom-identity", "remote-user", "x-idgate-assertion"]
        {
            assert!(names.iter().any(|s| s == n), "{n} is named");
        }
        assert_eq!(names.len(), ALWAYS_STRIPPED.len() + 4);
        assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates (binary search relies on it)");
    }

    #[test]
    fn strips_spoofed_variants_and_our_cookies() {
        let mut h = HeaderMap::new();
        for name in [
            "X-Auth-Request-User",
            "x_auth_request_user",
            "X-AUTH-REQUEST-EMAIL",
            "x-user_roles",
            "X_Name",
            "x-forwarded-user",
            "Remote_User",
            "X-Original-URL",
            "x-rewrite_url",
            "X_Custom-Identity",
        ] {
            h.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("evil"));
        }
        h.append("x-auth-request-user", HeaderValue::from_static("evil2"));
        h.insert("x-app", HeaderValue::from_static("keep"));
        h.append(COOKIE, HeaderValue::from_static("app=1; idgate=sealed; idgate_0=a"));
        h.append(COOKIE, HeaderValue::from_static("idgate_flow_abc=x; other=2; idgatex=keep"));
        let stripped = plan().strip(&mut h);
        assert_eq!(stripped, 10);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["x-app"], "keep");
        assert_eq!(h[COOKIE], "app=1; other=2; idgatex=keep");
    }

    #[test]
    fn writes_claims_without_control_characters() {
        let claims = Claims::new(
            json!({"sub": "u1\r\nX-Evil: 1", "https://example.com/roles": ["a", "b"], "name": "Zoë Ünïcødé 山田"})
                .as_object()
                .unwrap()
                .clone(),
        );
        let permit = Rules::default().authorize(None, &claims).unwrap();
        let (mut h, memo) = (HeaderMap::new(), Memo::new());
        plan().apply(&mut h, &claims, &permit, &memo);
        assert_eq!(h["x-auth-request-user"], "u1X-Evil: 1");
        assert_eq!(h["x-user-roles"], "a,b");
        assert_eq!(std::str::from_utf8(h["x-name"].as_bytes()).unwrap(), "Zoë Ünïcødé 山田");
    }

    #[test]
    fn a_sessions_headers_are_kept_for_its_plan_only() {
        let claims = Claims::new(json!({"sub": "u1", "name": "Alice"}).as_object().unwrap().clone());
        let permit = Rules::default().authorize(None, &claims).unwrap();
        let memo = Memo::new();
        let by_sub = HeaderPlan::new(&[(HeaderName::from_static("x-user"), "sub".into())], &[], "idgate");
        let (mut first, mut again) = (HeaderMap::new(), HeaderMap::new());
        by_sub.apply(&mut first, &claims, &permit, &memo);
        by_sub.apply(&mut again, &claims, &permit, &memo);
        assert_eq!((&first["x-user"], &again["x-user"]), (&HeaderValue::from_static("u1"), &first["x-user"]));
        assert!(memo.get().is_some(), "kept after the first request");
        // A reloaded configuration maps the same header to another claim: the kept headers are not reused.
        let by_name = HeaderPlan::new(&[(HeaderName::from_static("x-user"), "name".into())], &[], "idgate");
        let mut h = HeaderMap::new();
        by_name.apply(&mut h, &claims, &permit, &memo);
        assert_eq!(h["x-user"], "Alice");
    }

    #[test]
    fn within_its_plan_the_memo_is_used_not_recomputed() {
        let permit_for = |c: &Claims| Rules::default().authorize(None, c).unwrap();
        let first = Claims::new(json!({"sub": "u1"}).as_object().unwrap().clone());
        let later = Claims::new(json!({"sub": "u2"}).as_object().unwrap().clone());
        let plan = HeaderPlan::new(&[(HeaderName::from_static("x-user"), "sub".into())], &[], "idgate");
        let memo = Memo::new();
        let mut h = HeaderMap::new();
        plan.apply(&mut h, &first, &permit_for(&first), &memo);
        // A session's claims do not change under it; the memo made on its first request is what is written.
        plan.apply(&mut h, &later, &permit_for(&later), &memo);
        assert_eq!(h["x-user"], "u1");
    }

    #[test]
    fn a_later_mapping_of_the_same_header_wins_and_empty_values_write_nothing() {
        let claims = Claims::new(
            json!({"sub": "u1", "name": "Alice", "email": "a@example.com", "blank": "\r\n \t"})
                .as_object()
                .unwrap()
                .clone(),
        );
        let permit = Rules::default().authorize(None, &claims).unwrap();
        let plan = HeaderPlan::new(
            &[
                (HeaderName::from_static("x-a"), "sub".into()),
                (HeaderName::from_static("x-b"), "name".into()),
                (HeaderName::from_static("x-a"), "email".into()),
                (HeaderName::from_static("x-blank"), "blank".into()),
                (HeaderName::from_static("x-missing"), "missing".into()),
            ],
            &[],
            "idgate",
        );
        let mut h = HeaderMap::new();
        plan.apply(&mut h, &claims, &permit, &Memo::new());
        assert_eq!(h.get_all("x-a").iter().collect::<Vec<_>>(), ["a@example.com"]);
        assert_eq!(h["x-b"], "Alice");
        assert_eq!(h.len(), 2, "a claim that is only control characters and blanks, or absent, gives no header: {h:?}");
    }

    #[test]
    fn only_identity_headers_and_our_cookies_go() {
        let mut h = HeaderMap::new();
        for name in ["x_auth_request_groups", "X_Forwarded_Email", "x-auth-request-anything"] {
            h.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("evil"));
        }
        for name in ["x_app_header", "x-request-id", "x-forwarded-for", "x-auth-requests"] {
            h.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("keep"));
        }
        h.append(COOKIE, HeaderValue::from_static("idgate=sealed; idgate_1=x"));
        h.append(COOKIE, HeaderValue::from_static(" ; idgate_flow_q=y"));
        assert_eq!(plan().strip(&mut h), 3);
        let mut kept: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        kept.sort();
        assert_eq!(kept, ["x-auth-requests", "x-forwarded-for", "x-request-id", "x_app_header"]);
        assert!(!h.contains_key(COOKIE), "only our cookies: no Cookie header at all, not an empty one");
        // No Cookie header stays no Cookie header.
        let mut none = HeaderMap::new();
        assert_eq!(plan().strip(&mut none), 0);
        assert!(none.is_empty());
    }
}

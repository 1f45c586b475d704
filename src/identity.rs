//! What the upstream learns about the user: client-sent identity headers and idgate's own cookies are stripped
//! from every request, then the configured claim headers are written. This module never sees a token: it takes
//! [`Claims`], which hold none.
//!
//! Values travel as UTF-8 bytes (RFC 9110 allows non-ASCII octets in field values; the upstream decodes them as
//! UTF-8, or re-encodes a Latin-1 string it was handed). Control characters (CR, LF, NUL, …) are removed, so a
//! claim can never split or end a header.

use http::{HeaderMap, HeaderName, HeaderValue, header::COOKIE};

use crate::{id_token::Claims, policy::Permit};

/// Header names a client may never send, whatever the mapping: oauth2-proxy's, so an app moved from it is safe.
const ALWAYS_STRIPPED: [&str; 6] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-forwarded-access-token",
    "x-auth-request-access-token",
];
const STRIPPED_PREFIX: &str = "x-auth-request-";

/// The header plan, compiled once: which names to strip and which claims to write.
#[derive(Debug, Clone)]
pub struct HeaderPlan {
    mapping: Vec<(HeaderName, String)>,
    /// Normalised (`_`→`-`, lowercase) names to strip.
    strip: Vec<String>,
    cookie_name: String,
}

impl HeaderPlan {
    /// Builds the plan from `[headers]` and the session cookie name.
    pub fn new(mapping: &[(HeaderName, String)], cookie_name: &str) -> Self {
        let mut strip: Vec<String> = mapping.iter().map(|(h, _)| normalise(h.as_str())).collect();
        strip.extend(ALWAYS_STRIPPED.iter().map(|s| (*s).to_owned()));
        strip.sort();
        strip.dedup();
        Self { mapping: mapping.to_vec(), strip, cookie_name: cookie_name.to_owned() }
    }

    fn is_identity(&self, name: &str) -> bool {
        // Header names arrive lowercased; only an underscore spelling needs a normalised copy.
        if name.contains('_') {
            let n = normalise(name);
            return n.starts_with(STRIPPED_PREFIX) || self.strip.binary_search(&n).is_ok();
        }
        name.starts_with(STRIPPED_PREFIX) || self.strip.binary_search_by(|s| s.as_str().cmp(name)).is_ok()
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
        headers.remove(COOKIE);
        if !joined.is_empty()
            && let Ok(v) = HeaderValue::from_str(&joined)
        {
            headers.insert(COOKIE, v);
        }
    }

    /// Writes the configured claim headers. Call after [`HeaderPlan::strip`].
    pub fn apply(&self, headers: &mut HeaderMap, claims: &Claims, _permit: &Permit) {
        for (name, claim) in &self.mapping {
            let values = claims.values(claim);
            if values.is_empty() {
                continue;
            }
            if let Some(v) = header_value(&values.join(",")) {
                headers.insert(name.clone(), v);
            }
        }
    }

    /// The claim headers as a list (forward-auth answers carry them).
    pub fn values(&self, claims: &Claims, _permit: &Permit) -> Vec<(HeaderName, HeaderValue)> {
        let mut h = HeaderMap::new();
        self.apply(&mut h, claims, _permit);
        h.into_iter().filter_map(|(k, v)| Some((k?, v))).collect()
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
            "idgate",
        )
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
        ] {
            h.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("evil"));
        }
        h.append("x-auth-request-user", HeaderValue::from_static("evil2"));
        h.insert("x-app", HeaderValue::from_static("keep"));
        h.append(COOKIE, HeaderValue::from_static("app=1; idgate=sealed; idgate_0=a"));
        h.append(COOKIE, HeaderValue::from_static("idgate_flow_abc=x; other=2; idgatex=keep"));
        let stripped = plan().strip(&mut h);
        assert_eq!(stripped, 6);
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
        let mut h = HeaderMap::new();
        plan().apply(&mut h, &claims, &permit);
        assert_eq!(h["x-auth-request-user"], "u1X-Evil: 1");
        assert_eq!(h["x-user-roles"], "a,b");
        assert_eq!(std::str::from_utf8(h["x-name"].as_bytes()).unwrap(), "Zoë Ünïcødé 山田");
    }
}

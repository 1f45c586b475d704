//! Access rules evaluated against a session's claims. Pure: no I/O. The only way to get a [`Permit`] is
//! [`Rules::authorize`], and writing identity headers takes one, so nothing reaches the upstream unauthorized.

use crate::{config::settings::RouteSettings, id_token::Claims};

/// Proof that the claims satisfied the route's rule.
#[derive(Debug)]
pub struct Permit {
    _private: (),
}

/// The claims do not satisfy a rule. Names the rule, never the user's claim values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("access denied by route {route:?}: {requirement}")]
pub struct Denied {
    pub route: String,
    pub requirement: &'static str,
}

/// The compiled `[[routes]]` requirements, indexed like the route table.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    routes: Vec<RouteSettings>,
}

impl Rules {
    /// Compiles the rules.
    pub fn new(routes: &[RouteSettings]) -> Self {
        Self { routes: routes.to_vec() }
    }

    /// Checks the claims against rule `index` (`None`: the default rule, any valid session).
    pub fn authorize(&self, index: Option<usize>, claims: &Claims) -> Result<Permit, Denied> {
        let Some(i) = index else { return Ok(Permit { _private: () }) };
        // A rule the table does not hold (a route table built from other settings) fails closed.
        let Some(r) = self.routes.get(i) else {
            return Err(Denied { route: format!("#{i}"), requirement: "a rule this configuration does not have" });
        };
        let deny = |requirement| Err(Denied { route: r.prefix.clone(), requirement });
        if !r.email_domains.is_empty() {
            let email = claims.values("email");
            let domain = match email.as_slice() {
                [one] => email_domain(one),
                _ => None,
            };
            if !domain.is_some_and(|d| r.email_domains.contains(&d)) {
                return deny("email domain");
            }
        }
        if r.email_verified && claims.get("email_verified") != Some(&serde_json::Value::Bool(true)) {
            return deny("verified email");
        }
        for (claim, wanted) in &r.any_of {
            let have = claims.values(claim);
            if !wanted.iter().any(|w| have.contains(w)) {
                return deny("claim any_of");
            }
        }
        for (claim, wanted) in &r.all_of {
            let have = claims.values(claim);
            if !wanted.iter().all(|w| have.contains(w)) {
                return deny("claim all_of");
            }
        }
        Ok(Permit { _private: () })
    }

    /// Checks a bearer access token's claims against rule `index`: the route's claim rules, then its
    /// `scopes_all` — every scope must be in the token's `scope` (space-separated) or `scp` (a list).
    pub fn authorize_bearer(&self, index: Option<usize>, claims: &Claims) -> Result<Permit, Denied> {
        let permit = self.authorize(index, claims)?;
        let Some(r) = index.and_then(|i| self.routes.get(i)) else { return Ok(permit) };
        let mut held: Vec<String> = claims.values("scp");
        if let Some(scope) = claims.get("scope").and_then(serde_json::Value::as_str) {
            held.extend(scope.split(' ').filter(|s| !s.is_empty()).map(str::to_owned));
        }
        if !r.scopes_all.iter().all(|s| held.contains(s)) {
            return Err(Denied { route: r.prefix.clone(), requirement: "scopes_all" });
        }
        Ok(permit)
    }
}

/// The domain of an email with exactly one `@`, lowercased. `a@b@evil.com` has none (a peer's bypass).
fn email_domain(email: &str) -> Option<String> {
    let mut parts = email.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    (!local.is_empty() && !domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthMode;
    use serde_json::json;

    fn claims(v: serde_json::Value) -> Claims {
        Claims::new(v.as_object().unwrap().clone())
    }

    #[test]
    fn a_rule_index_outside_the_table_is_denied_not_permitted() {
        let rules = Rules::new(&[RouteSettings::new("/admin", AuthMode::Login)]);
        let c = claims(json!({"sub": "a"}));
        assert!(rules.authorize(None, &c).is_ok(), "no rule: any valid session");
        assert!(rules.authorize(Some(0), &c).is_ok());
        let denied = rules.authorize(Some(1), &c).unwrap_err();
        assert_eq!(denied, Denied { route: "#1".into(), requirement: "a rule this configuration does not have" });
    }

    fn rule(f: impl FnOnce(&mut RouteSettings)) -> Rules {
        let mut r = RouteSettings::new("/admin", AuthMode::Login);
        f(&mut r);
        Rules::new(&[r])
    }

    #[test]
    fn email_domain_rule() {
        let rules = rule(|r| r.email_domains = vec!["example.com".into()]);
        assert!(rules.authorize(Some(0), &claims(json!({"email": "a@Example.com"}))).is_ok());
        for bad in [
            json!({"email": "a@evil.com"}),
            json!({"email": "a@example.com@evil.com"}),
            json!({"email": "a@evil.com@example.com"}),
            json!({"email": "@example.com"}),
            json!({}),
            json!({"email": ["a@example.com", "b@evil.com"]}),
            json!({"email": "a@sub.example.com"}),
        ] {
            assert!(rules.authorize(Some(0), &claims(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn claim_rules() {
        let rules = rule(|r| {
            r.any_of.insert("https://example.com/roles".into(), vec!["admin".into(), "ops".into()]);
            r.all_of.insert("groups".into(), vec!["staff".into(), "eu".into()]);
        });
        let ok = json!({"https://example.com/roles": ["ops"], "groups": ["eu", "staff", "x"]});
        assert!(rules.authorize(Some(0), &claims(ok)).is_ok());
        let denied = rules
            .authorize(Some(0), &claims(json!({"https://example.com/roles": ["user"], "groups": ["eu", "staff"]})))
            .unwrap_err();
        assert_eq!(denied.requirement, "claim any_of");
        assert!(!denied.to_string().contains("user"), "a denial never echoes claim values");
        assert!(
            rules.authorize(Some(0), &claims(json!({"https://example.com/roles": "admin", "groups": ["eu"]}))).is_err()
        );
    }

    #[test]
    fn email_verified_rule() {
        let rules = rule(|r| r.email_verified = true);
        assert!(rules.authorize(Some(0), &claims(json!({"email_verified": true}))).is_ok());
        assert!(rules.authorize(Some(0), &claims(json!({"email_verified": "true"}))).is_err());
        assert!(rules.authorize(Some(0), &claims(json!({}))).is_err());
    }

    fn denial(rules: &Rules, c: serde_json::Value) -> &'static str {
        rules.authorize(Some(0), &claims(c)).unwrap_err().requirement
    }

    #[test]
    fn each_denial_names_its_rule_and_route() {
        let rules = rule(|r| {
            r.email_domains = vec!["example.com".into()];
            r.email_verified = true;
            r.any_of.insert("roles".into(), vec!["admin".into()]);
            r.all_of.insert("groups".into(), vec!["staff".into(), "eu".into()]);
        });
        let ok = json!({"email": "a@example.com", "email_verified": true, "roles": "admin", "groups": ["eu", "staff"]});
        assert!(rules.authorize(Some(0), &claims(ok.clone())).is_ok());
        let but = |k: &str, v: serde_json::Value| {
            let mut c = ok.clone();
            c[k] = v;
            c
        };
        assert_eq!(denial(&rules, but("email", json!("a@evil.com"))), "email domain");
        assert_eq!(denial(&rules, but("email_verified", json!(false))), "verified email");
        assert_eq!(denial(&rules, but("roles", json!(["user"]))), "claim any_of");
        assert_eq!(denial(&rules, but("groups", json!(["staff"]))), "claim all_of");
        let d = rules.authorize(Some(0), &claims(but("email_verified", json!(false)))).unwrap_err();
        assert_eq!(d, Denied { route: "/admin".into(), requirement: "verified email" });
        assert_eq!(d.to_string(), "access denied by route \"/admin\": verified email");
    }

    #[test]
    fn a_rule_without_requirements_lets_any_session_in() {
        let rules = rule(|_| {});
        assert!(rules.authorize(Some(0), &claims(json!({}))).is_ok(), "no email, no email_verified: no rule asks");
        assert!(rules.authorize(None, &claims(json!({}))).is_ok(), "the default rule");
    }

    #[test]
    fn a_bearer_token_needs_every_scope_of_its_route_in_scope_or_scp() {
        let rules = rule(|r| r.scopes_all = vec!["read".into(), "write".into()]);
        let ok = |c: serde_json::Value| rules.authorize_bearer(Some(0), &claims(c)).is_ok();
        assert!(ok(json!({"scope": "read  write"})), "space-separated, runs of spaces allowed");
        assert!(ok(json!({"scp": ["write", "read"]})), "a list");
        assert!(ok(json!({"scp": ["read"], "scope": "write"})), "both together");
        let denied = rules.authorize_bearer(Some(0), &claims(json!({"scope": "read"}))).unwrap_err();
        assert_eq!(denied, Denied { route: "/admin".into(), requirement: "scopes_all" });
        assert!(
            rules.authorize_bearer(Some(0), &claims(json!({"scope": "readwrite"}))).is_err(),
            "words, not a substring"
        );
        assert!(rules.authorize_bearer(None, &claims(json!({}))).is_ok(), "the default rule asks no scope");
        // An empty word counts for nothing: a rule asking for "" is met by no token.
        let empty = rule(|r| r.scopes_all = vec![String::new()]);
        assert!(empty.authorize_bearer(Some(0), &claims(json!({"scope": " a  b "}))).is_err());
        // The route's claim rules come first.
        let both = rule(|r| {
            r.scopes_all = vec!["read".into()];
            r.email_verified = true;
        });
        let d = both.authorize_bearer(Some(0), &claims(json!({"scope": "read"}))).unwrap_err();
        assert_eq!(d.requirement, "verified email");
    }

    #[test]
    fn email_domains_need_one_well_formed_address() {
        let rules = rule(|r| r.email_domains = vec!["example.com".into(), "example.org".into()]);
        assert!(rules.authorize(Some(0), &claims(json!({"email": "b@EXAMPLE.ORG"}))).is_ok());
        assert!(rules.authorize(Some(0), &claims(json!({"email": ["a@example.com"]}))).is_ok(), "a one-member list");
        for bad in ["a@", "@", "a", "", "a@@example.com"] {
            assert_eq!(denial(&rules, json!({ "email": bad })), "email domain", "{bad:?}");
        }
        assert_eq!(email_domain("A@Example.COM").as_deref(), Some("example.com"));
        assert_eq!(email_domain("a@"), None);
        assert_eq!(email_domain("@b"), None);
    }
}

//! `idgate check`: what would be served, and whether the deployment can work — issuer reachable and matching,
//! keys usable, redirect URL and cookie settings plausible. Each finding says what to fix.

pub mod capabilities;

use std::sync::Arc;

use crate::{
    client,
    config::{Settings, StoreKind},
    oidc::Provider,
    telemetry::metrics::Metrics,
};

/// The outcome: printable lines, and whether everything needed to serve is in order.
#[derive(Debug, Default)]
pub struct Report {
    pub ok: bool,
    pub lines: Vec<String>,
}

/// Checks `settings` against the live issuer.
pub async fn run(settings: &Settings) -> Report {
    let mut r = Report { ok: true, lines: Vec::new() };
    let s = settings;
    r.lines.push(format!(
        "public listener  {}{}",
        s.server.listen,
        if s.server.tls.is_some() { " (https)" } else { "" }
    ));
    r.lines.push(format!("admin listener   {} (/healthz /readyz /metrics)", s.admin.listen));
    r.lines.push(format!("upstream         {}", s.upstream.url));
    r.lines.push(format!("issuer           {}", s.oidc.issuer));
    r.lines.push(format!("callback         {}", s.oidc.redirect_url));
    r.lines.push(format!("session store    {}, cookie {:?}", store_line(&s.session.store), s.session.cookie_name));
    if let Some(keys) = &s.oidc.id_token_decryption.keys {
        let mode = if s.oidc.id_token_decryption.required { "required" } else { "accepted" };
        r.lines.push(format!("encrypted ID     {mode}, {} decryption key(s)", keys.len()));
    }
    if let Some(otlp) = &s.telemetry.otlp {
        r.lines.push(format!("traces           OTLP/HTTP to {} as {:?}", otlp.endpoint, otlp.service_name));
    }
    for (h, c) in &s.headers {
        r.lines.push(format!("header           {h} <- claim {c:?}"));
    }
    for route in &s.routes {
        r.lines.push(format!("route            {} auth={:?}", route.prefix, route.auth));
    }
    let warn = |r: &mut Report, fatal: bool, msg: String| {
        if fatal {
            r.ok = false;
        }
        r.lines.push(format!("{} {msg}", if fatal { "ERROR" } else { "WARN " }));
    };
    let redirect = &s.oidc.redirect_url;
    let loopback = matches!(redirect.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if redirect.scheme() != "https" && !loopback {
        warn(
            &mut r,
            false,
            "oidc.redirect_url is not https: browsers will send the session cookie in clear text".into(),
        );
    }
    if !redirect.path().starts_with(&format!("{}/", s.server.prefix)) {
        warn(
            &mut r,
            false,
            format!(
                "oidc.redirect_url path {} is outside server.prefix {}: login flow cookies then use Path=/",
                redirect.path(),
                s.server.prefix
            ),
        );
    }
    if redirect.scheme() == "http" && s.session.cookie_secure && !loopback {
        warn(&mut r, true, "session.cookie_secure is true but oidc.redirect_url is http: the browser will drop the cookies (use https, or cookie_secure = false for local tests)".into());
    }
    // Every issuer: `[oidc]`, or each `[[providers]]` entry (named in its lines).
    let issuers: Vec<(String, &crate::config::settings::OidcSettings)> = if s.providers.is_empty() {
        vec![(String::new(), &s.oidc)]
    } else {
        s.providers.iter().map(|p| (format!("provider {:?}: ", p.name), &p.oidc)).collect()
    };
    for (label, oidc) in issuers {
        if !label.is_empty() {
            r.lines.push(format!("provider         {label}{} (callback {})", oidc.issuer, oidc.redirect_url));
        }
        check_issuer(&mut r, s, &label, oidc).await;
    }
    r.lines.push(if r.ok {
        "configuration OK".into()
    } else {
        "configuration NOT usable: fix the ERROR lines above".into()
    });
    r
}

/// Loads one issuer's discovery and keys, as the server would, and reports what it found (each line prefixed with
/// `label`, the provider's name with `[[providers]]`).
async fn check_issuer(r: &mut Report, s: &Settings, label: &str, oidc: &crate::config::settings::OidcSettings) {
    let warn = |r: &mut Report, fatal: bool, msg: String| {
        if fatal {
            r.ok = false;
        }
        r.lines.push(format!("{} {label}{msg}", if fatal { "ERROR" } else { "WARN " }));
    };
    let provider =
        Arc::new(Provider::new(oidc.clone(), client::build(s.upstream.connect_timeout), Arc::new(Metrics::default())));
    match provider.load().await {
        Ok(()) => {
            r.lines.push(format!(
                "ok    {label}discovery reachable, issuer matches, {} signing key(s) loaded",
                provider.keys().len()
            ));
            if let Ok(m) = provider.metadata() {
                if m.code_challenge_methods_supported.as_ref().is_some_and(|v| !v.iter().any(|x| x == "S256")) {
                    warn(r, false, "the issuer does not list S256 in code_challenge_methods_supported".into());
                }
                let origin = oidc.redirect_url.origin().ascii_serialization();
                let jwks_url = format!("{origin}{}/jwks", s.server.prefix);
                for f in capabilities::findings(oidc, &m, &jwks_url) {
                    use capabilities::Level;
                    let tag = match f.level {
                        Level::Ok => "ok   ",
                        Level::Note => "note ",
                        Level::Warn => "WARN ",
                        Level::Error => "ERROR",
                    };
                    if f.level == Level::Error {
                        r.ok = false;
                    }
                    r.lines.push(format!("{tag} {label}{}", f.text));
                }
                if m.end_session_endpoint.is_none() {
                    r.lines.push(format!(
                        "note  {label}the issuer has no end_session_endpoint: sign-out ends the local session only"
                    ));
                }
            }
        }
        Err(e) => warn(r, true, format!("issuer: {e}")),
    }
}

/// The store for a report line; a Redis URL with its password hidden.
fn store_line(store: &StoreKind) -> String {
    match store {
        StoreKind::Cookie => "cookie".into(),
        StoreKind::Memory => "memory".into(),
        StoreKind::Redis { url } => match crate::config::redis_url::parse(url.expose()) {
            // Sentinel and Cluster URLs list several hosts, which no URL parser takes: shown from their parts.
            Ok(crate::config::redis_url::RedisUrl::Multi(m)) => format!("redis {}", m.redacted()),
            _ => format!("redis {}", redacted_url(url.expose())),
        },
    }
}

/// `raw` with any password — in the user-info part or a `pass…` query parameter — replaced by `***`.
fn redacted_url(raw: &str) -> String {
    let Ok(mut u) = url::Url::parse(raw) else { return "(an unparsable URL, not shown)".into() };
    if u.password().is_some() && u.set_password(Some("***")).is_err() {
        return "(a URL with a password, not shown)".into();
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.to_ascii_lowercase().contains("pass") { "***".into() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn redis_passwords_are_never_printed() {
        for (raw, shown) in [
            ("redis://:hunter2@redis.internal:6379/0", "redis://:***@redis.internal:6379/0"),
            ("rediss://idgate:hunter2@redis.internal/", "rediss://idgate:***@redis.internal/"),
            ("redis://redis.internal:6379/?password=hunter2&db=1", "redis://redis.internal:6379/?password=***&db=1"),
            ("redis://redis.internal:6379/", "redis://redis.internal:6379/"),
        ] {
            let line = store_line(&StoreKind::Redis { url: Secret::new(raw) });
            assert_eq!(line, format!("redis {shown}"));
            assert!(!line.contains("hunter2"));
        }
        assert!(!store_line(&StoreKind::Redis { url: Secret::new("redis://:hunter2@[bad") }).contains("hunter2"));
        let sentinel = "redis+sentinel://:hunter2@s1,s2/mymaster?sentinel_password=hunter2";
        let line = store_line(&StoreKind::Redis { url: Secret::new(sentinel) });
        assert_eq!(line, "redis redis+sentinel://:***@s1:26379,s2:26379/mymaster/0?sentinel_password=***");
        let debug = format!("{:?}", StoreKind::Redis { url: Secret::new("redis://:hunter2@h/") });
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}

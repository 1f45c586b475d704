//! `[[providers]]`: several issuers in one idgate, instead of `[oidc]`. Each entry has a `name`, a `title`, `hosts`
//! and every `[oidc]` key — parsed by the very function that parses `[oidc]`, its problems re-keyed
//! `providers[i].KEY`, so a key added to `[oidc]` is a provider key too.

use super::{
    Problem, Problems,
    raw::{RawOidc, RawProvider},
    settings::{self, OidcSettings, RouteSettings},
};

/// Longest provider title (it is shown on the chooser page).
const MAX_TITLE: usize = 100;

/// One `[[providers]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSettings {
    /// `[a-z0-9-]+`, unique: recorded in flows and sessions, sent as `X-Auth-Request-Issuer`.
    pub name: String,
    /// Shown on the chooser page (escaped).
    pub title: String,
    /// Lowercase host names this provider serves; `*.example.com` matches any name below `example.com` (not
    /// `example.com` itself).
    pub hosts: Vec<String>,
    pub oidc: OidcSettings,
}

/// The issuer settings: `[oidc]` alone, or `[[providers]]` (then `[oidc]` must be absent). Returns the settings
/// `Settings::oidc` holds (the first provider's with `[[providers]]`) and the providers.
pub(super) fn from_raw(
    p: &mut Problems,
    oidc: RawOidc,
    raw: Vec<RawProvider>,
) -> (Option<OidcSettings>, Vec<ProviderSettings>) {
    if raw.is_empty() {
        return (settings::oidc(p, oidc), Vec::new());
    }
    if is_present(&oidc) {
        p.add(
            "oidc",
            "[oidc] and [[providers]] are exclusive: move the [oidc] keys into a [[providers]] entry, or remove \
             [[providers]]",
        );
    }
    if raw.len() > crate::providers::MAX_PROVIDERS {
        p.add("providers", format!("at most {} providers", crate::providers::MAX_PROVIDERS));
    }
    let mut out: Vec<ProviderSettings> = Vec::new();
    for (i, entry) in raw.into_iter().enumerate() {
        if let Some(provider) = provider(p, i, entry) {
            if let Some(j) = out.iter().position(|o| o.name == provider.name) {
                p.add(
                    &format!("providers[{i}].name"),
                    format!("{:?} is already the name of providers[{j}]", provider.name),
                );
                continue;
            }
            out.push(provider);
        }
    }
    // One callback endpoint serves every provider (the flow cookie says whose login it is).
    if let Some(first) = out.first() {
        let path = first.oidc.redirect_url.path().to_owned();
        for (i, o) in out.iter().enumerate().skip(1) {
            if o.oidc.redirect_url.path() != path {
                p.add(
                    &format!("providers[{i}].redirect_url"),
                    format!(
                        "path {:?} differs from providers[0]'s {path:?}: every provider shares one callback path",
                        o.oidc.redirect_url.path()
                    ),
                );
            }
        }
    }
    (out.first().map(|o| o.oidc.clone()), out)
}

/// `[[routes]] providers` must name configured providers.
pub(super) fn check_routes(p: &mut Problems, routes: &[RouteSettings], providers: &[ProviderSettings]) {
    for (i, r) in routes.iter().enumerate() {
        if r.providers.is_empty() {
            continue;
        }
        let key = format!("routes[{i}].providers");
        if providers.is_empty() {
            p.add(&key, "names providers, but no [[providers]] are configured (with [oidc] there is one issuer)");
            continue;
        }
        if r.auth == super::AuthMode::Public {
            p.add(&key, "a public route needs no session, so no provider");
        }
        for name in &r.providers {
            if !providers.iter().any(|o| &o.name == name) {
                let known: Vec<&str> = providers.iter().map(|o| o.name.as_str()).collect();
                p.add(&key, format!("{name:?} is not a [[providers]] name (known: {})", known.join(", ")));
            }
        }
    }
}

/// True when any `[oidc]` key was set (file or environment).
fn is_present(oidc: &RawOidc) -> bool {
    serde_json::to_value(oidc)
        .ok()
        .and_then(|v| v.as_object().map(|m| m.values().any(|v| !v.is_null())))
        .unwrap_or(false)
}

fn provider(p: &mut Problems, i: usize, raw: RawProvider) -> Option<ProviderSettings> {
    let key = |k: &str| format!("providers[{i}].{k}");
    let name = match raw.name {
        Some(n) if is_name(&n) => Some(n),
        Some(n) => p.bad(&key("name"), &format!("{n:?}: must be 1-64 of a-z, 0-9 and '-'")),
        None => p.missing(&key("name")),
    };
    let title = raw.title.or_else(|| name.clone()).unwrap_or_default();
    if title.trim().is_empty() || title.chars().count() > MAX_TITLE || title.chars().any(char::is_control) {
        p.add(&key("title"), format!("must be 1-{MAX_TITLE} characters, no control characters"));
    }
    let hosts = raw
        .hosts
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(j, h)| {
            let lower = h.to_ascii_lowercase();
            if is_host_pattern(&lower) {
                Some(lower)
            } else {
                p.bad(
                    &format!("providers[{i}].hosts[{j}]"),
                    &format!("{h:?}: a host name (app.example.com) or a wildcard (*.example.com), no port or path"),
                )
            }
        })
        .collect();
    // The [oidc] parser names its keys `oidc.KEY`: the same problems, named for this entry.
    let mut own = Problems::default();
    let oidc = settings::oidc(&mut own, raw.oidc);
    for Problem { key: k, why } in own.0 {
        let k = match k.strip_prefix("oidc.") {
            Some(rest) => key(rest),
            None => k,
        };
        p.add(&k, why);
    }
    Some(ProviderSettings { name: name?, title, hosts, oidc: oidc? })
}

fn is_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `name` or `*.name`, where `name` is dot-separated labels of letters, digits and '-'.
fn is_host_pattern(h: &str) -> bool {
    let name = h.strip_prefix("*.").unwrap_or(h);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests;

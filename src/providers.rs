//! Several issuers in one idgate (`[[providers]]`): the registry of providers by name, and which of them a request
//! may use — the route's `providers`, else the providers whose `hosts` name the request's host, else all. With
//! `[oidc]` there is exactly one provider and sessions record none, as before.
//!
//! A session records its provider's name (sealed with it) and is valid only where that provider is allowed; a login
//! flow records it too, so the callback knows whose answer to expect before it reads the answer (mix-up defence).

use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::{
    config::{Settings, settings::OidcSettings},
    oidc::Provider,
};

/// At most this many providers (a request's allowed set is a 64-bit mask).
pub const MAX_PROVIDERS: usize = 64;

/// The identity header naming the session's provider (with `[[providers]]` only), unless `upstream.issuer_header`
/// names another.
pub const ISSUER_HEADER: HeaderName = HeaderName::from_static(crate::config::settings::DEFAULT_ISSUER_HEADER);

/// One provider and its background loader (discovery, then periodic key refreshes), shared by the registries of
/// successive reloads while its settings stay the same; the loader stops when the last of them lets go.
pub struct Loaded {
    pub provider: Arc<Provider>,
    loader: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Loaded {
    fn new(provider: Arc<Provider>) -> Self {
        Self { provider, loader: Mutex::new(None) }
    }

    /// Starts the loader once (needs a tokio runtime).
    fn start(&self) {
        if let Ok(mut slot) = self.loader.lock()
            && slot.is_none()
        {
            *slot = Some(self.provider.spawn_loader());
        }
    }

    fn stop(&self) {
        if let Ok(mut slot) = self.loader.lock()
            && let Some(h) = slot.take()
        {
            h.abort();
        }
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One configured provider.
pub struct Entry {
    /// `[[providers]] name` (with `[oidc]`: [`Registry::SINGLE`]).
    pub name: String,
    pub title: String,
    hosts: Vec<String>,
    loaded: Arc<Loaded>,
    /// `name` as a header value, for [`ISSUER_HEADER`].
    header: Option<HeaderValue>,
}

impl Entry {
    /// The provider itself.
    pub fn provider(&self) -> &Arc<Provider> {
        &self.loaded.provider
    }

    /// True when this provider serves `host` (already lowercase, without port).
    fn serves(&self, host: &str) -> bool {
        self.hosts.iter().any(|pattern| match pattern.strip_prefix("*.") {
            Some(base) => {
                host.len() > base.len() + 1
                    && host.ends_with(base)
                    && host.as_bytes()[host.len() - base.len() - 1] == b'.'
            }
            None => pattern == host,
        })
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").field("name", &self.name).field("hosts", &self.hosts).finish_non_exhaustive()
    }
}

/// The providers a request may use: a set of registry indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed(u64);

impl Allowed {
    /// Whether provider `i` is in the set.
    pub fn contains(self, i: usize) -> bool {
        i < MAX_PROVIDERS && self.0 & (1 << i) != 0
    }
    /// The one provider, when exactly one is allowed.
    pub fn only(self) -> Option<usize> {
        (self.0.count_ones() == 1).then(|| self.0.trailing_zeros() as usize)
    }
    /// The indices, in configuration order.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_PROVIDERS).filter(move |i| self.contains(*i))
    }
}

/// Why a session does not open here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// The session's provider is configured, but not allowed for this route or host.
    #[error("the session's provider {0:?} is not allowed here")]
    NotAllowed(String),
    /// The session names no provider that is configured now (removed by a reload, or made before `[[providers]]`).
    #[error("the session's provider is not configured")]
    Unknown,
}

/// Every provider, built once (and again by a reload, keeping the providers whose settings did not change).
#[derive(Debug)]
pub struct Registry {
    entries: Vec<Entry>,
    /// `[[providers]]` is used: sessions and flows record their provider, the issuer header is sent.
    multi: bool,
    /// Per `[[routes]]` index: the providers allowed there (`None`: chosen by host).
    by_route: Vec<Option<Allowed>>,
    /// `upstream.issuer_header`.
    issuer_header: HeaderName,
}

impl Registry {
    /// The one provider's name with `[oidc]` (never recorded in a session or flow).
    pub const SINGLE: &'static str = "default";

    /// Builds the registry from `settings`; `make` gives the provider for each settings (a reload reuses the old
    /// one when nothing changed).
    pub fn new(settings: &Settings, mut make: impl FnMut(&str, &OidcSettings) -> Arc<Loaded>) -> Self {
        let multi = !settings.providers.is_empty();
        let entries: Vec<Entry> = if multi {
            settings
                .providers
                .iter()
                .take(MAX_PROVIDERS)
                .map(|p| Entry {
                    name: p.name.clone(),
                    title: p.title.clone(),
                    hosts: p.hosts.clone(),
                    loaded: make(&p.name, &p.oidc),
                    header: HeaderValue::from_str(&p.name).ok(),
                })
                .collect()
        } else {
            vec![Entry {
                name: Self::SINGLE.into(),
                title: "Sign in".into(),
                hosts: Vec::new(),
                loaded: make(Self::SINGLE, &settings.oidc),
                header: None,
            }]
        };
        let by_route = settings
            .routes
            .iter()
            .map(|r| {
                (!r.providers.is_empty()).then(|| {
                    Allowed(
                        entries
                            .iter()
                            .enumerate()
                            .filter(|(_, e)| r.providers.contains(&e.name))
                            .fold(0, |m, (i, _)| m | (1 << i)),
                    )
                })
            })
            .collect();
        Self { entries, multi, by_route, issuer_header: settings.upstream.issuer_header.clone() }
    }

    /// A provider with its loader, not started yet.
    pub fn loaded(provider: Provider) -> Arc<Loaded> {
        Arc::new(Loaded::new(Arc::new(provider)))
    }

    /// The loaded provider named `name` with exactly these settings, for a reload to keep.
    pub fn reusable(&self, name: &str, settings: &OidcSettings) -> Option<Arc<Loaded>> {
        self.entries
            .iter()
            .find(|e| e.name == name && e.provider().settings() == settings)
            .map(|e| Arc::clone(&e.loaded))
    }

    /// Starts every provider's loader that is not running yet.
    pub fn start_loaders(&self) {
        for e in &self.entries {
            e.loaded.start();
        }
    }

    /// Stops every loader (shutdown).
    pub fn stop_loaders(&self) {
        for e in &self.entries {
            e.loaded.stop();
        }
    }

    /// True with `[[providers]]`.
    pub fn is_multi(&self) -> bool {
        self.multi
    }

    /// Every provider, in configuration order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The first provider (a registry always holds one: `[oidc]`, or a non-empty `[[providers]]`).
    pub fn first(&self) -> &Entry {
        &self.entries[0]
    }

    /// The provider at `i`.
    pub fn entry(&self, i: usize) -> Option<&Entry> {
        self.entries.get(i)
    }

    /// The index of the provider named `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.name == name)
    }

    /// The provider a flow or session recorded (`None`: recorded none, as with `[oidc]`).
    pub fn recorded(&self, name: Option<&str>) -> Option<usize> {
        match (self.multi, name) {
            (false, None) => Some(0),
            (true, Some(n)) => self.index(n),
            _ => None,
        }
    }

    /// What a new flow or session records: the provider's name with `[[providers]]`, nothing with `[oidc]`.
    pub fn record(&self, i: usize) -> Option<&str> {
        if self.multi { self.entries.get(i).map(|e| e.name.as_str()) } else { None }
    }

    /// The providers allowed for a request to route `rule` on `host`: the route's `providers`, else those whose
    /// `hosts` name the host, else all.
    pub fn allowed(&self, rule: Option<usize>, host: Option<&str>) -> Allowed {
        let all = Allowed(if self.entries.len() >= MAX_PROVIDERS { u64::MAX } else { (1 << self.entries.len()) - 1 });
        if !self.multi {
            return all;
        }
        if let Some(a) = rule.and_then(|i| self.by_route.get(i).copied().flatten()) {
            return a;
        }
        let by_host = host.map_or(0, |h| {
            self.entries.iter().enumerate().filter(|(_, e)| e.serves(h)).fold(0, |m, (i, _)| m | (1u64 << i))
        });
        if by_host != 0 { Allowed(by_host) } else { all }
    }

    /// The provider of a session that recorded `name`, when it is allowed in `allowed`.
    pub fn check_session(&self, name: Option<&str>, allowed: Allowed) -> Result<usize, Mismatch> {
        let i = self.recorded(name).ok_or(Mismatch::Unknown)?;
        if allowed.contains(i) { Ok(i) } else { Err(Mismatch::NotAllowed(self.entries[i].name.clone())) }
    }

    /// The request's host as [`request_host`] reads it, with `[[providers]]` only (with `[oidc]` nothing depends
    /// on it).
    pub fn host(&self, headers: &HeaderMap, authority: Option<&str>, trusted: bool) -> Option<String> {
        if self.multi { request_host(headers, authority, trusted) } else { None }
    }

    /// True once every provider's discovery and keys are loaded.
    pub fn all_ready(&self) -> bool {
        self.entries.iter().all(|e| e.provider().is_ready())
    }

    /// The names of the providers not loaded yet.
    pub fn not_ready(&self) -> Vec<&str> {
        self.entries.iter().filter(|e| !e.provider().is_ready()).map(|e| e.name.as_str()).collect()
    }

    /// The providers whose configured issuer is `iss` (a back-channel logout token picks its provider by it).
    pub fn by_issuer<'a>(&'a self, iss: &'a str) -> impl Iterator<Item = usize> + 'a {
        self.entries.iter().enumerate().filter(move |(_, e)| e.provider().settings().issuer == iss).map(|(i, _)| i)
    }

    /// Writes the issuer header (`upstream.issuer_header`, default [`ISSUER_HEADER`]) for the session of provider
    /// `i` (with `[[providers]]`; after stripping, so it overrides whatever `[headers]` maps to that name).
    pub fn apply_issuer_header(&self, headers: &mut HeaderMap, i: usize) {
        if let Some(v) = self.entries.get(i).and_then(|e| e.header.clone()) {
            headers.insert(self.issuer_header.clone(), v);
        }
    }
}

/// The request's host as the application sees it, lowercase and without port: from a trusted proxy
/// `X-Forwarded-Host` (its first value), else the first `Forwarded` element's `host=`; else `Host`, else the URI's
/// authority (HTTP/2). `None` when there is none.
pub fn request_host(headers: &HeaderMap, authority: Option<&str>, trusted: bool) -> Option<String> {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let forwarded = if trusted {
        first("x-forwarded-host").or_else(|| {
            first("forwarded")?.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                k.trim().eq_ignore_ascii_case("host").then(|| v.trim().trim_matches('"')).filter(|v| !v.is_empty())
            })
        })
    } else {
        None
    };
    let raw = forwarded.or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok())).or(authority)?;
    let host = match raw.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        },
    };
    let host = host.trim_end_matches('.');
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests;

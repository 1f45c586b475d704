//! Everything idgate asks of the OpenID Provider: discovery, keys, the token and userinfo endpoints. All I/O with
//! the issuer lives here; validation itself is the pure [`crate::id_token`].

pub mod client_auth;
pub mod discovery;
pub mod dpop;
pub mod jwks;
pub mod par;
pub mod token;

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};

use crate::{
    body,
    client::HttpClient,
    config::settings::OidcSettings,
    id_token::{self, Claims, Expectations, KeySet, Rejection},
    telemetry::metrics::{Event, Metrics},
};
pub use discovery::Metadata;
pub use token::Tokens;

/// An issuer's OAuth error code as logged or shown: its own characters only (RFC 6749 §5.2 allows printable ASCII
/// but codes are words), bounded — so a newline in it cannot forge a log line, nor markup reach a page.
pub(crate) fn error_code(raw: &str) -> String {
    let clean: String = raw.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
    if clean.is_empty() { "error".into() } else { clean }
}

/// Largest answer accepted from the issuer.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Why a call to the issuer failed. `Display` never includes secrets or tokens.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("issuer not ready: discovery and keys not loaded yet")]
    NotReady,
    #[error("request to {what} failed: {why}")]
    Unreachable { what: &'static str, why: String },
    #[error("{what} answered HTTP {status}")]
    Status { what: &'static str, status: u16 },
    #[error("{what} answered with an unusable document: {why}")]
    BadDocument { what: &'static str, why: String },
    #[error("discovery issuer {got:?} differs from the configured issuer {expected:?}")]
    IssuerMismatch { expected: String, got: String },
    #[error("token endpoint refused with HTTP {status}: {error}")]
    Refused { status: u16, error: String, description: Option<String> },
    /// DPoP (RFC 9449) could not be used with this issuer.
    #[error(transparent)]
    Dpop(#[from] dpop::DpopError),
    #[error("client authentication: {0}")]
    ClientAuth(client_auth::ClientAuthError),
}

/// Discovery metadata and keys once loaded.
#[derive(Debug)]
struct Loaded {
    metadata: Arc<Metadata>,
    expectations: Arc<Expectations>,
}

/// The issuer, as idgate knows it. Built once; loads itself in the background.
pub struct Provider {
    settings: OidcSettings,
    http: HttpClient,
    loaded: RwLock<Option<Loaded>>,
    keys: jwks::KeyCache,
    metrics: Arc<Metrics>,
    /// When the issuer last answered (tokio clock, ms since `started`); starts of logins re-check it when stale.
    last_answer_ms: std::sync::atomic::AtomicU64,
    started: tokio::time::Instant,
    /// DPoP proofs, nonces and the key (RFC 9449).
    dpop: dpop::Dpop,
    /// Dates what idgate signs for the issuer (client assertions, DPoP proofs): the gate's clock, so tests can move it.
    clock: Arc<dyn crate::clock::Clock>,
}

/// A login start re-checks an issuer it has not heard from for this long.
const REACHABLE_FOR: std::time::Duration = std::time::Duration::from_secs(5);

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("issuer", &self.settings.issuer).finish_non_exhaustive()
    }
}

impl Provider {
    /// A provider not yet loaded.
    pub fn new(settings: OidcSettings, http: HttpClient, metrics: Arc<Metrics>) -> Self {
        let keys = jwks::KeyCache::new(settings.jwks_refetch_interval);
        let dpop = dpop::Dpop::new(&settings.dpop, settings.forward_access_token);
        Self {
            dpop,
            settings,
            http,
            loaded: RwLock::new(None),
            keys,
            metrics,
            last_answer_ms: std::sync::atomic::AtomicU64::new(0),
            started: tokio::time::Instant::now(),
            clock: Arc::new(crate::clock::SystemClock),
        }
    }

    /// Dates what idgate signs for the issuer (client assertions, DPoP proofs) with `clock` instead of the system
    /// clock.
    pub fn with_clock(mut self, clock: Arc<dyn crate::clock::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The DPoP state (RFC 9449).
    pub fn dpop(&self) -> &dpop::Dpop {
        &self.dpop
    }

    /// The configured settings.
    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// Fetches discovery and keys once. `/readyz` is true after the first success.
    pub async fn load(&self) -> Result<(), ProviderError> {
        let metadata = discovery::fetch(self, &self.settings.issuer).await?;
        self.keys.refresh(self, &metadata.jwks_uri).await?;
        if self.settings.dpop.mode == dpop::DpopMode::On {
            match self.dpop.usable_with(metadata.dpop_signing_alg_values_supported.as_deref()) {
                Err(e) => tracing::warn!(error = %e, "oidc.dpop = true, but DPoP cannot be used with this issuer"),
                Ok(_) if metadata.dpop_signing_alg_values_supported.is_none() => tracing::warn!(
                    "oidc.dpop = true, but discovery lists no dpop_signing_alg_values_supported: the issuer may not bind tokens"
                ),
                Ok(alg) => tracing::debug!(alg, "DPoP proofs will be signed with this algorithm"),
            }
        }
        let expectations = Expectations {
            issuer: metadata.issuer.clone(),
            audiences: std::iter::once(self.settings.client_id.clone())
                .chain(self.settings.extra_audiences.iter().cloned())
                .collect(),
            allowed_algs: self.settings.allowed_algs.clone(),
            leeway: self.settings.leeway.as_secs() as i64,
        };
        if let Ok(mut slot) = self.loaded.write() {
            *slot = Some(Loaded { metadata: Arc::new(metadata), expectations: Arc::new(expectations) });
        }
        Ok(())
    }

    /// Loads in the background: retries with backoff until the first success, then refreshes the keys as their
    /// `Cache-Control: max-age` says (bounded). An issuer outage keeps the keys already loaded.
    pub fn spawn_loader(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut backoff = std::time::Duration::from_millis(200);
            loop {
                match this.load().await {
                    Ok(()) => {
                        tracing::info!(issuer = %this.settings.issuer, keys = this.keys.current().len(), "issuer discovery and keys loaded");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "issuer not loaded yet");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
                    }
                }
            }
            loop {
                tokio::time::sleep(this.keys.refresh_in()).await;
                if let Ok(m) = this.metadata()
                    && let Err(e) = this.keys.refresh(&this, &m.jwks_uri).await
                {
                    tracing::warn!(error = %e, "periodic JWKS refresh failed; keeping the keys we have");
                }
            }
        })
    }

    /// Fails when the issuer does not answer, so a new login gets a clear page instead of a browser error at the
    /// issuer's door. Answers seen in the last few seconds (any call) count; otherwise discovery is fetched again.
    pub async fn check_reachable(&self) -> Result<(), ProviderError> {
        use std::sync::atomic::Ordering::Relaxed;
        let now_ms = self.started.elapsed().as_millis() as u64;
        let last = self.last_answer_ms.load(Relaxed);
        if last != 0 && now_ms.saturating_sub(last) < REACHABLE_FOR.as_millis() as u64 {
            return Ok(());
        }
        self.get("discovery", &discovery::url_for(&self.settings.issuer)).await.map(|_| ())
    }

    /// True once discovery and keys are loaded.
    pub fn is_ready(&self) -> bool {
        self.loaded.read().map(|l| l.is_some()).unwrap_or(false)
    }

    /// The discovery metadata.
    pub fn metadata(&self) -> Result<Arc<Metadata>, ProviderError> {
        self.loaded.read().ok().and_then(|l| l.as_ref().map(|l| Arc::clone(&l.metadata))).ok_or(ProviderError::NotReady)
    }

    fn expectations(&self) -> Result<Arc<Expectations>, ProviderError> {
        self.loaded
            .read()
            .ok()
            .and_then(|l| l.as_ref().map(|l| Arc::clone(&l.expectations)))
            .ok_or(ProviderError::NotReady)
    }

    /// Validates an ID token from the token endpoint with the current keys; a `kid` we do not know causes one
    /// throttled, shared JWKS re-fetch and a second attempt. An encrypted ID token (R8) is decrypted first, here and
    /// only here, and its nested JWS validated like any other; that JWS is returned for the session to keep (as
    /// `id_token_hint`), never the JWE.
    pub async fn validate_id_token(
        &self,
        raw: &str,
        nonce: Option<&str>,
        now: i64,
    ) -> Result<(Claims, String), TokenError> {
        let jws = self.signed_token(raw, &self.settings.id_token_decryption)?;
        let claims = self.validate_with(&jws, |keys, want| id_token::validate(&jws, keys, want, nonce, now)).await?;
        Ok((claims, jws.into_owned()))
    }

    /// Validates a back-channel logout token the same way (keys, re-fetch), with the logout token's own rules. A
    /// logout token may be encrypted like the ID tokens (Back-Channel Logout 1.0 §2.4); it is never required to be.
    pub async fn validate_logout_token(&self, raw: &str, now: i64) -> Result<Claims, TokenError> {
        let decryption = id_token::Decryption { required: false, ..self.settings.id_token_decryption.clone() };
        let jws = self.signed_token(raw, &decryption)?;
        self.validate_with(&jws, |keys, want| id_token::validate_logout(&jws, keys, want, now)).await
    }

    /// The JWS inside `raw` (or `raw` itself), counted as a rejection when refused.
    fn signed_token<'a>(
        &self,
        raw: &'a str,
        decryption: &id_token::Decryption,
    ) -> Result<std::borrow::Cow<'a, str>, TokenError> {
        id_token::signed_token(raw, decryption).map_err(|r| {
            self.metrics.event(Event::Rejection(r.reason()));
            TokenError::Rejected(r)
        })
    }

    async fn validate_with(
        &self,
        raw: &str,
        check: impl Fn(&KeySet, &Expectations) -> Result<Claims, Rejection>,
    ) -> Result<Claims, TokenError> {
        let want = self.expectations()?;
        let result = match check(&self.keys.current(), &want) {
            Err(Rejection::UnknownKey) => {
                let kid = id_token::kid_of(raw, &want.allowed_algs).ok().flatten();
                let metadata = self.metadata()?;
                let keys = self.keys.for_unknown_kid(self, &metadata.jwks_uri, kid.as_deref()).await;
                check(&keys, &want)
            }
            other => other,
        };
        result.map_err(|r| {
            self.metrics.event(Event::Rejection(r.reason()));
            TokenError::Rejected(r)
        })
    }

    /// Sends `req` to the issuer and reads a bounded answer, all within the configured timeout; a child span of the
    /// request being traced, if any (endpoint, method, host and status: never the body or a header).
    async fn call(&self, what: &'static str, req: Request<body::Body>) -> Result<Answer, ProviderError> {
        let mut span = crate::telemetry::span::Child::start(span_name(what));
        if span.is_recording() {
            span.set("idgate.issuer.endpoint", || what);
            span.set("http.request.method", || req.method().to_string());
            span.set("server.address", || req.uri().host().unwrap_or_default().to_owned());
        }
        let answer = self.exchange(what, req).await;
        match &answer {
            Ok(a) => {
                span.set("http.response.status_code", || a.status.as_u16());
                if a.status.is_client_error() || a.status.is_server_error() {
                    span.fail();
                }
            }
            Err(_) => span.fail(),
        }
        answer
    }

    async fn exchange(&self, what: &'static str, req: Request<body::Body>) -> Result<Answer, ProviderError> {
        let unreachable = |why: String| ProviderError::Unreachable { what, why };
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status();
            if !status.is_server_error() {
                let ms = self.started.elapsed().as_millis().max(1) as u64;
                self.last_answer_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
            } else {
                self.last_answer_ms.store(0, std::sync::atomic::Ordering::Relaxed);
            }
            let cache_control =
                resp.headers().get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let (parts, incoming) = resp.into_parts();
            let body =
                body::collect_limited(incoming, MAX_RESPONSE_BYTES).await.map_err(|e| unreachable(e.to_string()))?;
            Ok(Answer { status, cache_control, headers: parts.headers, body })
        };
        let answer = tokio::time::timeout(self.settings.http_timeout, exchange)
            .await
            .map_err(|_| unreachable("timed out".into()));
        if answer.as_ref().map_or(true, |a| a.is_err()) {
            self.last_answer_ms.store(0, std::sync::atomic::Ordering::Relaxed);
        }
        answer?
    }

    /// GETs a document that must answer 2xx.
    async fn get(&self, what: &'static str, url: &str) -> Result<Answer, ProviderError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(url)
            .header(header::ACCEPT, "application/json")
            .body(body::empty())
            .map_err(|e| ProviderError::BadDocument { what, why: format!("bad URL: {e}") })?;
        let answer = self.call(what, req).await?;
        if !answer.status.is_success() {
            return Err(ProviderError::Status { what, status: answer.status.as_u16() });
        }
        Ok(answer)
    }

    /// The metrics sink.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The metrics sink, shared.
    pub fn metrics_sink(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The keys currently in use.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.current()
    }

    /// The keys to retry with after a token (an access token) named a `kid` the current keys lack: one throttled,
    /// shared JWKS re-fetch, as for ID tokens.
    pub async fn keys_for_unknown_kid(&self, kid: Option<&str>) -> Result<Arc<KeySet>, ProviderError> {
        let metadata = self.metadata()?;
        Ok(self.keys.for_unknown_kid(self, &metadata.jwks_uri, kid).await)
    }
}

/// The span of a call to the issuer's `what` (the endpoint names of [`ProviderError`]).
fn span_name(what: &'static str) -> &'static str {
    match what {
        "discovery" => "oidc discovery",
        "jwks_uri" => "oidc jwks",
        "token endpoint" => "oidc token",
        "userinfo endpoint" => "oidc userinfo",
        "introspection endpoint" => "oidc introspection",
        "revocation endpoint" => "oidc revocation",
        "PAR endpoint" => "oidc par",
        _ => "oidc call",
    }
}

/// An answer from the issuer.
struct Answer {
    status: StatusCode,
    cache_control: Option<String>,
    /// The whole head (DPoP reads `DPoP-Nonce` and `WWW-Authenticate`).
    headers: http::HeaderMap,
    body: Bytes,
}

impl dpop::Answered for Answer {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn headers(&self) -> &http::HeaderMap {
        &self.headers
    }
    fn body(&self) -> &[u8] {
        &self.body
    }
}

/// A token that could not be accepted: the issuer was not usable, or the token was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("ID token rejected: {0}")]
    Rejected(Rejection),
}

//! Typed, validated, immutable settings: one struct per section. Built from [`RawConfig`] by a pure function that
//! collects every problem before failing, so one run names every bad key.

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::PathBuf, time::Duration};

use http::HeaderName;
use ipnet::IpNet;
use jsonwebtoken::Algorithm;
use url::Url;

use super::{
    Problems,
    raw::{RawConfig, RawRoute},
};

/// A secret value (configured secrets, and the tokens and PKCE verifiers idgate holds): its `Debug` never prints
/// it. Serde reads and writes the bare value (sealed cookies, token endpoint answers).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Everything idgate needs to run, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub server: ServerSettings,
    pub admin: AdminSettings,
    pub upstream: UpstreamSettings,
    pub oidc: OidcSettings,
    pub session: SessionSettings,
    /// Upstream header → claim name, in the order written.
    pub headers: Vec<(HeaderName, String)>,
    pub routes: Vec<RouteSettings>,
    pub log: LogSettings,
    /// The signed identity assertion for the upstream (`[assertion]`).
    pub assertion: super::assertion::AssertionSettings,
    pub ext_authz: ExtAuthzSettings,
    /// OpenTelemetry traces (`[telemetry]`; off by default).
    pub telemetry: super::telemetry::TelemetrySettings,
    /// `[[providers]]`, in the order written; empty with `[oidc]` (then `oidc` is the one issuer; with
    /// `[[providers]]`, `oidc` is the first provider's, for what all providers share: the callback path).
    pub providers: Vec<super::providers::ProviderSettings>,
}

/// The public listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    /// Peers whose `X-Forwarded-*` / `Forwarded` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Path prefix of idgate's own endpoints (`/oauth2`).
    pub prefix: String,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

/// PEM files for HTTPS on the public listener.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The admin listener (`/healthz`, `/readyz`, `/metrics`).
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    pub listen: SocketAddr,
}

/// Where protected requests go.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    pub url: Url,
    pub connect_timeout: Duration,
    /// How long to wait for the upstream's response head.
    pub timeout: Duration,
    /// Protocols a client may switch to with `Upgrade` (lowercase); any other upgrade is refused with 400.
    pub allowed_upgrades: Vec<String>,
    /// Request headers removed from every request besides the built-in list (`identity`).
    pub strip_headers: Vec<HeaderName>,
    /// With `[[providers]]`: the header naming the session's provider (`upstream.issuer_header`); always stripped
    /// from clients.
    pub issuer_header: HeaderName,
}

/// The default `upstream.issuer_header`.
pub const DEFAULT_ISSUER_HEADER: &str = "x-auth-request-issuer";

/// The default `upstream.allowed_upgrades`.
pub const DEFAULT_UPGRADES: [&str; 1] = ["websocket"];

impl UpstreamSettings {
    /// `upstream.allowed_upgrades` when not configured.
    pub fn default_upgrades() -> Vec<String> {
        DEFAULT_UPGRADES.iter().map(|s| (*s).to_owned()).collect()
    }
}

/// How idgate authenticates itself at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    /// A JWT signed with the client's key (RFC 7523), `oidc.client_key_file`.
    PrivateKeyJwt,
}

/// The OpenID Provider and this client's registration there.
#[derive(Debug, Clone, PartialEq)]
pub struct OidcSettings {
    /// Exactly as configured; discovery's `issuer` must equal it.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub redirect_url: Url,
    pub scopes: Vec<String>,
    pub allowed_algs: Vec<Algorithm>,
    pub extra_audiences: Vec<String>,
    pub leeway: Duration,
    pub token_auth_method: TokenAuthMethod,
    pub http_timeout: Duration,
    /// Minimum time between two JWKS fetches caused by unknown `kid`s.
    pub jwks_refetch_interval: Duration,
    pub post_logout_redirect_url: Option<Url>,
    pub forward_access_token: bool,
    pub userinfo_claims: bool,
    /// Encrypted ID tokens (R8): decryption keys, allowed algorithms, and whether a plain JWS is refused.
    pub id_token_decryption: crate::id_token::Decryption,
    /// DPoP (RFC 9449): `oidc.dpop`, `oidc.dpop_key_file`.
    pub dpop: crate::oidc::dpop::DpopSettings,
    /// `private_key_jwt`: the client's signing key (also published at `{prefix}/jwks`).
    pub client_key: Option<crate::oidc::client_auth::ClientKey>,
    /// What the client assertion's `aud` names.
    pub client_assertion_audience: crate::oidc::client_auth::AssertionAudience,
    /// Send the authorization parameters by PAR (RFC 9126); used anyway when discovery requires it.
    pub par: bool,
    /// Bearer access tokens on API routes.
    pub bearer: BearerSettings,
}

/// Bearer access tokens on API routes (RFC 9068 JWTs; RFC 7662 introspection for opaque ones). Off while
/// `api_audiences` is empty.
#[derive(Debug, Clone, PartialEq)]
pub struct BearerSettings {
    /// `aud` must hold one of these (`oidc.api_audiences`); never the client id by default.
    pub api_audiences: Vec<String>,
    /// A JWT access token must say `typ: at+jwt` (RFC 9068 §2.1).
    pub typ_required: bool,
    /// Opaque (non-JWT) tokens are checked at the issuer's `introspection_endpoint`.
    pub introspect: bool,
    /// The longest an introspection answer is believed (never past the token's `exp`).
    pub introspection_cache: Duration,
}

impl Default for BearerSettings {
    /// Off.
    fn default() -> Self {
        Self {
            api_audiences: Vec::new(),
            typ_required: true,
            introspect: false,
            introspection_cache: Duration::from_secs(60),
        }
    }
}

impl BearerSettings {
    /// True when bearer access tokens are accepted at all.
    pub fn enabled(&self) -> bool {
        !self.api_audiences.is_empty()
    }
}

/// Where sessions are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    Cookie,
    Memory,
    /// The URL may carry a password: it is a [`Secret`], and `idgate check` prints it redacted.
    Redis {
        url: Secret,
    },
}

/// Default of `session.preserve_post_max_bytes`: 64 KiB.
pub const DEFAULT_PRESERVE_POST_MAX_BYTES: usize = 64 * 1024;
/// The most `session.preserve_post_max_bytes` may be: the kept body travels back inside an HTML page.
const MAX_PRESERVE_POST_BYTES: u64 = 1 << 20;
/// Default of `session.preserve_post_store_bytes`: 64 MiB of kept posts in the server-side store per process.
pub const DEFAULT_PRESERVE_POST_STORE_BYTES: usize = 64 << 20;

/// Session sealing and cookies.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    pub secret: Secret,
    pub previous_secrets: Vec<Secret>,
    pub cookie_name: String,
    pub cookie_secure: bool,
    pub cookie_domain: Option<String>,
    pub store: StoreKind,
    /// At most this many login flows (tabs logging in at once) are kept.
    pub max_flows: usize,
    /// Most sessions the memory store holds.
    pub memory_capacity: u64,
    /// Refresh this long before the ID token's `exp` (when a refresh token is kept).
    pub refresh_margin: Duration,
    /// Try `prompt=none` before an interactive login for navigations.
    pub silent_reauth: bool,
    /// Largest form post kept over a re-login (`login::preserved_post`); 0 turns the feature off.
    pub preserve_post_max_bytes: usize,
    /// Most bytes of kept posts this process holds in the server-side store at once (anyone can send a form post).
    pub preserve_post_store_bytes: usize,
}

impl SessionSettings {
    /// Settings with every default and this secret (the demo and tests start from here).
    pub fn with_secret(secret: Secret) -> Self {
        Self {
            secret,
            previous_secrets: Vec::new(),
            cookie_name: "idgate".into(),
            cookie_secure: true,
            cookie_domain: None,
            store: StoreKind::Cookie,
            max_flows: 3,
            memory_capacity: 100_000,
            refresh_margin: Duration::from_secs(60),
            silent_reauth: false,
            preserve_post_max_bytes: DEFAULT_PRESERVE_POST_MAX_BYTES,
            preserve_post_store_bytes: DEFAULT_PRESERVE_POST_STORE_BYTES,
        }
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A session is needed; browsers are sent to log in.
    Login,
    /// A session is needed; nobody is redirected (401 JSON).
    Api,
    /// No session needed; identity headers are still stripped.
    Public,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSettings {
    pub prefix: String,
    pub auth: AuthMode,
    pub email_domains: Vec<String>,
    pub email_verified: bool,
    pub any_of: BTreeMap<String, Vec<String>>,
    pub all_of: BTreeMap<String, Vec<String>>,
    /// `%2F` may stand in a path segment under this route (forwarded encoded), when the path read with `/` for
    /// it falls under the same route.
    pub allow_encoded_slashes: bool,
    /// `[[providers]]` names allowed here; empty: chosen by host, else all.
    pub providers: Vec<String>,
    /// The identity assertion's `aud` on this route (`None`: `assertion.audience`, else the request's host).
    pub audience: Option<String>,
    /// Scopes a bearer access token must all hold here (`[[routes]] scopes_all`).
    pub scopes_all: Vec<String>,
}

impl RouteSettings {
    /// A route with no claim requirements.
    pub fn new(prefix: &str, auth: AuthMode) -> Self {
        Self {
            prefix: prefix.into(),
            auth,
            email_domains: Vec::new(),
            email_verified: false,
            any_of: BTreeMap::new(),
            all_of: BTreeMap::new(),
            allow_encoded_slashes: false,
            providers: Vec::new(),
            audience: None,
            scopes_all: Vec::new(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// `[ext_authz]`: the gRPC listener for Envoy's `envoy.service.auth.v3.Authorization/Check` (off by default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtAuthzSettings {
    /// Where the gRPC service listens (h2c, or TLS with `tls`); `None`: not served.
    pub grpc_listen: Option<SocketAddr>,
    /// PEM files for TLS on the gRPC listener.
    pub grpc_tls: Option<TlsFiles>,
}

/// Logging.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `RUST_LOG`-style directive.
    pub level: String,
}

/// The default claim headers, the names oauth2-proxy users know.
pub const DEFAULT_HEADERS: [(&str, &str); 4] = [
    ("x-auth-request-user", "sub"),
    ("x-auth-request-email", "email"),
    ("x-auth-request-name", "name"),
    ("x-auth-request-preferred-username", "preferred_username"),
];

const DEFAULT_ALGS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

impl Settings {
    /// Validates a raw configuration, adding one problem per bad key to `problems`. Returns `None` when any problem
    /// was found (by this call or earlier ones).
    pub fn from_raw(raw: RawConfig, p: &mut Problems) -> Option<Settings> {
        let server = ServerSettings {
            listen: addr(p, "server.listen", raw.server.listen.as_deref().unwrap_or("0.0.0.0:4180")),
            tls: match (raw.server.tls_cert_file, raw.server.tls_key_file) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.into(), key: key.into() }),
                (None, None) => None,
                (Some(_), None) => p.bad("server.tls_key_file", "missing: tls_cert_file is set"),
                (None, Some(_)) => p.bad("server.tls_cert_file", "missing: tls_key_file is set"),
            },
            trusted_proxies: raw
                .server
                .trusted_proxies
                .unwrap_or_default()
                .iter()
                .enumerate()
                .filter_map(|(i, s)| cidr(p, &format!("server.trusted_proxies[{i}]"), s))
                .collect(),
            prefix: prefix(p, raw.server.prefix.as_deref().unwrap_or("/oauth2")),
            max_header_bytes: range(p, "server.max_header_bytes", raw.server.max_header_bytes, 16384, 8192, 1 << 20)
                as usize,
            header_read_timeout: secs(p, "server.header_read_timeout_secs", raw.server.header_read_timeout_secs, 10),
            idle_timeout: secs(p, "server.idle_timeout_secs", raw.server.idle_timeout_secs, 60),
            max_connections: range(p, "server.max_connections", raw.server.max_connections, 16384, 1, 1 << 20) as usize,
            shutdown_grace: secs(p, "server.shutdown_grace_secs", raw.server.shutdown_grace_secs, 25),
        };
        let admin =
            AdminSettings { listen: addr(p, "admin.listen", raw.admin.listen.as_deref().unwrap_or("127.0.0.1:9180")) };
        if admin.listen == server.listen {
            p.add("admin.listen", "must differ from server.listen: the admin endpoints are never public");
        }
        let upstream = UpstreamSettings {
            url: match raw.upstream.url.as_deref() {
                Some(u) => http_url(p, "upstream.url", u).unwrap_or_else(placeholder_url),
                None => p.missing("upstream.url").unwrap_or_else(placeholder_url),
            },
            connect_timeout: secs(p, "upstream.connect_timeout_secs", raw.upstream.connect_timeout_secs, 5),
            timeout: secs(p, "upstream.timeout_secs", raw.upstream.timeout_secs, 60),
            allowed_upgrades: upgrades(p, raw.upstream.allowed_upgrades),
            strip_headers: strip_headers(p, raw.upstream.strip_headers.unwrap_or_default()),
            issuer_header: issuer_header(p, raw.upstream.issuer_header),
        };
        let (oidc, providers) = super::providers::from_raw(p, raw.oidc, raw.providers);
        let session = session(p, raw.session);
        let headers = match raw.headers {
            None => DEFAULT_HEADERS.iter().map(|(h, c)| (HeaderName::from_static(h), (*c).to_owned())).collect(),
            Some(map) => map
                .into_iter()
                .filter_map(|(h, claim)| {
                    let key = format!("headers.{h}");
                    if claim.is_empty() {
                        return p.bad(&key, "claim name is empty");
                    }
                    match HeaderName::try_from(h.as_str()) {
                        Ok(name) if is_reserved_header(&name) => {
                            p.bad(&key, "this header is managed by the proxy and cannot carry a claim")
                        }
                        Ok(name) => Some((name, claim)),
                        Err(_) => p.bad(&key, "not a valid HTTP header name"),
                    }
                })
                .collect(),
        };
        let routes: Vec<RouteSettings> =
            raw.routes.into_iter().enumerate().filter_map(|(i, r)| route(p, i, r)).collect();
        super::providers::check_routes(p, &routes, &providers);
        let log = LogSettings {
            format: match raw.log.format.as_deref().unwrap_or("json") {
                "json" => LogFormat::Json,
                "text" => LogFormat::Text,
                other => {
                    p.add("log.format", format!("{other:?}: expected \"json\" or \"text\""));
                    LogFormat::Json
                }
            },
            level: raw.log.level.unwrap_or_else(|| "info".into()),
        };
        let assertion = super::assertion::settings(p, raw.assertion);
        let ext_authz = ext_authz(p, raw.ext_authz, &[server.listen, admin.listen]);
        let telemetry = super::telemetry::settings(p, raw.telemetry);
        let (oidc, session) = (oidc?, session?);
        if !p.is_empty() {
            return None;
        }
        Some(Settings {
            server,
            admin,
            upstream,
            oidc,
            session,
            headers,
            routes,
            log,
            assertion,
            ext_authz,
            telemetry,
            providers,
        })
    }

    /// Whether idgate's own answers carry `Strict-Transport-Security`: when it serves TLS itself, or when its
    /// cookies are `Secure` (then browsers reach it over HTTPS through a TLS-terminating proxy; a browser ignores
    /// the header on a plain-HTTP answer).
    pub fn hsts(&self) -> bool {
        self.server.tls.is_some() || self.session.cookie_secure
    }

    /// The callback path, taken from `oidc.redirect_url`.
    pub fn callback_path(&self) -> &str {
        self.oidc.redirect_url.path()
    }
}

pub(super) fn oidc(p: &mut Problems, raw: super::raw::RawOidc) -> Option<OidcSettings> {
    let issuer = match raw.issuer {
        Some(i) => {
            // The issuer is compared exactly, so it is kept as written; it must still be an https (or loopback
            // http) URL without query or fragment (OpenID Connect Discovery §4.3).
            if let Some(u) = http_url(p, "oidc.issuer", &i)
                && (u.query().is_some() || u.fragment().is_some())
            {
                p.add("oidc.issuer", "must not have a query or fragment");
            }
            i
        }
        None => p.missing("oidc.issuer").unwrap_or_default(),
    };
    let client_id = raw.client_id.filter(|c| !c.is_empty()).or_else(|| p.missing("oidc.client_id"));
    let redirect_url = match raw.redirect_url {
        Some(r) => http_url(p, "oidc.redirect_url", &r),
        None => p.missing("oidc.redirect_url"),
    };
    let allowed_algs = match raw.allowed_algs {
        None => DEFAULT_ALGS.to_vec(),
        Some(list) if list.is_empty() => {
            p.bad("oidc.allowed_algs", "must name at least one algorithm").unwrap_or_default()
        }
        Some(list) => list.iter().filter_map(|a| alg(p, a)).collect(),
    };
    let scopes = raw.scopes.unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        p.add("oidc.scopes", "must include \"openid\"");
    }
    let token_auth_method = match raw.token_auth_method.as_deref().unwrap_or("client_secret_basic") {
        "client_secret_basic" => TokenAuthMethod::ClientSecretBasic,
        "client_secret_post" => TokenAuthMethod::ClientSecretPost,
        "private_key_jwt" => TokenAuthMethod::PrivateKeyJwt,
        other => {
            p.add(
                "oidc.token_auth_method",
                format!("{other:?}: expected client_secret_basic, client_secret_post or private_key_jwt"),
            );
            TokenAuthMethod::ClientSecretBasic
        }
    };
    let post_logout_redirect_url =
        raw.post_logout_redirect_url.and_then(|u| http_url(p, "oidc.post_logout_redirect_url", &u));
    let leeway = secs(p, "oidc.leeway_secs", raw.leeway_secs, 60);
    if leeway > Duration::from_secs(300) {
        p.add("oidc.leeway_secs", "at most 300: a larger leeway keeps expired tokens alive");
    }
    let (client_key, client_assertion_audience) = client_key(
        p,
        token_auth_method,
        raw.client_secret.is_some(),
        raw.client_key_file,
        raw.client_key_alg,
        raw.client_assertion_audience,
    );
    Some(OidcSettings {
        issuer,
        client_id: client_id?,
        client_secret: raw.client_secret.map(Secret),
        redirect_url: redirect_url?,
        scopes,
        allowed_algs,
        extra_audiences: raw.extra_audiences.unwrap_or_default(),
        leeway,
        token_auth_method,
        http_timeout: secs(p, "oidc.http_timeout_secs", raw.http_timeout_secs, 10),
        jwks_refetch_interval: secs(p, "oidc.jwks_refetch_interval_secs", raw.jwks_refetch_interval_secs, 10),
        post_logout_redirect_url,
        forward_access_token: raw.forward_access_token.unwrap_or(false),
        userinfo_claims: raw.userinfo_claims.unwrap_or(false),
        id_token_decryption: decryption(
            p,
            raw.id_token_decryption_key_file,
            raw.require_encrypted_id_token,
            raw.id_token_encryption_algs,
            raw.id_token_encryption_encs,
        ),
        dpop: dpop(p, raw.dpop, raw.dpop_key_file, raw.forward_access_token),
        bearer: bearer(
            p,
            raw.api_audiences,
            raw.access_token_typ_required,
            raw.introspect_opaque_tokens,
            raw.introspection_cache_secs,
        ),
        client_key,
        client_assertion_audience,
        par: raw.par.unwrap_or(false),
    })
}

/// `oidc.dpop` and `oidc.dpop_key_file`. The key is read here, so a bad key is a configuration error; DPoP with
/// `oidc.forward_access_token` is refused: a DPoP-bound access token is useless to an upstream without the key.
fn dpop(
    p: &mut Problems,
    mode: Option<bool>,
    key_file: Option<String>,
    forward_access_token: Option<bool>,
) -> crate::oidc::dpop::DpopSettings {
    use crate::oidc::dpop::{DpopKey, DpopMode, DpopSettings};
    const KEY: &str = "oidc.dpop_key_file";
    let mode = match mode {
        None => DpopMode::Auto,
        Some(true) => DpopMode::On,
        Some(false) => DpopMode::Off,
    };
    if mode == DpopMode::On && forward_access_token == Some(true) {
        p.add(
            "oidc.dpop",
            "cannot be combined with oidc.forward_access_token = true: a DPoP-bound access token is useless to the \
             upstream without idgate's key",
        );
    }
    if mode == DpopMode::Off && key_file.is_some() {
        p.add(KEY, "is set, but oidc.dpop = false");
    }
    let key = key_file.and_then(|path| match std::fs::read(&path) {
        Err(e) => p.bad(KEY, &format!("cannot read {path:?}: {e}")),
        Ok(bytes) => match DpopKey::from_pem(&bytes) {
            Ok(k) => Some(k),
            Err(e) => p.bad(KEY, &format!("{path:?}: {e}")),
        },
    });
    DpopSettings { mode, key }
}

/// `oidc.api_audiences` and its companions.
fn bearer(
    p: &mut Problems,
    audiences: Option<Vec<String>>,
    typ_required: Option<bool>,
    introspect: Option<bool>,
    cache_secs: Option<u64>,
) -> BearerSettings {
    let api_audiences = audiences.unwrap_or_default();
    if api_audiences.iter().any(|a| a.trim().is_empty()) {
        p.add("oidc.api_audiences", "an audience is empty");
    }
    let introspect = introspect.unwrap_or(false);
    if introspect && api_audiences.is_empty() {
        p.add("oidc.introspect_opaque_tokens", "needs oidc.api_audiences (bearer access is off without it)");
    }
    BearerSettings {
        api_audiences,
        typ_required: typ_required.unwrap_or(true),
        introspect,
        introspection_cache: Duration::from_secs(range(p, "oidc.introspection_cache_secs", cache_secs, 60, 1, 3600)),
    }
}

/// `oidc.client_key_file` and its companions (`private_key_jwt`): the key is read and parsed here, so a bad key is
/// a configuration error naming the key. A secret beside the key, or a key without the method, is refused: one
/// client authenticates one way.
fn client_key(
    p: &mut Problems,
    method: TokenAuthMethod,
    has_secret: bool,
    key_file: Option<String>,
    alg: Option<String>,
    audience: Option<String>,
) -> (Option<crate::oidc::client_auth::ClientKey>, crate::oidc::client_auth::AssertionAudience) {
    use crate::{
        oidc::client_auth::{AssertionAudience, ClientKey},
        signing::SigningAlg,
    };
    const KEY: &str = "oidc.client_key_file";
    let jwt = method == TokenAuthMethod::PrivateKeyJwt;
    let alg = alg.and_then(|a| {
        SigningAlg::from_name(&a)
            .or_else(|| p.bad("oidc.client_key_alg", &format!("{a:?}: expected RS256, PS256 or ES256")))
    });
    let key = match key_file {
        None if jwt => p.bad(KEY, "missing: token_auth_method is private_key_jwt"),
        None => None,
        Some(_) if !jwt => p.bad(KEY, "set, but token_auth_method is not private_key_jwt (the key would sign nothing)"),
        Some(path) => ClientKey::from_file(&path, alg).map_err(|why| p.add(KEY, why)).ok(),
    };
    if jwt && has_secret {
        p.add(
            "oidc.client_secret",
            "must not be set with token_auth_method = private_key_jwt: the client authenticates with its key \
             (remove client_secret / client_secret_file)",
        );
    }
    let audience = match audience.as_deref() {
        None | Some("issuer") => AssertionAudience::Issuer,
        Some("token_endpoint") => AssertionAudience::TokenEndpoint,
        Some(other) => {
            p.add("oidc.client_assertion_audience", format!("{other:?}: expected \"issuer\" or \"token_endpoint\""));
            AssertionAudience::Issuer
        }
    };
    (key, audience)
}

/// `oidc.id_token_decryption_key_file` and its companions: the key file is read and parsed here, so a bad key is a
/// configuration error naming the key, not a failed login.
fn decryption(
    p: &mut Problems,
    key_file: Option<String>,
    required: Option<bool>,
    algs: Option<Vec<String>>,
    encs: Option<Vec<String>>,
) -> crate::id_token::Decryption {
    use crate::id_token::jwe::{Allowed, ContentEnc, DecryptionKeys, KeyAlg};
    const KEY: &str = "oidc.id_token_decryption_key_file";
    let keys = key_file.and_then(|path| match std::fs::read(&path) {
        Err(e) => p.bad(KEY, &format!("cannot read {}: {e}", crate::config::path_shown(&path))),
        Ok(bytes) => match DecryptionKeys::from_file_contents(&bytes) {
            Ok(k) => Some(std::sync::Arc::new(k)),
            Err(e) => p.bad(KEY, &format!("{}: {e}", crate::config::path_shown(&path))),
        },
    });
    let required = required.unwrap_or(false);
    if required && keys.is_none() {
        p.add("oidc.require_encrypted_id_token", format!("needs {KEY}"));
    }
    let mut allowed = Allowed::default();
    if let Some(list) = algs {
        let key = "oidc.id_token_encryption_algs";
        if list.is_empty() {
            p.add(key, "must name at least one algorithm");
        }
        allowed.algs = list
            .iter()
            .filter_map(|a| match a.as_str() {
                "RSA1_5" => p.bad(key, "RSA1_5 is refused: RSAES-PKCS1-v1_5 invites padding-oracle attacks"),
                "dir" => p.bad(key, "dir is refused: idgate shares no content key with the issuer"),
                other => KeyAlg::from_name(other).or_else(|| {
                    p.bad(
                        key,
                        &format!(
                            "{other:?}: expected RSA-OAEP, RSA-OAEP-256, ECDH-ES, ECDH-ES+A128KW or ECDH-ES+A256KW"
                        ),
                    )
                }),
            })
            .collect();
    }
    if let Some(list) = encs {
        let key = "oidc.id_token_encryption_encs";
        if list.is_empty() {
            p.add(key, "must name at least one algorithm");
        }
        allowed.encs = list
            .iter()
            .filter_map(|e| {
                ContentEnc::from_name(e).or_else(|| {
                    p.bad(key, &format!("{e:?}: expected A128CBC-HS256, A256CBC-HS512, A128GCM or A256GCM"))
                })
            })
            .collect();
    }
    crate::id_token::Decryption { keys, allowed, required }
}

fn session(p: &mut Problems, raw: super::raw::RawSession) -> Option<SessionSettings> {
    let secret = match raw.secret {
        Some(s) => strong_secret(p, "session.secret", s),
        None => p.missing("session.secret"),
    };
    let previous_secrets = raw
        .previous_secrets
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| strong_secret(p, &format!("session.previous_secrets[{i}]"), s))
        .collect();
    let cookie_name = raw.cookie_name.unwrap_or_else(|| "idgate".into());
    if cookie_name.is_empty() || cookie_name.len() > 64 || !cookie_name.bytes().all(is_token_char) {
        p.add("session.cookie_name", "must be 1-64 letters, digits, '-' or '_'");
    }
    let store = match raw.store.as_deref().unwrap_or("cookie") {
        "cookie" => StoreKind::Cookie,
        "memory" => StoreKind::Memory,
        "redis" => match raw.redis_url {
            // Sentinel and Cluster forms too: config/redis_url.rs (its reasons never repeat the URL).
            Some(url) => match super::redis_url::parse(&url) {
                Ok(_) => StoreKind::Redis { url: Secret(url) },
                Err(e) => p.bad("session.redis_url", &e.to_string()).unwrap_or(StoreKind::Cookie),
            },
            None => p.bad("session.redis_url", "missing: session.store is \"redis\"").unwrap_or(StoreKind::Cookie),
        },
        other => p
            .bad("session.store", &format!("{other:?}: expected \"cookie\", \"memory\" or \"redis\""))
            .unwrap_or(StoreKind::Cookie),
    };
    Some(SessionSettings {
        secret: secret?,
        previous_secrets,
        cookie_name,
        cookie_secure: raw.cookie_secure.unwrap_or(true),
        cookie_domain: raw.cookie_domain.and_then(|d| cookie_domain(p, d)),
        store,
        max_flows: range(p, "session.max_flows", raw.max_flows, 3, 1, 10) as usize,
        memory_capacity: range(p, "session.memory_capacity", raw.memory_capacity, 100_000, 1, 100_000_000),
        refresh_margin: secs(p, "session.refresh_margin_secs", raw.refresh_margin_secs, 60),
        silent_reauth: raw.silent_reauth.unwrap_or(false),
        preserve_post_max_bytes: range(
            p,
            "session.preserve_post_max_bytes",
            raw.preserve_post_max_bytes,
            DEFAULT_PRESERVE_POST_MAX_BYTES as u64,
            0,
            MAX_PRESERVE_POST_BYTES,
        ) as usize,
        preserve_post_store_bytes: range(
            p,
            "session.preserve_post_store_bytes",
            raw.preserve_post_store_bytes,
            DEFAULT_PRESERVE_POST_STORE_BYTES as u64,
            0,
            1 << 40,
        ) as usize,
    })
}

fn route(p: &mut Problems, i: usize, raw: RawRoute) -> Option<RouteSettings> {
    let key = |k: &str| format!("routes[{i}].{k}");
    let prefix = match raw.prefix {
        Some(pre) if pre.starts_with('/') && !pre.contains(['?', '#', '%']) && !pre.contains("//") => pre,
        Some(_) => return p.bad(&key("prefix"), "must be a plain path starting with '/' (no '?', '#', '%', '//')"),
        None => return p.missing(&key("prefix")),
    };
    let auth = match raw.auth.as_deref().unwrap_or("login") {
        "login" => AuthMode::Login,
        "api" => AuthMode::Api,
        "public" => AuthMode::Public,
        other => return p.bad(&key("auth"), &format!("{other:?}: expected \"login\", \"api\" or \"public\"")),
    };
    let email_domains: Vec<String> =
        raw.email_domains.unwrap_or_default().into_iter().map(|d| d.to_ascii_lowercase()).collect();
    if email_domains.iter().any(|d| d.is_empty() || d.contains('@')) {
        p.add(&key("email_domains"), "each entry is a bare domain such as example.com");
    }
    let any_of = raw.any_of.unwrap_or_default();
    let all_of = raw.all_of.unwrap_or_default();
    let has_rules = !email_domains.is_empty()
        || raw.email_verified.is_some()
        || !any_of.is_empty()
        || !all_of.is_empty()
        || raw.scopes_all.as_ref().is_some_and(|s| !s.is_empty());
    if auth == AuthMode::Public && has_rules {
        p.add(&key("auth"), "a public route cannot have claim requirements");
    }
    Some(RouteSettings {
        prefix,
        auth,
        email_domains,
        email_verified: raw.email_verified.unwrap_or(false),
        any_of,
        all_of,
        allow_encoded_slashes: raw.allow_encoded_slashes.unwrap_or(false),
        providers: raw.providers.unwrap_or_default(),
        audience: match raw.audience {
            Some(a) if a.trim().is_empty() || a.chars().any(char::is_control) => {
                p.bad(&key("audience"), "must be a non-empty string")
            }
            other => other,
        },
        scopes_all: {
            let scopes = raw.scopes_all.unwrap_or_default();
            if scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
                p.add(&key("scopes_all"), "each entry is one scope name (no spaces)");
            }
            scopes
        },
    })
}

fn upgrades(p: &mut Problems, raw: Option<Vec<String>>) -> Vec<String> {
    let Some(list) = raw else { return UpstreamSettings::default_upgrades() };
    let key = "upstream.allowed_upgrades";
    list.into_iter()
        .filter_map(|proto| {
            let lower = proto.trim().to_ascii_lowercase();
            if lower == "h2c" || lower.starts_with("h2c/") {
                return p.bad(
                    key,
                    "\"h2c\" is never allowed: an HTTP/2 connection tunnelled past idgate would carry requests it never sees",
                );
            }
            if lower.is_empty() || !lower.bytes().all(|b| is_token_char(b) || b"!#$%&'*+.^`|~".contains(&b)) {
                return p.bad(key, &format!("{proto:?}: not a protocol name such as \"websocket\""));
            }
            Some(lower)
        })
        .collect()
}

fn strip_headers(p: &mut Problems, list: Vec<String>) -> Vec<HeaderName> {
    list.into_iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let key = format!("upstream.strip_headers[{i}]");
            match HeaderName::try_from(name.as_str()) {
                Ok(h) if matches!(h.as_str(), "host" | "content-length" | "transfer-encoding") => {
                    p.bad(&key, "the request cannot be forwarded without this header")
                }
                Ok(h) => Some(h),
                Err(_) => p.bad(&key, &format!("{name:?}: not a valid HTTP header name")),
            }
        })
        .collect()
}

/// `upstream.issuer_header`: any valid name but those the request is framed or routed by, and not `Cookie`.
fn issuer_header(p: &mut Problems, name: Option<String>) -> HeaderName {
    let default = HeaderName::from_static(DEFAULT_ISSUER_HEADER);
    let Some(name) = name else { return default };
    let key = "upstream.issuer_header";
    match HeaderName::try_from(name.as_str()) {
        Ok(h) if matches!(h.as_str(), "host" | "content-length" | "transfer-encoding" | "connection" | "cookie") => {
            p.bad(key, "idgate needs this header for itself").unwrap_or(default)
        }
        Ok(h) => h,
        Err(_) => p.bad(key, &format!("{name:?}: not a valid HTTP header name")).unwrap_or(default),
    }
}

// === field helpers: each adds a problem naming the key and returns a usable placeholder ===

fn addr(p: &mut Problems, key: &str, value: &str) -> SocketAddr {
    value.parse().unwrap_or_else(|_| {
        p.add(key, format!("{value:?}: not an IP:port address"));
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

fn cidr(p: &mut Problems, key: &str, value: &str) -> Option<IpNet> {
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| p.add(key, format!("{value:?}: not a CIDR or IP address")))
        .ok()
}

fn http_url(p: &mut Problems, key: &str, value: &str) -> Option<Url> {
    match Url::parse(value) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => Some(u),
        Ok(_) => p.bad(key, &format!("{value:?}: not an absolute http(s) URL")),
        Err(e) => p.bad(key, &format!("{value:?}: not an absolute URL ({e})")),
    }
}

#[allow(clippy::expect_used, reason = "static URL")]
fn placeholder_url() -> Url {
    Url::parse("http://127.0.0.1/").expect("static URL parses")
}

/// `server.prefix` ends up in `Location` headers and in the flow cookies' `Path=` attribute: a plain path of
/// unreserved characters and `/` only, so that no value can split a header or add a cookie attribute.
fn prefix(p: &mut Problems, value: &str) -> String {
    let chars_ok = value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~'));
    let segments_ok = value.split('/').skip(1).all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    let ok = value.starts_with('/') && value.len() > 1 && chars_ok && segments_ok;
    if !ok {
        p.add(
            "server.prefix",
            format!(
                "{value:?}: must look like /oauth2 (leading '/', no trailing or double '/', no '.' or '..' segment; \
                 letters, digits, '-', '.', '_', '~' and '/' only)"
            ),
        );
    }
    value.to_owned()
}

/// `session.cookie_domain` is written into every `Set-Cookie` as `Domain=`: a host name (letters, digits, '-' and
/// dots; one leading dot allowed, as browsers ignore it) and nothing else, so that no value can break the header
/// or inject an attribute (`; SameSite=None`).
fn cookie_domain(p: &mut Problems, value: String) -> Option<String> {
    let name = value.strip_prefix('.').unwrap_or(&value);
    let labels_ok = name.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if name.is_empty() || name.len() > 253 || !labels_ok {
        return p.bad(
            "session.cookie_domain",
            &format!("{value:?}: must be a host name such as example.com (letters, digits, '-' and '.' only)"),
        );
    }
    Some(value)
}

fn secs(p: &mut Problems, key: &str, value: Option<u64>, default: u64) -> Duration {
    Duration::from_secs(range(p, key, value, default, 1, 86_400))
}

fn range(p: &mut Problems, key: &str, value: Option<u64>, default: u64, min: u64, max: u64) -> u64 {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        p.add(key, format!("{v}: must be between {min} and {max}"));
        return default;
    }
    v
}

fn alg(p: &mut Problems, value: &str) -> Option<Algorithm> {
    use Algorithm::*;
    let alg = match value {
        "RS256" => RS256,
        "RS384" => RS384,
        "RS512" => RS512,
        "PS256" => PS256,
        "PS384" => PS384,
        "PS512" => PS512,
        "ES256" => ES256,
        "ES384" => ES384,
        "EdDSA" => EdDSA,
        "none" | "HS256" | "HS384" | "HS512" => {
            return p.bad(
                "oidc.allowed_algs",
                &format!("{value:?} is never allowed: ID tokens must be signed with the issuer's asymmetric key"),
            );
        }
        other => {
            return p.bad(
                "oidc.allowed_algs",
                &format!("{other:?}: unsupported (RS256/384/512, PS256/384/512, ES256/384, EdDSA)"),
            );
        }
    };
    Some(alg)
}

fn strong_secret(p: &mut Problems, key: &str, value: String) -> Option<Secret> {
    use base64::Engine;
    let value = value.trim().to_owned();
    let decoded_len = [base64::engine::general_purpose::STANDARD, base64::engine::general_purpose::URL_SAFE]
        .iter()
        .find_map(|e| e.decode(&value).ok())
        .or_else(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&value).ok())
        .map(|b| b.len());
    if decoded_len.unwrap_or(value.len()) < 32 {
        return p.bad(key, "too short: use 32 random bytes or more (`idgate gen-secret`)");
    }
    Some(Secret(value))
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Headers idgate itself manages and a claim mapping may not overwrite.
fn is_reserved_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(n, "host" | "cookie" | "authorization" | "content-length" | "transfer-encoding" | "connection" | "upgrade")
        || n.starts_with("x-forwarded-")
        || n == "forwarded"
}

/// `[ext_authz]`: the gRPC listener must not share an address with the public or admin listener.
fn ext_authz(p: &mut Problems, raw: super::raw::RawExtAuthz, taken: &[SocketAddr]) -> ExtAuthzSettings {
    let grpc_listen = raw.grpc_listen.as_deref().map(|a| addr(p, "ext_authz.grpc_listen", a));
    if let Some(a) = grpc_listen
        && taken.contains(&a)
    {
        p.add("ext_authz.grpc_listen", "must differ from server.listen and admin.listen");
    }
    let grpc_tls = match (raw.grpc_tls_cert_file, raw.grpc_tls_key_file) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.into(), key: key.into() }),
        (None, None) => None,
        (Some(_), None) => p.bad("ext_authz.grpc_tls_key_file", "missing: grpc_tls_cert_file is set"),
        (None, Some(_)) => p.bad("ext_authz.grpc_tls_cert_file", "missing: grpc_tls_key_file is set"),
    };
    ExtAuthzSettings { grpc_listen, grpc_tls }
}

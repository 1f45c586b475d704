//! The configuration as written: serde structs that mirror the file and the `IDGATE_*` environment, with unknown
//! keys refused. Nothing here is validated beyond its type; [`super::settings`] turns it into typed settings.
//! `Serialize` lets a test list every key, so the README's reference cannot miss one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole file. Every section is optional so that a missing section is reported as missing keys, together with
/// every other problem, rather than as one serde error.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub oidc: RawOidc,
    #[serde(default)]
    pub session: RawSession,
    /// Upstream header name → claim name.
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub log: RawLog,
    /// The signed identity assertion for the upstream.
    #[serde(default)]
    pub assertion: RawAssertion,
    #[serde(default)]
    pub ext_authz: RawExtAuthz,
    /// OpenTelemetry traces (OTLP/HTTP).
    #[serde(default)]
    pub telemetry: RawTelemetry,
    /// `[[providers]]`: several issuers, instead of `[oidc]`.
    #[serde(default)]
    pub providers: Vec<RawProvider>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub prefix: Option<String>,
    pub max_header_bytes: Option<u64>,
    pub header_read_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub max_connections: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Option<String>,
    pub connect_timeout_secs: Option<u64>,
    pub timeout_secs: Option<u64>,
    pub allowed_upgrades: Option<Vec<String>>,
    pub strip_headers: Option<Vec<String>>,
    pub issuer_header: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    pub redirect_url: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub allowed_algs: Option<Vec<String>>,
    pub extra_audiences: Option<Vec<String>>,
    pub leeway_secs: Option<u64>,
    pub token_auth_method: Option<String>,
    pub http_timeout_secs: Option<u64>,
    pub jwks_refetch_interval_secs: Option<u64>,
    pub post_logout_redirect_url: Option<String>,
    pub forward_access_token: Option<bool>,
    pub userinfo_claims: Option<bool>,
    /// idgate's private key(s) for encrypted ID tokens (R8): PEM or a JWK set.
    pub id_token_decryption_key_file: Option<String>,
    pub require_encrypted_id_token: Option<bool>,
    pub id_token_encryption_algs: Option<Vec<String>>,
    pub id_token_encryption_encs: Option<Vec<String>>,
    /// DPoP (RFC 9449): `true` always, `false` never, unset when the issuer demands it.
    pub dpop: Option<bool>,
    /// The DPoP key (PEM); generated at start when unset.
    pub dpop_key_file: Option<String>,
    /// Bearer access tokens on API routes: the audiences accepted (turns bearer access on).
    pub api_audiences: Option<Vec<String>>,
    pub access_token_typ_required: Option<bool>,
    pub introspect_opaque_tokens: Option<bool>,
    pub introspection_cache_secs: Option<u64>,
    /// `private_key_jwt`: the client's private key (PEM) and its algorithm; what the assertion's `aud` names.
    pub client_key_file: Option<String>,
    pub client_key_alg: Option<String>,
    pub client_assertion_audience: Option<String>,
    /// Pushed authorization requests (RFC 9126).
    pub par: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub secret: Option<String>,
    pub secret_file: Option<String>,
    pub previous_secrets: Option<Vec<String>>,
    pub cookie_name: Option<String>,
    pub cookie_secure: Option<bool>,
    pub cookie_domain: Option<String>,
    pub store: Option<String>,
    pub redis_url: Option<String>,
    pub max_flows: Option<u64>,
    pub memory_capacity: Option<u64>,
    pub refresh_margin_secs: Option<u64>,
    pub silent_reauth: Option<bool>,
    pub preserve_post_max_bytes: Option<u64>,
    pub preserve_post_store_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub prefix: Option<String>,
    pub auth: Option<String>,
    pub email_domains: Option<Vec<String>>,
    pub email_verified: Option<bool>,
    /// Claim name → values; the claim must hold at least one of them.
    pub any_of: Option<BTreeMap<String, Vec<String>>>,
    /// Claim name → values; the claim must hold all of them.
    pub all_of: Option<BTreeMap<String, Vec<String>>>,
    /// `%2F` may stand in a path segment under this route (kept encoded).
    pub allow_encoded_slashes: Option<bool>,
    /// `[[providers]]` names allowed on this route.
    pub providers: Option<Vec<String>>,
    /// The identity assertion's `aud` for this route.
    pub audience: Option<String>,
    /// Scopes a bearer access token must all hold on this route.
    pub scopes_all: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAssertion {
    pub enabled: Option<bool>,
    pub header: Option<String>,
    pub key_file: Option<String>,
    /// `RS256` or `PS256` for an RSA key; an EC P-256 key signs `ES256`.
    pub alg: Option<String>,
    pub previous_key_files: Option<Vec<String>>,
    pub lifetime_secs: Option<u64>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub claims: Option<Vec<String>>,
}

/// `[ext_authz]`: Envoy's external authorization over gRPC.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawExtAuthz {
    pub grpc_listen: Option<String>,
    pub grpc_tls_cert_file: Option<String>,
    pub grpc_tls_key_file: Option<String>,
}

/// `[telemetry]`: OpenTelemetry traces over OTLP/HTTP (protobuf).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    pub otlp_endpoint: Option<String>,
    /// Header name → value, sent with every export (a collector's API key).
    pub otlp_headers: Option<BTreeMap<String, String>>,
    pub service_name: Option<String>,
}

/// One `[[providers]]` entry: its name, title and hosts, and every `[oidc]` key (parsed by the same code).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub name: Option<String>,
    pub title: Option<String>,
    pub hosts: Option<Vec<String>>,
    #[serde(flatten)]
    pub oidc: RawOidc,
}

//! OpenID Connect Discovery: `ISSUER/.well-known/openid-configuration`, whose `issuer` must equal the configured
//! issuer exactly (Discovery §4.3) — the value every ID token's `iss` is then compared with.

use serde::Deserialize;

use super::{Provider, ProviderError};

/// The parts of the discovery document idgate uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// RFC 7009: where sign-out revokes the refresh token.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// RFC 9207: the issuer sends `iss` with every authorization response, so one without it is refused.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// RFC 7662: where opaque access tokens are introspected (`oidc.introspect_opaque_tokens`).
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
    /// RFC 9126: where authorization parameters are pushed, and whether the issuer accepts only pushed ones.
    #[serde(default)]
    pub pushed_authorization_request_endpoint: Option<String>,
    #[serde(default)]
    pub require_pushed_authorization_requests: bool,
    /// Client authentication at the token endpoint (default `client_secret_basic` when absent, per Discovery §3).
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    pub token_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
    /// Encrypted ID tokens (R8): what the issuer can encrypt with (`idgate check` compares with the key given).
    #[serde(default)]
    pub id_token_encryption_alg_values_supported: Option<Vec<String>>,
    #[serde(default)]
    pub id_token_encryption_enc_values_supported: Option<Vec<String>>,
    /// RFC 9449: the issuer accepts DPoP proofs signed with these.
    #[serde(default)]
    pub dpop_signing_alg_values_supported: Option<Vec<String>>,
}

/// The discovery URL for an issuer.
pub fn url_for(issuer: &str) -> String {
    format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))
}

/// Fetches and checks the discovery document.
pub(super) async fn fetch(p: &Provider, issuer: &str) -> Result<Metadata, ProviderError> {
    const WHAT: &str = "discovery";
    let answer = p.get(WHAT, &url_for(issuer)).await?;
    let m: Metadata = serde_json::from_slice(&answer.body)
        .map_err(|e| ProviderError::BadDocument { what: WHAT, why: e.to_string() })?;
    if m.issuer != issuer {
        return Err(ProviderError::IssuerMismatch { expected: issuer.to_owned(), got: m.issuer });
    }
    for (name, url) in [
        ("authorization_endpoint", &m.authorization_endpoint),
        ("token_endpoint", &m.token_endpoint),
        ("jwks_uri", &m.jwks_uri),
    ] {
        if url::Url::parse(url).is_err() {
            return Err(ProviderError::BadDocument { what: WHAT, why: format!("{name} is not a URL") });
        }
    }
    Ok(m)
}

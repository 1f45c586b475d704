//! How idgate authenticates itself to the issuer's back-channel endpoints (token, PAR, revocation): a client secret
//! (`client_secret_basic`, `client_secret_post`) or a signed client assertion (`private_key_jwt`, RFC 7523 §2.2 and
//! OpenID Connect Core §9). Pure: settings, an audience and the time in; the header and form fields out.
//!
//! The assertion: `iss` = `sub` = the client id, `aud` = the issuer identifier (what FAPI 2.0 issuers require and
//! all the others accept) or, with `oidc.client_assertion_audience = "token_endpoint"`, the token endpoint URL
//! (RFC 7523's original reading, for the few issuers that refuse the issuer identifier); a fresh random `jti`;
//! `iat` now and `exp` [`ASSERTION_LIFETIME_SECS`] later; the key's `kid` and `typ: JWT` in the header. A fresh
//! assertion per request, so a replay-detecting issuer never sees a `jti` twice.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::Serialize;

use crate::{
    config::{Secret, TokenAuthMethod, settings::OidcSettings},
    random,
    signing::{SignError, SigningAlg, SigningKey, SigningKeyError},
};

/// RFC 7523 §2.2: the `client_assertion_type` of a JWT client assertion.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long an assertion is valid: one request's worth, and no more than FAPI 2.0's 60 s.
pub const ASSERTION_LIFETIME_SECS: i64 = 60;

/// The JOSE `typ` of the assertion. `JWT` is what RFC 7519 suggests and every issuer accepts; the explicit
/// `client-authentication+jwt` of the RFC 7523 update is still refused by some issuers.
pub const ASSERTION_TYP: &str = "JWT";

/// The client's private key for `private_key_jwt`, read at config load. Equal when the public key (`kid`) is.
#[derive(Clone)]
pub struct ClientKey(pub Arc<SigningKey>);

impl PartialEq for ClientKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.kid() == other.0.kid() && self.0.alg() == other.0.alg()
    }
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ClientKey {
    /// Reads the first private key of a PEM file; `alg` as in [`SigningKey::from_pem`]. The error names the file and
    /// the problem, never key material.
    pub fn from_file(path: &str, alg: Option<SigningAlg>) -> Result<Self, String> {
        let shown = || crate::config::path_shown(path);
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", shown()))?;
        SigningKey::from_pem(&pem, alg)
            .map(|k| ClientKey(Arc::new(k)))
            .map_err(|e: SigningKeyError| format!("{}: {e}", shown()))
    }
}

/// What the assertion's `aud` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AssertionAudience {
    /// The issuer identifier (default; FAPI 2.0).
    #[default]
    Issuer,
    /// The token endpoint URL, for every endpoint the assertion is sent to.
    TokenEndpoint,
}

/// How a back-channel request authenticates: an `Authorization` header value and/or form fields.
#[derive(Default)]
pub struct Credentials {
    pub authorization: Option<Secret>,
    pub form: Vec<(&'static str, Secret)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.form.iter().map(|(k, _)| *k).collect();
        f.debug_struct("Credentials")
            .field("authorization", &self.authorization.is_some())
            .field("form", &names)
            .finish()
    }
}

/// The client assertion could not be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientAuthError {
    #[error("token_auth_method is private_key_jwt but no client key is loaded")]
    NoKey,
    #[error("the client assertion could not be signed")]
    Sign(#[from] SignError),
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: i64,
    exp: i64,
}

/// Signs a client assertion for `client_id`, addressed to `audience`, valid from `now` for
/// [`ASSERTION_LIFETIME_SECS`].
pub fn assertion(key: &SigningKey, client_id: &str, audience: &str, now: i64) -> Result<String, SignError> {
    let claims = AssertionClaims {
        iss: client_id,
        sub: client_id,
        aud: audience,
        jti: random::token(24),
        iat: now,
        exp: now + ASSERTION_LIFETIME_SECS,
    };
    key.sign_jwt(Some(ASSERTION_TYP), &claims)
}

/// The credentials for one back-channel request. `issuer` and `token_endpoint` come from discovery; `form_has_client_id`
/// says whether the request already carries `client_id` (PAR does), so it is not sent twice.
pub fn credentials(
    s: &OidcSettings,
    issuer: &str,
    token_endpoint: &str,
    now: i64,
    form_has_client_id: bool,
) -> Result<Credentials, ClientAuthError> {
    let mut c = Credentials::default();
    let client_id = || Secret::new(s.client_id.clone());
    match s.token_auth_method {
        TokenAuthMethod::ClientSecretBasic if s.client_secret.is_some() => {
            let secret = s.client_secret.as_ref().map(Secret::expose).unwrap_or("");
            // RFC 6749 §2.3.1: both parts form-urlencoded before base64.
            let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            let basic = STANDARD.encode(format!("{}:{}", enc(&s.client_id), enc(secret)));
            c.authorization = Some(Secret::new(format!("Basic {basic}")));
        }
        TokenAuthMethod::ClientSecretBasic => {
            if !form_has_client_id {
                c.form.push(("client_id", client_id()));
            }
        }
        TokenAuthMethod::ClientSecretPost => {
            if !form_has_client_id {
                c.form.push(("client_id", client_id()));
            }
            let secret = s.client_secret.clone().unwrap_or_else(|| Secret::new(""));
            c.form.push(("client_secret", secret));
        }
        TokenAuthMethod::PrivateKeyJwt => {
            let key = s.client_key.as_ref().ok_or(ClientAuthError::NoKey)?;
            let aud = match s.client_assertion_audience {
                AssertionAudience::Issuer => issuer,
                AssertionAudience::TokenEndpoint => token_endpoint,
            };
            let jwt = assertion(&key.0, &s.client_id, aud, now)?;
            // RFC 7523 §3: client_id is optional; sending it helps issuers that look the client up before parsing.
            if !form_has_client_id {
                c.form.push(("client_id", client_id()));
            }
            c.form.push(("client_assertion_type", Secret::new(ASSERTION_TYPE)));
            c.form.push(("client_assertion", Secret::new(jwt)));
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests;

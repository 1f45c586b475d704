//! idgate's login endpoints: `start` (state, nonce, PKCE → flow cookie → 302 to the issuer), `callback` (flow ↔
//! state, code redeemed, ID token validated, session sealed → 302 back) and `sign_out`.

pub mod backchannel;
pub mod callback;
pub mod flow;
pub mod preserved_post;
pub mod redirect;
pub mod refresh;
pub mod sign_out;
pub mod start;

use crate::oidc::{ProviderError, TokenError};

/// A login step failed. `Display` is safe to log; pages show only fixed text and the issuer's error code.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("parameter {0} given more than once")]
    DuplicateParameter(&'static str),
    #[error("parameter {0} missing")]
    MissingParameter(&'static str),
    #[error("no login in progress for this state (expired, finished, or started in another browser)")]
    UnknownState,
    #[error("callback replayed")]
    Replayed,
    #[error("login took too long")]
    FlowExpired,
    #[error("callback iss parameter differs from the issuer")]
    IssuerMismatch,
    #[error("callback lacks the iss parameter the issuer advertises (RFC 9207)")]
    IssuerMissing,
    #[error("issuer answered error {error:?}")]
    IdpError { error: String, description: Option<String> },
    #[error("token endpoint returned no id_token")]
    NoIdToken,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("userinfo answered for another subject")]
    UserinfoMismatch,
    #[error("the session does not fit in cookies")]
    SessionTooLarge,
    #[error(transparent)]
    Store(#[from] crate::session::store::StoreError),
    #[error("sign-out form token missing or invalid")]
    BadCsrf,
    #[error("pushed authorization request failed: {0}")]
    Pushed(#[from] crate::oidc::par::ParError),
}

impl From<crate::session::SessionError> for LoginError {
    fn from(e: crate::session::SessionError) -> Self {
        match e {
            crate::session::SessionError::Store(s) => LoginError::Store(s),
            _ => LoginError::SessionTooLarge,
        }
    }
}

impl From<ProviderError> for LoginError {
    fn from(e: ProviderError) -> Self {
        LoginError::Token(TokenError::Provider(e))
    }
}

impl LoginError {
    /// Label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            LoginError::DuplicateParameter(_) => "duplicate_parameter",
            LoginError::MissingParameter(_) => "missing_parameter",
            LoginError::UnknownState => "unknown_state",
            LoginError::Replayed => "replayed",
            LoginError::FlowExpired => "flow_expired",
            LoginError::IssuerMismatch => "issuer_mismatch",
            LoginError::IssuerMissing => "missing_iss",
            LoginError::IdpError { .. } => "idp_error",
            LoginError::NoIdToken => "no_id_token",
            LoginError::Token(TokenError::Rejected(r)) => r.reason(),
            LoginError::Token(TokenError::Provider(ProviderError::Refused { error, .. }))
                if error == "invalid_client" =>
            {
                "client_auth_refused"
            }
            LoginError::Token(TokenError::Provider(_)) => "issuer_unavailable",
            LoginError::UserinfoMismatch => "userinfo_mismatch",
            LoginError::SessionTooLarge => "session_too_large",
            LoginError::Store(_) => "session_store_unavailable",
            LoginError::BadCsrf => "bad_csrf",
            LoginError::Pushed(e) => e.reason(),
        }
    }
}

/// Query parameters, refusing duplicates of the ones that matter (a peer's confusion bug).
pub(crate) fn query_params(query: Option<&str>, unique: &[&'static str]) -> Result<Vec<(String, String)>, LoginError> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for name in unique {
        if pairs.iter().filter(|(k, _)| k == name).count() > 1 {
            return Err(LoginError::DuplicateParameter(name));
        }
    }
    Ok(pairs)
}

/// The value of `name` in parsed parameters.
pub(crate) fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

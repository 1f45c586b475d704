//! Pushed authorization requests (RFC 9126): the authorization parameters go to the issuer's
//! `pushed_authorization_request_endpoint` over the back channel, with client authentication; the browser is then
//! sent to the authorization endpoint with only `client_id` and the `request_uri` the issuer answered. Nothing the
//! browser carries can then be changed on the way, and nothing about the request shows in its history.

use http::StatusCode;
use serde::Deserialize;

use super::{Metadata, Provider, ProviderError, error_code};

/// The longest `expires_in` believed (seconds). RFC 9126 §2.2 expects a short lifetime (its examples use 60–90 s);
/// anything beyond an hour, or below one second, is a broken or impersonated endpoint.
pub const MAX_EXPIRES_IN_SECS: i64 = 3600;

/// The longest `request_uri` put in the browser's URL.
pub const MAX_REQUEST_URI_BYTES: usize = 2048;

/// What the PAR endpoint answered: a reference to the pushed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub request_uri: String,
    pub expires_in: i64,
}

/// A pushed authorization request that failed. `Display` is safe to log; a page shows only the issuer's error code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ParError {
    #[error("PAR is required but the issuer publishes no pushed_authorization_request_endpoint")]
    NoEndpoint,
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("PAR endpoint refused with HTTP {status}: {error}")]
    Refused { status: u16, error: String },
    #[error("PAR endpoint answered with an unusable document: {0}")]
    BadAnswer(&'static str),
}

impl ParError {
    /// Label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            ParError::NoEndpoint => "par_unsupported",
            ParError::Provider(_) => "par_unavailable",
            ParError::Refused { .. } => "par_refused",
            ParError::BadAnswer(_) => "par_bad_answer",
        }
    }
}

impl Provider {
    /// Whether logins push their parameters: `oidc.par`, or the issuer's `require_pushed_authorization_requests`.
    pub fn uses_par(&self, metadata: &Metadata) -> bool {
        uses_par(self.settings.par, metadata)
    }

    /// Pushes the authorization parameters `params` (which include `client_id`), authenticated like the token
    /// endpoint.
    pub async fn push_authorization_request(&self, params: &[(&str, &str)]) -> Result<Pushed, ParError> {
        const WHAT: &str = "PAR endpoint";
        let metadata = self.metadata()?;
        let endpoint = metadata.pushed_authorization_request_endpoint.as_deref().ok_or(ParError::NoEndpoint)?;
        let answer = self.client_post(WHAT, endpoint, params).await?;
        read_answer(answer.status, &answer.body)
    }
}

/// Whether logins push their parameters: `configured`, or the issuer requires it.
pub fn uses_par(configured: bool, metadata: &Metadata) -> bool {
    configured || metadata.require_pushed_authorization_requests
}

/// Reads the PAR endpoint's answer (RFC 9126 §2.2, §2.3). Pure.
pub fn read_answer(status: StatusCode, body: &[u8]) -> Result<Pushed, ParError> {
    #[derive(Deserialize)]
    struct Ok {
        request_uri: Option<serde_json::Value>,
        expires_in: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct Err {
        error: String,
    }
    if !status.is_success() {
        return Err(match serde_json::from_slice::<Err>(body) {
            Ok(e) if !status.is_server_error() => {
                ParError::Refused { status: status.as_u16(), error: error_code(&e.error) }
            }
            _ => ParError::Provider(ProviderError::Status { what: "PAR endpoint", status: status.as_u16() }),
        });
    }
    let doc: Ok = serde_json::from_slice(body).map_err(|_| ParError::BadAnswer("not a JSON object"))?;
    let request_uri = match doc.request_uri {
        Some(serde_json::Value::String(u)) => u,
        Some(_) => return Err(ParError::BadAnswer("request_uri is not a string")),
        None => return Err(ParError::BadAnswer("no request_uri")),
    };
    if request_uri.is_empty()
        || request_uri.len() > MAX_REQUEST_URI_BYTES
        || request_uri.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(ParError::BadAnswer("request_uri is empty, too long or holds whitespace"));
    }
    let expires_in = match doc.expires_in {
        Some(v) => v.as_i64().ok_or(ParError::BadAnswer("expires_in is not an integer"))?,
        None => return Err(ParError::BadAnswer("no expires_in")),
    };
    if !(1..=MAX_EXPIRES_IN_SECS).contains(&expires_in) {
        return Err(ParError::BadAnswer("expires_in is outside 1..3600 seconds"));
    }
    Ok(Pushed { request_uri, expires_in })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(status: u16, body: &str) -> Result<Pushed, ParError> {
        read_answer(StatusCode::from_u16(status).unwrap(), body.as_bytes())
    }

    #[test]
    fn a_created_answer_is_read() {
        let p = read(201, r#"{"request_uri":"urn:ietf:params:oauth:request_uri:abc","expires_in":60}"#).unwrap();
        assert_eq!(p, Pushed { request_uri: "urn:ietf:params:oauth:request_uri:abc".into(), expires_in: 60 });
        assert!(read(200, r#"{"request_uri":"urn:x","expires_in":3600}"#).is_ok(), "200 is accepted too");
    }

    #[test]
    fn broken_answers_are_refused_each_for_its_reason() {
        for (status, body, why) in [
            (201, r#"{"expires_in":60}"#, "no request_uri"),
            (201, r#"{"request_uri":"","expires_in":60}"#, "request_uri is empty, too long or holds whitespace"),
            (201, r#"{"request_uri":"urn:a b","expires_in":60}"#, "request_uri is empty, too long or holds whitespace"),
            (201, r#"{"request_uri":7,"expires_in":60}"#, "request_uri is not a string"),
            (201, r#"{"request_uri":"urn:x"}"#, "no expires_in"),
            (201, r#"{"request_uri":"urn:x","expires_in":0}"#, "expires_in is outside 1..3600 seconds"),
            (201, r#"{"request_uri":"urn:x","expires_in":-5}"#, "expires_in is outside 1..3600 seconds"),
            (201, r#"{"request_uri":"urn:x","expires_in":3601}"#, "expires_in is outside 1..3600 seconds"),
            (201, r#"{"request_uri":"urn:x","expires_in":1e12}"#, "expires_in is not an integer"),
            (201, r#"{"request_uri":"urn:x","expires_in":"60"}"#, "expires_in is not an integer"),
            (201, "<html>", "not a JSON object"),
        ] {
            match read(status, body) {
                Err(ParError::BadAnswer(w)) => assert_eq!(w, why, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        let uri = |len: usize| format!(r#"{{"request_uri":"{}","expires_in":1}}"#, "u".repeat(len));
        assert!(read(201, &uri(MAX_REQUEST_URI_BYTES)).is_ok(), "2048 bytes pass");
        assert!(matches!(read(201, &uri(MAX_REQUEST_URI_BYTES + 1)), Err(ParError::BadAnswer(_))));
        assert!(matches!(read(201, r#"{"request_uri":"urn:a\u0001","expires_in":60}"#), Err(ParError::BadAnswer(_))));
    }

    #[test]
    fn par_is_used_when_configured_or_required() {
        let m = |required: bool| -> Metadata {
            serde_json::from_value(serde_json::json!({
                "issuer": "i", "authorization_endpoint": "a", "token_endpoint": "t", "jwks_uri": "j",
                "require_pushed_authorization_requests": required,
            }))
            .unwrap()
        };
        assert!(!uses_par(false, &m(false)));
        assert!(uses_par(true, &m(false)));
        assert!(uses_par(false, &m(true)));
    }

    #[test]
    fn a_provider_pushes_when_its_oidc_par_setting_says_so() {
        use std::io::Write;
        let provider = |par: bool| {
            let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
            let config = format!(
                "[upstream]\nurl = \"http://127.0.0.1:8080\"\n[session]\nsecret = \
                 \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n[oidc]\nissuer = \"https://i.example\"\n\
                 client_id = \"c\"\nclient_secret = \"s\"\nredirect_url = \"https://a.example/oauth2/callback\"\n\
                 par = {par}\n"
            );
            f.write_all(config.as_bytes()).unwrap();
            let settings = crate::config::load(f.path(), &Default::default()).unwrap();
            let http = crate::client::build(std::time::Duration::from_secs(1));
            Provider::new(settings.oidc, http, std::sync::Arc::new(crate::telemetry::metrics::Metrics::default()))
        };
        let m = |required: bool| -> Metadata {
            serde_json::from_value(serde_json::json!({
                "issuer": "i", "authorization_endpoint": "a", "token_endpoint": "t", "jwks_uri": "j",
                "require_pushed_authorization_requests": required,
            }))
            .unwrap()
        };
        assert!(provider(true).uses_par(&m(false)), "oidc.par = true");
        assert!(!provider(false).uses_par(&m(false)));
        assert!(provider(false).uses_par(&m(true)), "the issuer requires it");
    }

    #[test]
    fn each_failure_has_its_reason() {
        let reasons = [
            ParError::NoEndpoint,
            ParError::Provider(ProviderError::NotReady),
            ParError::Refused { status: 400, error: "x".into() },
            ParError::BadAnswer("x"),
        ]
        .map(|e| e.reason());
        assert_eq!(reasons, ["par_unsupported", "par_unavailable", "par_refused", "par_bad_answer"]);
    }

    #[test]
    fn error_answers_keep_the_code_and_only_the_code() {
        match read(400, r#"{"error":"invalid_request","error_description":"<script>"}"#) {
            Err(ParError::Refused { status: 400, error }) => assert_eq!(error, "invalid_request"),
            other => panic!("{other:?}"),
        }
        match read(401, r#"{"error":"<b>invalid_client</b>"}"#) {
            Err(ParError::Refused { error, .. }) => assert_eq!(error, "binvalid_clientb"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(read(503, r#"{"error":"temporarily_unavailable"}"#), Err(ParError::Provider(_))));
        assert!(matches!(read(400, "nope"), Err(ParError::Provider(ProviderError::Status { status: 400, .. }))));
    }
}

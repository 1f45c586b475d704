//! The token endpoint (authorization code, refresh) and the userinfo endpoint.

use http::{Method, Request, header};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Provider, ProviderError, dpop};
use crate::{body, config::Secret};

/// What the token endpoint returned. `Debug` shows no token.
#[derive(Deserialize)]
pub struct Tokens {
    pub id_token: Option<Secret>,
    pub access_token: Option<Secret>,
    pub refresh_token: Option<Secret>,
    #[serde(default)]
    pub token_type: Option<String>,
    /// The tokens are bound to idgate's DPoP key (RFC 9449): the access token is used as `DPoP`, with a proof.
    #[serde(skip)]
    pub dpop_bound: bool,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("id_token", &self.id_token.is_some())
            .field("access_token", &self.access_token.is_some())
            .field("refresh_token", &self.refresh_token.is_some())
            .field("dpop_bound", &self.dpop_bound)
            .finish()
    }
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    error_description: Option<String>,
}

impl Provider {
    /// Exchanges an authorization code (with its PKCE verifier) for tokens.
    pub async fn redeem(&self, code: &str, verifier: &str) -> Result<Tokens, ProviderError> {
        let redirect = self.settings.redirect_url.as_str();
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
        ])
        .await
    }

    /// Uses a refresh token (`grant_type=refresh_token`).
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, ProviderError> {
        self.token_request(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]).await
    }

    /// RFC 7009: revokes a refresh token at the issuer's `revocation_endpoint`, authenticated like the token
    /// endpoint. `Ok(false)` when discovery names no revocation endpoint.
    pub async fn revoke_refresh_token(&self, refresh_token: &str) -> Result<bool, ProviderError> {
        const WHAT: &str = "revocation endpoint";
        let metadata = self.metadata()?;
        let Some(endpoint) = metadata.revocation_endpoint.as_deref() else { return Ok(false) };
        let params = [("token", refresh_token), ("token_type_hint", "refresh_token")];
        let answer = self.client_post(WHAT, endpoint, &params).await?;
        // RFC 7009 §2.2: 200 whether or not the token was still valid.
        if !answer.status.is_success() {
            return Err(ProviderError::Status { what: WHAT, status: answer.status.as_u16() });
        }
        Ok(true)
    }

    /// RFC 7662: introspects an access token at the issuer's `introspection_endpoint`, authenticated like the token
    /// endpoint. Returns the answer's members (`active` and the rest); `Ok(None)` when discovery names no endpoint.
    pub async fn introspect(&self, token: &str) -> Result<Option<Map<String, Value>>, ProviderError> {
        const WHAT: &str = "introspection endpoint";
        let metadata = self.metadata()?;
        let Some(endpoint) = metadata.introspection_endpoint.as_deref() else { return Ok(None) };
        let answer = self.client_post(WHAT, endpoint, &[("token", token), ("token_type_hint", "access_token")]).await?;
        if !answer.status.is_success() {
            return Err(ProviderError::Status { what: WHAT, status: answer.status.as_u16() });
        }
        serde_json::from_slice(&answer.body)
            .map(Some)
            .map_err(|e| ProviderError::BadDocument { what: WHAT, why: e.to_string() })
    }

    async fn token_request(&self, params: &[(&str, &str)]) -> Result<Tokens, ProviderError> {
        const WHAT: &str = "token endpoint";
        let metadata = self.metadata()?;
        let target = dpop::Target {
            supported: metadata.dpop_signing_alg_values_supported.as_deref(),
            htm: &Method::POST,
            htu: &metadata.token_endpoint,
            access_token: None,
            now: self.clock.now(),
        };
        let (answer, with_proof) = self
            .dpop
            .exchange(WHAT, target, |proof| self.client_post_with(WHAT, &metadata.token_endpoint, params, proof))
            .await?;
        if !answer.status.is_success() {
            return Err(match serde_json::from_slice::<OAuthError>(&answer.body) {
                Ok(e) => ProviderError::Refused {
                    status: answer.status.as_u16(),
                    error: super::error_code(&e.error),
                    description: e.error_description,
                },
                Err(_) => ProviderError::Status { what: WHAT, status: answer.status.as_u16() },
            });
        }
        let mut tokens: Tokens = serde_json::from_slice(&answer.body)
            .map_err(|e| ProviderError::BadDocument { what: WHAT, why: e.to_string() })?;
        dpop::check_token_type(with_proof, tokens.token_type.as_deref())?;
        tokens.dpop_bound = with_proof;
        Ok(tokens)
    }

    /// POSTs `params` to `url` with this client's authentication, without a DPoP proof.
    pub(super) async fn client_post(
        &self,
        what: &'static str,
        url: &str,
        params: &[(&str, &str)],
    ) -> Result<super::Answer, ProviderError> {
        self.client_post_with(what, url, params, None).await
    }

    /// POSTs `params` to `url` with this client's authentication (`oidc.token_auth_method`, [`super::client_auth`])
    /// and a DPoP proof when given.
    async fn client_post_with(
        &self,
        what: &'static str,
        url: &str,
        params: &[(&str, &str)],
        dpop_proof: Option<String>,
    ) -> Result<super::Answer, ProviderError> {
        let metadata = self.metadata()?;
        let has_client_id = params.iter().any(|(k, _)| *k == "client_id");
        let credentials = super::client_auth::credentials(
            &self.settings,
            &metadata.issuer,
            &metadata.token_endpoint,
            self.clock.now(),
            has_client_id,
        )
        .map_err(ProviderError::ClientAuth)?;
        let mut form: Vec<(&str, &str)> = params.to_vec();
        form.extend(credentials.form.iter().map(|(k, v)| (*k, v.expose())));
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(proof) = dpop_proof {
            req = req.header(dpop::DPOP, proof);
        }
        if let Some(auth) = &credentials.authorization {
            req = req.header(header::AUTHORIZATION, auth.expose());
        }
        let encoded = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&form).finish();
        let req = req.body(body::full(encoded)).map_err(|e| ProviderError::BadDocument { what, why: e.to_string() })?;
        self.call(what, req).await
    }

    /// Asks the userinfo endpoint for the full profile with an access token; a DPoP-bound one (`dpop_bound`) goes
    /// as `Authorization: DPoP` with a proof carrying its hash (RFC 9449 §7.1).
    pub async fn userinfo(&self, access_token: &str, dpop_bound: bool) -> Result<Map<String, Value>, ProviderError> {
        const WHAT: &str = "userinfo endpoint";
        let metadata = self.metadata()?;
        let url = metadata
            .userinfo_endpoint
            .as_deref()
            .ok_or(ProviderError::BadDocument { what: WHAT, why: "discovery names no userinfo_endpoint".into() })?;
        let scheme = if dpop_bound { "DPoP" } else { "Bearer" };
        let send = |proof: Option<String>| {
            let mut req = Request::builder()
                .method(Method::GET)
                .uri(url)
                .header(header::ACCEPT, "application/json")
                .header(header::AUTHORIZATION, format!("{scheme} {access_token}"));
            if let Some(proof) = proof {
                req = req.header(dpop::DPOP, proof);
            }
            let req =
                req.body(body::empty()).map_err(|e| ProviderError::BadDocument { what: WHAT, why: e.to_string() });
            async move { self.call(WHAT, req?).await }
        };
        let answer = if dpop_bound {
            let target = dpop::Target {
                supported: metadata.dpop_signing_alg_values_supported.as_deref(),
                htm: &Method::GET,
                htu: url,
                access_token: Some(access_token),
                now: self.clock.now(),
            };
            self.dpop.exchange(WHAT, target, send).await?.0
        } else {
            send(None).await?
        };
        if !answer.status.is_success() {
            return Err(ProviderError::Status { what: WHAT, status: answer.status.as_u16() });
        }
        serde_json::from_slice(&answer.body).map_err(|e| ProviderError::BadDocument { what: WHAT, why: e.to_string() })
    }
}

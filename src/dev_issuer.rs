//! The development OpenID Provider: discovery, JWKS, an authorize page whose form accepts any user name, a token
//! endpoint with PKCE and client authentication, refresh, token revocation (RFC 7009), userinfo and end_session, DPoP
//! (RFC 9449: proofs checked, tokens bound to the key; [`dpop`]). Keys are real (generated at
//! start), so `idgate demo` and the tests exercise the same validation code as production.
//!
//! **For local use only.** It authenticates nobody. It binds loopback addresses only.
//!
//! Tests turn its knobs ([`Knobs`]): token lifetime, algorithm, key rotation, and hooks that break tokens on purpose.

pub mod dpop;
pub mod keys;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use aws_lc_rs::digest::{SHA256, digest};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use http::{Method, Request, Response, StatusCode, header};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use crate::{
    body::{self, Body},
    clock::Clock,
    config::TokenAuthMethod,
    error::{escape, html_page},
    id_token::jwe::{self, ContentEnc, EncryptionKey, KeyAlg},
    random, server,
};
pub use dpop::{DpopKnobs, NonceMode};
pub use keys::{DevAlg, SigningKey};

/// Rewrites the claims of the next ID tokens (tests break tokens with it).
pub type ClaimsHook = Arc<dyn Fn(&mut Map<String, Value>) + Send + Sync>;
/// How the issuer encrypts ID tokens for its client (R8): the client's registered public key (its
/// `id_token_encrypted_response_alg` / `_enc` in OpenID Connect Dynamic Client Registration terms).
#[derive(Debug, Clone)]
pub struct IdTokenEncryption {
    pub key: EncryptionKey,
    /// The `kid` put in the JWE header, when the client's key has one.
    pub kid: Option<String>,
    pub alg: KeyAlg,
    pub enc: ContentEnc,
}

/// Rewrites an ID token as a whole, after signing (and encryption) (tests: tamper with the signature, swap
/// algorithms, …).
pub type TokenHook = Arc<dyn Fn(String) -> String + Send + Sync>;

/// The issuer's adjustable behaviour.
#[derive(Clone)]
pub struct Knobs {
    pub id_token_lifetime_secs: i64,
    pub claims_hook: Option<ClaimsHook>,
    pub token_hook: Option<TokenHook>,
    /// Rewrites userinfo answers.
    pub userinfo_hook: Option<ClaimsHook>,
    /// Answer the token endpoint with this HTTP status and OAuth error instead.
    pub token_error: Option<(u16, &'static str)>,
    /// Answer every request with 503 (an outage).
    pub down: bool,
    /// Hold every token endpoint answer this long (a slow issuer), after counting the request.
    pub token_delay: std::time::Duration,
    /// Leave `iss` out of authorization responses (RFC 9207).
    pub omit_iss: bool,
    /// Advertise `authorization_response_iss_parameter_supported` in discovery (RFC 9207).
    pub advertise_iss: bool,
    /// Publish a `revocation_endpoint` (RFC 7009).
    pub revocation: bool,
    /// Encrypt ID tokens to the client (R8); `None`: signed only.
    pub id_token_encryption: Option<IdTokenEncryption>,
    /// DPoP (RFC 9449): required for the client, nonces, a wrong `token_type`.
    pub dpop: DpopKnobs,
    /// Answer the introspection endpoint (RFC 7662) with 503 (an outage of that endpoint only).
    pub introspection_down: bool,
    /// Advertise `require_pushed_authorization_requests` and refuse authorization requests that were not pushed.
    pub require_par: bool,
    /// The `pushed_authorization_request_endpoint` advertised instead of our own (tests: an endpoint that is down).
    pub par_endpoint: Option<String>,
    /// Answer every pushed authorization request with this status and body instead (tests: error JSON, absurd
    /// `expires_in`, no `request_uri`).
    pub par_answer: Option<(u16, String)>,
    /// The `aud` values a client assertion may carry; `None`: the issuer identifier and the token endpoint URL.
    pub assertion_audiences: Option<Vec<String>>,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            id_token_lifetime_secs: 3600,
            claims_hook: None,
            token_hook: None,
            userinfo_hook: None,
            token_error: None,
            down: false,
            token_delay: std::time::Duration::ZERO,
            omit_iss: false,
            advertise_iss: true,
            revocation: true,
            id_token_encryption: None,
            dpop: DpopKnobs::default(),
            introspection_down: false,
            require_par: false,
            par_endpoint: None,
            par_answer: None,
            assertion_audiences: None,
        }
    }
}

/// How the development issuer is registered with its one client.
#[derive(Debug, Clone)]
pub struct DevClient {
    pub client_id: String,
    pub client_secret: String,
    /// Redirect URIs accepted (exact match).
    pub redirect_uris: Vec<String>,
    /// The one client authentication method the token endpoint accepts from this client (as a real issuer
    /// enforces its registration: the other method is refused with `invalid_client`).
    pub token_auth_method: TokenAuthMethod,
    /// Where `end_session` may send the browser back to (exact match; anything else is refused).
    pub post_logout_redirect_uris: Vec<String>,
    /// `private_key_jwt`: the client's registered public keys, inline (a JWK set document)…
    pub jwks: Option<Value>,
    /// …or fetched from this URL for every assertion (idgate's `{prefix}/jwks`).
    pub jwks_uri: Option<String>,
}

struct Grant {
    client_id: String,
    redirect_uri: String,
    nonce: Option<String>,
    challenge: String,
    user: String,
    scope: String,
    sid: String,
    /// RFC 9449 §10: the code may be redeemed only with a proof of this key.
    dpop_jkt: Option<String>,
}

struct Inner {
    issuer: String,
    client: DevClient,
    clock: Arc<dyn Clock>,
    keys: Mutex<Vec<SigningKey>>,
    knobs: Mutex<Knobs>,
    codes: Mutex<HashMap<String, Grant>>,
    /// Refresh token → (user, scope, sid).
    refresh_tokens: Mutex<HashMap<String, (String, String, String)>>,
    access_tokens: Mutex<HashMap<String, String>>,
    /// Opaque API access tokens → their introspection answer (without `active`).
    api_tokens: Mutex<HashMap<String, Map<String, Value>>>,
    requests: Mutex<HashMap<&'static str, u64>>,
    /// Why requests were refused, in order (tests assert the reason, not only the status).
    refusals: Mutex<Vec<&'static str>>,
    /// DPoP nonces, seen proofs, token bindings.
    dpop: dpop::DpopState,
    /// Pushed authorization requests: `request_uri` → (the pushed parameters as a query, expiry).
    pushed: Mutex<HashMap<String, (String, i64)>>,
    /// Client assertions received, in order, and the `jti`s already used (RFC 7523 §3 replay detection).
    assertions: Mutex<Vec<String>>,
    used_jtis: Mutex<HashMap<String, i64>>,
    http: crate::client::HttpClient,
}

/// A running development issuer.
#[derive(Clone)]
pub struct DevIssuer {
    inner: Arc<Inner>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl DevIssuer {
    /// Starts on `listen` (a loopback address; port 0 picks a free one) signing with `alg`.
    pub async fn start(
        listen: SocketAddr,
        alg: DevAlg,
        client: DevClient,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<DevIssuer> {
        if !listen.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the development issuer binds loopback addresses only",
            ));
        }
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            issuer: format!("http://{addr}"),
            client,
            clock,
            keys: Mutex::new(vec![SigningKey::generate(alg)]),
            knobs: Mutex::new(Knobs::default()),
            codes: Mutex::default(),
            refresh_tokens: Mutex::default(),
            access_tokens: Mutex::default(),
            api_tokens: Mutex::default(),
            requests: Mutex::default(),
            refusals: Mutex::default(),
            dpop: dpop::DpopState::default(),
            pushed: Mutex::default(),
            assertions: Mutex::default(),
            used_jtis: Mutex::default(),
            http: crate::client::build(std::time::Duration::from_secs(2)),
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let handler_inner = Arc::clone(&inner);
        let handler = move |req, _peer| {
            let inner = Arc::clone(&handler_inner);
            async move { inner.handle(req).await }
        };
        let mut rx = stopped;
        server::spawn_auxiliary(listener, handler, async move {
            let _ = rx.wait_for(|s| *s).await;
        });
        Ok(DevIssuer { inner, stop })
    }

    /// The issuer identifier (`http://127.0.0.1:PORT`).
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// Changes the knobs.
    pub fn configure(&self, f: impl FnOnce(&mut Knobs)) {
        if let Ok(mut k) = self.inner.knobs.lock() {
            f(&mut k);
        }
    }

    /// Signs new tokens with a fresh key of `alg`. `keep_old`: the old keys stay published (soft rotation);
    /// otherwise they disappear (hard rotation).
    pub fn rotate_key(&self, alg: DevAlg, keep_old: bool) -> String {
        let key = SigningKey::generate(alg);
        let kid = key.kid.clone();
        if let Ok(mut keys) = self.inner.keys.lock() {
            if !keep_old {
                keys.clear();
            }
            keys.push(key);
        }
        kid
    }

    /// Signs arbitrary claims with the current key (tests).
    pub fn sign(&self, claims: &Value) -> String {
        self.with_key(|k| k.sign(claims))
    }

    /// Runs `f` with the current signing key (tests build bad tokens with it).
    #[allow(clippy::expect_used, reason = "test helper: the issuer is created with a key and never drops the last")]
    pub fn with_key<T>(&self, f: impl FnOnce(&SigningKey) -> T) -> T {
        let keys = self.inner.keys.lock().expect("dev issuer key lock");
        f(keys.last().expect("the dev issuer always has a key"))
    }

    /// How many requests a path received (`jwks`, `token`, `discovery`, `authorize`, `userinfo`, `revoke`).
    pub fn request_count(&self, what: &'static str) -> u64 {
        self.inner.requests.lock().map(|r| r.get(what).copied().unwrap_or(0)).unwrap_or(0)
    }

    /// Why the issuer refused requests so far (client authentication, grants, `end_session` targets), oldest first.
    pub fn refusals(&self) -> Vec<&'static str> {
        self.inner.refusals.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The client assertions (`private_key_jwt`) received so far, oldest first, accepted or not.
    pub fn client_assertions(&self) -> Vec<String> {
        self.inner.assertions.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// The claims the issuer puts in a token for `user` (before hooks).
    pub fn claims_for(&self, user: &str, nonce: Option<&str>) -> Map<String, Value> {
        self.inner.claims_for(user, nonce, &self.inner.client.client_id)
    }

    /// An RFC 9068 JWT access token for `user`, for the resource `audience` with `scope` (space-separated), signed
    /// with the current key and typed `at+jwt`; `f` adjusts the claims (tests break tokens with it).
    pub fn access_token(
        &self,
        user: &str,
        audience: &str,
        scope: &str,
        f: impl FnOnce(&mut Map<String, Value>),
    ) -> String {
        let mut claims = self.inner.api_claims(user, audience, scope);
        f(&mut claims);
        self.with_key(|k| {
            k.sign_with_header(&json!({"alg": k.alg.name(), "kid": k.kid, "typ": "at+jwt"}), &Value::Object(claims))
        })
    }

    /// An opaque access token for `user` and `audience`, which the introspection endpoint describes; `f` adjusts
    /// its introspection answer.
    pub fn opaque_token(
        &self,
        user: &str,
        audience: &str,
        scope: &str,
        f: impl FnOnce(&mut Map<String, Value>),
    ) -> String {
        let mut claims = self.inner.api_claims(user, audience, scope);
        claims.insert("token_type".into(), json!("Bearer"));
        f(&mut claims);
        let token = random::token(24);
        if let Ok(mut t) = self.inner.api_tokens.lock() {
            t.insert(token.clone(), claims);
        }
        token
    }

    /// Stops serving.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Inner {
    fn count(&self, what: &'static str) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry(what).or_default() += 1;
        }
    }

    fn refuse(&self, why: &'static str) -> &'static str {
        if let Ok(mut r) = self.refusals.lock() {
            r.push(why);
        }
        why
    }

    fn knobs(&self) -> Knobs {
        self.knobs.lock().map(|k| k.clone()).unwrap_or_default()
    }

    async fn handle(self: Arc<Self>, req: Request<Body>) -> Response<Body> {
        if self.knobs().down {
            return json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": "temporarily_unavailable"}));
        }
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let (parts, incoming) = req.into_parts();
        let form = body::collect_limited(incoming, 64 * 1024).await.unwrap_or_default();
        match (parts.method.clone(), path.as_str()) {
            (Method::GET, "/.well-known/openid-configuration") => {
                self.count("discovery");
                json_response(StatusCode::OK, &self.discovery())
            }
            (Method::GET, "/jwks") => {
                self.count("jwks");
                let keys: Vec<Value> =
                    self.keys.lock().map(|k| k.iter().map(SigningKey::jwk).collect()).unwrap_or_default();
                json_response(StatusCode::OK, &json!({ "keys": keys }))
            }
            (Method::GET, "/authorize") => {
                self.count("authorize");
                self.authorize_page(&query)
            }
            (Method::POST, "/authorize") => self.authorize_submit(&query, &form),
            (Method::POST, "/par") => {
                self.count("par");
                self.pushed_request(&parts.headers, &form).await
            }
            (Method::POST, "/token") => {
                self.count("token");
                let delay = self.knobs().token_delay;
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                self.token(&parts.headers, &form).await
            }
            (Method::POST, "/revoke") if self.knobs().revocation => {
                self.count("revoke");
                self.revoke(&parts.headers, &form).await
            }
            (Method::GET, "/userinfo") => {
                self.count("userinfo");
                self.userinfo(&parts.headers)
            }
            (Method::GET, "/end_session") => self.end_session(&query),
            (Method::POST, "/introspect") => {
                self.count("introspect");
                self.introspect(&parts.headers, &form).await
            }
            _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
        }
    }

    fn discovery(&self) -> Value {
        let i = &self.issuer;
        let knobs = self.knobs();
        let mut d = json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "jwks_uri": format!("{i}/jwks"),
            "userinfo_endpoint": format!("{i}/userinfo"),
            "end_session_endpoint": format!("{i}/end_session"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "PS256", "ES256", "ES384"],
            "id_token_encryption_alg_values_supported": KeyAlg::ALL.map(KeyAlg::name),
            "id_token_encryption_enc_values_supported": ContentEnc::ALL.map(ContentEnc::name),
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256", "PS256", "ES256"],
            "pushed_authorization_request_endpoint": knobs.par_endpoint.clone().unwrap_or_else(|| format!("{i}/par")),
            "require_pushed_authorization_requests": knobs.require_par,
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "authorization_response_iss_parameter_supported": knobs.advertise_iss,
            "dpop_signing_alg_values_supported": dpop::ALGS,
        });
        if knobs.revocation {
            d["revocation_endpoint"] = json!(format!("{i}/revoke"));
        }
        d["introspection_endpoint"] = json!(format!("{i}/introspect"));
        d
    }

    /// The claims of an API access token (RFC 9068 §2.2).
    fn api_claims(&self, user: &str, audience: &str, scope: &str) -> Map<String, Value> {
        let now = self.clock.now();
        let c = self.claims_for(user, None, audience);
        let mut out = Map::new();
        for k in ["iss", "sub", "aud", "iat"] {
            if let Some(v) = c.get(k) {
                out.insert(k.into(), v.clone());
            }
        }
        out.insert("exp".into(), json!(now + 600));
        out.insert("client_id".into(), json!(self.client.client_id));
        out.insert("scope".into(), json!(scope));
        out.insert("jti".into(), json!(random::token(12)));
        out
    }

    /// RFC 7662: the client asks whether a token is active; unknown tokens are `{"active": false}`.
    async fn introspect(&self, headers: &http::HeaderMap, form: &[u8]) -> Response<Body> {
        if self.knobs().introspection_down {
            return json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": "temporarily_unavailable"}));
        }
        let f: HashMap<String, String> = url::form_urlencoded::parse(form).into_owned().collect();
        if let Err(why) = self.client_authenticated(headers, &f).await {
            let why = self.refuse(why);
            return json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "invalid_client", "error_description": why}),
            );
        }
        let token = f.get("token").map(String::as_str).unwrap_or("");
        let found = self.api_tokens.lock().ok().and_then(|t| t.get(token).cloned());
        match found {
            Some(mut c) => {
                c.entry("active").or_insert(json!(true));
                json_response(StatusCode::OK, &Value::Object(c))
            }
            None => json_response(StatusCode::OK, &json!({"active": false})),
        }
    }

    /// Checks an authorization request; returns its parameters or why it is refused.
    fn check_authorize(&self, query: &str) -> Result<HashMap<String, String>, &'static str> {
        let p: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
        let bad = Err;
        if get("client_id") != self.client.client_id {
            return bad("unknown client_id");
        }
        if !self.client.redirect_uris.iter().any(|r| r == get("redirect_uri")) {
            return bad("redirect_uri is not registered for this client");
        }
        if get("response_type") != "code" {
            return bad("only response_type=code is supported");
        }
        if get("code_challenge_method") != "S256" || get("code_challenge").len() < 43 {
            return bad("PKCE with S256 is required");
        }
        if !get("scope").split(' ').any(|s| s == "openid") {
            return bad("the openid scope is required");
        }
        Ok(p)
    }

    /// The authorization request a query stands for: the pushed one its `request_uri` names (RFC 9126 §4; used
    /// once, when `consume`), or the query itself when pushing is not required.
    fn effective_request(&self, query: &str, consume: bool) -> Result<String, &'static str> {
        let p: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let Some(uri) = p.get("request_uri") else {
            if self.knobs().require_par {
                return Err(self.refuse("pushed authorization requests are required (RFC 9126)"));
            }
            return Ok(query.to_owned());
        };
        let mut pushed = self.pushed.lock().map_err(|_| "lock")?;
        let Some((params, expires)) = pushed.get(uri).cloned() else {
            return Err(self.refuse("unknown or already used request_uri"));
        };
        if consume {
            pushed.remove(uri);
        }
        if expires <= self.clock.now() {
            return Err(self.refuse("the pushed authorization request expired"));
        }
        let pushed_id = url::form_urlencoded::parse(params.as_bytes()).find(|(k, _)| k == "client_id").map(|(_, v)| v);
        if p.get("client_id").map(String::as_str) != pushed_id.as_deref() {
            return Err(self.refuse("client_id differs from the pushed request's"));
        }
        Ok(params)
    }

    fn authorize_page(&self, query: &str) -> Response<Body> {
        let checked = self.effective_request(query, false).and_then(|q| self.check_authorize(&q).map(|_| ()));
        if let Err(why) = checked {
            return bad_authorize(why);
        }
        let form = format!(
            "<form method=\"post\" action=\"/authorize?{}\"><label>User name <input name=\"username\" autofocus required></label> \
             <button type=\"submit\">Log in</button></form>\
             <p><small>Development issuer: any name logs in. For local use only.</small></p>",
            escape(query)
        );
        html_page(StatusCode::OK, "idgate development issuer", "Log in as anyone.", &form)
    }

    fn authorize_submit(&self, query: &str, form: &[u8]) -> Response<Body> {
        let p = match self.effective_request(query, true).and_then(|q| self.check_authorize(&q)) {
            Ok(p) => p,
            Err(why) => return bad_authorize(why),
        };
        let fields: HashMap<String, String> = url::form_urlencoded::parse(form).into_owned().collect();
        let user = fields.get("username").map(|u| u.trim()).unwrap_or("");
        if user.is_empty() || user.len() > 64 {
            return html_page(StatusCode::BAD_REQUEST, "Bad login", "A user name of 1-64 characters is needed.", "");
        }
        let code = random::token(24);
        let get = |k: &str| p.get(k).cloned().unwrap_or_default();
        if let Ok(mut codes) = self.codes.lock() {
            codes.insert(
                code.clone(),
                Grant {
                    client_id: get("client_id"),
                    redirect_uri: get("redirect_uri"),
                    nonce: p.get("nonce").cloned(),
                    challenge: get("code_challenge"),
                    user: user.to_owned(),
                    scope: get("scope"),
                    sid: random::token(12),
                    dpop_jkt: p.get("dpop_jkt").cloned(),
                },
            );
        }
        let Ok(mut target) = url::Url::parse(&get("redirect_uri")) else {
            return bad_authorize("the registered redirect_uri is not an absolute URL");
        };
        {
            let mut q = target.query_pairs_mut();
            q.append_pair("code", &code);
            if let Some(s) = p.get("state") {
                q.append_pair("state", s);
            }
            if !self.knobs().omit_iss {
                q.append_pair("iss", &self.issuer);
            }
        }
        Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, target.as_str())
            .body(body::empty())
            .unwrap_or_else(body::internal_error)
    }

    /// Client authentication with the registered method only (RFC 6749 §2.3: a client uses one method per
    /// request; OpenID Connect Core §9: the registered `token_endpoint_auth_method`). `Err` says why not.
    async fn client_authenticated(
        &self,
        headers: &http::HeaderMap,
        form: &HashMap<String, String>,
    ) -> Result<(), &'static str> {
        let authorization = headers.get(header::AUTHORIZATION);
        let in_form = form.contains_key("client_secret");
        if self.client.token_auth_method != TokenAuthMethod::PrivateKeyJwt && form.contains_key("client_assertion") {
            return Err("a client assertion, but the client is registered for a client secret");
        }
        let (id, secret) = match self.client.token_auth_method {
            TokenAuthMethod::PrivateKeyJwt => {
                if authorization.is_some() || in_form {
                    return Err("a client secret, but the client is registered for private_key_jwt");
                }
                return self.assertion_verified(form).await;
            }
            TokenAuthMethod::ClientSecretBasic => {
                if in_form {
                    return Err("client_secret in the form, but the client is registered for client_secret_basic");
                }
                let pair = authorization
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Basic "))
                    .and_then(|b| STANDARD.decode(b).ok())
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or("no Basic credentials, but the client is registered for client_secret_basic")?;
                let (i, s) = pair.split_once(':').ok_or("Basic credentials without ':'")?;
                (url_decode(i), url_decode(s))
            }
            TokenAuthMethod::ClientSecretPost => {
                if authorization.is_some() {
                    return Err("an Authorization header, but the client is registered for client_secret_post");
                }
                if !in_form {
                    return Err("no client_secret in the form, but the client is registered for client_secret_post");
                }
                (
                    form.get("client_id").cloned().unwrap_or_default(),
                    form.get("client_secret").cloned().unwrap_or_default(),
                )
            }
        };
        if id != self.client.client_id || secret != self.client.client_secret {
            return Err("unknown client or wrong client secret");
        }
        Ok(())
    }

    async fn token(&self, headers: &http::HeaderMap, form: &[u8]) -> Response<Body> {
        let f: HashMap<String, String> = url::form_urlencoded::parse(form).into_owned().collect();
        let oauth_error = |status: StatusCode, e: &str| json_response(status, &json!({"error": e}));
        if let Err(why) = self.client_authenticated(headers, &f).await {
            let why = self.refuse(why);
            return json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "invalid_client", "error_description": why}),
            );
        }
        let knobs = self.knobs();
        if let Some((status, e)) = knobs.token_error {
            return oauth_error(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), e);
        }
        let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
        let token_url = format!("{}/token", self.issuer);
        let jkt = match self.dpop.verify(&knobs.dpop, headers, &Method::POST, &token_url, self.clock.now(), None) {
            Ok(jkt) => jkt,
            Err(r) => {
                self.refuse(r.why());
                return r.token_response();
            }
        };
        if jkt.is_none() && knobs.dpop.required {
            let r = dpop::Refusal::Invalid("no DPoP proof, but the client is registered for DPoP-bound tokens");
            self.refuse(r.why());
            return r.token_response();
        }
        let (user, nonce, scope, sid) = match get("grant_type") {
            "authorization_code" => {
                // A code works once: it is removed whether or not the rest checks out.
                let Some(grant) = self.codes.lock().ok().and_then(|mut c| c.remove(get("code"))) else {
                    self.refuse("unknown or already redeemed authorization code");
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
                };
                let challenge = URL_SAFE_NO_PAD.encode(digest(&SHA256, get("code_verifier").as_bytes()));
                let why = if grant.redirect_uri != get("redirect_uri") {
                    Some("redirect_uri differs from the authorization request's")
                } else if grant.client_id != self.client.client_id {
                    Some("the code was issued to another client")
                } else if challenge != grant.challenge {
                    Some("code_verifier does not match the code_challenge (PKCE)")
                } else if grant.dpop_jkt.is_some() && grant.dpop_jkt != jkt {
                    Some("the DPoP proof's key is not the dpop_jkt of the authorization request")
                } else {
                    None
                };
                if let Some(why) = why {
                    self.refuse(why);
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
                }
                (grant.user, grant.nonce, grant.scope, grant.sid)
            }
            "refresh_token" => {
                // A bound refresh token needs a proof of its key; refused, it stays valid (the key holder may
                // still use it).
                if let Some(bound) = self.dpop.refresh_binding(get("refresh_token"))
                    && jkt.as_deref() != Some(bound.as_str())
                {
                    self.refuse("the refresh token is bound to another DPoP key");
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
                }
                // Rotating refresh tokens: the old one is spent.
                let Some((user, scope, sid)) =
                    self.refresh_tokens.lock().ok().and_then(|mut r| r.remove(get("refresh_token")))
                else {
                    self.refuse("unknown or already used refresh token");
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
                };
                (user, None, scope, sid)
            }
            _ => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        };
        let mut claims = self.claims_for(&user, nonce.as_deref(), &self.client.client_id);
        claims.insert("exp".into(), json!(self.clock.now() + knobs.id_token_lifetime_secs));
        claims.insert("sid".into(), json!(sid));
        if let Some(hook) = &knobs.claims_hook {
            hook(&mut claims);
        }
        let mut id_token = self
            .keys
            .lock()
            .map(|k| k.last().map(|k| k.sign(&Value::Object(claims))).unwrap_or_default())
            .unwrap_or_default();
        if let Some(e) = &knobs.id_token_encryption {
            id_token = jwe::encrypt(id_token.as_bytes(), &e.key, e.kid.as_deref(), e.alg, e.enc).unwrap_or_default();
        }
        if let Some(hook) = &knobs.token_hook {
            id_token = hook(id_token);
        }
        let access_token = random::token(24);
        if let Ok(mut a) = self.access_tokens.lock() {
            a.insert(access_token.clone(), user.clone());
        }
        let token_type = knobs.dpop.token_type.unwrap_or(if jkt.is_some() { "DPoP" } else { "Bearer" });
        let mut answer = json!({
            "access_token": access_token, "token_type": token_type, "expires_in": knobs.id_token_lifetime_secs, "id_token": id_token,
        });
        let mut refresh_token = None;
        if scope.split(' ').any(|s| s == "offline_access") {
            let rt = random::token(24);
            if let Ok(mut r) = self.refresh_tokens.lock() {
                r.insert(rt.clone(), (user, scope, sid));
            }
            answer["refresh_token"] = json!(rt);
            refresh_token = Some(rt);
        }
        if let Some(jkt) = &jkt {
            self.dpop.bind(&access_token, refresh_token.as_deref(), jkt);
        }
        json_response(StatusCode::OK, &answer)
    }

    /// RFC 7009: the client revokes one of its tokens; the answer is 200 whether or not the token was valid.
    async fn revoke(&self, headers: &http::HeaderMap, form: &[u8]) -> Response<Body> {
        let f: HashMap<String, String> = url::form_urlencoded::parse(form).into_owned().collect();
        if let Err(why) = self.client_authenticated(headers, &f).await {
            let why = self.refuse(why);
            return json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "invalid_client", "error_description": why}),
            );
        }
        let token = f.get("token").map(String::as_str).unwrap_or("");
        if let Ok(mut r) = self.refresh_tokens.lock() {
            r.remove(token);
        }
        if let Ok(mut a) = self.access_tokens.lock() {
            a.remove(token);
        }
        json_response(StatusCode::OK, &json!({}))
    }

    /// RFC 9126 §2: the client pushes its authorization parameters, authenticated like at the token endpoint; the
    /// answer names them by a one-time `request_uri` valid for 60 s.
    async fn pushed_request(&self, headers: &http::HeaderMap, form: &[u8]) -> Response<Body> {
        if let Some((status, answer)) = self.knobs().par_answer {
            return Response::builder()
                .status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST))
                .header(header::CONTENT_TYPE, "application/json")
                .body(body::full(answer))
                .unwrap_or_else(body::internal_error);
        }
        let f: HashMap<String, String> = url::form_urlencoded::parse(form).into_owned().collect();
        if let Err(why) = self.client_authenticated(headers, &f).await {
            let why = self.refuse(why);
            return json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "invalid_client", "error_description": why}),
            );
        }
        let invalid = |why: &'static str| {
            let why = self.refuse(why);
            json_response(StatusCode::BAD_REQUEST, &json!({"error": "invalid_request", "error_description": why}))
        };
        if f.contains_key("request_uri") {
            return invalid("request_uri must not be pushed (RFC 9126 §2.1)");
        }
        const CREDENTIALS: [&str; 3] = ["client_secret", "client_assertion", "client_assertion_type"];
        let params = url::form_urlencoded::parse(form).filter(|(k, _)| !CREDENTIALS.contains(&k.as_ref()));
        let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
        if let Err(why) = self.check_authorize(&query) {
            return invalid(why);
        }
        let request_uri = format!("urn:ietf:params:oauth:request_uri:{}", random::token(16));
        if let Ok(mut p) = self.pushed.lock() {
            p.insert(request_uri.clone(), (query, self.clock.now() + 60));
        }
        json_response(StatusCode::CREATED, &json!({"request_uri": request_uri, "expires_in": 60}))
    }

    /// `private_key_jwt` (RFC 7523 §3, OpenID Connect Core §9): the assertion is signed by a key the client
    /// registered (inline or at its `jwks_uri`), names the client as `iss` and `sub`, this issuer as `aud` (or the
    /// token endpoint), lives at most 60 s, and its `jti` was never seen before.
    async fn assertion_verified(&self, form: &HashMap<String, String>) -> Result<(), &'static str> {
        use jsonwebtoken::{Algorithm, Validation};
        if form.get("client_assertion_type").map(String::as_str) != Some(crate::oidc::client_auth::ASSERTION_TYPE) {
            return Err("client_assertion_type is not urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
        }
        let jwt = form.get("client_assertion").ok_or("no client_assertion, but the client uses private_key_jwt")?;
        if let Ok(mut a) = self.assertions.lock() {
            a.push(jwt.clone());
        }
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| "the client assertion is not a JWS")?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256) {
            return Err("the client assertion's alg is not RS256, PS256 or ES256");
        }
        let jwks = match (&self.client.jwks, &self.client.jwks_uri) {
            (Some(doc), _) => doc.to_string().into_bytes(),
            (None, Some(uri)) => self.fetch(uri).await.ok_or("the client's jwks_uri could not be fetched")?,
            (None, None) => return Err("the client registered no keys"),
        };
        let keys = crate::id_token::KeySet::from_jwks(&jwks).map_err(|_| "the client's key set has no usable key")?;
        let key =
            keys.find(header.kid.as_deref(), header.alg).ok_or("no registered client key for the assertion's kid")?;
        let mut v = Validation::new(header.alg);
        v.validate_exp = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Map<String, Value>>(jwt, key, &v)
            .map_err(|_| "the client assertion's signature does not verify")?
            .claims;
        let id = self.client.client_id.as_str();
        let text = |k: &str| claims.get(k).and_then(Value::as_str);
        if text("iss") != Some(id) || text("sub") != Some(id) {
            return Err("the client assertion's iss and sub are not the client id");
        }
        if form.get("client_id").is_some_and(|c| c != id) {
            return Err("client_id differs from the assertion's subject");
        }
        let accepted = self
            .knobs()
            .assertion_audiences
            .unwrap_or_else(|| vec![self.issuer.clone(), format!("{}/token", self.issuer)]);
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => accepted.contains(a),
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(|a| accepted.iter().any(|x| x == a)),
            _ => false,
        };
        if !aud_ok {
            return Err("the client assertion's aud is not accepted");
        }
        let now = self.clock.now();
        let exp = claims.get("exp").and_then(Value::as_i64).ok_or("the client assertion has no exp")?;
        if exp <= now {
            return Err("the client assertion expired");
        }
        if exp > now + 60 {
            return Err("the client assertion lives longer than 60 s");
        }
        let jti = text("jti").filter(|j| !j.is_empty()).ok_or("the client assertion has no jti")?;
        let mut used = self.used_jtis.lock().map_err(|_| "lock")?;
        used.retain(|_, e| *e > now);
        if used.insert(jti.to_owned(), exp).is_some() {
            return Err("the client assertion's jti was already used (replay)");
        }
        Ok(())
    }

    /// GETs a small document (a client's `jwks_uri`).
    async fn fetch(&self, uri: &str) -> Option<Vec<u8>> {
        let req = Request::get(uri).body(body::empty()).ok()?;
        let exchange = async {
            let resp = self.http.request(req).await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            body::collect_limited(resp.into_body(), 64 * 1024).await.ok().map(|b| b.to_vec())
        };
        tokio::time::timeout(std::time::Duration::from_secs(3), exchange).await.ok().flatten()
    }

    fn claims_for(&self, user: &str, nonce: Option<&str>, aud: &str) -> Map<String, Value> {
        let now = self.clock.now();
        let login = user.to_lowercase().chars().filter(|c| c.is_alphanumeric()).collect::<String>();
        let login = if login.is_empty() { "user".to_owned() } else { login };
        let roles: Vec<&str> = if login.starts_with("admin") { vec!["user", "admin"] } else { vec!["user"] };
        let mut c = json!({
            "iss": self.issuer, "sub": format!("dev|{login}"), "aud": aud, "iat": now, "exp": now + 3600,
            "name": user, "preferred_username": login, "email": format!("{login}@example.com"), "email_verified": true,
            "picture": format!("https://example.com/avatars/{login}.png"),
            "https://example.com/roles": roles,
        });
        if let Some(n) = nonce {
            c["nonce"] = json!(n);
        }
        match c {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn userinfo(&self, headers: &http::HeaderMap) -> Response<Body> {
        let url = format!("{}/userinfo", self.issuer);
        let token = match self.dpop.resource_token(&self.knobs().dpop, headers, &url, self.clock.now()) {
            Ok(t) => t,
            Err(r) => {
                self.refuse(r.why());
                return r.resource_response();
            }
        };
        let user = self.access_tokens.lock().ok().and_then(|a| a.get(&token).cloned());
        match user {
            Some(u) => {
                let mut c = self.claims_for(&u, None, &self.client.client_id);
                for k in ["iss", "aud", "iat", "exp"] {
                    c.remove(k);
                }
                if let Some(hook) = &self.knobs().userinfo_hook {
                    hook(&mut c);
                }
                json_response(StatusCode::OK, &Value::Object(c))
            }
            None => json_response(StatusCode::UNAUTHORIZED, &json!({"error": "invalid_token"})),
        }
    }

    fn end_session(&self, query: &str) -> Response<Body> {
        let p: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        match p.get("post_logout_redirect_uri") {
            // Exact string comparison with the registration (OpenID Connect RP-Initiated Logout §3): a prefix test
            // let `http://127.0.0.1.evil.example/` through.
            Some(target) if self.client.post_logout_redirect_uris.iter().any(|r| r == target) => Response::builder()
                .status(StatusCode::FOUND)
                .header(header::LOCATION, target)
                .body(body::empty())
                .unwrap_or_else(body::internal_error),
            Some(_) => {
                let why = self.refuse("post_logout_redirect_uri is not registered for this client");
                html_page(StatusCode::BAD_REQUEST, "Bad logout request", why, "")
            }
            None => html_page(StatusCode::OK, "Signed out", "You are signed out of the development issuer.", ""),
        }
    }
}

fn bad_authorize(why: &str) -> Response<Body> {
    html_page(StatusCode::BAD_REQUEST, "Bad authorization request", why, "")
}

fn url_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body::full(v.to_string()))
        .unwrap_or_else(body::internal_error)
}

//! `idgate demo`: the development issuer, an upstream that shows the headers it received, and idgate in front of
//! it, all on loopback, with nothing to configure.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{Response, StatusCode, header};
use tokio::net::TcpListener;

use crate::{
    app,
    body::{self, Body},
    clock::{Clock, SystemClock},
    config::{
        Secret, Settings, TokenAuthMethod,
        settings::{
            AdminSettings, DEFAULT_HEADERS, LogFormat, LogSettings, OidcSettings, ServerSettings, SessionSettings,
            UpstreamSettings,
        },
    },
    dev_issuer::{DevAlg, DevClient, DevIssuer},
    error::escape,
    server,
};

/// How the demo's issuer encrypts ID tokens (`idgate demo --encrypt-id-tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoEncryption {
    /// RSA-OAEP-256 + A256GCM to a fresh RSA-2048 key.
    RsaOaep256,
    /// ECDH-ES + A128CBC-HS256 to a fresh P-256 key.
    EcdhEs,
}

/// The demo's client authentication and request modes (`idgate demo --private-key-jwt --par`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Modes {
    /// `private_key_jwt` with a generated P-256 key, registered at the issuer by idgate's `/oauth2/jwks`.
    pub private_key_jwt: bool,
    /// Pushed authorization requests.
    pub par: bool,
    /// DPoP-bound tokens (RFC 9449), the issuer requiring proofs with nonces.
    pub dpop: bool,
}

/// Runs the demo until Ctrl-C. `port` is the proxy's port on 127.0.0.1.
/// With `modes.dpop`, the tokens are bound to a DPoP key and the issuer demands proofs with nonces.
pub async fn run(port: u16, encryption: Option<DemoEncryption>, modes: Modes) -> Result<(), String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let loopback = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let proxy_url = format!("http://127.0.0.1:{port}");
    let client = DevClient {
        client_id: "idgate-demo".into(),
        client_secret: crate::random::token(24),
        redirect_uris: vec![format!("{proxy_url}/oauth2/callback")],
        token_auth_method: if modes.private_key_jwt {
            TokenAuthMethod::PrivateKeyJwt
        } else {
            TokenAuthMethod::ClientSecretBasic
        },
        post_logout_redirect_uris: vec![],
        jwks: None,
        jwks_uri: modes.private_key_jwt.then(|| format!("{proxy_url}/oauth2/jwks")),
    };
    let issuer = DevIssuer::start(loopback(0), DevAlg::RS256, client.clone(), Arc::clone(&clock))
        .await
        .map_err(|e| format!("development issuer: {e}"))?;
    let upstream = spawn_echo_upstream(loopback(0)).await.map_err(|e| format!("demo upstream: {e}"))?;
    let mut settings = demo_settings(loopback(port), &client, issuer.issuer(), upstream)?;
    if let Some(mode) = encryption {
        use crate::id_token::jwe::{ContentEnc, DecryptionKeys, GeneratedKey, KeyAlg};
        let (key, alg, enc) = match mode {
            DemoEncryption::RsaOaep256 => (GeneratedKey::rsa(), KeyAlg::RsaOaep256, ContentEnc::A256Gcm),
            DemoEncryption::EcdhEs => (GeneratedKey::p256(), KeyAlg::EcdhEs, ContentEnc::A128CbcHs256),
        };
        let keys = DecryptionKeys::from_pem(key.private_pem.as_bytes()).map_err(|e| e.to_string())?;
        settings.oidc.id_token_decryption.keys = Some(Arc::new(keys));
        settings.oidc.id_token_decryption.required = true;
        issuer.configure(|k| {
            k.id_token_encryption = Some(crate::dev_issuer::IdTokenEncryption { key: key.public, kid: None, alg, enc })
        });
        eprintln!("  ID tokens are encrypted: {} + {}", alg.name(), enc.name());
    }
    if modes.private_key_jwt {
        let key = crate::signing::SigningKey::generate_p256().map_err(|e| e.to_string())?;
        eprintln!(
            "  client authentication: private_key_jwt (ES256, kid {}), key at {proxy_url}/oauth2/jwks",
            key.kid()
        );
        settings.oidc.token_auth_method = TokenAuthMethod::PrivateKeyJwt;
        settings.oidc.client_secret = None;
        settings.oidc.client_key = Some(crate::oidc::client_auth::ClientKey(Arc::new(key)));
    }
    if modes.par {
        eprintln!("  authorization requests are pushed (PAR): the browser carries only a request_uri");
        settings.oidc.par = true;
    }
    if modes.dpop {
        settings.oidc.dpop.mode = crate::oidc::dpop::DpopMode::On;
        issuer.configure(|k| {
            k.dpop.required = true;
            k.dpop.nonce = crate::dev_issuer::NonceMode::Required;
        });
    }
    let running = app::start(settings, clock).await.map_err(|e| e.to_string())?;
    if let Some(jkt) = running.state().provider.dpop().jkt().filter(|_| modes.dpop) {
        eprintln!("  Tokens are DPoP-bound to a generated P-256 key (jkt {jkt}); the issuer requires nonces.");
    }
    eprintln!(
        "\n  idgate demo is running.\n\n    Open {proxy_url}/ in a browser and log in with any name.\n\n  \
         upstream (echoes the headers it receives): http://{upstream}\n  \
         development issuer: {}\n  admin: http://{}/metrics\n\n  \
         !! The development issuer logs in anyone: it is for local use only. !!\n  Ctrl-C stops.\n",
        issuer.issuer(),
        running.admin_addr
    );
    let stop = running.stopper();
    tokio::spawn(async move {
        app::termination_signal().await;
        let _ = stop.send(true);
    });
    running.wait().await;
    issuer.stop();
    Ok(())
}

fn demo_settings(
    listen: SocketAddr,
    client: &DevClient,
    issuer: &str,
    upstream: SocketAddr,
) -> Result<Settings, String> {
    let url = |s: &str| url::Url::parse(s).map_err(|e| format!("{s}: {e}"));
    Ok(Settings {
        server: ServerSettings {
            listen,
            tls: None,
            trusted_proxies: vec![],
            prefix: "/oauth2".into(),
            max_header_bytes: 16384,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(2),
        },
        admin: AdminSettings { listen: SocketAddr::from(([127, 0, 0, 1], 0)) },
        upstream: UpstreamSettings {
            url: url(&format!("http://{upstream}"))?,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            allowed_upgrades: UpstreamSettings::default_upgrades(),
            strip_headers: vec![],
            issuer_header: crate::providers::ISSUER_HEADER,
        },
        oidc: OidcSettings {
            issuer: issuer.to_owned(),
            client_id: client.client_id.clone(),
            client_secret: Some(Secret::new(client.client_secret.clone())),
            redirect_url: url(&client.redirect_uris[0])?,
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
            allowed_algs: vec![jsonwebtoken::Algorithm::RS256, jsonwebtoken::Algorithm::ES256],
            extra_audiences: vec![],
            leeway: Duration::from_secs(60),
            token_auth_method: TokenAuthMethod::ClientSecretBasic,
            http_timeout: Duration::from_secs(5),
            jwks_refetch_interval: Duration::from_secs(10),
            post_logout_redirect_url: None,
            forward_access_token: false,
            userinfo_claims: false,
            id_token_decryption: Default::default(),
            dpop: Default::default(),
            bearer: Default::default(),
            client_key: None,
            client_assertion_audience: Default::default(),
            par: false,
        },
        session: SessionSettings {
            cookie_secure: false,
            ..SessionSettings::with_secret(Secret::new(crate::random::token(32)))
        },
        headers: DEFAULT_HEADERS
            .iter()
            .map(|(h, c)| (http::HeaderName::from_static(h), (*c).to_owned()))
            .chain([
                (http::HeaderName::from_static("x-auth-request-roles"), "https://example.com/roles".to_owned()),
                (http::HeaderName::from_static("x-auth-request-picture"), "picture".to_owned()),
            ])
            .collect(),
        routes: vec![],
        log: LogSettings { format: LogFormat::Text, level: "info".into() },
        assertion: Default::default(),
        ext_authz: Default::default(),
        telemetry: Default::default(),
        providers: vec![],
    })
}

/// An upstream that answers every request with a page listing the headers it received.
pub async fn spawn_echo_upstream(listen: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let handler = |req: http::Request<Body>, _peer| async move { echo(&req) };
    server::spawn_auxiliary(listener, handler, std::future::pending());
    Ok(addr)
}

fn echo(req: &http::Request<Body>) -> Response<Body> {
    let mut rows = String::new();
    for (name, value) in req.headers() {
        let v = String::from_utf8_lossy(value.as_bytes());
        let mark = if name.as_str().starts_with("x-auth-request-") { " style=\"background:#e6ffe6\"" } else { "" };
        rows.push_str(&format!(
            "<tr{mark}><td><code>{}</code></td><td><code>{}</code></td></tr>",
            escape(name.as_str()),
            escape(&v)
        ));
    }
    let user = req
        .headers()
        .get("x-auth-request-name")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Demo upstream</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:50rem;margin:2rem auto}}td{{padding:2px 8px;vertical-align:top}}</style></head>\
         <body><h1>Hello, {}</h1><p>This page is the application behind idgate. It received <code>{} {}</code> with these headers:</p>\
         <table>{rows}</table><form method=\"get\" action=\"/oauth2/sign_out\"><button>Sign out</button></form></body></html>",
        escape(&user),
        escape(req.method().as_str()),
        escape(req.uri().path()),
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(body::full(page))
        .unwrap_or_else(body::internal_error)
}

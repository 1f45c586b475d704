//! Interoperability with an independent, OpenID Certified provider (node `oidc-provider` 8.8.1, tests/interop/)
//! driven through its own login and consent pages, and with a real browser (Debian's Chromium via playwright-core).
//! Fails, rather than skips, when node packages or Chromium are missing: scripts/deps.sh installs them.

use std::{path::PathBuf, process::Stdio, time::Duration};

use http::StatusCode;
use idgate::{
    config::{Secret, Settings},
    id_token::jwe::{DecryptionKeys, GeneratedKey},
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpListener,
    process::{Child, Command},
};

use crate::harness::{Browser, Resp, TestGate};

pub(crate) fn interop_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    assert!(dir.join("node_modules/oidc-provider").exists(), "run `npm ci` in tests/interop (scripts/deps.sh does)");
    dir
}

/// The provider process.
pub struct Op {
    child: Option<Child>,
    pub port: u16,
    pub issuer: String,
    redirect_uris: String,
    post_logout: String,
    ttl: u64,
    keys: tempfile::TempDir,
    /// The back-channel logout URI registered for every client (empty: none).
    backchannel: String,
    /// idgate's `{prefix}/jwks`, where `idgate-pkjwt`'s keys are registered.
    client_jwks_uri: String,
    /// PAR required of every client (discovery says so).
    require_par: bool,
}

impl Op {
    pub async fn start(redirect_uris: &[String], post_logout: &[String], ttl: u64) -> Op {
        Self::start_with(redirect_uris, post_logout, ttl, false).await
    }

    /// With `require_par`, the provider requires PAR of every client and its discovery says so.
    pub async fn start_with(redirect_uris: &[String], post_logout: &[String], ttl: u64, require_par: bool) -> Op {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut op = Op {
            child: None,
            port,
            issuer: format!("http://127.0.0.1:{port}"),
            redirect_uris: redirect_uris.join(","),
            post_logout: post_logout.join(","),
            ttl,
            keys: tempfile::tempdir().unwrap(),
            backchannel: String::new(),
            client_jwks_uri: redirect_uris[0].replace("/oauth2/callback", "/oauth2/jwks"),
            require_par,
        };
        // idgate's ID-token decryption keys: the public halves registered at the provider, the private ones kept.
        let (rsa, ec) = (GeneratedKey::rsa(), GeneratedKey::p256());
        let public = serde_json::json!({"rsa": rsa.public_jwk, "ec": ec.public_jwk});
        std::fs::write(op.keys.path().join("enc-public.json"), public.to_string()).unwrap();
        std::fs::write(op.keys.path().join("enc-rsa.pem"), &rsa.private_pem).unwrap();
        std::fs::write(op.keys.path().join("enc-ec.pem"), &ec.private_pem).unwrap();
        op.restart().await;
        op
    }

    /// The private half of the decryption key registered for `idgate-enc-rsa` / `idgate-enc-ec`.
    pub fn decryption_key(&self, client: &str) -> PathBuf {
        self.keys.path().join(if client.ends_with("rsa") { "enc-rsa.pem" } else { "enc-ec.pem" })
    }

    /// Restarts the provider (same keys) with `uri` registered as every client's back-channel logout URI.
    pub async fn with_backchannel(mut self, uri: String) -> Op {
        self.backchannel = uri;
        self.restart().await;
        self
    }

    pub fn keys_file(&self) -> PathBuf {
        self.keys.path().join("jwks.json")
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
        }
    }

    pub async fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
        let mut child = Command::new("node")
            .arg(interop_dir().join("provider.mjs"))
            .env("PORT", self.port.to_string())
            .env("REDIRECT_URIS", &self.redirect_uris)
            .env("POST_LOGOUT_URIS", &self.post_logout)
            .env("ID_TOKEN_TTL", self.ttl.to_string())
            .env("KEYS_FILE", self.keys_file())
            .env("ENC_KEYS_FILE", self.keys.path().join("enc-public.json"))
            .env("BACKCHANNEL_URI", &self.backchannel)
            .env("CLIENT_JWKS_URI", &self.client_jwks_uri)
            .env("REQUIRE_PAR", if self.require_par { "1" } else { "0" })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("listening") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "oidc-provider did not start");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A gate in front of the provider, for client `client` (`idgate-rs256`, …).
async fn gate_for(client: &'static str, ttl: u64, f: impl FnOnce(&mut Settings) + 'static) -> (TestGate, Op) {
    gate_for_op(client, ttl, false, f).await
}

/// [`gate_for`], with the provider requiring PAR of every client when `require_par`.
async fn gate_for_op(
    client: &'static str,
    ttl: u64,
    require_par: bool,
    f: impl FnOnce(&mut Settings) + 'static,
) -> (TestGate, Op) {
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", public.local_addr().unwrap());
    let op =
        Op::start_with(&[format!("{base}/oauth2/callback")], &[format!("{base}/signed-out")], ttl, require_par).await;
    let issuer = op.issuer.clone();
    // The encrypting clients' ID tokens open with the key registered for them at the provider.
    let decryption = client.starts_with("idgate-enc-").then(|| {
        let pem = std::fs::read(op.decryption_key(client)).unwrap();
        std::sync::Arc::new(DecryptionKeys::from_file_contents(&pem).unwrap())
    });
    let gate = TestGate::builder()
        .public(public)
        .settings(move |s| {
            s.oidc.issuer = issuer;
            s.oidc.client_id = client.into();
            s.oidc.client_secret = Some(Secret::new(format!("{client}-secret-that-is-long-enough-for-hs256-keys")));
            s.oidc.post_logout_redirect_url = Some(format!("{base}/signed-out").parse().unwrap());
            if decryption.is_some() {
                s.oidc.id_token_decryption.keys = decryption;
            }
            f(s);
        })
        .spawn()
        .await;
    (gate, op)
}

/// Walks the provider's own pages (login form, consent form) until it sends the browser back to idgate.
pub(crate) async fn through_provider(b: &Browser, op: &Op, mut resp: Resp, user: &str) -> Resp {
    for _ in 0..12 {
        if resp.status.is_redirection() {
            let next = Browser::resolve(&op.issuer, resp.location());
            if !next.starts_with(&op.issuer) {
                return resp;
            }
            resp = b.get(&next).await;
            continue;
        }
        let html = resp.text();
        let form = html
            .split("<form")
            .nth(1)
            .unwrap_or_else(|| panic!("provider page without a form ({}): {html}", resp.status));
        let action = form.split("action=\"").nth(1).unwrap().split('"').next().unwrap().replace("&amp;", "&");
        let mut fields: Vec<(String, String)> = Vec::new();
        for input in form.split("<input").skip(1) {
            let attr =
                |name: &str| input.split(&format!("{name}=\"")).nth(1).map(|v| v.split('"').next().unwrap().to_owned());
            let Some(name) = attr("name") else { continue };
            let value = match name.as_str() {
                "login" => user.to_owned(),
                "password" => "any-password".to_owned(),
                _ => attr("value").unwrap_or_default(),
            };
            fields.push((name, value));
        }
        // A named submit button (the provider's "Yes, sign me out") is part of what a browser sends.
        if let Some(button) = form.split("<button").skip(1).find(|b| b.contains("name=\"")) {
            let attr = |name: &str| {
                button.split(&format!("{name}=\"")).nth(1).map(|v| v.split('"').next().unwrap().to_owned())
            };
            fields.push((attr("name").unwrap(), attr("value").unwrap_or_default()));
        }
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&fields).finish();
        resp = b.post_form(&Browser::resolve(&op.issuer, &action), &body).await;
    }
    panic!("the provider never sent the browser back");
}

/// The whole login at the provider, from a protected path; returns the page the upstream answered.
async fn login(gate: &TestGate, op: &Op, b: &Browser, path: &str, user: &str) -> Resp {
    let first = b.get(&format!("{}{path}", gate.base)).await;
    assert_eq!(first.status, StatusCode::FOUND);
    let start = b.get(&Browser::resolve(&gate.base, first.location())).await;
    assert_eq!(start.status, StatusCode::FOUND, "start: {}", start.text());
    let at_op = b.get(start.location()).await;
    let back = through_provider(b, op, at_op, user).await;
    let callback = b.get(&Browser::resolve(&gate.base, back.location())).await;
    if callback.status != StatusCode::FOUND {
        return callback;
    }
    b.get(&Browser::resolve(&gate.base, callback.location())).await
}

#[tokio::test]
async fn login_with_each_allowed_algorithm_and_claims_forwarded() {
    for client in ["idgate-rs256", "idgate-es256"] {
        let (gate, op) = gate_for(client, 3600, |_| {}).await;
        let b = Browser::new();
        let page = login(&gate, &op, &b, "/app", "alice").await;
        assert_eq!(page.status, StatusCode::OK, "{client}: {}", page.text());
        assert_eq!(page.upstream_header("x-auth-request-user").as_deref(), Some("alice"), "{client}");
        assert_eq!(page.upstream_header("x-auth-request-email").as_deref(), Some("alice@example.com"));
        assert_eq!(
            page.upstream_header("x-auth-request-roles").as_deref(),
            Some("user,admin"),
            "namespaced array claim"
        );
        assert!(!crate::harness::contains_jwt(&page.text()));
        let zoe = login(&gate, &op, &Browser::new(), "/", "zoe").await;
        assert_eq!(zoe.upstream_header("x-auth-request-name").as_deref(), Some("Zoë Ünïcødé 山田"));
        let bob = login(&gate, &op, &Browser::new(), "/", "bob").await;
        assert_eq!(bob.status, StatusCode::OK);
        assert!(bob.upstream_header("x-auth-request-roles").is_none(), "absent claim → absent header");
        gate.shutdown().await;
    }
    let (gate, op) = gate_for("idgate-ps256", 3600, |s| s.oidc.allowed_algs.push(jsonwebtoken::Algorithm::PS256)).await;
    let page = login(&gate, &op, &Browser::new(), "/", "alice").await;
    assert_eq!(page.status, StatusCode::OK, "PS256 when allowed: {}", page.text());
    gate.shutdown().await;
}

/// R8 against a real issuer: oidc-provider encrypts the ID token to the key registered for the client (RSA-OAEP-256
/// + A256GCM, ECDH-ES + A128CBC-HS256); idgate decrypts, validates the nested JWS and lands with the identity. With
/// `require_encrypted_id_token` the provider's plain tokens for another client are refused.
#[tokio::test]
async fn encrypted_id_tokens_from_the_provider_log_in() {
    for client in ["idgate-enc-rsa", "idgate-enc-ec"] {
        let (gate, op) = gate_for(client, 300, |s| {
            s.oidc.id_token_decryption.required = true;
            s.oidc.scopes.push("offline_access".into());
        })
        .await;
        let b = Browser::new();
        let page = login(&gate, &op, &b, "/app", "alice").await;
        assert_eq!(page.status, StatusCode::OK, "{client}: {}", page.text());
        assert_eq!(page.upstream_header("x-auth-request-user").as_deref(), Some("alice"), "{client}");
        assert!(!crate::harness::contains_jwt(&page.text()));
        // Refresh: the provider's new ID token is encrypted too, and opens the same way.
        let before = b.cookie("idgate").unwrap();
        gate.clock.advance(280);
        let r = b.get(&format!("{}/app", gate.base)).await;
        assert_eq!(r.status, StatusCode::OK, "{client}: {}", r.text());
        assert_ne!(b.cookie("idgate").unwrap(), before, "{client}: renewed through the refresh token");
        let metrics = gate.state().metrics.render();
        assert!(metrics.contains("idgate_refreshes_total{result=\"success\"} 1"), "{client}: {metrics}");
        // RP-initiated sign-out: the provider takes idgate's id_token_hint and sends the browser back.
        let form = b.get(&format!("{}/oauth2/sign_out", gate.base)).await;
        let csrf = form.text().split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        let out = b
            .post_form(&format!("{}/oauth2/sign_out", gate.base), &format!("csrf={}", crate::harness::urlencode(&csrf)))
            .await;
        assert!(out.location().starts_with(&format!("{}/session/end", op.issuer)), "{client}: {}", out.location());
        let end = b.get(out.location()).await;
        let back = through_provider(&b, &op, end, "alice").await;
        assert!(back.location().contains("/signed-out?state="), "{client}: {}", back.location());
        gate.shutdown().await;
    }
    // The same provider's plain JWS (another client) is refused when encryption is required.
    let (gate, op) = gate_for("idgate-rs256", 3600, |s| {
        s.oidc.id_token_decryption.required = true;
        s.oidc.id_token_decryption.keys = Some(std::sync::Arc::new(
            DecryptionKeys::from_file_contents(GeneratedKey::p256().private_pem.as_bytes()).unwrap(),
        ));
    })
    .await;
    let cb = login(&gate, &op, &Browser::new(), "/app", "alice").await;
    assert_eq!(cb.status, StatusCode::UNAUTHORIZED, "{}", cb.text());
    assert!(cb.text().contains("token was not accepted"), "{}", cb.text());
    gate.shutdown().await;
}

#[tokio::test]
async fn ps256_and_hs256_are_refused_unless_allowed() {
    for client in ["idgate-ps256", "idgate-hs256"] {
        let (gate, op) = gate_for(client, 3600, |_| {}).await;
        let b = Browser::new();
        let page = login(&gate, &op, &b, "/", "alice").await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{client}: {}", page.text());
        assert!(b.cookie("idgate").is_none(), "{client}");
        gate.shutdown().await;
    }
}

#[tokio::test]
async fn refresh_with_offline_access_and_a_five_second_token() {
    let (gate, op) = gate_for("idgate-rs256", 300, |s| s.oidc.scopes.push("offline_access".into())).await;
    let b = Browser::new();
    assert_eq!(login(&gate, &op, &b, "/", "alice").await.status, StatusCode::OK);
    let before = b.cookie("idgate").unwrap();
    gate.clock.advance(280);
    let r = b.get(&format!("{}/", gate.base)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_ne!(b.cookie("idgate").unwrap(), before, "renewed through the provider's refresh token");
    assert!(gate.state().metrics.render().contains("idgate_refreshes_total{result=\"success\"} 1"));
    gate.shutdown().await;

    let (gate, op) = gate_for("idgate-es256", 5, |_| {}).await;
    let b = Browser::new();
    assert_eq!(login(&gate, &op, &b, "/", "alice").await.status, StatusCode::OK);
    let cookie = b.cookie("idgate").unwrap();
    // The provider dates its tokens by the real clock: 6 s past the real now is past the token's exp, however long
    // the login took on a loaded machine.
    gate.clock.set(idgate::clock::Clock::now(&idgate::clock::SystemClock) + 6);
    let probe = Browser::new().api();
    probe.set_cookie("idgate", &cookie);
    assert_eq!(
        probe.get(&format!("{}/", gate.base)).await.status,
        StatusCode::UNAUTHORIZED,
        "a 5-second token ends the session"
    );
    gate.shutdown().await;
}

/// RFC 7009 against a real provider: sign-out revokes the refresh token, so a copy of the (cookie) session replayed
/// to another replica, which never heard of the sign-out, cannot be refreshed there.
#[tokio::test]
async fn sign_out_revokes_the_refresh_token_at_the_provider() {
    let (gate, op) = gate_for("idgate-rs256", 300, |s| s.oidc.scopes.push("offline_access".into())).await;
    let other = gate.replica(|_| {}).await;
    let b = Browser::new();
    assert_eq!(login(&gate, &op, &b, "/", "alice").await.status, StatusCode::OK);
    let copy = b.cookie("idgate").unwrap();
    crate::sessions::sign_out(&gate, &b).await;
    gate.clock.advance(280);
    let probe = Browser::new().api();
    probe.set_cookie("idgate", &copy);
    let r = probe.get(&format!("http://{}/", other.public_addr)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(other.state().metrics.render().contains("idgate_refreshes_total{result=\"refused\"} 1"));
    other.shutdown().await;
    gate.shutdown().await;
}

#[tokio::test]
async fn rp_initiated_logout_ends_the_providers_session() {
    let (gate, op) = gate_for("idgate-rs256", 3600, |_| {}).await;
    let b = Browser::new();
    assert_eq!(login(&gate, &op, &b, "/", "alice").await.status, StatusCode::OK);
    let page = b.get(&format!("{}/oauth2/sign_out", gate.base)).await;
    let token = page.text().split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let out = b
        .post_form(&format!("{}/oauth2/sign_out", gate.base), &format!("csrf={}", crate::harness::urlencode(&token)))
        .await;
    assert!(out.location().starts_with(&format!("{}/session/end", op.issuer)), "{}", out.location());
    let end = b.get(out.location()).await;
    let back = through_provider(&b, &op, end, "alice").await;
    assert!(back.location().contains("/signed-out?state="), "back at post_logout_redirect_uri: {}", back.location());
    // The provider forgot the user: the next login shows its login form again.
    let first = b.get(&format!("{}/", gate.base)).await;
    let start = b.get(&Browser::resolve(&gate.base, first.location())).await;
    let mut at_op = b.get(start.location()).await;
    while at_op.status.is_redirection() && Browser::resolve(&op.issuer, at_op.location()).starts_with(&op.issuer) {
        at_op = b.get(&Browser::resolve(&op.issuer, at_op.location())).await;
    }
    assert!(at_op.text().contains("name=\"login\""), "the provider asks for a login again");
    gate.shutdown().await;
}

#[tokio::test]
async fn key_rotation_soft_and_hard_is_followed_with_one_fetch_each() {
    let (gate, mut op) =
        gate_for("idgate-rs256", 3600, |s| s.oidc.jwks_refetch_interval = Duration::from_secs(1)).await;
    let b = Browser::new();
    assert_eq!(login(&gate, &op, &b, "/", "alice").await.status, StatusCode::OK);
    let fetches = || {
        let m = gate.state().metrics.render();
        m.lines()
            .find(|l| l.starts_with("idgate_jwks_fetches_total{result=\"success\"}"))
            .and_then(|l| l.split(' ').nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let start = fetches();
    for hard in [false, true] {
        let mut keys: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(op.keys_file()).unwrap()).unwrap();
        let old = keys["keys"].as_array().unwrap().clone();
        let rsa = std::process::Command::new("node")
            .args(["-e", "const c=require('crypto');const k=c.generateKeyPairSync('rsa',{modulusLength:2048}).privateKey.export({format:'jwk'});console.log(JSON.stringify({...k,kid:'rsa-'+c.randomBytes(6).toString('hex'),use:'sig'}))"])
            .output()
            .unwrap();
        let new: serde_json::Value = serde_json::from_slice(&rsa.stdout).unwrap();
        let mut list = vec![new];
        if !hard {
            list.extend(old);
        } else {
            list.extend(old.into_iter().filter(|k| k["kty"] == "EC"));
        }
        keys["keys"] = serde_json::Value::Array(list);
        std::fs::write(op.keys_file(), keys.to_string()).unwrap();
        op.restart().await;
        // Unknown-kid fetches are throttled to one per `jwks_refetch_interval`.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let page = login(&gate, &op, &Browser::new(), "/", "alice").await;
        assert_eq!(page.status, StatusCode::OK, "hard={hard}: {}", page.text());
        // Sessions made before the rotation keep working: cookies are not re-verified against the JWKS.
        assert_eq!(b.get(&format!("{}/", gate.base)).await.status, StatusCode::OK);
    }
    assert_eq!(fetches(), start + 2, "one JWKS fetch per rotation");
    gate.shutdown().await;
}

#[tokio::test]
async fn provider_down_keeps_sessions_and_new_logins_get_a_clear_503() {
    let (gate, mut op) = gate_for("idgate-rs256", 3600, |_| {}).await;
    let b = Browser::new();
    assert_eq!(login(&gate, &op, &b, "/", "alice").await.status, StatusCode::OK);
    op.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.get(&format!("{}/", gate.base)).await.status, StatusCode::OK, "existing session keeps working");
    // Wait out the short reachability memory, then a new login is told clearly.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let newcomer = Browser::new();
    let start = newcomer.get(&format!("{}/oauth2/start?rd=/", gate.base)).await;
    assert_eq!(start.status, StatusCode::SERVICE_UNAVAILABLE, "{}", start.text());
    assert!(start.text().contains("identity provider is not available"));
    op.restart().await;
    assert_eq!(login(&gate, &op, &newcomer, "/", "bob").await.status, StatusCode::OK, "recovers when it returns");
    gate.shutdown().await;
}

#[tokio::test]
async fn a_real_browser_logs_in_reloads_opens_a_tab_and_signs_out() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("Debian's chromium is not installed: run scripts/deps.sh");
    let upstream = idgate::demo::spawn_echo_upstream("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", public.local_addr().unwrap());
    let op = Op::start(&[format!("{base}/oauth2/callback")], &[format!("{base}/signed-out")], 3600).await;
    let issuer = op.issuer.clone();
    let post = format!("{base}/signed-out");
    let gate = TestGate::builder()
        .public(public)
        .upstream(upstream)
        .settings(move |s| {
            s.oidc.issuer = issuer;
            s.oidc.client_id = "idgate-rs256".into();
            s.oidc.client_secret = Some(Secret::new("idgate-rs256-secret-that-is-long-enough-for-hs256-keys"));
            s.oidc.post_logout_redirect_url = Some(post.parse().unwrap());
            s.routes = vec![crate::harness::route("/signed-out", idgate::config::AuthMode::Public)];
        })
        .spawn()
        .await;
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();
    let status = Command::new("node")
        .arg(interop_dir().join("browser.mjs"))
        .env("BASE_URL", &gate.base)
        .env("ISSUER", &op.issuer)
        .env("CHROMIUM", chromium)
        .env("OUT_DIR", &out_dir)
        .env("USER_NAME", "zoe")
        .env("EXPECTED_NAME", "Zoë Ünïcødé 山田")
        .status()
        .await
        .unwrap();
    assert!(status.success(), "the browser scenario failed (screenshots in {})", out_dir.display());
    for shot in ["1-provider-login.png", "2-landed.png", "3-reloaded.png", "4-second-tab.png", "5-signed-out.png"] {
        let meta = std::fs::metadata(out_dir.join(shot)).unwrap_or_else(|_| panic!("{shot} missing"));
        assert!(meta.len() > 1000, "{shot} is a real picture");
    }
    gate.shutdown().await;
}

// === DPoP (RFC 9449) ===

fn dpop_offline(s: &mut Settings) {
    s.oidc.scopes.push("offline_access".into());
    s.oidc.dpop.mode = idgate::oidc::dpop::DpopMode::On;
}

/// DPoP against a real issuer: oidc-provider binds the tokens of `idgate-dpop` (`dpop_bound_access_tokens`) and
/// demands a server nonce in every proof. The login lands (the first proof is answered `use_dpop_nonce`, the retry
/// carries the nonce; userinfo is called as `DPoP` with `ath`), the refresh proves a key again, sign-out works. The
/// refresh goes through a replica holding another (generated) key, and succeeds: the provider binds refresh tokens
/// of public clients only (RFC 9449 §5), and idgate is a confidential one. (The provider dates its tokens by the real
/// clock, so one refresh per test.)
#[tokio::test]
async fn dpop_bound_tokens_from_the_provider_log_in_refresh_and_sign_out() {
    let (gate, op) = gate_for("idgate-dpop", 300, |s| {
        dpop_offline(s);
        s.oidc.userinfo_claims = true;
    })
    .await;
    let other = gate.replica(|_| {}).await;
    let b = Browser::new();
    let page = login(&gate, &op, &b, "/app", "alice").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert_eq!(page.upstream_header("x-auth-request-user").as_deref(), Some("alice"));
    assert_eq!(page.upstream_header("x-auth-request-name").as_deref(), Some("Alice Example"));
    gate.clock.advance(280);
    let r = b.get(&format!("http://{}/", other.public_addr)).await;
    assert_eq!(r.status, StatusCode::OK, "refreshed by a replica holding another key: {}", r.text());
    assert!(other.state().metrics.render().contains("idgate_refreshes_total{result=\"success\"} 1"));
    crate::sessions::sign_out(&gate, &b).await;
    assert!(b.cookie("idgate").is_none());
    other.shutdown().await;
    gate.shutdown().await;
}

/// An RSA key from `oidc.dpop_key_file`: the provider lists ES256 and PS256 only, so idgate signs PS256; the key is
/// named in `dpop_jkt`, which the provider checks against the code's proof.
#[tokio::test]
async fn a_configured_rsa_dpop_key_signs_what_the_provider_accepts_and_binds_the_code() {
    let key = idgate::oidc::dpop::DpopKey::from_pem(GeneratedKey::rsa().private_pem.as_bytes()).unwrap();
    let (gate, op) = gate_for("idgate-dpop", 300, move |s| {
        dpop_offline(s);
        s.oidc.dpop.key = Some(key);
    })
    .await;
    let b = Browser::new();
    let start = b.get(&format!("{}/oauth2/start", gate.base)).await;
    assert!(start.location().contains("dpop_jkt="), "{}", start.location());
    let page = login(&gate, &op, &b, "/", "zoe").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    gate.clock.advance(280);
    assert_eq!(b.get(&format!("{}/", gate.base)).await.status, StatusCode::OK);
    gate.shutdown().await;
}

/// `oidc.dpop` unset: the provider refuses the proofless request of this client with a bare `invalid_grant`
/// ("grant request is invalid", the reason kept to itself), which idgate does not read as a DPoP demand: the login
/// fails, once, without a retry, and DPoP stays off — against this provider the client needs `oidc.dpop = true`
/// (README, DPoP).
#[tokio::test]
async fn the_providers_bare_refusal_is_not_taken_for_a_dpop_demand() {
    let (gate, op) = gate_for("idgate-dpop", 3600, |_| {}).await;
    let cb = login(&gate, &op, &Browser::new(), "/", "bob").await;
    assert_eq!(cb.status, StatusCode::BAD_GATEWAY, "{}", cb.text());
    assert!(!gate.state().provider.dpop().active());
    assert_eq!(gate.login_results().get("issuer_unavailable"), Some(&1));
    gate.shutdown().await;
}

/// Issue 16 in a real browser: a form filled while the session ends is submitted, the user logs in again at the
/// provider, and the upstream receives the original post — urlencoded, and multipart with a binary file — once, at
/// the original URL. The provider dates tokens by the real clock, so the session ends for real: the upstream's
/// `/expire` waits out the token's lifetime, then brings the gate's clock to the real time.
#[tokio::test]
async fn a_real_browser_keeps_a_form_post_over_a_re_login() {
    use std::sync::{Arc, Mutex, OnceLock};

    use http_body_util::{BodyExt, Full};
    use idgate::clock::{Clock, SystemClock, TestClock};

    const TTL: u64 = 4;
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("Debian's chromium is not installed: run scripts/deps.sh");
    let clock: Arc<OnceLock<Arc<TestClock>>> = Arc::default();
    let received: Arc<Mutex<Vec<(String, String, bytes::Bytes)>>> = Arc::default();
    let (c, log) = (Arc::clone(&clock), Arc::clone(&received));
    let upstream = crate::harness::spawn_upstream(move |req: http::Request<hyper::body::Incoming>| {
        let (clock, log) = (Arc::clone(&c), Arc::clone(&log));
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let target = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
            let html = |s: String| {
                http::Response::builder()
                    .header("content-type", "text/html; charset=utf-8")
                    .body(Full::new(bytes::Bytes::from(s)))
                    .unwrap()
            };
            match (parts.method.as_str(), parts.uri.path()) {
                ("GET", "/expire") => {
                    tokio::time::sleep(Duration::from_secs(TTL + 1)).await;
                    clock.get().unwrap().set(SystemClock.now());
                    html("expired".into())
                }
                ("GET", "/forms") => html(
                    "<!doctype html><meta charset=utf-8><title>forms</title>\
                     <form id=orders method=post action=\"/orders?step=2\"><input name=title>\
                     <textarea name=note></textarea><button type=submit>Order</button></form>\
                     <form id=upload method=post action=/upload enctype=multipart/form-data><input name=title>\
                     <input type=file name=file><button type=submit>Upload</button></form>"
                        .into(),
                ),
                ("POST", _) => {
                    let content_type = parts.headers.get("content-type").unwrap().to_str().unwrap().to_owned();
                    let count = {
                        let mut log = log.lock().unwrap();
                        log.push((target.clone(), content_type.clone(), body.clone()));
                        log.iter().filter(|(t, _, _)| *t == target).count()
                    };
                    let sha: String = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body)
                        .as_ref()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    html(format!(
                        "<!doctype html><meta charset=utf-8><h1 id=received>received</h1><p id=sha>{sha}</p>\
                         <p id=len>{}</p><p id=count>{count}</p><p id=type>{}</p>",
                        body.len(),
                        idgate::error::escape(&content_type)
                    ))
                }
                _ => html("<!doctype html><h1>ok</h1>".into()),
            }
        }
    })
    .await;
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", public.local_addr().unwrap());
    let op = Op::start(&[format!("{base}/oauth2/callback")], &[], TTL).await;
    let issuer = op.issuer.clone();
    let gate = TestGate::builder()
        .public(public)
        .upstream(upstream)
        .settings(move |s| {
            s.oidc.issuer = issuer;
            s.oidc.client_id = "idgate-rs256".into();
            s.oidc.client_secret = Some(Secret::new("idgate-rs256-secret-that-is-long-enough-for-hs256-keys"));
            s.session.store = idgate::config::StoreKind::Memory;
        })
        .spawn()
        .await;
    clock.set(Arc::clone(&gate.clock)).unwrap();
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    std::fs::create_dir_all(&out_dir).unwrap();
    let status = Command::new("node")
        .arg(interop_dir().join("post.mjs"))
        .env("BASE_URL", &gate.base)
        .env("ISSUER", &op.issuer)
        .env("UPSTREAM", format!("http://{upstream}"))
        .env("CHROMIUM", chromium)
        .env("OUT_DIR", &out_dir)
        .env("USER_NAME", "zoe")
        .status()
        .await
        .unwrap();
    assert!(status.success(), "the preserved-post browser scenario failed (screenshots in {})", out_dir.display());
    let log = received.lock().unwrap().clone();
    let targets: Vec<&str> = log.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(targets, ["/orders?step=2", "/upload"], "each form reached the upstream once");
    let (_, ty, body) = &log[1];
    let boundary = ty.split("boundary=").nth(1).unwrap();
    let file: Vec<u8> = (0..6000usize).map(|i| ((i * 7) % 256) as u8).collect();
    assert!(body.windows(file.len()).any(|w| w == file.as_slice()), "the file's bytes arrive unchanged");
    assert!(body.ends_with(format!("--{boundary}--\r\n").as_bytes()), "Chromium's own boundary, unchanged");
    gate.shutdown().await;
}

/// Issue 13: `private_key_jwt` against a real issuer. oidc-provider fetches the client's keys from idgate's own
/// `{prefix}/jwks` (its registered `jwks_uri`) and verifies every assertion: at the token endpoint for the code and
/// the refresh, at the revocation endpoint on sign-out (a copy of the session can then not be refreshed elsewhere), and
/// at the PAR endpoint.
#[tokio::test]
async fn private_key_jwt_logs_in_refreshes_and_signs_out_at_the_provider() {
    use idgate::{config::TokenAuthMethod, oidc::client_auth::ClientKey, signing::SigningKey};
    let keyed = |par: bool| {
        move |s: &mut Settings| {
            s.oidc.token_auth_method = TokenAuthMethod::PrivateKeyJwt;
            s.oidc.client_secret = None;
            s.oidc.client_key = Some(ClientKey(std::sync::Arc::new(SigningKey::generate_p256().unwrap())));
            s.oidc.scopes.push("offline_access".into());
            s.oidc.par = par;
        }
    };
    let (gate, op) = gate_for("idgate-pkjwt", 300, keyed(false)).await;
    let b = Browser::new();
    let page = login(&gate, &op, &b, "/app", "alice").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert_eq!(page.upstream_header("x-auth-request-user").as_deref(), Some("alice"));
    // A second session, signed out (its refresh token revoked) before both near their end.
    let other = gate.replica(|_| {}).await;
    let leaving = Browser::new();
    assert_eq!(login(&gate, &op, &leaving, "/", "bob").await.status, StatusCode::OK);
    let copy = leaving.cookie("idgate").unwrap();
    crate::sessions::sign_out(&gate, &leaving).await;
    let before = b.cookie("idgate").unwrap();
    gate.clock.advance(280);
    assert_eq!(b.get(&format!("{}/", gate.base)).await.status, StatusCode::OK);
    assert_ne!(b.cookie("idgate").unwrap(), before, "refreshed with a client assertion");
    assert!(gate.state().metrics.render().contains("idgate_refreshes_total{result=\"success\"} 1"));
    let probe = Browser::new().api();
    probe.set_cookie("idgate", &copy);
    let r = probe.get(&format!("http://{}/", other.public_addr)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "revoked at sign-out: {}", r.text());
    assert!(other.state().metrics.render().contains("idgate_refreshes_total{result=\"refused\"} 1"));
    other.shutdown().await;
    gate.shutdown().await;

    // The assertion also authenticates the pushed authorization request.
    let (gate, op) = gate_for("idgate-pkjwt", 300, keyed(true)).await;
    let page = login(&gate, &op, &Browser::new(), "/", "bob").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    gate.shutdown().await;

    // The same client authenticating with a secret is refused by the provider: a readable page, not a 500.
    let (gate, op) = gate_for("idgate-pkjwt", 300, |_| {}).await;
    let cb = login(&gate, &op, &Browser::new(), "/", "alice").await;
    assert_eq!(cb.status, StatusCode::BAD_GATEWAY, "{}", cb.text());
    assert!(cb.text().contains("did not accept the client credentials of this site (invalid_client)"), "{}", cb.text());
    gate.shutdown().await;
}

/// Issue 13: PAR against a real issuer, for a client registered with `require_pushed_authorization_requests`: the
/// browser carries only `client_id` and `request_uri`; login, refresh and sign-out work. Without PAR the provider
/// refuses the same client. When the provider requires PAR of everyone, discovery says so and idgate pushes unasked.
#[tokio::test]
async fn pushed_authorization_requests_log_in_at_the_provider() {
    let (gate, op) = gate_for("idgate-par", 300, |s| {
        s.oidc.par = true;
        s.oidc.scopes.push("offline_access".into());
    })
    .await;
    let b = Browser::new();
    let start = b.get(&format!("{}/oauth2/start?rd=/app", gate.base)).await;
    let names: Vec<String> =
        url::Url::parse(start.location()).unwrap().query_pairs().map(|(k, _)| k.into_owned()).collect();
    assert_eq!(names, ["client_id", "request_uri"], "{}", start.location());
    let page = login(&gate, &op, &b, "/app", "alice").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert_eq!(page.upstream_header("x-auth-request-user").as_deref(), Some("alice"));
    let before = b.cookie("idgate").unwrap();
    gate.clock.advance(280);
    assert_eq!(b.get(&format!("{}/", gate.base)).await.status, StatusCode::OK);
    assert_ne!(b.cookie("idgate").unwrap(), before, "refreshed");
    crate::sessions::sign_out(&gate, &b).await;
    assert_eq!(b.api().get(&format!("{}/", gate.base)).await.status, StatusCode::UNAUTHORIZED);
    gate.shutdown().await;

    // The provider refuses this client's unpushed requests (back at the callback with its error).
    let (gate, op) = gate_for("idgate-par", 300, |_| {}).await;
    let page = login(&gate, &op, &Browser::new(), "/", "alice").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.text());
    assert!(page.text().contains("did not log you in (invalid_request)"), "{}", page.text());
    gate.shutdown().await;

    let (gate, op) = gate_for_op("idgate-rs256", 3600, true, |_| {}).await;
    assert!(!gate.state().settings.oidc.par);
    let b = Browser::new();
    let start = b.get(&format!("{}/oauth2/start?rd=/", gate.base)).await;
    assert!(start.location().contains("request_uri="), "{}", start.location());
    assert!(!start.location().contains("state="), "{}", start.location());
    assert_eq!(login(&gate, &op, &b, "/", "alice").await.status, StatusCode::OK);
    gate.shutdown().await;
}

/// The provider's tokens for `resource` (RFC 8707), as a client of its own would get them: an authorization-code
/// flow with PKCE through the provider's pages for `user`, as client `idgate-rs256` (redirected to the gate's
/// callback, which is never called), then the token request naming the resource. Returns the access token and the
/// ID token of the same grant.
async fn resource_tokens(gate: &TestGate, op: &Op, user: &str, resource: &str) -> (String, String) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let verifier = b64.encode(idgate::random::bytes::<32>());
    let challenge = b64.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()));
    let client = "idgate-rs256";
    let callback = format!("{}/oauth2/callback", gate.base);
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("client_id", client),
            ("response_type", "code"),
            ("redirect_uri", &callback),
            ("scope", "openid api:read"),
            ("resource", resource),
            ("state", "interop-state"),
            ("nonce", "interop-nonce"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .finish();
    let b = Browser::new();
    let at_op = b.get(&format!("{}/auth?{query}", op.issuer)).await;
    let back = through_provider(&b, op, at_op, user).await;
    let location = url::Url::parse(&Browser::resolve(&gate.base, back.location())).unwrap();
    let code = location.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned());
    let code = code.unwrap_or_else(|| panic!("no code: {location}"));
    let form = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &callback),
            ("code_verifier", &verifier),
            ("resource", resource),
        ])
        .finish();
    let mut h = http::HeaderMap::new();
    h.insert(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded".parse().unwrap());
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{client}:{client}-secret-that-is-long-enough-for-hs256-keys"));
    h.insert(http::header::AUTHORIZATION, format!("Basic {basic}").parse().unwrap());
    let token = b.api().send(http::Method::POST, &format!("{}/token", op.issuer), h, form.into()).await;
    assert_eq!(token.status, StatusCode::OK, "token request: {}", token.text());
    let json = token.json();
    (json["access_token"].as_str().unwrap().to_owned(), json["id_token"].as_str().unwrap().to_owned())
}

/// Issue 14 against a real provider: its RFC 9068 JWT access tokens (resource indicators) and its opaque ones (RFC
/// 7662 introspection, authenticated as the gate's client) open API routes; an expired one, one for another API,
/// one short of the route's scope, and the same user's ID token from the same grant are refused, each for its reason.
#[tokio::test]
async fn the_providers_access_tokens_open_api_routes_and_its_id_token_does_not() {
    use crate::harness::route;
    use idgate::config::AuthMode;
    const API: &str = "https://api.idgate.test";
    const OPAQUE: &str = "https://opaque.idgate.test";
    let (gate, op) = gate_for("idgate-rs256", 600, |s| {
        s.oidc.bearer.api_audiences = vec![API.into(), OPAQUE.into()];
        s.oidc.bearer.introspect = true;
        s.routes = vec![route("/api", AuthMode::Api), {
            let mut r = route("/api/write", AuthMode::Api);
            r.scopes_all = vec!["api:write".into()];
            r
        }];
    })
    .await;
    let call = |path: &'static str, token: String| {
        let url = format!("{}{path}", gate.base);
        async move { Browser::new().api().get_with(&url, &[("Authorization", &format!("Bearer {token}"))]).await }
    };
    let refused = |r: &Resp, reason: &str| {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{reason}: {}", r.text());
        assert!(r.text().contains(&format!("({reason})")), "{reason}: {}", r.text());
    };

    let (jwt, id_token) = resource_tokens(&gate, &op, "alice", API).await;
    let header: serde_json::Value = {
        use base64::Engine as _;
        let h = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(jwt.split('.').next().unwrap()).unwrap();
        serde_json::from_slice(&h).unwrap()
    };
    assert_eq!(header["typ"], "at+jwt", "the provider issues RFC 9068 tokens: {header}");
    let r = call("/api/items", jwt.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.upstream_header("x-auth-request-user").as_deref(), Some("alice"));
    assert_eq!(r.upstream_header("authorization"), None, "the token is not forwarded");
    // The route wants a scope the token does not carry (the provider granted api:read).
    let r = call("/api/write/x", jwt.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    // The ID token of the same grant, same user, same issuer: never an API credential (R14).
    let r = call("/api/items", id_token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text().contains("ID tokens are not API credentials"), "{}", r.text());
    // A token for another API of the same provider.
    let (other, _) = resource_tokens(&gate, &op, "alice", "https://other.idgate.test").await;
    refused(&call("/api/items", other).await, "wrong_audience");

    // An opaque token, introspected at the provider (once; then cached).
    let (opaque, _) = resource_tokens(&gate, &op, "bob", OPAQUE).await;
    assert_eq!(opaque.split('.').count(), 1, "opaque, not a JWT");
    for _ in 0..2 {
        let r = call("/api/items", opaque.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.upstream_header("x-auth-request-user").as_deref(), Some("bob"));
    }
    refused(&call("/api/items", format!("{opaque}x")).await, "inactive");

    // Past the tokens' exp (600 s, by the provider's real clock) and the leeway: both refused.
    gate.clock.set(idgate::clock::Clock::now(&idgate::clock::SystemClock) + 600 + 61);
    refused(&call("/api/items", jwt).await, "expired");
    refused(&call("/api/items", opaque).await, "expired");
    gate.shutdown().await;
}

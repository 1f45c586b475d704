//! `[[providers]]`: two development issuers behind one gate (same client id, different keys, the same `sub` for the
//! same user name): the chooser, selection by route and by host, sessions kept apart, the mix-up defence, per-issuer
//! back-channel logout, refresh and sign-out, readiness, reload.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use http::StatusCode;
use idgate::{
    app,
    clock::{Clock, TestClock},
    config::{
        AuthMode, Settings, StoreKind, TokenAuthMethod,
        providers::ProviderSettings,
        settings::{OidcSettings, RouteSettings},
    },
    dev_issuer::{DevAlg, DevClient, DevIssuer},
};
use serde_json::json;
use tokio::net::TcpListener;

use crate::harness::{self, Browser, CLIENT_ID, CLIENT_SECRET, Resp, TestGate, eventually};

/// The gate (its `issuer` is the staff issuer) and the partners issuer.
struct Two {
    gate: TestGate,
    partners: DevIssuer,
}

impl Two {
    fn staff(&self) -> &DevIssuer {
        &self.gate.issuer
    }

    async fn shutdown(self) {
        self.partners.stop();
        self.gate.shutdown().await;
    }
}

fn provider(name: &str, title: &str, hosts: &[&str], oidc: &OidcSettings, issuer: &str) -> ProviderSettings {
    ProviderSettings {
        name: name.into(),
        title: title.into(),
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        oidc: OidcSettings { issuer: issuer.to_owned(), ..oidc.clone() },
    }
}

fn route(prefix: &str, auth: AuthMode, providers: &[&str]) -> RouteSettings {
    RouteSettings { providers: providers.iter().map(|p| (*p).to_owned()).collect(), ..RouteSettings::new(prefix, auth) }
}

/// Staff (`staff.test`, `/admin`) and partners (`partners.test`, `*.partners.test`, `/partner-area`), memory sessions.
async fn two(f: impl FnOnce(&mut Settings)) -> Two {
    harness::trace_init();
    let clock = Arc::new(TestClock::default());
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", public.local_addr().unwrap());
    let admin_url = format!("http://{}", admin.local_addr().unwrap());
    let client = DevClient {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        redirect_uris: vec![format!("{base}/oauth2/callback")],
        token_auth_method: TokenAuthMethod::ClientSecretBasic,
        post_logout_redirect_uris: vec![],
        jwks: None,
        jwks_uri: None,
    };
    let issuer = |c: DevClient| {
        let clock = Arc::clone(&clock) as Arc<dyn Clock>;
        async move { DevIssuer::start("127.0.0.1:0".parse().unwrap(), DevAlg::RS256, c, clock).await.unwrap() }
    };
    let staff = issuer(client.clone()).await;
    let partners = issuer(client).await;
    let upstream = harness::spawn_json_echo().await;
    let mut s = harness::settings(&base, staff.issuer(), upstream);
    s.session.store = StoreKind::Memory;
    s.providers = vec![
        provider("staff", "Employees <Staff>", &["staff.test"], &s.oidc, staff.issuer()),
        provider("partners", "Partners & Co", &["partners.test", "*.partners.test"], &s.oidc, partners.issuer()),
    ];
    s.routes =
        vec![route("/admin", AuthMode::Login, &["staff"]), route("/partner-area", AuthMode::Login, &["partners"])];
    f(&mut s);
    s.oidc = s.providers[0].oidc.clone();
    let running = app::start_on(s, Arc::clone(&clock) as Arc<dyn Clock>, public, admin).await.unwrap();
    let gate = TestGate { issuer: staff, clock, running: Some(running), base, admin: admin_url };
    eventually("the gate loads both issuers", Duration::from_secs(5), || async {
        gate.state().providers.all_ready().then_some(())
    })
    .await;
    Two { gate, partners }
}

/// Login outcomes counted so far, as `provider/result` (`-/result` when no provider was known yet).
fn outcomes(gate: &TestGate) -> BTreeMap<String, u64> {
    let text = gate.state().metrics.render();
    text.lines()
        .filter_map(|l| l.strip_prefix("idgate_logins_total{"))
        .filter_map(|l| l.split_once("} "))
        .map(|(labels, n)| {
            let provider = labels.split("provider=\"").nth(1).and_then(|p| p.split('"').next()).unwrap_or("-");
            let result = labels.split("result=\"").nth(1).and_then(|p| p.split('"').next()).unwrap_or("?");
            (format!("{provider}/{result}"), n.trim().parse().unwrap())
        })
        .collect()
}

/// The outcomes counted since `seen`, and `seen` brought up to date.
fn outcomes_since(gate: &TestGate, seen: &mut BTreeMap<String, u64>) -> Vec<String> {
    let now = outcomes(gate);
    let mut out = Vec::new();
    for (k, n) in &now {
        for _ in seen.get(k).copied().unwrap_or(0)..*n {
            out.push(k.clone());
        }
    }
    *seen = now;
    out
}

fn with_host(host: Option<&str>) -> Vec<(&str, &str)> {
    host.map(|h| vec![("host", h)]).unwrap_or_default()
}

/// The chooser page's links: provider name → href (unescaped).
fn chooser_links(page: &Resp) -> BTreeMap<String, String> {
    page.text()
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|href| href.replace("&amp;", "&"))
        .filter_map(|href| {
            let name = href.split("provider=").nth(1)?.split('&').next()?.to_owned();
            Some((name, href))
        })
        .collect()
}

/// Walks a login from `path` on `host`, through the chooser when it is shown, at the provider `name` whose issuer
/// is `issuer`; returns the page finally served at `path`.
async fn login(
    b: &Browser,
    t: &Two,
    path: &str,
    host: Option<&str>,
    name: &str,
    issuer: &DevIssuer,
    user: &str,
) -> Resp {
    let base = &t.gate.base;
    let first = b.get_with(&format!("{base}{path}"), &with_host(host)).await;
    assert_eq!(first.status, StatusCode::FOUND, "{path} should send a browser to log in: {first:?}");
    let mut start = b.get_with(&Browser::resolve(base, first.location()), &with_host(host)).await;
    if start.status == StatusCode::OK {
        let links = chooser_links(&start);
        let href = links.get(name).unwrap_or_else(|| panic!("no {name} on the chooser: {links:?}"));
        start = b.get_with(&Browser::resolve(base, href), &with_host(host)).await;
    }
    assert_eq!(start.status, StatusCode::FOUND, "start: {}", start.text());
    assert!(start.location().starts_with(issuer.issuer()), "{name}'s login goes to its issuer: {}", start.location());
    let cb = b.authorize_and_callback(base, start.location(), user).await;
    assert_eq!(cb.status, StatusCode::FOUND, "callback: {}", cb.text());
    b.get_with(&Browser::resolve(base, cb.location()), &with_host(host)).await
}

#[tokio::test]
async fn one_browser_logs_into_either_issuer_through_the_chooser_and_the_sessions_stay_apart() {
    let t = two(|_| {}).await;
    let base = t.gate.base.clone();
    // No route or host decides: a navigation gets the chooser, an API request a 401.
    let b = Browser::new();
    let page = b.get(&format!("{base}/oauth2/start?rd=%2Fhome")).await;
    assert_eq!(page.status, StatusCode::OK);
    let text = page.text();
    assert!(text.contains("Employees &lt;Staff&gt;") && text.contains("Partners &amp; Co"), "titles escaped: {text}");
    assert!(!text.contains("<Staff>"), "{text}");
    let csp = page.headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    let links = chooser_links(&page);
    assert_eq!(links.keys().collect::<Vec<_>>(), ["partners", "staff"]);
    assert_eq!(links["staff"], "/oauth2/start?provider=staff&rd=%2Fhome");
    let api = b.api().get(&format!("{base}/oauth2/start?rd=%2Fhome")).await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.json()["error"], "choose_provider");

    let landed = login(&b, &t, "/home", None, "staff", t.staff(), "alice").await;
    assert_eq!(landed.status, StatusCode::OK);
    assert_eq!(landed.upstream_header("x-auth-request-issuer").as_deref(), Some("staff"));
    assert_eq!(landed.upstream_header("x-auth-request-user").as_deref(), Some("dev|alice"));
    // The same browser logs in again, at the other issuer: its session is now the partners one.
    b.jar.lock().unwrap().clear();
    let again = login(&b, &t, "/home", None, "partners", &t.partners, "alice").await;
    assert_eq!(again.upstream_header("x-auth-request-issuer").as_deref(), Some("partners"));
    // A client cannot name its issuer itself.
    let forged = b.get_with(&format!("{base}/home"), &[("x-auth-request-issuer", "staff")]).await;
    assert_eq!(forged.upstream_header("x-auth-request-issuer").as_deref(), Some("partners"));
    t.shutdown().await;
}

#[tokio::test]
async fn upstream_issuer_header_renames_the_header_and_both_names_are_stripped_from_clients() {
    let t = two(|s| {
        s.upstream.issuer_header = http::HeaderName::from_static("x-idp");
        s.routes.push(route("/public", AuthMode::Public, &[]));
    })
    .await;
    let base = t.gate.base.clone();
    let b = Browser::new();
    let landed = login(&b, &t, "/home", None, "partners", &t.partners, "alice").await;
    assert_eq!(landed.status, StatusCode::OK);
    assert_eq!(landed.upstream_header("x-idp").as_deref(), Some("partners"));
    assert_eq!(landed.upstream_header("x-auth-request-issuer"), None, "only the configured name is written");
    let forged = b.get_with(&format!("{base}/home"), &[("x-idp", "staff"), ("x-auth-request-issuer", "staff")]).await;
    assert_eq!(forged.status, StatusCode::OK);
    assert_eq!(forged.upstream_header("x-idp").as_deref(), Some("partners"), "the client's value is replaced");
    assert_eq!(forged.upstream_header("x-auth-request-issuer"), None, "the default name is stripped too");
    // Anonymous on a public path: the configured name is stripped even where no session writes it.
    let anon = Browser::new().get_with(&format!("{base}/public/x"), &[("x-idp", "staff")]).await;
    assert_eq!(anon.status, StatusCode::OK);
    assert_eq!(anon.upstream_header("x-idp"), None);
    t.shutdown().await;
}

#[tokio::test]
async fn a_session_from_one_issuer_never_opens_a_route_of_the_other() {
    let t = two(|_| {}).await;
    let base = t.gate.base.clone();
    let partner = Browser::new();
    login(&partner, &t, "/partner-area/x", None, "partners", &t.partners, "alice").await;
    assert_eq!(partner.get(&format!("{base}/partner-area/x")).await.status, StatusCode::OK);
    // On the staff-only route: an API request gets 403 with the reason, a navigation a login at the staff issuer.
    let api = partner.api().get(&format!("{base}/admin/users")).await;
    assert_eq!(api.status, StatusCode::FORBIDDEN);
    assert_eq!(api.json()["error"], "wrong_provider");
    let nav = partner.get(&format!("{base}/admin/users")).await;
    assert_eq!(nav.status, StatusCode::FOUND);
    assert_eq!(nav.location(), "/oauth2/start?rd=%2Fadmin%2Fusers");
    let start = partner.get(&Browser::resolve(&base, nav.location())).await;
    assert!(start.location().starts_with(t.staff().issuer()), "straight to the one allowed issuer: {start:?}");
    // Forward-auth and userinfo apply the same rule.
    let userinfo = partner.api().get(&format!("{base}/oauth2/userinfo")).await;
    assert_eq!(userinfo.status, StatusCode::OK, "no route or host restricts userinfo here");
    // The staff session opens /admin, not /partner-area.
    let staff = Browser::new();
    let landed = login(&staff, &t, "/admin/users", None, "staff", t.staff(), "alice").await;
    assert_eq!(landed.status, StatusCode::OK);
    assert_eq!(landed.upstream_header("x-auth-request-issuer").as_deref(), Some("staff"));
    assert_eq!(staff.api().get(&format!("{base}/partner-area/x")).await.json()["error"], "wrong_provider");
    t.shutdown().await;
}

#[tokio::test]
async fn the_host_picks_the_provider_and_a_forged_forwarded_host_from_an_untrusted_peer_is_ignored() {
    let t = two(|_| {}).await;
    let base = t.gate.base.clone();
    // Host partners.test (and below it): straight to the partners issuer.
    for host in ["partners.test", "eu.partners.test", "PARTNERS.test:8443"] {
        let start = Browser::new().get_with(&format!("{base}/oauth2/start?rd=%2F"), &[("host", host)]).await;
        assert_eq!(start.status, StatusCode::FOUND, "{host}");
        assert!(start.location().starts_with(t.partners.issuer()), "{host}: {}", start.location());
    }
    // The gate does not trust this peer: its X-Forwarded-Host does not choose a provider.
    let forged = Browser::new()
        .get_with(
            &format!("{base}/oauth2/start?rd=%2F"),
            &[("host", "staff.test"), ("x-forwarded-host", "partners.test")],
        )
        .await;
    assert!(forged.location().starts_with(t.staff().issuer()), "the Host header decides: {}", forged.location());
    let not_allowed = Browser::new()
        .get_with(
            &format!("{base}/oauth2/start?provider=partners&rd=%2F"),
            &[("host", "staff.test"), ("x-forwarded-host", "partners.test")],
        )
        .await;
    assert_eq!(not_allowed.status, StatusCode::BAD_REQUEST);
    assert!(not_allowed.text().contains("not available here"), "{}", not_allowed.text());
    // A partners session on the staff host, even with a forged X-Forwarded-Host, is refused.
    let b = Browser::new();
    let landed = login(&b, &t, "/", Some("partners.test"), "partners", &t.partners, "bob").await;
    assert_eq!(landed.status, StatusCode::OK);
    let on_staff =
        b.api().get_with(&format!("{base}/"), &[("host", "staff.test"), ("x-forwarded-host", "partners.test")]).await;
    assert_eq!(on_staff.status, StatusCode::FORBIDDEN);
    assert_eq!(on_staff.json()["error"], "wrong_provider");

    // Positive control: a replica that trusts this peer believes the header.
    let replica = {
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut s = t.gate.state().settings.clone();
        s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        app::start_on(s, Arc::clone(&t.gate.clock) as Arc<dyn Clock>, public, admin).await.unwrap()
    };
    let rbase = format!("http://{}", replica.public_addr);
    eventually("the replica loads", Duration::from_secs(5), || async {
        replica.state().providers.all_ready().then_some(())
    })
    .await;
    let trusted = Browser::new()
        .get_with(
            &format!("{rbase}/oauth2/start?rd=%2F"),
            &[("host", "staff.test"), ("x-forwarded-host", "partners.test")],
        )
        .await;
    assert!(trusted.location().starts_with(t.partners.issuer()), "a trusted proxy's header counts: {trusted:?}");
    replica.shutdown().await;
    t.shutdown().await;
}

#[tokio::test]
async fn a_provider_must_exist_and_be_allowed_where_rd_leads() {
    let t = two(|_| {}).await;
    let base = t.gate.base.clone();
    let mut seen = outcomes(&t.gate);
    let b = Browser::new();
    for (query, reason) in [
        ("provider=partners&rd=%2Fadmin%2Fx", "provider_not_allowed"),
        ("provider=staff&rd=%2Fpartner-area", "provider_not_allowed"),
        ("provider=nobody&rd=%2F", "unknown_provider"),
        ("provider=STAFF&rd=%2F", "unknown_provider"),
        ("provider=staff&provider=partners&rd=%2F", "duplicate_parameter"),
    ] {
        let r = b.api().get(&format!("{base}/oauth2/start?{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(r.json()["error"], reason, "{query}");
    }
    assert!(outcomes_since(&t.gate, &mut seen).is_empty(), "a refused start is not a login attempt");
    let ok = b.get(&format!("{base}/oauth2/start?provider=staff&rd=%2Fadmin%2Fx")).await;
    assert!(ok.location().starts_with(t.staff().issuer()), "{ok:?}");
    assert_eq!(t.staff().request_count("authorize"), 0, "nothing reached an issuer for the refused starts");
    t.shutdown().await;
}

#[tokio::test]
async fn mix_up_a_callback_answered_by_the_other_issuer_is_refused() {
    let t = two(|_| {}).await;
    let base = t.gate.base.clone();
    let mut seen = outcomes(&t.gate);
    // The login goes to staff; the answer comes from partners (its authorization endpoint, the same state).
    let attempt = |omit_iss: bool| {
        let t = &t;
        let base = base.clone();
        async move {
            t.partners.configure(|k| k.omit_iss = omit_iss);
            let b = Browser::new();
            let start = b.get(&format!("{base}/oauth2/start?provider=staff&rd=%2F")).await;
            let at_partners = start.location().replacen(t.staff().issuer(), t.partners.issuer(), 1);
            assert_ne!(at_partners, start.location());
            b.authorize_and_callback(&base, &at_partners, "alice").await
        }
    };
    let cb = attempt(false).await;
    assert_eq!(cb.status, StatusCode::BAD_REQUEST, "{}", cb.text());
    assert_eq!(outcomes_since(&t.gate, &mut seen), ["staff/issuer_mismatch"], "counted for the flow's provider");
    // Without its `iss`, the answer still lacks the staff issuer's, which staff advertises.
    let cb = attempt(true).await;
    assert_eq!(cb.status, StatusCode::BAD_REQUEST, "{}", cb.text());
    assert_eq!(outcomes_since(&t.gate, &mut seen), ["staff/missing_iss"]);
    // Neither issuer advertises RFC 9207 and the answer has no iss: the code still goes to the flow's issuer only,
    // which refuses it; the other issuer's token endpoint is never called.
    t.staff().configure(|k| k.advertise_iss = false);
    t.gate.state().provider.load().await.unwrap();
    let cb = attempt(true).await;
    assert_ne!(cb.status, StatusCode::FOUND, "{}", cb.text());
    assert_eq!(outcomes_since(&t.gate, &mut seen), ["staff/issuer_unavailable"]);
    assert_eq!(t.partners.request_count("token"), 0, "the answer's issuer is never asked to redeem");
    assert_eq!(t.staff().request_count("token"), 1, "the flow's issuer was, and refused the foreign code");
    t.shutdown().await;
}

/// A back-channel logout token for `sub`, signed by `signer`, claiming issuer `iss`.
fn logout_token(t: &Two, signer: &DevIssuer, iss: &str, sub: &str) -> String {
    let now = t.gate.clock.now();
    let claims = json!({
        "iss": iss, "aud": CLIENT_ID, "iat": now, "exp": now + 120, "jti": idgate::random::token(12), "sub": sub,
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
    });
    signer.with_key(|k| k.sign_with_header(&json!({"alg": "RS256", "kid": k.kid, "typ": "logout+jwt"}), &claims))
}

#[tokio::test]
async fn back_channel_logout_from_one_issuer_ends_only_its_own_alice() {
    let t = two(|_| {}).await;
    let base = t.gate.base.clone();
    let staff_alice = Browser::new();
    login(&staff_alice, &t, "/", Some("staff.test"), "staff", t.staff(), "alice").await;
    let partner_alice = Browser::new();
    login(&partner_alice, &t, "/", Some("partners.test"), "partners", &t.partners, "alice").await;
    let works = |b: &Browser, host: &'static str| {
        let b = b.api();
        let url = format!("{base}/");
        async move { b.get_with(&url, &[("host", host)]).await.status }
    };
    assert_eq!(works(&staff_alice, "staff.test").await, StatusCode::OK);
    assert_eq!(works(&partner_alice, "partners.test").await, StatusCode::OK);
    let post = |token: String| {
        let url = format!("{base}/oauth2/backchannel_logout");
        async move { Browser::new().api().post_form(&url, &format!("logout_token={token}")).await }
    };
    // Signed by partners but claiming the staff issuer: refused, nobody signed out.
    let forged = post(logout_token(&t, &t.partners, t.staff().issuer(), "dev|alice")).await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST, "{}", forged.text());
    let unknown = post(logout_token(&t, &t.partners, "https://nobody.example.com", "dev|alice")).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(works(&staff_alice, "staff.test").await, StatusCode::OK);
    assert_eq!(works(&partner_alice, "partners.test").await, StatusCode::OK);
    // The partners issuer ends its alice: the staff alice (same sub) keeps her session.
    let ended = post(logout_token(&t, &t.partners, t.partners.issuer(), "dev|alice")).await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.text());
    assert_eq!(works(&partner_alice, "partners.test").await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        works(&staff_alice, "staff.test").await,
        StatusCode::OK,
        "the same sub at another issuer is another person"
    );
    let ended = post(logout_token(&t, t.staff(), t.staff().issuer(), "dev|alice")).await;
    assert_eq!(ended.status, StatusCode::OK);
    assert_eq!(works(&staff_alice, "staff.test").await, StatusCode::UNAUTHORIZED);
    t.shutdown().await;
}

#[tokio::test]
async fn refresh_and_sign_out_go_to_the_sessions_own_issuer() {
    let t = two(|s| {
        s.providers[1].oidc.scopes.push("offline_access".into());
        s.providers[1].oidc.post_logout_redirect_url = None;
    })
    .await;
    let base = t.gate.base.clone();
    let b = Browser::new();
    login(&b, &t, "/", Some("partners.test"), "partners", &t.partners, "carol").await;
    let (staff_tokens, partner_tokens) = (t.staff().request_count("token"), t.partners.request_count("token"));
    t.gate.clock.advance(3590);
    let r = b.api().get_with(&format!("{base}/"), &[("host", "partners.test")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(t.partners.request_count("token"), partner_tokens + 1, "refreshed at the partners issuer");
    assert_eq!(t.staff().request_count("token"), staff_tokens, "never at the other one");
    // Sign-out: the partners issuer's end_session_endpoint, with its revocation endpoint called.
    let page = b.get_with(&format!("{base}/oauth2/sign_out"), &[("host", "partners.test")]).await;
    let csrf = page.text().split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let out = b.post_form(&format!("{base}/oauth2/sign_out"), &format!("csrf={}", harness::urlencode(&csrf))).await;
    assert_eq!(out.status, StatusCode::FOUND);
    assert!(out.location().starts_with(&format!("{}/end_session", t.partners.issuer())), "{}", out.location());
    assert_eq!(t.partners.request_count("revoke"), 1);
    assert_eq!(t.staff().request_count("revoke"), 0);
    t.shutdown().await;
}

#[tokio::test]
async fn an_issuer_that_is_down_fails_only_its_own_logins_and_readiness_names_it() {
    let t = two(|_| {}).await;
    let base = t.gate.base.clone();
    let ready = Browser::new().get(&format!("{}/readyz", t.gate.admin)).await;
    assert_eq!(ready.status, StatusCode::OK);
    // A partners login in progress when its issuer goes down fails; a staff login meanwhile does not.
    let newcomer = Browser::new();
    let start = newcomer.get(&format!("{base}/oauth2/start?provider=partners&rd=%2F")).await;
    let submitted = newcomer.post_form(start.location(), "username=newcomer").await;
    t.partners.configure(|k| k.down = true);
    let mut seen = outcomes(&t.gate);
    let cb = newcomer.get(&Browser::resolve(&base, submitted.location())).await;
    assert_eq!(cb.status, StatusCode::SERVICE_UNAVAILABLE, "{}", cb.text());
    assert!(cb.text().contains("Partners &amp; Co is not available"), "the page names the provider: {}", cb.text());
    assert_eq!(outcomes_since(&t.gate, &mut seen), ["partners/issuer_unavailable"]);
    let api = Browser::new().api().get(&format!("{base}/oauth2/start?provider=partners&rd=%2F")).await;
    assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE, "{}", api.text());
    assert_eq!(api.json()["message"], "Partners & Co is not available. Try again shortly.");
    let b = Browser::new();
    let landed = login(&b, &t, "/", Some("staff.test"), "staff", t.staff(), "dan").await;
    assert_eq!(landed.status, StatusCode::OK);
    assert_eq!(outcomes_since(&t.gate, &mut seen), ["staff/success"]);
    // A gate started while partners is down is not ready, and says which provider it waits for.
    let replica = {
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        app::start_on(t.gate.state().settings.clone(), Arc::clone(&t.gate.clock) as Arc<dyn Clock>, public, admin)
            .await
            .unwrap()
    };
    eventually("the replica loads staff", Duration::from_secs(5), || async {
        replica.state().providers.entry(0).unwrap().provider().is_ready().then_some(())
    })
    .await;
    let not_ready = Browser::new().get(&format!("http://{}/readyz", replica.admin_addr)).await;
    assert_eq!(not_ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(not_ready.text().contains("partners") && !not_ready.text().contains("staff"), "{}", not_ready.text());
    t.partners.configure(|k| k.down = false);
    eventually("the replica loads partners", Duration::from_secs(10), || async {
        replica.state().providers.all_ready().then_some(())
    })
    .await;
    replica.shutdown().await;
    t.shutdown().await;
}

#[tokio::test]
async fn a_reload_removes_a_provider_and_keeps_the_others_sessions() {
    let t = two(|_| {}).await;
    let base = t.gate.base.clone();
    let staff = Browser::new();
    login(&staff, &t, "/", Some("staff.test"), "staff", t.staff(), "erin").await;
    let partner = Browser::new();
    login(&partner, &t, "/", Some("partners.test"), "partners", &t.partners, "erin").await;
    let running = t.gate.running.as_ref().unwrap();
    let kept_provider = Arc::clone(running.state().providers.entry(0).unwrap().provider());
    let mut s = running.state().settings.clone();
    s.providers.truncate(1);
    s.routes.retain(|r| !r.providers.iter().any(|p| p == "partners"));
    let ignored = running.reload(s);
    assert!(ignored.is_empty(), "{ignored:?}");
    let state = running.state();
    assert_eq!(state.providers.entries().len(), 1);
    assert!(Arc::ptr_eq(&kept_provider, state.providers.entry(0).unwrap().provider()), "an unchanged provider is kept");
    let r = staff.api().get_with(&format!("{base}/"), &[("host", "staff.test")]).await;
    assert_eq!(r.status, StatusCode::OK, "the kept provider's sessions stay");
    let r = partner.api().get_with(&format!("{base}/"), &[("host", "partners.test")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a removed provider's session no longer opens");
    // Adding it back: a new provider, loaded in the background.
    let mut s = state.settings.clone();
    s.providers.push(provider("partners", "Partners", &["partners.test"], &s.oidc, t.partners.issuer()));
    running.reload(s);
    eventually("the added provider loads", Duration::from_secs(5), || async {
        running.state().providers.all_ready().then_some(())
    })
    .await;
    let r = partner.api().get_with(&format!("{base}/"), &[("host", "partners.test")]).await;
    assert_eq!(r.status, StatusCode::OK, "its sessions open again");
    t.shutdown().await;
}

#[tokio::test]
async fn a_form_post_is_kept_over_a_login_at_the_one_provider_allowed_for_it() {
    let t = two(|_| {}).await;
    let base = t.gate.base.clone();
    let submit = |path: &'static str| {
        let base = base.clone();
        async move {
            let mut h = http::HeaderMap::new();
            for (k, v) in [
                ("content-type", "application/x-www-form-urlencoded"),
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-site", "same-origin"),
                ("sec-fetch-dest", "document"),
                ("origin", base.as_str()),
            ] {
                h.insert(k, http::HeaderValue::from_str(v).unwrap());
            }
            let b = Browser::new();
            let r = b.send(http::Method::POST, &format!("{base}{path}"), h, bytes::Bytes::from_static(b"a=1")).await;
            (b, r)
        }
    };
    // Only staff is allowed on /admin: the post is kept and the login goes there, and comes back with the post.
    let (b, kept) = submit("/admin/form").await;
    assert_eq!(kept.status, StatusCode::SEE_OTHER, "{}", kept.text());
    assert!(kept.location().starts_with(t.staff().issuer()), "{}", kept.location());
    let cb = b.authorize_and_callback(&base, kept.location(), "alice").await;
    assert_eq!(cb.status, StatusCode::OK, "the resume page: {}", cb.text());
    // Both are allowed on /home: the browser must choose first, so the post is not kept (a post without a session
    // gets its 401, as without preserved posts).
    let (_, refused) = submit("/home").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.text());
    assert!(refused.set_cookies().iter().all(|c| !c.contains("_flow_")), "no login flow started");
    t.shutdown().await;
}

#[tokio::test]
async fn check_loads_every_provider_and_names_the_one_that_fails() {
    let t = two(|_| {}).await;
    let settings = t.gate.state().settings.clone();
    let report = idgate::check::run(&settings).await;
    assert!(report.ok, "{:#?}", report.lines);
    for name in ["staff", "partners"] {
        let ok = format!("ok    provider {name:?}: discovery reachable");
        assert!(report.lines.iter().any(|l| l.starts_with(&ok)), "{ok}: {:#?}", report.lines);
    }
    t.partners.configure(|k| k.down = true);
    let report = idgate::check::run(&settings).await;
    assert!(!report.ok);
    let errors: Vec<&String> = report.lines.iter().filter(|l| l.starts_with("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{:#?}", report.lines);
    assert!(errors[0].contains("provider \"partners\": issuer:"), "{errors:?}");
    t.shutdown().await;
}

// === against two real issuers: two oidc-provider instances (different ports and keys, both with `alice`) ===

/// A gate with providers `north` (`/north-area`) and `south` (`/south-area`), both the client `idgate-rs256`, in front
/// of the demo upstream (it lists the headers it received). `south_up`: start the second provider at all.
async fn two_ops(south_up: bool) -> (TestGate, crate::interop::Op, crate::interop::Op) {
    two_ops_with(south_up, false).await
}

/// [`two_ops`]; `backchannel`: both providers POST back-channel logout tokens to the gate.
async fn two_ops_with(south_up: bool, backchannel: bool) -> (TestGate, crate::interop::Op, crate::interop::Op) {
    use crate::interop::Op;
    harness::trace_init();
    let clock = Arc::new(TestClock::default());
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", public.local_addr().unwrap());
    let admin_url = format!("http://{}", admin.local_addr().unwrap());
    let (callback, signed_out) = ([format!("{base}/oauth2/callback")], [format!("{base}/signed-out")]);
    let mut north = Op::start(&callback, &signed_out, 3600).await;
    let mut south = Op::start(&callback, &signed_out, 3600).await;
    if backchannel {
        let uri = format!("{base}/oauth2/backchannel_logout");
        north = north.with_backchannel(uri.clone()).await;
        south = south.with_backchannel(uri).await;
    }
    if !south_up {
        south.stop();
    }
    let upstream = idgate::demo::spawn_echo_upstream("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut s = harness::settings(&base, &north.issuer, upstream);
    s.oidc.client_id = "idgate-rs256".into();
    s.oidc.client_secret = Some(idgate::config::Secret::new("idgate-rs256-secret-that-is-long-enough-for-hs256-keys"));
    s.oidc.post_logout_redirect_url = Some(signed_out[0].parse().unwrap());
    s.session.store = StoreKind::Memory;
    s.providers = vec![
        provider("north", "North Corp", &[], &s.oidc, &north.issuer),
        provider("south", "South Partners", &[], &s.oidc, &south.issuer),
    ];
    s.oidc = s.providers[0].oidc.clone();
    s.routes = vec![
        route("/north-area", AuthMode::Login, &["north"]),
        route("/south-area", AuthMode::Login, &["south"]),
        route("/signed-out", AuthMode::Public, &[]),
    ];
    // Unused: a TestGate carries a development issuer.
    let dev = DevIssuer::start(
        "127.0.0.1:0".parse().unwrap(),
        DevAlg::RS256,
        DevClient {
            client_id: "unused".into(),
            client_secret: "unused".into(),
            redirect_uris: vec![],
            token_auth_method: TokenAuthMethod::ClientSecretBasic,
            post_logout_redirect_uris: vec![],
            jwks: None,
            jwks_uri: None,
        },
        Arc::clone(&clock) as Arc<dyn Clock>,
    )
    .await
    .unwrap();
    let running = app::start_on(s, Arc::clone(&clock) as Arc<dyn Clock>, public, admin).await.unwrap();
    let gate = TestGate { issuer: dev, clock, running: Some(running), base, admin: admin_url };
    eventually("the gate loads north", Duration::from_secs(10), || async {
        gate.state().providers.entry(0).unwrap().provider().is_ready().then_some(())
    })
    .await;
    if south_up {
        eventually("the gate loads south", Duration::from_secs(10), || async {
            gate.state().providers.all_ready().then_some(())
        })
        .await;
    }
    (gate, north, south)
}

/// The login at an oidc-provider from `start` (a redirect to it), back through idgate's callback to the page.
async fn through_op(gate: &TestGate, op: &crate::interop::Op, b: &Browser, start: Resp, user: &str) -> Resp {
    assert!(start.location().starts_with(&op.issuer), "to {}: {start:?}", op.issuer);
    let at_op = b.get(start.location()).await;
    let back = crate::interop::through_provider(b, op, at_op, user).await;
    let callback = b.get(&Browser::resolve(&gate.base, back.location())).await;
    assert_eq!(callback.status, StatusCode::FOUND, "callback: {}", callback.text());
    b.get(&Browser::resolve(&gate.base, callback.location())).await
}

fn shown_issuer(page: &Resp) -> Option<String> {
    let text = page.text();
    let row = text.split("<code>x-auth-request-issuer</code></td><td><code>").nth(1)?;
    Some(row.split('<').next()?.to_owned())
}

#[tokio::test]
async fn two_real_issuers_one_browser_chooser_routes_and_sessions_apart() {
    let (gate, north, south) = two_ops(true).await;
    let base = gate.base.clone();
    let b = Browser::new();
    let first = b.get(&format!("{base}/welcome")).await;
    let chooser = b.get(&Browser::resolve(&base, first.location())).await;
    assert_eq!(chooser.status, StatusCode::OK, "{}", chooser.text());
    let links = chooser_links(&chooser);
    let start = b.get(&Browser::resolve(&base, &links["north"])).await;
    let landed = through_op(&gate, &north, &b, start, "alice").await;
    assert_eq!(landed.status, StatusCode::OK, "{}", landed.text());
    assert_eq!(shown_issuer(&landed).as_deref(), Some("north"));
    assert!(landed.text().contains("Alice Example"));
    // The north session does not open south's route: an API request gets 403, a browser goes to south directly.
    let api = b.api().get(&format!("{base}/south-area/x")).await;
    assert_eq!(api.status, StatusCode::FORBIDDEN);
    assert_eq!(api.json()["error"], "wrong_provider");
    let nav = b.get(&format!("{base}/south-area/x")).await;
    let start = b.get(&Browser::resolve(&base, nav.location())).await;
    let landed = through_op(&gate, &south, &b, start, "alice").await;
    assert_eq!(landed.status, StatusCode::OK, "{}", landed.text());
    assert_eq!(shown_issuer(&landed).as_deref(), Some("south"), "south's alice, the same sub at another issuer");
    // Now the browser's session is south's: north's route sends it to north.
    assert_eq!(b.api().get(&format!("{base}/north-area/")).await.json()["error"], "wrong_provider");
    drop((north, south));
    gate.shutdown().await;
}

#[tokio::test]
async fn one_real_issuer_down_while_the_other_logs_in() {
    let (gate, north, south) = two_ops(false).await;
    let base = gate.base.clone();
    let ready = Browser::new().get(&format!("{}/readyz", gate.admin)).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.text().contains("south"), "{}", ready.text());
    let b = Browser::new();
    let down = b.get(&format!("{base}/oauth2/start?provider=south&rd=%2F")).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE, "{}", down.text());
    let start = b.get(&format!("{base}/oauth2/start?provider=north&rd=%2Fnorth-area%2F")).await;
    let landed = through_op(&gate, &north, &b, start, "bob").await;
    assert_eq!(landed.status, StatusCode::OK, "{}", landed.text());
    assert_eq!(shown_issuer(&landed).as_deref(), Some("north"));
    drop((north, south));
    gate.shutdown().await;
}

#[tokio::test]
async fn a_real_browser_chooses_between_two_issuers() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("Debian's chromium is not installed: run scripts/deps.sh");
    let (gate, north, south) = two_ops(true).await;
    let out_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chooser-screenshots");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();
    let status = tokio::process::Command::new("node")
        .arg(crate::interop::interop_dir().join("chooser.mjs"))
        .env("BASE_URL", &gate.base)
        .env("ISSUER_A", &north.issuer)
        .env("ISSUER_B", &south.issuer)
        .env("TITLE_A", "North Corp")
        .env("NAME_A", "north")
        .env("NAME_B", "south")
        .env("ROUTE_B", "/south-area/welcome")
        .env("CHROMIUM", chromium)
        .env("OUT_DIR", &out_dir)
        .env("USER_NAME", "zoe")
        .env("EXPECTED_NAME", "Zoë Ünïcødé 山田")
        .status()
        .await
        .unwrap();
    assert!(status.success(), "the chooser scenario failed (screenshots in {})", out_dir.display());
    for shot in ["1-chooser.png", "2-landed-a.png", "3-landed-b.png"] {
        let meta = std::fs::metadata(out_dir.join(shot)).unwrap_or_else(|_| panic!("{shot} missing"));
        assert!(meta.len() > 1000, "{shot} is a real picture");
    }
    drop((north, south));
    gate.shutdown().await;
}

#[tokio::test]
async fn back_channel_logout_from_a_real_issuer_ends_only_its_own_alice() {
    let (gate, north, south) = two_ops_with(true, true).await;
    let base = gate.base.clone();
    let log_in = |provider: &'static str, area: &'static str| {
        let (gate, base) = (&gate, base.clone());
        let op = if provider == "north" { &north } else { &south };
        async move {
            let b = Browser::new();
            let start = b.get(&format!("{base}/oauth2/start?provider={provider}&rd=%2F{area}%2F")).await;
            let landed = through_op(gate, op, &b, start, "alice").await;
            assert_eq!(landed.status, StatusCode::OK, "{}", landed.text());
            b
        }
    };
    let (north_alice, north_alice_elsewhere, south_alice) =
        (log_in("north", "north-area").await, log_in("north", "north-area").await, log_in("south", "south-area").await);
    let status = |b: &Browser, path: &str| {
        let (b, url) = (b.api(), format!("{base}{path}"));
        async move { b.get(&url).await.status }
    };
    assert_eq!(status(&north_alice_elsewhere, "/north-area/").await, StatusCode::OK);
    assert_eq!(status(&south_alice, "/south-area/").await, StatusCode::OK);
    // North alice signs out; north ends its session and POSTs a logout token naming her sub to the gate.
    let page = north_alice.get(&format!("{base}/oauth2/sign_out")).await;
    let csrf = page.text().split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let out =
        north_alice.post_form(&format!("{base}/oauth2/sign_out"), &format!("csrf={}", harness::urlencode(&csrf))).await;
    assert!(out.location().starts_with(&north.issuer), "RP-initiated logout at north: {}", out.location());
    let end = north_alice.get(out.location()).await;
    let back = crate::interop::through_provider(&north_alice, &north, end, "alice").await;
    assert!(back.location().contains("/signed-out"), "{}", back.location());
    let ended = gate.state().metrics.render();
    assert!(ended.contains("idgate_sign_outs_total{provider=\"north\",kind=\"backchannel\"} 1"), "{ended}");
    assert_eq!(
        status(&north_alice_elsewhere, "/north-area/").await,
        StatusCode::UNAUTHORIZED,
        "north's alice everywhere"
    );
    assert_eq!(status(&south_alice, "/south-area/").await, StatusCode::OK, "south's alice is someone else");
    drop((north, south));
    gate.shutdown().await;
}

//! Envoy ext_authz: the gRPC service asked by an independent client (Python grpcio with the gRPC project's
//! generated Envoy protos, tests/extauthz/check.py), the HTTP shape `{prefix}/auth/<original path>`, and the proxy
//! path, given the same requests, decide the same: same status, body and headers when denied; the same identity
//! headers when allowed. The tests fail, rather than skip, when the client is missing: scripts/deps.sh installs it.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use idgate::config::{AuthMode, Settings};
use serde_json::{Value, json};

use crate::harness::{Browser, Resp, TestGate, route};

/// A request Envoy would ask about.
#[derive(Clone)]
struct Case {
    name: &'static str,
    method: Method,
    target: String,
    headers: Vec<(String, String)>,
}

impl Case {
    fn new(name: &'static str, target: &str, headers: &[(&str, &str)]) -> Self {
        let headers = headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Case { name, method: Method::GET, target: target.into(), headers }
    }

    fn with(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    fn header_map(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in &self.headers {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }
}

const NAV: (&str, &str) = ("accept", "text/html,application/xhtml+xml");
const API: (&str, &str) = ("accept", "application/json");

/// Runs the independent client over `checks` (JSON objects as tests/extauthz/check.py reads them).
pub(crate) async fn grpc(checks: Vec<Value>) -> Vec<Value> {
    serde_json::from_value(crate::harness::python_json("extauthz/.venv", "extauthz/check.py", &checks).await).unwrap()
}

fn grpc_check(gate: &TestGate, case: &Case) -> Value {
    let addr = gate.running.as_ref().unwrap().grpc_addr.expect("grpc_listen is set");
    json!({
        "address": addr.to_string(),
        "method": case.method.as_str(),
        "path": case.target,
        "host": "app.example",
        "headers": case.headers,
    })
}

/// A fresh client without a jar (the case carries its own cookies); sends exactly the case's headers.
async fn send(url: &str, case: &Case) -> Resp {
    Browser::new().api().send(case.method.clone(), url, case.header_map(), Bytes::new()).await
}

/// The three answers to each case: gRPC (in one client run), the HTTP shape, the proxy path.
async fn three_ways(gate: &TestGate, cases: &[Case]) -> Vec<(Value, Resp, Resp)> {
    let answers = grpc(cases.iter().map(|c| grpc_check(gate, c)).collect()).await;
    let mut out = Vec::new();
    for (case, g) in cases.iter().zip(answers) {
        let h = send(&format!("{}/oauth2/auth{}", gate.base, case.target), case).await;
        let p = send(&format!("{}{}", gate.base, case.target), case).await;
        out.push((g, h, p));
    }
    out
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .map(|a| a.iter().map(|p| (p[0].as_str().unwrap().to_owned(), p[1].as_str().unwrap().to_owned())).collect())
        .unwrap_or_default()
}

/// A `Set-Cookie` without its value (a renewal seals afresh each time): name and attributes.
fn cookie_shape(c: &str) -> String {
    let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
    let name = pair.split('=').next().unwrap_or("");
    let empty = pair.ends_with('=');
    format!("{name}={}{attrs}", if empty { "" } else { "…" })
}

fn shapes<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = values.map(cookie_shape).collect();
    v.sort();
    v
}

/// The headers of a denial that must match, by name.
const DENIAL_HEADERS: [&str; 7] = [
    "location",
    "content-type",
    "cache-control",
    "x-content-type-options",
    "content-security-policy",
    "strict-transport-security",
    "x-request-id",
];

/// Asserts one case decided alike three ways; returns the gRPC answer.
fn assert_same(case: &Case, (g, h, p): &(Value, Resp, Resp)) -> Value {
    let name = case.name;
    assert!(g.get("rpc_error").is_none(), "{name}: a gRPC error instead of a decision: {g}");
    let g_headers = pairs(&g["headers"]);
    if g["allowed"] == true {
        assert_eq!(g["code"], 0, "{name}");
        assert_eq!(h.status, StatusCode::OK, "{name}: the HTTP shape allows too: {}", h.text());
        assert_eq!(p.status, StatusCode::OK, "{name}: the proxy path allows too: {}", p.text());
        for (k, v) in &g_headers {
            assert_eq!(h.headers.get(k).and_then(|x| x.to_str().ok()), Some(v.as_str()), "{name}: {k} (HTTP shape)");
            assert_eq!(p.upstream_header(k).as_deref(), Some(v.as_str()), "{name}: {k} reaches the upstream alike");
        }
        assert!(g["append"].as_array().unwrap().iter().all(|a| a == "OVERWRITE_IF_EXISTS_OR_ADD"), "{name}: {g}");
        let h_remove: Vec<String> = h
            .headers
            .get("x-envoy-auth-headers-to-remove")
            .map(|v| v.to_str().unwrap().split(", ").map(str::to_owned).collect())
            .unwrap_or_default();
        let g_remove: Vec<String> =
            g["remove"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()).collect();
        assert_eq!(g_remove, h_remove, "{name}: the same headers removed");
        // Whatever is removed or set never reaches the upstream as the client sent it.
        for r in &g_remove {
            let sent: Vec<&String> =
                case.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(r)).map(|(_, v)| v).collect();
            for v in sent {
                assert_ne!(
                    p.upstream_header(r).as_deref(),
                    Some(v.as_str()),
                    "{name}: {r} is stripped by the proxy too"
                );
            }
        }
        let g_cookies = pairs(&g["response_headers"]);
        assert!(g_cookies.iter().all(|(k, _)| k == "set-cookie"), "{name}");
        assert_eq!(
            shapes(g_cookies.iter().map(|(_, v)| v.as_str())),
            shapes(h.set_cookies().iter().map(String::as_str)),
            "{name}: Set-Cookie (HTTP shape)"
        );
        assert_eq!(
            shapes(g_cookies.iter().map(|(_, v)| v.as_str())),
            shapes(p.set_cookies().iter().map(String::as_str)),
            "{name}: Set-Cookie (proxy path)"
        );
    } else {
        let status = g["status"].as_u64().unwrap() as u16;
        assert_ne!(g["code"], 0, "{name}: denied with a non-OK code");
        assert_eq!(status, h.status.as_u16(), "{name}: status (HTTP shape) {}", h.text());
        assert_eq!(status, p.status.as_u16(), "{name}: status (proxy path) {}", p.text());
        assert_eq!(g["body"].as_str().unwrap(), h.text(), "{name}: body (HTTP shape)");
        assert_eq!(g["body"].as_str().unwrap(), p.text(), "{name}: body (proxy path)");
        let one = |resp: &Resp, n: &str| resp.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
        let g_map: BTreeMap<&str, &str> =
            g_headers.iter().filter(|(k, _)| k != "set-cookie").map(|(k, v)| (k.as_str(), v.as_str())).collect();
        for n in DENIAL_HEADERS {
            assert_eq!(g_map.get(n).map(|s| (*s).to_owned()), one(h, n), "{name}: {n} (HTTP shape)");
            assert_eq!(g_map.get(n).map(|s| (*s).to_owned()), one(p, n), "{name}: {n} (proxy path)");
        }
        let g_cookies: Vec<&str> =
            g_headers.iter().filter(|(k, _)| k == "set-cookie").map(|(_, v)| v.as_str()).collect();
        assert_eq!(g_cookies, h.set_cookies(), "{name}: Set-Cookie (HTTP shape)");
        assert_eq!(g_cookies, p.set_cookies(), "{name}: Set-Cookie (proxy path)");
    }
    g.clone()
}

fn gate_settings(s: &mut Settings) {
    s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let mut admin = route("/admin", AuthMode::Login);
    admin.any_of.insert("https://example.com/roles".into(), vec!["admin".into()]);
    s.routes = vec![route("/public", AuthMode::Public), route("/api", AuthMode::Api), admin];
    s.ext_authz.grpc_listen = Some("127.0.0.1:0".parse().unwrap());
    s.oidc.scopes.push("offline_access".into());
}

fn cookie_of(b: &Browser) -> String {
    format!("idgate={}; theme=dark", b.cookie("idgate").unwrap())
}

#[tokio::test]
async fn grpc_http_shape_and_proxy_path_decide_alike() {
    let gate = TestGate::builder().settings(gate_settings).spawn().await;
    gate.issuer.configure(|k| k.id_token_lifetime_secs = 300);
    let alice = gate.login_as("alice").await;
    let ann = gate.login_as("admin-ann").await;
    let (a, n) = (cookie_of(&alice), cookie_of(&ann));
    let now = idgate::clock::Clock::now(gate.clock.as_ref());
    let mut claims = Value::Object(gate.issuer.claims_for("alice", None));
    claims["exp"] = json!(now + 600);
    let id_token = gate.issuer.sign(&claims);
    let cases = vec![
        Case::new("no session, navigation", "/app/page?x=1&y=%2F", &[NAV, ("x-request-id", "r1")]),
        Case::new("no session, API", "/app/data", &[API, ("x-request-id", "r2")]),
        Case::new("no session, API route", "/api/v1", &[NAV, ("x-request-id", "r3")]),
        Case {
            method: Method::POST,
            ..Case::new("no session, a form post", "/app/form", &[NAV, ("x-request-id", "r11")])
        },
        Case { method: Method::DELETE, ..Case::new("valid session, DELETE", "/app/item", &[API, ("cookie", &a)]) },
        Case::new("no session, public route", "/public/x", &[NAV, ("x-forwarded-user", "root")]),
        Case::new("valid session", "/app/page", &[NAV, ("cookie", &a)]),
        Case::new("valid session, only idgate's cookie", "/app", &[API])
            .with("cookie", &format!("idgate={}", alice.cookie("idgate").unwrap())),
        Case::new("rule denial, navigation", "/admin/x", &[NAV, ("cookie", &a), ("x-request-id", "r4")]),
        Case::new("rule denial, API", "/admin/x", &[API, ("cookie", &a), ("x-request-id", "r5")]),
        Case::new("rule allows the admin", "/admin/x", &[NAV, ("cookie", &n)]),
        Case::new("rule denial, case-folded path", "/ADMIN/x", &[API, ("cookie", &a), ("x-request-id", "r6")]),
        Case::new("spoofed identity headers", "/app", &[API, ("cookie", &a)])
            .with("x-auth-request-user", "admin")
            .with("X_Auth_Request_User", "admin3")
            .with("x-auth-request-email", "ceo@example.com")
            .with("x-auth-request-groups", "admins")
            .with("x-forwarded-user", "root")
            .with("x-forwarded-access-token", "forged")
            .with("remote-user", "root"),
        Case::new("an ID token as a bearer", "/public/x", &[API, ("x-request-id", "r7")])
            .with("authorization", &format!("Bearer {id_token}")),
        Case::new("a tampered cookie", "/app", &[API, ("cookie", "idgate=AAAA"), ("x-request-id", "r8")]),
    ];
    let results = three_ways(&gate, &cases).await;
    let mut answers = BTreeMap::new();
    for (case, r) in cases.iter().zip(&results) {
        answers.insert(case.name, assert_same(case, r));
    }
    let nav = &answers["no session, navigation"];
    assert_eq!(nav["status"], 302);
    assert!(
        pairs(&nav["headers"])
            .contains(&("location".into(), "/oauth2/start?rd=%2Fapp%2Fpage%3Fx%3D1%26y%3D%252F".into()))
    );
    assert_eq!(answers["no session, API"]["status"], 401);
    assert_eq!(answers["no session, API route"]["status"], 401, "an API route never redirects");
    assert_eq!(answers["no session, a form post"]["status"], 401, "only a navigation is redirected");
    assert_eq!(answers["valid session, DELETE"]["allowed"], true);
    assert_eq!(answers["rule denial, API"]["status"], 403);
    assert_eq!(answers["rule denial, case-folded path"]["status"], 403);
    assert_eq!(answers["an ID token as a bearer"]["status"], 401);
    assert!(answers["an ID token as a bearer"]["body"].as_str().unwrap().contains("invalid_token"));
    let public = &answers["no session, public route"];
    assert!(pairs(&public["headers"]).is_empty(), "a public route sets no identity");
    assert!(public["remove"].as_array().unwrap().contains(&json!("x-forwarded-user")));
    let valid = &answers["valid session"];
    let set: BTreeMap<String, String> = pairs(&valid["headers"]).into_iter().collect();
    assert_eq!(set["x-auth-request-user"], "dev|alice");
    assert_eq!(set["cookie"], "theme=dark", "idgate's cookie never reaches the application");
    let only = &answers["valid session, only idgate's cookie"];
    assert!(only["remove"].as_array().unwrap().contains(&json!("cookie")));
    let spoofed = &answers["spoofed identity headers"];
    let remove = spoofed["remove"].as_array().unwrap();
    for n in ["x_auth_request_user", "x-auth-request-email", "x-auth-request-groups", "x-forwarded-user", "remote-user"]
    {
        assert!(remove.contains(&json!(n)) || n == "x-auth-request-email", "{n} removed: {spoofed}");
    }
    let set: BTreeMap<String, String> = pairs(&spoofed["headers"]).into_iter().collect();
    assert_eq!(set["x-auth-request-user"], "dev|alice", "the real identity replaces the forged one");
    assert_eq!(set["x-auth-request-email"], "alice@example.com");
    assert!(!remove.contains(&json!("x-auth-request-user")), "a set header is not also removed");

    // Renewed: past the refresh margin, every way renews the session and sends its cookie.
    gate.clock.advance(250);
    let renewed = vec![Case::new("renewed session", "/app", &[API, ("cookie", &a)])];
    let r = three_ways(&gate, &renewed).await;
    let g = assert_same(&renewed[0], &r[0]);
    assert!(pairs(&g["response_headers"]).iter().any(|(_, v)| v.starts_with("idgate=")), "renewed: {g}");
    // Expired: denied alike, and the dead cookie cleared alike.
    gate.clock.advance(10_000);
    let expired = vec![
        Case::new("expired session, navigation", "/app/x", &[NAV, ("cookie", &n), ("x-request-id", "r9")]),
        Case::new("expired session, API", "/app/x", &[API, ("cookie", &n), ("x-request-id", "r10")]),
    ];
    let r = three_ways(&gate, &expired).await;
    assert_eq!(assert_same(&expired[0], &r[0])["status"], 302);
    assert_eq!(assert_same(&expired[1], &r[1])["status"], 401);
    gate.shutdown().await;
}

#[tokio::test]
async fn malformed_and_oversized_checks_are_denied_not_errors() {
    let gate = TestGate::builder().settings(gate_settings).spawn().await;
    let alice = gate.login_as("alice").await;
    let a = cookie_of(&alice);
    let addr = gate.running.as_ref().unwrap().grpc_addr.unwrap().to_string();
    let many: Vec<(String, String)> = (0..10_000).map(|i| (format!("x-h{i}"), "v".to_owned())).collect();
    let huge = format!("{a}; big={}", "x".repeat(1 << 20));
    let mut checks = vec![
        json!({"address": addr, "no_http": true}),
        json!({"address": addr, "method": "GET", "path": "/app", "headers": many}),
        json!({"address": addr, "method": "GET", "path": "/app", "headers": [["cookie", huge]]}),
        json!({"address": addr, "method": "", "path": "/app", "headers": [["cookie", a]]}),
        json!({"address": addr, "method": "GET", "path": "app", "headers": [["cookie", a]]}),
    ];
    // Paths the route rules would read differently from the application: never vouched for.
    let odd = ["/public/../admin/x", "/public//x", "/public/%2e%2e/admin", "/public/..;/admin/x", "/public%2Fx"];
    for p in odd {
        checks.push(json!({"address": addr, "method": "GET", "path": p, "headers": [["cookie", a], ["accept", "application/json"]]}));
    }
    let answers = grpc(checks).await;
    for a in &answers {
        assert!(a.get("rpc_error").is_none(), "a denial, never an error (failure_mode_allow would pass it): {a}");
        assert_eq!(a["allowed"], false, "{a}");
        assert_eq!(a["code"], 7, "PERMISSION_DENIED: {a}");
    }
    assert_eq!(answers[0]["status"], 400);
    assert!(answers[0]["body"].as_str().unwrap().contains("bad_request"), "{}", answers[0]);
    assert_eq!(answers[1]["status"], 431, "10 000 headers");
    assert_eq!(answers[2]["status"], 431, "a 1 MiB cookie");
    assert_eq!(answers[3]["status"], 400, "no method");
    assert_eq!(answers[4]["status"], 400, "not origin-form");
    for (p, a) in odd.iter().zip(&answers[5..]) {
        assert_eq!(a["status"], 403, "{p}: {a}");
        let body: Value = serde_json::from_str(a["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["error"], "forbidden", "{p}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("normal form") || message.contains("path rule"), "{p}: {message}");
        // The HTTP shape refuses it for the same reason.
        let h = send(
            &format!("{}/oauth2/auth{p}", gate.base),
            &Case::new("odd", p, &[API, ("cookie", &cookie_of(&alice))]),
        )
        .await;
        assert_eq!(h.status, StatusCode::FORBIDDEN, "{p}");
        assert_eq!(h.text(), a["body"].as_str().unwrap(), "{p}");
    }
    // The same paths pass once normal (the defence above is the path rule, not the session).
    let ok = grpc(vec![
        json!({"address": addr, "method": "GET", "path": "/public/x", "headers": [["cookie", cookie_of(&alice)]]}),
    ])
    .await;
    assert_eq!(ok[0]["allowed"], true, "{}", ok[0]);
    gate.shutdown().await;
}

#[tokio::test]
async fn untrusted_callers_are_not_believed() {
    let gate = TestGate::builder()
        .settings(|s| {
            gate_settings(s);
            s.server.trusted_proxies = vec![];
        })
        .spawn()
        .await;
    let b = gate.login_as("alice").await;
    let case = Case::new("public path from an untrusted peer", "/public/x", &[API]);
    let h = send(&format!("{}/oauth2/auth/public/x", gate.base), &case).await;
    assert_eq!(h.status, StatusCode::FORBIDDEN);
    assert!(h.json()["message"].as_str().unwrap().contains("not in server.trusted_proxies"), "{}", h.text());
    let h = send(&format!("{}/oauth2/auth/x", gate.base), &case.clone().with("cookie", &cookie_of(&b))).await;
    assert_eq!(h.status, StatusCode::FORBIDDEN);
    let addr = gate.running.as_ref().unwrap().grpc_addr.unwrap().to_string();
    let g = grpc(vec![
        json!({"address": addr, "method": "GET", "path": "/public/x", "headers": [["accept", "application/json"]]}),
    ])
    .await;
    assert_eq!(g[0]["status"], 403, "{}", g[0]);
    assert!(g[0]["body"].as_str().unwrap().contains("not in server.trusted_proxies"), "{}", g[0]);
    gate.shutdown().await;

    // Without route rules the path cannot change a decision, yet the prefix shape on the public listener still
    // needs a trusted caller (its path feeds the login redirect); the gRPC listener, bound for the data plane
    // only, then answers anyone, as forward-auth does.
    let gate =
        TestGate::builder().settings(|s| s.ext_authz.grpc_listen = Some("127.0.0.1:0".parse().unwrap())).spawn().await;
    let b = gate.login_as("alice").await;
    let case = Case::new("no rules, untrusted", "/x", &[API, ("cookie", &cookie_of(&b))]);
    let h = send(&format!("{}/oauth2/auth/x", gate.base), &case).await;
    assert_eq!(h.status, StatusCode::FORBIDDEN, "{}", h.text());
    assert!(h.json()["message"].as_str().unwrap().contains("not in server.trusted_proxies"), "{}", h.text());
    let g = grpc(vec![grpc_check(&gate, &case)]).await;
    assert_eq!(g[0]["allowed"], true, "{}", g[0]);
    gate.shutdown().await;
}

#[tokio::test]
async fn grpc_over_tls_uses_the_configured_certificate() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // A name of its own: with rcgen's default name on both, OpenSSL-family clients read the leaf as self-signed.
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "idgate test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"), dir.path().join("ca.crt"));
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let gate = TestGate::builder()
        .settings(move |s| {
            gate_settings(s);
            s.ext_authz.grpc_tls = Some(idgate::config::settings::TlsFiles { cert, key });
        })
        .spawn()
        .await;
    let b = gate.login_as("alice").await;
    let addr = gate.running.as_ref().unwrap().grpc_addr.unwrap().to_string();
    let check = |ca: Option<&std::path::Path>| json!({"address": addr, "method": "GET", "path": "/app", "headers": [["cookie", cookie_of(&b)]], "ca": ca});
    let g = grpc(vec![check(Some(&ca_path))]).await;
    assert_eq!(g[0]["allowed"], true, "{}", g[0]);
    let set: BTreeMap<String, String> = pairs(&g[0]["headers"]).into_iter().collect();
    assert_eq!(set["x-auth-request-user"], "dev|alice");
    // Plain h2c to the TLS listener gets no answer.
    let plain = grpc(vec![check(None)]).await;
    assert!(plain[0].get("rpc_error").is_some(), "{}", plain[0]);
    gate.shutdown().await;
}

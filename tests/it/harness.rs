//! The test gate: the development issuer, an echo upstream and idgate, all in-process on loopback port 0, with
//! settings built in code and a settable clock; and a cookie-keeping client that drives logins like a browser.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use idgate::{
    app::{self, Running},
    clock::{Clock, TestClock},
    config::{
        AuthMode, Secret, Settings, TokenAuthMethod,
        settings::{
            AdminSettings, DEFAULT_HEADERS, LogFormat, LogSettings, OidcSettings, RouteSettings, ServerSettings,
            SessionSettings, UpstreamSettings,
        },
    },
    dev_issuer::{DevAlg, DevClient, DevIssuer},
};
use serde_json::Value;
use tokio::net::TcpListener;

pub const CLIENT_ID: &str = "test-client";
pub const CLIENT_SECRET: &str = "test-client-secret";
pub const SESSION_SECRET: &str = "test-session-secret-test-session-secret";
/// The issuer in the settings a test adjusts, replaced by the development issuer's address at spawn.
const ISSUER_PLACEHOLDER: &str = "http://issuer.placeholder.invalid";

/// Installs a log subscriber when TEST_LOG is set.
pub fn trace_init() {
    if std::env::var_os("TEST_LOG").is_some() {
        idgate::telemetry::init(&LogSettings { format: LogFormat::Text, level: "debug".into() });
    }
}

/// Builder for a [`TestGate`].
pub struct Builder {
    alg: DevAlg,
    public: Option<TcpListener>,
    redirect_uri: Option<String>,
    settings: Box<dyn FnOnce(&mut Settings)>,
    registration: Box<dyn FnOnce(&mut DevClient)>,
    upstream: Option<SocketAddr>,
    knobs: Box<dyn FnOnce(&mut idgate::dev_issuer::Knobs)>,
}

/// A running issuer + upstream + idgate.
pub struct TestGate {
    pub issuer: DevIssuer,
    pub clock: Arc<TestClock>,
    pub running: Option<Running>,
    pub base: String,
    pub admin: String,
}

impl TestGate {
    pub fn builder() -> Builder {
        Builder {
            alg: DevAlg::RS256,
            public: None,
            redirect_uri: None,
            settings: Box::new(|_| {}),
            registration: Box::new(|_| {}),
            upstream: None,
            knobs: Box::new(|_| {}),
        }
    }

    pub fn state(&self) -> Arc<app::State> {
        self.running.as_ref().expect("running").state()
    }

    /// Login outcomes counted so far (`idgate_logins_total{result=…}`): `success`, or the refusal's reason.
    pub fn login_results(&self) -> BTreeMap<String, u64> {
        let text = self.state().metrics.render();
        text.lines()
            .filter_map(|l| l.strip_prefix("idgate_logins_total{result=\""))
            .filter_map(|l| l.split_once("\"} "))
            .map(|(reason, n)| (reason.to_owned(), n.trim().parse().unwrap()))
            .collect()
    }

    /// The login outcomes counted since `seen` (each reason once per count), and `seen` brought up to date: tests
    /// assert why a login was refused, not only its status.
    pub fn login_results_since(&self, seen: &mut BTreeMap<String, u64>) -> Vec<String> {
        let now = self.login_results();
        let mut out = Vec::new();
        for (reason, n) in &now {
            for _ in seen.get(reason).copied().unwrap_or(0)..*n {
                out.push(reason.clone());
            }
        }
        *seen = now;
        out
    }

    /// A new browser-like client.
    pub fn browser(&self) -> Browser {
        Browser::new()
    }

    /// Logs `user` in with a fresh browser and returns it.
    pub async fn login_as(&self, user: &str) -> Browser {
        let b = self.browser();
        let landed = b.login(&self.base, "/", user).await;
        assert_eq!(landed.status, StatusCode::OK, "login of {user} landed with {landed:?}");
        b
    }

    /// Another idgate in front of the same issuer and upstream (a replica), with its own adjusted settings.
    pub async fn replica(&self, f: impl FnOnce(&mut Settings)) -> Running {
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut settings = self.state().settings.clone();
        f(&mut settings);
        let running = app::start_on(settings, Arc::clone(&self.clock) as Arc<dyn Clock>, public, admin).await.unwrap();
        eventually("the replica loads the issuer", Duration::from_secs(5), || async {
            running.state().provider.is_ready().then_some(())
        })
        .await;
        running
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.issuer.stop();
    }
}

impl Builder {
    pub fn alg(mut self, alg: DevAlg) -> Self {
        self.alg = alg;
        self
    }

    /// Adjusts the settings before start.
    pub fn settings(mut self, f: impl FnOnce(&mut Settings) + 'static) -> Self {
        self.settings = Box::new(f);
        self
    }

    /// Adjusts the client's registration at the issuer after it was derived from the settings (tests of a
    /// mismatch between the two).
    pub fn registration(mut self, f: impl FnOnce(&mut DevClient) + 'static) -> Self {
        self.registration = Box::new(f);
        self
    }

    /// Sets the issuer's knobs before the gate reads discovery (knobs that change what discovery says).
    pub fn knobs(mut self, f: impl FnOnce(&mut idgate::dev_issuer::Knobs) + 'static) -> Self {
        self.knobs = Box::new(f);
        self
    }

    /// Registers this redirect URI at the issuer instead of the gate's own (a proxy in front).
    pub fn redirect_uri(mut self, uri: String) -> Self {
        self.redirect_uri = Some(uri);
        self
    }

    /// Serves on this listener (bound earlier, so another issuer could register its address).
    pub fn public(mut self, listener: TcpListener) -> Self {
        self.public = Some(listener);
        self
    }

    /// Uses this upstream instead of the echo upstream.
    pub fn upstream(mut self, addr: SocketAddr) -> Self {
        self.upstream = Some(addr);
        self
    }

    pub async fn spawn(self) -> TestGate {
        trace_init();
        let clock = Arc::new(TestClock::default());
        let public = match self.public {
            Some(l) => l,
            None => TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", public.local_addr().unwrap());
        let admin_url = format!("http://{}", admin.local_addr().unwrap());
        let upstream = match self.upstream {
            Some(u) => u,
            None => spawn_json_echo().await,
        };
        // The settings come first, so that the issuer registers the client as the gate is configured (token
        // authentication method, post-logout URL); the issuer's address is filled in once it listens.
        let mut settings = settings(&base, ISSUER_PLACEHOLDER, upstream);
        (self.settings)(&mut settings);
        let mut client = DevClient {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            redirect_uris: vec![self.redirect_uri.clone().unwrap_or_else(|| format!("{base}/oauth2/callback"))],
            token_auth_method: settings.oidc.token_auth_method,
            post_logout_redirect_uris: settings.oidc.post_logout_redirect_url.iter().map(|u| u.to_string()).collect(),
            jwks: None,
            jwks_uri: None,
        };
        (self.registration)(&mut client);
        let issuer =
            DevIssuer::start("127.0.0.1:0".parse().unwrap(), self.alg, client, Arc::clone(&clock) as Arc<dyn Clock>)
                .await
                .unwrap();
        issuer.configure(self.knobs);
        if settings.oidc.issuer == ISSUER_PLACEHOLDER {
            settings.oidc.issuer = issuer.issuer().to_owned();
        }
        let running = app::start_on(settings, Arc::clone(&clock) as Arc<dyn Clock>, public, admin).await.unwrap();
        let gate = TestGate { issuer, clock, running: Some(running), base, admin: admin_url };
        // Wait for discovery and keys (the loader retries quickly at first).
        eventually("the gate loads the issuer", Duration::from_secs(5), || async {
            gate.state().provider.is_ready().then_some(())
        })
        .await;
        gate
    }
}

/// Polls `probe` every 10 ms until it yields a value, for at most `within`; then fails naming `what`. Tests wait
/// for a condition with this, never for a fixed time.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {within:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn until_listening(what: &str, addr: SocketAddr) {
    eventually(&format!("{what} listens on {addr}"), Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await;
}

/// Settings for a gate at `base` in front of `upstream`.
pub fn settings(base: &str, issuer: &str, upstream: SocketAddr) -> Settings {
    Settings {
        server: ServerSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            trusted_proxies: vec![],
            prefix: "/oauth2".into(),
            max_header_bytes: 16384,
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(5),
        },
        admin: AdminSettings { listen: "127.0.0.1:0".parse().unwrap() },
        upstream: UpstreamSettings {
            url: format!("http://{upstream}").parse().unwrap(),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            allowed_upgrades: UpstreamSettings::default_upgrades(),
            strip_headers: vec![],
            issuer_header: idgate::providers::ISSUER_HEADER,
        },
        oidc: OidcSettings {
            issuer: issuer.to_owned(),
            client_id: CLIENT_ID.into(),
            client_secret: Some(Secret::new(CLIENT_SECRET)),
            redirect_url: format!("{base}/oauth2/callback").parse().unwrap(),
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
            allowed_algs: vec![jsonwebtoken::Algorithm::RS256, jsonwebtoken::Algorithm::ES256],
            extra_audiences: vec![],
            leeway: Duration::from_secs(60),
            token_auth_method: TokenAuthMethod::ClientSecretBasic,
            http_timeout: Duration::from_secs(3),
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
        session: SessionSettings { cookie_secure: false, ..SessionSettings::with_secret(Secret::new(SESSION_SECRET)) },
        headers: DEFAULT_HEADERS
            .iter()
            .map(|(h, c)| (http::HeaderName::from_static(h), (*c).to_owned()))
            .chain([(http::HeaderName::from_static("x-auth-request-roles"), "https://example.com/roles".to_owned())])
            .collect(),
        routes: vec![],
        log: LogSettings { format: LogFormat::Text, level: "info".into() },
        assertion: Default::default(),
        ext_authz: Default::default(),
        telemetry: Default::default(),
        providers: vec![],
    }
}

/// A `[[routes]]` entry.
pub fn route(prefix: &str, auth: AuthMode) -> RouteSettings {
    RouteSettings::new(prefix, auth)
}

/// Starts a test upstream on a free loopback port: every connection is served by `handler` (HTTP/1.1, upgrades
/// allowed).
pub async fn spawn_upstream<F, Fut, B>(handler: F) -> SocketAddr
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::Response<B>> + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use hyper::{server::conn::http1, service::service_fn};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, std::convert::Infallible>(fut.await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// An upstream answering JSON: method, URI, headers (name → list of values as UTF-8), and body length.
pub async fn spawn_json_echo() -> SocketAddr {
    spawn_upstream(|req: Request<hyper::body::Incoming>| async move {
        let (parts, body) = req.into_parts();
        let len = body.collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in &parts.headers {
            headers.entry(k.as_str().to_owned()).or_default().push(String::from_utf8_lossy(v.as_bytes()).into_owned());
        }
        let out = serde_json::json!({"method": parts.method.as_str(), "uri": parts.uri.to_string(), "headers": headers, "body_len": len});
        http::Response::builder()
            .header("content-type", "application/json")
            .header("connection", "x-upstream-hop")
            .header("x-upstream-hop", "secret")
            .header("keep-alive", "timeout=5")
            .body(Full::new(Bytes::from(out.to_string())))
            .unwrap()
    })
    .await
}

/// A collected response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn location(&self) -> &str {
        self.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    }
    /// Header values the echo upstream received under `name`.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name]
            .as_array()
            .map(|v| v.iter().map(|s| s.as_str().unwrap().to_owned()).collect::<Vec<_>>().join("|"))
    }
}

/// A browser stand-in: keeps cookies (by name; all servers here share 127.0.0.1), follows nothing by itself.
#[derive(Clone)]
pub struct Browser {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    pub jar: Arc<Mutex<BTreeMap<String, String>>>,
    pub navigation: bool,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        Self { client: Client::builder(TokioExecutor::new()).build_http(), jar: Arc::default(), navigation: true }
    }

    /// The same jar, sending API-style requests (no text/html).
    pub fn api(&self) -> Browser {
        Browser { navigation: false, ..self.clone() }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().unwrap().get(name).cloned()
    }

    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar.lock().unwrap().insert(name.into(), value.into());
    }

    pub async fn get(&self, url: &str) -> Resp {
        self.send(Method::GET, url, HeaderMap::new(), Bytes::new()).await
    }

    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        self.send(Method::GET, url, h, Bytes::new()).await
    }

    pub async fn post_form(&self, url: &str, form: &str) -> Resp {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        self.send(Method::POST, url, h, Bytes::from(form.to_owned())).await
    }

    pub async fn send(&self, method: Method, url: &str, mut headers: HeaderMap, body: Bytes) -> Resp {
        if self.navigation && !headers.contains_key(header::ACCEPT) {
            headers.insert(header::ACCEPT, HeaderValue::from_static("text/html,application/xhtml+xml"));
        }
        let cookie = {
            let jar = self.jar.lock().unwrap();
            jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
        };
        if !cookie.is_empty() && !headers.contains_key(header::COOKIE) {
            headers.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
        }
        let mut req = Request::builder().method(method).uri(url).body(Full::new(body)).unwrap();
        *req.headers_mut() = headers;
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .expect("request timed out")
            .expect("request failed");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let r = Resp { status: parts.status, headers: parts.headers, body };
        self.store(&r);
        r
    }

    fn store(&self, r: &Resp) {
        let mut jar = self.jar.lock().unwrap();
        for c in r.set_cookies() {
            let pair = c.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if c.contains("Max-Age=0") || value.is_empty() {
                jar.remove(name);
            } else {
                jar.insert(name.into(), value.into());
            }
        }
    }

    /// Resolves a Location against `base`.
    pub fn resolve(base: &str, location: &str) -> String {
        if location.starts_with("http") { location.to_owned() } else { format!("{base}{location}") }
    }

    /// Starts at `path` and walks the login until the callback's redirect; returns the callback response.
    pub async fn login_to_callback(&self, base: &str, path: &str, user: &str) -> Resp {
        let first = self.get(&format!("{base}{path}")).await;
        assert_eq!(first.status, StatusCode::FOUND, "protected page should redirect: {first:?}");
        let start = self.get(&Self::resolve(base, first.location())).await;
        assert_eq!(start.status, StatusCode::FOUND, "start should redirect to the issuer: {}", start.text());
        self.authorize_and_callback(base, start.location(), user).await
    }

    /// Submits the issuer's login form for `authorize_url` and requests the callback it redirects to.
    pub async fn authorize_and_callback(&self, base: &str, authorize_url: &str, user: &str) -> Resp {
        let form = self.get(authorize_url).await;
        assert_eq!(form.status, StatusCode::OK, "authorize page: {}", form.text());
        let submitted = self.post_form(authorize_url, &format!("username={}", urlencode(user))).await;
        assert_eq!(submitted.status, StatusCode::FOUND, "authorize submit: {}", submitted.text());
        self.get(&Self::resolve(base, submitted.location())).await
    }

    /// The whole login from `path`; returns the final page (after following the callback's redirect).
    pub async fn login(&self, base: &str, path: &str, user: &str) -> Resp {
        let cb = self.login_to_callback(base, path, user).await;
        assert_eq!(cb.status, StatusCode::FOUND, "callback: {} {}", cb.status, cb.text());
        self.get(&Self::resolve(base, cb.location())).await
    }
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A JWT-looking string anywhere in `text`.
pub fn contains_jwt(text: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')).any(|w| {
        let parts: Vec<&str> = w.split('.').collect();
        parts.len() >= 3 && parts[0].starts_with("eyJ") && parts[1].len() > 10
    })
}

/// Runs `script` (under tests/) with the Python of the virtualenv `venv` (under tests/, made by scripts/deps.sh),
/// writes `input` to its stdin as JSON and returns what it prints as JSON; fails the test with its stderr otherwise.
pub async fn python_json(venv: &str, script: &str, input: &impl serde::Serialize) -> Value {
    use tokio::io::AsyncWriteExt;
    let tests = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests");
    let python = tests.join(venv).join("bin/python");
    assert!(python.exists(), "{venv} is not installed: run scripts/deps.sh");
    let mut child = tokio::process::Command::new(python)
        .arg(tests.join(script))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&serde_json::to_vec(input).unwrap()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

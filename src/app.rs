//! The wiring, and nothing else: [`State`] built once from [`Settings`], the request handler that routes each
//! request down its path, and [`start`], which binds both listeners and runs until shutdown.

use std::{borrow::Cow, net::SocketAddr, sync::Arc, time::Duration};

use http::{Method, Request, Response};
use tokio::{net::TcpListener, sync::watch};

use crate::{
    body::{self, Body},
    client,
    clock::Clock,
    config::{AuthMode, Settings, StoreKind},
    error::{self, Context},
    forward::{Forwarder, Peer},
    identity::HeaderPlan,
    login::{self, flow::Flows},
    oidc::Provider,
    own_keys::OwnKeys,
    pipeline::{self, Failure},
    policy::Rules,
    providers::Registry,
    route::{self, Endpoint, Route, RouteTable},
    server::{self, Limits},
    session::{
        Sessions,
        cookie::Attributes,
        seal::{KeyRing, Purpose},
    },
    telemetry::{self, access_log, metrics::Metrics},
};

/// Largest form body idgate reads itself (sign-out confirmation).
const MAX_FORM_BYTES: usize = 8 * 1024;

/// Everything a request needs, built once at start (and again, in part, by a reload).
pub struct State {
    pub settings: Settings,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// The first provider (with `[oidc]`, the only one). A request picks its own from `providers`.
    pub provider: Arc<Provider>,
    /// Every provider, by name, and which a request may use.
    pub providers: Arc<Registry>,
    pub sessions: Sessions,
    pub flows: Flows,
    pub routes: RouteTable,
    pub rules: Rules,
    pub headers: HeaderPlan,
    pub forwarder: Arc<Forwarder>,
    /// States already redeemed, kept as long as a flow lives: a replayed callback fails even with its cookie.
    pub used_states: moka::sync::Cache<String, ()>,
    /// `jti`s of logout tokens already acted on (replay guard).
    pub logout_jtis: moka::sync::Cache<String, ()>,
    /// Refreshes in flight or just done, shared by concurrent requests of one session.
    pub refreshes: login::refresh::Flights,
    /// idgate's own keys and their published JWK set.
    pub own_keys: Arc<OwnKeys>,
    /// The identity assertion signer and its cache, when `[assertion]` is on.
    pub assertions: Option<Arc<crate::assertion::Assertions>>,
    /// Bearer access tokens on API routes, when `oidc.api_audiences` turns them on.
    pub bearer: crate::bearer::Shared,
    /// Form posts kept over a re-login.
    pub posts: login::preserved_post::PreservedPosts,
    /// OpenTelemetry spans, when `[telemetry] otlp_endpoint` is set.
    pub tracer: Option<Arc<telemetry::span::Tracer>>,
}

/// What a reload keeps: the issuer, the upstream client, metrics, the session store and the replay guards.
struct Kept {
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    providers: Arc<Registry>,
    forwarder: Arc<Forwarder>,
    store: crate::session::Shared,
    used_states: moka::sync::Cache<String, ()>,
    logout_jtis: moka::sync::Cache<String, ()>,
    refreshes: login::refresh::Flights,
    own_keys: Arc<OwnKeys>,
    assertions: Option<Arc<crate::assertion::Assertions>>,
    bearer: crate::bearer::Shared,
    tracer: Option<Arc<telemetry::span::Tracer>>,
}

impl State {
    /// Builds the state. Nothing here does I/O; the issuer loads in the background once started. With
    /// `[telemetry]` on, the span exporter's task is spawned here (call within the Tokio runtime).
    pub fn new(settings: Settings, clock: Arc<dyn Clock>) -> Result<Arc<State>, StartError> {
        let metrics = Arc::new(Metrics::default());
        let tracer = telemetry::start_tracing(&settings.telemetry, &settings.session.secret, &metrics);
        let http = client::build(settings.upstream.connect_timeout);
        let multi = !settings.providers.is_empty();
        let providers = Arc::new(Registry::new(&settings, |name, oidc| {
            let sink = if multi { metrics.for_provider(name) } else { Arc::clone(&metrics) };
            Registry::loaded(Provider::new(oidc.clone(), http.clone(), sink).with_clock(Arc::clone(&clock)))
        }));
        let forwarder = Forwarder::new(
            http,
            &settings.upstream.url,
            settings.upstream.timeout,
            settings.upstream.connect_timeout,
            settings.server.trusted_proxies.clone(),
            metrics.kept_upstream(),
            &settings.upstream.allowed_upgrades,
        );
        let store = Sessions::new(&settings.session).map_err(|e| StartError::Store(e.to_string()))?.shared_store();
        let own_keys = Arc::new(OwnKeys::new(&settings));
        let assertions =
            crate::assertion::Assertions::new(&settings, own_keys.assertion_key(), Arc::clone(&metrics)).map(Arc::new);
        let kept = Kept {
            clock,
            metrics,
            providers,
            forwarder: Arc::new(forwarder),
            store,
            used_states: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
            logout_jtis: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(900))
                .build(),
            refreshes: login::refresh::flights(),
            own_keys,
            assertions,
            bearer: crate::bearer::Bearer::new(&settings.oidc).map(Arc::new),
            tracer,
        };
        Ok(Arc::new(Self::assemble(settings, kept)))
    }

    fn assemble(settings: Settings, kept: Kept) -> State {
        let s = &settings.session;
        let prefix = settings.server.prefix.clone();
        let callback = settings.callback_path().to_owned();
        let flow_path = if callback.starts_with(&format!("{prefix}/")) { prefix.clone() } else { "/".into() };
        State {
            posts: login::preserved_post::PreservedPosts::new(&settings, &flow_path),
            sessions: Sessions::with_store(s, kept.store),
            flows: Flows {
                ring: KeyRing::new(&s.secret, &s.previous_secrets, Purpose::Flow),
                prefix: format!("{}_flow_", s.cookie_name),
                path: flow_path,
                attrs: Attributes { secure: s.cookie_secure, domain: s.cookie_domain.clone() },
                max: s.max_flows,
            },
            routes: RouteTable::new(&prefix, &callback, &settings.routes),
            rules: Rules::new(&settings.routes),
            headers: HeaderPlan::new(
                &settings.headers,
                &[
                    settings.upstream.strip_headers.as_slice(),
                    std::slice::from_ref(&settings.assertion.header),
                    std::slice::from_ref(&settings.upstream.issuer_header),
                ]
                .concat(),
                &s.cookie_name,
            ),
            forwarder: kept.forwarder,
            used_states: kept.used_states,
            logout_jtis: kept.logout_jtis,
            refreshes: kept.refreshes,
            own_keys: kept.own_keys,
            provider: Arc::clone(kept.providers.first().provider()),
            providers: kept.providers,
            assertions: kept.assertions,
            bearer: kept.bearer,
            tracer: kept.tracer,
            metrics: kept.metrics,
            clock: kept.clock,
            settings,
        }
    }

    /// A state for reloaded settings: session secrets and cookie settings, header mappings and routes change; the
    /// listeners, upstream, issuer and session store stay (they need a restart). Returns the keys whose changes
    /// were not applied ([`needs_restart`]).
    pub fn reloaded(&self, mut new: Settings) -> (State, Vec<&'static str>) {
        let old = &self.settings;
        let mut ignored = needs_restart(old, &new);
        // With [[providers]] before and after, providers are added, removed and changed by the reload.
        let providers_reload = !old.providers.is_empty() && !new.providers.is_empty();
        if providers_reload {
            ignored.retain(|k| !k.starts_with("oidc."));
        } else {
            if old.providers.is_empty() != new.providers.is_empty() {
                ignored.push("providers");
            }
            new.oidc = old.oidc.clone();
            new.providers = old.providers.clone();
        }
        new.server = old.server.clone();
        new.admin = old.admin.clone();
        new.upstream = old.upstream.clone();
        new.session.store = old.session.store.clone();
        new.session.memory_capacity = old.session.memory_capacity;
        new.log = old.log.clone();
        new.assertion = old.assertion.clone();
        new.ext_authz = old.ext_authz.clone();
        new.telemetry = old.telemetry.clone();
        let providers = if providers_reload {
            let http = client::build(new.upstream.connect_timeout);
            let registry = Registry::new(&new, |name, oidc| {
                self.providers.reusable(name, oidc).unwrap_or_else(|| {
                    Registry::loaded(Provider::new(oidc.clone(), http.clone(), self.metrics.for_provider(name)))
                })
            });
            registry.start_loaders();
            Arc::new(registry)
        } else {
            Arc::clone(&self.providers)
        };
        let kept = Kept {
            clock: Arc::clone(&self.clock),
            metrics: Arc::clone(&self.metrics),
            providers,
            forwarder: Arc::clone(&self.forwarder),
            store: self.sessions.shared_store(),
            used_states: self.used_states.clone(),
            logout_jtis: self.logout_jtis.clone(),
            refreshes: self.refreshes.clone(),
            own_keys: Arc::clone(&self.own_keys),
            assertions: self.assertions.clone(),
            bearer: self.bearer.clone(),
            tracer: self.tracer.clone(),
        };
        (Self::assemble(new, kept), ignored)
    }
}

/// The configuration keys that differ between `old` and `new` but that a reload cannot apply: everything in
/// `[server]`, `[admin]`, `[upstream]`, `[oidc]` and `[log]`, and the session store. Values are compared as typed
/// values (secrets included, never through their redacted `Debug`), and every field is named in a destructuring
/// pattern, so a new setting cannot be left out of the comparison without a compile error.
pub fn needs_restart(old: &Settings, new: &Settings) -> Vec<&'static str> {
    use crate::config::settings::{
        AdminSettings, LogSettings, OidcSettings, ServerSettings, SessionSettings, UpstreamSettings,
    };
    let mut out = Vec::new();
    let mut check = |key: &'static str, changed: bool| {
        if changed {
            out.push(key);
        }
    };
    let ServerSettings {
        listen,
        tls,
        trusted_proxies,
        prefix,
        max_header_bytes,
        header_read_timeout,
        idle_timeout,
        max_connections,
        shutdown_grace,
    } = &old.server;
    let n = &new.server;
    check("server.listen", *listen != n.listen);
    check("server.tls_cert_file", tls.as_ref().map(|t| &t.cert) != n.tls.as_ref().map(|t| &t.cert));
    check("server.tls_key_file", tls.as_ref().map(|t| &t.key) != n.tls.as_ref().map(|t| &t.key));
    check("server.trusted_proxies", *trusted_proxies != n.trusted_proxies);
    check("server.prefix", *prefix != n.prefix);
    check("server.max_header_bytes", *max_header_bytes != n.max_header_bytes);
    check("server.header_read_timeout_secs", *header_read_timeout != n.header_read_timeout);
    check("server.idle_timeout_secs", *idle_timeout != n.idle_timeout);
    check("server.max_connections", *max_connections != n.max_connections);
    check("server.shutdown_grace_secs", *shutdown_grace != n.shutdown_grace);
    let AdminSettings { listen } = &old.admin;
    check("admin.listen", *listen != new.admin.listen);
    // `issuer_header` takes effect on reload: the registry and the header plan are rebuilt.
    let UpstreamSettings { url, connect_timeout, timeout, allowed_upgrades, strip_headers, issuer_header: _ } =
        &old.upstream;
    let n = &new.upstream;
    check("upstream.url", *url != n.url);
    check("upstream.connect_timeout_secs", *connect_timeout != n.connect_timeout);
    check("upstream.timeout_secs", *timeout != n.timeout);
    check("upstream.allowed_upgrades", *allowed_upgrades != n.allowed_upgrades);
    check("upstream.strip_headers", *strip_headers != n.strip_headers);
    let OidcSettings {
        issuer,
        client_id,
        client_secret,
        redirect_url,
        scopes,
        allowed_algs,
        extra_audiences,
        leeway,
        token_auth_method,
        http_timeout,
        jwks_refetch_interval,
        post_logout_redirect_url,
        forward_access_token,
        userinfo_claims,
        id_token_decryption,
        dpop,
        bearer,
        client_key,
        client_assertion_audience,
        par,
    } = &old.oidc;
    let n = &new.oidc;
    check("oidc.issuer", *issuer != n.issuer);
    check("oidc.client_id", *client_id != n.client_id);
    check("oidc.client_secret", *client_secret != n.client_secret);
    check("oidc.redirect_url", *redirect_url != n.redirect_url);
    check("oidc.scopes", *scopes != n.scopes);
    check("oidc.allowed_algs", *allowed_algs != n.allowed_algs);
    check("oidc.extra_audiences", *extra_audiences != n.extra_audiences);
    check("oidc.leeway_secs", *leeway != n.leeway);
    check("oidc.token_auth_method", *token_auth_method != n.token_auth_method);
    check("oidc.http_timeout_secs", *http_timeout != n.http_timeout);
    check("oidc.jwks_refetch_interval_secs", *jwks_refetch_interval != n.jwks_refetch_interval);
    check("oidc.post_logout_redirect_url", *post_logout_redirect_url != n.post_logout_redirect_url);
    check("oidc.forward_access_token", *forward_access_token != n.forward_access_token);
    check("oidc.userinfo_claims", *userinfo_claims != n.userinfo_claims);
    let (d, nd) = (id_token_decryption, &n.id_token_decryption);
    check("oidc.id_token_decryption_key_file", d.keys != nd.keys);
    check("oidc.require_encrypted_id_token", d.required != nd.required);
    check("oidc.id_token_encryption_algs", d.allowed.algs != nd.allowed.algs);
    check("oidc.id_token_encryption_encs", d.allowed.encs != nd.allowed.encs);
    check("oidc.dpop", dpop.mode != n.dpop.mode);
    check("oidc.dpop_key_file", dpop.key != n.dpop.key);
    check("oidc.api_audiences", bearer.api_audiences != n.bearer.api_audiences);
    check("oidc.access_token_typ_required", bearer.typ_required != n.bearer.typ_required);
    check("oidc.introspect_opaque_tokens", bearer.introspect != n.bearer.introspect);
    check("oidc.introspection_cache_secs", bearer.introspection_cache != n.bearer.introspection_cache);
    check("oidc.client_key_file", *client_key != n.client_key);
    check("oidc.client_assertion_audience", *client_assertion_audience != n.client_assertion_audience);
    check("oidc.par", *par != n.par);
    // The session section applies, except where its sessions are kept.
    let SessionSettings {
        secret: _,
        previous_secrets: _,
        cookie_name: _,
        cookie_secure: _,
        cookie_domain: _,
        store,
        max_flows: _,
        memory_capacity,
        refresh_margin: _,
        silent_reauth: _,
        preserve_post_max_bytes: _,
        preserve_post_store_bytes: _,
    } = &old.session;
    let n = &new.session;
    match (store, &n.store) {
        (StoreKind::Redis { url: a }, StoreKind::Redis { url: b }) => check("session.redis_url", a != b),
        (a, b) => check("session.store", a != b),
    }
    check("session.memory_capacity", *memory_capacity != n.memory_capacity);
    let crate::config::settings::ExtAuthzSettings { grpc_listen, grpc_tls } = &old.ext_authz;
    check("ext_authz.grpc_listen", *grpc_listen != new.ext_authz.grpc_listen);
    check(
        "ext_authz.grpc_tls_cert_file",
        grpc_tls.as_ref().map(|t| &t.cert) != new.ext_authz.grpc_tls.as_ref().map(|t| &t.cert),
    );
    check(
        "ext_authz.grpc_tls_key_file",
        grpc_tls.as_ref().map(|t| &t.key) != new.ext_authz.grpc_tls.as_ref().map(|t| &t.key),
    );
    // The exporter lives across reloads: its section needs a restart.
    let crate::config::telemetry::TelemetrySettings { otlp } = &old.telemetry;
    let (o, n) = (otlp.as_ref(), new.telemetry.otlp.as_ref());
    check("telemetry.otlp_endpoint", o.map(|o| &o.endpoint) != n.map(|n| &n.endpoint));
    check("telemetry.otlp_headers", o.map(|o| &o.headers) != n.map(|n| &n.headers));
    check("telemetry.service_name", o.map(|o| &o.service_name) != n.map(|n| &n.service_name));
    let LogSettings { format, level } = &old.log;
    check("log.format", *format != new.log.format);
    check("log.level", *level != new.log.level);
    // The assertion's key lives across reloads, and its signer with it: the section needs a restart.
    let crate::config::assertion::AssertionSettings {
        enabled,
        header,
        key,
        previous_keys,
        lifetime,
        issuer,
        audience,
        claims,
    } = &old.assertion;
    let n = &new.assertion;
    check("assertion.enabled", *enabled != n.enabled);
    check("assertion.header", *header != n.header);
    check("assertion.key_file", *key != n.key);
    check("assertion.previous_key_files", *previous_keys != n.previous_keys);
    check("assertion.lifetime_secs", *lifetime != n.lifetime);
    check("assertion.issuer", *issuer != n.issuer);
    check("assertion.audience", *audience != n.audience);
    check("assertion.claims", *claims != n.claims);
    out
}

/// The state requests see; a reload swaps it, and requests already running finish with the one they took.
pub struct Shared(std::sync::RwLock<Arc<State>>);

impl Shared {
    /// The current state.
    pub fn current(&self) -> Arc<State> {
        self.0.read().map(|s| Arc::clone(&s)).unwrap_or_else(|poisoned| Arc::clone(&poisoned.into_inner()))
    }

    fn replace(&self, state: State) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Arc::new(state);
        }
    }
}

/// Handles one public request: normalise the path (the upstream receives that form), classify, dispatch, answer
/// errors in one place, log one line. With `[telemetry]` on, all of it runs inside the request's span (a trusted
/// peer's `traceparent` its parent).
pub async fn handle(state: Arc<State>, req: Request<Body>, peer: Peer) -> Response<Body> {
    let Some(tracer) = state.tracer.as_ref() else {
        return answer(state, req, peer).await;
    };
    let incoming = telemetry::trace::accepted(req.headers(), state.forwarder.is_trusted(peer.ip));
    let span = tracer.request(req.method().as_str(), incoming);
    let resp = telemetry::span::within(Arc::clone(&span), Box::pin(answer(state, req, peer))).await;
    span.status(resp.status().as_u16());
    resp
}

async fn answer(state: Arc<State>, mut req: Request<Body>, peer: Peer) -> Response<Body> {
    let started = tokio::time::Instant::now();
    let request_id = telemetry::request_id(req.headers());
    let method = req.method().clone();
    let kind = route::kind(&method, req.headers());
    // A `Uri` clone shares its bytes: no copy of the path on the request path, only on the error or log path.
    let received = req.uri().clone();
    // Envoy's HTTP ext_authz shape, `{prefix}/auth/<original path>`: the original path is judged as received.
    let envoy = crate::ext_authz::http::original_target(state.routes.prefix(), &received);
    // Ambiguous framing is refused before anything reads the request (`framing`).
    let decided = match (crate::framing::check(req.version(), req.headers()), envoy) {
        (Err(e), _) => Err(crate::error::RequestError::from(e)),
        (Ok(()), Some(_)) => Ok(Route::Endpoint(Endpoint::Auth)),
        (Ok(()), None) => state
            .routes
            .decide(received.path(), true)
            .and_then(|(path, route)| match path {
                Cow::Borrowed(_) => Ok(route),
                Cow::Owned(path) => set_path(&mut req, &path).map(|()| route),
            })
            .map_err(crate::error::RequestError::from),
    };
    let uri = req.uri().clone();
    telemetry::span::kind(match (&decided, envoy) {
        (Ok(_), Some(_)) => "ext_authz_http",
        (Ok(route), None) => route.label(),
        (Err(_), _) => "refused",
    });
    telemetry::span::set("idgate.request_id", || request_id.clone());
    let (route, result) = match (decided, envoy) {
        (Ok(route), Some(target)) => {
            (Some(route), Ok(crate::ext_authz::http::check(&state, &method, req.headers(), &peer, target).await))
        }
        (Ok(route), None) => (Some(route), dispatch(&state, route, req, peer).await),
        (Err(e), _) => (None, Err(Failure::from(e))),
    };
    // The upstream's own answers pass as they are; everything idgate answers itself gets its security headers.
    let own = !matches!((&route, &result), (Some(Route::Proxy { .. }), Ok(_)));
    let mut resp = match result {
        Ok(r) => r,
        Err(Failure { err, clear }) => {
            let may_redirect = matches!(route, Some(Route::Proxy { auth: AuthMode::Login, .. }));
            let ctx = Context {
                kind,
                may_redirect,
                return_to: uri.path_and_query().map_or("/", |p| p.as_str()),
                prefix: state.routes.prefix(),
                clear,
                request_id: &request_id,
            };
            error::respond(&err, ctx)
        }
    };
    if own {
        error::harden(&mut resp, state.settings.hsts());
    }
    if let Ok(v) = http::HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let elapsed = started.elapsed();
    state.metrics.request(resp.status().as_u16(), elapsed);
    access_log::write(&access_log::Line {
        message: "request",
        method: method.as_str(),
        path: received.path(),
        status: resp.status().as_u16(),
        latency_us: elapsed.as_micros() as u64,
        request_id: &request_id,
    });
    resp
}

/// Replaces the request's path with its normal form, keeping the query as received.
fn set_path(req: &mut Request<Body>, path: &str) -> Result<(), route::BadPath> {
    let target = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(target.parse().map_err(|_| route::BadPath("normal form is not a valid URI"))?);
    *req.uri_mut() = http::Uri::from_parts(parts).map_err(|_| route::BadPath("normal form is not a valid URI"))?;
    Ok(())
}

/// Runs the route's handler. A request's future is as large as its largest branch, and the server moves it to the
/// heap whole for every request: the hot branches (the proxied request, the forward-auth check) are awaited in
/// place, idgate's own endpoints behind a box of their own, so that logins and sign-outs do not make every proxied
/// request's future (and its copy) tens of kilobytes.
async fn dispatch(state: &State, route: Route, req: Request<Body>, peer: Peer) -> Result<Response<Body>, Failure> {
    match route {
        Route::Proxy { auth, rule } => pipeline::proxy(state, req, peer, auth, rule).await,
        Route::Endpoint(Endpoint::Auth) => pipeline::forward_auth(state, req.headers(), peer).await,
        Route::Endpoint(endpoint) => Box::pin(endpoint_answer(state, endpoint, req, peer)).await,
    }
}

/// Answers one of idgate's own endpoints but the forward-auth check.
async fn endpoint_answer(
    state: &State,
    endpoint: Endpoint,
    req: Request<Body>,
    peer: Peer,
) -> Result<Response<Body>, Failure> {
    match endpoint {
        Endpoint::Auth => pipeline::forward_auth(state, req.headers(), peer).await,
        Endpoint::Start => {
            let host = request_host(state, &req, &peer);
            let kind = route::kind(req.method(), req.headers());
            Ok(login::choose::start(state, req.headers(), host.as_deref(), kind, req.uri().query()).await?)
        }
        Endpoint::Callback => {
            let result = login::callback::callback(state, req.headers(), req.uri().query()).await;
            if let Err(e) = &result {
                e.metrics(&state.metrics).event(crate::telemetry::metrics::Event::Login(e.reason()));
            }
            Ok(result?)
        }
        Endpoint::SignOut => {
            let (parts, incoming) = req.into_parts();
            let form = if parts.method == Method::POST {
                body::collect_limited(incoming, MAX_FORM_BYTES).await.map_err(|_| {
                    Failure::from(crate::error::RequestError::BadRequest("sign-out form too large or unreadable"))
                })?
            } else {
                bytes::Bytes::new()
            };
            Ok(login::sign_out::sign_out(state, &parts.method, &parts.headers, parts.uri.query(), &form).await?)
        }
        Endpoint::BackchannelLogout => {
            let (parts, incoming) = req.into_parts();
            let form = body::collect_limited(incoming, MAX_FORM_BYTES).await.map_err(|_| {
                Failure::from(crate::error::RequestError::BadRequest("logout form too large or unreadable"))
            })?;
            Ok(login::backchannel::backchannel_logout(state, &parts.method, &parts.headers, &form).await)
        }
        Endpoint::Userinfo => {
            let host = request_host(state, &req, &peer);
            pipeline::userinfo(state, req.headers(), host.as_deref()).await
        }
        Endpoint::Jwks => Ok(state.own_keys.response()),
    }
}

/// The request's host as the application sees it (with `[[providers]]`; `X-Forwarded-Host` from trusted proxies).
pub fn request_host<B>(state: &State, req: &Request<B>, peer: &Peer) -> Option<String> {
    let authority = req.uri().authority().map(|a| a.as_str());
    state.providers.host(req.headers(), authority, state.forwarder.is_trusted(peer.ip))
}

/// A running idgate: its bound addresses and a handle to stop it.
pub struct Running {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The ext_authz gRPC listener's address, when `[ext_authz] grpc_listen` is set.
    pub grpc_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The state requests currently see.
    pub fn state(&self) -> Arc<State> {
        self.shared.current()
    }

    /// Applies reloaded settings without dropping connections; returns the keys that need a restart.
    pub fn reload(&self, settings: Settings) -> Vec<&'static str> {
        self.reloader().reload(settings)
    }

    /// A handle that reloads settings, for the SIGHUP handler.
    pub fn reloader(&self) -> Reloader {
        Reloader(Arc::clone(&self.shared))
    }

    /// Stops accepting, drains in-flight requests (up to the grace deadline) and waits until done.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.done.await;
    }

    /// Waits until the servers end (after [`Running::shutdown`] or a signal).
    pub async fn wait(self) {
        let _ = self.done.await;
    }

    /// A trigger that starts the drain, for signal handlers.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Swaps in reloaded settings.
#[derive(Clone)]
pub struct Reloader(Arc<Shared>);

impl Reloader {
    /// Applies `settings`; returns the keys whose changes need a restart (they keep their old values).
    pub fn reload(&self, settings: Settings) -> Vec<&'static str> {
        let (state, ignored) = self.0.current().reloaded(settings);
        self.0.replace(state);
        if ignored.is_empty() {
            tracing::info!("configuration reloaded");
        } else {
            tracing::warn!(
                not_applied = ?ignored,
                "configuration reloaded; changes to these keys keep their old values until a restart"
            );
        }
        ignored
    }
}

/// A start-up failure (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{key}: cannot listen on {addr}: {source}")]
    Bind { key: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] server::tls::TlsError),
    #[error("session.redis_url: {0}")]
    Store(String),
}

/// Binds both listeners, starts loading the issuer, and serves until stopped.
pub async fn start(settings: Settings, clock: Arc<dyn Clock>) -> Result<Running, StartError> {
    let bind = |key: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|source| StartError::Bind { key, addr, source })
    };
    let public = bind("server.listen", settings.server.listen).await?;
    let admin = bind("admin.listen", settings.admin.listen).await?;
    start_on(settings, clock, public, admin).await
}

/// Serves on listeners bound by the caller (tests bind port 0 first to learn the address).
pub async fn start_on(
    settings: Settings,
    clock: Arc<dyn Clock>,
    public: TcpListener,
    admin: TcpListener,
) -> Result<Running, StartError> {
    let tls = settings.server.tls.as_ref().map(server::tls::acceptor).transpose()?;
    let public_addr = public.local_addr().map_err(|source| StartError::Bind {
        key: "server.listen",
        addr: settings.server.listen,
        source,
    })?;
    let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
        key: "admin.listen",
        addr: settings.admin.listen,
        source,
    })?;
    let limits = Limits {
        max_header_bytes: settings.server.max_header_bytes,
        header_read_timeout: settings.server.header_read_timeout,
        idle_timeout: settings.server.idle_timeout,
        max_connections: settings.server.max_connections,
        when_full: server::WhenFull::Wait,
    };
    let grace = settings.server.shutdown_grace;
    let grpc = match settings.ext_authz.grpc_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind {
                key: "ext_authz.grpc_listen",
                addr,
                source,
            })?;
            let bound = listener.local_addr().map_err(|source| StartError::Bind {
                key: "ext_authz.grpc_listen",
                addr,
                source,
            })?;
            let tls = settings.ext_authz.grpc_tls.as_ref().map(server::tls::acceptor).transpose()?;
            Some((listener, bound, tls))
        }
        None => None,
    };
    let grpc_addr = grpc.as_ref().map(|(_, bound, _)| *bound);
    let state = State::new(settings, clock)?;
    state.providers.start_loaders();
    let shared = Arc::new(Shared(std::sync::RwLock::new(Arc::clone(&state))));
    let (stop, stopped) = watch::channel(false);
    let signal = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let public_server = {
        let sh = Arc::clone(&shared);
        let handler = move |req, peer| handle(sh.current(), req, peer);
        server::serve(public, tls, limits, Arc::clone(&state.metrics), handler, signal(stopped.clone()), grace)
    };
    let admin_server = {
        let sh = Arc::clone(&shared);
        let handler = move |req, _peer| server::admin::handle(sh.current(), req);
        // Its own small cap, and a new connection always gets in: probes are answered under any flood.
        let admin_limits = Limits {
            max_connections: server::ADMIN_MAX_CONNECTIONS,
            when_full: server::WhenFull::DropOldestSilent,
            ..limits
        };
        server::serve(
            admin,
            None,
            admin_limits,
            Arc::new(Metrics::default()),
            handler,
            signal(stopped.clone()),
            Duration::from_secs(1),
        )
    };
    let grpc_server = {
        let sh = Arc::clone(&shared);
        let current: crate::ext_authz::grpc::Current = Arc::new(move || sh.current());
        let (handshake, cap) = (limits.header_read_timeout, limits.max_connections);
        let stopped = signal(stopped.clone());
        async move {
            if let Some((listener, bound, tls)) = grpc {
                tracing::info!(ext_authz_grpc = %bound, tls = tls.is_some(), "ext_authz gRPC serving");
                crate::ext_authz::grpc::serve(listener, tls, current, handshake, cap, stopped).await;
            }
        }
    };
    tracing::info!(public = %public_addr, admin = %admin_addr, upstream = %state.settings.upstream.url, issuer = %state.settings.oidc.issuer, "idgate serving");
    let stopping = Arc::clone(&shared);
    let done = tokio::spawn(async move {
        tokio::join!(public_server, admin_server, grpc_server);
        stopping.current().providers.stop_loaders();
    });
    Ok(Running { public_addr, admin_addr, grpc_addr, shared, stop, done })
}

/// Resolves on SIGTERM or SIGINT (Kubernetes sends SIGTERM, then SIGKILL after the grace period).
pub async fn termination_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; draining");
}

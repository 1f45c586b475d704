//! OpenTelemetry traces over OTLP/HTTP: a small collector started here receives idgate's exports, and an
//! independent decoder (tests/otlp/decode.py: OpenTelemetry's own Python protos, none of idgate's types) reads
//! them. Checked: the parentage (a trusted `traceparent` is the request span's parent;
//! issuer and store calls are its children; the upstream's `traceparent` names the request span), the attributes,
//! that no token, cookie or `sub` appears in any exported byte, and that a collector that is down or hangs costs
//! requests nothing and warns once. The tests fail, rather than skip, when the decoder is missing: scripts/deps.sh
//! installs it.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use idgate::{
    config::{AuthMode, Settings, StoreKind, telemetry::OtlpSettings},
    dev_issuer::DevAlg,
    telemetry::{metrics::SpanOutcome, trace::Parent},
};
use serde_json::{Value, json};

use crate::harness::{Browser, TestGate, contains_jwt, eventually, route, spawn_upstream};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";
const API_KEY: &str = "collector-key-0123";

/// One export the collector received.
#[derive(Debug, Clone)]
struct Post {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A minimal OTLP/HTTP receiver: keeps every POST and answers 200 with an empty `ExportTraceServiceResponse`.
struct Collector {
    addr: SocketAddr,
    posts: Arc<Mutex<Vec<Post>>>,
}

impl Collector {
    async fn start() -> Collector {
        let posts: Arc<Mutex<Vec<Post>>> = Arc::default();
        let kept = Arc::clone(&posts);
        let addr = spawn_upstream(move |req: http::Request<hyper::body::Incoming>| {
            let kept = Arc::clone(&kept);
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                kept.lock().unwrap().push(Post { path: parts.uri.path().to_owned(), headers: parts.headers, body });
                http::Response::builder()
                    .header("content-type", "application/x-protobuf")
                    .body(Full::new(Bytes::new()))
                    .unwrap()
            }
        })
        .await;
        Collector { addr, posts }
    }

    fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    /// Every exported byte, as one lossy string (to search for what must never be there).
    fn all_bytes(&self) -> String {
        self.posts().iter().map(|p| String::from_utf8_lossy(&p.body).into_owned()).collect::<Vec<_>>().join("\n")
    }

    /// Waits until an exported span has the id `span_id` (hex): spans end before their answer is sent and are
    /// exported in that order, so every span of an earlier request is then in too.
    async fn until_exported(&self, span_id: &str) {
        let id = hex_bytes(span_id);
        eventually(&format!("span {span_id} is exported"), Duration::from_secs(10), || async {
            self.posts().iter().any(|p| p.body.windows(id.len()).any(|w| w == id)).then_some(())
        })
        .await;
    }

    /// Every span received, decoded by tests/otlp/decode.py.
    async fn spans(&self) -> Vec<Value> {
        let bodies: Vec<String> =
            self.posts().iter().map(|p| base64::engine::general_purpose::STANDARD.encode(&p.body)).collect();
        serde_json::from_value(crate::harness::python_json("otlp/.venv", "otlp/decode.py", &bodies).await).unwrap()
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Tracing on, to `endpoint`, sending every 50 ms.
fn traced(s: &mut Settings, endpoint: &str) {
    let mut otlp = OtlpSettings::new(endpoint.parse().unwrap());
    otlp.interval = Duration::from_millis(50);
    otlp.service_name = "idgate-test".into();
    otlp.headers = vec![(http::HeaderName::from_static("x-api-key"), HeaderValue::from_static(API_KEY))];
    s.telemetry.otlp = Some(otlp);
}

/// The upstream's `traceparent`, parsed.
fn upstream_parent(r: &crate::harness::Resp) -> Parent {
    let sent = r.upstream_header("traceparent").expect("the upstream receives a traceparent");
    Parent::parse(sent.as_bytes()).expect("a valid traceparent")
}

fn find<'a>(spans: &'a [Value], span_id: &str) -> &'a Value {
    spans.iter().find(|s| s["span_id"] == span_id).unwrap_or_else(|| panic!("no span {span_id} in {spans:#?}"))
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

fn children<'a>(spans: &'a [Value], parent: &Value) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["parent_span_id"] == parent["span_id"] && s["trace_id"] == parent["trace_id"]).collect()
}

fn child_names(spans: &[Value], parent: &Value) -> Vec<String> {
    let mut names: Vec<String> =
        children(spans, parent).iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn spans_reach_the_collector_with_their_parentage_and_no_secret() {
    let collector = Collector::start().await;
    let endpoint = collector.endpoint();
    let gate = TestGate::builder()
        .settings(move |s| {
            s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
            s.session.store = StoreKind::Memory;
            s.oidc.userinfo_claims = true;
            s.ext_authz.grpc_listen = Some("127.0.0.1:0".parse().unwrap());
            traced(s, &endpoint);
        })
        .spawn()
        .await;
    // The callback then meets a key it does not know: one JWKS re-fetch inside the request.
    gate.issuer.rotate_key(DevAlg::RS256, true);
    let b = gate.login_as("alice").await;
    let cookie = b.cookie("idgate").expect("a session cookie");

    // Forward-auth and an ext_authz gRPC check (Envoy asking, with the session cookie).
    let fa = b.api().get(&format!("{}/oauth2/auth", gate.base)).await;
    assert_eq!(fa.status, StatusCode::OK);
    let envoy_http = b.api().get(&format!("{}/oauth2/auth/app", gate.base)).await;
    assert_eq!(envoy_http.status, StatusCode::OK);
    let grpc_addr = gate.running.as_ref().unwrap().grpc_addr.unwrap();
    let checked = crate::ext_authz::grpc(vec![json!({
        "address": grpc_addr.to_string(), "method": "GET", "path": "/app", "host": "app.example",
        "headers": [["cookie", format!("idgate={cookie}")]],
    })])
    .await;
    assert_eq!(checked[0]["allowed"], true, "{checked:?}");

    // A proxied request without a trace: a new one, the upstream's parent our span.
    let fresh = b.api().get(&format!("{}/fresh", gate.base)).await;
    assert_eq!(fresh.status, StatusCode::OK);
    let fresh_parent = upstream_parent(&fresh);
    assert_ne!(hex(&fresh_parent.trace_id), PARENT_TRACE);
    assert_eq!(fresh.upstream_header("tracestate"), None);

    // A proxied request in a trusted proxy's trace, last: once its span is in, every span before it is too.
    let r = b.api().get_with(&format!("{}/app", gate.base), &[("traceparent", PARENT), ("tracestate", "v=1")]).await;
    assert_eq!(r.status, StatusCode::OK);
    let sent = upstream_parent(&r);
    assert_eq!(hex(&sent.trace_id), PARENT_TRACE, "the trace continues");
    assert_ne!(hex(&sent.span_id), PARENT_SPAN);
    assert_eq!(r.upstream_header("tracestate").as_deref(), Some("v=1"));
    collector.until_exported(&hex(&sent.span_id)).await;

    let posts = collector.posts();
    for p in &posts {
        assert_eq!(p.path, "/v1/traces");
        assert_eq!(p.headers["content-type"], "application/x-protobuf");
        assert_eq!(p.headers["x-api-key"], API_KEY, "the configured headers go with every export");
    }
    let spans = collector.spans().await;
    if std::env::var_os("OTLP_DUMP").is_some() {
        eprintln!("{}", serde_json::to_string_pretty(&spans).unwrap());
    }
    for s in &spans {
        assert_eq!(s["resource"]["service.name"], "idgate-test");
        assert_eq!(s["scope"], "idgate");
        assert!(s["end"].as_u64() >= s["start"].as_u64(), "{s}");
    }

    // The traced request: the trusted parent's child, the upstream's parent, its store call its child.
    let request = find(&spans, &hex(&sent.span_id));
    assert_eq!(request["trace_id"], PARENT_TRACE);
    assert_eq!(request["parent_span_id"], PARENT_SPAN);
    assert_eq!(request["trace_state"], "v=1");
    assert_eq!(request["kind"], "SPAN_KIND_SERVER");
    assert_eq!(request["name"], "GET proxy");
    assert_eq!(request["flags"].as_u64().unwrap() & 0x3ff, 0x301, "sampled, with a remote parent");
    let attrs = &request["attributes"];
    assert_eq!(attrs["idgate.route.kind"], "proxy");
    assert_eq!(attrs["http.request.method"], "GET");
    assert_eq!(attrs["http.response.status_code"], 200);
    assert!(attrs["idgate.upstream.duration_ms"].as_f64().unwrap() > 0.0, "{attrs}");
    let sub_hash = attrs["idgate.user.sub_hash"].as_str().unwrap();
    assert_eq!(sub_hash.len(), 32);
    assert!(sub_hash.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(request["status"], "STATUS_CODE_UNSET");
    assert_eq!(child_names(&spans, request), ["session_store get"]);
    let store = children(&spans, request)[0];
    assert_eq!(store["kind"], "SPAN_KIND_CLIENT");
    assert_eq!(store["attributes"]["db.operation.name"], "get");

    // Without a trace: the root of a new one, named to the upstream.
    let root = find(&spans, &hex(&fresh_parent.span_id));
    assert_eq!(root["trace_id"], hex(&fresh_parent.trace_id));
    assert_eq!(root["parent_span_id"], "");
    assert_eq!(root["attributes"]["idgate.user.sub_hash"], sub_hash, "the same user, the same hash");

    // The login: the callback's calls to the issuer and the store are its children, in its trace.
    let callbacks = named(&spans, "GET login_callback");
    assert_eq!(callbacks.len(), 1, "{spans:#?}");
    let callback = callbacks[0];
    assert_eq!(callback["attributes"]["http.response.status_code"], 302);
    assert_eq!(callback["attributes"]["idgate.user.sub_hash"], sub_hash, "the user who logged in");
    assert_eq!(
        child_names(&spans, callback),
        ["oidc jwks", "oidc token", "oidc userinfo", "session_store put"],
        "{spans:#?}"
    );
    let token = children(&spans, callback).into_iter().find(|s| s["name"] == "oidc token").unwrap();
    assert_eq!(token["attributes"]["idgate.issuer.endpoint"], "token endpoint");
    assert_eq!(token["attributes"]["http.request.method"], "POST");
    assert_eq!(token["attributes"]["http.response.status_code"], 200);
    assert_eq!(token["attributes"]["server.address"], "127.0.0.1");
    assert_eq!(named(&spans, "GET login_start").len(), 1);
    let first = named(&spans, "GET proxy").into_iter().find(|s| s["attributes"]["http.response.status_code"] == 302);
    assert!(first.is_some(), "the first visit, sent to log in, has its span too");

    // Forward-auth and the gRPC check: one span each, for the same user.
    let fa = named(&spans, "GET forward_auth");
    assert_eq!(fa.len(), 1);
    assert_eq!(fa[0]["attributes"]["http.response.status_code"], 200);
    assert_eq!(fa[0]["attributes"]["idgate.user.sub_hash"], sub_hash);
    let envoy_http = named(&spans, "GET ext_authz_http");
    assert_eq!(envoy_http.len(), 1);
    assert_eq!(envoy_http[0]["attributes"]["http.response.status_code"], 200);
    assert_eq!(envoy_http[0]["attributes"]["idgate.user.sub_hash"], sub_hash);
    let grpc = named(&spans, "POST ext_authz_grpc");
    assert_eq!(grpc.len(), 1, "{spans:#?}");
    assert_eq!(grpc[0]["attributes"]["idgate.route.kind"], "ext_authz_grpc");
    assert_eq!(grpc[0]["attributes"]["http.response.status_code"], 200);
    assert_eq!(grpc[0]["attributes"]["idgate.user.sub_hash"], sub_hash);
    assert_eq!(child_names(&spans, grpc[0]), ["session_store get"]);

    // No exported byte holds a token, the cookie, or the user's sub.
    let mut headers = HeaderMap::new();
    headers.insert("cookie", HeaderValue::from_str(&format!("idgate={cookie}")).unwrap());
    let session = gate.state().sessions.open(&headers, idgate::clock::Clock::now(gate.clock.as_ref())).await.unwrap();
    let sub = session.claims().sub().to_owned();
    let exported = collector.all_bytes();
    let mut secrets = vec![cookie.clone(), session.id_token_hint().to_owned(), sub.clone(), API_KEY.to_owned()];
    secrets.extend(session.access_token().map(str::to_owned));
    secrets.extend(session.refresh_token().map(str::to_owned));
    for secret in &secrets {
        assert!(!secret.is_empty());
        assert!(!exported.contains(secret.as_str()), "an exported span holds {secret:?}");
    }
    assert!(!contains_jwt(&exported), "no JWT in any export");
    assert!(!exported.contains("alice"), "nor the user's name");
    gate.shutdown().await;
}

#[tokio::test]
async fn an_untrusted_clients_trace_is_not_joined() {
    let collector = Collector::start().await;
    let endpoint = collector.endpoint();
    let gate = TestGate::builder()
        .settings(move |s| {
            s.routes = vec![route("/", AuthMode::Public)];
            traced(s, &endpoint);
        })
        .spawn()
        .await;
    let r = Browser::new()
        .api()
        .get_with(&format!("{}/x", gate.base), &[("traceparent", PARENT), ("tracestate", "v=1")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let sent = upstream_parent(&r);
    assert_ne!(hex(&sent.trace_id), PARENT_TRACE, "a client cannot choose the trace");
    assert_eq!(r.upstream_header("tracestate"), None);
    collector.until_exported(&hex(&sent.span_id)).await;
    let spans = collector.spans().await;
    let span = find(&spans, &hex(&sent.span_id));
    assert_eq!(span["parent_span_id"], "");
    assert_eq!(span["trace_state"], "");
    assert_eq!(span["name"], "GET public");
    assert!(span["attributes"].get("idgate.user.sub_hash").is_none(), "nobody logged in");
    gate.shutdown().await;
}

/// Collects what the `tracing` macros write on this thread (the gate runs on the test's one-thread runtime).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap()).matches(needle).count()
    }
}

/// Sends `n` requests one after another; each must be answered 200 well within `max`.
async fn requests_unaffected(gate: &TestGate, n: usize, max: Duration) {
    let b = Browser::new().api();
    for i in 0..n {
        let started = Instant::now();
        let r = b.get(&format!("{}/x{i}", gate.base)).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
        assert!(started.elapsed() < max, "request {i} took {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_collector_that_is_down_costs_requests_nothing_and_warns_once() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Nothing listens there: every export is refused.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/v1/traces", closed.local_addr().unwrap());
    drop(closed);
    let gate = TestGate::builder()
        .settings(move |s| {
            s.routes = vec![route("/", AuthMode::Public)];
            traced(s, &endpoint);
            if let Some(o) = s.telemetry.otlp.as_mut() {
                o.interval = Duration::from_millis(10);
            }
        })
        .spawn()
        .await;
    requests_unaffected(&gate, 60, Duration::from_secs(1)).await;
    let metrics = Arc::clone(&gate.state().metrics);
    let failed = eventually("exports have failed many times", Duration::from_secs(10), || async {
        let n = metrics.trace_spans_count(SpanOutcome::Failed);
        (n >= 60).then_some(n)
    })
    .await;
    assert_eq!(metrics.trace_spans_count(SpanOutcome::Exported), 0);
    assert_eq!(captured.count("OTLP export failed"), 1, "one warning for {failed} spans in failed exports");
    assert!(gate.state().metrics.render().contains(&format!("idgate_trace_spans_total{{result=\"failed\"}} {failed}")));
    gate.shutdown().await;
}

#[tokio::test]
async fn a_collector_that_hangs_fills_the_queue_and_requests_go_on() {
    // Accepts connections and never answers.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/v1/traces", hanging.local_addr().unwrap());
    let held: Arc<Mutex<Vec<tokio::net::TcpStream>>> = Arc::default();
    let holder = Arc::clone(&held);
    let accept = tokio::spawn(async move {
        while let Ok((conn, _)) = hanging.accept().await {
            holder.lock().unwrap().push(conn);
        }
    });
    let gate = TestGate::builder()
        .settings(move |s| {
            s.routes = vec![route("/", AuthMode::Public)];
            traced(s, &endpoint);
            if let Some(o) = s.telemetry.otlp.as_mut() {
                (o.queue, o.batch, o.timeout) = (8, 4, Duration::from_secs(60));
            }
        })
        .spawn()
        .await;
    requests_unaffected(&gate, 40, Duration::from_secs(1)).await;
    let m = &gate.state().metrics;
    // One batch of 4 is stuck in its export, 8 wait in the queue: the rest were dropped, not waited for.
    assert!(m.trace_spans_count(SpanOutcome::Dropped) >= 40 - 4 - 8 - 4, "{}", m.render());
    assert_eq!(m.trace_spans_count(SpanOutcome::Exported), 0);
    assert!(!held.lock().unwrap().is_empty(), "the exporter is waiting on the collector");
    accept.abort();
    gate.shutdown().await;
}

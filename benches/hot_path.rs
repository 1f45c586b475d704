//! The per-request hot path: opening a session cookie (~1.5 KB ID token; kept and first time), validating RS256 / ES256 ID tokens
//! with a cached key, the identity assertion of a logged-in request (cached, and signed), the access line, and the
//! OpenTelemetry span path of a request (tracing off: nothing; on: the request span and a store call's child, queued
//! for the exporter; and the exporter's protobuf encoding, off the request path). Run with
//! `cargo bench --bench hot_path`.
#![allow(clippy::expect_used, reason = "benchmark set-up: a failure is a broken benchmark")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, header::COOKIE};
use idgate::{
    config::{Secret, settings::SessionSettings},
    dev_issuer::{DevAlg, SigningKey},
    id_token::{self, Expectations, KeySet},
    session::{NewSession, Sessions},
};
use serde_json::{Value, json};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

/// Counts allocations (the span path's must be none with tracing off); the system allocator underneath.
#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const NOW: i64 = 1_800_000_000;

fn claims(pad: usize) -> Value {
    json!({
        "iss": "https://issuer.example.com", "aud": "client", "sub": "auth0|5f7c8ec7c33c6c004bbafe82", "iat": NOW,
        "exp": NOW + 36000, "nonce": "n-0S6_WzA2Mj", "name": "Alice Example", "email": "alice@example.com",
        "email_verified": true, "picture": "https://example.com/avatars/alice.png",
        "https://example.com/roles": ["user", "editor", "billing"], "pad": "x".repeat(pad),
    })
}

fn session_open(c: &mut Criterion) {
    let key = SigningKey::generate(DevAlg::RS256);
    // Pad the claims until the token is about 1.5 KB, as a typical issuer's with a few custom claims.
    let mut pad = 0;
    let token = loop {
        let t = key.sign(&claims(pad));
        if t.len() >= 1500 {
            break t;
        }
        pad += 16;
    };
    let settings = SessionSettings::with_secret(Secret::new("bench-secret-bench-secret-bench-secret"));
    let sessions = Sessions::new(&settings).expect("cookie sessions");
    let parsed = id_token::validate(&token, &keyset(&key), &expect(), Some("n-0S6_WzA2Mj"), NOW).expect("valid token");
    let new = NewSession {
        id_token: &token,
        claims: &parsed,
        refresh_token: None,
        access_token: None,
        nonce: None,
        userinfo: None,
        provider: None,
    };
    // A request as a browser sends it: the session cookie among others.
    let request = || {
        let set = ready(sessions.save(&HeaderMap::new(), &new, NOW)).expect("sealed");
        let pair = set[0].to_str().expect("ascii").split(';').next().expect("pair").to_owned();
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(&format!("_ga=GA1.2.3; app=1; {pair}")).expect("header"));
        headers
    };
    let headers = request();
    let size = format!("{} B token, {} B cookie", token.len(), headers[COOKIE].len());
    // Every request of a browser after its first: the opened session is kept by its exact cookie.
    c.bench_function(&format!("session_open ({size})"), |b| {
        b.iter(|| black_box(ready(sessions.open(black_box(&headers), NOW)).expect("opens")))
    });
    // A cookie this process has not opened yet (or no longer keeps): base64, AES-GCM, JSON.
    c.bench_function(&format!("session_open first time ({size})"), |b| {
        b.iter_batched_ref(
            request,
            |h| black_box(ready(sessions.open(black_box(h), NOW)).expect("opens")),
            criterion::BatchSize::SmallInput,
        )
    });
}

/// Polls a future that completes without waiting (the cookie store does no I/O), with no runtime in the way.
fn ready<F: std::future::Future>(fut: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(fut).poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("cookie sessions never wait"),
    }
}

fn keyset(key: &SigningKey) -> KeySet {
    KeySet::from_jwks(json!({"keys": [key.jwk()]}).to_string().as_bytes()).expect("jwks")
}

fn expect() -> Expectations {
    Expectations {
        issuer: "https://issuer.example.com".into(),
        audiences: vec!["client".into()],
        allowed_algs: vec![jsonwebtoken::Algorithm::RS256, jsonwebtoken::Algorithm::ES256],
        leeway: 60,
    }
}

fn validate(c: &mut Criterion) {
    for alg in [DevAlg::RS256, DevAlg::ES256] {
        let key = SigningKey::generate(alg);
        let keys = keyset(&key);
        let want = expect();
        let token = key.sign(&claims(0));
        c.bench_function(&format!("id_token_validate {}", alg.name()), |b| {
            b.iter(|| {
                black_box(
                    id_token::validate(black_box(&token), &keys, &want, Some("n-0S6_WzA2Mj"), NOW).expect("valid"),
                )
            })
        });
    }
}

/// The identity assertion (`[assertion] enabled = true`) of a logged-in request: what every request of a session
/// pays once its assertion is cached (the cache lookup, keyed by login × audience × session end), and what the first
/// request per session and audience pays (claims, JSON, signature).
fn assertion(c: &mut Criterion) {
    use std::sync::Arc;

    use idgate::{
        assertion::{Assertions, Subject},
        config::assertion::AssertionSettings,
        signing,
        telemetry::metrics::Metrics,
    };
    let key = SigningKey::generate(DevAlg::RS256);
    let parsed =
        id_token::validate(&key.sign(&claims(0)), &keyset(&key), &expect(), Some("n-0S6_WzA2Mj"), NOW).expect("valid");
    let settings = AssertionSettings { enabled: true, ..AssertionSettings::default() };
    for (name, own) in [
        ("ES256", signing::SigningKey::generate_p256().expect("P-256")),
        ("RS256", signing::SigningKey::generate_rsa(None).expect("RSA")),
    ] {
        let signer =
            Assertions::build(&settings, Arc::new(own), "https://app.example.com".into(), Arc::new(Metrics::default()));
        let who = Subject { claims: &parsed, login_id: "Yk3vQ0r1m9s2ZlqXcW8tLg", expires_at: NOW + 36000 };
        signer.value(who, "app.example.com", NOW).expect("signed");
        c.bench_function(&format!("assertion cached ({name})"), |b| {
            b.iter(|| black_box(signer.value(black_box(who), "app.example.com", NOW).expect("cached")))
        });
        // A new audience each time: every call signs.
        let mut n = 0u64;
        c.bench_function(&format!("assertion signed ({name})"), |b| {
            b.iter(|| {
                n += 1;
                black_box(signer.value(who, &format!("app-{n}.example.com"), NOW).expect("signed"))
            })
        });
    }
}

/// The per-request access line: as it was (a `tracing` event through the JSON layer, written to a sink) and as it is
/// (formatted by hand, appended to the shared buffer a background thread writes out).
fn access_line(c: &mut Criterion) {
    use std::{sync::Mutex, time::SystemTime};

    use idgate::{
        config::LogFormat,
        telemetry::access_log::{self, Line},
    };
    let line = Line {
        message: "request",
        method: "GET",
        path: "/app/orders/12345",
        status: 200,
        latency_us: 87,
        request_id: "9f3c2a61b7e04d55",
    };
    {
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::sink)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        c.bench_function("access line via tracing's JSON layer (before)", |b| {
            b.iter(|| {
                tracing::info!(
                    method = line.method,
                    path = line.path,
                    status = line.status,
                    latency_us = line.latency_us,
                    request_id = line.request_id,
                    "request"
                )
            })
        });
    }
    let shared = Mutex::new(Vec::<u8>::with_capacity(128 * 1024));
    let mut scratch = String::with_capacity(256);
    c.bench_function("access line formatted and buffered (now)", |b| {
        b.iter(|| {
            scratch.clear();
            access_log::format_line(&mut scratch, LogFormat::Json, SystemTime::now(), black_box(&line));
            let mut buf = shared.lock().expect("not poisoned");
            if buf.len() > 64 * 1024 {
                buf.clear();
            }
            buf.extend_from_slice(scratch.as_bytes());
        })
    });
}

/// What the span hooks of one logged-in, proxied request with a server-side store do, in the order the request
/// meets them (`app::handle`, `pipeline`, `session::store`): name the route, note the request id, name the
/// upstream's parent, time the store call as a child span, record the user, time the upstream.
async fn span_hooks(request_id: &str) {
    use idgate::telemetry::span;
    span::kind("proxy");
    span::set("idgate.request_id", || request_id.to_owned());
    black_box(span::context());
    {
        let mut store = span::Child::start("session_store get");
        store.set("db.operation.name", || "get");
        store.set("db.system.name", || "redis");
    }
    span::set_user(black_box("auth0|5f7c8ec7c33c6c004bbafe82"));
    if let Some(started) = span::timer() {
        span::set("idgate.upstream.duration_ms", || started.elapsed().as_secs_f64() * 1e3);
    }
}

/// The cost of tracing on the request path: off (`[telemetry]` unset: no tracer, hooks outside any span) and on
/// (a request span and one child, queued; a thread drains the queue as the exporter would). Also asserts that the
/// off path allocates nothing, and prints what the on path allocates.
fn spans(c: &mut Criterion) {
    use std::sync::Arc;

    use idgate::telemetry::{metrics::Metrics, otlp::encode, span};
    let tracer: Option<Arc<span::Tracer>> = None;
    let off = || {
        ready(async {
            match &tracer {
                None => span_hooks("0123456789abcdef").await,
                Some(_) => unreachable!("tracing is off"),
            }
        })
    };
    let region = Region::new(GLOBAL);
    for _ in 0..10_000 {
        off();
    }
    let stats = region.change();
    assert_eq!((stats.allocations, stats.reallocations), (0, 0), "tracing off must not allocate: {stats:?}");
    println!("span path, tracing off: 0 allocations per request (10 000 requests)");
    c.bench_function("span path, tracing off", |b| b.iter(off));

    // The exporter's part, on its own thread: drain the queue every millisecond.
    let (queue, mut exported) = span::queue(1 << 16, 512);
    let drain = std::thread::spawn(move || {
        let mut batch = Vec::with_capacity(1 << 16);
        while exported.take(&mut batch, 1 << 16) {
            batch.clear();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });
    let tracer = Arc::new(span::Tracer::new(
        queue,
        &Secret::new("bench-secret-bench-secret-bench-secret"),
        Arc::new(Metrics::default()),
    ));
    let on = || {
        let request = tracer.request("GET", None);
        ready(span::within(Arc::clone(&request), span_hooks("0123456789abcdef")));
        request.status(200);
    };
    let region = Region::new(GLOBAL);
    for _ in 0..1_000 {
        on();
    }
    let stats = region.change();
    println!("span path, tracing on: {} allocations per request", stats.allocations / 1_000);
    c.bench_function("span path, tracing on (request span + 1 child, queued)", |b| b.iter(on));
    drop(tracer);
    let _ = drain.join();

    // Off the request path: the exporter encodes a full batch of such spans.
    let (queue, mut batch) = span::queue(1024, 1024);
    let tracer =
        Arc::new(span::Tracer::new(queue, &Secret::new("bench-secret-bench-secret"), Arc::new(Metrics::default())));
    for _ in 0..512 {
        let request = tracer.request("GET", None);
        ready(span::within(Arc::clone(&request), span_hooks("0123456789abcdef")));
        request.status(200);
    }
    drop(tracer);
    let mut spans = Vec::new();
    batch.take(&mut spans, 512);
    c.bench_function(&format!("otlp encode, batch of {} spans", spans.len()), |b| {
        b.iter(|| black_box(encode::body("idgate", black_box(&spans))))
    });
}

criterion_group!(benches, session_open, validate, assertion, access_line, spans);
criterion_main!(benches);
